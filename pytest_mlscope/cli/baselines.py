"""``mlscope baseline set|list|show|delete``: name the runs that later runs are compared
against, and see the model files a baseline keeps in the database."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pytest_mlscope.cli.common import (
    DB_HELP,
    EXIT_OK,
    local_time,
    open_store,
    plural,
    print_run,
    size_text,
    stored_run,
)
from pytest_mlscope.report.terminal import table

if TYPE_CHECKING:
    from pytest_mlscope.store import BaselineArtifact, BaselineRecord, RunRecord


def register(commands: argparse._SubParsersAction) -> None:
    baseline = commands.add_parser(
        "baseline", help="name the runs that later runs are compared against"
    )
    baseline_commands = baseline.add_subparsers(
        dest="baseline_command", required=True, metavar="ACTION"
    )
    name_help = "baseline name: letters, digits, '.', '_', '-', '/' (like main, release-1.2)"
    baseline_set = baseline_commands.add_parser("set", help="point a baseline at a run")
    baseline_set.add_argument("name", metavar="NAME", help=name_help)
    baseline_set.add_argument(
        "--run", required=True, metavar="RUN", help="a run id or a unique prefix of one"
    )
    baseline_set.add_argument(
        "--force",
        action="store_true",
        help="move a baseline that points to another run, or use a run that is not complete",
    )
    baseline_set.add_argument("--note", metavar="TEXT", help="why this run is the baseline")
    baseline_set.add_argument("--db", metavar="LOCATION", help=DB_HELP)
    baseline_set.set_defaults(handler=cmd_baseline_set)

    baseline_list = baseline_commands.add_parser("list", help="list baselines by name")
    baseline_list.add_argument("--db", metavar="LOCATION", help=DB_HELP)
    baseline_list.set_defaults(handler=cmd_baseline_list)

    baseline_show = baseline_commands.add_parser(
        "show", help="show a baseline, the artifacts it keeps and its run"
    )
    baseline_show.add_argument("name", metavar="NAME", help="the baseline to show")
    baseline_show.add_argument("--db", metavar="LOCATION", help=DB_HELP)
    baseline_show.set_defaults(handler=cmd_baseline_show)

    baseline_delete = baseline_commands.add_parser(
        "delete", help="forget a baseline (its run is kept)"
    )
    baseline_delete.add_argument("name", metavar="NAME", help="the baseline to delete")
    baseline_delete.add_argument("--db", metavar="LOCATION", help=DB_HELP)
    baseline_delete.set_defaults(handler=cmd_baseline_delete)


def _baseline_line(baseline: BaselineRecord, run: RunRecord, extra: str = "") -> str:
    details = [plural(run.total, "result")]
    if run.status != "complete":
        details.append(f"run {run.status}")
    if extra:
        details.append(extra)
    return f"baseline {baseline.name} -> run {run.id[:12]} ({'; '.join(details)})"


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else "-"


def cmd_baseline_set(args: argparse.Namespace) -> int:
    with open_store(args.db) as store:
        # Read only to say what changed; the store decides atomically whether it may.
        before = {baseline.name: baseline for baseline in store.baselines()}.get(args.name)
        baseline = store.set_baseline(args.name, args.run, force=args.force, note=args.note)
        run = store.get_run(baseline.run_id)
    extra = ""
    if before is not None and before.run_id != baseline.run_id:
        extra = f"moved from run {before.run_id[:12]}"
    elif before is not None and before.updated_at == baseline.updated_at:
        extra = "already set"
    elif before is not None:
        extra = "note updated"
    print(_baseline_line(baseline, run, extra))
    return EXIT_OK


def cmd_baseline_list(args: argparse.Namespace) -> int:
    with open_store(args.db) as store:
        baselines = [(baseline, store.get_run(baseline.run_id)) for baseline in store.baselines()]
    if not baselines:
        print("no baselines")
        return EXIT_OK
    rows = [
        [
            baseline.name,
            run.id[:12],
            local_time(baseline.updated_at),
            local_time(run.started_at),
            (run.git_commit or "-")[:10],
            run.hostname or "-",
            _first_line(baseline.note),
        ]
        for baseline, run in baselines
    ]
    header = ["name", "run", "set", "run started", "commit", "host", "note"]
    print(table(header, rows))
    return EXIT_OK


def cmd_baseline_show(args: argparse.Namespace) -> int:
    with open_store(args.db) as store:
        baseline = store.get_baseline(args.name)
        run, results, location = stored_run(store, baseline.run_id)
        artifacts = store.baseline_artifacts(baseline.name)
    extra = f"set {local_time(baseline.updated_at)}"
    print(_baseline_line(baseline, run, extra))
    if baseline.note:
        print(f"note: {baseline.note.strip()}")
    _print_baseline_artifacts(artifacts)
    print()
    print_run(run, results, location)
    return EXIT_OK


def _print_baseline_artifacts(artifacts: Sequence[BaselineArtifact]) -> None:
    """What a machine without the model files still has of the baseline: the ones it keeps."""
    if not artifacts:
        print("artifacts: none kept in the database")
        return
    # Counted once per file: one file may serve several frameworks.
    stored = sum({kept.sha256: kept.stored_size for kept in artifacts}.values())
    places = sorted({kept.location or "the database" for kept in artifacts})
    print(
        f"artifacts: {plural(len(artifacts), 'artifact')} kept in {' and '.join(places)} "
        f"({size_text(stored)} stored)"
    )
    rows = [
        [kept.sha256[:12], kept.model, kept.framework, kept.format, size_text(kept.size)]
        + ([kept.location or "database"] if len(places) > 1 else [])
        for kept in artifacts
    ]
    columns = ["sha256", "model", "framework", "format", "size"]
    print(table(columns + (["where"] if len(places) > 1 else []), rows, {4}))


def cmd_baseline_delete(args: argparse.Namespace) -> int:
    with open_store(args.db) as store:
        baseline = store.get_baseline(args.name)
        freed = store.delete_baseline(args.name)
    kept = f"; {size_text(freed)} of artifacts freed" if freed else ""
    print(
        f"deleted baseline {baseline.name} (was run {baseline.run_id[:12]}; the run is kept{kept})"
    )
    return EXIT_OK

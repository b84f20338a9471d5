"""``mlscope copy`` and ``mlscope export``: move runs (and baselines) into another database,
or write a run in pyperf's or pytest-benchmark's JSON for their own tools."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_mlscope.cli.common import DB_HELP, EXIT_INVALID, EXIT_OK, open_store, plural
from pytest_mlscope.errors import MlscopeError

if TYPE_CHECKING:
    from pytest_mlscope.store import ArtifactEntry, Store


def register(commands: argparse._SubParsersAction) -> None:
    copy = commands.add_parser(
        "copy", help="copy runs and baselines into another database (e.g. a shared PostgreSQL)"
    )
    copy.add_argument(
        "runs", metavar="RUN", nargs="*", help="runs to copy (default: every finished run)"
    )
    copy.add_argument("--to", required=True, metavar="LOCATION", help="the database to copy into")
    copy.add_argument("--baselines", action="store_true", help="copy the baselines too")
    copy.add_argument(
        "--force", action="store_true", help="let a copied baseline move one of the same name"
    )
    copy.add_argument(
        "--artifact-store",
        metavar="DIR",
        help="keep the copied baselines' model files in this directory, not in the target "
        "database (as --mlscope-artifact-store; a directory belongs to one database)",
    )
    copy.add_argument("--db", metavar="LOCATION", help=DB_HELP)
    copy.set_defaults(handler=cmd_copy)

    from pytest_mlscope.report import FORMATS

    export = commands.add_parser(
        "export",
        help="write a run in any report format: pyperf or pytest-benchmark JSON for their own "
        "tools, the session's text table, markdown, HTML",
    )
    export.add_argument("run", metavar="RUN", help="a run id or a unique prefix of one")
    export.add_argument(
        "--format",
        choices=list(FORMATS),
        required=True,
        help="; ".join(f"{f.name}: {f.what}" for f in FORMATS.values()),
    )
    export.add_argument("-o", "--output", required=True, help="the file to write")
    export.add_argument("--db", metavar="LOCATION", help=DB_HELP)
    export.set_defaults(handler=cmd_export)


def cmd_copy(args: argparse.Namespace) -> int:
    """Copy runs (and baselines) into another database: moving a laptop's or a runner's history
    into the team's shared PostgreSQL, or the other way round for offline work."""
    from pytest_mlscope.store import Store, StoreError

    with open_store(args.db) as source, Store.from_location(args.to) as target:
        if source.url == target.url:
            raise MlscopeError(f"--to is the database the runs come from: {target.url}")
        if args.artifact_store:
            target.artifact_dir = Path(args.artifact_store).expanduser().resolve()
        if args.runs:
            chosen = [source.get_run(ref) for ref in args.runs]
        else:
            chosen = [r for r in source.runs(limit=1_000_000) if r.status != "running"]
        counts = {run.id: run.total for run in chosen}
        # Oldest first, as they were made; read lazily so a large history never sits in memory.
        added = target.import_runs(source.export_run(run.id) for run in reversed(chosen))
        copied, results = len(added), sum(counts[run_id] for run_id in added)
        skipped = len(chosen) - copied
        print(
            f"copied {plural(copied, 'run')} ({plural(results, 'result')}) to {target.url}"
            + (f"; {skipped} already there" if skipped else "")
        )
        if not args.baselines:
            return EXIT_OK
        status = EXIT_OK
        if target.artifact_dir is not None:
            _check_own_directory(source, target.artifact_dir)
        for baseline in source.baselines():
            if not target.has_run(baseline.run_id):
                print(f"baseline {baseline.name!r}: its run {baseline.run_id[:12]} was not copied")
                continue
            try:
                with tempfile.TemporaryDirectory(prefix="mlscope-copy-") as scratch:
                    # The models it keeps travel with it, through a scratch copy on disk.
                    artifacts = _fetched_artifacts(source, baseline.name, Path(scratch))
                    target.set_baseline(
                        baseline.name,
                        baseline.run_id,
                        force=args.force,
                        note=baseline.note,
                        artifacts=artifacts or None,
                    )
                kept = f" with {plural(len(artifacts), 'artifact')}" if artifacts else ""
                print(f"baseline {baseline.name!r} -> run {baseline.run_id[:12]}{kept}")
            except StoreError as exc:
                print(f"baseline {baseline.name!r} not copied: {exc}")
                status = EXIT_INVALID
    return status


def _check_own_directory(source: Store, directory: Path) -> None:
    """Refuse a target artifact directory that holds the source's files: freeing a file in one
    database would take it from the other."""
    shared = {
        kept.location
        for baseline in source.baselines()
        for kept in source.baseline_artifacts(baseline.name)
        if kept.location and Path(kept.location).resolve() == directory
    }
    if shared:
        raise MlscopeError(
            f"--artifact-store {directory} holds the files of {source.url}'s baselines; give "
            "the target database a directory of its own"
        )


def _fetched_artifacts(store: Store, name: str, directory: Path) -> list[ArtifactEntry]:
    from pytest_mlscope.store import ArtifactEntry

    return [
        ArtifactEntry(
            sha256=kept.sha256,
            model=kept.model,
            framework=kept.framework,
            format=kept.format,
            path=store.fetch_artifact(kept.sha256, directory),
        )
        for kept in store.baseline_artifacts(name)
    ]


def cmd_export(args: argparse.Namespace) -> int:
    from pytest_mlscope.report import FORMATS
    from pytest_mlscope.report import data as report_data

    chosen = FORMATS[args.format]
    with open_store(args.db) as store:
        data = report_data.load(
            store, args.run, history=report_data.HISTORY_RUNS if chosen.history else 0,
            across=chosen.history,
        )  # fmt: skip
    count = chosen.write(data, Path(args.output))
    what = f"{plural(count, 'item')} of run {data.run.id[:12]}, {chosen.name} format"
    print(f"wrote {args.output} ({what})")
    return EXIT_OK

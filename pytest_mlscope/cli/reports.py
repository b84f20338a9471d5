"""``mlscope compare``, ``mlscope history`` and ``mlscope report``: judge one stored run against
another, follow an item across runs, and write the HTML report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pytest_mlscope.cli.common import (
    DB_HELP,
    EXIT_INVALID,
    EXIT_OK,
    git_text,
    local_time,
    open_store,
    plural,
    positive_int,
)
from pytest_mlscope.errors import MlscopeError
from pytest_mlscope.report.terminal import ms, table


def register(commands: argparse._SubParsersAction) -> None:
    compare = commands.add_parser(
        "compare", help="verdicts for run B against run A (exit 1 on a regression)"
    )
    compare.add_argument("run_a", metavar="RUN_A", help="the baseline run (id or prefix)")
    compare.add_argument("run_b", metavar="RUN_B", help="the run to judge (id or prefix)")
    compare.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="the slowdown to catch (default: what B's session used, else 0.05)",
    )
    compare.add_argument(
        "--memory-threshold",
        type=float,
        default=None,
        help="how much more memory fails an item (default: what B's session used, else 0.10)",
    )
    compare.add_argument(
        "--scaling-threshold",
        type=float,
        default=None,
        help="how much the exponent of time over sequence length may grow in a sweep "
        "(default: what B's session used, else 0.05)",
    )
    compare.add_argument(
        "--ignore-environment",
        action="store_true",
        help="compare latencies even across different CPUs or framework versions (A/B of stacks)",
    )
    compare.add_argument("--db", metavar="LOCATION", help=DB_HELP)
    compare.set_defaults(handler=cmd_compare)

    history = commands.add_parser(
        "history", help="an item's median across stored runs; --changes finds step changes"
    )
    history.add_argument(
        "item", metavar="ITEM", help="an item id, e.g. 'alexnet[torch-cpu-bs1-single_stream]'"
    )
    history.add_argument(
        "--changes", action="store_true", help="look for step changes (exit 1 if any)"
    )
    history.add_argument("--branch", help="only runs made on this git branch")
    history.add_argument(
        "--baseline", metavar="NAME", help="only runs on the branch of this baseline's run"
    )
    history.add_argument(
        "--window", type=positive_int, default=8, help="runs on each side of a step (default 8)"
    )
    history.add_argument(
        "--limit", type=positive_int, default=200, help="newest runs to read (default 200)"
    )
    history.add_argument("--db", metavar="LOCATION", help=DB_HELP)
    history.set_defaults(handler=cmd_history)

    report = commands.add_parser(
        "report",
        help="write the HTML report of a run (default: the newest), or --across-systems MODEL",
    )
    report.add_argument("run", metavar="RUN", nargs="?", help="a run id or a unique prefix")
    report.add_argument(
        "--baseline",
        metavar="NAME",
        help="compare with this baseline now (default: the verdicts stored with the run)",
    )
    report.add_argument(
        "--across-systems",
        metavar="MODEL",
        action="append",
        help="compare the newest results of MODEL from every system in the database "
        "(repeatable); prints a table, and writes HTML with -o",
    )
    report.add_argument("-o", "--output", help="the HTML file (default report.html)")
    report.add_argument("--md", metavar="PATH", help="also write the markdown summary here")
    report.add_argument(
        "--history", type=positive_int, default=30, help="runs in each trend plot (default 30)"
    )
    report.add_argument("--db", metavar="LOCATION", help=DB_HELP)
    report.set_defaults(handler=cmd_report)


def cmd_compare(args: argparse.Namespace) -> int:
    from pytest_mlscope.compare import host_differences
    from pytest_mlscope.judging import compare_stored_runs

    with open_store(args.db) as store:
        run_a = store.get_run(args.run_a)
        run_b = store.get_run(args.run_b)
        verdicts = compare_stored_runs(
            store,
            run_a,
            run_b,
            threshold=args.threshold,
            memory_threshold=args.memory_threshold,
            ignore_environment=args.ignore_environment,
            scaling_threshold=args.scaling_threshold,
        )
    print(f"A (baseline): run {run_a.id[:12]}  {local_time(run_a.started_at)}  {git_text(run_a)}")
    print(f"B (current):  run {run_b.id[:12]}  {local_time(run_b.started_at)}  {git_text(run_b)}")
    for difference in host_differences(run_a.host, run_b.host):
        print(f"  environment differs: {difference}")
    rows = []
    for item, found in verdicts.items():
        a, b = ms(found.baseline_median), ms(found.current_median)
        if found.baseline_instructions is not None and found.current_instructions is not None:
            a = f"{found.baseline_instructions:,.0f} instr"  # both runs counted: work decided
            b = f"{found.current_instructions:,.0f} instr"
        rows.append([item, a, b, found.change_text or "-", found.kind])
    print()
    print(table(["item", "A median ms", "B median ms", "B vs A", "verdict"], rows, {1, 2}))
    counts: dict[str, int] = {}
    for found in verdicts.values():
        counts[found.kind] = counts.get(found.kind, 0) + 1
    print()
    print(", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "nothing to compare")
    for item, found in verdicts.items():
        if found.kind in ("regression", "inconclusive", "incomparable"):
            print(f"{found.kind.upper()} {item}: {found.reason}")
    for item, found in verdicts.items():
        if found.scaling and found.decided_by != "scaling":
            from pytest_mlscope.compare.scaling import Scaling

            scaling = Scaling(**found.scaling)
            print(f"sweep ending at {item}: {scaling.kind}, {scaling.describe()}")
    return EXIT_INVALID if any(v.fails for v in verdicts.values()) else EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    from pytest_mlscope.stats import between_run_noise, step_changes

    with open_store(args.db) as store:
        branch = args.branch
        if args.baseline:
            branch = store.get_run(store.get_baseline(args.baseline).run_id).git_branch
        points = store.item_history(args.item, branch=branch, limit=args.limit)
    where = f" on branch {branch}" if branch else ""
    if not points:
        print(f"no timed results of {args.item}{where}")
        return EXIT_OK
    try:
        changes = (
            step_changes([p.median for p in points], window=args.window) if args.changes else []
        )
    except ValueError as exc:
        raise MlscopeError(str(exc)) from None
    at = {change.index: change for change in changes}
    rows = []
    for index, point in enumerate(points):
        change = at.get(index)
        rows.append(
            [
                local_time(point.started_at),
                point.run_id[:12],
                (point.git_commit or "-")[:10],
                point.git_branch or "-",
                point.framework_version or "-",
                ms(point.median),
                f"step {change.change:+.1%} (p={change.p_value:.1g})" if change else "",
            ]
        )
    print(f"{args.item}: {len(points)} runs{where}")
    header = ["started", "run", "commit", "branch", "version", "median ms", ""]
    print(table(header, rows, {5}))
    noise = between_run_noise([p.median for p in points])
    if noise is not None:
        print(f"run-to-run noise (robust spread of medians): {noise:.1%}")
    if args.changes:
        if not changes:
            need = 2 * args.window
            print(
                "no step change found"
                + (f" (needs at least {need} runs)" if len(points) < need else "")
            )
        for change in changes:
            point = points[change.index]
            print(
                f"step change at run {point.run_id[:12]} ({(point.git_commit or '-')[:10]}, "
                f"{local_time(point.started_at)}): median {ms(change.before)} -> "
                f"{ms(change.after)} ms ({change.change:+.1%}), p={change.p_value:.2g}"
            )
    return EXIT_INVALID if changes else EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from pytest_mlscope.report import data as report_data
    from pytest_mlscope.report import html

    with open_store(args.db) as store:
        if args.across_systems:
            if args.run or args.baseline:
                raise MlscopeError("--across-systems takes no RUN and no --baseline")
            views = [report_data.across_systems(store, model) for model in args.across_systems]
            location = store.url
        else:
            run_ref = args.run
            if run_ref is None:
                newest = store.runs(limit=1)
                if not newest:
                    raise MlscopeError(f"no runs in {store.url}; run pytest --mlscope first")
                run_ref = newest[0].id
            data = report_data.load(store, run_ref, baseline=args.baseline, history=args.history)
    if args.across_systems:
        for view in views:
            _print_across(view)
        if args.output:
            print(f"wrote {html.write(html.render_across(views, location), args.output)}")
        return EXIT_OK
    from pytest_mlscope.report import FORMATS

    output = Path(args.output or "report.html")
    FORMATS["html"].write(data, output)
    counts = ", ".join(f"{n} {kind}" for kind, n in data.counts().items())
    print(f"wrote {output}: run {data.run.id[:12]}, {len(data.items)} items ({counts})")
    for note in data.notes:
        print(f"note: {note}")
    if args.md:
        FORMATS["markdown"].write(data, Path(args.md), html=output)
        print(f"wrote {args.md}")
    return EXIT_OK


def _print_across(view: Any) -> None:
    if not view.systems:
        print(f"{view.model}: no timed results in the database")
        return
    print(f"{view.model} on {plural(len(view.systems), 'system')}:")
    for number, system in enumerate(view.systems, 1):
        hosts = ", ".join(system.hostnames)
        print(f"  system {number}: {system.label} ({hosts}; newest {local_time(system.latest)})")
    for difference in view.differences:
        print(f"  differs in {difference}")
    header = ["configuration", *(f"system {i} ms" for i in range(1, len(view.systems) + 1))]
    rows = [
        [config, *(ms(view.median(config, system.key)) for system in view.systems)]
        for config in view.configs
    ]
    print(table(header, rows, set(range(1, len(header)))))

"""``mlscope trace RUN [ITEM]``, ``mlscope trace diff A B [ITEM]`` and ``mlscope trace compare
RUN PATTERN``: the layer table of a traced item, the per-layer changes between two traced runs,
and one model's layers side by side across the frameworks (or stacks) of a run."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from pytest_mlscope.cli.common import DB_HELP, EXIT_OK, open_store
from pytest_mlscope.errors import MlscopeError

if TYPE_CHECKING:
    from pytest_mlscope.store import RunRecord, Store


def register(commands: argparse._SubParsersAction) -> None:
    trace = commands.add_parser(
        "trace",
        help="show an item's layer table from a traced run; 'trace diff A B' compares two runs, "
        "'trace compare RUN PATTERN' puts frameworks side by side",
    )
    trace.add_argument("run", metavar="RUN", help="a run id or a unique prefix of one")
    trace.add_argument("item", metavar="ITEM", nargs="?", help="item id (optional if only one)")
    trace.add_argument("--top", type=int, default=None, help="only the N slowest layers")
    trace.add_argument("--db", metavar="LOCATION", help=DB_HELP)
    trace.set_defaults(handler=cmd_trace)


def diff_parser() -> argparse.ArgumentParser:
    """``mlscope trace diff A B [ITEM]``: its own parser, since ``trace RUN`` takes any word."""
    parser = argparse.ArgumentParser(
        prog="mlscope trace diff", description="per-layer changes between two traced runs"
    )
    parser.add_argument("run_a", metavar="A", help="the earlier run (id or prefix)")
    parser.add_argument("run_b", metavar="B", help="the later run")
    parser.add_argument("item", metavar="ITEM", nargs="?", help="item id (optional if only one)")
    parser.add_argument("--top", type=int, default=20, help="at most N rows (default 20)")
    parser.add_argument("--all", action="store_true", help="include layers that did not move")
    parser.add_argument("--db", metavar="LOCATION", help="results database")
    parser.set_defaults(handler=cmd_trace_diff)
    return parser


def compare_parser() -> argparse.ArgumentParser:
    """``mlscope trace compare RUN [RUN...] PATTERN``: its own parser, as ``trace diff``."""
    parser = argparse.ArgumentParser(
        prog="mlscope trace compare",
        description="one model's layers side by side across the traced items of a run (or of "
        "several runs: other systems sharing the database): each framework's self time per "
        "layer and the kernel it ran",
    )
    parser.add_argument(
        "runs",
        metavar="RUN",
        nargs="+",
        help="a run id or a unique prefix of one; several put their items side by side (the "
        "same model on other machines, stacks or images)",
    )
    parser.add_argument(
        "pattern",
        metavar="PATTERN",
        help="items to put side by side, a shell pattern ('alexnet[*-cpu-bs1-single_stream]')",
    )
    parser.add_argument("--top", type=int, default=None, help="only the N slowest layers")
    parser.add_argument("--db", metavar="LOCATION", help="results database")
    parser.set_defaults(handler=cmd_trace_compare)
    return parser


def _traced(store: Store, run_ref: str, item: str | None) -> tuple[RunRecord, Any]:
    """The latest traced result of ``item`` in a run (the only traced one if no item is named)."""
    run = store.get_run(run_ref)
    results = store.latest_results(run.id)
    traced = {k: r for k, r in results.items() if r.layers or r.trace}
    if item is None:
        if len(traced) != 1:
            names = ", ".join(sorted(traced)) or "none"
            raise MlscopeError(
                f"run {run.id[:12]} has {len(traced)} traced items ({names}); name one"
            )
        return run, next(iter(traced.values()))
    if item not in results:
        raise MlscopeError(f"run {run.id[:12]} has no item {item!r}")
    if item not in traced:
        raise MlscopeError(
            f"{item} in run {run.id[:12]} was not traced; run pytest --mlscope --mlscope-trace "
            "framework (or a higher level)"
        )
    return run, traced[item]


def cmd_trace(args: argparse.Namespace) -> int:
    from pytest_mlscope.report.terminal import table
    from pytest_mlscope.tracing.layers import top_layers, total_self_us

    with open_store(args.db) as store:
        run, record = _traced(store, args.run, args.item)
    rows = top_layers(record.layers, args.top)
    total = total_self_us(record.layers)
    print(f"{record.item_id} in run {run.id[:12]}")
    if record.trace is not None:
        trace = record.trace
        print(
            f"trace level {trace.level}, {trace.iterations} profiled predictions, "
            f"{trace.wall_s:.2f} s of profiling; file: {trace.path or '-'}"
        )
        for note in trace.notes:
            print(f"note: {note}")
    if not rows:
        print("no layer table (the framework has no profiler of ours, or the level was 'model')")
        return EXIT_OK
    body = [
        [
            row.layer,
            row.op_type,
            row.device,
            f"{row.calls:g}",
            f"{row.self_us:,.1f}",
            f"{row.self_us / total:.1%}" if total else "-",
            ", ".join(row.kernels) or "-",
        ]
        for row in rows
    ]
    print(table(["layer", "op", "device", "calls", "self µs", "share", "kernels"], body, (3, 4, 5)))
    median = record.summary.median * 1e6 if record.summary else None
    line = f"sum of self times {total:,.1f} µs"
    if median:
        line += f"; measured median latency {median:,.1f} µs ({total / median - 1:+.1%})"
    print(line)
    if median:
        # "(other)" is the remainder by definition, so the rows always add up: what the named
        # layers account for is the figure that says how much of a prediction is attributed.
        from pytest_mlscope.tracing.layers import OTHER

        named = sum(row.self_us for row in rows if row.layer != OTHER)
        print(f"named layers cover {named / median:.1%} of the measured median, (other) the rest")
    return EXIT_OK


def cmd_trace_diff(args: argparse.Namespace) -> int:
    from pytest_mlscope.report.terminal import table
    from pytest_mlscope.tracing.layers import diff_layers

    with open_store(args.db) as store:
        run_a, a = _traced(store, args.run_a, args.item)
        run_b, b = _traced(store, args.run_b, args.item or a.item_id)
    changes = diff_layers(a.layers, b.layers)
    shown = [c for c in changes if args.all or c.kind != "same"][: args.top]
    print(f"{a.item_id}: run {run_a.id[:12]} (A) -> run {run_b.id[:12]} (B), biggest movers first")
    body = [
        [
            c.layer,
            c.op_type,
            c.kind,
            "-" if c.before_us is None else f"{c.before_us:,.1f}",
            "-" if c.after_us is None else f"{c.after_us:,.1f}",
            f"{c.delta_us:+,.1f}",
            "-" if c.ratio is None else f"{c.ratio - 1:+.0%}",
            "" if c.kernels_before == c.kernels_after else
            f"{', '.join(c.kernels_before) or '?'} -> {', '.join(c.kernels_after) or '?'}",
        ]
        for c in shown
    ]  # fmt: skip
    if not body:
        print("no layer moved (by 10 % and 2 µs) and no kernel changed")
        return EXIT_OK
    print(
        table(["layer", "op", "change", "A µs", "B µs", "Δ µs", "Δ", "kernel"], body, (3, 4, 5, 6))
    )
    return EXIT_OK


def cmd_trace_compare(args: argparse.Namespace) -> int:
    import fnmatch

    from pytest_mlscope.report.terminal import table
    from pytest_mlscope.tracing.layers import OTHER, side_by_side, total_self_us

    with open_store(args.db) as store:
        runs = [store.get_run(ref) for ref in dict.fromkeys(args.runs)]
        results = {run.id: store.latest_results(run.id) for run in runs}
    several = len(runs) > 1
    chosen: dict[str, Any] = {}
    labels = []
    matched = []
    for run in runs:
        for item, record in sorted(results[run.id].items()):
            if not _matches(item, args.pattern, fnmatch):
                continue
            matched.append(item)
            if record.layers:
                chosen[f"{run.id}/{item}"] = record
                labels.append(_label(record, run if several else None))
    where = f"runs {', '.join(r.id[:12] for r in runs)}" if several else f"run {runs[0].id[:12]}"
    if len(chosen) < 2:
        raise MlscopeError(
            f"{where}: {len(chosen)} traced item(s) match {args.pattern!r} "
            f"({', '.join(sorted(matched)) or 'none match'}); compare needs two or more with "
            "layer tables (pytest --mlscope --mlscope-trace=framework)"
        )
    across = side_by_side([record.layers for record in chosen.values()])
    shown = [entry for entry in across if entry.layer != OTHER][: args.top]
    print(
        f"{where}: {len(chosen)} items side by side; self µs per prediction and the "
        "kernel that took most of it, slowest layers first"
    )
    if several:
        for run in runs:
            cpu = run.host.get("cpu_model") or "?"
            started = f"{run.started_at:%Y-%m-%d %H:%M}"
            print(f"  {_run_label(run)}: {run.hostname}, {cpu}, started {started}")
    body = [
        [entry.layer, "/".join(entry.op_types)] + [_cell(side) for side in entry.sides]
        for entry in shown
    ]
    print(table(["layer", "op", *labels], body, ()))
    for column, (label, record) in enumerate(zip(labels, chosen.values(), strict=True)):
        named = total_self_us(r for r in record.layers if r.layer != OTHER)
        median = record.summary.median * 1e6 if record.summary else None
        cover = f", {named / median:.0%} of the measured median {median:,.1f} µs" if median else ""
        only = sum(1 for e in across if e.layer != OTHER and e.sides[column] and
                   sum(s is not None for s in e.sides) == 1)  # fmt: skip
        print(
            f"{label}: named layers {named:,.1f} µs{cover}"
            + (f"; {only} layer(s) no other item names" if only else "")
        )
    return EXIT_OK


def _matches(item: str, pattern: str, fnmatch: Any) -> bool:
    """Shell-style matching in which ``[`` and ``]`` are the item id's own brackets."""
    escaped = "".join("[[]" if c == "[" else "[]]" if c == "]" else c for c in pattern)
    return bool(fnmatch.fnmatchcase(item, escaped))


def _label(record: Any, run: Any = None) -> str:
    """A column's name: the framework (and stack) and device; with the run's, when several
    runs are side by side."""
    cell = record.cell
    stack = f"@{cell.stack}" if getattr(cell, "stack", None) else ""
    label = f"{cell.framework}{stack}-{cell.device}"
    return f"{_run_label(run)}:{label}" if run is not None else label


def _run_label(run: Any) -> str:
    return f"{run.hostname}/{run.id[:6]}"


def _cell(row: Any) -> str:
    if row is None:
        return "-"
    kernel = row.kernels[0] if row.kernels else ""
    if len(kernel) > 40:
        kernel = kernel[:39] + "…"
    return f"{row.self_us:,.1f}" + (f" {kernel}" if kernel else "")

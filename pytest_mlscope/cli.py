"""The ``mlscope`` command: check manifests, show this host, read the results database and
name the baseline runs that later runs are compared against.

Everything here reads through the same modules the plugin uses (manifest loader, host facts,
:class:`~pytest_mlscope.store.Store`), so what the command shows is what a test session saw.
SQLAlchemy is imported only by the subcommands that open the database.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mlscope.errors import ManifestError, MlscopeError
from pytest_mlscope.report.terminal import RESULT_COLUMNS, RESULT_NUMBERS, ms, result_row, table

if TYPE_CHECKING:
    from pytest_mlscope.store import (
        ArtifactEntry,
        BaselineArtifact,
        BaselineRecord,
        ResultRecord,
        RunRecord,
        Store,
    )

# Exit statuses: 1 means "what you asked about is not right" (an invalid manifest); 2 means the
# command could not do its job (no database, unknown run), as argparse uses for usage errors.
EXIT_OK = 0
EXIT_INVALID = 1
EXIT_ERROR = 2


# -- formatting ----------------------------------------------------------------------------------


def _local_time(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {outcome}" for outcome, n in counts.items()) or "no results"


def _bytes(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    size = count / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _pairs(pairs: Sequence[tuple[str, str]]) -> str:
    width = max(len(key) for key, _ in pairs) + 1
    return "\n".join(f"{key + ':':<{width}} {value}".rstrip() for key, value in pairs)


# -- validate ------------------------------------------------------------------------------------


def _shown_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def cmd_validate(args: argparse.Namespace) -> int:
    from pytest_mlscope.manifest import load_manifest, manifest_files

    missing = [path for path in args.paths if not Path(path).exists()]
    for path in missing:
        print(f"{path}: no such file or directory")
    files = manifest_files(path for path in args.paths if Path(path).exists())
    if not files and not missing:
        print(f"no manifests (*.yaml, *.yml) under {', '.join(args.paths)}")
        return EXIT_INVALID
    invalid = problems = 0
    for path in files:
        try:
            manifest = load_manifest(path)
        except ManifestError as exc:
            invalid += 1
            problems += len(exc.problems)
            for problem in exc.problems:
                print(problem)
            continue
        frameworks = _plural(len(manifest.framework), "framework")
        print(f"ok  {_shown_path(path)} ({manifest.name}: {frameworks})")
    summary = f"{_plural(len(files), 'manifest')}, {invalid} invalid"
    if problems:
        summary += f" ({_plural(problems, 'problem')})"
    if missing:
        summary += f", {_plural(len(missing), 'path')} not found"
    print(summary)
    return EXIT_INVALID if invalid or missing else EXIT_OK


# -- hw ------------------------------------------------------------------------------------------


def cmd_hw(args: argparse.Namespace) -> int:
    from pytest_mlscope.hardware import current_host

    host = current_host()
    if args.json:
        print(json.dumps(host.fingerprint(), indent=2, sort_keys=True))
        return EXIT_OK
    gpus = [
        f"{gpu.name} ({gpu.memory_gb} GiB, compute capability {gpu.compute_capability}, "
        f"driver {gpu.driver})"
        for gpu in host.gpus
    ]
    pairs = [
        ("hostname", host.hostname),
        ("arch", host.arch),
        ("os", host.os),
        ("cpu", host.cpu_model),
        ("cores", f"{host.physical_cores} physical, {host.logical_cores} logical"),
        ("memory", f"{host.memory_gb} GiB"),
        ("cpu flags", str(len(host.cpu_flags))),
        ("isa", ", ".join(host.isa) or "none known"),
        ("python", host.python),
        ("gpus", "; ".join(gpus) or f"none ({host.gpu_note})"),
        ("cuda (driver)", host.cuda_driver or "-"),
        ("tuning", ", ".join(f"{k}={v!r}" for k, v in host.tuning.items()) or "unreadable"),
    ]
    pairs += [
        (name, version)
        for name, version in sorted(host.packages.items(), key=lambda kv: kv[0].lower())
    ]
    print(_pairs(pairs))
    if args.markers:
        print()
        print(table(["marker", "here", "why"], _marker_rows(host)))
    return EXIT_OK


def _marker_rows(host: Any) -> list[list[str]]:
    """Which of the plugin's selection markers this host satisfies, and why not."""
    from pytest_mlscope import containers
    from pytest_mlscope.hardware import ISA_FLAGS, noise_sources

    rows = [["cpu", "yes", f"{host.cpu_model}, {host.arch}"]]
    if host.gpus:
        rows.append(["gpu", "yes", ", ".join(g.name for g in host.gpus)])
    else:
        rows.append(["gpu", "no", host.gpu_note])
    try:
        containers.client(timeout=5)
        rows.append(["docker", "yes", "a Docker daemon answers"])
    except containers.ContainerError as exc:
        rows.append(["docker", "no", str(exc)])
    for name in ISA_FLAGS:
        rows.append([f"hardware(isa={name!r})", "yes" if host.has_isa(name) else "no", ""])
    noisy = noise_sources(host.tuning)
    rows.append(["(tuned for timing)", "no" if noisy else "yes", ", ".join(noisy)])
    return rows


# -- runs and show -------------------------------------------------------------------------------


def cmd_golden(args: argparse.Namespace) -> int:
    from pytest_mlscope.manifest import load_manifest
    from pytest_mlscope.session import MlscopeSession, Settings

    manifest = load_manifest(args.manifest, require_files=False)
    settings = Settings(
        rootdir=Path.cwd(),
        manifest_paths=[],
        runtime="inprocess",
        cache_dir=Path(args.cache).resolve() if args.cache else None,
    )
    session = MlscopeSession(settings)
    try:
        path = session.write_golden(manifest, args.framework)
    finally:
        session.close()
    print(
        f"wrote {_shown_path(path)} "
        f"({manifest.name}, outputs of {args.framework or 'the reference framework'})"
    )
    return EXIT_OK


def _open_store(location: str | None) -> Store:
    from pytest_mlscope.store import Store, default_location

    # Reading never creates: a wrong --db must say so rather than show an empty database.
    return Store.from_location(location or default_location(), create=False)


def _git_text(run: RunRecord) -> str:
    if not run.git_commit and not run.git_branch:
        return "-"
    text = (run.git_commit or "no commit")[:10]
    if run.git_branch:
        text += f" on {run.git_branch}"
    if run.git_dirty:
        text += " (dirty)"
    return text


def cmd_runs(args: argparse.Namespace) -> int:
    with _open_store(args.db) as store:
        runs = store.runs(limit=args.limit)
        if not runs:
            print(f"no runs in {store.url}")
            return EXIT_OK
    rows = [
        [
            run.id[:12],
            _local_time(run.started_at),
            run.status,
            (run.git_commit or "-")[:10],
            run.git_branch or "-",
            run.hostname or "-",
            _counts(run.counts),
        ]
        for run in runs
    ]
    header = ["id", "started", "status", "commit", "branch", "host", "results"]
    print(table(header, rows))
    return EXIT_OK


def _verdict_text(verdict: dict[str, object] | None) -> str:
    if not verdict:
        return "-"
    return f"{verdict.get('kind', '')} {verdict.get('ratio_text') or ''}".strip() or "-"


def _result_table(results: Sequence[ResultRecord]) -> str:
    """The results under RESULT_COLUMNS, plus a verdict column when any result has one."""
    rows = [result_row(r.item_id, r.outcome, r.accuracy, r.summary, r.cold_start) for r in results]
    if not any(r.verdict for r in results):
        return table(RESULT_COLUMNS, rows, RESULT_NUMBERS)
    for row, result in zip(rows, results, strict=True):
        row.append(_verdict_text(result.verdict))
    return table([*RESULT_COLUMNS, "verdict"], rows, RESULT_NUMBERS)


def _print_run(run: RunRecord, results: Sequence[ResultRecord], location: str) -> None:
    """What `mlscope show` prints for a run: its header, results table and failure messages."""
    host = run.host
    host_text = " · ".join(
        str(part)
        for part in (
            run.hostname,
            host.get("cpu_model"),
            f"{host.get('physical_cores', '?')} cores",
            f"{host.get('memory_gb', '?')} GiB",
        )
        if part
    )
    finished = f", finished {_local_time(run.finished_at)}" if run.finished_at else ""
    header = [
        ("run", run.id),
        ("started", _local_time(run.started_at) + finished),
        ("status", f"{run.status} ({_counts(run.counts)})"),
        ("git", _git_text(run)),
        ("host", host_text or "-"),
        ("database", location),
    ]
    if run.tags:
        header.append(("tags", ", ".join(f"{k}={v}" for k, v in sorted(run.tags.items()))))
    print(_pairs(header))
    if not results:
        print("\nno results recorded")
        return
    print()
    print(_result_table(results))
    failures = [r for r in results if r.outcome in ("failed", "error") and r.message]
    if failures:
        print()
        for result in failures:
            lines = result.message.strip().splitlines() if result.message else []
            print(f"{result.outcome.upper()} {result.item_id}: {lines[0] if lines else ''}")
            for extra in lines[1:]:
                print(f"    {extra}")


def cmd_show(args: argparse.Namespace) -> int:
    with _open_store(args.db) as store:
        run = store.get_run(args.run)
        results = store.results(run.id)
        location = store.url
    _print_run(run, results, location)
    return EXIT_OK


# -- compare and export --------------------------------------------------------------------------


def cmd_compare(args: argparse.Namespace) -> int:
    from pytest_mlscope.compare import host_differences
    from pytest_mlscope.judging import compare_stored_runs

    with _open_store(args.db) as store:
        run_a = store.get_run(args.run_a)
        run_b = store.get_run(args.run_b)
        verdicts = compare_stored_runs(
            store,
            run_a,
            run_b,
            threshold=args.threshold,
            ignore_environment=args.ignore_environment,
        )
    print(f"A (baseline): run {run_a.id[:12]}  {_local_time(run_a.started_at)}  {_git_text(run_a)}")
    print(f"B (current):  run {run_b.id[:12]}  {_local_time(run_b.started_at)}  {_git_text(run_b)}")
    for difference in host_differences(run_a.host, run_b.host):
        print(f"  environment differs: {difference}")
    rows = []
    for item, found in verdicts.items():
        a, b = ms(found.baseline_median), ms(found.current_median)
        if found.baseline_instructions is not None and found.current_instructions is not None:
            a = f"{found.baseline_instructions:,.0f} instr"  # both runs counted: work decided
            b = f"{found.current_instructions:,.0f} instr"
        rows.append([item, a, b, found.ratio_text or "-", found.kind])
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
    return EXIT_INVALID if any(v.fails for v in verdicts.values()) else EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    from pytest_mlscope.stats import between_run_noise, step_changes

    with _open_store(args.db) as store:
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
                _local_time(point.started_at),
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
                f"{_local_time(point.started_at)}): median {ms(change.before)} -> "
                f"{ms(change.after)} ms ({change.change:+.1%}), p={change.p_value:.2g}"
            )
    return EXIT_INVALID if changes else EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from pytest_mlscope.report import data as report_data
    from pytest_mlscope.report import html

    with _open_store(args.db) as store:
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
    output = args.output or "report.html"
    html.write(html.render(data), output)
    counts = ", ".join(f"{n} {kind}" for kind, n in data.counts().items())
    print(f"wrote {output}: run {data.run.id[:12]}, {len(data.items)} items ({counts})")
    for note in data.notes:
        print(f"note: {note}")
    if args.md:
        from pytest_mlscope.report import markdown

        Path(args.md).write_text(markdown.render(data, html_path=output), encoding="utf-8")
        print(f"wrote {args.md}")
    return EXIT_OK


def _print_across(view: Any) -> None:
    if not view.systems:
        print(f"{view.model}: no timed results in the database")
        return
    print(f"{view.model} on {_plural(len(view.systems), 'system')}:")
    for number, system in enumerate(view.systems, 1):
        hosts = ", ".join(system.hostnames)
        print(f"  system {number}: {system.label} ({hosts}; newest {_local_time(system.latest)})")
    for difference in view.differences:
        print(f"  differs in {difference}")
    header = ["configuration", *(f"system {i} ms" for i in range(1, len(view.systems) + 1))]
    rows = [
        [config, *(ms(view.median(config, system.key)) for system in view.systems)]
        for config in view.configs
    ]
    print(table(header, rows, set(range(1, len(header)))))


def cmd_copy(args: argparse.Namespace) -> int:
    """Copy runs (and baselines) into another database: moving a laptop's or a runner's history
    into the team's shared PostgreSQL, or the other way round for offline work."""
    from pytest_mlscope.store import Store, StoreError

    with _open_store(args.db) as source, Store.from_location(args.to) as target:
        if source.url == target.url:
            raise MlscopeError(f"--to is the database the runs come from: {target.url}")
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
            f"copied {_plural(copied, 'run')} ({_plural(results, 'result')}) to {target.url}"
            + (f"; {skipped} already there" if skipped else "")
        )
        if not args.baselines:
            return EXIT_OK
        status = EXIT_OK
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
                kept = f" with {_plural(len(artifacts), 'artifact')}" if artifacts else ""
                print(f"baseline {baseline.name!r} -> run {baseline.run_id[:12]}{kept}")
            except StoreError as exc:
                print(f"baseline {baseline.name!r} not copied: {exc}")
                status = EXIT_INVALID
    return status


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


def cmd_stacks_setup(args: argparse.Namespace) -> int:
    from pytest_mlscope import stacks

    for name in args.stacks or sorted(stacks.STACKS):
        stack = stacks.get(name)
        print(
            f"{name}: setting up {stacks.location(stack)} ({', '.join(stack.requirements[:2])}, …)"
        )
        stacks.setup(stack, force=args.force)
        print(f"{name}: {stack.framework} {stacks.installed_version(stack)} ready")
    return EXIT_OK


def cmd_stacks_list(args: argparse.Namespace) -> int:
    from pytest_mlscope import stacks

    rows = [
        [name, stacks.installed_version(stack) or "not set up", str(stacks.location(stack)),
         stack.why]
        for name, stack in sorted(stacks.STACKS.items())
    ]  # fmt: skip
    print(table(["stack", "version", "venv", "why a venv of its own"], rows))
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from pytest_mlscope.export import export_run

    with _open_store(args.db) as store:
        run = store.get_run(args.run)
        results = store.results(run.id)
    count = export_run(run, results, args.format, args.output)
    print(f"wrote {args.output} ({count} benchmarks of run {run.id[:12]}, {args.format} format)")
    return EXIT_OK


# -- baselines -----------------------------------------------------------------------------------


def _baseline_line(baseline: BaselineRecord, run: RunRecord, extra: str = "") -> str:
    details = [_plural(run.total, "result")]
    if run.status != "complete":
        details.append(f"run {run.status}")
    if extra:
        details.append(extra)
    return f"baseline {baseline.name} -> run {run.id[:12]} ({'; '.join(details)})"


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else "-"


# -- traces --------------------------------------------------------------------------------------


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

    with _open_store(args.db) as store:
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
    return EXIT_OK


def cmd_trace_diff(args: argparse.Namespace) -> int:
    from pytest_mlscope.report.terminal import table
    from pytest_mlscope.tracing.layers import diff_layers

    with _open_store(args.db) as store:
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


def cmd_baseline_set(args: argparse.Namespace) -> int:
    with _open_store(args.db) as store:
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
    with _open_store(args.db) as store:
        baselines = [(baseline, store.get_run(baseline.run_id)) for baseline in store.baselines()]
    if not baselines:
        print("no baselines")
        return EXIT_OK
    rows = [
        [
            baseline.name,
            run.id[:12],
            _local_time(baseline.updated_at),
            _local_time(run.started_at),
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
    with _open_store(args.db) as store:
        baseline = store.get_baseline(args.name)
        run = store.get_run(baseline.run_id)
        artifacts = store.baseline_artifacts(baseline.name)
        results = store.results(run.id)
        location = store.url
    extra = f"set {_local_time(baseline.updated_at)}"
    print(_baseline_line(baseline, run, extra))
    if baseline.note:
        print(f"note: {baseline.note.strip()}")
    _print_baseline_artifacts(artifacts)
    print()
    _print_run(run, results, location)
    return EXIT_OK


def _print_baseline_artifacts(artifacts: Sequence[BaselineArtifact]) -> None:
    """What a machine without the model files still has of the baseline: the ones it keeps."""
    if not artifacts:
        print("artifacts: none kept in the database")
        return
    # Counted once per file: one file may serve several frameworks.
    stored = sum({kept.sha256: kept.stored_size for kept in artifacts}.values())
    print(
        f"artifacts: {_plural(len(artifacts), 'artifact')} kept in the database "
        f"({_bytes(stored)} stored)"
    )
    rows = [
        [kept.sha256[:12], kept.model, kept.framework, kept.format, _bytes(kept.size)]
        for kept in artifacts
    ]
    print(table(["sha256", "model", "framework", "format", "size"], rows, {4}))


def cmd_baseline_delete(args: argparse.Namespace) -> int:
    with _open_store(args.db) as store:
        baseline = store.get_baseline(args.name)
        freed = store.delete_baseline(args.name)
    kept = f"; {_bytes(freed)} of artifacts freed" if freed else ""
    print(
        f"deleted baseline {baseline.name} (was run {baseline.run_id[:12]}; the run is kept{kept})"
    )
    return EXIT_OK


# -- entry point ---------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlscope",
        description="Check model manifests, read pytest-mlscope's results and set baselines.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser(
        "validate", help="check manifests and print every problem with file:line:key"
    )
    validate.add_argument("paths", nargs="+", metavar="PATH", help="manifest files or directories")
    validate.set_defaults(handler=cmd_validate)

    hw = commands.add_parser("hw", help="show what this host has (CPU, memory, GPUs, packages)")
    hw.add_argument("--json", action="store_true", help="print the stored fingerprint as JSON")
    hw.add_argument(
        "--markers", action="store_true", help="also show which markers this host satisfies"
    )
    hw.set_defaults(handler=cmd_hw)

    db_help = "database file or SQLAlchemy URL (default: $MLSCOPE_DB, else .mlscope/results.db)"
    runs = commands.add_parser("runs", help="list recorded runs, newest first")
    runs.add_argument("--db", metavar="LOCATION", help=db_help)
    runs.add_argument(
        "--limit", type=_positive_int, default=20, metavar="N", help="runs to list (default 20)"
    )
    runs.set_defaults(handler=cmd_runs)

    show = commands.add_parser("show", help="show one run's results")
    show.add_argument("run", metavar="RUN", help="a run id or a unique prefix of one")
    show.add_argument("--db", metavar="LOCATION", help=db_help)
    show.set_defaults(handler=cmd_show)

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
    baseline_set.add_argument("--db", metavar="LOCATION", help=db_help)
    baseline_set.set_defaults(handler=cmd_baseline_set)

    baseline_list = baseline_commands.add_parser("list", help="list baselines by name")
    baseline_list.add_argument("--db", metavar="LOCATION", help=db_help)
    baseline_list.set_defaults(handler=cmd_baseline_list)

    baseline_show = baseline_commands.add_parser(
        "show", help="show a baseline, the artifacts it keeps and its run"
    )
    baseline_show.add_argument("name", metavar="NAME", help="the baseline to show")
    baseline_show.add_argument("--db", metavar="LOCATION", help=db_help)
    baseline_show.set_defaults(handler=cmd_baseline_show)

    baseline_delete = baseline_commands.add_parser(
        "delete", help="forget a baseline (its run is kept)"
    )
    baseline_delete.add_argument("name", metavar="NAME", help="the baseline to delete")
    baseline_delete.add_argument("--db", metavar="LOCATION", help=db_help)
    baseline_delete.set_defaults(handler=cmd_baseline_delete)

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
        "--ignore-environment",
        action="store_true",
        help="compare latencies even across different CPUs or framework versions (A/B of stacks)",
    )
    compare.add_argument("--db", metavar="LOCATION", help=db_help)
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
        "--window", type=_positive_int, default=8, help="runs on each side of a step (default 8)"
    )
    history.add_argument(
        "--limit", type=_positive_int, default=200, help="newest runs to read (default 200)"
    )
    history.add_argument("--db", metavar="LOCATION", help=db_help)
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
        "--history", type=_positive_int, default=30, help="runs in each trend plot (default 30)"
    )
    report.add_argument("--db", metavar="LOCATION", help=db_help)
    report.set_defaults(handler=cmd_report)

    stacks_parser = commands.add_parser(
        "stacks", help="venv stacks: frameworks that cannot share the host's environment"
    )
    stack_commands = stacks_parser.add_subparsers(dest="stack_command", required=True)
    stacks_setup = stack_commands.add_parser("setup", help="make a stack's venv (registry access)")
    stacks_setup.add_argument("stacks", metavar="STACK", nargs="*", help="default: all")
    stacks_setup.add_argument("--force", action="store_true", help="make it again")
    stacks_setup.set_defaults(handler=cmd_stacks_setup)
    stack_commands.add_parser("list", help="the venv stacks and their state").set_defaults(
        handler=cmd_stacks_list
    )

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
    copy.add_argument("--db", metavar="LOCATION", help=db_help)
    copy.set_defaults(handler=cmd_copy)

    export = commands.add_parser(
        "export", help="write a run as pyperf or pytest-benchmark JSON for their own tools"
    )
    export.add_argument("run", metavar="RUN", help="a run id or a unique prefix of one")
    export.add_argument("--format", choices=("pyperf", "pytest-benchmark"), required=True)
    export.add_argument("-o", "--output", required=True, help="the JSON file to write")
    export.add_argument("--db", metavar="LOCATION", help=db_help)
    export.set_defaults(handler=cmd_export)

    trace = commands.add_parser(
        "trace", help="show an item's layer table from a traced run; 'trace diff' compares two"
    )
    trace.add_argument("run", metavar="RUN", help="a run id or a unique prefix of one")
    trace.add_argument("item", metavar="ITEM", nargs="?", help="item id (optional if only one)")
    trace.add_argument("--top", type=int, default=None, help="only the N slowest layers")
    trace.add_argument("--db", metavar="LOCATION", help=db_help)
    trace.set_defaults(handler=cmd_trace)
    golden = commands.add_parser(
        "golden", help="write a manifest's golden outputs from one framework (review the diff)"
    )
    golden.add_argument("manifest", metavar="MANIFEST", help="the manifest whose golden to write")
    golden.add_argument(
        "--framework", help="whose outputs become the golden (default: the agreement reference)"
    )
    golden.add_argument(
        "--cache", metavar="DIR", help="artifact cache (default .mlscope/artifacts)"
    )
    golden.set_defaults(handler=cmd_golden)

    containers = commands.add_parser(
        "containers", help="build and list the container images of software stacks"
    )
    container_commands = containers.add_subparsers(
        dest="containers_command", required=True, metavar="ACTION"
    )
    build = container_commands.add_parser(
        "build",
        help="build stack images (containers/<stack>/Dockerfile); only what changed is rebuilt",
    )
    build.add_argument(
        "stacks", nargs="*", metavar="STACK", help="stacks to build (default: every one)"
    )
    build.add_argument(
        "--base",
        metavar="IMAGE",
        help="base image (default python:3.11-slim; mlscope/base:bookworm from "
        "containers/base/build.sh where no registry is reachable; caffe: "
        "mlscope/base:bullseye-caffe from containers/caffe/base.sh)",
    )
    build.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    build.add_argument(
        "--framework-version",
        metavar="VERSION",
        help="the framework release to install (default: the one installed here)",
    )
    build.add_argument("--force", action="store_true", help="rebuild even if the hash matches")
    build.add_argument(
        "--dir", type=Path, help="the folder holding <stack>/Dockerfile (default: ./containers)"
    )
    build.set_defaults(handler=cmd_containers_build)
    listing = container_commands.add_parser("list", help="list the stack images built here")
    listing.set_defaults(handler=cmd_containers_list)
    prune = container_commands.add_parser(
        "prune", help="remove stack images that a newer build replaced (no moving tag left)"
    )
    prune.add_argument("stacks", nargs="*", metavar="STACK", help="only these stacks")
    prune.add_argument("--dry-run", action="store_true", help="list them, remove nothing")
    prune.set_defaults(handler=cmd_containers_prune)
    return parser


def cmd_containers_build(args: argparse.Namespace) -> int:
    from pytest_mlscope import containers

    folder = args.dir.resolve() if args.dir else containers.containers_dir()
    chosen = args.stacks or containers.stacks(folder)
    if args.framework_version and len(chosen) != 1:
        raise containers.ContainerError("--framework-version needs exactly one STACK")
    docker = containers.client()
    failed = []
    for stack in chosen:
        try:
            made = containers.plan(
                stack,
                folder,
                device=args.device,
                # A stack whose framework is a Debian package (Caffe) has a base of its own; a
                # --base for every stack means the pip stacks' one.
                base_image=None
                if stack in containers.SYSTEM_STACKS and len(chosen) > 1
                else args.base,
                framework_version=args.framework_version,
                docker=docker,
            )
            built = containers.build(made, docker, force=args.force, log=print)
        except containers.ContainerError as exc:
            if len(chosen) == 1:
                raise
            print(f"mlscope: {stack}: {exc}", file=sys.stderr)
            failed.append(stack)
            continue
        what = "built" if built.rebuilt else "up to date"
        print(
            f"{made.tag}  {what} in {built.seconds:.1f} s, {built.size_mb:.0f} MB "
            f"({stack} {made.framework_version}, Python {made.python}, FROM {made.base_image}); "
            f"also {', '.join(made.aliases)}"
        )
    if failed:
        print(f"mlscope: not built: {', '.join(failed)}", file=sys.stderr)
        return EXIT_ERROR
    return 0


def cmd_containers_prune(args: argparse.Namespace) -> int:
    from pytest_mlscope import containers

    docker = containers.client()
    freed, kept = 0.0, []
    for image in containers.superseded(docker, args.stacks or None):
        name = ", ".join(image.tags) or image.short_id
        size = image.attrs.get("Size", 0) / 1e6
        if args.dry_run:
            print(f"would remove {name} ({size:.0f} MB)")
            continue
        try:
            docker.images.remove(image.id)
        except Exception as exc:  # a container still uses it, say
            kept.append(f"{name}: {str(exc).splitlines()[0]}")
            continue
        freed += size
        print(f"removed {name} ({size:.0f} MB)")
    for line in kept:
        print(f"mlscope: kept {line}", file=sys.stderr)
    if not args.dry_run:
        print(f"freed {freed:.0f} MB (layers shared with kept images stay)")
    return EXIT_ERROR if kept else 0


def cmd_containers_list(args: argparse.Namespace) -> int:
    from pytest_mlscope import containers

    rows = []
    for image in containers.images(containers.client()):
        labels = image.labels or {}
        label = containers.LABEL
        rows.append(
            [
                ", ".join(image.tags) or "(untagged)",
                labels.get(f"{label}.stack", "?"),
                labels.get(f"{label}.framework-version", "?"),
                labels.get(f"{label}.device", "?"),
                labels.get(f"{label}.base-image", "?"),
                image.short_id.removeprefix("sha256:"),
                image.attrs.get("Created", "")[:19].replace("T", " "),
                f"{image.attrs.get('Size', 0) / 1e6:.0f} MB",
            ]
        )
    if not rows:
        print("no stack images here: build them with `mlscope containers build`")
        return 0
    header = ["tags", "stack", "version", "device", "base", "id", "created", "size"]
    print(table(header, rows, right={7}))
    return 0


def _trace_diff_parser() -> argparse.ArgumentParser:
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


def main(argv: list[str] | None = None) -> int:
    """Run ``mlscope``; returns the exit status (0 ok, 1 invalid manifests, 2 error)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == ["trace", "diff"]:
        args = _trace_diff_parser().parse_args(argv[2:])
    else:
        args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except MlscopeError as exc:
        print(f"mlscope: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        # `mlscope runs | head`: the reader left; say nothing more (Python's documented recipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())

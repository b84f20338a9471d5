"""Does the shipped gate keep its promise? Real `pytest --mlscope` sessions, default settings.

Each repetition is a new project as a user starts one: a fresh folder outside this repository
and a fresh results database. Session 1 saves a baseline; session 2 names it, with nothing else
on the command line but (per condition) ``--mlscope-inject-slowdown F``: calibrated CPU work worth
F of each call, never a sleep. The verdict is read from the database the session wrote, so this
is exactly what a CI job would have been told. Conditions run in a seeded random order, so drift
on the machine does not line up with one.

At the default threshold T = 5 % the promise is: an unchanged model flagged at most 1 % of the
time, a slowdown of T caught at least 95 %, one of T/2 flagged at most 5 %. The realized
slowdown of an injection differs from its nominal size (the calibration is against one call's
time); the table gives the median interleaved estimate beside each condition.

Run from the repository root (about 30 s per repetition and condition on 2 cores)::

    .venv/bin/python benchmarks/gate.py --repetitions 10
    .venv/bin/python benchmarks/gate.py --repetitions 40 --readme   # rewrite the README table
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ITEM_FILTER = "digits and onnxruntime and bs1 and single_stream"
ITEM = "digits_cnn[onnxruntime-cpu-bs1-single_stream]"
CONDITIONS = (0.0, 0.025, 0.05, 0.10)  # nominal injected slowdown of session 2
MARK_BEGIN, MARK_END = "<!-- gate-table -->", "<!-- /gate-table -->"


def session(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """One `pytest --mlscope` session in the user's project, as a user types it."""
    command = [
        sys.executable, "-m", "pytest", "--mlscope", "-p", "no:cacheprovider", "-q",
        f"--mlscope-manifests={project / 'manifests'}", "-k", ITEM_FILTER,
        f"--mlscope-db={project / 'results.db'}", f"--mlscope-cache={project / 'cache'}",
        "--mlscope-html=none", *args,
    ]  # fmt: skip
    return subprocess.run(command, cwd=project, capture_output=True, text=True, check=False)


def repetition(slowdown: float, root: Path, cache: Path) -> dict[str, Any]:
    from pytest_mlscope.store import Store

    project = Path(tempfile.mkdtemp(prefix="gate-", dir=root))
    shutil.copytree(REPO / "manifests", project / "manifests")
    shutil.copytree(cache, project / "cache")  # built models, as a warm CI cache holds them
    saved = session(project, "--mlscope-save-baseline=main")
    if saved.returncode != 0:
        raise RuntimeError(f"saving the baseline failed:\n{saved.stdout[-3000:]}")
    extra = [f"--mlscope-inject-slowdown={slowdown}"] if slowdown else []
    started = time.perf_counter()
    judged = session(project, "--mlscope-baseline=main", *extra)
    wall = time.perf_counter() - started
    with Store.from_location(project / "results.db", create=False) as store:
        record = store.latest_results(store.runs(limit=1)[0].id)[ITEM]
    verdict = record.verdict or {}
    shutil.rmtree(project, ignore_errors=True)
    return {
        "slowdown": slowdown,
        "kind": verdict.get("kind"),
        "design": verdict.get("design"),
        "ratio": verdict.get("ratio"),
        "pairs": verdict.get("pairs"),
        "item_s": record.duration_s,
        "session_s": wall,
        "failed": judged.returncode != 0,
    }


def warm_cache(root: Path) -> Path:
    """Build the bundled models once, into a cache each repetition copies."""
    project = root / "warm"
    shutil.copytree(REPO / "manifests", project / "manifests")
    done = session(project, "--mlscope-min-duration=0", "--mlscope-min-count=5")
    if done.returncode != 0:
        raise RuntimeError(f"building the models failed:\n{done.stdout[-3000:]}")
    return project / "cache"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| condition (nominal) | realized, median | regression | ok | inconclusive | other "
        "| median item time |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for slowdown in CONDITIONS:
        chosen = [r for r in rows if r["slowdown"] == slowdown]
        if not chosen:
            continue
        kinds = [r["kind"] for r in chosen]
        n = len(chosen)
        ratios = [r["ratio"] for r in chosen if r["ratio"]]
        realized = f"{statistics.median(ratios) - 1:+.1%}" if ratios else "-"
        times = [r["item_s"] for r in chosen if r["item_s"]]
        other = n - sum(kinds.count(k) for k in ("regression", "ok", "inconclusive"))
        name = "unchanged (A/A)" if slowdown == 0 else f"+{slowdown:.1%} injected"
        lines.append(
            f"| {name} | {realized} | {kinds.count('regression')}/{n} | {kinds.count('ok')}/{n} "
            f"| {kinds.count('inconclusive')}/{n} | {other}/{n} "
            f"| {statistics.median(times):.1f} s |"
        )
    return "\n".join(lines)


def machine() -> str:
    from pytest_mlscope.hardware import current_host

    host = current_host()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return (
        f"commit {commit}{' (with uncommitted changes)' if dirty else ''}, "
        f"{host.cpu_model}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f} at the end"
    )


def write_readme(text: str) -> None:
    readme = REPO / "README.md"
    content = readme.read_text()
    start, end = content.index(MARK_BEGIN), content.index(MARK_END)
    readme.write_text(content[: start + len(MARK_BEGIN)] + "\n" + text + "\n" + content[end:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write every repetition here")
    parser.add_argument("--readme", action="store_true", help="rewrite the README's gate table")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="mlscope-gate-"))
    try:
        cache = warm_cache(root)
        order = [c for c in CONDITIONS for _ in range(args.repetitions)]
        random.Random(args.seed).shuffle(order)
        rows = []
        started = time.perf_counter()
        for index, slowdown in enumerate(order, start=1):
            rows.append(repetition(slowdown, root, cache))
            last = rows[-1]
            print(
                f"[{index}/{len(order)}] +{slowdown:.1%}: {last['kind']} {last['design']} "
                f"ratio {last['ratio'] or 0:.3f} pairs {last['pairs']} item {last['item_s']:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    text = (
        f"From `benchmarks/gate.py --repetitions {args.repetitions}` ({ITEM}, real `pytest "
        f"--mlscope` sessions at default settings, T = 5 %, a fresh project and database per "
        f"repetition, {(time.perf_counter() - started) / 60:.0f} minutes; {machine()}):\n\n"
        + table(rows)
    )
    print(text)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if args.readme:
        write_readme(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

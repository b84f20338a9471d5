"""Does an unchanged suite pass its gate, again and again? The first thing a team tries.

A fresh project outside this repository (a copy of the bundled manifests and an ini file), a
fresh results database: session 1 saves a baseline (``--mlscope-save-baseline=main``), then the
same suite, unchanged, runs against it ``--reruns`` times (``--mlscope-baseline=main`` and
nothing else: default settings, the real ``pytest --mlscope``). Every rerun's verdicts are read
from the database the sessions wrote; any ``regression`` is a false alarm.

Run from the repository root (about a minute per rerun of ``-k "digits and bs8"`` on 2 cores)::

    .venv/bin/python benchmarks/unchanged_reruns.py                        # 20 reruns
    .venv/bin/python benchmarks/unchanged_reruns.py --reruns 20 --readme   # rewrite its docs table
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _tables import write_table

REPO = Path(__file__).resolve().parent.parent


def session(project: Path, select: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "pytest", "--mlscope", "-p", "no:cacheprovider", "-q",
        "-k", select, "--mlscope-html=none", *args,
    ]  # fmt: skip
    return subprocess.run(command, cwd=project, capture_output=True, text=True)


def main(argv: list[str] | None = None) -> int:
    from pytest_mlscope.store import Store

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reruns", type=int, default=20)
    parser.add_argument("-k", dest="select", default="digits and bs8")
    parser.add_argument("--readme", action="store_true", help="rewrite docs/benchmarks.md's table")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mlscope-reruns-") as scratch:
        project = Path(scratch)
        shutil.copytree(REPO / "manifests", project / "manifests")
        (project / "pytest.ini").write_text("[pytest]\nmlscope_manifests = manifests\n")
        saved = session(project, args.select, "--mlscope-save-baseline=main")
        if saved.returncode != 0:
            raise SystemExit(f"saving the baseline failed:\n{saved.stdout[-3000:]}")
        outcomes = []
        for index in range(1, args.reruns + 1):
            done = session(project, args.select, "--mlscope-baseline=main")
            outcomes.append(done.returncode)
            last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
            print(f"[{index}/{args.reruns}] rc={done.returncode} {last}", file=sys.stderr)
        kinds: Counter[str] = Counter()
        designs: Counter[str] = Counter()
        alarms = []
        with Store.from_location(project / ".mlscope" / "results.db", create=False) as store:
            runs = store.runs(limit=args.reruns + 1)[:-1]  # newest first; the last saved
            items = 0
            for run in runs:
                for item, record in store.latest_results(run.id).items():
                    if record.outcome == "skipped":
                        continue
                    items += 1
                    verdict = record.verdict or {}
                    kinds[str(verdict.get("kind"))] += 1
                    designs[str(verdict.get("design"))] += 1
                    if verdict.get("kind") == "regression":
                        alarms.append(f"{item}: {verdict.get('reason')}")
    sys.path.insert(0, str(REPO / "benchmarks"))
    from verdicts import machine

    failed = sum(rc != 0 for rc in outcomes)
    text = (
        f'From `benchmarks/unchanged_reruns.py --reruns {args.reruns} -k "{args.select}"` (the '
        f"bundled manifests in a fresh project, a fresh database, one baseline, real `pytest "
        f"--mlscope` sessions at default settings; {(time.perf_counter() - started) / 60:.0f} "
        f"minutes; {machine()}):\n\n"
        "| reruns | sessions failed | items judged | regression | ok | inconclusive | other "
        "| designs |\n|---:|---:|---:|---:|---:|---:|---:|---|\n"
        f"| {args.reruns} | {failed} | {items} | {kinds['regression']} | {kinds['ok']} "
        f"| {kinds['inconclusive']} | "
        f"{items - kinds['regression'] - kinds['ok'] - kinds['inconclusive']} | "
        + ", ".join(f"{name} {count}" for name, count in designs.most_common())
        + " |"
    )
    if alarms:
        text += "\n\nFalse alarms:\n\n" + "\n".join(f"- {alarm}" for alarm in alarms)
    print(text)
    if args.readme:
        write_table("unchanged-reruns-table", text)
    return 1 if alarms else 0


if __name__ == "__main__":
    sys.exit(main())

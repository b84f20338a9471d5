"""How far fresh worker processes of one ONNX Runtime scatter, with and without a fresh model
instance every round: the figures behind passes.ACROSS_RENEW_SHARE.

A user's conv net (benchmarks/verdicts.py's, exported with onnx.helper) on the plugin's own
predictor, through benchmarks/verdicts.py's ROUND_TIMER: one reference process stays up; each of
``--processes`` fresh processes is timed against it in 30 pairs of 20 ms rounds, in random order
within each pair, and its level is the median log ratio of its pairs. "kept": every process
times the instance it loaded first; "renewed": a fresh instance every round, the old one closed
first, as the gate's workers across two stacks take them. Both processes of a variant run the
same variant. Writes its table to docs/benchmarks.md (``--readme``) between
``<!-- instances-table -->`` markers.

    .venv/bin/python benchmarks/instances.py --processes 16 --readme
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _tables import write_table
from verdicts import BASE_CONVS, REPO, ROUND_TIMER, export_model, machine

PAIRS = 30


def levels(model: Path, variant: str, processes: int, seed: int) -> list[float]:
    """Each fresh process's level against the reference, as a ratio - 1."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])
    ))  # fmt: skip

    def start() -> subprocess.Popen[str]:
        worker = subprocess.Popen(
            [sys.executable, "-c", ROUND_TIMER, str(model), "0", variant],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        assert worker.stdout is not None
        worker.stdout.readline()  # warm for a second: "ready"
        return worker

    def round_of(worker: subprocess.Popen[str]) -> float:
        assert worker.stdin is not None and worker.stdout is not None
        worker.stdin.write("round\n")
        worker.stdin.flush()
        return float(worker.stdout.readline())

    rng = random.Random(seed)
    reference = start()
    found = []
    try:
        for _ in range(processes):
            fresh = start()
            logs = []
            for _ in range(PAIRS):
                got = {}
                for name in rng.sample(["fresh", "reference"], 2):
                    got[name] = round_of(fresh if name == "fresh" else reference)
                logs.append(np.log(got["fresh"] / got["reference"]))
            assert fresh.stdin is not None
            fresh.stdin.close()
            fresh.wait()
            found.append(float(np.expm1(np.median(logs))))
    finally:
        assert reference.stdin is not None
        reference.stdin.close()
        reference.wait()
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--readme", action="store_true", help="rewrite docs/benchmarks.md's table")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mlscope-instances-") as work:
        model = Path(work) / "model.onnx"
        export_model(model, BASE_CONVS)
        rows = []
        for variant in ("kept", "renewed"):
            got = np.array(levels(model, "keep" if variant == "kept" else "renew",
                                  args.processes, args.seed))  # fmt: skip
            robust = 1.4826 * float(np.median(np.abs(got - np.median(got))))
            rows.append(
                f"| {variant} | {got.std(ddof=1):.1%} | {robust:.1%} | "
                f"{float(np.abs(got).max()):.1%} | {int((np.abs(got) > 0.05).sum())}/{got.size} |"
            )
    text = (
        f"From `benchmarks/instances.py --processes {args.processes}` ({PAIRS} pairs of 20 ms "
        f"rounds per process against one reference process, the plugin's ONNX Runtime predictor "
        f"on a user's conv net; {(time.perf_counter() - started) / 60:.0f} minutes; "
        f"{machine()}):\n\n"
        "| instance | sd of the processes' levels | robust sd | farthest | beyond ±5 % |\n"
        "|---|---:|---:|---:|---:|\n" + "\n".join(rows)
    )
    print(text)
    if args.readme:
        write_table("instances-table", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""MLModelScope's case study on this machine: one model's layers, each framework's time and kernel.

MLModelScope's headline finding was that frameworks choose different kernels for the same
convolution layer, at very different costs. This runs the shipped commands and nothing else:

    pytest --mlscope -k "alexnet and cpu and bs1 and single_stream" --mlscope-trace=library
    mlscope trace compare RUN 'alexnet[*-cpu-bs1-single_stream]'

on the bundled AlexNet (the same weights in every framework, layers named alike), at default
settings apart from the trace level, into a fresh database. Every CPU framework this machine can
run takes part (torch, ONNX Runtime and TensorFlow on the host; MXNet in its venv stack, Caffe in
its container image when the Docker daemon has it); the session says why any other one skipped.

Run from the repository root::

    .venv/bin/python benchmarks/layers_across.py            # a few minutes on 2 cores
    .venv/bin/python benchmarks/layers_across.py --readme   # rewrite its docs table
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from _tables import write_table

REPO = Path(__file__).resolve().parent.parent
SELECT = "alexnet and cpu and bs1 and single_stream"
PATTERN = "alexnet[*-cpu-bs1-single_stream]"


def run(*command: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True)


def machine() -> str:
    from pytest_mlscope.hardware import current_host

    commit = run("git", "rev-parse", "--short", "HEAD").stdout.strip()
    changed = run("git", "status", "--porcelain", "-uno").stdout.strip()
    dirty = " (with uncommitted changes)" if changed else ""
    return (
        f"commit {commit}{dirty}, {current_host().cpu_model}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", action="store_true", help="rewrite docs/benchmarks.md's table")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mlscope-layers-") as work:
        db = Path(work) / "results.db"
        session = run(
            sys.executable, "-m", "pytest", "--mlscope", "-p", "no:cacheprovider", "-rs",
            "-k", SELECT, "--mlscope-trace=library", f"--mlscope-db={db}",
            "--mlscope-html=none",
        )  # fmt: skip
        if session.returncode not in (0, 1):
            sys.stderr.write(session.stdout[-4000:] + session.stderr[-4000:])
            return 2
        run_id = re.search(r"run ([0-9a-f]{32}) stored", session.stdout)
        if run_id is None:
            sys.stderr.write(session.stdout[-4000:])
            return 2
        compared = run(
            sys.executable, "-m", "pytest_mlscope.cli", "trace", "compare", run_id.group(1),
            PATTERN, f"--db={db}",
        )  # fmt: skip
        if compared.returncode != 0:
            sys.stderr.write(compared.stdout + compared.stderr)
            return 2
    lines = session.stdout.splitlines()
    skipped = [line.split("] ", 1)[-1] for line in lines if line.startswith("SKIPPED")]
    text = (
        f'From `benchmarks/layers_across.py` ({machine()}): `pytest --mlscope -k "{SELECT}" '
        f"--mlscope-trace=library`, then `mlscope trace compare RUN '{PATTERN}'`:\n\n"
        "```text\n" + compared.stdout.rstrip() + "\n```\n"
    )
    if skipped:
        text += (
            "\nNot in the table (the session's skip reasons):\n\n"
            + "\n".join(f"- {reason}" for reason in skipped)
            + "\n"
        )
    print(text)
    if args.readme:
        write_table("layers-across-table", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a container costs: worker start-up, and whether timings in a container match the host's.

1. **Start-up**: from asking for a worker to its ready line, for a subprocess worker and for a
   docker-runtime container (create, attach, start, Python and the worker's imports), alternating,
   ``--starts`` times each. Each container is removed before the next starts.
2. **Timing comparability**: the same item (model × onnxruntime × bs1) evaluated alternately in a
   subprocess worker on the host and in the stack's container (ABAB…, so drift hits both), each
   evaluation a fresh model load with a short timing pass. Reported: the median latency of each
   side and the Hodges–Lehmann estimate of the per-pair ratio container/host with its 95 %
   (Wilcoxon) interval. Both run the same numpy and onnxruntime versions (the image pins the
   host's), so a ratio away from 1 is what the container itself costs (or gives).

Needs a Docker daemon and the image (``mlscope containers build onnxruntime``). Run from the
repository root, on a quiet machine::

    .venv/bin/python benchmarks/containers.py                  # about 6 minutes on 2 cores
    .venv/bin/python benchmarks/containers.py --pairs 4 --starts 5
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO / ".mlscope" / "artifacts"
SETTINGS = {  # timing pass per evaluation
    "digits_cnn": {"min_duration_s": 1.0, "min_count": 200, "rounds": 3},
    "alexnet": {"min_duration_s": 2.0, "min_count": 30, "rounds": 3},
}


def _startups(runtime: object, count: int) -> list[float]:
    """Seconds from start to the worker's ready line, one fresh worker each time."""
    found = []
    for _ in range(count):
        started = time.perf_counter()
        runtime._start()  # type: ignore[attr-defined]
        found.append(time.perf_counter() - started)
        runtime.close()  # type: ignore[attr-defined]
    return found


def main(argv: list[str] | None = None) -> int:
    from pytest_mlscope import containers
    from pytest_mlscope.hardware import current_host
    from pytest_mlscope.protocol import Cell
    from pytest_mlscope.runtimes.docker import DockerRuntime
    from pytest_mlscope.runtimes.subprocess import SubprocessRuntime
    from pytest_mlscope.session import MlscopeSession, Settings
    from pytest_mlscope.stats import paired_shift_interval

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=10, help="worker starts per runtime")
    parser.add_argument("--pairs", type=int, default=8, help="host/container pairs per item")
    parser.add_argument("--models", nargs="+", default=["digits_cnn", "alexnet"])
    parser.add_argument("--image", default=containers.default_image("onnxruntime"))
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("MLSCOPE_CACHE") or DEFAULT_CACHE),
        help="artifact cache (default: $MLSCOPE_CACHE, else .mlscope/artifacts)",
    )
    args = parser.parse_args(argv)

    docker = containers.client()
    image = docker.images.get(args.image)
    host = current_host()
    print(f"# {host.cpu_model}, {host.logical_cores} logical cores, Python {host.python}")
    print(
        f"# image {args.image} ({image.short_id}), onnxruntime "
        f"{image.labels.get('org.mlscope.framework-version')}; host onnxruntime "
        f"{host.packages.get('onnxruntime')}; load average {os.getloadavg()[0]:.2f}"
    )

    with tempfile.TemporaryDirectory(prefix="mlscope-bench-") as scratch:
        work = Path(scratch)
        os.chmod(work, 0o755)
        sub = SubprocessRuntime(work_dir=work / "sub")
        box = DockerRuntime(args.image, read_only=[REPO, args.cache], writable=[work / "box"])
        sub_starts, box_starts = [], []
        for _ in range(args.starts):  # alternating, one of each at a time
            sub_starts += _startups(sub, 1)
            box_starts += _startups(box, 1)
        print("\n## Worker start-up (s, to the ready line)\n")
        print("| runtime | median | min | max | starts |")
        print("|---|---:|---:|---:|---:|")
        for name, values in (("subprocess", sub_starts), ("docker", box_starts)):
            print(
                f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} | "
                f"{max(values):.2f} | {len(values)} |"
            )

        def session(runtime: str) -> MlscopeSession:
            return MlscopeSession(
                Settings(
                    rootdir=REPO,
                    manifest_paths=[REPO / "manifests"],
                    runtime=runtime,
                    cache_dir=args.cache,
                    db=f"sqlite:///{work / runtime}.db",
                )
            )

        on_host, in_box = session("subprocess"), session("docker")
        rows = []
        try:
            for model in args.models:
                manifest = on_host.manifest(model)
                in_box.manifest(model)
                cell = Cell(model=model, framework="onnxruntime")
                host_ms, box_ms = [], []
                for pair in range(args.pairs):
                    order = [(on_host, host_ms), (in_box, box_ms)]
                    for current, into in order if pair % 2 == 0 else order[::-1]:
                        result = current.evaluate(manifest, cell, **SETTINGS[model])
                        assert result.accuracy.passed, result.accuracy.failures
                        into.append(result.summary.median)  # type: ignore[union-attr]
                ratios = np.log(np.array(box_ms) / np.array(host_ms))
                shift = paired_shift_interval(ratios, 0.95)
                rows.append(
                    (
                        model,
                        statistics.median(host_ms) * 1e3,
                        statistics.median(box_ms) * 1e3,
                        math.exp(shift.estimate),
                        math.exp(shift.low),
                        math.exp(shift.high),
                    )
                )
        finally:
            on_host.close()
            in_box.close()
    print(f"\n## Latency in the container over the host (onnxruntime bs1, {args.pairs} pairs)\n")
    print("| model | host median ms | container median ms | container/host | 95 % interval |")
    print("|---|---:|---:|---:|---|")
    for model, host_ms, box_ms, ratio, low, high in rows:
        print(f"| {model} | {host_ms:.4g} | {box_ms:.4g} | {ratio:.3f} | {low:.3f} – {high:.3f} |")
    print(f"\n# load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

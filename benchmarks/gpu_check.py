"""The GPU check: AlexNet on TensorRT and torch-CUDA, kernels traced, NVML telemetry.

For a machine with an NVIDIA GPU — never CI, which has none. It runs the bundled AlexNet as a
real session would (``pytest --mlscope`` in a temporary project, subprocess workers, SQLite), on
torch (CPU as the agreement reference, and CUDA) and TensorRT, with trace level ``full``, then
prints from the stored run what a reviewer needs to believe the GPU paths:

- each item's outcome, median latency, and its agreement with the torch CPU reference;
- TensorRT: whether the engine was built now or came from the cache (run the script twice: the
  second run must say "cached"), and its top layers by time from ``IProfiler``;
- torch-CUDA: the CUDA kernels the profiler saw under the top layers;
- the NVML telemetry of each GPU item's timing window (utilization, memory, power, energy, SM
  clock, throttle reasons) and whether any throttle reason made the result suspect;
- where the Chrome/Perfetto trace files and the HTML report are;
- a team's serialized plan: the engine the session built, copied as ``alexnet.plan`` with its
  TensorRT release (``built_with``), run against AlexNet's golden outputs without a build.

Run from the repository root, with the GPU's CUDA build of torch and TensorRT installed::

    .venv/bin/pip install -e '.[tensorrt]'            # plus a CUDA build of torch
    .venv/bin/python benchmarks/gpu_check.py [--out DIR] [--quick]

Exit status: 0 when every GPU item passed, 1 when one failed, 2 when there is no GPU here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FRAMEWORKS = """framework:
  - name: torch
    version: ">=2.2"
    devices: [cpu, gpu]
  - name: onnxruntime
    version: ">=1.17"
  - name: tensorrt
    version: ">=10.0"
    devices: [gpu]
"""


def _project(root: Path) -> Path:
    """A copy of the bundled AlexNet manifest on torch (CPU and GPU), ONNX Runtime, TensorRT."""
    manifests = root / "manifests"
    manifests.mkdir(parents=True)
    shutil.copytree(REPO / "manifests" / "goldens", manifests / "goldens")
    text = (REPO / "manifests" / "alexnet.yaml").read_text()
    start, end = text.index("framework:\n"), text.index("model:\n")
    (manifests / "alexnet.yaml").write_text(text[:start] + FRAMEWORKS + text[end:])
    return manifests


def _plan_project(manifests: Path, engine: Path, version: str) -> Path:
    """A team's own TensorRT plan: the engine the session built, copied as ``alexnet.plan``,
    named with the release that built it, and held to AlexNet's golden outputs."""
    shutil.copy(engine, manifests / "alexnet.plan")
    text = (REPO / "manifests" / "alexnet.yaml").read_text()
    start, end = text.index("framework:\n"), text.index("inputs:\n")
    plan = (
        "framework:\n  - name: tensorrt\n    devices: [gpu]\nmodel:\n  source:\n    path:\n"
        f'      tensorrt: {{path: alexnet.plan, built_with: "{version}"}}\n'
    )
    text = text[:start] + plan + text[end:]
    text = text.replace("name: alexnet\n", "name: alexnet_plan\n", 1)
    text = "\n".join(line for line in text.splitlines() if "agreement:" not in line) + "\n"
    path = manifests / "alexnet_plan.yaml"
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="copy the report, traces and a JSON summary here")
    parser.add_argument("--quick", action="store_true", help="short timing passes (a smoke run)")
    args = parser.parse_args(argv)

    from pytest_mlscope.hardware import current_host

    host = current_host()
    if not host.gpus:
        print(f"no NVIDIA GPU here ({host.gpu_note or 'NVML found none'}): nothing to check")
        return 2
    for gpu in host.gpus:
        print(f"GPU: {gpu.name}, compute capability {gpu.compute_capability}, "
              f"{gpu.memory_gb} GiB, driver {gpu.driver}")  # fmt: skip

    root = Path(tempfile.mkdtemp(prefix="mlscope-gpu-check-"))
    _project(root)
    db = root / "results.db"
    report = root / "report.html"
    base = [
        sys.executable, "-m", "pytest", "--mlscope", "-p", "no:cacheprovider", "-v", "-rs",
        "--mlscope-manifests=manifests", f"--mlscope-db={db}", "--mlscope-trace", "full",
    ]  # fmt: skip
    if args.quick:
        base += ["--mlscope-min-count", "20", "--mlscope-min-duration", "0.5"]
    command = [*base, f"--mlscope-html={report}", "-k", "gpu or (torch and cpu and bs1)"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])}
    print("$", " ".join(command), flush=True)
    completed = subprocess.run(command, cwd=root, env=env, text=True, capture_output=True)
    print(completed.stdout[-8000:], completed.stderr[-2000:], sep="\n")

    from pytest_mlscope.store import Store
    from pytest_mlscope.telemetry import suspicions
    from pytest_mlscope.tracing.layers import top_layers

    summary = []
    traces = []
    failed = False
    with Store.from_location(db, create=False) as store:
        (run,) = store.runs(limit=1)
        for result in store.results(run.id):
            is_gpu = result.cell.device == "gpu"
            failed |= is_gpu and result.outcome != "passed"
            accuracy = result.accuracy.checks if result.accuracy else []
            checks = {c.name: (c.passed, c.detail) for c in accuracy}
            details = result.predictor.details if result.predictor else {}
            print(f"\n== {result.item_id}: {result.outcome}")
            if result.summary:
                stats = result.summary
                print(f"   median {stats.median * 1e3:.3f} ms, p99 {stats.p99 * 1e3:.3f} ms, "
                      f"{stats.throughput:,.0f} items/s")  # fmt: skip
            for name, (passed, detail) in checks.items():
                print(f"   {name}: {'ok' if passed else 'FAILED'} ({detail})")
            if result.cell.framework == "tensorrt":
                built = details.get("engine_built_now")
                print(f"   engine: {'built now' if built else 'cached'} {details.get('engine')}")
            for row in top_layers(result.layers, 8):
                kernels = ", ".join(row.kernels[:3])
                print(f"   {row.layer:<40} {row.op_type:<12} {row.self_us:10.1f} µs  {kernels}")
            gpu_telemetry = {k: v for k, v in result.telemetry.items() if k.startswith("gpu")}
            if is_gpu:
                print(f"   NVML: {json.dumps(gpu_telemetry)}")
                seen = suspicions(result.telemetry)
                print(f"   suspect: {'; '.join(seen)}" if seen else "   suspect: no")
            if result.trace and result.trace.path:
                print(f"   trace: {result.trace.path}")
                traces.append(result.trace.path)
            summary.append({
                "item": result.item_id, "outcome": result.outcome, "message": result.message,
                "median_ms": result.summary.median * 1e3 if result.summary else None,
                "checks": {k: v[0] for k, v in checks.items()}, "details": details,
                "telemetry": result.telemetry,
                "layers": [row.model_dump() for row in top_layers(result.layers, 15)],
            })  # fmt: skip
    # A serialized plan as a team brings one: the engine above, loaded as it is (no build).
    engines = [
        Path(str(item["details"].get("engine"))) for item in summary
        if str(item["item"]).startswith("alexnet[tensorrt") and item["details"].get("engine")
    ]  # fmt: skip
    if engines and engines[0].is_file():
        import tensorrt

        _plan_project(root / "manifests", engines[0], tensorrt.__version__)
        plan_run = subprocess.run(
            [*base, f"--mlscope-html={root / 'plan.html'}", "-k", "alexnet_plan"],
            cwd=root, env=env, text=True, capture_output=True,
        )  # fmt: skip
        print("\n== a serialized plan (alexnet_plan):", plan_run.stdout[-3000:], sep="\n")
        failed |= plan_run.returncode != 0
    print(f"\nreport: {report}\nproject: {root}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_check.json").write_text(json.dumps(summary, indent=1, default=str))
        if report.exists():
            shutil.copy(report, args.out / "report.html")
        for trace in traces:
            if Path(trace).exists():
                shutil.copy(trace, args.out / Path(trace).name)
    return 1 if failed or completed.returncode not in (0, 1) else 0


if __name__ == "__main__":
    sys.exit(main())

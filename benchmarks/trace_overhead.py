"""Does tracing move the timing figures, and do the layer tables add up?

For each model and framework, one worker process evaluates the item alternately with trace level
``none`` and ``full`` (ABAB…, so drift hits both), and reports:

- the timing pass's median latency with ``full`` over ``none``: the Hodges–Lehmann estimate of
  the per-pair ratios with its 95 % (Wilcoxon) interval. The profiling pass runs after the
  timing pass, so this should be 1 within noise (target: within 2 %). Each evaluation loads the
  model afresh, and where its weights land moves a small model by a few per cent: that, not
  tracing, is most of the pair-to-pair spread, so it takes many pairs to narrow the interval;
- the profiling pass's extra wall time;
- the sum of the layer table's self times over the timing pass's median latency (target: within
  15 %), and how many conv/linear layers the table names.

A second table takes model loading out of the picture: one loaded model per item, in this process,
timed in rounds that follow either a full profiling pass (profilers, telemetry thread, trace
events) or nothing, alternating. It answers whether a profiling pass leaves anything behind that
moves the next timing pass (a worker runs one item's profiling pass right before the next item's
timing), with the load-to-load noise gone.

Run from the repository root, on a quiet machine::

    .venv/bin/python benchmarks/trace_overhead.py            # about 12 minutes on 2 cores
    .venv/bin/python benchmarks/trace_overhead.py --pairs 5 --model alexnet
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
SETTINGS = {  # timing pass per evaluation: enough samples for a stable median
    "digits_cnn": {"min_duration_s": 0.8, "min_count": 200, "rounds": 5},
    "alexnet": {"min_duration_s": 1.5, "min_count": 30, "rounds": 5},
}


def main(argv: list[str] | None = None) -> int:
    from pytest_mlscope.manifest import load_manifest
    from pytest_mlscope.predictors import predictor_class
    from pytest_mlscope.protocol import Cell, EvaluationRequest, MeasureOptions
    from pytest_mlscope.runtimes.subprocess import SubprocessRuntime
    from pytest_mlscope.stats import paired_shift_interval
    from pytest_mlscope.tracing.layers import OTHER
    from pytest_mlscope.zoo.cache import ArtifactCache

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=16, help="none/full pairs per item")
    parser.add_argument(
        "--same-pairs",
        type=int,
        default=40,
        help="pairs per item, one loaded model (default 40; 0 skips that table)",
    )
    parser.add_argument("--model", choices=sorted(SETTINGS), action="append")
    parser.add_argument("--framework", choices=("torch", "onnxruntime"), action="append")
    parser.add_argument(
        "--cache", type=Path, default=Path(os.environ.get("MLSCOPE_CACHE") or DEFAULT_CACHE)
    )
    args = parser.parse_args(argv)
    models = args.model or sorted(SETTINGS, reverse=True)
    frameworks = args.framework or ["torch", "onnxruntime"]
    started = time.perf_counter()
    print(f"load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    print(
        "| item | median, none | full / none (timing pass), 95 % interval | profiling pass | "
        "layers sum / median | conv+linear named |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="mlscope-trace-overhead-") as work:
        for model in models:
            manifest = load_manifest(REPO / "manifests" / f"{model}.yaml")
            for framework in frameworks:
                artifact = ArtifactCache(args.cache).for_framework(
                    manifest, framework, predictor_class(framework).formats
                )
                cell = Cell(model=model, framework=framework, device="cpu", batch_size=1)
                settings = SETTINGS[model]
                measure = MeasureOptions(
                    warmup=manifest.performance.warmup,
                    min_count=settings["min_count"],
                    min_duration_s=settings["min_duration_s"],
                    max_duration_s=30,
                    rounds=settings["rounds"],
                )
                runtime = SubprocessRuntime(Path(work) / "workers")
                ratios, profiling, sums, none_medians = [], [], [], []
                named = ""
                try:
                    for pair in range(args.pairs):
                        medians = {}
                        # Alternate which goes first, so a trend does not favour one level.
                        for level in ("none", "full") if pair % 2 == 0 else ("full", "none"):
                            result = runtime.evaluate(
                                EvaluationRequest(
                                    cell=cell,
                                    manifest_path=str(manifest.path),
                                    artifact=artifact,
                                    measure=measure,
                                    work_dir=work,
                                    checks=[],
                                    trace_level=level,
                                ),
                                timeout=600,
                            )
                            medians[level] = result.summary.median
                            if level == "full":
                                profiling.append(result.trace.wall_s)
                                total = sum(r.self_us for r in result.layers)
                                sums.append(total / (result.summary.median * 1e6))
                                kinds = [
                                    r.op_type
                                    for r in result.layers
                                    if r.layer != OTHER
                                    and r.op_type
                                    in (
                                        "Conv2d",
                                        "Linear",
                                        "Conv",
                                        "FusedConv",
                                        "Gemm",
                                        "FusedGemm",
                                    )
                                ]
                                named = str(len(kinds))
                        none_medians.append(medians["none"])
                        ratios.append(medians["full"] / medians["none"])
                finally:
                    runtime.close()
                median_none = statistics.median(none_medians)
                # Hodges–Lehmann ratio with its Wilcoxon interval, on the per-pair log ratios.
                shift = paired_shift_interval(np.log(np.asarray(ratios)))
                low, estimate, high = (math.exp(x) for x in (shift.low, shift.estimate, shift.high))
                unit, scale = ("ms", 1e3) if median_none > 1e-3 else ("µs", 1e6)
                print(
                    f"| {cell.id} | {median_none * scale:.3g} {unit} | "
                    f"{estimate:.3f} [{low:.3f}, {high:.3f}] | "
                    f"+{statistics.median(profiling):.2f} s | "
                    f"{statistics.median(sums):.3f} ({min(sums):.3f}–{max(sums):.3f}) | {named} |",
                    flush=True,
                )
    print()
    print(f"{args.pairs} pairs per item, end to end.")
    if args.same_pairs > 0:  # 0 skips the second table
        print()
        same_model(models, frameworks, args.cache, args.same_pairs)
    print()
    print(
        f"wall time {time.perf_counter() - started:.0f} s; load "
        f"average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    return 0


def same_model(models: list[str], frameworks: list[str], cache: Path, pairs: int) -> None:
    """Timing rounds after a profiling pass vs after none, on one loaded model per item."""
    from pytest_mlscope.data import prepare
    from pytest_mlscope.manifest import load_manifest
    from pytest_mlscope.measure import time_calls
    from pytest_mlscope.predictors import predictor_class
    from pytest_mlscope.protocol import MeasureOptions
    from pytest_mlscope.stats import paired_shift_interval
    from pytest_mlscope.tracing.timeline import Telemetry, Timeline
    from pytest_mlscope.zoo.cache import ArtifactCache

    print(
        "| item (one loaded model) | timing after a profiling pass / after none, 95 % interval "
        "| profiling pass |"
    )
    print("|---|---:|---:|")
    for model in models:
        manifest = load_manifest(REPO / "manifests" / f"{model}.yaml")
        batch = prepare(manifest).batches(1)[0]
        settings = SETTINGS[model]
        options = MeasureOptions(
            warmup=manifest.performance.warmup,
            min_count=max(settings["min_count"] // 4, 5),
            min_duration_s=settings["min_duration_s"] / 4,
            max_duration_s=30,
        )
        for framework in frameworks:
            cls = predictor_class(framework)
            predictor = cls()
            predictor.load(ArtifactCache(cache).for_framework(manifest, framework, cls.formats))
            prepared = predictor.prepare_input(batch)
            ratios, passes = [], []
            with tempfile.TemporaryDirectory(prefix="mlscope-trace-same-") as work:
                try:
                    for pair in range(pairs):
                        medians = {}
                        for traced in (False, True) if pair % 2 == 0 else (True, False):
                            if traced:
                                before = time.perf_counter()
                                timeline = Timeline("same model")
                                with Telemetry() as telemetry:
                                    predictor.profile(prepared, 20, "full", timeline, Path(work))
                                telemetry.into(timeline)
                                timeline.write(Path(work) / "trace.json")
                                passes.append(time.perf_counter() - before)
                            timing = time_calls(predictor.predict, [prepared], options)
                            medians[traced] = statistics.median(timing.samples_ns)
                        ratios.append(medians[True] / medians[False])
                finally:
                    predictor.close()
            shift = paired_shift_interval(np.log(np.asarray(ratios)))
            low, estimate, high = (math.exp(x) for x in (shift.low, shift.estimate, shift.high))
            print(
                f"| {model}[{framework}-cpu-bs1] | {estimate:.3f} [{low:.3f}, {high:.3f}] | "
                f"{statistics.median(passes):.2f} s |",
                flush=True,
            )
    print()
    print(f"{pairs} pairs per item, one model load each.")


if __name__ == "__main__":
    sys.exit(main())

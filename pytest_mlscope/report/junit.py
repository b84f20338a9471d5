"""JUnit XML properties: an item's headline numbers where CI dashboards already look.

Attached as ``record_property`` pairs, so any JUnit consumer shows them without knowing the plugin.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_mlscope.compare import Verdict
    from pytest_mlscope.protocol import EvaluationResult


def properties(result: EvaluationResult, verdict: Verdict | None = None) -> dict[str, object]:
    """JUnit properties: the headline numbers of an item, in milliseconds and items/s."""
    props: dict[str, object] = {
        "mlscope_framework_version": result.predictor.version,
        "mlscope_accuracy": result.accuracy.headline(),
        "mlscope_cold_start_ms": round(
            (result.cold_start.load_s + result.cold_start.first_inference_s) * 1e3, 3
        ),
    }
    if result.summary:
        props.update(
            mlscope_median_ms=round(result.summary.median * 1e3, 4),
            mlscope_p99_ms=round(result.summary.p99 * 1e3, 4),
            mlscope_throughput=round(result.summary.throughput, 2),
            mlscope_samples=result.summary.count,
        )
    if result.generation is not None:
        figures = result.generation
        props.update(
            mlscope_ttft_ms=round(figures.ttft_ms, 4),
            mlscope_itl_p50_ms=round(figures.itl_p50_ms, 4),
            mlscope_itl_p90_ms=round(figures.itl_p90_ms, 4),
            mlscope_itl_p99_ms=round(figures.itl_p99_ms, 4),
            mlscope_tokens_per_s=round(figures.tokens_per_s, 2),
            mlscope_new_tokens=figures.new_tokens,
            mlscope_prompt_tokens=figures.prompt_tokens,
        )
    seen = result.telemetry
    if "energy_per_inference_j" in seen:
        props["mlscope_energy_per_inference_j"] = seen["energy_per_inference_j"]
        if "energy_per_token_j" in seen:
            props["mlscope_energy_per_token_j"] = seen["energy_per_token_j"]
    elif seen.get("energy"):
        props["mlscope_energy"] = seen["energy"]
    if result.memory is not None:
        props["mlscope_memory_mib"] = round(result.memory.model / 2**20, 2)
    if result.instructions:
        props["mlscope_instructions"] = round(statistics.median(result.instructions))
    if result.trace is not None:
        props["mlscope_trace_level"] = result.trace.level
        if result.trace.path:
            props["mlscope_trace"] = result.trace.path
    if verdict is not None:
        props["mlscope_verdict"] = verdict.kind
        if verdict.design:
            props["mlscope_design"] = verdict.design
        for name in (
            "ratio",
            "ratio_low",
            "ratio_high",
            "threshold",
            "noise",
            "p_value",
            "between_run_noise",
            "pairs",
        ):
            value = getattr(verdict, name)
            if value is not None:
                props[f"mlscope_{name}"] = round(value, 6)
        if verdict.baseline_median is not None:
            props["mlscope_baseline_median_ms"] = round(verdict.baseline_median * 1e3, 4)
        if verdict.baseline_memory is not None:
            props["mlscope_baseline_memory_mib"] = round(verdict.baseline_memory / 2**20, 2)
        if verdict.baseline_instructions is not None:
            props["mlscope_baseline_instructions"] = round(verdict.baseline_instructions)
        if verdict.baseline_run:
            props["mlscope_baseline_run"] = verdict.baseline_run
        if verdict.latency:
            props["mlscope_latency_verdict"] = verdict.latency
        if verdict.scaling:  # on the item that completed a sweep over sequence lengths
            scaling = verdict.scaling
            props["mlscope_scaling"] = scaling["kind"]
            props["mlscope_scaling_exponent"] = round(scaling["current_exponent"], 4)
            props["mlscope_baseline_scaling_exponent"] = round(scaling["baseline_exponent"], 4)
            props["mlscope_scaling_change"] = round(scaling["change"], 4)
            if scaling.get("memory"):
                props["mlscope_memory_scaling"] = scaling["memory"]["kind"]
                props["mlscope_memory_scaling_change"] = round(scaling["memory"]["change"], 4)
        for phase, judged in (verdict.generation or {}).items():  # a generate item's phases
            props[f"mlscope_{phase}_verdict"] = judged["kind"]
            props[f"mlscope_{phase}_ratio"] = round(judged["ratio"], 6)
    return props

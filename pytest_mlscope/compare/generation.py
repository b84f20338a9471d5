"""A generate item's own figures judged beside its whole generation: time to first token and
time per output token, each on the interleaved pairs of rounds, by the paired rule latency uses.

The item's latency is one whole generation, so a change to one phase is diluted by the other: a
prefill twice as slow adds a few percent to sixteen new tokens, and a decode step 20 % slower
hides behind a long prompt. Each generation's TTFT and its decode time per token are known (the
stamps the predictor took, :mod:`pytest_mlscope.generation`), and the A side's generations are
recorded as B's are, so round i of each phase pairs as the latency's round i does. A phase
that regresses fails the item even when the whole generation stays within the threshold.

Only the interleaved design has both sides' generations (in one worker, or joined by the host
from two stacks' workers, whose own speeds widen the interval as they do the latency's); stored
results without them are left to the whole generation's verdict, and the reason says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from pytest_mlscope.compare.rules import paired_verdict
from pytest_mlscope.compare.verdicts import Side, Verdict
from pytest_mlscope.stats import round_medians

PHASES = {
    "ttft": "time to first token",
    "tpot": "time per output token",
}


def phase_rounds(values: Sequence[float], rounds: Sequence[int]) -> np.ndarray | None:
    """Each round's median of a per-generation figure, when the figures are one per timed call
    of those rounds; None when they cannot be matched (a generation cut short, a damaged row)."""
    if len(rounds) < 2 or sum(rounds) != len(values) or min(values, default=0) <= 0:
        return None
    return round_medians([int(v) for v in values], rounds)


def per_phase(generation: Any, paired: bool) -> dict[str, Sequence[float]]:
    """The per-generation figures of each phase (ns): B's, or the A side's beside them."""
    ttft = generation.paired_ttft_ns if paired else generation.ttft_ns
    decode = generation.paired_decode_ns if paired else generation.decode_ns
    steps = max(1, generation.new_tokens - 1)
    return {"ttft": list(ttft), "tpot": [d / steps for d in decode]}


def generation_verdicts(
    current: Side, *, threshold: float, comparisons: int, alpha: float
) -> dict[str, Verdict] | None:
    """Each phase's paired verdict (key: PHASES), or None when the item has no pairs of
    generations to judge."""
    from pytest_mlscope.measure import LOOKS

    generation = current.generation
    if generation is None or not generation.paired_ttft_ns:
        return None
    if len(current.rounds) != len(current.paired_rounds):
        return None
    b_side, a_side = per_phase(generation, False), per_phase(generation, True)
    found = {}
    for phase in PHASES:
        b = phase_rounds(b_side[phase], current.rounds)
        a = phase_rounds(a_side[phase], current.paired_rounds)
        if a is None or b is None:
            return None
        found[phase] = paired_verdict(
            a,
            b,
            threshold=threshold,
            comparisons=comparisons,
            alpha=alpha,
            looks=LOOKS,
            workers=current.paired_workers,  # across stacks: each process's own speed
        )
    return found


def with_generation(
    found: Verdict, current: Side, *, threshold: float, comparisons: int, alpha: float
) -> Verdict:
    """``found`` (the whole generation's verdict) with each phase's beside it; a phase's
    regression makes the item's unless ``found`` is already one or is not a judgement of
    latency (new, incomparable)."""
    if current.generation is None or found.kind in ("new", "incomparable"):
        return found
    phases = generation_verdicts(current, threshold=threshold, comparisons=comparisons, alpha=alpha)
    if phases is None:
        note = "time to first token and per output token not judged apart: no pairs of rounds"
        return replace(found, reason=f"{found.reason}; {note}")
    summary = {
        phase: {
            "kind": verdict.kind,
            "ratio": verdict.ratio,
            "ratio_low": verdict.ratio_low,
            "ratio_high": verdict.ratio_high,
            "change": verdict.ratio_text,
        }
        for phase, verdict in phases.items()
    }
    told = "; ".join(f"{PHASES[p]} {v.kind} {v.ratio_text}" for p, v in phases.items())
    found = replace(found, generation=summary)
    worst = next((p for p, v in phases.items() if v.kind == "regression"), None)
    if worst is None or found.kind == "regression":
        return replace(found, reason=f"{found.reason}; {told}")
    return replace(
        found,
        kind="regression",
        reason=f"{PHASES[worst]} regressed: {phases[worst].reason}; {told} "
        f"(whole generation: {found.describe()})",
        decided_by=worst,
    )

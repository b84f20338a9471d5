"""The scaling rule: how an item's cost grows with the sequence length, against the baseline's.

A sweep over lengths L is fitted as cost ∝ L^k. What the gate judges is the change of k: the
slope, over log L, of the per-length log ratio of the current model's time to the baseline's.
A refactor that turns attention quadratic may leave every single length within its threshold
(the extra term is small at the lengths measured) and still change k, which is what it will cost
at the lengths users send.

Each length's log ratio comes from interleaved rounds (the baseline's model and the current one
timed in turn in one worker), so the machine's drift cancels within a length, and a uniform
change (everything 3 % slower, the machine or the model) cancels across lengths: it moves the
intercept, not the slope. The slope is the least-squares line through the lengths' Hodges–Lehmann
shifts, every length counting alike (over three lengths evenly spaced in log L, the slope from
the shortest to the longest), its interval propagated from each length's own (Wilcoxon) interval.
The decision mirrors the item rule: ``regression`` when the interval lies wholly above +T/2,
``ok`` when it ends below +T, ``inconclusive`` otherwise, T in exponent units.

Memory is fitted the same way, memory ∝ L^k over the sweep, on one figure per side and length
(the model's peak, ``protocol.MemoryUse.model``; the baseline's stored result at each length),
without an interval, as the memory rule judges it: a change of exponent above T is a regression
when the longest length also grew by more than ``compare.memory.MEMORY_FLOOR`` (allocator
granularity moves a small model's exponent without any growth worth the name).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_mlscope.compare.verdicts import VerdictKind

if TYPE_CHECKING:
    from pytest_mlscope.compare.verdicts import Verdict

# The default T: a sweep whose exponent grew by 0.05 must fail (over 16x the length, +15 %);
# one that grew by less than 0.025 must not.
SCALING_THRESHOLD = 0.05
SCALING_ALPHA = 0.05  # two-sided: a 95 % interval for the change of exponent
MIN_SE = 1e-4  # a length's log-ratio standard error is never taken as below 0.01 %


@dataclass(frozen=True)
class LengthPairs:
    """One length of a sweep: the round medians (seconds) of the baseline's model (A) and of the
    current one (B), timed in turn."""

    length: int
    baseline_rounds: Sequence[float]
    current_rounds: Sequence[float]


@dataclass(frozen=True)
class Scaling:
    kind: VerdictKind  # regression, improvement, ok or inconclusive
    lengths: list[int]
    baseline_medians: list[float]  # seconds, per length
    current_medians: list[float]
    baseline_exponent: float
    current_exponent: float
    change: float  # the fitted change of exponent
    low: float
    high: float
    threshold: float
    # How far the lengths' ratios stray from a straight line in log L (informational; a
    # change that grows with L² bends it); None with two lengths.
    reduced_chi2: float | None = None
    # How memory grows over the same lengths (MemoryScaling as a dict), when both sides
    # measured it at two lengths or more.
    memory: dict[str, Any] | None = None

    def describe(self) -> str:
        span = f"seq{self.lengths[0]}-seq{self.lengths[-1]}"
        text = (
            f"scaling over {span}: time grows as L^{self.baseline_exponent:.2f} (baseline) -> "
            f"L^{self.current_exponent:.2f}, exponent {self.change:+.2f} "
            f"[{self.low:+.2f}, {self.high:+.2f}] (threshold {self.threshold:g})"
        )
        if self.kind == "regression":
            text += f"; each 4x of length now costs x{4**self.change:.2f} more than it did"
        return text

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MemoryScaling:
    kind: VerdictKind  # regression, improvement or ok
    lengths: list[int]
    baseline_bytes: list[int]
    current_bytes: list[int]
    baseline_exponent: float
    current_exponent: float
    change: float
    threshold: float

    def describe(self) -> str:
        from pytest_mlscope.compare.memory import mib

        text = (
            f"memory grows as L^{self.baseline_exponent:.2f} (baseline) -> "
            f"L^{self.current_exponent:.2f}, exponent {self.change:+.2f} (threshold "
            f"{self.threshold:g}); at seq{self.lengths[-1]} {mib(self.baseline_bytes[-1])} -> "
            f"{mib(self.current_bytes[-1])}"
        )
        return text


def memory_scaling(
    baseline: Mapping[int, int | None], current: Mapping[int, int | None], threshold: float
) -> MemoryScaling | None:
    """How memory's exponent of L moved (one figure per side and length: no interval); None
    unless both sides measured it at two lengths or more."""
    from pytest_mlscope.compare.memory import MEMORY_FLOOR

    lengths = sorted(
        length
        for length in current
        if (baseline.get(length) or 0) > 0 and (current.get(length) or 0) > 0
    )
    if len(lengths) < 2:
        return None
    a = [int(baseline[length] or 0) for length in lengths]
    b = [int(current[length] or 0) for length in lengths]
    before, after = exponent(lengths, a), exponent(lengths, b)
    change = after - before
    grew = b[-1] - a[-1]
    kind: VerdictKind = "ok"
    if change > threshold and grew > MEMORY_FLOOR:
        kind = "regression"
    elif change < -threshold and -grew > MEMORY_FLOOR:
        kind = "improvement"
    return MemoryScaling(kind, lengths, a, b, before, after, change, threshold)


def exponent(lengths: Sequence[int], medians: Sequence[float]) -> float:
    """The least-squares slope of log time over log length: cost ∝ L^exponent."""
    x, y = np.log(np.asarray(lengths, float)), np.log(np.asarray(medians, float))
    return float(np.polyfit(x, y, 1)[0]) if len(x) >= 2 else math.nan


def _shift(differences: np.ndarray) -> tuple[float, float]:
    """A length's log ratio (Hodges–Lehmann) and its standard error, read off its distribution-
    free 95 % interval (Wilcoxon signed-rank), which stays honest with ten pairs."""
    from pytest_mlscope.stats import paired_shift_interval

    shift = paired_shift_interval(differences, 0.95)
    se = (shift.high - shift.low) / (2 * 1.959964)
    return shift.estimate, max(se, MIN_SE)


def scaling_verdict(
    points: Sequence[LengthPairs],
    *,
    threshold: float = SCALING_THRESHOLD,
    alpha: float = SCALING_ALPHA,
) -> Scaling | None:
    """How the exponent moved over a sweep; None with fewer than two lengths of pairs."""
    from scipy.stats import norm

    usable = sorted(
        (p for p in points if len(p.baseline_rounds) >= 2 and len(p.current_rounds) >= 2),
        key=lambda p: p.length,
    )
    if len({p.length for p in usable}) < 2:
        return None
    lengths = [p.length for p in usable]
    shifts, errors = [], []
    for point in usable:
        a = np.asarray(point.baseline_rounds, float)
        b = np.asarray(point.current_rounds, float)
        n = min(a.size, b.size)
        estimate, se = _shift(np.log(b[:n]) - np.log(a[:n]))
        shifts.append(estimate)
        errors.append(se)
    x = np.log(np.asarray(lengths, float))
    y, se = np.asarray(shifts), np.asarray(errors)
    # Every length counts alike (ordinary least squares), each with its own error propagated:
    # weighting by precision would let the short, precise lengths set the slope, and a change
    # that grows with L² shows mostly at the long ones.
    centred = x - x.mean()
    spread = float(np.sum(centred**2))
    change = float(np.sum(centred * y) / spread)
    reduced = None
    if len(x) >= 3:
        residuals = y - (y.mean() + change * centred)
        reduced = float(np.sum((residuals / se) ** 2) / (len(x) - 2))
    half = float(norm.ppf(1 - alpha / 2)) * math.sqrt(float(np.sum(centred**2 * se**2))) / spread
    low, high = change - half, change + half
    kind: VerdictKind
    if low > threshold / 2:
        kind = "regression"
    elif high < -threshold / 2:
        kind = "improvement"
    elif high < threshold:
        kind = "ok"
    else:
        kind = "inconclusive"
    a_medians = [float(np.median(p.baseline_rounds)) for p in usable]
    b_medians = [float(np.median(p.current_rounds)) for p in usable]
    baseline_exponent = exponent(lengths, a_medians)
    return Scaling(
        kind=kind,
        lengths=lengths,
        baseline_medians=a_medians,
        current_medians=b_medians,
        baseline_exponent=baseline_exponent,
        # The baseline's plus the fitted change, not a fit of the current medians alone: the
        # pairs' ratios are what was measured well, and the two figures then read alike.
        current_exponent=baseline_exponent + change,
        change=change,
        low=low,
        high=high,
        threshold=threshold,
        reduced_chi2=reduced,
    )


def sweep_scaling(
    results: Mapping[int, Any],
    threshold: float,
    baseline_memory: Mapping[int, int | None] | None = None,
) -> Scaling | None:
    """A sweep's verdict from its results by length (each with ``samples_ns``, ``rounds`` and
    the interleaved A side's ``paired_samples_ns``, ``paired_rounds``: an ``EvaluationResult``
    or a stored record); None unless two or more lengths were timed beside their baseline.
    ``baseline_memory`` (bytes by length, the baseline's stored results) adds memory's fit."""
    from pytest_mlscope.stats import round_medians

    points = [
        LengthPairs(
            length,
            round_medians(r.paired_samples_ns, r.paired_rounds).tolist(),
            round_medians(r.samples_ns, r.rounds).tolist(),
        )
        for length, r in results.items()
        if r.paired_samples_ns
    ]
    found = scaling_verdict(points, threshold=threshold)
    if found is None or not baseline_memory:
        return found
    current = {
        length: r.memory.model if getattr(r, "memory", None) is not None else None
        for length, r in results.items()
    }
    grown = memory_scaling(baseline_memory, current, threshold)
    return replace(found, memory=asdict(grown)) if grown is not None else found


def with_scaling(found: Verdict, scaling: Scaling) -> Verdict:
    """The verdict of the item that completed a sweep, with the sweep's: a scaling regression,
    of time or of memory, fails it whatever its own length said (unless that already failed or
    was incomparable)."""
    found = replace(found, scaling=scaling.as_dict())
    memory = MemoryScaling(**scaling.memory) if scaling.memory else None
    told = [scaling.describe()] + ([memory.describe()] if memory is not None else [])
    failed = scaling.kind == "regression" or (memory is not None and memory.kind == "regression")
    if not failed or found.kind in ("regression", "incomparable"):
        return replace(found, reason=f"{found.reason}; {'; '.join(told)}") if memory else found
    first = told if scaling.kind == "regression" else told[::-1]
    return replace(
        found,
        kind="regression",
        decided_by="scaling",
        reason=f"{'; '.join(first)} (this length alone: {found.describe()})",
    )

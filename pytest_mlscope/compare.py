"""Verdicts: how an item compares with its baseline. Numbers in, verdict objects out; no I/O.

The latency decision is taken on round medians, not on raw samples: consecutive samples of one run
share that run's conditions (CPU frequency, neighbours, memory layout), so a confidence interval
built from them alone is far narrower than the run-to-run noise and raises false alarms on a busy
CI machine. The spread between rounds enters the interval instead, and the threshold is never
below the noise measured for the item.

Order of decisions: no baseline result → ``new``; an accuracy loss → ``regression`` (always,
whatever the hardware); a different environment → ``incomparable`` (named); then latency:
``regression`` when the whole interval of the slowdown lies beyond the threshold, ``improvement``
when it lies wholly below minus the threshold, ``ok`` when it lies wholly inside, and
``inconclusive`` otherwise, with the smallest slowdown the data could have detected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np

from pytest_mlscope.protocol import AccuracyReport
from pytest_mlscope.stats import (
    Shift,
    paired_shift_interval,
    robust_sd,
    round_medians,
    shift_interval,
    slower_p_value,
    slower_paired_p_value,
)

VerdictKind = Literal["ok", "regression", "improvement", "inconclusive", "incomparable", "new"]

DEFAULT_THRESHOLD = 0.05
DEFAULT_ALPHA = 0.05
# Top-1/top-5 may drop by this much (absolute) before it counts as an accuracy regression:
# one flipped sample in a few hundred is numerical noise across builds, not a model change.
ACCURACY_TOLERANCE = 0.005
# Host facts whose difference makes latencies incomparable.
MATERIAL_HOST_FACTS = (
    ("arch", "architecture"),
    ("cpu_model", "CPU model"),
    ("physical_cores", "physical cores"),
    ("container_image", "container image"),
)


@dataclass(frozen=True)
class Side:
    """One side of a comparison: what a stored or fresh result says about an item."""

    samples_ns: Sequence[int]
    rounds: Sequence[int] = ()
    accuracy: AccuracyReport | None = None
    host: Mapping[str, Any] = field(default_factory=dict)
    framework_version: str | None = None
    run_id: str | None = None
    artifact_sha256: str | None = None
    layers: Sequence[Any] = ()  # the layer table (protocol.LayerRow), when the side was traced
    instructions: Sequence[float] = ()  # per call, per round, when the side was counted


@dataclass(frozen=True)
class Verdict:
    kind: VerdictKind
    reason: str
    baseline_median: float | None = None
    current_median: float | None = None
    ratio: float | None = None  # current / baseline, Hodges–Lehmann on round medians
    ratio_low: float | None = None
    ratio_high: float | None = None
    confidence: float | None = None
    threshold: float | None = None  # the one applied: max(configured, run-to-run noise)
    noise: float | None = None  # relative spread of round medians (robust SD)
    between_run_noise: float | None = None  # the item's spread across stored runs, if known
    detectable: float | None = None  # smallest slowdown this data could have flagged
    p_value: float | None = None  # Mann–Whitney U, current slower, raw samples (informational)
    differences: list[str] = field(default_factory=list)
    accuracy_changes: list[str] = field(default_factory=list)
    layer_changes: list[str] = field(default_factory=list)  # slowest movers, when both traced
    baseline_run: str | None = None
    design: str | None = None  # "stored" (unpaired) or "interleaved" (paired rounds)
    pairs: int | None = None  # interleaved: pairs of rounds the decision rests on
    # design "instructions": the medians are instructions per call, not seconds
    baseline_instructions: float | None = None
    current_instructions: float | None = None

    @property
    def ratio_text(self) -> str:
        """``+7.1% [+4.2%, +9.9%]``: the change in the median and its interval."""
        if self.ratio is None:
            return ""
        text = f"{self.ratio - 1:+.1%}"
        if self.ratio_low is not None and self.ratio_high is not None:
            text += f" [{self.ratio_low - 1:+.1%}, {self.ratio_high - 1:+.1%}]"
        return text

    @property
    def fails(self) -> bool:
        return self.kind == "regression"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio_text"] = self.ratio_text
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in data.items()}

    def describe(self) -> str:
        text = f"{self.kind}"
        if self.ratio_text:
            text += f" {self.ratio_text}"
        return f"{text}: {self.reason}"


def host_differences(
    baseline: Mapping[str, Any],
    current: Mapping[str, Any],
    baseline_framework: str | None = None,
    current_framework: str | None = None,
    framework: str = "framework",
) -> list[str]:
    """What differs between two environments in ways that move latency, each named."""
    differences = []
    for key, label in MATERIAL_HOST_FACTS:
        before, after = baseline.get(key), current.get(key)
        if before != after and (before is not None or after is not None):
            differences.append(f"{label}: {before!r} (baseline) vs {after!r} (now)")
    gpus_before = [g.get("name") for g in baseline.get("gpus", []) or []]
    gpus_after = [g.get("name") for g in current.get("gpus", []) or []]
    if gpus_before != gpus_after:
        differences.append(
            f"GPUs: {gpus_before or 'none'} (baseline) vs {gpus_after or 'none'} (now)"
        )
    if baseline_framework and current_framework and baseline_framework != current_framework:
        differences.append(
            f"{framework} version: {baseline_framework} (baseline) vs {current_framework} (now)"
        )
    return differences


def accuracy_changes(
    baseline: AccuracyReport | None, current: AccuracyReport | None, tolerance: float
) -> list[str]:
    """Accuracy the baseline had and the current result lost."""
    if baseline is None or current is None:
        return []
    changes = []
    for check in baseline.checks:
        now = current.check(check.name)
        if check.passed and now is not None and not now.passed:
            changes.append(f"{check.name} passed in the baseline and fails now ({now.detail})")
    for name in ("top1", "top5"):
        before, after = getattr(baseline, name), getattr(current, name)
        if before is not None and after is not None and before - after > tolerance:
            changes.append(
                f"{name} {before:.4f} -> {after:.4f} ({(after - before) * 100:+.2f} points, "
                f"tolerance {tolerance * 100:.2f})"
            )
    return changes


def latency_verdict(
    baseline: Side,
    current: Side,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    confidence: float = 1 - DEFAULT_ALPHA,
    between_run_noise: float | None = None,
) -> Verdict:
    """The latency part of a verdict, on the log round medians of both sides.

    Rounds show drift within a run but not what changes between runs (a new process, other
    neighbours). When the store knows the item's run-to-run spread (``between_run_noise``, from
    earlier runs on the same environment), the interval is at least as wide as two runs' levels
    can differ by that spread, and the threshold at least that spread.
    """
    a = round_medians(baseline.samples_ns, baseline.rounds)
    b = round_medians(current.samples_ns, current.rounds)
    return _unpaired(
        a,
        b,
        threshold=threshold,
        confidence=confidence,
        between_run_noise=between_run_noise,
        baseline_median=float(np.median(np.asarray(baseline.samples_ns)) / 1e9),
        current_median=float(np.median(np.asarray(current.samples_ns)) / 1e9),
        p_value=slower_p_value(current.samples_ns, baseline.samples_ns),
        baseline_run=baseline.run_id,
        design="stored",
    )


def count_verdict(
    baseline_counts: Sequence[float],
    current_counts: Sequence[float],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    confidence: float = 1 - DEFAULT_ALPHA,
    between_run_noise: float | None = None,
    baseline_run: str | None = None,
) -> Verdict:
    """The work verdict: instructions per call (pytest_mlscope.callgrind), one figure per round.

    The same interval rule as for latency, on the log round figures. Counts barely move between
    rounds or processes (a fraction of a per cent), so a stored baseline from another CI job can
    resolve a change of a few per cent: the comparison wall time cannot make on a shared machine.
    What they cannot see is a change in speed at equal work (cache behaviour, threading).
    """
    a = np.asarray(baseline_counts, dtype=np.float64)
    b = np.asarray(current_counts, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("count_verdict needs instruction counts on both sides")
    found = _unpaired(
        a,
        b,
        threshold=threshold,
        confidence=confidence,
        between_run_noise=between_run_noise,
        baseline_median=math.nan,
        current_median=math.nan,
        p_value=slower_p_value(b, a),  # type: ignore[arg-type]
        baseline_run=baseline_run,
        design="instructions",
    )
    return replace(
        found,
        baseline_median=None,  # seconds, elsewhere: counts have fields of their own
        current_median=None,
        baseline_instructions=float(np.median(a)),
        current_instructions=float(np.median(b)),
    )


def _unpaired(
    a: np.ndarray,
    b: np.ndarray,
    *,
    threshold: float,
    confidence: float,
    between_run_noise: float | None,
    baseline_median: float,
    current_median: float,
    p_value: float,
    baseline_run: str | None,
    design: str,
) -> Verdict:
    """Stored baseline against a fresh run, on per-round figures of each (round medians of
    latency, or instructions per call)."""
    log_a, log_b = np.log(a), np.log(b)
    shift = shift_interval(log_a, log_b, confidence)
    pooled = np.concatenate([log_a - np.median(log_a), log_b - np.median(log_b)])
    noise = math.expm1(robust_sd(pooled))
    if between_run_noise is not None:
        from scipy.stats import norm

        half = (
            float(norm.ppf(1 - (1 - confidence) / 2)) * math.sqrt(2) * math.log1p(between_run_noise)
        )
        shift = Shift(
            shift.estimate,
            min(shift.low, shift.estimate - half),
            max(shift.high, shift.estimate + half),
            shift.confidence,
            shift.exact_confidence_reached,
        )
    return _decide(
        shift,
        noise=noise,
        threshold=threshold,
        floor=between_run_noise or 0.0,
        floor_name="the run-to-run noise",
        baseline_median=baseline_median,
        current_median=current_median,
        p_value=p_value,
        baseline_run=baseline_run,
        between_run_noise=between_run_noise,
        design=design,
    )


def paired_verdict(
    baseline_rounds: Sequence[float],
    current_rounds: Sequence[float],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    confidence: float = 1 - DEFAULT_ALPHA,
    baseline_run: str | None = None,
) -> Verdict:
    """Latency verdict for interleaved A/B: round i of each ran back to back, so drift hits both.

    The decision uses the per-pair log ratios: their Hodges–Lehmann shift with the Wilcoxon
    signed-rank interval, and the one-sided signed-rank p-value. Pairing cancels the slow drift
    that dominates unpaired comparisons on a shared machine, so no run-to-run floor is added to
    the threshold: both sides share the run.
    """
    a = np.asarray(baseline_rounds, dtype=np.float64)
    b = np.asarray(current_rounds, dtype=np.float64)
    if a.size != b.size or a.size == 0:
        raise ValueError("paired_verdict needs the same number of A and B rounds, at least one")
    differences = np.log(b) - np.log(a)
    shift = paired_shift_interval(differences, confidence)
    return _decide(
        shift,
        noise=math.expm1(robust_sd(differences) / math.sqrt(2)),
        threshold=threshold,
        baseline_median=float(np.median(a)),
        current_median=float(np.median(b)),
        p_value=slower_paired_p_value(differences),
        baseline_run=baseline_run,
        design="interleaved",
        pairs=int(a.size),
    )


def _decide(
    shift: Shift,
    *,
    noise: float,
    threshold: float,
    baseline_median: float,
    current_median: float,
    p_value: float,
    baseline_run: str | None,
    floor: float = 0.0,
    floor_name: str = "",
    between_run_noise: float | None = None,
    design: str | None = None,
    pairs: int | None = None,
) -> Verdict:
    """The interval rule, shared by the unpaired and the paired designs."""
    applied = max(threshold, floor)
    ratio, low, high = (math.exp(x) for x in (shift.estimate, shift.low, shift.high))
    confidence = shift.confidence
    common = dict(
        baseline_median=baseline_median,
        current_median=current_median,
        ratio=ratio,
        ratio_low=low,
        ratio_high=high,
        confidence=confidence,
        threshold=applied,
        noise=noise,
        p_value=p_value,
        baseline_run=baseline_run,
        between_run_noise=between_run_noise,
        design=design,
        pairs=pairs,
    )
    limit = f"{applied:.1%}" + (f" ({floor_name})" if applied > threshold else "")
    level = f"{confidence:.1%}"
    if low - 1 > applied:
        return Verdict(
            "regression",
            f"slower: the whole {level} interval is beyond the {limit} threshold",
            **common,
        )
    if high - 1 < -applied:
        return Verdict(
            "improvement", f"faster: the whole {level} interval is beyond -{limit}", **common
        )
    if -applied <= low - 1 and high - 1 <= applied:
        return Verdict("ok", f"the whole {level} interval is within ±{limit}", **common)
    detectable = applied + (ratio - low)
    return Verdict(
        "inconclusive",
        f"the {level} interval straddles the ±{limit} threshold; only a slowdown of "
        f"{detectable:.1%} or more could have been told from noise",
        detectable=detectable,
        **common,
    )


def _accuracy_regression(baseline: Side, current: Side, tolerance: float) -> Verdict | None:
    """Accuracy lost against the baseline is a regression, always, whatever the hardware."""
    lost = accuracy_changes(baseline.accuracy, current.accuracy, tolerance)
    if not lost:
        return None
    return Verdict(
        "regression",
        "accuracy: " + "; ".join(lost),
        accuracy_changes=lost,
        baseline_run=baseline.run_id,
    )


def verdict(
    baseline: Side | None,
    current: Side,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    comparisons: int = 1,
    alpha: float = DEFAULT_ALPHA,
    accuracy_tolerance: float = ACCURACY_TOLERANCE,
    framework: str = "framework",
    between_run_noise: float | None = None,
) -> Verdict:
    """The verdict for one item. ``comparisons`` is how many items the session compares: each
    interval is widened to 1 - alpha/comparisons (Bonferroni), so the suite as a whole keeps a
    false-alarm rate of at most alpha."""
    if baseline is None:
        return Verdict("new", "no baseline result for this item")
    lost = _accuracy_regression(baseline, current, accuracy_tolerance)
    if lost is not None:
        return lost
    differences = host_differences(
        baseline.host,
        current.host,
        baseline.framework_version,
        current.framework_version,
        framework,
    )
    if differences:
        return Verdict(
            "incomparable",
            "different environment: " + "; ".join(differences),
            differences=differences,
            baseline_run=baseline.run_id,
        )
    confidence = 1 - alpha / max(1, comparisons)
    if baseline.instructions and current.instructions:
        # Both sides counted: work, which a shared machine's drift does not move, decides.
        found = count_verdict(
            baseline.instructions,
            current.instructions,
            threshold=threshold,
            confidence=confidence,
            baseline_run=baseline.run_id,
        )
        return replace(found, reason=f"instructions per call: {found.reason}")
    if not baseline.samples_ns or not current.samples_ns:
        return Verdict(
            "new",
            "no timing samples on " + ("the baseline" if not baseline.samples_ns else "this run"),
            baseline_run=baseline.run_id,
        )
    return latency_verdict(
        baseline,
        current,
        threshold=threshold,
        confidence=confidence,
        between_run_noise=between_run_noise,
    )


def interleaved_verdict(
    baseline: Side | None,
    current: Side,
    paired_samples_ns: Sequence[int],
    paired_rounds: Sequence[int],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    comparisons: int = 1,
    alpha: float = DEFAULT_ALPHA,
    accuracy_tolerance: float = ACCURACY_TOLERANCE,
    against: str = "the baseline",
) -> Verdict:
    """The verdict for an item timed interleaved with its baseline (A) in one worker.

    Accuracy is still judged against the stored baseline result, when there is one; latency on
    the pairs alone. Environment differences do not apply: both sides ran here, now.
    """
    if baseline is not None:
        lost = _accuracy_regression(baseline, current, accuracy_tolerance)
        if lost is not None:
            return lost
    a = round_medians(paired_samples_ns, paired_rounds)
    b = round_medians(current.samples_ns, current.rounds)
    if a.size < 2 or a.size != b.size:
        return Verdict("new", "interleaved timing gave no pairs of rounds to compare")
    found = paired_verdict(
        a,
        b,
        threshold=threshold,
        confidence=1 - alpha / max(1, comparisons),
        baseline_run=baseline.run_id if baseline else None,
    )

    return replace(
        found, reason=f"interleaved with {against}, {found.pairs} pairs of rounds: {found.reason}"
    )


def environment(host: Mapping[str, Any], predictor: Any) -> dict[str, Any]:
    """The host's fingerprint, plus the container image a result was computed in, if any: two
    images are two software stacks even on one machine."""
    details = getattr(predictor, "details", None) or {}
    container = details.get("container") or {}
    found = dict(host)
    if container.get("image_id"):
        found["container_image"] = f"{container.get('image')} ({container['image_id'][7:19]})"
    return found


def side_of(record: Any, host: Mapping[str, Any], run_id: str | None = None) -> Side:
    """A stored result (a ``store.ResultRecord``) as one side of a comparison."""
    return Side(
        samples_ns=record.samples_ns,
        rounds=record.rounds,
        accuracy=record.accuracy,
        host=environment(host, getattr(record, "predictor", None)),
        framework_version=record.framework_version,
        run_id=run_id,
        artifact_sha256=getattr(record, "artifact_sha256", None),
        layers=list(getattr(record, "layers", None) or []),
        instructions=list(getattr(record, "instructions", None) or []),
    )


def run_sides(records: Mapping[str, Any], host: Mapping[str, Any], run_id: str) -> dict[str, Side]:
    """A stored run's results (item -> ``store.ResultRecord``) as comparison sides; items that
    measured nothing (skipped, errors before the worker answered) are left out."""
    return {
        item: side_of(record, host, run_id)
        for item, record in records.items()
        if record.samples_ns or record.accuracy or getattr(record, "instructions", None)
    }


def compare_runs(
    baseline: Mapping[str, Side],
    current: Mapping[str, Side],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    ignore_environment: bool = False,
) -> dict[str, Verdict]:
    """Verdicts for every item of ``current`` (by item id), against ``baseline``.

    ``ignore_environment`` compares latencies across different environments anyway: the A/B of
    two framework versions or two machines that a user asked for explicitly.
    """
    comparisons = max(1, sum(1 for item in current if item in baseline))
    verdicts = {}
    for item, side in current.items():
        base = baseline.get(item)
        if ignore_environment and base is not None:
            side = Side(
                samples_ns=side.samples_ns,
                rounds=side.rounds,
                accuracy=side.accuracy,
                host=base.host,
                framework_version=base.framework_version,
                run_id=side.run_id,
                instructions=side.instructions,
            )
        framework = item.partition("[")[2].partition("-")[0] or "framework"
        verdicts[item] = verdict(
            base,
            side,
            threshold=threshold,
            comparisons=comparisons,
            alpha=alpha,
            framework=framework,
        )
    return verdicts

"""Verdicts: how an item compares with its baseline. Numbers in, verdict objects out; no I/O.

One policy, applied by the session, ``mlscope compare`` and the report alike (``verdict``). The
threshold T is the smallest slowdown the gate must catch: ``regression`` when the item's interval
lies wholly above +T/2 (and the family-wise one above zero), ``ok`` when it ends below +T,
``inconclusive`` otherwise (``_decide`` says why each rate holds).

Latency is judged on round medians, not raw samples: consecutive samples of one run share that
run's conditions (CPU frequency, neighbours, memory layout), so an interval from them alone is
far narrower than the run-to-run noise. Interleaved A/B pairs share the run, so drift cancels in
the per-pair ratio; a stored baseline needs the item's run-to-run noise from comparable stored
runs, and without it never calls a regression.

Order of decisions: no baseline and no A side → ``new``; an accuracy loss → ``regression``
(always, whatever the hardware); interleaved pairs → latency on the pairs; else a different
environment → ``incomparable`` (named), else the stored design; instructions decide instead
when both sides were counted on one environment, with the latency verdict kept beside them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np

from pytest_mlscope.protocol import AccuracyReport
from pytest_mlscope.stats import (
    MIN_NOISE_RUNS,
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
# The chance that an unchanged suite fails anywhere (A/A), over all of a session's comparisons.
DEFAULT_ALPHA = 0.01
# Per item: the chance to miss a slowdown of T, and the chance to flag one of T/2, each.
DEFAULT_BETA = 0.025
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
    # Interleaved: the A side's samples and rounds, timed beside this one (round i of each is
    # pair i), and what A was (its framework version, its artifact).
    paired_samples_ns: Sequence[int] = ()
    paired_rounds: Sequence[int] = ()
    paired_version: str | None = None
    paired_artifact_sha256: str | None = None


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
    # When instructions decided: what latency said beside them (kind, change, reason).
    latency: str | None = None
    comparisons: int | None = None  # items the session compared (the family-wise correction)

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


def decision_levels(
    comparisons: int = 1,
    *,
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
    looks: int = 1,
) -> tuple[float, float]:
    """The two-sided confidence of the item's interval and of the family-wise one.

    Each of the ``looks`` of a sequential measurement spends an equal share of the error rates
    (Bonferroni over looks), so adding pairs until the decision is clear cannot inflate them.
    """
    looks = max(1, looks)
    item = 1 - 2 * beta / looks
    family = 1 - 2 * alpha / (max(1, comparisons) * looks)
    return item, family


def latency_verdict(
    baseline: Side,
    current: Side,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    comparisons: int = 1,
    alpha: float = DEFAULT_ALPHA,
    between_run_noise: float | None = None,
    noise_runs: int | None = None,
) -> Verdict:
    """The stored design: a fresh run against stored results, on the log round medians of both.

    Rounds show drift within a run but not what changes between runs (a new process, other
    neighbours, another memory layout). Only the item's run-to-run spread across comparable
    stored runs (``between_run_noise``) can say how far apart two runs' levels may lie; the
    interval is widened by it. Without it a latency change cannot be told from a process's
    offset, so no regression is called: the verdict is inconclusive and says how to get one.
    """
    a = round_medians(baseline.samples_ns, baseline.rounds)
    b = round_medians(current.samples_ns, current.rounds)
    found = _unpaired(
        a,
        b,
        threshold=threshold,
        comparisons=comparisons,
        alpha=alpha,
        between_run_noise=between_run_noise,
        baseline_median=float(np.median(np.asarray(baseline.samples_ns)) / 1e9),
        current_median=float(np.median(np.asarray(current.samples_ns)) / 1e9),
        p_value=slower_p_value(current.samples_ns, baseline.samples_ns),
        baseline_run=baseline.run_id,
        design="stored",
        noise_runs=noise_runs,
    )
    if between_run_noise is not None:
        return found
    if found.kind in ("regression", "improvement"):
        stored = (
            f"{noise_runs} comparable stored run{'s' if noise_runs != 1 else ''}, "
            if (noise_runs is not None)
            else ""
        )
        return replace(
            found,
            kind="inconclusive",
            reason=(
                f"{found.kind} within this run ({found.ratio_text}), but the stored design has no "
                f"run-to-run noise estimate for this item ({stored}{MIN_NOISE_RUNS} needed on this "
                "CPU and framework version): a new process alone moves latency this much. For a "
                "decision: keep the baseline's model reachable so it is timed beside this one "
                "(interleaved, the default), store more runs on this machine, or count "
                "instructions (--mlscope-count-instructions)"
            ),
            detectable=None,
        )
    if found.kind == "ok":
        return replace(
            found, reason=f"{found.reason} (within this run; its run-to-run noise is unknown)"
        )
    return found


def count_verdict(
    baseline_counts: Sequence[float],
    current_counts: Sequence[float],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    comparisons: int = 1,
    alpha: float = DEFAULT_ALPHA,
    between_run_noise: float | None = None,
    noise_runs: int | None = None,
    baseline_run: str | None = None,
) -> Verdict:
    """The work verdict: instructions per call (pytest_mlscope.callgrind), one figure per round.

    The same rule as for latency, on the log round figures, widened by the spread of the item's
    stored counts when known. Counts barely move between rounds or processes (a fraction of a
    per cent), so a stored baseline from another CI job can resolve a change of a few per cent:
    the comparison wall time cannot make on a shared machine. What they cannot see is a change in
    speed at equal work (cache behaviour, threading).
    """
    a = np.asarray(baseline_counts, dtype=np.float64)
    b = np.asarray(current_counts, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("count_verdict needs instruction counts on both sides")
    found = _unpaired(
        a,
        b,
        threshold=threshold,
        comparisons=comparisons,
        alpha=alpha,
        between_run_noise=between_run_noise,
        baseline_median=math.nan,
        current_median=math.nan,
        p_value=slower_p_value(b, a),  # type: ignore[arg-type]
        baseline_run=baseline_run,
        design="instructions",
        noise_runs=noise_runs,
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
    comparisons: int,
    alpha: float,
    between_run_noise: float | None,
    baseline_median: float,
    current_median: float,
    p_value: float,
    baseline_run: str | None,
    design: str,
    noise_runs: int | None = None,
) -> Verdict:
    """Stored baseline against a fresh run, on per-round figures of each (round medians of
    latency, or instructions per call)."""
    from scipy.stats import norm, t

    log_a, log_b = np.log(a), np.log(b)
    pooled = np.concatenate([log_a - np.median(log_a), log_b - np.median(log_b)])

    def interval(confidence: float) -> Shift:
        shift = shift_interval(log_a, log_b, confidence)
        if between_run_noise is None:
            return shift
        # The noise is itself estimated from a few runs: Student's t with their degrees of
        # freedom, not the normal quantile, keeps the false-alarm rate where it is promised.
        tail = 1 - (1 - confidence) / 2
        q = float(t.ppf(tail, noise_runs - 1)) if noise_runs and noise_runs > 1 else norm.ppf(tail)
        return shift.widened(float(q) * math.sqrt(2) * math.log1p(between_run_noise))

    item, family = decision_levels(comparisons, alpha=alpha)
    return _decide(
        interval(item),
        interval(family),
        noise=math.expm1(robust_sd(pooled)),
        threshold=threshold,
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
    comparisons: int = 1,
    alpha: float = DEFAULT_ALPHA,
    looks: int = 1,
    baseline_run: str | None = None,
) -> Verdict:
    """Latency verdict for interleaved A/B: round i of each ran back to back, so drift hits both.

    The decision uses the per-pair log ratios: their Hodges–Lehmann shift with the Wilcoxon
    signed-rank interval, and the one-sided signed-rank p-value. Pairing cancels the slow drift
    that dominates unpaired comparisons on a shared machine, so no run-to-run term is needed:
    both sides share the run. ``looks`` is how many times the measurement may stop to decide
    (pytest_mlscope.measure.SEQUENTIAL_PAIRS); each look spends its share of the error rates.
    """
    a = np.asarray(baseline_rounds, dtype=np.float64)
    b = np.asarray(current_rounds, dtype=np.float64)
    if a.size != b.size or a.size == 0:
        raise ValueError("paired_verdict needs the same number of A and B rounds, at least one")
    differences = np.log(b) - np.log(a)
    item, family = decision_levels(comparisons, alpha=alpha, looks=looks)
    return _decide(
        paired_shift_interval(differences, item),
        paired_shift_interval(differences, family),
        noise=math.expm1(robust_sd(differences) / math.sqrt(2)),
        threshold=threshold,
        baseline_median=float(np.median(a)),
        current_median=float(np.median(b)),
        p_value=slower_paired_p_value(differences),
        baseline_run=baseline_run,
        design="interleaved",
        pairs=int(a.size),
    )


def settled(
    baseline_rounds: Sequence[float],
    current_rounds: Sequence[float],
    *,
    threshold: float,
    comparisons: int = 1,
    looks: int = 1,
) -> bool:
    """Whether interleaved rounds so far decide the item (anything but inconclusive): the
    sequential measurement's stopping rule, the same rule the verdict applies."""
    if len(baseline_rounds) < 2 or len(baseline_rounds) != len(current_rounds):
        return False
    found = paired_verdict(
        baseline_rounds, current_rounds, threshold=threshold, comparisons=comparisons, looks=looks
    )
    return found.kind != "inconclusive"


def _decide(
    shift: Shift,
    family: Shift,
    *,
    noise: float,
    threshold: float,
    baseline_median: float,
    current_median: float,
    p_value: float,
    baseline_run: str | None,
    between_run_noise: float | None = None,
    design: str | None = None,
    pairs: int | None = None,
) -> Verdict:
    """The rule every design shares; T is the smallest slowdown the gate must catch.

    ``shift`` is the item's interval (each tail at beta over the looks), ``family`` the
    family-wise one (alpha over the comparisons and the looks). In that order:

    - ``regression``: the item's interval lies wholly above +T/2, and the family-wise one above
      zero. A true slowdown of T/2 is flagged at most beta of the time; an unchanged model
      almost never (its interval would have to miss by T/2), and the suite at most alpha.
    - ``improvement``: the mirror image, below -T/2.
    - ``ok``: the item's interval ends below +T, so a slowdown of T is ruled out; a true one of
      T is called ok at most beta of the time. A change between -T/2 and +T/2 is ok, and a
      clear slowdown of +4 % at T = 5 % is a regression, not ok.
    - ``inconclusive``: neither yet; with the smallest slowdown the data could have caught.
    """
    ratio, low, high = (math.exp(x) for x in (shift.estimate, shift.low, shift.high))
    half = threshold / 2
    common = dict(
        baseline_median=baseline_median,
        current_median=current_median,
        ratio=ratio,
        ratio_low=low,
        ratio_high=high,
        confidence=shift.reached if not shift.exact_confidence_reached else shift.confidence,
        threshold=threshold,
        noise=noise,
        p_value=p_value,
        baseline_run=baseline_run,
        between_run_noise=between_run_noise,
        design=design,
        pairs=pairs,
    )
    level = f"{common['confidence']:.1%}"
    if not shift.exact_confidence_reached:
        level += f" (the most {shift.confidence:.1%} asks for that this data can give)"
    family_low, family_high = math.exp(family.low), math.exp(family.high)
    if low > 1 + half and family_low > 1:
        return Verdict(
            "regression",
            f"slower: the whole {level} interval is above +{half:.1%}, half the "
            f"{threshold:.1%} threshold",
            **common,
        )
    if high < 1 / (1 + half) and family_high < 1:
        return Verdict(
            "improvement",
            f"faster: the whole {level} interval is below {1 / (1 + half) - 1:+.1%}",
            **common,
        )
    if high < 1 + threshold:
        return Verdict(
            "ok",
            f"a slowdown of {threshold:.1%} or more is ruled out: the {level} interval ends at "
            f"{high - 1:+.1%}",
            **common,
        )
    detectable = (1 + half) * ratio / low - 1
    return Verdict(
        "inconclusive",
        f"the {level} interval neither rules out a {threshold:.1%} slowdown nor lies above "
        f"+{half:.1%}; only a slowdown of {detectable:.1%} or more could have been caught",
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
    noise_runs: int | None = None,
    count_noise: float | None = None,
) -> Verdict:
    """The verdict for one item: the one policy the session, ``mlscope compare`` and the report
    all apply. ``comparisons`` is how many items the session compares (the family-wise
    correction); ``between_run_noise`` and ``count_noise`` are the item's spread across
    comparable stored runs (``noise_runs`` of them), None when too few are stored.

    Order of decisions: no baseline (and no A side timed beside) → ``new``; accuracy lost →
    ``regression``; latency on the pairs when the item was interleaved (the environment is the
    same by construction), else ``incomparable`` on another environment, else the stored
    design; instructions decide instead when both sides were counted on one environment, with
    latency's verdict kept beside them.
    """
    interleaved = bool(current.paired_samples_ns)
    if baseline is None and not interleaved:
        return Verdict("new", "no baseline result for this item", comparisons=comparisons)
    if baseline is not None:
        lost = _accuracy_regression(baseline, current, accuracy_tolerance)
        if lost is not None:
            return replace(lost, comparisons=comparisons)
    differences = (
        host_differences(
            baseline.host,
            current.host,
            baseline.framework_version,
            current.framework_version,
            framework,
        )
        if baseline is not None
        else []
    )
    latency: Verdict | None = None
    if interleaved:
        latency = _interleaved_latency(
            baseline, current, threshold=threshold, comparisons=comparisons, alpha=alpha
        )
    elif differences:
        return Verdict(
            "incomparable",
            "different environment: " + "; ".join(differences),
            differences=differences,
            baseline_run=baseline.run_id if baseline else None,
            comparisons=comparisons,
        )
    elif baseline is not None and baseline.samples_ns and current.samples_ns:
        latency = latency_verdict(
            baseline,
            current,
            threshold=threshold,
            comparisons=comparisons,
            alpha=alpha,
            between_run_noise=between_run_noise,
            noise_runs=noise_runs,
        )
    if (
        baseline is not None
        and baseline.instructions
        and current.instructions
        and not (differences)
    ):
        # Both sides counted: work, which a shared machine's drift does not move, decides.
        found = count_verdict(
            baseline.instructions,
            current.instructions,
            threshold=threshold,
            comparisons=comparisons,
            alpha=alpha,
            between_run_noise=count_noise,
            noise_runs=noise_runs,
            baseline_run=baseline.run_id,
        )
        reached = "" if found.confidence is None else f" (reached {found.confidence:.1%})"
        return replace(
            found,
            reason=f"instructions per call{reached}: {found.reason}",
            latency=latency.describe() if latency is not None else None,
            comparisons=comparisons,
        )
    if latency is None:
        which = "the baseline" if baseline is not None and not baseline.samples_ns else "this run"
        return Verdict(
            "new",
            f"no timing samples on {which}",
            baseline_run=baseline.run_id if baseline else None,
            comparisons=comparisons,
        )
    return replace(latency, comparisons=comparisons)


def _interleaved_latency(
    baseline: Side | None,
    current: Side,
    *,
    threshold: float,
    comparisons: int,
    alpha: float,
) -> Verdict:
    """Latency on the pairs of an item timed beside its A side (the baseline's model)."""
    from pytest_mlscope.measure import LOOKS

    a = round_medians(current.paired_samples_ns, current.paired_rounds)
    b = round_medians(current.samples_ns, current.rounds)
    if a.size < 2 or a.size != b.size:
        return Verdict("new", "interleaved timing gave no pairs of rounds to compare")
    found = paired_verdict(
        a,
        b,
        threshold=threshold,
        comparisons=comparisons,
        alpha=alpha,
        looks=LOOKS,
        baseline_run=baseline.run_id if baseline else None,
    )
    note = f"{found.pairs} pairs of rounds"
    if found.kind == "inconclusive":
        note += " (the item's timing budget ran out)"
    versions = (current.paired_version, current.framework_version)
    if current.paired_version and versions[0] != versions[1]:
        note += f", A on {versions[0]}, B on {versions[1]}"
    return replace(found, reason=f"interleaved, {note}: {found.reason}")


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
    paired = getattr(record, "paired_predictor", None)
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
        paired_samples_ns=list(getattr(record, "paired_samples_ns", None) or []),
        paired_rounds=list(getattr(record, "paired_rounds", None) or []),
        paired_version=getattr(paired, "version", None) if paired is not None else None,
        paired_artifact_sha256=getattr(record, "paired_artifact_sha256", None),
    )


def run_sides(records: Mapping[str, Any], host: Mapping[str, Any], run_id: str) -> dict[str, Side]:
    """A stored run's results (item -> ``store.ResultRecord``) as comparison sides; items that
    measured nothing (skipped, errors before the worker answered) are left out."""
    return {
        item: side_of(record, host, run_id)
        for item, record in records.items()
        if record.samples_ns or record.accuracy or getattr(record, "instructions", None)
    }


@dataclass(frozen=True)
class Noise:
    """An item's spread across comparable stored runs, for the stored and counted designs."""

    latency: float | None = None
    instructions: float | None = None
    runs: int = 0


def compare_runs(
    baseline: Mapping[str, Side],
    current: Mapping[str, Side],
    *,
    threshold: float | None = None,
    alpha: float = DEFAULT_ALPHA,
    ignore_environment: bool = False,
    noise: Mapping[str, Noise] | None = None,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Verdict]:
    """Verdicts for every item of ``current`` (by item id), against ``baseline``: ``verdict``
    for each, so a stored run compared later says what its session said.

    ``settings`` are what each item's session judged with (its stored verdict's threshold and
    comparisons); ``threshold`` overrides them, else the default applies. ``noise`` is each
    item's run-to-run spread from runs stored before ``current``. ``ignore_environment``
    compares latencies across different environments anyway: the A/B of two framework versions
    or two machines that a user asked for explicitly.
    """
    compared = max(1, sum(1 for item in current if item in baseline))
    verdicts = {}
    for item, side in current.items():
        base = baseline.get(item)
        if ignore_environment and base is not None:
            side = replace(side, host=base.host, framework_version=base.framework_version)
        used = (settings or {}).get(item) or {}
        known = (noise or {}).get(item, Noise())
        framework = item.partition("[")[2].partition("-")[0] or "framework"
        verdicts[item] = verdict(
            base,
            side,
            threshold=threshold or used.get("threshold") or DEFAULT_THRESHOLD,
            comparisons=int(used.get("comparisons") or compared),
            alpha=alpha,
            framework=framework,
            between_run_noise=known.latency,
            noise_runs=known.runs,
            count_noise=known.instructions,
        )
    return verdicts

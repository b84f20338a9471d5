"""The decision statistics: the intervals each design (stored, interleaved, instructions)
computes and the one rule (``_decide``) that turns an interval into a verdict."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from pytest_mlscope.compare.verdicts import Side, Verdict
from pytest_mlscope.stats import (
    MIN_NOISE_RUNS,
    Shift,
    paired_shift_interval,
    robust_sd,
    round_medians,
    shift_interval,
    slower_p_value,
    slower_paired_p_value,
    worker_spread,
)

DEFAULT_THRESHOLD = 0.05
# The chance that an unchanged suite fails anywhere (A/A), over all of a session's comparisons.
DEFAULT_ALPHA = 0.01
# Per item: the chance to miss a slowdown of T, and the chance to flag one of T/2, each.
DEFAULT_BETA = 0.025


@dataclass(frozen=True)
class Gate:
    """What a stored or counted design judges an item by, besides its data: the threshold T,
    how many items the session compares (the family-wise correction), alpha, and the item's
    spread across ``noise_runs`` comparable stored runs (None when unknown). The fields are the
    keyword options of ``latency_verdict`` and ``count_verdict``."""

    threshold: float = DEFAULT_THRESHOLD
    comparisons: int = 1
    alpha: float = DEFAULT_ALPHA
    between_run_noise: float | None = None
    noise_runs: int | None = None


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
    found = _unpaired(
        round_medians(baseline.samples_ns, baseline.rounds),
        round_medians(current.samples_ns, current.rounds),
        Gate(threshold, comparisons, alpha, between_run_noise, noise_runs),
        baseline_median=float(np.median(np.asarray(baseline.samples_ns)) / 1e9),
        current_median=float(np.median(np.asarray(current.samples_ns)) / 1e9),
        p_value=slower_p_value(current.samples_ns, baseline.samples_ns),
        baseline_run=baseline.run_id,
        design="stored",
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
        Gate(threshold, comparisons, alpha, between_run_noise, noise_runs),
        p_value=slower_p_value(b, a),  # type: ignore[arg-type]
        baseline_run=baseline_run,
        design="instructions",
    )
    # The medians in seconds stay None: counts have fields of their own.
    return replace(
        found,
        baseline_instructions=float(np.median(a)),
        current_instructions=float(np.median(b)),
    )


def _unpaired(a: np.ndarray, b: np.ndarray, gate: Gate, **described: Any) -> Verdict:
    """Stored baseline against a fresh run, on per-round figures of each (round medians of
    latency, or instructions per call). ``described`` are the verdict's fields that say what was
    compared (``_decide``)."""
    from scipy.stats import norm, t

    log_a, log_b = np.log(a), np.log(b)
    pooled = np.concatenate([log_a - np.median(log_a), log_b - np.median(log_b)])

    noise_runs, between_run_noise = gate.noise_runs, gate.between_run_noise

    def interval(confidence: float) -> Shift:
        shift = shift_interval(log_a, log_b, confidence)
        if between_run_noise is None:
            return shift
        # The noise is itself estimated from a few runs: Student's t with their degrees of
        # freedom, not the normal quantile, keeps the false-alarm rate where it is promised.
        tail = 1 - (1 - confidence) / 2
        q = float(t.ppf(tail, noise_runs - 1)) if noise_runs and noise_runs > 1 else norm.ppf(tail)
        return shift.widened(float(q) * math.sqrt(2) * math.log1p(between_run_noise))

    item, family = decision_levels(gate.comparisons, alpha=gate.alpha)
    return _decide(
        interval(item),
        interval(family),
        noise=math.expm1(robust_sd(pooled)),
        threshold=gate.threshold,
        between_run_noise=between_run_noise,
        **described,
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
    workers: Sequence[Sequence[int]] = (),
) -> Verdict:
    """Latency verdict for interleaved A/B: round i of each ran back to back, so drift hits both.

    The decision uses the per-pair log ratios: their Hodges–Lehmann shift with the Wilcoxon
    signed-rank interval, and the one-sided signed-rank p-value. Pairing cancels the slow drift
    that dominates unpaired comparisons on a shared machine, so no run-to-run term is needed:
    both sides share the run. ``looks`` is how many times the measurement may stop to decide
    (pytest_mlscope.measure.SEQUENTIAL_PAIRS); each look spends its share of the error rates.

    When A and B ran in worker processes of their own (two stacks), each process's own speed is
    an offset that pairing cannot cancel; ``workers`` says which of several workers per side
    timed each pair, and the interval is at least as wide as their spread allows
    (stats.worker_spread, Student's t on its degrees of freedom). That term is spent at the
    single-look level: the offsets are drawn once, when the workers start, and further looks
    time the same workers (a worker replaced for standing apart has its pairs timed afresh
    before the next look), so successive looks see nearly the same offsets and spread. This
    is not a proven bound: the sequential simulation in tests/test_compare.py
    holds it to the promised rates, and benchmarks/verdicts.py (upgrade design) measures it.
    """
    a = np.asarray(baseline_rounds, dtype=np.float64)
    b = np.asarray(current_rounds, dtype=np.float64)
    if a.size != b.size or a.size == 0:
        raise ValueError("paired_verdict needs the same number of A and B rounds, at least one")
    differences = np.log(b) - np.log(a)
    item, family = decision_levels(comparisons, alpha=alpha, looks=looks)
    item_shift = paired_shift_interval(differences, item)
    family_shift = paired_shift_interval(differences, family)
    spread = worker_spread(differences, workers) if len(workers) else None
    if spread is not None:
        once, family_once = decision_levels(comparisons, alpha=alpha)
        item_shift = item_shift.widened(spread.half_width(once))
        family_shift = family_shift.widened(spread.half_width(family_once))
    found = _decide(
        item_shift,
        family_shift,
        noise=math.expm1(robust_sd(differences) / math.sqrt(2)),
        threshold=threshold,
        baseline_median=float(np.median(a)),
        current_median=float(np.median(b)),
        p_value=slower_paired_p_value(differences),
        baseline_run=baseline_run,
        design="interleaved",
        pairs=int(a.size),
    )
    if spread is None:
        return found
    least = math.expm1(spread.half_width(once))
    return replace(
        found,
        reason=(
            f"{found.reason} (across {spread.a_workers} + {spread.b_workers} worker processes, "
            f"whose own speeds keep the interval at least ±{least:.1%} wide)"
        ),
    )


def settled(
    baseline_rounds: Sequence[float],
    current_rounds: Sequence[float],
    *,
    threshold: float,
    comparisons: int = 1,
    looks: int = 1,
    workers: Sequence[Sequence[int]] = (),
) -> bool:
    """Whether interleaved rounds so far decide the item (anything but inconclusive): the
    sequential measurement's stopping rule, the same rule the verdict applies."""
    if len(baseline_rounds) < 2 or len(baseline_rounds) != len(current_rounds):
        return False
    found = paired_verdict(
        baseline_rounds,
        current_rounds,
        threshold=threshold,
        comparisons=comparisons,
        looks=looks,
        workers=workers,
    )
    return found.kind != "inconclusive"


def _decide(
    shift: Shift, family: Shift, *, noise: float, threshold: float, **described: Any
) -> Verdict:
    """The rule every design shares; T is the smallest slowdown the gate must catch.
    ``described`` are the verdict's fields that say what was compared, passed through: the
    medians, the p-value, the baseline run, the design and its details.

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
        ratio=ratio,
        ratio_low=low,
        ratio_high=high,
        confidence=shift.reached if not shift.exact_confidence_reached else shift.confidence,
        threshold=threshold,
        noise=noise,
        **described,
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

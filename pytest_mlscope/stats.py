"""Summaries of timing samples. Pure numbers: no I/O, no framework, tested on arrays directly."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pytest_mlscope.protocol import Summary


def median_ci(sorted_values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median from order statistics.

    Latency distributions are skewed and multi-modal, so a normal-theory interval would be wrong;
    the binomial interval on ranks holds for any continuous distribution.
    """
    from scipy.stats import binom

    n = len(sorted_values)
    if n == 0:
        return (float("nan"), float("nan"))
    if n < 6:  # too few points for any 95 % rank interval: the honest answer is the range
        return (float(sorted_values[0]), float(sorted_values[-1]))
    alpha = 1.0 - confidence
    low = int(binom.ppf(alpha / 2, n, 0.5))
    high = int(binom.isf(alpha / 2, n, 0.5))
    low = max(low - 1, 0)  # ranks are 1-based in the textbook formula
    high = min(high, n - 1)
    return (float(sorted_values[low]), float(sorted_values[high]))


def summarize_scenario(samples_ns: Sequence[int], batch_size: int, scenario: str) -> Summary:
    """``summarize``, with offline throughput as items over the time spent in the model across
    all batches (single-stream throughput comes from the median batch time)."""
    summary = summarize(samples_ns, batch_size)
    if scenario != "offline":
        return summary
    throughput = batch_size * len(samples_ns) / (sum(samples_ns) / 1e9)
    return summary.model_copy(update={"throughput": throughput})


def summarize(samples_ns: Sequence[int] | np.ndarray, batch_size: int = 1) -> Summary:
    """Latency statistics in seconds; throughput in items per second from the median batch time."""
    values = np.sort(np.asarray(samples_ns, dtype=np.float64)) / 1e9
    if values.size == 0:
        raise ValueError("cannot summarize zero samples")
    low, high = median_ci(values)
    median = float(np.median(values))
    return Summary(
        count=int(values.size),
        mean=float(values.mean()),
        std=float(values.std(ddof=1)) if values.size > 1 else 0.0,
        min=float(values[0]),
        median=median,
        p90=float(np.percentile(values, 90)),
        p99=float(np.percentile(values, 99)),
        max=float(values[-1]),
        median_ci_low=low,
        median_ci_high=high,
        throughput=batch_size / median if median > 0 else float("inf"),
        batch_size=batch_size,
    )


def round_medians(
    samples_ns: Sequence[int], rounds: Sequence[int], fallback_rounds: int = 10
) -> np.ndarray:
    """Median of each measurement round, in seconds.

    Results stored without round boundaries are cut into ``fallback_rounds`` consecutive chunks,
    which still shows drift over the run, though not between runs.
    """
    values = np.asarray(samples_ns, dtype=np.float64) / 1e9
    if values.size == 0:
        return values
    sizes = list(rounds) if rounds and sum(rounds) == values.size else []
    if len(sizes) < 2:
        chunks = np.array_split(values, min(fallback_rounds, values.size))
    else:
        chunks = np.split(values, np.cumsum(sizes)[:-1])
    return np.array([np.median(chunk) for chunk in chunks if chunk.size])


def robust_sd(values: np.ndarray) -> float:
    """Scaled median absolute deviation: a standard deviation that one wild round cannot inflate."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return 0.0
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


@dataclass(frozen=True)
class Shift:
    """Hodges–Lehmann shift of ``b`` over ``a`` with its distribution-free (Moses) interval."""

    estimate: float
    low: float
    high: float
    confidence: float
    exact_confidence_reached: bool
    # What the interval really covers: below ``confidence`` when too few points exist for the
    # asked-for level, and the interval is the widest one the data has (the extreme points).
    reached: float = float("nan")

    def widened(self, half: float) -> Shift:
        """At least ``half`` either side of the estimate: a noise term this data cannot show."""
        return Shift(
            self.estimate,
            min(self.low, self.estimate - half),
            max(self.high, self.estimate + half),
            self.confidence,
            self.exact_confidence_reached,
            self.reached,
        )


def shift_interval(a: np.ndarray, b: np.ndarray, confidence: float = 0.95) -> Shift:
    """Two-sample location shift b - a: the median of all pairwise differences, and the interval
    between the K-th smallest and K-th largest of them, K from the Mann–Whitney null distribution
    (normal approximation). Valid for any continuous distribution of equal shape; used on log
    round medians, so the shift is a log ratio.
    """
    from scipy.stats import norm

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    m, n = a.size, b.size
    if m == 0 or n == 0:
        raise ValueError("shift_interval needs samples on both sides")
    differences = np.sort((b[None, :] - a[:, None]).ravel())
    estimate = float(np.median(differences))
    z = float(norm.ppf(1 - (1 - confidence) / 2))
    sd = float(np.sqrt(m * n * (m + n + 1) / 12))
    k = int(np.floor(m * n / 2 - z * sd))
    reached = k >= 1
    k = max(k, 1)
    return Shift(
        estimate=estimate,
        low=float(differences[k - 1]),
        high=float(differences[-k]),
        confidence=confidence,
        exact_confidence_reached=reached,
        reached=confidence if reached else _reached(m * n / 2 - 1, sd),
    )


def slower_p_value(current_ns: Sequence[int], baseline_ns: Sequence[int]) -> float:
    """One-sided Mann–Whitney U p-value that current samples are slower than the baseline's.

    Informational: raw samples within a run are not independent across runs, so this p-value is
    smaller than the evidence warrants; verdicts are decided on round medians instead.
    """
    from scipy.stats import mannwhitneyu

    if len(current_ns) == 0 or len(baseline_ns) == 0:
        return float("nan")
    return float(mannwhitneyu(current_ns, baseline_ns, alternative="greater").pvalue)


def paired_shift_interval(differences: np.ndarray, confidence: float = 0.95) -> Shift:
    """One-sample Hodges–Lehmann estimate (median of Walsh averages) of paired differences, with
    the distribution-free interval from the Wilcoxon signed-rank null distribution (normal
    approximation). Used on per-pair log ratios of interleaved A/B rounds."""
    from scipy.stats import norm

    d = np.asarray(differences, dtype=np.float64)
    n = d.size
    if n == 0:
        raise ValueError("paired_shift_interval needs at least one pair")
    i, j = np.triu_indices(n)
    walsh = np.sort((d[i] + d[j]) / 2)
    estimate = float(np.median(walsh))
    z = float(norm.ppf(1 - (1 - confidence) / 2))
    sd = float(np.sqrt(n * (n + 1) * (2 * n + 1) / 24))
    k = int(np.floor(n * (n + 1) / 4 - z * sd))
    reached = k >= 1
    k = max(k, 1)
    return Shift(
        estimate,
        float(walsh[k - 1]),
        float(walsh[-k]),
        confidence,
        reached,
        confidence if reached else _reached(n * (n + 1) / 4 - 1, sd),
    )


@dataclass(frozen=True)
class WorkerSpread:
    """How far the speeds of the worker processes behind a paired measurement scatter."""

    # The standard error that the processes' own offsets add to the mean log ratio, and the
    # degrees of freedom it was estimated with.
    error: float
    df: float
    a_workers: int
    b_workers: int

    def half_width(self, confidence: float) -> float:
        from scipy.stats import t

        return float(t.ppf(1 - (1 - confidence) / 2, self.df)) * self.error


def worker_spread(
    differences: Sequence[float] | np.ndarray, workers: Sequence[Sequence[int]]
) -> WorkerSpread | None:
    """The error that the worker processes' own offsets add to paired log ratios.

    A process has a speed of its own, for its life (measured here: about 1 % between two
    fresh processes of one ONNX Runtime, a model and core placement alike): rounds paired inside
    one pair of processes cancel drift but carry that pair's offset whole, however many pairs
    are timed. With several workers per side, pair ``k`` ran on A's worker ``workers[k][0]``
    and B's ``workers[k][1]``; each worker's level is the median log ratio of its pairs (every
    worker meets the other side's alike, so their offsets average out of it). The mean log
    ratio carries ``sqrt(v_a / m_a + v_b / m_b)``, ``v`` the variance of a side's levels, on
    Welch–Satterthwaite's degrees of freedom: the two sides are two stacks, whose processes
    need not scatter alike. A side with one worker is taken to scatter as the other does (its
    one offset is still in the error; the degrees of freedom are the other side's). Each level
    also holds its pairs' own noise, so this errs wide. None when neither side had two workers
    (one process each: the pairs' interval is all there is).
    """
    sides = []
    for levels in _worker_levels(differences, workers).levels:
        sides.append((int(levels.size), float(levels.var(ddof=1)) if levels.size > 1 else None))
    known = [(m, v) for m, v in sides if v is not None]
    if not known:
        return None
    if len(known) == 1:
        (m_known, v), (m_a, _), (m_b, _) = known[0], *sides
        return WorkerSpread(float(np.sqrt(v * (1 / m_a + 1 / m_b))), m_known - 1, m_a, m_b)
    (m_a, v_a), (m_b, v_b) = sides
    assert v_a is not None and v_b is not None
    parts = (v_a / m_a, v_b / m_b)
    error = float(np.sqrt(sum(parts)))
    if error == 0:
        return WorkerSpread(0.0, m_a + m_b - 2, m_a, m_b)
    df = sum(parts) ** 2 / (parts[0] ** 2 / (m_a - 1) + parts[1] ** 2 / (m_b - 1))
    return WorkerSpread(error, df, m_a, m_b)


@dataclass(frozen=True)
class _Levels:
    keys: list[np.ndarray]  # per side, the workers' numbers
    levels: list[np.ndarray]  # per side, each worker's median log ratio
    members: list[list[np.ndarray]]  # per side, each worker's pairs (boolean masks)
    noise: float  # the pairs' own spread about what their two workers' levels predict


def _worker_levels(
    differences: Sequence[float] | np.ndarray, workers: Sequence[Sequence[int]]
) -> _Levels:
    d = np.asarray(differences, dtype=np.float64)
    labels = np.asarray(workers, dtype=np.int64).reshape(-1, 2)
    if labels.shape[0] != d.size:
        raise ValueError("paired workers: one (a, b) worker pair per difference is needed")
    keys = [np.unique(labels[:, side]) for side in (0, 1)]
    members = [[labels[:, side] == k for k in keys[side]] for side in (0, 1)]
    levels = [np.array([np.median(d[mask]) for mask in side]) for side in members]
    centre = float(np.median(d)) if d.size else 0.0
    fitted = np.full(d.size, centre)
    for side_levels, side in zip(levels, members, strict=True):
        for level, mask in zip(side_levels, side, strict=True):
            fitted[mask] += level - centre
    # Fitting a level per worker took that many degrees of freedom from the residuals.
    fitted_levels = sum(side.size for side in levels) - 1
    noise = robust_sd(d - fitted) * math.sqrt(d.size / max(1, d.size - fitted_levels))
    return _Levels(keys, levels, members, noise)


def outlying_workers(
    differences: Sequence[float] | np.ndarray,
    workers: Sequence[Sequence[int]],
    threshold: float,
) -> list[tuple[int, int, float]]:
    """Workers whose own speed stands apart from their side's others: ``(side, worker, how
    far)``, side 0 for A and 1 for B, the distance as a log ratio.

    Most processes of one stack run within about 1 % of each other, but now and then one runs
    4 to 30 % slower for its life (measured across stacks here, on fresh instances every pair:
    6 of 14 sessions of 4 + 4 or 5 + 5 workers had one). Its spread is honest but wide, on few
    degrees of freedom: the interval at T = 5 % could not exclude T/2 (measured: ±4 to ±9 %
    where ±1 % was usual). Such a worker is replaced by a fresh process and its pairs are timed
    again, as a lab sets a faulty instrument aside. Either side's may be, so the estimate stays
    centred while both stacks make such processes alike; a stack that makes more of them is
    judged by its typical process (the verdict names every replacement).

    Apart means beyond half the threshold (a smaller offset cannot cost the decision much) and
    beyond four times the workers' usual scatter from the median of its side's others: the
    scatter of all levels about their side's median (robust, so the one apart does not set it),
    or what the worker's own pairs' noise gives its level when that is more. A side needs
    three workers to say which one is apart.
    """
    found = _worker_levels(differences, workers)
    sides = [side for side in found.levels if side.size >= 2]
    usual = robust_sd(np.concatenate([side - np.median(side) for side in sides])) if sides else 0.0
    apart = []
    for side, (side_levels, side_members) in enumerate(
        zip(found.levels, found.members, strict=True)
    ):
        if side_levels.size < 3:
            continue
        for index, (level, mask) in enumerate(zip(side_levels, side_members, strict=True)):
            others = float(np.median(np.delete(side_levels, index)))
            sampling = math.sqrt(math.pi / 2 / max(1, int(mask.sum()))) * found.noise
            if abs(level - others) > max(threshold / 2, 4 * max(usual, sampling)):
                apart.append((side, int(found.keys[side][index]), float(level - others)))
    return apart


def _reached(distance: float, sd: float) -> float:
    """The two-sided confidence of the extreme-point interval, by the same normal approximation
    that chose the index: what a clamped interval really covers."""
    from scipy.stats import norm

    if sd <= 0:
        return 0.0
    return float(max(0.0, 2 * norm.cdf(distance / sd) - 1))


def slower_paired_p_value(differences: np.ndarray) -> float:
    """One-sided Wilcoxon signed-rank p-value that the paired log ratios are above zero."""
    from scipy.stats import wilcoxon

    d = np.asarray(differences, dtype=np.float64)
    if d.size == 0 or not np.any(d):
        return float("nan")
    return float(wilcoxon(d, alternative="greater").pvalue)


@dataclass(frozen=True)
class StepChange:
    """A lasting shift in a series of stored medians, found at ``index`` (first point after)."""

    index: int
    before: float  # median of the window before
    after: float  # median of the window after
    p_value: float

    @property
    def change(self) -> float:
        return self.after / self.before - 1 if self.before else float("nan")


def step_changes(
    values: Sequence[float], window: int = 8, alpha: float = 0.001
) -> list[StepChange]:
    """Step changes by a windowed two-sided Mann–Whitney test at each split point.

    A split is reported when the ``window`` values before and after it differ at p <= alpha,
    keeping the split with the smallest p in each run of consecutive significant splits. One
    comparison against a baseline misses a slow creep of 1 % a week; the history shows it as
    a step once enough runs are stored on both sides (with window 8, 16 runs around it).
    """
    from math import comb

    from scipy.stats import mannwhitneyu

    if 2 / comb(2 * window, window) > alpha:
        raise ValueError(
            f"a window of {window} runs can never reach p <= {alpha:g}; use a larger window"
        )
    series = np.asarray(values, dtype=np.float64)
    candidates: list[StepChange] = []
    for index in range(window, series.size - window + 1):
        before, after = series[index - window : index], series[index : index + window]
        p = float(mannwhitneyu(before, after, alternative="two-sided").pvalue)
        if p <= alpha:
            candidates.append(
                StepChange(index, float(np.median(before)), float(np.median(after)), p)
            )
    changes: list[StepChange] = []
    for candidate in candidates:
        if changes and candidate.index - changes[-1].index < window:
            # Exact p-values saturate at full separation: then the larger jump marks the step.
            key = (round(candidate.p_value, 12), -abs(np.log(candidate.after / candidate.before)))
            best = changes[-1]
            if key < (round(best.p_value, 12), -abs(np.log(best.after / best.before))):
                changes[-1] = candidate
            continue
        changes.append(candidate)
    return changes


# Comparable stored runs an item needs before its run-to-run noise is estimated at all.
MIN_NOISE_RUNS = 5


def between_run_noise(medians: Sequence[float]) -> float | None:
    """Robust relative spread of an item's medians across stored runs; None with fewer than
    MIN_NOISE_RUNS."""
    values = np.asarray(medians, dtype=np.float64)
    if values.size < MIN_NOISE_RUNS:
        return None
    return float(np.expm1(robust_sd(np.log(values))))

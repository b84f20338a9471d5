"""Summaries of timing samples. Pure numbers: no I/O, no framework, tested on arrays directly."""

from __future__ import annotations

from collections.abc import Sequence

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

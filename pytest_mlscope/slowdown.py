"""A calibrated slowdown, injected to check that a regression gate catches what it should.

``--mlscope-inject-slowdown 0.05`` makes every timed call do about 5 % more work: plain CPU work
after the model call, sized from the model's own median latency, never a sleep (a sleep frees the
CPU and behaves unlike a slower kernel under load). It exists for self-tests of a CI gate and for
``benchmarks/verdicts.py``; the accuracy pass is never slowed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

CALIBRATION_CALLS = 30
CALIBRATION_SPIN = 200_000


def spin(iterations: int) -> int:
    total = 0
    for i in range(iterations):
        total += i
    return total


def _spin_rate() -> float:
    """Spin iterations per second on this machine, now (median of a few short bursts)."""
    rates = []
    for _ in range(5):
        before = time.perf_counter()
        spin(CALIBRATION_SPIN)
        rates.append(CALIBRATION_SPIN / (time.perf_counter() - before))
    return statistics.median(rates)


def slowed(call: Callable[[Any], Any], example: Any, fraction: float) -> Callable[[Any], Any]:
    """``call`` followed by spinning for ``fraction`` of its median latency."""
    if fraction <= 0:
        return call
    for _ in range(CALIBRATION_CALLS):  # warm-up: the first calls of a fresh model are slow,
        call(example)  # and sizing the spin from them over-delivers the slowdown
    latencies = []
    for _ in range(CALIBRATION_CALLS):
        before = time.perf_counter()
        call(example)
        latencies.append(time.perf_counter() - before)
    iterations = max(1, round(fraction * statistics.median(latencies) * _spin_rate()))

    def slower(prepared: Any) -> Any:
        output = call(prepared)
        spin(iterations)
        return output

    return slower

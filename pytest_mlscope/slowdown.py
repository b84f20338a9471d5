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
SPIN_CORRECTIONS = 2
SPIN_TIMING_S = 0.02  # each correction times the spin for at least this long
CALLGRIND_SPIN = 2_000
CALLGRIND_CORRECTIONS = 2


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


def slowed(
    call: Callable[[Any], Any], example: Any, fraction: float, metric: str = "time"
) -> Callable[[Any], Any]:
    """``call`` followed by spinning for ``fraction`` of the time the call itself just took.

    Proportional to each call, not to a latency measured once: a model whose latency moves (a
    CPU's frequency, a thread pool's mode) would otherwise be slowed by a fixed amount that is a
    different fraction of it by the time it is measured. The wrapper itself (two clock reads,
    a spin call) costs about 1 µs; an interleaved A beside it pays the same (:func:`matched`).

    With ``metric="instructions"`` (a worker under callgrind) the spin is sized in instructions
    instead: ``fraction`` of the instructions one call executes, so the injected slowdown is exact
    in the unit that is measured.
    """
    if fraction <= 0:
        return call
    if metric == "instructions":
        return _slowed_by_count(call, example, fraction)
    for _ in range(CALIBRATION_CALLS):  # warm-up: the first calls of a fresh model are slow,
        call(example)  # and sizing the spin from them over-delivers the slowdown
    latencies = []
    for _ in range(CALIBRATION_CALLS):
        before = time.perf_counter()
        call(example)
        latencies.append(time.perf_counter() - before)
    target_s = fraction * statistics.median(latencies)
    iterations = max(1, round(target_s * _spin_rate()))
    for _ in range(SPIN_CORRECTIONS):  # a short spin costs less per iteration than the long
        iterations = max(1, round(iterations * target_s / _spin_seconds(iterations)))  # bursts

    rate = iterations / target_s  # spin iterations per second, at about the length it runs
    clock = time.perf_counter

    def slower(prepared: Any) -> Any:
        before = clock()
        output = call(prepared)
        spin(round(fraction * (clock() - before) * rate))
        return output

    return slower


def matched(call: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``call`` inside the same wrapper :func:`slowed` puts around the slowed side, adding no
    work: the unslowed side of an interleaved measurement pays the wrapper's own cost too (two
    clock reads and a spin call, about 1 µs: 0.7 % of a 0.15 ms model), so the difference the gate
    measures is the injected work alone, not the injected work plus the wrapper."""
    clock = time.perf_counter

    def same(prepared: Any) -> Any:
        before = clock()
        output = call(prepared)
        spin(round(0.0 * (clock() - before)))
        return output

    return same


def _spin_seconds(iterations: int) -> float:
    """What one spin of exactly ``iterations`` costs now: the median of a few batches, each long
    enough for the clock. Sized at the length it will run, because a spin's integers below 257
    are cached and a short one runs faster per iteration than the calibration's long bursts."""
    repeats = 1
    while True:
        before = time.perf_counter()
        for _ in range(repeats):
            spin(iterations)
        if time.perf_counter() - before >= SPIN_TIMING_S / 5 or repeats >= 1 << 20:
            break
        repeats *= 2
    batches = []
    for _ in range(5):
        before = time.perf_counter()
        for _ in range(repeats):
            spin(iterations)
        batches.append((time.perf_counter() - before) / repeats)
    return statistics.median(batches)


def _slowed_by_count(
    call: Callable[[Any], Any], example: Any, fraction: float
) -> Callable[[Any], Any]:
    """Spin sized in instructions: estimated from two spin lengths, then corrected twice on the
    slowed call itself (a short spin costs more per iteration than a long one: the call's own
    cost, and integers small enough to be cached)."""
    from pytest_mlscope.callgrind import SETTLE_ROUNDS, count_calls, count_one

    def count(function: Callable[[Any], Any], rounds: int = 1, settle: int = 1) -> float:
        return statistics.median(count_calls(function, [example], rounds, settle_rounds=settle))

    def with_spin(iterations: int) -> Callable[[Any], Any]:
        def slower(prepared: Any) -> Any:
            output = call(prepared)
            spin(iterations)
            return output

        return slower

    per_call = count(call, rounds=2, settle=SETTLE_ROUNDS)  # a fresh process's first count high
    short = count_one(lambda: spin(CALLGRIND_SPIN))
    long = count_one(lambda: spin(2 * CALLGRIND_SPIN))
    wanted = fraction * per_call
    iterations = max(1, round(wanted * CALLGRIND_SPIN / (long - short)))
    for _ in range(CALLGRIND_CORRECTIONS):
        added = count(with_spin(iterations)) - per_call
        if added <= 0:
            break
        iterations = max(1, round(iterations * wanted / added))
    return with_spin(iterations)

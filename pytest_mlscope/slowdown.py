"""An exact slowdown, injected to check that a regression gate catches what it should.

``--mlscope-inject-slowdown 0.05`` makes every timed call take 5 % longer: after the model call,
the worker busy-waits on the clock for 5 % of the time that call just took. It is CPU work, never
a sleep (a sleep frees the CPU and behaves unlike a slower kernel under load), and it is exact in
the unit the gate measures: a spin of a fixed number of iterations sized by a calibration
delivered anywhere from half to three times the asked fraction from one process to the next (the
spin's speed moves with the CPU's state), which made "a slowdown of T/2" a slowdown of T in some
repetitions. It exists for self-tests of a CI gate and for ``benchmarks/verdicts.py``; the
accuracy pass is never slowed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

CALLGRIND_SPIN = 2_000
CALLGRIND_CORRECTIONS = 2


def spin(iterations: int) -> int:
    total = 0
    for i in range(iterations):
        total += i
    return total


def slowed(
    call: Callable[[Any], Any], example: Any, fraction: float, metric: str = "time"
) -> Callable[[Any], Any]:
    """``call`` followed by busy-waiting for ``fraction`` of the time the call itself just took.

    Proportional to each call, not to a latency measured once: a model whose latency moves (a
    CPU's frequency, a thread pool's mode) is still slowed by the same fraction. The wait ends at
    most one clock read (tens of ns) late; the wrapper's own cost (three clock reads) is paid by
    an interleaved A beside it too (:func:`matched`).

    With ``metric="instructions"`` (a worker under callgrind, where a clock means nothing) the
    spin is sized in instructions instead: ``fraction`` of the instructions one call executes,
    so the injected slowdown is exact in the unit that is measured.
    """
    if fraction <= 0:
        return call
    if metric == "instructions":
        return _slowed_by_count(call, example, fraction)
    return _waiting(call, fraction)


def matched(call: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``call`` inside the same wrapper :func:`slowed` puts around the slowed side, adding no
    work: the unslowed side of an interleaved measurement pays the wrapper's own cost too (a few
    clock reads, about 0.3 µs: 0.2 % of a 0.15 ms model), so the difference the gate measures is
    the injected work alone, not the injected work plus the wrapper."""
    return _waiting(call, 0.0)


def _waiting(call: Callable[[Any], Any], fraction: float) -> Callable[[Any], Any]:
    clock = time.perf_counter

    def slower(prepared: Any) -> Any:
        before = clock()
        output = call(prepared)
        after = clock()
        until = after + fraction * (after - before)
        while clock() < until:
            pass
        return output

    return slower


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

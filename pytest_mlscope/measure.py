"""The timing loop and the scenarios built on it.

Timings are taken here, inside the worker, around the predictor call alone: no IPC, no
preprocessing and no bookkeeping beyond one clock read and one list append sit inside a sample.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from pytest_mlscope.protocol import MeasureOptions

T = TypeVar("T")


@dataclass(frozen=True)
class Timing:
    samples_ns: list[int]
    total_s: float
    stopped_by: str  # "target" (count and duration met) or "max_duration"


def time_calls(call: Callable[[T], object], inputs: Sequence[T], options: MeasureOptions) -> Timing:
    """Warm up, then sample until BOTH min_count and min_duration_s are met, or max_duration_s.

    Both floors matter: a count floor alone lets a fast model finish in microseconds, dominated by
    one scheduler hiccup; a duration floor alone gives a slow model two samples. ``inputs`` are
    handed out round-robin, picked before the clock is read so the pick is not timed.
    """
    if not inputs:
        raise ValueError("time_calls needs at least one input")
    count = len(inputs)
    for i in range(options.warmup):
        call(inputs[i % count])
    clock = time.perf_counter_ns
    min_count = options.min_count
    min_ns = int(options.min_duration_s * 1e9)
    max_ns = int(options.max_duration_s * 1e9)
    samples: list[int] = []
    append = samples.append
    index = 0
    start = clock()
    while True:
        item = inputs[index]
        index = index + 1 if index + 1 < count else 0
        before = clock()
        call(item)
        after = clock()
        append(after - before)
        elapsed = after - start
        if len(samples) >= min_count and elapsed >= min_ns:
            stopped_by = "target"
            break
        if elapsed >= max_ns:
            stopped_by = "max_duration"
            break
    return Timing(samples, (clock() - start) / 1e9, stopped_by)

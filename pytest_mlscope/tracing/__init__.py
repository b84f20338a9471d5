"""Traces: a separate profiling pass after the timing pass, per-framework profilers turned into one
layer table, and one Chrome/Perfetto timeline per item.

Levels follow MLModelScope and nest: each includes the ones before it.

- ``model``: pipeline spans (load, preprocess, accuracy pass, timing pass, profiled predictions),
  through OpenTelemetry;
- ``framework``: layers and ops as the framework sees them, and the layer table;
- ``library``: the primitives under them (aten ops and oneDNN/MLAS calls on CPU, CUDA kernels);
- ``system``: telemetry counters (CPU %, RSS; GPU through NVML when there is one);
- ``full``: all of the above.

Nothing here runs during the timing pass: the profiling pass starts after it has finished.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from pytest_mlscope.vocabulary import TRACE_LEVELS, TraceLevel


def includes(level: str, wanted: TraceLevel) -> bool:
    """Whether tracing at ``level`` records what ``wanted`` adds (levels nest)."""
    return TRACE_LEVELS.index(level) >= TRACE_LEVELS.index(wanted)  # type: ignore[arg-type]


# A profiled model of a few µs is over in a few hundred µs at the requested iterations: a single
# preemption then moves the table by tens of per cent, and a profiler with 1 µs timestamps
# (ONNX Runtime's) rounds each node by as much as it runs. Repeating until a quarter of a second
# has passed averages both out; the timeline still shows only the requested iterations.
MIN_PROFILE_S = 0.25
MAX_REPETITIONS = 5000


def repetitions(
    iterations: int, min_seconds: float = MIN_PROFILE_S, limit: int = MAX_REPETITIONS
) -> Iterator[int]:
    """0, 1, … until ``iterations`` have run and ``min_seconds`` have passed (or ``limit`` ran)."""
    deadline = time.perf_counter() + min_seconds
    count = 0
    while count < iterations or (time.perf_counter() < deadline and count < limit):
        yield count
        count += 1


def timed_runs(
    call: Callable[[Any], Any],
    argument: Any,
    iterations: int,
    limit: int = MAX_REPETITIONS,
    *,
    warm: bool = True,
) -> list[tuple[int, int]]:
    """(start, end) in ns of each call for ``repetitions(iterations)``, after one warm call
    unless the caller warmed up already (a warm call inside a profiler's window is one more
    prediction in its events than there are spans)."""
    clock = time.perf_counter_ns
    if warm:
        call(argument)
    spans = []
    for _ in repetitions(iterations, limit=limit):
        start = clock()
        call(argument)
        spans.append((start, clock()))
    return spans


def plain_times(call: Callable[[Any], Any], argument: Any, iterations: int) -> list[float]:
    """Uninstrumented predictions (µs): what a layer table adds up to."""
    return [(end - start) / 1e3 for start, end in timed_runs(call, argument, iterations)]

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

from typing import Literal

TraceLevel = Literal["none", "model", "framework", "library", "system", "full"]
TRACE_LEVELS: tuple[TraceLevel, ...] = ("none", "model", "framework", "library", "system", "full")


def includes(level: str, wanted: TraceLevel) -> bool:
    """Whether tracing at ``level`` records what ``wanted`` adds (levels nest)."""
    return TRACE_LEVELS.index(level) >= TRACE_LEVELS.index(wanted)  # type: ignore[arg-type]

"""One timeline per item: pipeline spans, framework and library events, telemetry counters, all on
the worker's ``perf_counter`` clock, written as a Chrome Trace Event file (Perfetto opens it).

Every source keeps its own clock; each is mapped onto ours by an anchor both sides saw (the start
of a prediction we timed and the profiler recorded), so nesting holds across sources: a kernel
lies inside its layer, a layer inside its prediction, a prediction inside the profiling pass.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PID = 1
TRACKS = {"pipeline": 1, "framework": 2, "library": 3}
TRACK_NAMES = {
    1: "pipeline (OpenTelemetry spans)",
    2: "framework: layers",
    3: "library: ops and kernels",
}


def now_us() -> float:
    return time.perf_counter_ns() / 1e3


class Timeline:
    """Chrome trace events collected for one item, in µs on the perf_counter clock."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[dict[str, Any]] = []
        self.extra_tracks: dict[int, str] = {}

    def complete(
        self,
        name: str,
        start_us: float,
        dur_us: float,
        track: str | int,
        category: str,
        args: dict[str, Any] | None = None,
    ) -> None:
        tid = TRACKS[track] if isinstance(track, str) else track
        event: dict[str, Any] = {
            "name": name,
            "cat": category,
            "ph": "X",
            "ts": round(start_us, 3),
            "dur": round(max(dur_us, 0.0), 3),
            "pid": PID,
            "tid": tid,
        }
        if args:
            event["args"] = args
        self.events.append(event)

    def counter(self, name: str, ts_us: float, values: dict[str, float]) -> None:
        self.events.append(
            {
                "name": name,
                "cat": "system",
                "ph": "C",
                "ts": round(ts_us, 3),
                "pid": PID,
                "args": values,
            }
        )

    def write(self, path: Path) -> Path:
        """The file, with process and track names; timestamps shifted so the item starts at 0."""
        timed = [e for e in self.events if "ts" in e]
        origin = min((e["ts"] for e in timed), default=0.0)
        events = []
        for event in timed:
            events.append({**event, "ts": round(event["ts"] - origin, 3)})
        events.sort(key=lambda e: (e["ts"], -e.get("dur", 0)))
        meta: list[dict[str, Any]] = [
            {"name": "process_name", "ph": "M", "pid": PID, "tid": 0, "args": {"name": self.name}}
        ]
        for tid, label in {**TRACK_NAMES, **self.extra_tracks}.items():
            meta.append(
                {"name": "thread_name", "ph": "M", "pid": PID, "tid": tid, "args": {"name": label}}
            )
            meta.append(
                {
                    "name": "thread_sort_index",
                    "ph": "M",
                    "pid": PID,
                    "tid": tid,
                    "args": {"sort_index": tid},
                }
            )
        document = {
            "traceEvents": meta + events,
            "displayTimeUnit": "ms",
            "otherData": {
                "producer": "pytest-mlscope",
                "clock": "perf_counter, µs from item start",
            },
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(document))
        os.replace(tmp, path)
        return path


# -- pipeline spans (OpenTelemetry) ----------------------------------------------------------------


class Spans:
    """OpenTelemetry spans for the pipeline stages, copied into the timeline at the end.

    Spans are kept in memory (and also exported to ``$OTEL_EXPORTER_OTLP_ENDPOINT`` when it is set
    and the OTLP exporter is installed); their wall-clock times are mapped onto perf_counter by
    one offset taken when this object is made.
    """

    def __init__(self, service: str, enabled: bool) -> None:
        self.enabled = enabled
        self.notes: list[str] = []
        self._offset_ns = time.time_ns() - time.perf_counter_ns()
        if not enabled:
            return
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        self._memory = InMemorySpanExporter()
        self._provider = TracerProvider(resource=Resource.create({"service.name": service}))
        self._provider.add_span_processor(SimpleSpanProcessor(self._memory))
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
                from opentelemetry.sdk.trace.export import BatchSpanProcessor
            except ImportError:
                self.notes.append(
                    "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter is not installed "
                    "(pip install 'pytest-mlscope[otlp]'); spans went to the trace file only"
                )
            else:
                self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self._tracer = self._provider.get_tracer("pytest_mlscope")

    @contextmanager
    def span(self, name: str, **attributes: Any) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        with self._tracer.start_as_current_span(name, attributes=attributes):
            yield

    def into(self, timeline: Timeline) -> None:
        if not self.enabled:
            return
        self._provider.force_flush()
        for span in self._memory.get_finished_spans():
            start = (span.start_time - self._offset_ns) / 1e3
            end = (span.end_time - self._offset_ns) / 1e3
            args = {k: v for k, v in (span.attributes or {}).items()}
            args["span_id"] = f"{span.context.span_id:016x}"
            if span.parent is not None:
                args["parent_span_id"] = f"{span.parent.span_id:016x}"
            timeline.complete(span.name, start, end - start, "pipeline", "pipeline", args)

    def close(self) -> None:
        """Flush to the OTLP endpoint, if any, and stop the exporter's thread."""
        if self.enabled:
            self._provider.shutdown()
            self.enabled = False


# -- telemetry -------------------------------------------------------------------------------------


class Telemetry:
    """Samples this process's CPU % and RSS (and the machine's CPU %) every ``interval_s``.

    A thread of its own, started for the profiling pass only: it never runs while the timing pass
    does. On a GPU host NVML adds utilization and memory (pynvml, when installed).
    """

    def __init__(self, interval_s: float = 0.005) -> None:
        import psutil

        self.interval_s = interval_s
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._process = psutil.Process()
        self._gpus = _nvml_handles()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlscope-telemetry", daemon=True)

    def _run(self) -> None:
        import psutil

        self._process.cpu_percent(None)
        psutil.cpu_percent(None)
        while not self._stop.wait(self.interval_s):
            memory = self._process.memory_info()
            values = {
                "process_cpu_percent": self._process.cpu_percent(None),
                "system_cpu_percent": psutil.cpu_percent(None),
                "rss_mb": memory.rss / 2**20,
            }
            values.update(_nvml_sample(self._gpus))
            self.samples.append((now_us(), values))

    def __enter__(self) -> Telemetry:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def into(self, timeline: Timeline) -> None:
        for ts, values in self.samples:
            timeline.counter("cpu", ts, {k: v for k, v in values.items() if k.endswith("percent")})
            timeline.counter("memory", ts, {"rss_mb": values["rss_mb"]})
            gpu = {k: v for k, v in values.items() if k.startswith("gpu")}
            if gpu:
                timeline.counter("gpu", ts, gpu)


def _nvml_handles() -> list[Any]:
    """NVML device handles, or none: no nvidia-ml-py, no driver, or no GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # ImportError, or NVMLError on a host without the driver
        return []


def _nvml_sample(handles: list[Any]) -> dict[str, float]:
    if not handles:
        return {}
    import pynvml

    values = {}
    for index, handle in enumerate(handles):
        utilization = pynvml.nvmlDeviceGetUtilizationRates(handle)
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        values[f"gpu{index}_util_percent"] = float(utilization.gpu)
        values[f"gpu{index}_memory_mb"] = memory.used / 2**20
    return values

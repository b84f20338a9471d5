"""Checks that a trace file is what Perfetto and chrome://tracing expect, and that its sources
share one clock.

Perfetto's own trace processor needs a native binary that its PyPI package downloads on first
use; with no internet on our CI machines, these checks stand in for it: a JSON schema of the
Trace Event Format (the subset we write), then structure — complete events on one track either
nest or are disjoint, and every profiler event lies inside the profiling pass's span, which only
holds if the pipeline spans (OpenTelemetry, wall clock) and the profilers' events (their own
clocks) were mapped onto one clock correctly.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["traceEvents"],
    "properties": {
        "displayTimeUnit": {"enum": ["ms", "ns"]},
        "otherData": {"type": "object"},
        "traceEvents": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["ph", "pid", "name"],
                "properties": {
                    "name": {"type": "string"},
                    "cat": {"type": "string"},
                    "ph": {"enum": ["X", "C", "M", "B", "E", "i", "I"]},
                    "ts": {"type": "number", "minimum": 0},
                    "dur": {"type": "number", "minimum": 0},
                    "pid": {"type": "integer"},
                    "tid": {"type": "integer"},
                    "args": {"type": "object"},
                },
                "allOf": [
                    {
                        "if": {"properties": {"ph": {"const": "X"}}},
                        "then": {"required": ["ts", "dur", "tid"]},
                    },
                    {
                        "if": {"properties": {"ph": {"const": "C"}}},
                        "then": {
                            "required": ["ts", "args"],
                            "properties": {"args": {"additionalProperties": {"type": "number"}}},
                        },
                    },
                ],
            },
        },
    },
}

# Rounding to 0.001 µs and clock-mapping jitter: an event may overhang its parent by this much.
SLACK_US = 1.0


def schema_problems(document: Any) -> list[str]:
    """The JSON schema check (jsonschema, when installed; else the structural checks only)."""
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - a dev dependency
        return []
    validator = jsonschema.Draft202012Validator(EVENT_SCHEMA)
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def structure_problems(document: dict[str, Any]) -> list[str]:
    """Nesting per track, and every framework/library event inside the profiling pass."""
    problems: list[str] = []
    complete = [e for e in document.get("traceEvents", []) if e.get("ph") == "X"]
    by_track: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for event in complete:
        by_track[(event["pid"], event["tid"])].append(event)
    for track, events in by_track.items():
        events.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack: list[dict[str, Any]] = []
        for event in events:
            while stack and stack[-1]["ts"] + stack[-1]["dur"] <= event["ts"] + SLACK_US / 2:
                stack.pop()
            if stack:
                parent = stack[-1]
                if event["ts"] + event["dur"] > parent["ts"] + parent["dur"] + SLACK_US:
                    problems.append(
                        f"track {track}: {event['name']!r} at {event['ts']} overlaps "
                        f"{parent['name']!r} without nesting in it"
                    )
                    continue
            stack.append(event)
    passes = [e for e in complete if e.get("cat") == "pipeline" and e["name"] == "profiling pass"]
    profiled = [e for e in complete if e.get("cat") != "pipeline"]
    if profiled and not passes:
        problems.append("profiler events but no 'profiling pass' span")
    for event in profiled:
        if not _inside_any(event, passes):
            problems.append(
                f"{event.get('cat')} event {event['name']!r} at {event['ts']} lies outside the "
                "profiling pass: its clock was not mapped onto the pipeline's"
            )
    steps = [e for e in complete if e.get("cat") == "framework"]
    for event in (e for e in complete if e.get("cat") == "layer"):
        if not _inside_any(event, steps):
            problems.append(
                f"layer {event['name']!r} at {event['ts']} lies outside every prediction"
            )
    return problems


def _inside_any(event: dict[str, Any], spans: list[dict[str, Any]]) -> bool:
    return any(
        span["ts"] - SLACK_US <= event["ts"]
        and event["ts"] + event["dur"] <= span["ts"] + span["dur"] + SLACK_US
        for span in spans
    )


def trace_problems(document: Any) -> list[str]:
    problems = schema_problems(document)
    if problems or not isinstance(document, dict):
        return problems or ["not a JSON object"]
    return structure_problems(document)

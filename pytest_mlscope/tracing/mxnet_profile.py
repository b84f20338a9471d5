"""MXNet: operator events from ``mxnet.profiler``, on a copy of the network that runs unbulked.

A hybridized Gluon network runs as one cached graph, and MXNet's engine bundles an inference
graph's operators into bulks: its profiler then records one ``ImperativeBulk`` event per
prediction, not one per operator. ``MXNET_EXEC_BULK_EXEC_INFERENCE=0`` turns bulking off, and a
cached graph reads it when it is built, so the profiling pass builds a second network from the
same weights with it off (the timed one is never touched) and profiles that. Its events carry
only the operator (``Convolution``), not the node, but a cached graph of a sequential network runs
its operators in the network's order, one per Gluon block: the n-th operator of a prediction is
the n-th block, named by the torch name the zoo gave it (``features.3``). A network whose
operators do not line up with its blocks gets no table, and a note says why.
"""

from __future__ import annotations

import atexit
import json
import os
import statistics
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scipy.stats import trim_mean

from pytest_mlscope.protocol import LayerProfile, LayerRow
from pytest_mlscope.tracing import plain_times, timed_runs
from pytest_mlscope.tracing.layers import other_row
from pytest_mlscope.tracing.timeline import Timeline

BULK_ENV = "MXNET_EXEC_BULK_EXEC_INFERENCE"
MAX_RUNS = 500  # the dump holds every event of the worker's life: keep each pass's share small
_DUMPS: list[Path] = []
# What the engine records beside the network's own operators.
ENGINE_EVENTS = {"WaitForVar", "WaitForAll", "DeleteVariable", "DeleteVariables", "CopyCPU2CPU"}
# The operator each Gluon block runs as, for the kernel column.
OPERATORS = {
    "Conv2D": "Convolution",
    "Dense": "FullyConnected",
    "Activation": "Activation",
    "MaxPool2D": "Pooling",
    "AvgPool2D": "Pooling",
    "Flatten": "Flatten",
}


def profile_mxnet(
    build: Callable[[], Any],
    plain_call: Callable[[Any], Any],
    prepared: Any,
    iterations: int,
    timeline: Timeline,
    layers: list[tuple[str, str]] | None = None,
) -> LayerProfile:
    """Layer rows (per inference), plain prediction times (µs) and notes.

    ``build()`` makes a fresh hybridized network from the artifact (read while bulking is off);
    ``plain_call`` runs the timed network. ``layers`` (name, operator) are an exported symbol's
    operator nodes in the graph's order; without them, the Gluon network's child blocks.
    """
    from mxnet import profiler

    plain = plain_times(plain_call, prepared, iterations)
    median_plain = statistics.median(plain)

    # The engine reads the setting when a cached graph is built and again around each call (the
    # input and output copies are bulked with the first and last operators otherwise): off for
    # the whole profiled stretch, restored after. The timing pass is over by now.
    before = os.environ.get(BULK_ENV)
    os.environ[BULK_ENV] = "0"
    path = _dump_path(profiler)
    seen_before = len(_read_dump(path)) if path.exists() else 0
    try:
        net = build()
        for _ in range(5):  # the first calls build the cached graph and allocate
            net(prepared).wait_to_read()
        profiler.set_state("run")
        try:
            ours = timed_runs(
                lambda x: net(x).wait_to_read(), prepared, iterations, MAX_RUNS, warm=False
            )
        finally:
            profiler.set_state("stop")
        profiler.dump(finished=False)
    finally:
        if before is None:
            os.environ.pop(BULK_ENV, None)
        else:
            os.environ[BULK_ENV] = before
    events = _read_dump(path)[seen_before:]

    if layers is None:
        blocks = list(net._children.values())
        names = list(getattr(net, "layer_names", [block.name for block in blocks]))
        kinds = [type(block).__name__ for block in blocks]
        expected = [OPERATORS.get(kind) for kind in kinds]
    else:
        names = [name for name, _ in layers]
        kinds = expected = [operator for _, operator in layers]
    operators = _operator_spans(events)
    if not ours or len(operators) != len(ours) * len(names):
        note = (
            f"no layer table for mxnet: {len(operators)} operator events for {len(ours)} "
            f"predictions of a {len(names)}-block network do not line up"
        )
        return [], plain, [note]
    seen = [operator for operator, _, _ in operators[: len(names)]]
    if any(want and want != got for want, got in zip(expected, seen, strict=True)):
        note = f"no layer table for mxnet: operators {seen} are not the blocks {kinds}"
        return [], plain, [note]
    per_step: list[list[float]] = []
    shown = len(ours) - iterations
    for index, (start, end) in enumerate(ours):
        run = operators[index * len(names) : (index + 1) * len(names)]
        per_step.append([finish - begin for _, begin, finish in run])
        if index < shown:
            continue
        # The profiler's clock is the wall clock in µs; each prediction's first operator is
        # placed at the start of our span around it, the rest keep their offsets from it.
        origin = run[0][1]
        timeline.complete(
            "predict", start / 1e3, (end - start) / 1e3, "framework", "framework",
            {"iteration": index - shown},
        )  # fmt: skip
        for (operator, begin, finish), name in zip(run, names, strict=True):
            timeline.complete(
                name, start / 1e3 + (begin - origin), finish - begin, "framework", "layer",
                {"op_type": operator},
            )  # fmt: skip
    rows = []
    for position, name in enumerate(names):
        # A trimmed mean, as for ONNX Runtime: the profiler's timestamps are whole µs.
        self_us = float(trim_mean([step[position] for step in per_step], 0.1))
        rows.append(
            LayerRow(
                layer=name, op_type=kinds[position], device="cpu", calls=1.0,
                self_us=self_us, total_us=self_us, kernels=[seen[position]],
            )
        )  # fmt: skip
    rows.append(other_row(rows, median_plain, "outside layers"))
    profiled = statistics.median((end - start) / 1e3 for start, end in ours)
    notes = [
        f"operator times from mxnet.profiler over {len(ours)} predictions of an unbulked copy of "
        f"the network ({BULK_ENV}=0; it took {profiled:.1f} µs a prediction, the timed one "
        f"{median_plain:.1f} µs)"
    ]
    return rows, plain, notes


def _dump_path(profiler: Any) -> Path:
    """One dump file per process, configured once. Each ``dump(finished=False)`` rewrites it
    with every event so far (configuring the profiler again leaves the next dump empty), so a
    profiling pass reads what came after the events that were there before it."""
    if not _DUMPS:
        path = Path(tempfile.gettempdir()) / f"mlscope-mxnet-profile-{os.getpid()}.json"
        # aggregate_stats=True too: without it MXNet 1.9 still records the first and the last
        # operator inside an ``ImperativeBulk`` (seen here), with it every one on its own.
        profiler.set_config(
            profile_symbolic=True, profile_imperative=True, profile_memory=False,
            profile_api=False, aggregate_stats=True, filename=str(path),
        )  # fmt: skip
        _DUMPS.append(path)
        atexit.register(lambda: path.unlink(missing_ok=True))
    return _DUMPS[0]


def _read_dump(path: Path) -> list[dict[str, Any]]:
    """The events of a dump; one written with ``finished=False`` leaves its list unclosed."""
    text = path.read_text()
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        document = json.loads(text.rstrip().rstrip(",") + "\n]\n}")
    return list(document.get("traceEvents", []))


def _operator_spans(events: list[dict[str, Any]]) -> list[tuple[str, float, float]]:
    """(operator, begin µs, end µs) of the network's operators, in the order they began.

    The profiler writes each thread's events in the order they happened, so a begin is matched
    with the next end of the same operator on its thread."""
    spans: list[tuple[str, float, float]] = []
    open_spans: dict[tuple[Any, str], list[float]] = defaultdict(list)
    for event in events:
        if event.get("cat") != "operator" or event.get("name") in ENGINE_EVENTS:
            continue
        key = (event.get("tid"), event["name"])
        if event.get("ph") == "B":
            open_spans[key].append(float(event["ts"]))
        elif event.get("ph") == "E" and open_spans[key]:
            spans.append((event["name"], open_spans[key].pop(), float(event["ts"])))
        elif event.get("ph") == "X":
            spans.append((event["name"], float(event["ts"]), float(event["ts"] + event["dur"])))
    spans.sort(key=lambda span: span[1])
    return spans

"""TensorFlow's profiler (XSpace) -> the layer table, and its ops onto the item's timeline.

The profiled predictions run a fresh copy of the timing pass's ``tf.function`` (the executor
has not yet learned which ops are too cheap to trace), inside ``tf.profiler.experimental`` with a
named step around each, after the timing pass. Every executed op is an event on the host plane
named ``<node>:<op type>``, the node carrying the Keras layer's name scope
(``digits_cnn_1/features.3_1/Relu``). Grappler fuses a convolution or matmul with its bias and
activation into one op named after the activation; such an op is put on the layer that starts the
fusion (the convolution or dense layer before it), where its work belongs and where torch's and
ONNX Runtime's tables put it.
"""

from __future__ import annotations

import re
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from pytest_mlscope.protocol import LayerProfile, LayerRow
from pytest_mlscope.tracing import includes, plain_times
from pytest_mlscope.tracing.layers import OTHER
from pytest_mlscope.tracing.timeline import Timeline

STEP = "mlscope_predict"
OP_EVENT = re.compile(r"([^:\s]+):(\w+)")
FUSED = re.compile(r"Fused(Conv|MatMul|DepthwiseConv)")
WEIGHTED = ("Conv", "Dense", "DepthwiseConv", "SeparableConv")
THREAD_TRACKS = 100  # track ids of TensorFlow's threads: 100 + n (layers), 200 + n (ops)


def _owners(model: Any) -> tuple[dict[str, str], dict[str, str]]:
    """Layer name -> class name, and activation-like layer -> the weighted layer before it."""
    classes: dict[str, str] = {}
    owner: dict[str, str] = {}
    last_weighted: str | None = None
    for layer in model.layers:
        kind = type(layer).__name__
        classes[layer.name] = kind
        if kind.startswith(WEIGHTED):
            last_weighted = layer.name
        elif last_weighted is not None:
            owner[layer.name] = last_weighted
    return classes, owner


def _layer_of(node: str, classes: dict[str, str]) -> str | None:
    """The Keras layer whose name scope holds ``node`` (scopes get a ``_1`` suffix per call)."""
    for segment in node.split("/"):
        if segment in classes:
            return segment
        stem = re.sub(r"_\d+$", "", segment)
        if stem in classes:
            return stem
    return None


def _events(space: Any) -> tuple[list[tuple[int, int]], list[tuple[int, int, str, str, int]]]:
    """Profiled steps (start, end) and ops (start, duration, node, op type, thread), in ns on
    the host clock; threads numbered from 0 in the order their lines appear."""
    steps: list[tuple[int, int]] = []
    ops: list[tuple[int, int, str, str, int]] = []
    threads: dict[tuple[str, int], int] = {}
    for plane in space.planes:
        if not plane.name.startswith("/host:"):
            continue
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            base = line.timestamp_ns
            for event in line.events:
                name = names.get(event.metadata_id, "")
                start = base + event.offset_ps // 1000
                duration = event.duration_ps // 1000
                if name == STEP:
                    steps.append((start, start + duration))
                    continue
                match = OP_EVENT.fullmatch(name)
                if match:
                    thread = threads.setdefault((plane.name, line.id), len(threads))
                    ops.append((start, duration, match.group(1), match.group(2), thread))
    steps.sort()
    ops.sort()
    return steps, ops


def profile_tf(
    model: Any,
    call: Any,
    profiled: Any,
    prepared: Any,
    *,
    iterations: int,
    level: str,
    timeline: Timeline,
    trace_dir: Path,
) -> LayerProfile:
    """Layer rows (per inference), profiled prediction times (µs) and notes: ``call`` is timed
    uninstrumented (what the table adds up to), ``profiled`` is called under the profiler."""
    import tensorflow as tf  # already imported, quietly, by the predictor being profiled
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    clock = time.perf_counter_ns
    plain = plain_times(call, prepared, iterations)
    trace_dir.mkdir(parents=True, exist_ok=True)
    logdir = Path(tempfile.mkdtemp(prefix="tf-profile-", dir=trace_dir))
    ours: list[tuple[int, int]] = []
    try:
        tf.profiler.experimental.start(str(logdir))
        try:
            for index in range(iterations):
                with tf.profiler.experimental.Trace(STEP, step_num=index, _r=1):
                    start = clock()
                    profiled(prepared)
                    ours.append((start, clock()))
        finally:
            tf.profiler.experimental.stop()
        files = sorted(logdir.rglob("*.xplane.pb"))
        if not files:
            return [], [], ["the TensorFlow profiler wrote no XSpace file"]
        space = xplane_pb2.XSpace()
        space.ParseFromString(files[-1].read_bytes())
    finally:
        shutil.rmtree(logdir, ignore_errors=True)

    steps, ops = _events(space)
    steps = steps[-iterations:]
    if not steps:
        return [], [(end - start) / 1e3 for start, end in ours], ["no profiled step was recorded"]
    # Our clock minus the profiler's, by the steps both saw (µs).
    offset = statistics.median(
        (ours_start - step_start) / 1e3
        for (ours_start, _), (step_start, _) in zip(ours[-len(steps) :], steps, strict=True)
    )
    classes, owner = _owners(model)
    per_step: list[dict[str, float]] = []
    calls: dict[str, int] = defaultdict(int)
    kernels: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    unplaced: dict[str, int] = defaultdict(int)
    position = 0
    for index, (begin, end) in enumerate(steps):
        timeline.complete(
            "predict", begin / 1e3 + offset, (end - begin) / 1e3, "framework", "framework",
            {"iteration": index},
        )  # fmt: skip
        totals: dict[str, float] = defaultdict(float)
        while position < len(ops) and ops[position][0] < begin:
            position += 1
        while position < len(ops) and ops[position][0] < end:
            start, duration, node, op_type, thread = ops[position]
            position += 1
            layer = _layer_of(node, classes)
            if layer is None:
                unplaced[f"{node}:{op_type}"] += 1
                layer = OTHER
            elif FUSED.search(op_type) and not classes[layer].startswith(WEIGHTED):
                layer = owner.get(layer, layer)
            micros = duration / 1e3
            totals[layer] += micros
            calls[layer] += 1
            kernels[layer][op_type] += micros
            # TensorFlow runs independent ops at once on its inter-op threads: one track per
            # thread, so each track's events nest.
            layer_track, kernel_track = THREAD_TRACKS + thread, THREAD_TRACKS + 100 + thread
            timeline.extra_tracks[layer_track] = f"framework: layers (TensorFlow thread {thread})"
            detail = {"node": node, "op_type": op_type}
            timeline.complete(layer, start / 1e3 + offset, micros, layer_track, "layer", detail)
            if includes(level, "library"):
                timeline.extra_tracks[kernel_track] = f"library: ops (TensorFlow thread {thread})"
                timeline.complete(
                    op_type, start / 1e3 + offset, micros, kernel_track, "kernel", detail
                )
        per_step.append(totals)
    rows = []
    for layer in calls:
        if layer == OTHER:
            continue
        self_us = statistics.median(step.get(layer, 0.0) for step in per_step)
        ranked = sorted(kernels[layer].items(), key=lambda kv: kv[1], reverse=True)
        rows.append(
            LayerRow(
                layer=layer,
                op_type=classes.get(layer, "ops outside layers"),
                calls=calls[layer] / len(per_step),
                self_us=self_us,
                total_us=self_us,
                kernels=[name for name, _ in ranked],
            )
        )
    # Last, like the other frameworks' tables: ops outside every layer's scope, and what no op
    # accounts for (tf.function's dispatch and argument checks, the executor's scheduling).
    unscoped = statistics.median(step.get(OTHER, 0.0) for step in per_step)
    outside = max(statistics.median(plain) - sum(row.self_us for row in rows) - unscoped, 0.0)
    rows.append(
        LayerRow(
            layer=OTHER, op_type="tf.function dispatch", calls=1.0,
            self_us=unscoped + outside, total_us=unscoped + outside,
        )
    )  # fmt: skip
    notes = [
        f"TensorFlow profiler (XSpace): {sum(calls.values()) / len(per_step):.0f} ops per "
        "prediction; fused convolution/matmul ops are put on the layer that starts the fusion"
    ]
    if unplaced:
        named = ", ".join(sorted(unplaced, key=unplaced.__getitem__, reverse=True)[:5])
        notes.append(
            f"{sum(unplaced.values())} op events outside any Keras layer's scope went to "
            f"{OTHER} ({named})"
        )
    unseen = [n for n, kind in classes.items() if kind.startswith(WEIGHTED) and n not in calls]
    if unseen:
        notes.append(f"no profiled op of weighted layers {', '.join(unseen)}")
    return rows, [(end - start) / 1e3 for start, end in ours], notes

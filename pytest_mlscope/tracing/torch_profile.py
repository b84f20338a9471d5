"""PyTorch: layer times from module hooks, ops and kernels from ``torch.profiler``.

Two loops, because they answer different questions at different costs. Layer times come from
forward hooks on the leaf modules (one clock read each side: cheap, so the rows add up to what
the timing pass measured). Ops and kernels come from ``torch.profiler`` with each leaf module
wrapped in a ``record_function`` named after it, which costs microseconds per op and would
inflate a small model's layers if its times were used for the table.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from pytest_mlscope.protocol import LayerProfile, LayerRow
from pytest_mlscope.tracing import includes, plain_times, repetitions
from pytest_mlscope.tracing.layers import other_row
from pytest_mlscope.tracing.timeline import Timeline

PREFIX = "layer:"
TOP_KERNELS = 3


def _leaves(module: Any, run: Callable[[Any], Any] | None = None, prepared: Any = None) -> list:
    """The modules whose time is a layer's: the deepest ones a prediction calls.

    Not simply the leaves of the module tree: a module may use its children's weights without
    calling them (``MultiheadAttention`` computes through ``out_proj.weight``), and then it is
    the layer, or its time would fall into "(other)". One probe call finds what runs.
    """
    named = [(name, child) for name, child in module.named_modules() if name]
    if run is None:
        return [(n, c) for n, c in named if next(iter(c.children()), None) is None]
    called: set[str] = set()
    handles = [
        child.register_forward_pre_hook(lambda m, a, name=name: called.add(name))
        for name, child in named
    ]
    try:
        run(prepared)
    finally:
        for handle in handles:
            handle.remove()
    return [
        (name, child)
        for name, child in named
        if name in called and not any(other.startswith(name + ".") for other in called)
    ]


def profile_torch(
    module: Any,
    call: Callable[[Any], Any],
    prepared: Any,
    iterations: int,
    level: str,
    timeline: Timeline,
    device: str = "cpu",
    *,
    hooked_call: Callable[[Any], Any] | None = None,
    op_types: dict[str, str] | None = None,
) -> LayerProfile:
    """Layer rows (per inference), profiled prediction times (µs) and notes.

    ``call`` is what is timed plain; ``hooked_call`` (default: ``call``) runs ``module``, whose
    leaf modules take the hooks. They differ for an exported program: its flat graph is what
    is timed, and its unflattened module, the same ops in the source's module tree, is what
    says which layer each op belongs to. Layers are named by their full module path
    (``layers.1.conv2``), so blocks of one shape stay apart.
    """
    import torch

    early: list[str] = []
    if isinstance(module, torch.jit.ScriptModule):
        leaves: list[tuple[str, Any]] = []  # TorchScript modules take no forward hooks
        early.append(
            "a TorchScript module takes no forward hooks: no per-layer rows (its ops are on "
            "the timeline at the library level)"
        )
    else:
        leaves = _leaves(module, hooked_call or call, prepared)
    found = {name: type(child).__name__ for name, child in leaves}
    op_types = {**found, **{k: v for k, v in (op_types or {}).items() if k in found}}
    run = hooked_call or call
    clock = time.perf_counter_ns
    spans: list[tuple[str, int, int]] = []
    stack: list[int] = []

    def enter(_module: Any, _args: Any, *, name: str) -> None:
        stack.append(clock())

    def leave(_module: Any, _args: Any, _output: Any, *, name: str) -> None:
        spans.append((name, stack.pop(), clock()))

    def hook() -> list[Any]:
        handles = []
        for name, child in leaves:
            handles.append(
                child.register_forward_pre_hook(lambda m, a, name=name: enter(m, a, name=name))
            )
            handles.append(
                child.register_forward_hook(lambda m, a, o, name=name: leave(m, a, o, name=name))
            )
        return handles

    # First a block of plain predictions: what a prediction costs, the total the rows must add
    # up to. (Alternating them with hooked ones made each plain prediction pay for the caches
    # the hooked one before it had disturbed: 10 % on the digits CNN.) Then the hooked ones,
    # which say how a prediction splits into layers.
    plain = plain_times(call, prepared, iterations)
    handles = hook()
    records: list[tuple[int, int, int]] = []  # (start, end, first span) of each hooked call
    try:
        run(prepared)  # the first hooked call warms the hooks up
        spans.clear()
        for _ in repetitions(iterations):
            first = len(spans)
            start = clock()
            run(prepared)
            records.append((start, clock(), first))
    finally:
        for handle in handles:
            handle.remove()
    steps: list[float] = []
    per_step: list[dict[str, float]] = []
    calls: dict[str, int] = defaultdict(int)
    shown = len(records) - iterations  # the timeline shows the last ``iterations`` calls
    for index, (start, end, first) in enumerate(records):
        last = records[index + 1][2] if index + 1 < len(records) else len(spans)
        steps.append((end - start) / 1e3)
        totals: dict[str, float] = defaultdict(float)
        for name, begin, finish in spans[first:last]:
            totals[name] += (finish - begin) / 1e3
            calls[name] += 1
            if index >= shown:
                timeline.complete(
                    name, begin / 1e3, (finish - begin) / 1e3, "framework", "layer",
                    {"op_type": op_types[name]},
                )  # fmt: skip
        if index >= shown:
            timeline.complete(
                "predict", start / 1e3, (end - start) / 1e3, "framework", "framework",
                {"iteration": index - shown},
            )  # fmt: skip
        per_step.append(totals)

    kernels: dict[str, list[str]] = {}
    notes: list[str] = list(early)
    if includes(level, "library"):
        kernels, note = _library_pass(module, run, prepared, leaves, timeline, device)
        notes.extend(note)
        if device == "cpu":
            primitives = _onednn_pass(run, prepared, leaves)
            for layer, names in primitives.items():
                kernels[layer] = [*names, *kernels.get(layer, [])[:TOP_KERNELS]]

    # A span holds the hooks' own dispatch (a microsecond or two a layer): on a model whose
    # layers take a few µs each that alone put the rows 15 % above the prediction. The span of
    # an identity module hooked the same way is that cost; it comes off every call of a layer.
    hook_us = _hook_cost_us(prepared, clock)
    rows = []
    for name, _child in leaves:
        if not calls.get(name):
            continue  # a module the forward never calls (e.g. an unused head)
        per_call = calls[name] / len(records)
        self_us = max(
            statistics.median(step.get(name, 0.0) for step in per_step) - hook_us * per_call,
            0.0,
        )
        rows.append(
            LayerRow(
                layer=name,
                op_type=op_types[name],
                device=device,
                calls=calls[name] / len(records),
                self_us=self_us,
                total_us=self_us,
                kernels=kernels.get(name, []),
            )
        )
    # Hooks cost a few µs per module call, outside the layer spans: "(other)" is what an
    # uninstrumented prediction spends outside every layer, so the rows add up to it.
    median_plain = statistics.median(plain)
    if leaves:
        notes.append(
            f"layer times from forward hooks over {len(records)} predictions (the timeline "
            f"shows the last {iterations}); hooks made a prediction "
            f"{statistics.median(steps):.1f} µs instead of {median_plain:.1f} µs, a cost kept "
            f"out of the table ({hook_us:.2f} µs taken off each layer call: an empty module's "
            "hooked span)"
        )
    rows.append(other_row(rows, median_plain, "outside layers", device))
    return rows, plain, notes


def _hook_cost_us(prepared: Any, clock: Callable[[], int], calls: int = 301) -> float:
    """The median span of a hooked ``torch.nn.Identity``: what hooks add to each layer's span."""
    import torch

    identity = torch.nn.Identity()
    marks: list[int] = []
    handles = [
        identity.register_forward_pre_hook(lambda m, a: marks.append(clock())),
        identity.register_forward_hook(lambda m, a, o: marks.append(clock())),
    ]
    try:
        for _ in range(calls):
            identity(prepared)
    finally:
        for handle in handles:
            handle.remove()
    spans = [end - begin for begin, end in zip(marks[2::2], marks[3::2], strict=True)]
    return statistics.median(spans) / 1e3


def _library_pass(
    module: Any,
    call: Callable[[Any], Any],
    prepared: Any,
    leaves: list[tuple[str, Any]],
    timeline: Timeline,
    device: str,
    iterations: int = 3,
) -> tuple[dict[str, list[str]], list[str]]:
    """aten ops (and CUDA kernels on a GPU) under each layer, on the timeline and per layer."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    clock = time.perf_counter_ns
    ours: list[tuple[str, int]] = []  # (record_function name, our start) in call order
    open_frames: list[Any] = []

    def enter(_m: Any, _a: Any, *, name: str) -> None:
        frame = record_function(PREFIX + name)
        ours.append((PREFIX + name, clock()))
        frame.__enter__()
        open_frames.append(frame)

    def leave(_m: Any, _a: Any, _o: Any) -> None:
        open_frames.pop().__exit__(None, None, None)

    handles = []
    for name, child in leaves:
        handles.append(
            child.register_forward_pre_hook(lambda m, a, name=name: enter(m, a, name=name))
        )
        handles.append(child.register_forward_hook(leave))
    activities = [ProfilerActivity.CPU]
    if device.startswith("cuda") and torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    try:
        with profile(activities=activities) as prof:
            for _ in range(iterations):
                call(prepared)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
    finally:
        for handle in handles:
            handle.remove()
    events = list(prof.events())
    frames = [e for e in events if e.name.startswith(PREFIX)]
    frames.sort(key=lambda e: e.time_range.start)
    if not frames:
        return {}, ["torch.profiler recorded no layer frames; kernels not attributed"]
    # One clock: our start of the n-th layer call and the profiler's start of the same frame.
    offsets = [
        mine / 1e3 - theirs.time_range.start
        for (name, mine), theirs in zip(ours, frames, strict=False)
        if name == theirs.name
    ]
    offset = statistics.median(offsets) if offsets else 0.0
    per_layer: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for event in events:
        start = event.time_range.start + offset
        duration = event.time_range.end - event.time_range.start
        is_frame = event.name.startswith(PREFIX)
        device_type = str(getattr(event, "device_type", "")).rsplit(".", 1)[-1].lower()
        track: str | int = "library"
        if device_type == "cuda":
            track = 4
            timeline.extra_tracks[4] = "library: CUDA kernels"
        if not is_frame:
            timeline.complete(
                event.name, start, duration, track, "kernel" if device_type == "cuda" else "op",
                {"layer": _owner(event) or ""},
            )  # fmt: skip
            owner = _owner(event)
            if owner:
                per_layer[owner][event.name] += float(event.self_cpu_time_total) + float(
                    getattr(event, "self_device_time_total", 0.0) or 0.0
                )
    kernels = {
        layer: [n for n, _ in sorted(ops.items(), key=lambda kv: kv[1], reverse=True)[:TOP_KERNELS]]
        for layer, ops in per_layer.items()
    }
    return kernels, []


def _onednn_pass(
    call: Callable[[Any], Any], prepared: Any, leaves: list[tuple[str, Any]]
) -> dict[str, list[str]]:
    """The oneDNN primitives each layer ran (``oneDNN convolution jit:avx512_core``), biggest first.

    oneDNN reports its primitives only through its verbose log on stdout (fd 1), without
    timestamps that could be put on our clock; so one prediction runs with the log on, fd 1 is
    sent to a file meanwhile, and each layer's hooks write a marker line into the same stream:
    a primitive belongs to the last layer entered. Layers the framework computes without oneDNN
    (small convolutions take aten's own kernels) get none. Their times, slowed by the logging,
    only order the primitives.
    """
    import os
    import sys
    import tempfile

    import torch

    if not torch.backends.mkldnn.is_available():
        return {}
    marker = "mlscope-layer "

    def enter(_m: Any, _a: Any, *, name: str) -> None:
        os.write(1, f"{marker}{name}\n".encode())

    handles = [
        child.register_forward_pre_hook(lambda m, a, name=name: enter(m, a, name=name))
        for name, child in leaves
    ]
    with tempfile.TemporaryFile(mode="w+b") as log:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(log.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                call(prepared)
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            for handle in handles:
                handle.remove()
        log.seek(0)
        text = log.read().decode(errors="replace")
    per_layer: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    layer = None
    for line in text.splitlines():
        if line.startswith(marker):
            layer = line.removeprefix(marker).strip()
            continue
        fields = line.split(",")
        if layer is None or len(fields) < 8 or fields[2:4] != ["primitive", "exec"]:
            continue
        try:
            milliseconds = float(fields[-1])
        except ValueError:
            continue
        per_layer[layer][f"oneDNN {fields[5]} {fields[6]}"] += milliseconds
    # Every distinct primitive (a layer runs a few: its convolution, the reorders around it),
    # biggest first: a cut to the top two let two reorders, slowed by the log, hide the conv.
    return {
        name: [k for k, _ in sorted(found.items(), key=lambda kv: kv[1], reverse=True)[:4]]
        for name, found in per_layer.items()
    }


def _owner(event: Any) -> str | None:
    """The layer a profiler event ran under: its nearest enclosing record_function frame."""
    parent = getattr(event, "cpu_parent", None)
    while parent is not None:
        if parent.name.startswith(PREFIX):
            return parent.name.removeprefix(PREFIX)
        parent = getattr(parent, "cpu_parent", None)
    return None

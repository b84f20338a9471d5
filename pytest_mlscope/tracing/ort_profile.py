"""ONNX Runtime: node events from the session profiler (``enable_profiling``).

Profiling is a session option, so the profiling pass builds a second session with the same
options as the timed one plus profiling: the timed session is never touched. ORT names the nodes
it ran after the exported graph (``/features/features.0/Conv``), which carries the module path of
the source model. A fused node keeps the name of the fused chain's *output*: a Conv fused with its
ReLU is named ``/features/features.1/Relu_output_0_nchwc``. With the ``onnx`` package installed,
the original graph is read to walk from that output back to the node of the fused node's op, so
the row is ``features.0`` (Conv) with kernel ``Conv+Relu/NCHWc``; without it, the row keeps ORT's
name (``features.1``, op Conv). Rows are named by the full module path (``layers.1.conv2``). The
nodes ORT inserts (``ReorderOutput`` after an NCHWc convolution) are found in the graph it runs,
saved by the profiling session (``optimized_model_filepath``), and counted under the layer they
serve, in a row of their own op.
"""

from __future__ import annotations

import bisect
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from scipy.stats import trim_mean

from pytest_mlscope.protocol import LayerProfile, LayerRow
from pytest_mlscope.tracing import includes, plain_times, timed_runs
from pytest_mlscope.tracing.layers import other_row
from pytest_mlscope.tracing.timeline import Timeline

SUFFIX = "_kernel_time"
MAX_RUNS = 2000  # a profiled run keeps about 20 KB of events until the profile is written


def layer_of(node: str) -> str:
    """``/layers/layers.1/conv2/Conv`` -> ``layers.1.conv2``: the node's module path, in full, so
    the blocks of a network stay apart; a top-level node keeps its own name."""
    name = node.removeprefix("fused ").removesuffix(SUFFIX)
    parts = [p for p in name.split("/") if p]
    # The module scopes come first; then the op's own name and any ORT rewrite's suffix
    # (``MatMul_1/MatMulScaleFusion``), which are CamelCase where attribute names are not.
    scopes = []
    for part in parts[:-1]:
        if part[:1].isupper():
            break
        scopes.append(part)
    if scopes:
        return module_path(scopes)
    return parts[0] if parts else name


def module_path(scopes: list[str]) -> str:
    """The scopes torch's ONNX exporter writes into node names, as one module path.

    A scope is an attribute name (``conv2``), or a container's child named with the container
    (``layers.1`` under ``layers``): the part it repeats of the path so far is not repeated.
    ``['layers', 'layers.1', 'conv2']`` -> ``layers.1.conv2``; ``['encoder', 'layers.0',
    'self_attn']`` -> ``encoder.layers.0.self_attn``.
    """
    path: list[str] = []
    for scope in scopes:
        parts = scope.split(".")
        for overlap in range(min(len(path), len(parts) - 1), 0, -1):
            if path[-overlap:] == parts[:overlap]:
                parts = parts[overlap:]
                break
        path.extend(parts)
    return ".".join(path)


ACTIVATIONS = {"Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "HardSigmoid", "Add", "Sum"}


def source_nodes(model_path: str) -> dict[str, tuple[str, str, list[str]]] | None:
    """Original graph: tensor name -> (producing node name, op, inputs); None without onnx."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        graph = onnx.load(model_path, load_external_data=False).graph
    except Exception:
        return None
    producers: dict[str, tuple[str, str, list[str]]] = {}
    for node in graph.node:
        for output in node.output:
            producers[output] = (node.name, node.op_type, list(node.input))
    return producers


def inserted_nodes(optimized: Path) -> dict[str, tuple[str, str]]:
    """The nodes ORT added to the graph it runs (``ReorderOutput`` and ``ReorderInput`` around
    NCHWc convolutions, ``…_token_N`` copies), each with the node it serves and that node's op:
    the one that produces its input, else the one that reads its output. Their names carry no
    module path of their own. Empty without onnx or the optimized graph."""
    try:
        import onnx

        graph = onnx.load(str(optimized), load_external_data=False).graph
    except Exception:
        return {}
    ops = {node.name: node.op_type for node in graph.node}
    producer = {output: node.name for node in graph.node for output in node.output}
    consumer: dict[str, str] = {}
    for node in graph.node:
        for name in node.input:
            consumer.setdefault(name, node.name)
    found = {}
    for node in graph.node:
        if "/" in node.name:  # an exporter's scoped name: a layer of its own
            continue
        served = next((producer[i] for i in node.input if i in producer), None)
        served = served or next((consumer[o] for o in node.output if o in consumer), None)
        if served is not None and served != node.name:
            found[node.name] = (served, ops[served])
    return found


def resolve(
    node: str,
    op: str,
    producers: dict[str, tuple[str, str, list[str]]] | None,
    inserted: dict[str, tuple[str, str]] | None = None,
) -> tuple[str, list[str]]:
    """(layer, ops fused into it) for an ORT node name, using the original graph when known;
    a node ORT inserted counts under the layer it serves (its own op names it in the row)."""
    base = node.removeprefix("fused ").removesuffix(SUFFIX)
    if (
        inserted
        and base in inserted
        and producers is not None
        and not any(name == base for name, _, _ in producers.values())
    ):
        served, served_op = inserted[base]
        if served not in inserted:  # one step: an inserted node serving another is left
            return resolve(served, served_op, producers)[0], []
    if producers is None:
        return layer_of(node), []
    if any(name == base for name, _, _ in producers.values()):  # an unfused node keeps its name
        return layer_of(base), []
    tensor = base.removesuffix("_nchwc")
    found = producers.get(tensor)
    fused: list[str] = []
    while found is not None and found[1] != op and found[1] in ACTIVATIONS and found[2]:
        fused.append(found[1])
        found = producers.get(found[2][0])
    if found is None or found[1] not in (op, op.removeprefix("Fused")):
        return layer_of(node), []
    return layer_of(found[0]), fused[::-1]


def _device(provider: str) -> str:
    return "cuda" if "CUDA" in provider or "Tensorrt" in provider else "cpu"


def profile_ort(
    model_path: str,
    session_factory: Any,
    plain_call: Any,
    feed: dict[str, Any],
    iterations: int,
    level: str,
    timeline: Timeline,
    trace_dir: Path,
) -> LayerProfile:
    """Layer rows (per inference), profiled prediction times (µs) and notes.

    ``session_factory(options_update)`` builds an InferenceSession like the timed one, with
    ``enable_profiling`` and the profile file prefix set by the callback.
    """
    trace_dir.mkdir(parents=True, exist_ok=True)
    prefix = str(trace_dir / f"ort-{time.perf_counter_ns()}")
    optimized = Path(prefix + "-optimized.onnx")
    try:
        session = session_factory(prefix, str(optimized))
        inserted = inserted_nodes(optimized)
    finally:
        optimized.unlink(missing_ok=True)
        optimized.with_name(optimized.name + ".data").unlink(missing_ok=True)
    # Unprofiled runs of the timed session first: what the rows must add up to. (Alternating
    # them with the profiled session's runs would be fairer to drift, but two sessions of a
    # large model evict each other's weights from the caches: AlexNet's rows then add up to
    # twice a prediction.)
    plain = plain_times(plain_call, feed, iterations)
    ours = timed_runs(lambda f: session.run(None, f), feed, iterations, MAX_RUNS)
    if len(ours) > 5 * iterations:
        # Each profiled node leaves a couple of KB of event behind, and the first time a process
        # does that the heap grows into fresh pages: the page faults land inside the node spans
        # and put a small model's rows 15-30 % high. A second profiled session reuses the pages.
        Path(session.end_profiling()).unlink(missing_ok=True)
        session = session_factory(prefix + "-again")
        ours = timed_runs(lambda f: session.run(None, f), feed, iterations, MAX_RUNS)
    path = Path(session.end_profiling())
    try:
        events = json.loads(path.read_text())
    finally:
        path.unlink(missing_ok=True)
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    runs = runs[-len(ours) :]
    offset = statistics.median(
        start / 1e3 - run["ts"] for (start, _), run in zip(ours, runs, strict=False)
    )
    nodes = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith(SUFFIX)]
    nodes.sort(key=lambda e: e["ts"])
    producers = source_nodes(model_path)
    resolved: dict[tuple[str, str], tuple[str, list[str]]] = {}
    per_step: list[dict[tuple[str, str], float]] = []
    calls: dict[tuple[str, str], int] = defaultdict(int)
    info: dict[tuple[str, str], dict[str, str]] = {}
    steps = []
    starts = [node["ts"] for node in nodes]
    shown = len(runs) - iterations  # the timeline shows the last ``iterations`` runs
    for index, run in enumerate(runs):
        begin, end = run["ts"], run["ts"] + run["dur"]
        steps.append(float(run["dur"]))
        if index >= shown:
            timeline.complete(
                "model_run", begin + offset, run["dur"], "framework", "framework",
                {"iteration": index - shown},
            )  # fmt: skip
        totals: dict[tuple[str, str], float] = defaultdict(float)
        for node in nodes[bisect.bisect_left(starts, begin) : bisect.bisect_left(starts, end)]:
            args = node.get("args", {})
            op = str(args.get("op_name", "?"))
            if (node["name"], op) not in resolved:
                resolved[(node["name"], op)] = resolve(node["name"], op, producers, inserted)
            layer, fused = resolved[(node["name"], op)]
            key = (layer, op)
            totals[key] += float(node["dur"])
            calls[key] += 1  # a dict keeps first-seen order: the order ORT ran the nodes
            provider = str(args.get("provider", ""))
            variant = "NCHWc" if "_nchwc" in node["name"] else ""
            kernel = "+".join([op, *fused]) + (f"/{variant}" if variant else "")
            info[key] = {"provider": provider, "kernel": kernel}
            if index < shown:
                continue  # counted, not drawn: the timeline shows the last runs only
            detail = {
                "op_type": op,
                "provider": provider,
                "node": node["name"].removesuffix(SUFFIX),
                "input_shapes": json.dumps(args.get("input_type_shape", [])),
            }
            timeline.complete(
                key[0], node["ts"] + offset, node["dur"], "framework", "layer", detail
            )
            if includes(level, "library"):
                timeline.complete(
                    f"{info[key]['kernel']} ({provider.removesuffix('ExecutionProvider')})",
                    node["ts"] + offset, node["dur"], "library", "kernel", detail,
                )  # fmt: skip
        per_step.append(totals)
    # The profiler's own cost inside each node (timestamps, fences) is several µs, as much as a
    # small node's work. Estimated by the cheapest node (a reshape or a layout copy does next to
    # nothing), bounded by the whole profiling cost per node, and subtracted from every node.
    # Per node a trimmed mean, not the median: ORT's timestamps are whole µs, and the median of
    # a node that takes 5.5 µs is 5 or 6 by chance, while the mean of rounded values is the
    # true one. Trimming a tenth at each end keeps a preempted run out of it.
    means = {key: float(trim_mean([step.get(key, 0.0) for step in per_step], 0.1)) for key in calls}
    per_call = {key: means[key] / max(calls[key] / len(runs), 1e-9) for key in calls}
    nodes_per_run = sum(calls.values()) / max(len(runs), 1)
    median_plain = statistics.median(plain)
    whole = (statistics.median(steps) - median_plain) / max(nodes_per_run, 1)
    per_node = max(0.0, min(min(per_call.values(), default=0.0), whole))
    rows = []
    for key in calls:
        layer, op = key
        self_us = max(means[key] - per_node * calls[key] / len(runs), 0.0)
        provider = info[key]["provider"]
        rows.append(
            LayerRow(
                layer=layer,
                op_type=op,
                device=_device(provider),
                calls=calls[key] / len(runs),
                self_us=self_us,
                total_us=self_us,
                kernels=[f"{info[key]['kernel']} ({provider.removesuffix('ExecutionProvider')})"],
            )
        )
    rows.append(other_row(rows, median_plain, "session overhead"))
    notes = [
        f"node times over {len(runs)} profiled runs (the timeline shows the last {iterations}), "
        f"less the profiler's cost of {per_node:.1f} µs per node (a profiled run "
        f"took {statistics.median(steps):.1f} µs, an unprofiled one {median_plain:.1f} µs)"
    ]
    if includes(level, "library"):
        notes.append(
            "ONNX Runtime's profiler reports nodes with their execution provider and layout; "
            "the MLAS routines beneath them are not exposed"
        )
    return rows, plain, notes

"""The report's pictures, drawn with matplotlib and returned as ``data:`` URIs of SVG files.

Figures are made with the object API (no pyplot: no GUI backend, no global figure state) and
embedded as images rather than inline SVG, so text in them (model and layer names from a shared
database) can never become markup in the page. Math text is off: a ``$`` in a name stays a ``$``.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from pytest_mlscope.report.data import AcrossSystems, Item

CURRENT = "#1f6feb"
BASELINE = "#8c959f"
COLORS = ("#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bc4c00", "#0550ae")
STYLE = {
    "svg.fonttype": "none",  # text as text: smaller files, searchable
    "svg.hashsalt": "pytest-mlscope",  # the same data gives the same file
    "text.parse_math": False,
    "font.size": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}


@contextmanager
def _figure(
    width: float, height: float, margins: dict[str, float] | None = None
) -> Iterator[Figure]:
    """A figure laid out by matplotlib (labels of any length fit), or with fixed ``margins``
    (fractions, as ``subplots_adjust`` takes them) for the plots every item has: constrained
    layout is a third of such a plot's drawing time."""
    import matplotlib as mpl
    from matplotlib.figure import Figure

    with mpl.rc_context(STYLE):
        figure = Figure(figsize=(width, height), layout=None if margins else "constrained")
        if margins:
            figure.subplots_adjust(**margins)
        yield figure


def _uri(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _plain_log(axes: Any, which: str) -> None:
    """Log-scale ticks as plain numbers (the default labels are math text, which is off)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis = axes.xaxis if which == "x" else axes.yaxis
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def distribution(item: Item) -> str | None:
    """The latency samples of this run against the baseline's, on shared bins, medians marked."""
    import numpy as np

    current = np.asarray(item.record.samples_ns, dtype=float) / 1e6
    if current.size < 2:
        return None
    before = (
        np.asarray(item.baseline.samples_ns, dtype=float) / 1e6
        if item.baseline and item.baseline.samples_ns
        else np.empty(0)
    )
    both = np.concatenate([current, before])
    low, high = np.percentile(both, [0.5, 99.5])
    if not high > low:
        high = low + max(abs(low) * 0.01, 1e-6)
    bins = np.linspace(low, high, 50)
    with _figure(4.2, 2.2, {"left": 0.04, "right": 0.98, "bottom": 0.2, "top": 0.96}) as figure:
        axes = figure.subplots()
        if before.size:
            axes.hist(np.clip(before, low, high), bins=bins, density=True, alpha=0.45,
                      histtype="stepfilled", color=BASELINE,
                      label=f"baseline (n={before.size})")  # fmt: skip
            axes.axvline(float(np.median(before)), color=BASELINE, linestyle="--", linewidth=1)
        axes.hist(np.clip(current, low, high), bins=bins, density=True, alpha=0.55,
                  histtype="stepfilled", color=CURRENT,
                  label=f"this run (n={current.size})")  # fmt: skip
        axes.axvline(float(np.median(current)), color=CURRENT, linestyle="--", linewidth=1)
        axes.set_xlabel("latency per call (ms)")
        axes.set_yticks([])
        axes.legend(frameon=False, loc="upper right")
        return _uri(figure)


def history(item: Item) -> str | None:
    """The item's median over its last stored runs; this run is the filled dot."""
    points = item.history
    if len(points) < 2:
        return None
    medians = [p.median * 1e3 for p in points]
    with _figure(4.2, 2.0, {"left": 0.16, "right": 0.97, "bottom": 0.14, "top": 0.88}) as figure:
        axes = figure.subplots()
        xs = list(range(len(points)))
        # A dot per run while they can be told apart; past that a dot is only drawing time.
        dots = {"marker": "o", "markersize": 2.5} if len(points) <= 100 else {}
        axes.plot(xs, medians, color=CURRENT, linewidth=1, **dots)
        for x, point in zip(xs, points, strict=True):
            if point.run_id == item.record.run_id:
                axes.plot([x], [point.median * 1e3], "o", color="#d1242f", markersize=5)
        ticks = sorted({0, len(points) - 1, (len(points) - 1) // 2})
        axes.set_xticks(ticks, [points[i].started_at.strftime("%m-%d %H:%M") for i in ticks])
        axes.set_ylabel("median ms")
        axes.set_ylim(bottom=0)
        axes.set_title(f"last {len(points)} runs", loc="left", fontsize=8)
        return _uri(figure)


def top_layers(item: Item, k: int = 10) -> str | None:
    from pytest_mlscope.tracing.layers import top_layers as top

    rows = top(item.record.layers, k)
    if not rows:
        return None
    with _figure(4.2, 0.4 + 0.2 * len(rows)) as figure:
        axes = figure.subplots()
        labels = [_short(f"{row.layer} ({row.op_type})", 36) for row in reversed(rows)]
        axes.barh(labels, [row.self_us for row in reversed(rows)], color=CURRENT)
        axes.set_xlabel("self time per prediction (µs)")
        axes.grid(axis="y", visible=False)
        return _uri(figure)


def batch_scaling(items: Sequence[Item]) -> str | None:
    """Median latency and throughput against batch size, one line per framework and scenario."""
    lines: dict[str, list[tuple[int, float, float]]] = {}
    for item in items:
        summary = item.record.summary
        if summary is None:
            continue
        cell = item.record.cell
        name = f"{cell.framework}@{cell.stack}" if cell.stack else cell.framework
        label = f"{name} {cell.device} {cell.scenario}"
        lines.setdefault(label, []).append((cell.batch_size, summary.median, summary.throughput))
    if not any(len({b for b, _, _ in points}) > 1 for points in lines.values()):
        return None
    with _figure(7.0, 2.4) as figure:
        latency, throughput = figure.subplots(1, 2)
        for i, (label, points) in enumerate(sorted(lines.items())):
            points.sort()
            sizes = [p[0] for p in points]
            color = COLORS[i % len(COLORS)]
            latency.plot(sizes, [p[1] * 1e3 for p in points], marker="o", label=label, color=color)
            throughput.plot(sizes, [p[2] for p in points], marker="o", color=color)
        for axes, title in ((latency, "median latency (ms)"), (throughput, "items per second")):
            axes.set_xscale("log", base=2)
            axes.set_yscale("log")
            _plain_log(axes, "x")
            _plain_log(axes, "y")
            axes.set_xlabel("batch size")
            axes.set_title(title, loc="left", fontsize=8)
        latency.legend(frameon=False, fontsize=7)
        return _uri(figure)


def length_scaling(items: Sequence[Item]) -> str | None:
    """Median latency against sequence length on log-log axes, one line per sweep (framework,
    device, batch, scenario); dashed, the baseline's model as the sweep's scaling verdict timed it
    beside the current one, with the fitted exponents in the legend."""
    from pytest_mlscope.report.terminal import sweep_id

    lines: dict[str, list[tuple[int, float]]] = {}
    baselines: dict[str, dict[str, Any]] = {}
    for item in items:
        cell, summary = item.record.cell, item.record.summary
        if summary is None or cell.sequence_length is None:
            continue
        sweep = sweep_id(cell).split("[", 1)[-1].rstrip("]")
        lines.setdefault(sweep, []).append((cell.sequence_length, summary.median))
        scaling = (item.verdict or {}).get("scaling")
        if scaling:
            baselines[sweep] = scaling
    if not any(len(points) > 1 for points in lines.values()):
        return None
    with _figure(5.6, 2.8) as figure:
        axes = figure.subplots()
        for i, (sweep, points) in enumerate(sorted(lines.items())):
            points.sort()
            color = COLORS[i % len(COLORS)]
            scaling = baselines.get(sweep)
            label = _short(sweep, 44)
            if scaling:
                label += f" L^{scaling['current_exponent']:.2f}"
                axes.plot(scaling["lengths"], [m * 1e3 for m in scaling["baseline_medians"]],
                          linestyle="--", marker="x", color=color,
                          label=f"baseline L^{scaling['baseline_exponent']:.2f}")  # fmt: skip
            axes.plot([p[0] for p in points], [p[1] * 1e3 for p in points], marker="o",
                      color=color, label=label)  # fmt: skip
        axes.set_xscale("log", base=2)
        axes.set_yscale("log")
        _plain_log(axes, "x")
        _plain_log(axes, "y")
        axes.set_xlabel("sequence length (tokens)")
        axes.set_ylabel("median ms")
        axes.legend(frameon=False, fontsize=7)
        return _uri(figure)


def framework_matrix(rows: dict[str, dict[str, float]]) -> str | None:
    """Models × frameworks: each cell's median in ms, coloured by how much slower it is than the
    model's fastest framework."""
    import numpy as np

    frameworks = sorted({f for row in rows.values() for f in row})
    models = [m for m, row in rows.items() if len(row) > 1]
    if not models or len(frameworks) < 2:
        return None
    values = np.full((len(models), len(frameworks)), np.nan)
    for i, model in enumerate(models):
        for j, framework in enumerate(frameworks):
            values[i, j] = rows[model].get(framework, math.nan)
    relative = values / np.nanmin(values, axis=1, keepdims=True)
    with _figure(1.6 + 1.3 * len(frameworks), 0.6 + 0.45 * len(models)) as figure:
        axes = figure.subplots()
        axes.imshow(relative, cmap="YlOrRd", vmin=1.0, vmax=4.0, aspect="auto")
        axes.set_xticks(range(len(frameworks)), [_short(f, 20) for f in frameworks])
        axes.set_yticks(range(len(models)), [_short(m, 24) for m in models])
        axes.grid(False)
        for i in range(len(models)):
            for j in range(len(frameworks)):
                if not math.isnan(values[i, j]):
                    text = f"{values[i, j] * 1e3:.3g} ms\n×{relative[i, j]:.2f}"
                    dark = relative[i, j] > 2.5
                    axes.text(j, i, text, ha="center", va="center", fontsize=7,
                              color="white" if dark else "black")  # fmt: skip
        return _uri(figure)


def systems(view: AcrossSystems) -> str | None:
    """Median latency per configuration, one bar per system."""
    import numpy as np

    configs = [c for c in view.configs if sum(view.median(c, s.key) is not None
                                             for s in view.systems) > 1]  # fmt: skip
    if not configs:
        return None
    width = 0.8 / len(view.systems)
    with _figure(max(4.0, 1.0 + 0.9 * len(configs)), 2.6) as figure:
        axes = figure.subplots()
        xs = np.arange(len(configs))
        for i, system in enumerate(view.systems):
            heights = [(view.median(c, system.key) or math.nan) * 1e3 for c in configs]
            axes.bar(xs + i * width, heights, width, color=COLORS[i % len(COLORS)],
                     label=f"system {i + 1}")  # fmt: skip
        axes.set_xticks(xs + width * (len(view.systems) - 1) / 2, [_short(c, 28) for c in configs],
                        rotation=20, ha="right")  # fmt: skip
        axes.set_ylabel("median ms")
        axes.set_yscale("log")
        _plain_log(axes, "y")
        axes.legend(frameon=False)
        return _uri(figure)


def all_plots(data: Any) -> dict[str, Any]:
    """Every picture of a report, keyed for the template (item plots under their item id)."""
    from pytest_mlscope.report.data import config_of

    by_model: dict[str, list[Item]] = {}
    smallest: dict[str, dict[str, tuple[int, float]]] = {}
    for item in data.items:
        cell = item.record.cell
        by_model.setdefault(cell.model, []).append(item)
        summary = item.record.summary
        if summary is None or cell.scenario != "single_stream":
            continue
        framework = config_of(cell).rsplit("-bs", 1)[0]
        known = smallest.setdefault(cell.model, {})
        # The smallest batch of each framework: the seed's latency-bound comparison.
        if framework not in known or cell.batch_size < known[framework][0]:
            known[framework] = (cell.batch_size, summary.median)
    matrix = {
        model: {framework: median for framework, (_, median) in row.items()}
        for model, row in smallest.items()
    }
    plots: dict[str, Any] = {
        "matrix": framework_matrix(matrix),
        "scaling": {model: batch_scaling(items) for model, items in by_model.items()},
        "lengths": {model: length_scaling(items) for model, items in by_model.items()},
        "systems": {view.model: systems(view) for view in data.across},
        "distribution": {},
        "history": {},
        "layers": {},
    }
    for item in data.items:
        if item.record.samples_ns:
            plots["distribution"][item.id] = distribution(item)
        plots["history"][item.id] = history(item)
        plots["layers"][item.id] = top_layers(item)
    return plots

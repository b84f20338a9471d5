"""The layer table every framework's profiler is turned into, and the diff of two of them.

One row per layer as the framework ran it: ``calls``, ``self_us`` and ``total_us`` are per
inference (the median over the profiled predictions, so one slow prediction does not move them).
The row ``(other)`` holds the time of a prediction spent outside every layer (framework dispatch,
Python between modules, session overhead), so the rows add up to a whole prediction.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pytest_mlscope.protocol import LayerRow

OTHER = "(other)"
# A layer counts as slower or faster when its self time moved by this much AND this many µs:
# tiny layers jitter by large fractions of nothing.
MOVE_FRACTION = 0.10
MOVE_US = 2.0


def other_row(
    rows: Iterable[LayerRow], prediction_us: float, op_type: str, device: str = "cpu"
) -> LayerRow:
    """The ``(other)`` row: what an uninstrumented prediction spends outside every layer (none,
    when instrumented layers already add up to more)."""
    other = max(prediction_us - total_self_us(rows), 0.0)
    return LayerRow(
        layer=OTHER, op_type=op_type, device=device, calls=1.0, self_us=other, total_us=other
    )


def top_layers(rows: Iterable[LayerRow], k: int | None = None) -> list[LayerRow]:
    """Rows by self time, largest first."""
    ordered = sorted(rows, key=lambda row: row.self_us, reverse=True)
    return ordered if k is None else ordered[:k]


def total_self_us(rows: Iterable[LayerRow]) -> float:
    return sum(row.self_us for row in rows)


@dataclass(frozen=True)
class LayerChange:
    layer: str
    op_type: str
    kind: str  # "added", "removed", "slower", "faster", "kernel changed", "same"
    before_us: float | None
    after_us: float | None
    kernels_before: tuple[str, ...] = ()
    kernels_after: tuple[str, ...] = ()

    @property
    def delta_us(self) -> float:
        return (self.after_us or 0.0) - (self.before_us or 0.0)

    @property
    def ratio(self) -> float | None:
        if not self.before_us or self.after_us is None:
            return None
        return self.after_us / self.before_us

    def describe(self) -> str:
        if self.kind == "added":
            return f"{self.layer} {self.op_type} added ({self.after_us:.1f} µs)"
        if self.kind == "removed":
            return f"{self.layer} {self.op_type} removed (was {self.before_us:.1f} µs)"
        text = f"{self.layer} {self.op_type}"
        if self.ratio is not None:
            text += f" {self.ratio - 1:+.0%} ({self.before_us:.1f} -> {self.after_us:.1f} µs)"
        elif self.before_us is not None and self.after_us is not None:  # from nothing
            text += f" ({self.before_us:.1f} -> {self.after_us:.1f} µs)"
        if self.kernels_before != self.kernels_after:
            text += (
                f", kernel {', '.join(self.kernels_before) or '?'} -> "
                f"{', '.join(self.kernels_after) or '?'}"
            )
        return text


def diff_layers(before: Sequence[LayerRow], after: Sequence[LayerRow]) -> list[LayerChange]:
    """Per-layer changes, biggest movers (by absolute change in self time) first.

    Layers are matched by name and op type; ``(other)`` is compared like any layer, since a
    regression outside every layer (say, a new copy of the input) is worth naming too.
    """
    old = {(row.layer, row.op_type): row for row in before}
    new = {(row.layer, row.op_type): row for row in after}
    changes = []
    for key in [*old, *(k for k in new if k not in old)]:
        a, b = old.get(key), new.get(key)
        if a is None:
            assert b is not None
            changes.append(
                LayerChange(b.layer, b.op_type, "added", None, b.self_us, (), tuple(b.kernels))
            )
            continue
        if b is None:
            changes.append(
                LayerChange(a.layer, a.op_type, "removed", a.self_us, None, tuple(a.kernels))
            )
            continue
        kernels_a, kernels_b = tuple(a.kernels), tuple(b.kernels)
        delta = b.self_us - a.self_us
        moved = abs(delta) >= MOVE_US and abs(delta) >= MOVE_FRACTION * max(a.self_us, 1e-9)
        if moved:
            kind = "slower" if delta > 0 else "faster"
        elif kernels_a != kernels_b:
            kind = "kernel changed"
        else:
            kind = "same"
        changes.append(
            LayerChange(a.layer, a.op_type, kind, a.self_us, b.self_us, kernels_a, kernels_b)
        )
    return sorted(changes, key=lambda c: abs(c.delta_us), reverse=True)


def slowest_movers(changes: Sequence[LayerChange], k: int = 3) -> list[MovedLayer]:
    """The layers that explain a slowdown, largest added time first, against the rest.

    Two profiles taken under different load differ throughout: the baseline's, profiled on a
    busy machine, can be many times slower in every layer, and then the layer that really grew
    looks faster. So each layer is compared with the baseline's time scaled by the median
    after/before ratio of the layers both tables have (1 when they were taken alike): a layer
    moves when it grew against the others, whatever the load did to all of them.
    """
    import statistics

    common = [c.after_us / c.before_us for c in changes if c.before_us and c.after_us]
    scale = statistics.median(common) if len(common) >= 3 else 1.0
    movers = []
    for change in changes:
        if change.after_us is None:
            continue
        expected = scale * (change.before_us or 0.0)
        added = change.after_us - expected
        if change.before_us is None or (
            added >= MOVE_US and added >= MOVE_FRACTION * max(expected, 1e-9)
        ):
            movers.append(MovedLayer(change, scale, added))
    return sorted(movers, key=lambda m: m.added_us, reverse=True)[:k]


@dataclass(frozen=True)
class MovedLayer:
    """A layer that grew against the rest of its table; ``scale``: how the whole table moved."""

    change: LayerChange
    scale: float
    added_us: float

    @property
    def layer(self) -> str:
        return self.change.layer

    def describe(self) -> str:
        change = self.change
        if change.before_us is None or abs(math.log(self.scale)) < math.log(1 + MOVE_FRACTION):
            return change.describe()
        expected = self.scale * change.before_us
        return (
            f"{change.layer} {change.op_type} {change.after_us / expected - 1:+.0%} against the "
            f"other layers ({change.before_us:.1f} -> {change.after_us:.1f} µs; the whole "
            f"baseline profile took {1 / self.scale:.3g}x as long)"
        )


@dataclass(frozen=True)
class LayerAcross:
    """One layer, matched by path across several items (frameworks, stacks, systems)."""

    layer: str
    op_types: tuple[str, ...]  # as each side names the op, without repeats
    sides: tuple[LayerRow | None, ...]  # per item, None where it has no such layer


def by_layer(rows: Iterable[LayerRow]) -> dict[str, LayerRow]:
    """One row per layer path, in the table's order: a framework that lists a layer once per
    op type (ONNX Runtime: an attention layer's MatMul, Softmax, Transpose… rows) counts all
    of its time under the path, its three slowest op types named, its kernels slowest first."""
    groups: dict[str, list[LayerRow]] = {}
    for row in rows:
        groups.setdefault(row.layer, []).append(row)
    merged = {}
    for name, group in groups.items():
        if len(group) == 1:
            merged[name] = group[0]
            continue
        slowest = sorted(group, key=lambda r: -r.self_us)
        ops = list(dict.fromkeys(r.op_type for r in slowest))
        shown = "+".join(ops[:3]) + (f"+{len(ops) - 3} more" if len(ops) > 3 else "")
        merged[name] = group[0].model_copy(
            update={
                "op_type": shown,
                "calls": max(r.calls for r in group),
                "self_us": sum(r.self_us for r in group),
                "total_us": sum(r.total_us for r in group),
                "kernels": list(dict.fromkeys(k for r in slowest for k in r.kernels)),
            }
        )
    return merged


def side_by_side(tables: Sequence[Sequence[LayerRow]]) -> list[LayerAcross]:
    """The layers of several tables matched by path, slowest (on any side) first, ``(other)``
    last: what MLModelScope compared, which kernel each framework chose for the same layer."""
    by_side = [by_layer(rows) for rows in tables]
    names: dict[str, None] = {}
    for side in by_side:
        names.update(dict.fromkeys(side))
    matched = []
    for name in names:
        sides = tuple(side.get(name) for side in by_side)
        ops = tuple(dict.fromkeys(row.op_type for row in sides if row is not None))
        matched.append(LayerAcross(name, ops, sides))

    def slowest(entry: LayerAcross) -> tuple[bool, float]:
        return (entry.layer == OTHER, -max(r.self_us for r in entry.sides if r is not None))

    return sorted(matched, key=slowest)

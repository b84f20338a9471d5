"""Where two frameworks part: the first layer whose outputs disagree.

A failed agreement check says that the final outputs differ, not where. Each side's worker
writes every layer's output for the same first batch (``Predictor.layer_outputs``: forward hooks
in torch, every node's output made a graph output in ONNX Runtime, each Keras layer's ``call``
wrapped in TensorFlow), named by module path. The
item's layers are walked in its own order; each must match a layer of the reference, the one of
the same name or a later one of the same shape (a converter folds layers together), within the
agreement's tolerance scaled to the layer's own magnitude. The first that matches none is where
the two part. Layers with no reference layer of their shape are not compared, and the message
says how many were.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

PATHS_KEY = "__paths__"
# Values kept of each larger layer: at positions drawn once per shape, the same on both sides,
# so a golden's layers file stays small (a few MB for a ResNet-50, not hundreds) and a changed
# filter still shows (its channel's share of the positions, some dozens of values).
SAMPLE = 4096


@dataclass(frozen=True)
class Sampled:
    """A layer's output kept as its values at ``sample_positions(shape)``."""

    shape: tuple[int, ...]
    values: np.ndarray


def sample_positions(shape: tuple[int, ...]) -> np.ndarray:
    """SAMPLE flat positions of a tensor of ``shape``, drawn with the shape as the seed: the
    same positions wherever and whenever a tensor of that shape is sampled."""
    size = int(np.prod(shape))
    rng = np.random.default_rng([int(d) for d in shape] or [0])
    return np.sort(rng.choice(size, SAMPLE, replace=False))


def _values(layer: np.ndarray | Sampled, sampled: bool) -> np.ndarray:
    """A layer's values to compare: all of them, or those at the sampled positions when the
    other side kept only those."""
    if isinstance(layer, Sampled):
        return layer.values.astype(np.float64)
    flat = np.asarray(layer, dtype=np.float64).reshape(-1)
    return flat[sample_positions(tuple(layer.shape))] if sampled else flat


NONE_KEY = "__none__"


def save_layers(path: str | Path, layers: Sequence[tuple[str, np.ndarray]] | None) -> None:
    """Write ``layers`` in their order; when the predictor cannot expose them, a file that says
    so, so the next failing item of the same cell does not ask the worker again."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if layers is None:
        np.savez(target, **{NONE_KEY: np.array(True)})
        return
    unique = _numbered([name for name, _ in layers])
    # No zip(strict=...): the Caffe image's worker runs this on Python 3.9.
    arrays_in_order = [np.asarray(value) for _, value in layers]
    numeric = [
        (unique[i], array)
        for i, array in enumerate(arrays_in_order)
        if array.dtype.kind in "biuf"  # maps, sequences and strings are not compared
    ]
    arrays: dict[str, np.ndarray] = {}
    for i, (_, array) in enumerate(numeric):
        if array.size > SAMPLE:
            arrays[f"shape_{i}"] = np.array(array.shape, dtype=np.int64)
            array = array.reshape(-1)[sample_positions(tuple(array.shape))]
        arrays[f"layer_{i}"] = array
    names = np.array([n for n, _ in numeric], dtype=str)
    np.savez_compressed(target, **{PATHS_KEY: names}, **arrays)


def load_layers(path: str | Path) -> list[tuple[str, np.ndarray | Sampled]] | None:
    """The layers a worker wrote, in order (a larger one as its sampled values); None when it
    wrote none."""
    if not Path(path).is_file():
        return None
    with np.load(path, allow_pickle=False) as archive:
        if NONE_KEY in archive.files:
            return None
        paths = [str(p) for p in archive[PATHS_KEY]]
        layers: list[tuple[str, np.ndarray | Sampled]] = []
        for i, name in enumerate(paths):
            values = np.asarray(archive[f"layer_{i}"])
            if f"shape_{i}" in archive.files:
                shape = tuple(int(d) for d in archive[f"shape_{i}"])
                layers.append((name, Sampled(shape, values)))
            else:
                layers.append((name, values))
        return layers


def _numbered(paths: list[str]) -> list[str]:
    """A module called twice in one prediction: its second output is ``path#2``."""
    seen: dict[str, int] = {}
    out = []
    for path in paths:
        seen[path] = seen.get(path, 0) + 1
        out.append(path if seen[path] == 1 else f"{path}#{seen[path]}")
    return out


@dataclass(frozen=True)
class Divergence:
    """The first of the item's layers whose output no reference layer explains, if any."""

    layer: str | None
    closest: str | None = None  # the reference layer nearest to it, of the same shape
    max_abs: float = 0.0  # ... and how far it is
    relative: float = 0.0  # max |Δ| over that reference layer's largest magnitude
    agreeing: int = 0  # the item's layers compared before it, all explained
    compared: int = 0  # the item's layers with a reference layer of their shape
    # Layers of names the reference lacks that matched none of its layers, after which later
    # layers matched again: what the reference computes outside its modules (a functional relu).
    passed_over: tuple[str, ...] = ()

    def describe(self, reference: str = "the reference") -> str:
        if self.compared == 0:
            return f"no layer's output has the shape of one of {reference}'s layers"
        passed = ""
        if self.passed_over:
            shown = ", ".join(self.passed_over[:3]) + (", …" if len(self.passed_over) > 3 else "")
            passed = (
                f"; passed over {shown}: no layer of {reference} computes "
                f"{'it' if len(self.passed_over) == 1 else 'them'}, and later layers matched again"
            )
        if self.layer is None:
            return (
                f"each of the {self.compared} comparable layers matches one of {reference}'s; "
                f"the difference arises in what no layer names{passed}"
            )
        return (
            f"first diverging layer: {self.layer} (its output matches none of {reference}'s "
            f"layers; closest: {self.closest}, max |Δ| {self.max_abs:.3g}, "
            f"{self.relative:.1%} of its largest value; {self.agreeing} earlier "
            f"layer{'s' if self.agreeing != 1 else ''} matched, {self.compared} compared"
            f"{passed})"
        )


def first_divergence(
    reference: Sequence[tuple[str, np.ndarray | Sampled]],
    item: Sequence[tuple[str, np.ndarray | Sampled]],
    *,
    atol: float,
    rtol: float,
) -> Divergence:
    """Walk the item's layers in its order; the first whose output matches no reference layer.

    A layer matches when max |Δ| <= atol + rtol · max |reference|: the agreement's tolerances,
    the relative one applied at the layer's own scale (inner activations can be far larger or
    smaller than the outputs the agreement compares). The reference layer with the same path is
    tried first, then every other of the same shape that comes after the last reference layer
    matched: a converter folds layers together (a BatchNorm into the convolution before it), so
    the node named ``layers.0.conv1`` computes what the source's ``layers.0.bn1`` outputs, and
    only a computation that no later layer of the reference performs is a divergence (a layer
    that wrongly passes its input through does not match the earlier layer it copies). Errors
    propagate, so the first such layer is where the two parted.

    One exception: a layer whose name the reference does not have (ONNX Runtime's ``Relu`` node
    for a ``torch.relu`` called in ``forward``, which no torch module outputs) may match nothing
    only because the reference computes it outside its layers. When a later layer matches
    again, the error did not propagate from it: it is passed over (and named in the message).
    A layer the reference has by name, or one after which nothing matches again, is where the
    two parted. A layer kept as sampled values (a large one) is compared at those positions.
    """
    by_shape: dict[tuple[int, ...], list[tuple[int, str, np.ndarray | Sampled]]] = {}
    named: dict[str, tuple[int, np.ndarray | Sampled]] = {}
    for position, (name, value) in enumerate(reference):
        by_shape.setdefault(tuple(value.shape), []).append((position, name, value))
        named[name] = (position, value)
    compared = agreeing = 0
    cursor = -1  # the reference position of the last match
    first: Divergence | None = None
    pending: list[Divergence] = []  # unmatched layers of names the reference lacks, since a match
    passed_over: list[str] = []
    for name, value in item:
        shape = tuple(value.shape)
        candidates = by_shape.get(shape)
        if not candidates:
            continue
        compared += 1
        if first is not None:
            continue
        same = named.get(name)
        ordered = [(same[0], name, same[1])] if same and tuple(same[1].shape) == shape else []
        ordered += [c for c in candidates if c[1] != name and c[0] > cursor]
        best: tuple[float, float, str] | None = None
        for position, candidate, kept in ordered:
            sampled = isinstance(value, Sampled) or isinstance(kept, Sampled)
            got, expected = _values(value, sampled), _values(kept, sampled)
            delta = float(np.max(np.abs(got - expected))) if got.size else 0.0
            scale = float(np.max(np.abs(expected))) if got.size else 0.0
            if np.isfinite(delta) and delta <= atol + rtol * scale:
                best = None
                cursor = max(cursor, position)
                break
            if best is None or not delta >= best[0]:  # NaN is never the closest
                best = (delta, scale, candidate)
        else:
            assert best is not None
            delta, scale, closest = best
            found = Divergence(
                name,
                closest=closest,
                max_abs=delta,
                relative=delta / scale if scale else float("inf"),
                agreeing=agreeing,
            )
            if same is None:
                pending.append(found)  # decided by what comes after it
            else:
                first = pending[0] if pending else found
            continue
        passed_over += [d.layer for d in pending if d.layer]
        pending = []
        agreeing += 1
    if first is None and pending:
        first = pending[0]
    if first is None:
        return Divergence(None, compared=compared, passed_over=tuple(passed_over))
    return replace(first, compared=compared, passed_over=tuple(passed_over))

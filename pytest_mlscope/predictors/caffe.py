"""Caffe predictor: BVLC Caffe 1.0 from Debian's ``python3-caffe`` (CPU), in a container.

Caffe has had no release since 2017 and no wheel on PyPI; Debian packaged it up to bullseye
(Python 3.9), so its stack is an image made from that: ``mlscope containers base caffe``, then
``mlscope containers build caffe``. Its items always run in that container, whatever the
session's runtime: there is no Caffe to run on the host. The artifact is the zoo's ``caffe``
format, a caffemodel with its deploy prototxt beside it (``pytest_mlscope.zoo.caffe_models``), or a
user's deploy prototxt and caffemodel (``caffe_net``), staged into one folder.

This module must import on the image's Python 3.9: no syntax newer than that outside
annotations (which ``from __future__ import annotations`` keeps as strings).
"""

from __future__ import annotations

import functools
import hashlib
import os
import statistics
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pytest_mlscope.errors import ArtifactError
from pytest_mlscope.predictors.base import Predictor
from pytest_mlscope.protocol import ArtifactRef, LayerProfile, LayerRow, PredictorInfo


class CaffePredictor(Predictor):
    name = "caffe"
    formats = ("caffe", "caffe_net")
    distributions = ()  # a Debian package in the image, not a Python distribution
    container_only: ClassVar[bool] = True

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        self.net: Any = None
        self.input = ""
        self.output = ""

    def import_framework(self) -> None:
        import caffe  # noqa: F401

    def load(self, artifact: ArtifactRef) -> None:
        import caffe

        if artifact.format == "caffe_net":  # a user's deploy prototxt and caffemodel, one folder
            folder = Path(artifact.path)
            prototxt, weights = next(folder.glob("*.prototxt")), next(folder.glob("*.caffemodel"))
            caffe.set_mode_cpu()
            self.net = caffe.Net(str(prototxt), caffe.TEST, weights=str(weights))
            self.input, self.output = self.net.inputs[0], self.net.outputs[0]
            return
        if artifact.format != "caffe":
            raise ArtifactError(f"{artifact.path}: caffe cannot load format {artifact.format!r}")
        prototxt = Path(artifact.path).with_name(str(artifact.metadata.get("prototxt", "")))
        expected = str(artifact.metadata.get("prototxt_sha256", ""))
        if not prototxt.is_file() or not expected:
            raise ArtifactError(
                f"{artifact.path}: a caffe artifact needs metadata 'prototxt' (a file beside the "
                f"caffemodel) and 'prototxt_sha256'; {prototxt} is not there"
            )
        actual = hashlib.sha256(prototxt.read_bytes()).hexdigest()
        if actual != expected:
            raise ArtifactError(
                f"{prototxt} has sha256 {actual}, expected {expected} ({artifact.expected_by})"
            )
        caffe.set_mode_cpu()
        self.net = caffe.Net(str(prototxt), caffe.TEST, weights=str(artifact.path))
        self.input, self.output = self.net.inputs[0], self.net.outputs[0]

    def prepare_input(self, batch: np.ndarray) -> Any:
        return np.ascontiguousarray(batch, dtype=np.float32)

    def predict(self, prepared: Any) -> Any:
        blob = self.net.blobs[self.input]
        if blob.data.shape != prepared.shape:  # a new batch size: Caffe reallocates the blobs
            blob.reshape(*prepared.shape)
            self.net.reshape()
        blob.data[...] = prepared  # Caffe's own feed: forward() reads the input blob
        return self.net.forward()[self.output]

    def to_numpy(self, output: Any) -> np.ndarray:
        return np.array(output, copy=True)  # the output blob is reused by the next forward

    def profile(
        self, prepared: Any, iterations: int, level: str, timeline: Any, trace_dir: Any
    ) -> LayerProfile:
        """Layer by layer, as ``caffe time`` does: ``Net.ForwardFromTo(i, i)`` for each layer.

        Caffe's CPU layers run synchronously one after another, so a layer's time is the time of
        its own forward call; the Python call around each costs a µs or so, measured on the
        Input layer (whose forward does nothing) and taken off every row.
        """
        from pytest_mlscope.tracing import plain_times, repetitions
        from pytest_mlscope.tracing.layers import other_row

        net = self.net
        names = list(net._layer_names)
        types = [layer.type for layer in net.layers]
        clock = time.perf_counter_ns
        plain = plain_times(self.predict, prepared, iterations)
        per_layer: list[list[float]] = [[] for _ in names]
        records = []
        for _ in repetitions(iterations):
            net.blobs[self.input].data[...] = prepared
            marks = [clock()]
            for index in range(len(names)):
                net._forward(index, index)
                marks.append(clock())
            records.append(marks)
            for index in range(len(names)):
                per_layer[index].append((marks[index + 1] - marks[index]) / 1e3)
        inputs = [i for i, kind in enumerate(types) if kind == "Input"]
        dispatch = min((statistics.median(per_layer[i]) for i in inputs), default=0.0)
        shown = len(records) - iterations  # the timeline shows the last ``iterations`` calls
        for number, marks in enumerate(records[shown:]):
            timeline.complete(
                "forward", marks[0] / 1e3, (marks[-1] - marks[0]) / 1e3, "framework",
                "framework", {"iteration": number},
            )  # fmt: skip
            for index, name in enumerate(names):
                if types[index] == "Input":
                    continue
                timeline.complete(
                    name, marks[index] / 1e3, (marks[index + 1] - marks[index]) / 1e3,
                    "framework", "layer", {"op_type": types[index]},
                )  # fmt: skip
        rows = []
        for index, name in enumerate(names):
            if types[index] == "Input":
                continue
            self_us = max(statistics.median(per_layer[index]) - dispatch, 0.0)
            rows.append(
                LayerRow(
                    layer=name, op_type=types[index], device="cpu", calls=1.0,
                    self_us=self_us, total_us=self_us, kernels=_kernels(types[index]),
                )
            )  # fmt: skip
        median_plain = statistics.median(plain)
        rows.append(other_row(rows, median_plain, "outside layers"))
        notes = [
            f"layer times from Net.ForwardFromTo per layer (as `caffe time`) over {len(records)} "
            f"passes, less {dispatch:.2f} µs of call overhead each (the Input layer's); a "
            f"prediction took {median_plain:.1f} µs"
        ]
        return rows, plain, notes

    def layer_outputs(self, prepared: Any) -> list[tuple[str, np.ndarray]] | None:
        """One layer at a time (``Net.ForwardFromTo(i, i)``), each layer's top blobs copied
        right after it runs: Caffe's in-place layers (ReLU, BatchNorm, Scale) write into their
        input's blob, which the next layer overwrites, so reading the blobs after a whole
        forward would show every in-place chain's last value only. Named by the layer, the
        prototxt's name (the zoo's are torch's module paths)."""
        net = self._fed(prepared)
        names = list(net._layer_names)
        captured: list[tuple[str, np.ndarray]] = []
        for index, name in enumerate(names):
            net._forward(index, index)
            if net.layers[index].type == "Input":
                continue
            for top in net.top_names[name][:1]:  # a layer's first output, as torch's hooks
                captured.append((name, np.array(net.blobs[top].data, dtype=np.float32)))
        return captured

    def _fed(self, prepared: Any) -> Any:
        """The net with ``prepared`` in its input blob (reshaped to it), ready to run."""
        blob = self.net.blobs[self.input]
        if blob.data.shape != prepared.shape:
            blob.reshape(*prepared.shape)
            self.net.reshape()
        blob.data[...] = prepared
        return self.net

    def close(self) -> None:
        self.net = None

    def info(self) -> PredictorInfo:
        import caffe

        return self.described(
            str(getattr(caffe, "__version__", "?")),
            numpy=np.__version__,
            blas=_blas(),
        )


def _kernels(layer_type: str) -> list[str]:
    """Caffe's CPU engine: convolutions as im2col + SGEMM, inner products as SGEMM (BLAS)."""
    if layer_type == "Convolution":
        return [f"im2col + sgemm ({_blas()})"]
    if layer_type == "InnerProduct":
        return [f"sgemm ({_blas()})"]
    return []


@functools.cache
def _blas() -> str:
    """The BLAS libcaffe links through Debian's alternatives (OpenBLAS, or the slow reference)."""
    for folder in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib"):
        link = Path(folder) / "libblas.so.3"
        if link.exists():
            target = os.path.realpath(link)
            if "openblas" in target:
                return "OpenBLAS"
            if "blis" in target:
                return "BLIS"
            if "atlas" in target:
                return "ATLAS"
            return "reference BLAS"
    return "BLAS"

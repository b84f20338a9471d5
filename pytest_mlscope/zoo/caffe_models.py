"""The bundled models as Caffe nets: a deploy prototxt and a caffemodel, written without Caffe.

Caffe lives only in its container (Debian bullseye's ``python3-caffe``), so the zoo, which
runs on the host, writes both files itself: the prototxt is text, and the caffemodel is a
``NetParameter`` protobuf whose few fields (layer name and type, blob shape and data) are encoded
here by hand rather than through Caffe's generated ``caffe_pb2``. Caffe shares torch's layouts
(NCHW, OIHW kernels, (out, in) inner-product weights, a C-order flatten), so the weights go in as
torch has them, and every layer keeps its torch name (``features.3``), so layer tables and
traces read alike across frameworks.

Caffe's pooling rounds its output size up where torch rounds down; the bundled models' pools
divide exactly (AlexNet at 224x224: 55 -> 27 -> 13 -> 6), so both give the same shapes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Layer:
    name: str
    type: str  # Caffe's layer type: Convolution, ReLU, Pooling, InnerProduct
    bottom: str
    params: str = ""  # the layer's parameter block, prototxt text
    in_place: bool = False  # ReLU writes its bottom blob, as Caffe's reference nets do
    blobs: tuple[str, ...] = field(default=())  # weight names in the torch state dict

    @property
    def top(self) -> str:
        return self.bottom if self.in_place else self.name


def _conv(name: str, bottom: str, out: int, kernel: int, stride: int = 1, pad: int = 0) -> Layer:
    params = (
        f"convolution_param {{ num_output: {out} kernel_size: {kernel} stride: {stride} "
        f"pad: {pad} }}"
    )
    return Layer(name, "Convolution", bottom, params, blobs=(f"{name}.weight", f"{name}.bias"))


def _relu(name: str, bottom: str) -> Layer:
    return Layer(name, "ReLU", bottom, in_place=True)


def _max_pool(name: str, bottom: str, kernel: int, stride: int) -> Layer:
    params = f"pooling_param {{ pool: MAX kernel_size: {kernel} stride: {stride} }}"
    return Layer(name, "Pooling", bottom, params)


def _dense(name: str, bottom: str, out: int) -> Layer:
    params = f"inner_product_param {{ num_output: {out} }}"
    return Layer(name, "InnerProduct", bottom, params, blobs=(f"{name}.weight", f"{name}.bias"))


def _chain(specs: Sequence[tuple[str, str, tuple[object, ...]]]) -> list[Layer]:
    makers = {"conv": _conv, "relu": _relu, "pool": _max_pool, "dense": _dense}
    layers: list[Layer] = []
    bottom = "data"
    for kind, name, args in specs:
        layer = makers[kind](name, bottom, *args)  # type: ignore[operator]
        layers.append(layer)
        bottom = layer.top
    return layers


def alexnet_layers(num_classes: int = 1000) -> list[Layer]:
    return _chain(
        [
            ("conv", "features.0", (64, 11, 4, 2)),
            ("relu", "features.1", ()),
            ("pool", "features.2", (3, 2)),
            ("conv", "features.3", (192, 5, 1, 2)),
            ("relu", "features.4", ()),
            ("pool", "features.5", (3, 2)),
            ("conv", "features.6", (384, 3, 1, 1)),
            ("relu", "features.7", ()),
            ("conv", "features.8", (256, 3, 1, 1)),
            ("relu", "features.9", ()),
            ("conv", "features.10", (256, 3, 1, 1)),
            ("relu", "features.11", ()),
            ("pool", "features.12", (3, 2)),
            # torch's adaptive 6x6 average pool is the identity at this size; dropout is off
            ("dense", "classifier.1", (4096,)),
            ("relu", "classifier.2", ()),
            ("dense", "classifier.4", (4096,)),
            ("relu", "classifier.5", ()),
            ("dense", "classifier.6", (num_classes,)),
        ]
    )


def digits_cnn_layers(conv2_kernel: int = 3) -> list[Layer]:
    return _chain(
        [
            ("conv", "features.0", (16, 3, 1, 1)),
            ("relu", "features.1", ()),
            ("conv", "features.2", (32, conv2_kernel, 1, conv2_kernel // 2)),
            ("relu", "features.3", ()),
            ("pool", "features.4", (2, 2)),
            ("dense", "classifier.1", (64,)),
            ("relu", "classifier.2", ()),
            ("dense", "classifier.3", (10,)),
        ]
    )


def prototxt(name: str, input_shape: Sequence[int], layers: Sequence[Layer]) -> str:
    """A deploy net: an Input layer named ``data`` (batch size 1; the predictor reshapes it)."""
    dims = " ".join(f"dim: {d}" for d in (1, *input_shape))
    lines = [
        f'name: "{name}"',
        f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}',
    ]
    for layer in layers:
        body = f'name: "{layer.name}" type: "{layer.type}" bottom: "{layer.bottom}" '
        body += f'top: "{layer.top}"'
        if layer.params:
            body += f" {layer.params}"
        lines.append(f"layer {{ {body} }}")
    return "\n".join(lines) + "\n"


# -- the caffemodel: protobuf wire format, the fields CopyTrainedLayersFrom reads -----------------
# NetParameter { string name = 1; repeated LayerParameter layer = 100; }
# LayerParameter { string name = 1; string type = 2; repeated BlobProto blobs = 7; }
# BlobProto { repeated float data = 5 [packed]; BlobShape shape = 7; }
# BlobShape { repeated int64 dim = 1 [packed]; }


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): strings, messages, packed repeated scalars."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _blob(array: np.ndarray) -> bytes:
    shape = _field(1, b"".join(_varint(int(d)) for d in array.shape))
    data = np.ascontiguousarray(array, dtype="<f4").tobytes()
    return _field(5, data) + _field(7, shape)


def caffemodel(name: str, layers: Sequence[Layer], weights: Mapping[str, np.ndarray]) -> bytes:
    parts = [_field(1, name.encode())]
    for layer in layers:
        if not layer.blobs:
            continue
        body = _field(1, layer.name.encode()) + _field(2, layer.type.encode())
        body += b"".join(_field(7, _blob(weights[blob])) for blob in layer.blobs)
        parts.append(_field(100, body))
    return b"".join(parts)


LAYERS = {"alexnet": alexnet_layers, "digits_cnn": digits_cnn_layers}
INPUT_SHAPES = {"alexnet": (3, 224, 224), "digits_cnn": (1, 8, 8)}


def write(
    model: str, out_dir: Path, weights: Mapping[str, np.ndarray], **kwargs: int
) -> tuple[str, dict[str, str]]:
    """Write ``<model>.prototxt`` and ``<model>.caffemodel``; the caffemodel's file name and the
    metadata that names the prototxt and its checksum (the cache records the caffemodel's)."""
    layers = LAYERS[model](**kwargs)
    text = prototxt(model, INPUT_SHAPES[model], layers)
    (out_dir / f"{model}.prototxt").write_text(text)
    (out_dir / f"{model}.caffemodel").write_bytes(caffemodel(model, layers, weights))
    return f"{model}.caffemodel", {
        "prototxt": f"{model}.prototxt",
        "prototxt_sha256": hashlib.sha256(text.encode()).hexdigest(),
    }

"""The bundled models in Keras 3, built from the framework-neutral weights the zoo writes.

The zoo trains and initialises in torch and saves every parameter under its torch name in torch's
layout (``numpy_weights``: an ``.npz``). These builders lay the same numbers out the Keras way —
convolution kernels OIHW -> HWIO, dense kernels transposed, and the first dense layer's inputs
reordered from torch's channels-first flatten to Keras's channels-last one — so TensorFlow computes
what torch computes, and the cross-framework agreement checks hold. Layers carry the torch names
(``features.3``, ``classifier.1``), so layer tables of the two frameworks read alike.

Inputs arrive channels-first, as the manifests' preprocessing makes them for every framework; the
first layer moves them to channels-last, the layout TensorFlow's CPU convolutions take.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def _conv(weights: Mapping[str, np.ndarray], name: str) -> list[np.ndarray]:
    return [weights[f"{name}.weight"].transpose(2, 3, 1, 0), weights[f"{name}.bias"]]


def _dense(
    weights: Mapping[str, np.ndarray], name: str, chw: tuple[int, int, int] | None = None
) -> list[np.ndarray]:
    """A torch Linear's (out, in) weight as a Keras (in, out) kernel; ``chw``: the layer reads a
    flattened feature map of that shape, whose element order differs between the frameworks."""
    kernel = weights[f"{name}.weight"]
    if chw is not None:
        channels, height, width = chw
        kernel = kernel.reshape(-1, channels, height, width).transpose(0, 2, 3, 1)
        kernel = kernel.reshape(kernel.shape[0], -1)
    return [np.ascontiguousarray(kernel.T), weights[f"{name}.bias"]]


def _assign(model: Any, values: dict[str, list[np.ndarray]]) -> Any:
    for name, arrays in values.items():
        layer = model.get_layer(name)
        expected = [tuple(w.shape) for w in layer.get_weights()]
        found = [tuple(a.shape) for a in arrays]
        if expected != found:
            raise ValueError(f"layer {name}: weights of shapes {found}, the layer takes {expected}")
        layer.set_weights(arrays)
    return model


def alexnet(weights: Mapping[str, np.ndarray], num_classes: int = 1000) -> Any:
    """AlexNet for 3x224x224 inputs (torch's adaptive pool is the identity at that size)."""
    import keras
    from keras import layers

    inputs = keras.Input((3, 224, 224), name="input")
    x = layers.Permute((2, 3, 1), name="to_channels_last")(inputs)
    x = layers.ZeroPadding2D(2, name="features.0.pad")(x)
    x = layers.Conv2D(64, 11, strides=4, name="features.0")(x)
    x = layers.ReLU(name="features.1")(x)
    x = layers.MaxPooling2D(3, 2, name="features.2")(x)
    x = layers.Conv2D(192, 5, padding="same", name="features.3")(x)
    x = layers.ReLU(name="features.4")(x)
    x = layers.MaxPooling2D(3, 2, name="features.5")(x)
    for index, channels in ((6, 384), (8, 256), (10, 256)):
        x = layers.Conv2D(channels, 3, padding="same", name=f"features.{index}")(x)
        x = layers.ReLU(name=f"features.{index + 1}")(x)
    x = layers.MaxPooling2D(3, 2, name="features.12")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(4096, name="classifier.1")(x)
    x = layers.ReLU(name="classifier.2")(x)
    x = layers.Dense(4096, name="classifier.4")(x)
    x = layers.ReLU(name="classifier.5")(x)
    outputs = layers.Dense(num_classes, name="classifier.6")(x)
    model = keras.Model(inputs, outputs, name="alexnet")
    values = {f"features.{i}": _conv(weights, f"features.{i}") for i in (0, 3, 6, 8, 10)}
    values["classifier.1"] = _dense(weights, "classifier.1", chw=(256, 6, 6))
    values["classifier.4"] = _dense(weights, "classifier.4")
    values["classifier.6"] = _dense(weights, "classifier.6")
    return _assign(model, values)


def digits_cnn(weights: Mapping[str, np.ndarray], conv2_kernel: int = 3) -> Any:
    import keras
    from keras import layers

    inputs = keras.Input((1, 8, 8), name="input")
    x = layers.Permute((2, 3, 1), name="to_channels_last")(inputs)
    x = layers.Conv2D(16, 3, padding="same", name="features.0")(x)
    x = layers.ReLU(name="features.1")(x)
    x = layers.Conv2D(32, conv2_kernel, padding="same", name="features.2")(x)
    x = layers.ReLU(name="features.3")(x)
    x = layers.MaxPooling2D(2, name="features.4")(x)
    x = layers.Flatten(name="classifier.0")(x)
    x = layers.Dense(64, name="classifier.1")(x)
    x = layers.ReLU(name="classifier.2")(x)
    outputs = layers.Dense(10, name="classifier.3")(x)
    model = keras.Model(inputs, outputs, name="digits_cnn")
    return _assign(
        model,
        {
            "features.0": _conv(weights, "features.0"),
            "features.2": _conv(weights, "features.2"),
            "classifier.1": _dense(weights, "classifier.1", chw=(32, 4, 4)),
            "classifier.3": _dense(weights, "classifier.3"),
        },
    )

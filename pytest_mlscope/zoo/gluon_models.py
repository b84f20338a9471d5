"""The bundled models in MXNet Gluon (1.x), built from the zoo's framework-neutral weights.

Gluon shares torch's layouts (NCHW activations, OIHW convolution kernels, (out, in) dense
weights, a channels-first flatten), so the ``numpy_weights`` arrays go in as they are. Each
torch module has a block of its own, in torch's order; ``layer_names`` gives their torch names.
The network is hybridized with static memory and shapes: one cached graph, as MXNet serves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def _build(layers: list[tuple[str, Any]], weights: Mapping[str, np.ndarray]) -> Any:
    import mxnet as mx
    from mxnet import gluon

    net = gluon.nn.HybridSequential()
    for _, block in layers:
        net.add(block)
    net.initialize(mx.init.Zero(), ctx=mx.cpu())
    for name, block in layers:
        if f"{name}.weight" in weights:
            block.weight.set_data(mx.nd.array(weights[f"{name}.weight"]))
            block.bias.set_data(mx.nd.array(weights[f"{name}.bias"]))
    net.layer_names = [name for name, _ in layers]
    net.hybridize(static_alloc=True, static_shape=True)
    return net


def alexnet(weights: Mapping[str, np.ndarray], num_classes: int = 1000) -> Any:
    """AlexNet for 3x224x224 inputs (torch's adaptive pool is the identity at that size)."""
    from mxnet.gluon import nn

    def relu() -> Any:
        return nn.Activation("relu")

    layers = [
        ("features.0", nn.Conv2D(64, 11, strides=4, padding=2, in_channels=3)),
        ("features.1", relu()),
        ("features.2", nn.MaxPool2D(3, 2)),
        ("features.3", nn.Conv2D(192, 5, padding=2, in_channels=64)),
        ("features.4", relu()),
        ("features.5", nn.MaxPool2D(3, 2)),
        ("features.6", nn.Conv2D(384, 3, padding=1, in_channels=192)),
        ("features.7", relu()),
        ("features.8", nn.Conv2D(256, 3, padding=1, in_channels=384)),
        ("features.9", relu()),
        ("features.10", nn.Conv2D(256, 3, padding=1, in_channels=256)),
        ("features.11", relu()),
        ("features.12", nn.MaxPool2D(3, 2)),
        ("flatten", nn.Flatten()),
        ("classifier.1", nn.Dense(4096, in_units=256 * 6 * 6)),
        ("classifier.2", relu()),
        ("classifier.4", nn.Dense(4096, in_units=4096)),
        ("classifier.5", relu()),
        ("classifier.6", nn.Dense(num_classes, in_units=4096)),
    ]
    return _build(layers, weights)


def digits_cnn(weights: Mapping[str, np.ndarray], conv2_kernel: int = 3) -> Any:
    from mxnet.gluon import nn

    layers = [
        ("features.0", nn.Conv2D(16, 3, padding=1, in_channels=1)),
        ("features.1", nn.Activation("relu")),
        ("features.2", nn.Conv2D(32, conv2_kernel, padding=conv2_kernel // 2, in_channels=16)),
        ("features.3", nn.Activation("relu")),
        ("features.4", nn.MaxPool2D(2)),
        ("classifier.0", nn.Flatten()),
        ("classifier.1", nn.Dense(64, in_units=32 * 4 * 4)),
        ("classifier.2", nn.Activation("relu")),
        ("classifier.3", nn.Dense(10, in_units=64)),
    ]
    return _build(layers, weights)

"""Train the team's digit classifier and ship it the way the team does: a ``torch.export``
program for PyTorch, an ONNX file for ONNX Runtime, and the held-out split as the test data.

Everything lands in ``manifests/`` beside ``digits.yaml`` (a manifest may only name files in its
own folder or below). Deterministic: the same seed and split give the same files on one machine.

    python train.py
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

HERE = Path(__file__).resolve().parent / "manifests"


class DigitsNet(nn.Module):
    """Two convolutions and a linear head over 8x8 grey digits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.head = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def main() -> None:
    torch.manual_seed(0)
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]  # N, 1, 8, 8 in [0, 1]
    train_x, test_x, train_y, test_y = train_test_split(
        images, digits.target, test_size=0.25, random_state=0, stratify=digits.target
    )
    net = DigitsNet()
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    x, y = torch.from_numpy(train_x), torch.from_numpy(train_y)
    for _ in range(15):
        for batch in torch.randperm(len(x)).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(x[batch]), y[batch]).backward()
            optimizer.step()
    net.eval()
    with torch.no_grad():
        accuracy = float((net(torch.from_numpy(test_x)).argmax(1).numpy() == test_y).mean())
    HERE.mkdir(exist_ok=True)
    example = torch.from_numpy(test_x[:2])
    batch = torch.export.Dim("batch")
    program = torch.export.export(net, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, HERE / "digits.pt2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (example,), str(HERE / "digits.onnx"), input_names=["input"],
            output_names=["logits"], dynamic_axes={"input": {0: "batch"}}, dynamo=False,
        )  # fmt: skip
    np.savez(HERE / "digits_test.npz", inputs=test_x, labels=test_y.astype(np.int64))
    print(f"held-out top-1 {accuracy:.3f}; wrote digits.pt2, digits.onnx, digits_test.npz")


if __name__ == "__main__":
    main()

"""A team's small text encoder, as users write and export one: token embeddings, one
self-attention, mean over the real tokens (pad id 0), unit length.

``quadratic`` adds a length x length product over a wide projection whose result is multiplied by
zero: the outputs stay the same, the cost grows with the square of the length (the scaling
tests' edit).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
import torch._dynamo
from torch import nn

# Imported here, at collection, not by the first export inside a pytester test: Pytester puts
# sys.modules back after each test, and a second import of torch._dynamo (its operator libraries
# stay registered) or of onnx (its protobuf extension stays loaded) aborts the process.
assert onnx and torch._dynamo


class Encoder(nn.Module):
    def __init__(self, quadratic: bool = False) -> None:
        super().__init__()
        self.quadratic = quadratic
        self.embed = nn.Embedding(30522, 32)
        self.query, self.key = nn.Linear(32, 32), nn.Linear(32, 32)
        self.wide = nn.Linear(32, 256)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        keep = (ids != 0).to(torch.float32)[..., None]
        x = self.embed(ids)
        scores = self.query(x) @ self.key(x).transpose(1, 2) / 32**0.5
        hidden = torch.softmax(scores - 1e4 * (1 - keep.transpose(1, 2)), -1) @ x
        if self.quadratic:
            wide = self.wide(x)
            extra = torch.softmax(wide @ wide.transpose(1, 2), -1) @ hidden
            hidden = hidden + 0.0 * extra
        pooled = (hidden * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        return pooled / pooled.norm(dim=1, keepdim=True).clamp(min=1e-9)


def encoder(quadratic: bool = False) -> Encoder:
    """The same weights every time (the quadratic edit keeps them)."""
    torch.manual_seed(0)
    return Encoder(quadratic).eval()


def export_onnx(net: nn.Module, path: Path, batch: int = 1) -> None:
    """``torch.onnx.export`` with the batch and the length left open, as a team exports it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.ones(batch, 16, dtype=torch.int64),),
            str(path),
            dynamo=False,
            input_names=["ids"],
            output_names=["embedding"],
            dynamic_axes={"ids": {0: "batch", 1: "length"}, "embedding": {0: "batch"}},
            opset_version=17,
        )

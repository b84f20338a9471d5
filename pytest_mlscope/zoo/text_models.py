"""A BERT sentence encoder as a plain torch module, to carry all-MiniLM-L6-v2's weights.

Written out rather than taken from ``transformers`` so a worker that loads the state dict needs
torch alone. Module names are Hugging Face's (``encoder.layer.0.attention.self.query``), so the
package's safetensors load without renaming and layer tables read like the reference's.

The model takes token ids only: the attention mask is ``ids != pad_id``, derived inside, which
keeps one input per model (what every predictor feeds) and makes padding to the item's sequence
length change the cost, never the embedding. Like sentence-transformers' all-MiniLM-L6-v2, it
mean-pools the last hidden states over the real tokens and L2-normalizes the result.

Torch is imported at module level: only builders and the torch predictor import this module.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional


class _SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = x.shape
        return x.view(batch, length, self.heads, hidden // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        # Written out rather than scaled_dot_product_attention: the TorchScript ONNX exporter
        # and every profiler see the two matmuls and the softmax as operators of their own.
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1]) + mask
        context = torch.matmul(torch.softmax(scores, dim=-1), v)
        return context.transpose(1, 2).reshape(x.shape)


class _Projection(nn.Module):
    """A dense layer, then the residual and LayerNorm (BERT's ``*.output``)."""

    def __init__(self, inner: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(inner, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)  # Hugging Face's name

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _Attention(nn.Module):
    def __init__(self, hidden: int, heads: int, eps: float) -> None:
        super().__init__()
        self.self = _SelfAttention(hidden, heads)
        self.output = _Projection(hidden, hidden, eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class _Intermediate(nn.Module):
    def __init__(self, hidden: int, inner: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.gelu(self.dense(x))  # the exact (erf) GELU, as BERT's "gelu"


class _Layer(nn.Module):
    def __init__(self, hidden: int, heads: int, inner: int, eps: float) -> None:
        super().__init__()
        self.attention = _Attention(hidden, heads, eps)
        self.intermediate = _Intermediate(hidden, inner)
        self.output = _Projection(inner, hidden, eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        attended = self.attention(x, mask)
        return self.output(self.intermediate(attended), attended)


class _Encoder(nn.Module):
    def __init__(self, layers: int, hidden: int, heads: int, inner: int, eps: float) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(hidden, heads, inner, eps) for _ in range(layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, mask)
        return x


class _Embeddings(nn.Module):
    def __init__(self, vocab: int, hidden: int, positions: int, types: int, eps: float) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(positions, hidden)
        self.token_type_embeddings = nn.Embedding(types, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)  # Hugging Face's name

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.word_embeddings(ids) + self.position_embeddings(positions)[None]
        # One segment: every token has type 0.
        return self.LayerNorm(x + self.token_type_embeddings.weight[0])


class SentenceEncoder(nn.Module):
    """BERT, mean pooling and L2 normalization: token ids [batch, length] in, one unit vector
    per sentence out. The defaults are all-MiniLM-L6-v2's configuration.

    ``extra_attention`` repeats each layer's attention scores that many more times (a test model
    variant: cost that grows with the square of the length while the output stays the same).
    """

    def __init__(
        self,
        vocab_size: int = 30522,
        hidden_size: int = 384,
        num_layers: int = 6,
        num_heads: int = 12,
        intermediate_size: int = 1536,
        max_positions: int = 512,
        type_vocab_size: int = 2,
        layer_norm_eps: float = 1e-12,
        pad_id: int = 0,
        extra_attention: int = 0,
    ) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.extra_attention = extra_attention
        self.embeddings = _Embeddings(
            vocab_size, hidden_size, max_positions, type_vocab_size, layer_norm_eps
        )
        self.encoder = _Encoder(
            num_layers, hidden_size, num_heads, intermediate_size, layer_norm_eps
        )

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        keep = (input_ids != self.pad_id).to(torch.float32)  # [batch, length]
        # Added to the scores: padded keys get the lowest float, as in Hugging Face's BERT.
        mask = (1.0 - keep)[:, None, None, :] * torch.finfo(torch.float32).min
        hidden = self.encoder(self.embeddings(input_ids), mask)
        if self.extra_attention:
            hidden = hidden + self._quadratic_noop(hidden)
        pooled = (hidden * keep[..., None]).sum(dim=1) / keep.sum(dim=1, keepdim=True).clamp(
            min=1e-9
        )
        return functional.normalize(pooled, p=2.0, dim=1)

    def _quadratic_noop(self, hidden: torch.Tensor) -> torch.Tensor:
        """Work of order length² × hidden whose result is exactly zero: a chain of attentions
        without projections, each on the previous one's output (a chain, so no exporter or
        runtime can merge the steps as common subexpressions), then multiplied by zero."""
        x = hidden
        for _ in range(self.extra_attention):
            scores = torch.matmul(x, x.transpose(-1, -2)) / math.sqrt(x.shape[-1])
            x = torch.matmul(torch.softmax(scores, dim=-1), x)  # [batch, length, hidden]
        return x * 0.0

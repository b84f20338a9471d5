"""A Llama-architecture causal language model as a plain torch module, to carry SmolLM2's weights.

Written out rather than taken from ``transformers`` so a worker that loads the state dict needs
torch alone. Module names are Hugging Face's ``LlamaForCausalLM`` (``model.layers.0.self_attn.
q_proj``), so layer tables read like the reference's and a Hugging Face state dict loads as is.

The arithmetic follows ``transformers``' Llama in float32 step for step (RMSNorm over float32,
rotary angles as position × inverse frequency, SDPA with grouped-query heads), so prefill logits
agree with it to rounding and greedy continuations agree token for token.

Torch is imported at module level: only builders and the torch predictor import this module.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

# One layer's (key, value), each [batch, kv_heads, cached length, head_dim]; one per layer.
LayerCache = tuple[torch.Tensor, torch.Tensor]
Cache = tuple[LayerCache, ...]
# The rotary embedding's (cos, sin) of the positions, each [length, head_dim].
Rotary = tuple[torch.Tensor, torch.Tensor]


class _RMSNorm(nn.Module):
    def __init__(self, hidden: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Mean of squares in float32 whatever the input dtype, as Hugging Face's LlamaRMSNorm.
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return self.weight * (x.float() * torch.rsqrt(variance + self.eps)).to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    """The rotation pairs dimension i with i + head_dim/2 (Hugging Face's layout, not the
    interleaved one llama.cpp stores; ``gguf_weights`` undoes that permutation)."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class _Attention(nn.Module):
    def __init__(self, hidden: int, heads: int, kv_heads: int) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, hidden // heads
        self.q_proj = nn.Linear(hidden, heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(heads * self.head_dim, hidden, bias=False)

    def forward(
        self, x: torch.Tensor, rotary: Rotary, past: LayerCache | None
    ) -> tuple[torch.Tensor, LayerCache]:
        cos, sin = rotary
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        if past is not None:
            k = torch.cat((past[0], k), dim=2)
            v = torch.cat((past[1], v), dim=2)
        # The cache keeps kv_heads heads (a third of the memory here); enable_gqa shares each
        # among its group of query heads without materializing the repeat.
        if past is None:
            out = functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        elif length == 1:
            out = functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        else:
            # Several new tokens after a cache: SDPA's is_causal aligns the triangle to the top
            # left, which would hide the cache, so the mask is spelled out with the offset.
            offset = k.shape[2] - length
            rows = torch.arange(length, device=x.device)[:, None] + offset
            mask = torch.arange(k.shape[2], device=x.device)[None, :] <= rows
            out = functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1)), (k, v)


class _MLP(nn.Module):
    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(functional.silu(self.gate_proj(x)) * self.up_proj(x))


class _Layer(nn.Module):
    def __init__(self, hidden: int, heads: int, kv_heads: int, intermediate: int, eps: float):
        super().__init__()
        self.input_layernorm = _RMSNorm(hidden, eps)
        self.self_attn = _Attention(hidden, heads, kv_heads)
        self.post_attention_layernorm = _RMSNorm(hidden, eps)
        self.mlp = _MLP(hidden, intermediate)

    def forward(
        self, x: torch.Tensor, rotary: Rotary, past: LayerCache | None
    ) -> tuple[torch.Tensor, LayerCache]:
        attended, present = self.self_attn(self.input_layernorm(x), rotary, past)
        x = x + attended
        return x + self.mlp(self.post_attention_layernorm(x)), present


class _Decoder(nn.Module):
    """``LlamaModel``: embeddings, the layers and the final norm (Hugging Face's ``model.*``)."""

    def __init__(
        self,
        vocab: int,
        hidden: int,
        layers: int,
        heads: int,
        kv_heads: int,
        intermediate: int,
        eps: float,
    ) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, hidden)
        self.layers = nn.ModuleList(
            _Layer(hidden, heads, kv_heads, intermediate, eps) for _ in range(layers)
        )
        self.norm = _RMSNorm(hidden, eps)


class LlamaCausalLM(nn.Module):
    """Token ids [batch, length] in; next-token logits [batch, length, vocab] and the extended
    key/value cache out. The defaults are SmolLM2-135M's configuration.

    The cache is an input and an output rather than state kept on the module, so one loaded
    model serves any number of concurrent sequences and a predictor that feeds ids alone gets
    a plain prefill. Positions continue from the cached length.
    """

    def __init__(
        self,
        vocab_size: int = 49152,
        hidden_size: int = 576,
        num_layers: int = 30,
        num_heads: int = 9,
        num_kv_heads: int = 3,
        intermediate_size: int = 1536,
        rope_theta: float = 100000.0,
        rms_norm_eps: float = 1e-5,
        max_positions: int = 8192,
        tie_word_embeddings: bool = True,
    ) -> None:
        super().__init__()
        self.max_positions = max_positions
        self.model = _Decoder(
            vocab_size,
            hidden_size,
            num_layers,
            num_heads,
            num_kv_heads,
            intermediate_size,
            rms_norm_eps,
        )
        self.lm_head = nn.Linear(hidden_size, vocab_size, bias=False)
        if tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        head_dim = hidden_size // num_heads
        # Computed as Hugging Face computes it (float32 powers of a Python float), so the
        # rotary angles, and with them the logits, match its bit for bit.
        exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
        inv_freq = 1.0 / (rope_theta**exponents)
        self.inv_freq: torch.Tensor
        self.register_buffer("inv_freq", inv_freq, persistent=False)  # derived, not a weight

    def _rotary(self, start: int, length: int, device: torch.device) -> Rotary:
        positions = torch.arange(start, start + length, device=device, dtype=torch.float32)
        angles = positions[:, None] * self.inv_freq[None, :]
        angles = torch.cat((angles, angles), dim=-1)  # [length, head_dim], broadcast over heads
        return angles.cos(), angles.sin()

    def forward(
        self, input_ids: torch.Tensor, past_key_values: Cache | None = None
    ) -> tuple[torch.Tensor, Cache]:
        start = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        length = input_ids.shape[1]
        if start + length > self.max_positions:
            raise ValueError(
                f"{start + length} positions, more than the model's {self.max_positions}"
            )
        rotary = self._rotary(start, length, input_ids.device)
        x = self.model.embed_tokens(input_ids)
        cache = []
        for index, layer in enumerate(self.model.layers):
            past = None if past_key_values is None else past_key_values[index]
            x, present = layer(x, rotary, past)
            cache.append(present)
        return self.lm_head(self.model.norm(x)), tuple(cache)


@torch.inference_mode()
def greedy(model: LlamaCausalLM, ids: list[int], new_tokens: int) -> list[int]:
    """The ``new_tokens`` ids that follow ``ids`` under greedy decoding: one prefill, then one
    cached step per token. It never stops early (no end-of-sequence check), so every prompt
    yields the same number of tokens and the same work, which is what a benchmark compares."""
    generated: list[int] = []
    if new_tokens <= 0:
        return generated
    logits, cache = model(torch.tensor([ids], dtype=torch.int64))
    token = logits[:, -1].argmax(dim=-1, keepdim=True)  # [1, 1]
    generated.append(int(token))
    for _ in range(new_tokens - 1):
        logits, cache = model(token, cache)
        token = logits[:, -1].argmax(dim=-1, keepdim=True)
        generated.append(int(token))
    return generated

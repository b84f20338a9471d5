"""Llama weights from a GGUF file (llama.cpp's format), as float32 tensors under Hugging Face's
names, for ``pytest_mlscope.zoo.decoder_models.LlamaCausalLM``.

A module of its own so that only a build imports ``gguf`` (imported here at module level): a
worker that loads the saved state dict needs torch alone. Quantized tensors (Q4_1, Q8_0, ...) are
dequantized once, here; the model then runs in float32 on the values the quantization left.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGUFReader
from gguf.quants import dequantize

# llama.cpp's tensor names (per layer after ``blk.N.``) -> Hugging Face's LlamaForCausalLM.
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_LAYER = re.compile(r"blk\.(\d+)\.(.+)")


def _hf_name(name: str) -> str:
    if name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[name]
    match = _LAYER.fullmatch(name)
    if match is None or match.group(2) not in _LAYER_NAMES:
        raise ValueError(f"unexpected GGUF tensor {name!r} for a Llama model")
    return f"model.layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}"


def _unpermute(weights: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's rotary permutation of a Q or K projection ([heads * head_dim, hidden]).

    llama.cpp rotates interleaved pairs (2i, 2i + 1) where Hugging Face rotates (i, i + d/2), so
    its converter reorders each head's output rows as ``reshape(heads, 2, d/2).swapaxes(1, 2)``;
    this is the inverse, as ``transformers``' LlamaTensorProcessor._reverse_permute_weights.
    K uses the key/value head count, since its rows hold kv_heads heads.
    """
    half = weights.shape[0] // heads // 2
    return weights.reshape(heads, half, 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    if field is None:
        raise ValueError(f"the GGUF file has no {key!r}")
    return field.contents()


def read_llama(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The ``LlamaCausalLM`` keyword arguments and its state dict (float32 torch tensors) from a
    llama-architecture GGUF. When the file has no ``output.weight`` the head is tied to the
    embedding, and ``lm_head.weight`` is the embedding's tensor itself."""
    reader = GGUFReader(str(path))
    architecture = _field(reader, "general.architecture")
    if architecture != "llama":
        raise ValueError(f"{path}: a {architecture!r} GGUF, not a llama one")

    def meta(key: str) -> Any:
        return _field(reader, f"llama.{key}")

    hidden, heads = int(meta("embedding_length")), int(meta("attention.head_count"))
    kv_heads = int(meta("attention.head_count_kv"))
    rope_dims = reader.fields.get("llama.rope.dimension_count")
    if rope_dims is not None and int(rope_dims.contents()) != hidden // heads:
        raise ValueError(f"{path}: partial rotary embeddings are not supported")
    if any(key.startswith("llama.rope.scaling") for key in reader.fields):
        raise ValueError(f"{path}: rotary scaling is not supported")
    names = {tensor.name for tensor in reader.tensors}
    config: dict[str, Any] = {
        "vocab_size": len(reader.fields["tokenizer.ggml.tokens"].data),
        "hidden_size": hidden,
        "num_layers": int(meta("block_count")),
        "num_heads": heads,
        "num_kv_heads": kv_heads,
        "intermediate_size": int(meta("feed_forward_length")),
        "rope_theta": float(meta("rope.freq_base")),
        "rms_norm_eps": float(meta("attention.layer_norm_rms_epsilon")),
        "max_positions": int(meta("context_length")),
        "tie_word_embeddings": "output.weight" not in names,
    }
    state: dict[str, torch.Tensor] = {}
    for tensor in reader.tensors:
        # GGUF lists dimensions innermost first; the reader's data (and dequantize's result)
        # is already row-major in torch's order, e.g. [out_features, in_features]. A copy:
        # F32 tensors come as read-only views of the memory-mapped file.
        weights = np.array(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        expected = tuple(int(n) for n in reversed(tensor.shape))
        if weights.shape != expected:
            raise ValueError(f"{tensor.name}: dequantized to {weights.shape}, expected {expected}")
        if ".attn_q." in tensor.name:
            weights = _unpermute(weights, heads)
        elif ".attn_k." in tensor.name:
            weights = _unpermute(weights, kv_heads)
        state[_hf_name(tensor.name)] = torch.from_numpy(weights)
    if config["tie_word_embeddings"]:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    return config, state

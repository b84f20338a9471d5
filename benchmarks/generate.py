"""Does the plugin's generate scenario time what a team's own generate loop would? SmolLM2.

A fresh project outside this repository holds the bundled SmolLM2-135M manifest (greedy, 16 new
tokens after its first prompt). Each repetition runs, in alternating order:

- the plugin: the real ``pytest --mlscope -k torch`` at default settings (the torch item); its
  time to first token and decode tokens/s are read from the database the session wrote;
- the framework's own minimal generate loop, in a fresh Python process: the same weights file
  (the artifact the session built, loaded into the zoo's module), the prompt tokenized by the
  same tokenizer, then ``model(ids)``, argmax, and ``model(token, past_key_values=cache)`` until
  16 tokens, timed with ``perf_counter_ns`` around the loop alone, as many generations as the
  plugin timed.

The two sides run one after the other on a shared machine, so the table gives each repetition's
ratio, and their median: the claim is that the plugin adds nothing measurable to either figure.

Run from the repository root (about 1 minute per repetition on 2 cores; the first builds the
model, about 20 s more)::

    .venv/bin/python benchmarks/generate.py                      # 5 repetitions
    .venv/bin/python benchmarks/generate.py --repetitions 7 --readme
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _tables import write_table

REPO = Path(__file__).resolve().parent.parent
ITEM = "smollm2[torch-cpu-bs1-generate]"

# The team's loop: what a minimal greedy generate with a key/value cache looks like in torch.
LOOP = """\
import importlib, json, statistics, sys, time
import torch
from tokenizers import Tokenizer

folder, prompt, tokenizer, new_tokens, count = sys.argv[1:6]
new_tokens, count = int(new_tokens), int(count)
meta = json.load(open(folder + "/artifacts.json"))["artifacts"]["torch_state_dict"]
module, _, name = meta["metadata"]["module"].partition(":")
model = getattr(importlib.import_module(module), name)(**meta["metadata"]["kwargs"]).eval()
model.load_state_dict(torch.load(folder + "/" + meta["filename"], weights_only=True))
ids = torch.tensor([Tokenizer.from_file(tokenizer).encode(prompt).ids])
clock = time.perf_counter_ns
ttft, rates = [], []
with torch.inference_mode():
    for index in range(count + 2):  # two warm-up generations, as the plugin's warm-up
        start = clock()
        logits, cache = model(ids)
        token = logits[:, -1].argmax(dim=-1, keepdim=True)
        int(token)
        first = clock()
        for _ in range(new_tokens - 1):
            logits, cache = model(token, past_key_values=cache)
            token = logits[:, -1].argmax(dim=-1, keepdim=True)
            int(token)
        last = clock()
        if index >= 2:
            ttft.append((first - start) / 1e6)
            rates.append((new_tokens - 1) / ((last - first) / 1e9))
print(json.dumps({"ttft_ms": statistics.median(ttft), "tokens_per_s": statistics.median(rates)}))
"""


def plugin(project: Path) -> dict[str, float]:
    from pytest_mlscope.store import Store

    command = [sys.executable, "-m", "pytest", "--mlscope", "-p", "no:cacheprovider", "-q",
               "--mlscope-html=none", "-k", "torch"]  # fmt: skip
    done = subprocess.run(command, cwd=project, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the session failed:\n{done.stdout[-3000:]}")
    with Store.from_location(project / ".mlscope" / "results.db") as store:
        record = store.latest_results(store.runs(limit=1)[0].id)[ITEM]
    figures = record.generation
    assert figures is not None, record
    return {
        "ttft_ms": figures.ttft_ms,
        "tokens_per_s": figures.tokens_per_s,
        "generations": figures.generations,
    }


def loop(project: Path, count: int) -> dict[str, float]:
    (folder,) = (project / ".mlscope" / "artifacts" / "smollm2").iterdir()
    prompt = (project / "manifests" / "text" / "prompts.txt").read_text().splitlines()[0]
    tokenizer = project / "manifests" / "text" / "smollm2-tokenizer.json"
    done = subprocess.run(
        [sys.executable, "-c", LOOP, str(folder), prompt, str(tokenizer), "16", str(count)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(done.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--readme", action="store_true", help="rewrite docs/benchmarks.md's table")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows, ttft_ratios, rate_ratios = [], [], []
    with tempfile.TemporaryDirectory(prefix="mlscope-generate-") as scratch:
        project = Path(scratch)
        (project / "manifests" / "goldens").mkdir(parents=True)
        shutil.copy(REPO / "manifests" / "smollm2.yaml", project / "manifests")
        shutil.copytree(REPO / "manifests" / "text", project / "manifests" / "text")
        goldens = project / "manifests" / "goldens"
        shutil.copy(REPO / "manifests" / "goldens" / "smollm2.npz", goldens)
        (project / "pytest.ini").write_text("[pytest]\nmlscope_manifests = manifests\n")
        plugin(project)  # builds the model into the project's cache
        for index in range(1, args.repetitions + 1):
            if index % 2:
                ours = plugin(project)
                theirs = loop(project, int(ours["generations"]))
            else:
                theirs = loop(project, 10)
                ours = plugin(project)
            ttft_ratios.append(ours["ttft_ms"] / theirs["ttft_ms"])
            rate_ratios.append(ours["tokens_per_s"] / theirs["tokens_per_s"])
            rows.append(
                f"| {index} | {ours['ttft_ms']:.1f} | {theirs['ttft_ms']:.1f} | "
                f"{ttft_ratios[-1] - 1:+.1%} | {ours['tokens_per_s']:.1f} | "
                f"{theirs['tokens_per_s']:.1f} | {rate_ratios[-1] - 1:+.1%} |"
            )
            print(rows[-1], file=sys.stderr)
    sys.path.insert(0, str(REPO / "benchmarks"))
    from verdicts import machine

    rows.append(
        f"| median | | | {statistics.median(ttft_ratios) - 1:+.1%} | | | "
        f"{statistics.median(rate_ratios) - 1:+.1%} |"
    )
    text = (
        f"From `benchmarks/generate.py --repetitions {args.repetitions}` (the bundled SmolLM2-135M "
        "on torch in a fresh project, 16 new tokens after its first prompt; the real `pytest "
        "--mlscope` at default settings against a minimal torch generate loop on the same weights, "
        f"alternating; {(time.perf_counter() - started) / 60:.0f} minutes; {machine()}):\n\n"
        "| repetition | TTFT ms, plugin | TTFT ms, own loop | TTFT difference "
        "| tokens/s, plugin | tokens/s, own loop | tokens/s difference |\n"
        + "|---:" * 7 + "|\n" + "\n".join(rows)
    )  # fmt: skip
    print(text)
    if args.readme:
        write_table("generate-table", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

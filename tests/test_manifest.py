"""The manifest loader: every problem at once, each as ``manifest file:line: key: message``.

Bad manifests are the bundled digits manifest with one thing changed, written into tmp_path; the
tests run from tmp_path so the file shows as ``bad.yaml`` in the messages.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_mlscope.errors import ManifestError
from pytest_mlscope.manifest import Manifest, load_manifest

MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"
DIGITS = (MANIFESTS / "digits_cnn.yaml").read_text()


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def altered(old: str, new: str, text: str = DIGITS) -> str:
    assert old in text, f"{old!r} is not in the manifest any more"
    return text.replace(old, new, 1)


def line_of(text: str, fragment: str, occurrence: int = 1) -> int:
    """1-based line of the n-th line that contains ``fragment``."""
    found = [i for i, line in enumerate(text.splitlines(), start=1) if fragment in line]
    return found[occurrence - 1]


def problems_of(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError) as excinfo:
        load_manifest(path)
    assert str(excinfo.value) == "\n".join(excinfo.value.problems)
    return excinfo.value.problems


# -- good manifests ------------------------------------------------------------------------------


def test_the_bundled_alexnet_manifest_loads(alexnet_manifest: Manifest) -> None:
    assert alexnet_manifest.name == "alexnet"
    names = [f.name for f in alexnet_manifest.framework]
    assert names == ["torch", "onnxruntime", "tensorflow", "mxnet", "caffe", "tensorrt"]
    assert alexnet_manifest.framework[-1].devices == ["gpu"]
    assert alexnet_manifest.inputs[0].shape == [3, 224, 224]
    assert alexnet_manifest.accuracy.golden is not None
    assert alexnet_manifest.resolve(alexnet_manifest.accuracy.golden.path).is_file()
    assert alexnet_manifest.path == MANIFESTS / "alexnet.yaml"


def test_the_bundled_digits_manifest_loads(digits_manifest: Manifest) -> None:
    assert digits_manifest.name == "digits_cnn"
    assert digits_manifest.model.source.builder == "pytest_mlscope.zoo:digits_cnn"
    assert digits_manifest.performance.batch_sizes == [1, 8]
    assert digits_manifest.accuracy.top1 is not None
    assert digits_manifest.accuracy.top1.min == 0.97


def test_a_copy_of_a_bundled_manifest_loads_from_tmp_path(tmp_path: Path) -> None:
    (tmp_path / "digits_cnn.yaml").write_text(DIGITS)

    manifest = load_manifest("digits_cnn.yaml")

    assert manifest.directory == tmp_path.resolve()
    assert manifest.where("performance", "batch_sizes") == (
        f"manifest digits_cnn.yaml:{line_of(DIGITS, 'batch_sizes:')}"
    )


# -- one problem each ----------------------------------------------------------------------------


def test_a_wrong_type_names_file_line_key_and_the_value_found(tmp_path: Path) -> None:
    text = altered("batch_sizes: [1, 8]", "batch_sizes: eight")

    problems = problems_of(tmp_path, text)

    line = line_of(text, "batch_sizes:")
    assert problems == [
        f"manifest bad.yaml:{line}: performance.batch_sizes: "
        'expected a list of positive integers, got "eight"'
    ]


def test_an_unknown_key_suggests_the_closest_known_one(tmp_path: Path) -> None:
    text = altered("  warmup: 10", "  warmpu: 10")

    (problem,) = problems_of(tmp_path, text)

    line = line_of(text, "warmpu:")
    assert problem.startswith(
        f"manifest bad.yaml:{line}: performance.warmpu: unknown key 'warmpu'; "
        "did you mean 'warmup'?"
    )
    assert "one of: batch_sizes, sequence_lengths, scenarios, new_tokens, warmup," in problem


def test_a_duplicate_key_names_both_lines(tmp_path: Path) -> None:
    text = altered("  warmup: 10", "  warmup: 10\n  warmup: 3")

    problems = problems_of(tmp_path, text)

    first, second = line_of(text, "warmup:", 1), line_of(text, "warmup:", 2)
    assert problems == [
        f"manifest bad.yaml:{second}: performance.warmup: "
        f"duplicate key (first defined on line {first})"
    ]


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    text = altered("  warmup: 10", "  warmup: 10: 3")

    problems = problems_of(tmp_path, text)

    line = line_of(text, "warmup:")
    assert problems == [
        f"manifest bad.yaml:{line}: (document): invalid YAML: mapping values are not allowed here"
    ]


def test_a_malformed_pinned_sha256_is_explained_in_words(tmp_path: Path) -> None:
    text = altered("seed: 0}", "seed: 0}\n  sha256: {torch: XYZ}")

    problems = problems_of(tmp_path, text)

    line = line_of(text, "sha256:")
    assert problems == [
        f"manifest bad.yaml:{line}: model.sha256.torch: "
        'expected a sha256 hex digest (64 lowercase hex characters, quoted), got "XYZ"'
    ]


def test_a_malformed_builder_is_explained_in_words(tmp_path: Path) -> None:
    text = altered("pytest_mlscope.zoo:digits_cnn", "not a builder")

    problems = problems_of(tmp_path, text)

    line = line_of(text, "not a builder")
    assert problems == [
        f"manifest bad.yaml:{line}: model.source.builder: "
        "expected an importable 'module:callable', got \"not a builder\""
    ]


def test_a_bad_version_specifier_is_refused_with_an_example(tmp_path: Path) -> None:
    text = altered('version: ">=2.2"', 'version: "~~2"')

    problems = problems_of(tmp_path, text)

    line = line_of(text, "~~2")
    assert problems == [
        f"manifest bad.yaml:{line}: framework[0].version: "
        "expected a PEP 440 version specifier such as '>=1.17', got '~~2'"
    ]


def test_a_preprocess_step_with_an_unknown_op_lists_the_known_ops(tmp_path: Path) -> None:
    text = altered("- scale: 16", "- blur: 3")

    problems = problems_of(tmp_path, text)

    line = line_of(text, "blur:")
    assert problems == [
        f"manifest bad.yaml:{line}: inputs[0].preprocess[0]: expected a mapping with exactly "
        'one key, one of decode, resize, center_crop, scale, normalize, layout, got {"blur": 3}'
    ]


def test_a_missing_top_level_key_is_reported_at_the_document(tmp_path: Path) -> None:
    text = altered("dataset: {name: sklearn_digits, split: test}\n", "")

    problems = problems_of(tmp_path, text)

    first_key = line_of(text, "name: digits_cnn")
    assert problems == [f"manifest bad.yaml:{first_key}: dataset: required key is missing"]


def test_a_missing_nested_key_is_reported_at_its_parent(tmp_path: Path) -> None:
    text = altered("  - name: logits\n    postprocess:", "  - postprocess:")

    problems = problems_of(tmp_path, text)

    line = line_of(text, "- postprocess:")
    assert problems == [f"manifest bad.yaml:{line}: outputs[0].name: required key is missing"]


def test_an_agreement_reference_must_be_one_of_the_frameworks(tmp_path: Path) -> None:
    text = altered("reference: torch", "reference: cntk")

    problems = problems_of(tmp_path, text)

    line = line_of(text, "reference: cntk")
    assert problems == [
        f"manifest bad.yaml:{line}: accuracy.agreement.reference: expected one of this "
        "manifest's frameworks (torch, onnxruntime, tensorflow, mxnet, caffe, tensorrt), got 'cntk'"
    ]


def test_two_stacks_of_a_framework_need_a_stack_name_and_interleave_with_names_one(
    tmp_path: Path,
) -> None:
    entry = '  - name: onnxruntime\n    version: ">=1.17"\n'
    unnamed = altered(entry, entry + "  - name: onnxruntime\n")
    assert problems_of(tmp_path, unnamed) == [
        f"manifest bad.yaml:{line_of(unnamed, '- name: onnxruntime', 2)}: framework[2].name: "
        "framework 'onnxruntime' is listed twice; give the second stack a name with 'stack:'"
    ]
    wrong = altered(
        entry,
        entry + "    interleave_with: ort130\n  - name: onnxruntime\n    stack: ort131\n",
    )
    assert problems_of(tmp_path, wrong) == [
        f"manifest bad.yaml:{line_of(wrong, 'interleave_with')}: framework[1].interleave_with: "
        "expected the 'stack:' of another onnxruntime entry (ort131), got 'ort130'"
    ]
    good = altered("ort130", "ort131", wrong)
    (tmp_path / "good.yaml").write_text(good)
    manifest = load_manifest(tmp_path / "good.yaml")
    assert manifest.framework_spec("onnxruntime", "ort131").stack == "ort131"
    assert manifest.framework_spec("onnxruntime").interleave_with == "ort131"
    assert manifest.framework_index("onnxruntime", "ort131") == 2
    with pytest.raises(KeyError, match="onnxruntime@ort130"):
        manifest.framework_spec("onnxruntime", "ort130")


def test_a_golden_path_escaping_the_manifest_directory_is_refused(tmp_path: Path) -> None:
    text = altered("  top1: {min: 0.97}", "  top1: {min: 0.97}\n  golden: ../x.npz")

    problems = problems_of(tmp_path, text)

    line = line_of(text, "golden:")
    assert problems == [
        f"manifest bad.yaml:{line}: accuracy.golden: "
        f"expected a path inside {tmp_path.resolve()}, got '../x.npz'"
    ]


def test_a_missing_golden_file_is_refused_unless_files_are_not_required(tmp_path: Path) -> None:
    text = altered("  top1: {min: 0.97}", "  top1: {min: 0.97}\n  golden: goldens/new.npz")

    problems = problems_of(tmp_path, text)

    line = line_of(text, "golden:")
    assert problems == [
        f"manifest bad.yaml:{line}: accuracy.golden: "
        "expected an existing file, got 'goldens/new.npz' (no such file); write it with "
        "`mlscope golden bad.yaml`"
    ]
    manifest = load_manifest(tmp_path / "bad.yaml", require_files=False)
    assert manifest.accuracy.golden is not None
    assert manifest.accuracy.golden.path == "goldens/new.npz"


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "- name: digits_cnn\n- name: alexnet\n")

    assert problems == [
        'manifest bad.yaml:1: (document): expected a mapping, got [{"name": "digits_cnn"}, '
        '{"name": "alexnet"}]'
    ]


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "")

    assert problems == ["manifest bad.yaml:1: (document): expected a mapping, got an empty file"]


def test_a_comment_only_file_is_refused_as_empty(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "# nothing here yet\n")

    assert problems == ["manifest bad.yaml:1: (document): expected a mapping, got an empty file"]


def test_a_missing_file_is_a_manifest_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(
        ManifestError, match=r"^manifest nowhere\.yaml:1: \(document\): cannot read"
    ):
        load_manifest(tmp_path / "nowhere.yaml")


# -- several problems ----------------------------------------------------------------------------


def test_every_problem_in_a_file_is_reported_at_once(tmp_path: Path) -> None:
    text = altered("batch_sizes: [1, 8]", "batch_sizes: eight")
    text = altered("  warmup: 10", "  warmpu: 10", text)
    text = altered("shape: [1, 8, 8]", "shape: [1, 0, 8]", text)

    problems = problems_of(tmp_path, text)

    assert len(problems) == 3
    by_key = {problem.split(": ")[1]: problem for problem in problems}
    assert set(by_key) == {"inputs[0].shape[1]", "performance.batch_sizes", "performance.warmpu"}
    assert by_key["performance.batch_sizes"].startswith(
        f"manifest bad.yaml:{line_of(text, 'batch_sizes:')}: "
    )
    assert by_key["performance.warmpu"].startswith(
        f"manifest bad.yaml:{line_of(text, 'warmpu:')}: "
    )
    assert by_key["inputs[0].shape[1]"].startswith(f"manifest bad.yaml:{line_of(text, 'shape:')}: ")
    assert all(problem.count("\n") == 0 for problem in problems)


def test_semantic_problems_are_all_reported_too(tmp_path: Path) -> None:
    text = altered("reference: torch", "reference: cntk")
    text = altered("  top1: {min: 0.97}", "  top1: {min: 0.97}\n  golden: ../x.npz", text)

    problems = problems_of(tmp_path, text)

    assert [problem.split(": ")[1] for problem in problems] == [
        "accuracy.agreement.reference",
        "accuracy.golden",
    ]


# -- the plugin's import cost --------------------------------------------------------------------


def test_importing_the_plugin_imports_no_heavy_library() -> None:
    heavy = ["torch", "onnxruntime", "tensorflow", "sqlalchemy", "matplotlib", "pydantic"]
    script = (
        "import json, sys\n"
        "import pytest_mlscope.plugin\n"
        f"print(json.dumps(sorted(set(sys.modules) & set({heavy!r}))))\n"
    )

    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )

    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == []

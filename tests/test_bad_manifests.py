"""Broken manifests: a corpus of the ways users get them wrong, and a fuzzer that makes more.

Every case must end in :class:`ManifestError` whose problems are single lines
``manifest FILE:LINE: KEY: what was expected, got what`` — never another exception, never a
traceback, never a hang — and a broken file must cost a pytest session that file only.
"""

from __future__ import annotations

import os
import re
import shutil
import string
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import MANIFESTS, copy_manifest
from pytest_mlscope.manifest import MAX_MANIFEST_BYTES, ManifestError, load_manifest

CORPUS = Path(__file__).parent / "data" / "bad_manifests"
# One problem a line: where (file:line), which key, and what was expected.
PROBLEM = re.compile(
    r"manifest (?P<file>[^\n]+?):(?P<line>\d+): (?P<key>[^\n]+?): (?P<what>[^\n]+)"
)

# file -> (line, key, a phrase of the message) of the problem the file must report.
EXPECTED = {
    "agreement_reference": (29, "accuracy.agreement.reference", "expected one of this manifest's"),
    "alias_bomb": (2, None, "expected at most 100000 values with aliases expanded"),
    "bad_builder": (15, "model.source.builder", "expected an importable 'module:callable'"),
    "bad_name": (1, "name", "expected a name of lowercase letters"),
    "bad_version_specifier": (7, "framework[0].version", "expected a PEP 440 version specifier"),
    "comment_only": (1, "(document)", "expected a mapping, got an empty file"),
    "duplicate_key": (5, "task", "duplicate key (first defined on line 4)"),
    "empty": (1, "(document)", "expected a mapping, got an empty file"),
    "invalid_yaml": (32, "(document)", "invalid YAML: expected ',' or ']'"),
    "malformed_sha256": (16, "model.sha256.torch", "expected a sha256 hex digest"),
    "missing_field": (1, "inputs", "required key is missing"),
    "negative_count": (34, "performance.min_count", "expected greater than 0, got -5"),
    "nested_past_the_parser": (1, "(document)", "expected at most 32 levels of nesting"),
    "nested_too_deep": (2, None, "nested deeper than 32 levels"),
    "not_a_mapping": (1, "(document)", "expected a mapping, got [{"),
    "not_utf8": (1, "(document)", "expected UTF-8 text"),
    "path_escape": (29, "accuracy.golden", "expected a path inside"),
    "python_tag": (15, "model.source.seed", "got the tag !!python/object/apply:os.system"),
    "text_dataset_for_images": (18, "dataset.name", "expected a text dataset (text or text_pairs)"),
    "text_without_lengths": (15, "inputs[0].tokenizer", "needs performance.sequence_lengths"),
    "tokenizer_float_ids": (13, "inputs[0]", "expected dtype int64 or int32 for token ids"),
    "tokenizer_with_shape": (13, "inputs[0]", "expected no 'shape' with a tokenizer"),
    "bad_sequence_length": (
        25,
        "performance.sequence_lengths[1]",
        "expected a positive integer (tokens per sample)",
    ),
    "unknown_key": (5, "flavour", "unknown key 'flavour'"),
    "unknown_preprocess_op": (21, "inputs[0].preprocess[0]", "one of decode, resize"),
    "wrong_enum": (
        4,
        "task",
        "expected 'image_classification', 'text_embedding', 'text_generation' or 'raw'",
    ),
    "generate_with_lengths": (
        22,
        "performance.sequence_lengths",
        "generate feeds each prompt as it tokenizes",
    ),
    "wrong_type": (31, "performance.batch_sizes", "expected a list of positive integers"),
}


def problems_of(path: Path, **options: Any) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        load_manifest(path, **options)
    return caught.value.problems


def assert_one_line_problems(problems: list[str], path: Path) -> None:
    assert problems, "a ManifestError must say what is wrong"
    for problem in problems:
        assert "\n" not in problem and "Traceback" not in problem, problem
        match = PROBLEM.fullmatch(problem)
        assert match, f"not 'manifest FILE:LINE: KEY: message': {problem!r}"
        assert match["file"].endswith(path.name), problem
        assert int(match["line"]) >= 1


def test_the_corpus_and_the_expectations_name_the_same_files() -> None:
    assert sorted(p.stem for p in CORPUS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_corpus_manifest_is_refused_with_file_line_and_key(name: str) -> None:
    path = CORPUS / f"{name}.yaml"
    line, key, phrase = EXPECTED[name]
    started = time.perf_counter()
    problems = problems_of(path)
    assert time.perf_counter() - started < 10, "refusing a manifest must not take long"
    assert_one_line_problems(problems, path)
    matches = [PROBLEM.fullmatch(p) for p in problems]
    wanted = [
        m for m in matches if m and int(m["line"]) == line and (key is None or m["key"] == key)
    ]
    assert wanted, f"no problem at line {line}, key {key}: {problems}"
    assert any(phrase in m["what"] for m in wanted), problems


def test_a_huge_manifest_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    text = (MANIFESTS / "digits_cnn.yaml").read_text()
    path.write_text(text + "# " + "x" * MAX_MANIFEST_BYTES + "\n")
    (problem,) = problems_of(path)
    assert_one_line_problems([problem], path)
    assert f"expected at most {MAX_MANIFEST_BYTES} bytes" in problem


def test_a_manifest_that_is_a_directory_or_unreadable_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    (problem,) = problems_of(folder)
    assert_one_line_problems([problem], folder)
    assert "cannot read" in problem


# -- fuzzing ------------------------------------------------------------------------------------

# JSON-like values of every YAML kind, nested a little: what a user might type in a wrong place.
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(string.ascii_lowercase + "_", min_size=1, max_size=10), children, max_size=4
        )
    ),
    max_leaves=12,
)


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += _paths(value, (*prefix, index))
    return found


def _mutated(data: Any, path: tuple[Any, ...], how: str, value: Any, key: str) -> Any:
    if not path:
        return value if how == "replace" else data
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if how == "replace":
        parent[last] = value
    elif how == "delete":
        del parent[last]
    elif how == "add" and isinstance(parent, dict):
        parent[key] = value
    elif how == "add":
        parent.append(value)
    return data


BASES = {name: (MANIFESTS / f"{name}.yaml").read_text() for name in ("digits_cnn", "alexnet")}
fuzz = settings(
    max_examples=int(os.environ.get("MLSCOPE_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _check(path: Path) -> None:
    try:
        load_manifest(path, require_files=False)
    except ManifestError as exc:
        assert_one_line_problems(exc.problems, path)


@fuzz
@given(
    base=st.sampled_from(sorted(BASES)),
    choice=st.data(),
    how=st.sampled_from(["replace", "delete", "add"]),
    value=values,
    key=st.text(string.ascii_lowercase + "_", min_size=1, max_size=12),
)
def test_a_structurally_mutated_manifest_loads_or_is_refused_in_one_line_problems(
    tmp_path: Path, base: str, choice: st.DataObject, how: str, value: Any, key: str
) -> None:
    data = yaml.safe_load(BASES[base])
    path_in_data = choice.draw(st.sampled_from(_paths(data)))
    mutated = _mutated(data, path_in_data, how, value, key)
    path = tmp_path / f"{base}.yaml"
    path.write_text(yaml.safe_dump(mutated, allow_unicode=True, sort_keys=False))
    _check(path)


@fuzz
@given(
    base=st.sampled_from(sorted(BASES)),
    edits=st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=1),
            st.integers(min_value=0, max_value=8),
            st.text(alphabet=string.printable + "\u00e9\u2603\x00", max_size=6),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_a_manifest_with_its_text_mangled_loads_or_is_refused_in_one_line_problems(
    tmp_path: Path, base: str, edits: list[tuple[float, int, str]]
) -> None:
    text = BASES[base]
    for where, cut, insert in edits:  # delete `cut` characters at `where`, insert `insert`
        at = int(where * len(text))
        text = text[:at] + insert + text[at + cut :]
    path = tmp_path / f"{base}.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    _check(path)


# -- in a session -------------------------------------------------------------------------------


def test_broken_manifests_are_collection_errors_of_their_own_files_only(
    pytester: pytest.Pytester,
) -> None:
    manifests = pytester.path / "manifests"
    manifests.mkdir()
    copy_manifest("digits_cnn", manifests)
    for name in ("wrong_type", "alias_bomb", "python_tag"):
        shutil.copy(CORPUS / f"{name}.yaml", manifests / f"{name}.yaml")
    result = pytester.runpytest_subprocess(
        "--mlscope", "--mlscope-manifests", "manifests", "-p", "no:cacheprovider",
        "--mlscope-min-count", "3", "--mlscope-min-duration", "0", "--mlscope-warmup", "1",
        "--continue-on-collection-errors", "-k", "bs1 and single_stream",
    )  # fmt: skip
    output = result.stdout.str()
    assert "Traceback" not in output
    for name in ("wrong_type", "alias_bomb", "python_tag"):
        result.stdout.fnmatch_lines([f"ERROR manifests/{name}.yaml*"])
    result.stdout.fnmatch_lines(
        ["*manifests/wrong_type.yaml:31: performance.batch_sizes: expected a list of positive*"]
    )
    # The good manifest's items ran and passed beside the three broken files.
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors") == 3 and outcomes.get("passed", 0) >= 2, outcomes
    assert "ERROR manifests/digits_cnn.yaml" not in output

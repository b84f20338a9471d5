"""Venv stacks: MXNet in a virtual environment of its own (numpy 1.23), beside the host stack."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from _services import requires_ci

from conftest import MANIFESTS
from pytest_mlscope import stacks
from pytest_mlscope.predictors.onnxruntime import OnnxRuntimePredictor
from pytest_mlscope.store import Store

MXNET = stacks.get("mxnet")
QUICK = ("--mlscope-min-count", "20", "--mlscope-min-duration", "0", "--mlscope-warmup", "2")


def _project(pytester: pytest.Pytester) -> None:
    target = pytester.path / "manifests"
    target.mkdir()
    (target / "digits_cnn.yaml").write_text((MANIFESTS / "digits_cnn.yaml").read_text())
    pytester.makeini("[pytest]\nmlscope_manifests = manifests\n")


def test_an_unknown_stack_names_the_known_ones() -> None:
    with pytest.raises(stacks.StackError, match="no venv stack 'caffe' \\(known: mxnet\\)"):
        stacks.get("caffe")


def test_a_stack_that_is_not_set_up_skips_its_items_with_the_command_and_fails_under_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _project(pytester)
    monkeypatch.setenv("MLSCOPE_STACKS", str(tmp_path / "no-stacks-here"))
    monkeypatch.delenv("CI", raising=False)
    select = ("-k", "mxnet and bs1", "-rs", "--mlscope-html=none", *QUICK)
    laptop = pytester.runpytest_subprocess("--mlscope", "-p", "no:cacheprovider", *select)
    laptop.assert_outcomes(skipped=1)
    laptop.stdout.fnmatch_lines(
        [
            "SKIPPED*the mxnet stack (a venv of its own: mxnet 1.9.1 fails to import with numpy "
            ">= 1.24*) is not set up: run `mlscope stacks setup mxnet`"
        ]
    )
    monkeypatch.setenv("CI", "true")
    ci = pytester.runpytest_subprocess("--mlscope", "-p", "no:cacheprovider", *select)
    ci.assert_outcomes(failed=1)
    ci.stdout.fnmatch_lines(["*is not set up: run `mlscope stacks setup mxnet` (CI=true: fails*"])


def test_mxnet_runs_in_its_venv_and_agrees_with_torch_on_the_host(
    pytester: pytest.Pytester,
) -> None:
    if stacks.unavailable(MXNET):
        requires_ci(stacks.unavailable(MXNET) or "")
    _project(pytester)
    result = pytester.runpytest_subprocess(
        "--mlscope", "-p", "no:cacheprovider", "-k", "bs1 and (mxnet or torch)", *QUICK,
        "--mlscope-html=none", "--mlscope-trace", "framework",
    )  # fmt: skip
    result.assert_outcomes(passed=2)
    with Store.from_location(pytester.path / ".mlscope" / "results.db") as store:
        (run,) = store.runs()
        records = store.latest_results(run.id)
    mxnet = records["digits_cnn[mxnet-cpu-bs1-single_stream]"]
    assert mxnet.framework_version == "1.9.1"
    assert mxnet.predictor is not None and mxnet.predictor.details["numpy"] == "1.23.5"
    assert mxnet.accuracy is not None and mxnet.accuracy.top1 is not None
    assert mxnet.accuracy.top1 >= 0.97
    checks = {c.name: c for c in mxnet.accuracy.checks}
    assert checks["agreement"].passed, checks["agreement"].detail  # against torch, numpy 2
    # The host's numpy is not the stack's: two environments, one session.
    import numpy

    assert numpy.__version__ != "1.23.5"
    assert records["digits_cnn[torch-cpu-bs1-single_stream]"].outcome == "passed"
    # Its layer table, from mxnet.profiler on an unbulked copy of the network: every block by its
    # torch name, in order, adding up to a prediction.
    layers = [row.layer for row in mxnet.layers]
    assert layers == [
        "features.0", "features.1", "features.2", "features.3", "features.4",
        "classifier.0", "classifier.1", "classifier.2", "classifier.3", "(other)",
    ]  # fmt: skip
    by_name = {row.layer: row for row in mxnet.layers}
    assert by_name["features.2"].op_type == "Conv2D"
    assert by_name["features.2"].kernels == ["Convolution"]
    assert by_name["classifier.1"].kernels == ["FullyConnected"]
    assert all(row.self_us > 0 for row in mxnet.layers[:-1])
    total = sum(row.self_us for row in mxnet.layers)
    # Of the size of the profiling pass's own uninstrumented predictions, seconds apart (as
    # test_tracing's): the timing pass's median, taken before, moves with the machine's load.
    assert mxnet.trace is not None and mxnet.trace.step_us
    assert 0.25 < total / mxnet.trace.step_us < 2.5, (total, mxnet.trace.step_us)
    assert mxnet.trace is not None and "unbulked copy" in mxnet.trace.notes[0]


OTHER_ORT = "1.31.1"  # the release CI also builds an image of (tests/test_docker.py)


def test_a_baseline_on_another_onnxruntime_release_is_rebuilt_and_timed_beside_the_upgrade(
    pytester: pytest.Pytester,
) -> None:
    """A framework upgrade, A/B-tested by naming the baseline and nothing else: the baseline's
    release is rebuilt as a venv stack from the package registry and interleaved with the host's
    across workers of both (four per side); the verdict names both releases."""
    installed = OnnxRuntimePredictor.installed_version()
    assert installed is not None and installed != OTHER_ORT
    _project(pytester)
    select = (
        "--mlscope", "-p", "no:cacheprovider", "-k", "onnxruntime and bs1 and single_stream",
        "--mlscope-html=none", "--mlscope-min-count=20", "--mlscope-min-duration=0.2",
        "--mlscope-warmup=5",
    )  # fmt: skip
    pytester.runpytest_subprocess(*select, "--mlscope-save-baseline=main").assert_outcomes(passed=1)
    # The baseline as a run on the other release records it (the host's numpy and the rest
    # as recorded with the run).
    with sqlite3.connect(pytester.path / ".mlscope" / "results.db") as connection:
        connection.execute("UPDATE results SET framework_version = ?", (OTHER_ORT,))
    result = pytester.runpytest_subprocess(
        *select, "--mlscope-baseline=main", "--mlscope-threshold=3"
    )
    result.assert_outcomes(passed=1)
    with Store.from_location(pytester.path / ".mlscope" / "results.db", create=False) as store:
        record = store.latest_results(store.runs(limit=1)[0].id)[
            "digits_cnn[onnxruntime-cpu-bs1-single_stream]"
        ]
    assert record.verdict is not None and record.verdict["design"] == "interleaved"
    reason = record.verdict["reason"]
    assert f"on the baseline's onnxruntime {OTHER_ORT} (a venv rebuilt from the package" in reason
    # both releases' workers reload their model through the measurement: every pair, or every
    # few when a reload costs more than a quarter of these short (7 ms) rounds
    assert re.search(
        r"package registry; a fresh instance of each side (per pair|every \d+ pairs)[;)]", reason
    ), reason
    assert f"A on {OTHER_ORT}, B on {installed}" in reason
    assert record.paired_predictor is not None and record.paired_predictor.version == OTHER_ORT
    assert record.framework_version == installed
    assert len(record.paired_rounds) == len(record.rounds) >= 30
    # Each side in five worker processes (each has a speed of its own), every A worker timed
    # against every B worker (a worker replaced for standing apart has the same meetings timed
    # again); the interval is as wide as their spread says.
    assert len(record.paired_workers) == len(record.rounds)
    assert (
        {a for a, _ in record.paired_workers}
        == {b for _, b in record.paired_workers}
        == {0, 1, 2, 3, 4}
    )
    assert len(set(record.paired_workers)) == 25
    assert "across 5 + 5 worker processes, whose own speeds keep the interval at least ±" in reason

"""Memory as a gated figure: the model's peak resident memory in its worker, stored with every
result, judged against the baseline's by a threshold of its own.

The end-to-end test is a team's own ONNX model whose working memory is set by one number (an
Expand to N rows, then their max: the output is the input whatever N is), saved as a baseline,
then replaced by the same model with twice the rows."""

from __future__ import annotations

import contextlib
import sys
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from _projects import team_project
from onnx import TensorProto, helper, numpy_helper

from pytest_mlscope.compare import Side, verdict
from pytest_mlscope.compare.memory import MEMORY_FLOOR, memory_change
from pytest_mlscope.memory import PeakWindow
from pytest_mlscope.store import Store

MIB = 2**20
ITEM = "wide[onnxruntime-cpu-bs1-single_stream]"
# The plumbing, not the statistics: short timing, and a latency threshold so loose that the
# doubled model's slower calls never decide (memory must).
TIMING = (
    "--mlscope-min-count=20",
    "--mlscope-min-duration=0.05",
    "--mlscope-rounds=5",
    "--mlscope-warmup=3",
    "--mlscope-threshold=5",
)
ROWS = 1 << 20  # x 8 float32 = 32 MiB of working memory; the edit doubles it

MANIFEST = """\
name: wide
description: A model whose working memory one number sets
framework:
  - name: onnxruntime
model:
  source: {path: {onnxruntime: model.onnx}}
inputs:
  - name: x
    shape: [8]
outputs:
  - name: y
dataset: {name: npz, path: inputs.npz}
accuracy: {golden: golden.npz}
performance: {batch_sizes: [1], scenarios: [single_stream]}
"""


def _export(path: Path, rows: int) -> None:
    """y = the max over rows of Expand(x, [rows, 8]): x itself, exactly, through rows x 8 floats."""
    graph = helper.make_graph(
        [
            helper.make_node("Expand", ["x", "shape"], ["wide"]),
            helper.make_node("ReduceMax", ["wide", "axes"], ["y"], keepdims=1),
        ],
        "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [
            numpy_helper.from_array(np.array([rows, 8], np.int64), "shape"),
            numpy_helper.from_array(np.array([0], np.int64), "axes"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


def _project(root: Path) -> Path:
    manifests = team_project(root, "wide.yaml", MANIFEST)
    _export(manifests / "model.onnx", ROWS)
    inputs = np.random.default_rng(1).random((4, 8), dtype=np.float32)
    np.savez(manifests / "inputs.npz", inputs=inputs)
    np.savez(manifests / "golden.npz", y=inputs)  # the model's output is its input
    return root


def _run(pytester: pytest.Pytester, project: Path, *args: str) -> pytest.RunResult:
    with contextlib.chdir(project):
        return pytester.runpytest_subprocess("--mlscope", "-p", "no:cacheprovider", *TIMING, *args)


def _latest(db: Path) -> object:
    with Store.from_location(db, create=False) as store:
        return store.latest_results(store.runs(limit=1)[0].id)[ITEM]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the peak is read from /proc")
def test_a_window_sees_what_was_allocated_in_it_and_starts_anew() -> None:
    for size in (64 * MIB, 128 * MIB):
        window = PeakWindow()
        window.start()
        block = np.ones(size // 8)  # written, so resident
        del block
        peak = window.peak()
        assert window.why_not is None and window.before is not None and peak is not None
        # The peak holds the block (and little else) although it was freed before the reading.
        assert size - 4 * MIB <= peak - window.before < size + 32 * MIB


def test_the_memory_rule_needs_both_the_fraction_and_the_floor() -> None:
    assert memory_change(None, 10 * MIB) is None
    assert memory_change(40 * MIB, 80 * MIB).kind == "regression"  # type: ignore[union-attr]
    assert memory_change(40 * MIB, 43 * MIB).kind == "ok"  # type: ignore[union-attr]
    # A small model: +100 % but less than the floor is allocator noise, not a finding.
    small = memory_change(3 * MIB, 6 * MIB)
    assert small is not None and small.kind == "ok" and 3 * MIB < MEMORY_FLOOR
    # A large one: more than the floor but within the fraction.
    assert memory_change(1000 * MIB, 1050 * MIB).kind == "ok"  # type: ignore[union-attr]
    assert memory_change(1000 * MIB, 1050 * MIB, 0.02).kind == "regression"  # type: ignore[union-attr]
    assert memory_change(80 * MIB, 40 * MIB).kind == "improvement"  # type: ignore[union-attr]


def test_more_memory_fails_an_item_whose_latency_is_fine_and_says_both() -> None:
    rounds = [20] * 5
    samples = [1_000_000] * 100
    base = Side(samples_ns=samples, rounds=rounds, memory=40 * MIB)
    same = verdict(base, Side(samples_ns=samples, rounds=rounds, memory=41 * MIB))
    assert same.kind != "regression" and same.memory == "memory 40.0 MiB -> 41.0 MiB (+2.5%)"
    assert same.decided_by is None and same.memory_threshold == 0.10
    more = verdict(base, Side(samples_ns=samples, rounds=rounds, memory=80 * MIB))
    assert more.kind == "regression" and more.reason.startswith("memory 40.0 MiB -> 80.0 MiB")
    assert f"(latency: {same.kind}" in more.reason and more.ratio == same.ratio
    assert (more.baseline_memory, more.current_memory) == (40 * MIB, 80 * MIB)
    # The change column and the failure's first line show what decided: memory.
    assert more.decided_by == "memory" and more.as_dict()["ratio_text"] == "memory +100.0%"
    assert more.describe().startswith("regression memory +100.0%: memory 40.0 MiB")
    # Its own threshold: +100 % passes at 150 %.
    loose = verdict(
        base, Side(samples_ns=samples, rounds=rounds, memory=80 * MIB), memory_threshold=1.5
    )
    assert loose.kind != "regression" and loose.memory_threshold == 1.5
    # One side without a figure: said, and latency decides.
    older = verdict(Side(samples_ns=samples, rounds=rounds), Side(samples, rounds, memory=MIB))
    assert older.memory == "memory not compared: the baseline's result has no figure"
    assert older.current_memory is None and older.kind != "regression"
    # No baseline: new, whatever the memory.
    assert verdict(None, Side(samples_ns=samples, rounds=rounds, memory=MIB)).kind == "new"


def test_a_gpu_item_s_device_memory_is_judged_by_the_same_rule() -> None:
    """The framework allocator's device peak (torch's max_memory_allocated, TensorFlow's
    memory info) beside the resident one: doubled on the GPU with the host's unchanged, a
    regression of its own; not a figure NVML's device-wide use could give."""
    rounds, samples = [20] * 5, [1_000_000] * 100
    base = Side(samples_ns=samples, rounds=rounds, memory=300 * MIB, device_memory=500 * MIB)
    same = verdict(base, replace(base, device_memory=510 * MIB))
    assert same.kind != "regression", same.reason
    assert same.device_memory == "device memory 500.0 MiB -> 510.0 MiB (+2.0%)"
    doubled = verdict(base, replace(base, device_memory=1000 * MIB))
    assert doubled.kind == "regression" and doubled.decided_by == "device_memory"
    assert doubled.reason.startswith("device memory 500.0 MiB -> 1000.0 MiB (+100.0%), more")
    assert doubled.change_text == "device memory +100.0%"
    assert doubled.memory == "memory 300.0 MiB -> 300.0 MiB (+0.0%)"
    cpu = verdict(replace(base, device_memory=None), replace(base, device_memory=None))
    assert cpu.device_memory is None and cpu.kind != "regression"  # a CPU item: no such figure
    older = verdict(replace(base, device_memory=None), base)
    assert older.device_memory == "device memory not compared: the baseline's result has no figure"


def test_memory_on_another_machine_is_named_not_judged() -> None:
    rounds, samples = [20] * 5, [1_000_000] * 100
    base = Side(samples, rounds, host={"cpu_model": "A"}, memory=40 * MIB)
    found = verdict(base, Side(samples, rounds, host={"cpu_model": "B"}, memory=80 * MIB))
    assert found.kind == "incomparable" and found.memory is not None
    assert found.memory.startswith("memory 40.0 MiB -> 80.0 MiB"), found.memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the peak is read from /proc")
def test_a_model_that_doubles_its_working_memory_is_a_regression(
    pytester: pytest.Pytester,
) -> None:
    project = _project(pytester.path / "team")
    db = pytester.path / "results.db"
    shared = (f"--mlscope-db={db}", f"--mlscope-cache={project / 'cache'}")

    saved = _run(pytester, project, *shared, "--mlscope-save-baseline=main")
    saved.assert_outcomes(passed=1)
    saved.stdout.fnmatch_lines(["*cold start ms*memory MiB*"])
    baseline = _latest(db).memory  # type: ignore[attr-defined]
    assert baseline is not None and baseline.model >= 32 * MIB, baseline
    assert baseline.device_peak is None  # a CPU item: no device allocator to ask

    # Unchanged: the memory is compared and passes.
    again = _run(pytester, project, *shared, "--mlscope-baseline=main")
    again.assert_outcomes(passed=1)
    record = _latest(db)
    assert record.verdict["kind"] != "regression", record.verdict  # type: ignore[attr-defined]
    assert record.verdict["memory"].startswith("memory "), record.verdict  # type: ignore[attr-defined]

    # The edit: the same outputs through twice the rows.
    _export(project / "manifests" / "model.onnx", 2 * ROWS)
    junit = pytester.path / "junit.xml"
    edited = _run(pytester, project, *shared, "--mlscope-baseline=main", f"--junitxml={junit}")
    edited.assert_outcomes(failed=1)
    edited.stdout.fnmatch_lines(["*RegressionDetected: regression*memory * MiB -> * MiB*"])
    record = _latest(db)
    found = record.verdict  # type: ignore[attr-defined]
    assert found["kind"] == "regression" and found["reason"].startswith("memory "), found
    assert found["current_memory"] - found["baseline_memory"] >= 24 * MIB, found
    properties = {p.get("name"): p.get("value") for p in ET.parse(junit).getroot().iter("property")}
    assert float(properties["mlscope_memory_mib"]) >= 56, properties
    assert float(properties["mlscope_baseline_memory_mib"]) >= 32, properties

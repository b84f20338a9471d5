"""The gate as a team meets it: their own ONNX model, a baseline saved in one checkout, a model
edit timed in another checkout that has never seen the baseline's file."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from _projects import team_project
from onnx import TensorProto, helper, numpy_helper

from pytest_mlscope.store import Store

# onnx and onnxruntime are imported here, not in the test: pytester restores sys.modules after a
# test, and an extension module imported inside one (ml_dtypes, through onnx) cannot be imported
# twice in a process, which would break the next test that needs it.

ITEM = "tiny_cnn[onnxruntime-cpu-bs1-single_stream]"
# Short timing: these runs check the plumbing, not the statistics (benchmarks/verdicts.py does).
TIMING = (
    "--mlscope-min-count=100",
    "--mlscope-min-duration=0.3",
    "--mlscope-rounds=10",
    "--mlscope-warmup=20",
)
# The slow variant is some 15x slower on an idle box; a burst of load on a 2-core machine can
# slow either side several times over, so the regression is asked of a 50 % threshold and "ok"
# of a 300 % one.
LOOSE = "--mlscope-threshold=0.5"
VERY_LOOSE = "--mlscope-threshold=3"
# Identity convolutions the slow variant adds: each is a real kernel ONNX Runtime runs (it has no
# rewrite that removes a Conv whose weight happens to be the identity), and each leaves its input
# exactly as it was (x * 1 + 0 * neighbours), so both variants give the same outputs.
SLOW_IDENTITY_CONVS = 50

MANIFEST = """\
name: tiny_cnn
description: A conv net the team trained and exported to ONNX themselves
framework:
  - name: onnxruntime
    version: ">=1.17"
model:
  source: {path: {onnxruntime: model.onnx}}
inputs:
  - name: input
    shape: [1, 8, 8]
outputs:
  - name: logits
dataset: {name: npz, path: inputs.npz}
accuracy:
  golden: golden.npz
performance:
  batch_sizes: [1]
  scenarios: [single_stream]
"""


def _export_model(path: Path, identity_convs: int = 0) -> None:
    """Conv(1->8) -> ReLU -> [identity convs] -> Flatten -> Gemm(->10), with fixed weights."""
    channels = 8
    rng = np.random.default_rng(0)
    weights = {
        "conv_w": rng.standard_normal((channels, 1, 3, 3)).astype(np.float32),
        "fc_w": (rng.standard_normal((10, channels * 64)) * 0.05).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["input", "conv_w"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["h0"]),
    ]
    if identity_convs:
        identity = np.zeros((channels, channels, 3, 3), np.float32)
        identity[np.arange(channels), np.arange(channels), 1, 1] = 1.0
        weights["identity_w"] = identity
    for i in range(identity_convs):
        nodes.append(
            helper.make_node("Conv", [f"h{i}", "identity_w"], [f"h{i + 1}"], pads=[1, 1, 1, 1])
        )
    nodes += [
        helper.make_node("Flatten", [f"h{identity_convs}"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every ONNX Runtime since 1.14 loads
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


def _checkout(root: Path, fast_model: Path) -> Path:
    """A project folder as a team's repository holds it: settings, manifest, model, data."""
    manifests = team_project(root, "tiny_cnn.yaml", MANIFEST)
    (manifests / "model.onnx").write_bytes(fast_model.read_bytes())
    inputs = np.random.default_rng(1).random((16, 1, 8, 8), dtype=np.float32)
    np.savez(manifests / "inputs.npz", inputs=inputs)
    session = ort.InferenceSession(str(fast_model), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": inputs})
    np.savez(manifests / "golden.npz", logits=logits)
    return root


def _run(pytester: pytest.Pytester, checkout: Path, *args: str) -> pytest.RunResult:
    # The inner pytest finds its rootdir and pyproject.toml from its working directory.
    with contextlib.chdir(checkout):
        return pytester.runpytest_subprocess("--mlscope", "-p", "no:cacheprovider", *TIMING, *args)


def _latest_verdict(db: Path) -> tuple[str, dict]:
    store = Store.from_location(db, create=False)
    try:
        record = store.latest_results(store.runs(limit=1)[0].id)[ITEM]
    finally:
        store.close()
    assert record.verdict is not None
    return record.outcome, record.verdict


def test_a_model_edit_in_a_second_checkout_is_timed_beside_the_baseline_fetched_from_the_database(
    pytester: pytest.Pytester,
) -> None:
    fast, slow = pytester.path / "fast.onnx", pytester.path / "slow.onnx"
    _export_model(fast)
    _export_model(slow, identity_convs=SLOW_IDENTITY_CONVS)
    db = pytester.path / "ci" / "results.db"
    db.parent.mkdir()
    one = _checkout(pytester.path / "one", fast)
    two = _checkout(pytester.path / "two", fast)
    shared = (f"--mlscope-db={db}",)

    saved = _run(
        pytester, one, *shared, f"--mlscope-cache={one / 'cache'}", "--mlscope-save-baseline=main"
    )
    saved.assert_outcomes(passed=1)
    saved.stdout.fnmatch_lines(["baseline 'main' now points to run *"])

    # Checkout two edits the model and has an empty artifact cache: the baseline's file exists
    # only in the results database.
    (two / "manifests" / "model.onnx").write_bytes(slow.read_bytes())
    cache = f"--mlscope-cache={two / 'cache'}"
    edited = _run(pytester, two, *shared, cache, "--mlscope-baseline=main", LOOSE)
    edited.assert_outcomes(failed=1)
    edited.stdout.fnmatch_lines(["*RegressionDetected: regression +*"])
    outcome, verdict = _latest_verdict(db)
    assert outcome == "failed"
    assert verdict["design"] == "interleaved" and verdict["kind"] == "regression", verdict
    assert "fetched from the results database" in verdict["reason"], verdict["reason"]
    assert verdict["ratio_low"] > 1.5, verdict
    baseline_sha256 = hashlib.sha256(fast.read_bytes()).hexdigest()
    assert baseline_sha256[:12] in verdict["reason"]
    fetched = two / "cache" / "from-store" / baseline_sha256 / "model.onnx"
    assert fetched.read_bytes() == fast.read_bytes()

    # The edit reverted: the bytes the baseline measured, so both sides load the same file.
    (two / "manifests" / "model.onnx").write_bytes(fast.read_bytes())
    reverted = _run(pytester, two, *shared, cache, "--mlscope-baseline=main", VERY_LOOSE)
    reverted.assert_outcomes(passed=1)
    outcome, verdict = _latest_verdict(db)
    assert outcome == "passed"
    assert verdict["design"] == "interleaved" and verdict["kind"] == "ok", verdict
    assert verdict["ratio_low"] < verdict["ratio"] < verdict["ratio_high"]


def test_a_model_kept_in_an_artifact_directory_is_timed_beside_an_edit_in_another_checkout(
    pytester: pytest.Pytester,
) -> None:
    """--mlscope-artifact-store (a model too large for the database): the baseline's file goes to
    the directory, the database keeps its row; a second checkout finds it there by checksum."""
    import sqlalchemy as sa

    from pytest_mlscope.store.schema import artifact_chunks_table

    fast, slow = pytester.path / "fast.onnx", pytester.path / "slow.onnx"
    _export_model(fast)
    _export_model(slow, identity_convs=SLOW_IDENTITY_CONVS)
    db = pytester.path / "ci" / "results.db"
    db.parent.mkdir()
    share = pytester.path / "share"
    one = _checkout(pytester.path / "one", fast)
    two = _checkout(pytester.path / "two", slow)
    shared = (f"--mlscope-db={db}",)
    _run(
        pytester, one, *shared, f"--mlscope-cache={one / 'cache'}",
        f"--mlscope-artifact-store={share}", "--mlscope-save-baseline=main",
    ).assert_outcomes(passed=1)  # fmt: skip
    sha256 = hashlib.sha256(fast.read_bytes()).hexdigest()
    assert (share / sha256[:2] / sha256).read_bytes() == fast.read_bytes()
    store = Store.from_location(db, create=False)
    try:
        stored = store.artifact(sha256)
        with store._engine.connect() as connection:
            chunks = connection.execute(
                sa.select(sa.func.count()).select_from(artifact_chunks_table)
            ).scalar_one()
    finally:
        store.close()
    assert stored is not None and stored.location == str(share) and chunks == 0

    # Checkout two: the slow file, an empty cache, and only the baseline's name.
    cache = f"--mlscope-cache={two / 'cache'}"
    _run(pytester, two, *shared, cache, "--mlscope-baseline=main", LOOSE).assert_outcomes(failed=1)
    outcome, verdict = _latest_verdict(db)
    assert outcome == "failed"
    assert verdict["design"] == "interleaved" and verdict["kind"] == "regression", verdict
    assert sha256[:12] in verdict["reason"]
    fetched = two / "cache" / "from-store" / sha256 / "model.onnx"
    assert fetched.read_bytes() == fast.read_bytes()

    # A runner that does not mount the directory: the stored design, and how to point at it.
    import shutil

    shutil.move(share, pytester.path / "elsewhere")
    shutil.rmtree(two / "cache")
    _run(pytester, two, *shared, cache, "--mlscope-baseline=main", LOOSE)
    _outcome, verdict = _latest_verdict(db)
    assert verdict["design"] == "stored", verdict
    assert f"is missing: its file is not in the artifact directory {share}" in verdict["reason"]
    assert "--mlscope-artifact-store=DIR" in verdict["reason"]

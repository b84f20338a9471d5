"""The worker protocol: one pass per request, refused combinations, the kind of each line, and a
version mismatch named as such, by a real worker process and by the host reading its ready line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pytest

from pytest_mlscope.passes import PASSES
from pytest_mlscope.protocol import (
    PROTOCOL_VERSION,
    AccuracyPass,
    ArtifactRef,
    Cell,
    CountPass,
    EvaluationRequest,
    HoldPass,
    Interleave,
    MeasureOptions,
    PassKind,
    RoundRequest,
    TimingPass,
    WorkerReply,
)
from pytest_mlscope.runtimes.base import check_ready
from pytest_mlscope.worker import ProtocolMismatch, parse_request

CELL = Cell(model="m", framework="onnxruntime", device="cpu", batch_size=1, scenario="offline")
ARTIFACT = ArtifactRef(format="onnx", path="/nowhere/m.onnx", sha256="0" * 64)


def _request(**fields: Any) -> EvaluationRequest:
    return EvaluationRequest(
        cell=CELL,
        manifest_path="/nowhere/m.yaml",
        artifact=ARTIFACT,
        measure=MeasureOptions(),
        work_dir="/nowhere",
        **fields,
    )


@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        ({}, "timing"),
        ({"pass_": TimingPass(interleave=Interleave(artifact=ARTIFACT))}, "timing"),
        ({"pass_": AccuracyPass()}, "accuracy"),
        ({"pass_": HoldPass()}, "hold"),
        ({"pass_": CountPass(), "checks": [], "inputs_path": "/x.npz"}, "count"),
    ],
)
def test_each_request_is_one_pass_and_the_worker_has_a_function_for_it(
    fields: dict[str, Any], kind: str
) -> None:
    assert _request(**fields).pass_kind == kind
    assert set(PASSES) == set(get_args(PassKind))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        # A pass's own fields belong to it: a hold has no A side, an accuracy pass no rounds.
        ({"pass_": {"kind": "hold", "interleave": {}}}, "pass_.hold.interleave"),
        ({"pass_": {"kind": "accuracy", "rounds": 5}}, "pass_.accuracy.rounds"),
        ({"pass_": {"kind": "profile"}}, "does not match any of the expected tags"),
        ({"inputs_path": "/x.npz"}, "inputs_path gives no dataset to check accuracy on"),
        (
            {"inputs_path": "/x.npz", "checks": [], "save_inputs": "/y.npz"},
            "inputs_path and save_inputs exclude each other",
        ),
    ],
)
def test_combinations_that_mean_nothing_are_refused_when_made(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _request(**fields)


def test_a_line_is_parsed_by_its_kind() -> None:
    assert isinstance(parse_request(_request().model_dump_json()), EvaluationRequest)
    line = RoundRequest(cell=CELL, measure=MeasureOptions()).model_dump_json()
    assert isinstance(parse_request(line), RoundRequest)


def test_another_protocol_version_is_named_before_any_field_is_read() -> None:
    line = json.dumps({"version": PROTOCOL_VERSION + 1, "something": "new"})
    with pytest.raises(ProtocolMismatch, match=f"host sent worker protocol {PROTOCOL_VERSION + 1}"):
        parse_request(line)


def test_a_real_worker_replies_with_the_mismatch_and_the_refusal_and_keeps_serving() -> None:
    # model_copy does not validate: a host bug that the worker catches.
    bad = _request().model_copy(update={"inputs_path": "/x.npz"})
    lines = [json.dumps({"version": PROTOCOL_VERSION + 1}), bad.model_dump_json()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest_mlscope.worker"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    replies = [WorkerReply.model_validate_json(line) for line in done.stdout.splitlines()]
    assert [r.error_type for r in replies] == ["ready", "ProtocolMismatch", "BadRequest"]
    assert "rebuild it" in (replies[1].error or "")
    assert "inputs_path gives no dataset to check accuracy on" in (replies[2].error or "")


def test_the_host_refuses_a_worker_of_another_protocol_at_its_ready_line() -> None:
    assert check_ready(WorkerReply(ok=True, error_type="ready"), " here") is None
    stale = WorkerReply(ok=True, error_type="ready", version=PROTOCOL_VERSION - 1)
    problem = check_ready(stale, " in an old image")
    assert problem is not None and f"speaks protocol {PROTOCOL_VERSION - 1}" in problem
    assert "instead of its ready line" in (check_ready(WorkerReply(ok=False), " x") or "")


BROKEN = """\
name: broken
framework:
  - name: onnxruntime
model:
  source: {path: {onnxruntime: broken.onnx}}
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
"""


def test_a_framework_error_reaches_the_user_as_one_line_with_its_traceback_in_a_file(
    tmp_path: Path,
) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "broken.yaml").write_text(BROKEN)
    (manifests / "broken.onnx").write_bytes(b"not a protobuf at all" * 100)
    np.savez(manifests / "inputs.npz", inputs=np.zeros((4, 1, 8, 8), np.float32))
    done = subprocess.run(
        [sys.executable, "-m", "pytest_mlscope.cli", "golden", "manifests/broken.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    output = (done.stdout + done.stderr).strip()
    assert "Traceback (most recent call last)" not in output
    line = output.splitlines()[-1]
    assert "INVALID_PROTOBUF" in line and "(in " in line, output
    saved = Path(line.rsplit("traceback: ", 1)[1])
    assert "Traceback (most recent call last)" in saved.read_text()

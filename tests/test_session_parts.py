"""The session's parts on their own, without pytest: which worker serves a cell (the runtime
pool), why a cell cannot run here (availability), and the request an item's pass sends (evaluation).

The bundled digits manifest lists six frameworks; this machine has no GPU, so its GPU cells are
the unavailable ones. Nothing here starts a worker: runtimes start on their first request.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_mlscope.protocol import AccuracyPass, Cell
from pytest_mlscope.session import MlscopeSession, Settings

MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"


@pytest.fixture
def session(tmp_path: Path) -> Iterator[MlscopeSession]:
    state = MlscopeSession(Settings(rootdir=tmp_path, manifest_paths=[MANIFESTS]))
    yield state
    state.close()


def _cell(framework: str, **fields: object) -> Cell:
    return Cell(model="digits_cnn", framework=framework, **fields)  # type: ignore[arg-type]


def test_host_frameworks_share_one_worker_and_a_venv_stack_gets_its_own(
    session: MlscopeSession,
) -> None:
    torch, ort = session.runtime(_cell("torch")), session.runtime(_cell("onnxruntime"))
    assert torch is ort
    assert session.runtime(_cell("torch", batch_size=8)) is torch
    mxnet = session.runtime(_cell("mxnet"))
    assert mxnet is not torch
    assert "stacks" in str(getattr(mxnet, "python", ""))  # the MXNet venv's interpreter
    assert getattr(torch, "started", None) == 0  # nothing started until a request comes
    assert not session.in_container(_cell("torch"))


def test_a_cell_this_host_cannot_run_says_why_and_is_not_a_missing_service(
    session: MlscopeSession,
) -> None:
    manifest = session.manifest("digits_cnn")
    assert session.skip_reason(manifest, _cell("onnxruntime")) == (None, False)
    from pytest_mlscope.hardware import current_host

    if current_host().gpus:
        pytest.skip("this host has a GPU: the GPU cell can run")
    reason, service_missing = session.skip_reason(manifest, _cell("torch", device="gpu"))
    assert reason is not None and "needs an NVIDIA GPU" in reason
    assert not service_missing  # a host without a GPU is not a broken CI machine


def test_a_missing_service_fails_under_ci_where_a_missing_device_still_skips(
    session: MlscopeSession, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    manifest = session.manifest("digits_cnn")
    monkeypatch.setenv("MLSCOPE_STACKS", str(tmp_path / "no-stacks"))  # mxnet's venv is not set up
    monkeypatch.setenv("CI", "false")
    skipped = session.unavailable(manifest, _cell("mxnet"))
    assert skipped is not None and "`mlscope stacks setup mxnet`" in skipped[0]
    assert skipped[1] is False  # on a laptop: a skip that says what to run
    monkeypatch.setenv("CI", "true")
    assert session.unavailable(manifest, _cell("mxnet")) == (
        f"{skipped[0]} (CI=true: fails instead of skipping)",
        True,
    )
    assert session.unavailable(manifest, _cell("onnxruntime")) is None
    from pytest_mlscope.hardware import current_host

    if not current_host().gpus:  # no GPU is not a broken CI machine: a skip even under CI
        reason, fails = session.unavailable(manifest, _cell("torch", device="gpu"))  # type: ignore[misc]
        assert "needs an NVIDIA GPU" in reason and fails is False


def test_an_unknown_predictor_is_a_skip_with_its_name(tmp_path: Path) -> None:
    settings = Settings(
        rootdir=tmp_path, manifest_paths=[MANIFESTS], predictors={"torch": "no_such_module:Torch"}
    )
    state = MlscopeSession(settings)
    try:
        reason, _ = state.skip_reason(state.manifest("digits_cnn"), _cell("torch"))
    finally:
        state.close()
    assert reason is not None and "no_such_module" in reason


def test_the_requests_an_item_sends_are_one_pass_each(session: MlscopeSession) -> None:
    manifest = session.manifest("digits_cnn")  # its model comes from the tests' shared cache
    timing = session._request(manifest, _cell("onnxruntime"))
    assert timing.pass_kind == "timing" and timing.interleave is None
    accuracy = session._request(manifest, _cell("onnxruntime"), accuracy=AccuracyPass())
    assert accuracy.pass_kind == "accuracy" and accuracy.trace_level == "none"


def test_each_timed_item_starts_in_a_worker_that_served_nothing_before(
    session: MlscopeSession,
) -> None:
    """A worker keeps part of what the models before it allocated, and the next model reuses
    it unseen: each timed item gets its stack's worker started again, and measures its memory
    there."""
    manifest = session.manifest("digits_cnn")
    fast = {"warmup": 1, "min_count": 5, "min_duration_s": 0.01, "rounds": 1}
    first, second = (
        session.evaluate(manifest, _cell("onnxruntime", batch_size=size), **fast) for size in (1, 8)
    )
    assert first.worker_pid != second.worker_pid
    assert first.memory is not None and second.memory is not None
    assert first.memory.model > 0 and second.memory.model > 0

"""The injected slowdown is a fraction of each call, whatever the call costs at the moment.

A fake clock stands in for time: the model call advances it by a known amount and every read of
it by a fixed step (a read's own cost), so the wait is checked exactly, on any machine, under any
load.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_mlscope import slowdown

READ = 50e-9  # what one clock read costs on the fake clock


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.reads = 0

    def __call__(self) -> float:
        self.now += READ
        self.reads += 1
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(slowdown.time, "perf_counter", fake)
    return fake


def _model(clock: Clock, seconds: list[float]) -> Any:
    def call(_: Any) -> str:
        clock.now += seconds[0]
        return "output"

    return call


def test_the_wait_is_the_fraction_of_the_call_it_follows(clock: Clock) -> None:
    cost = [4e-6]  # a 4 µs model: the 5 % wait is 200 ns, four clock reads
    slower = slowdown.slowed(_model(clock, cost), None, 0.05)
    for latency in (4e-6, 8e-6, 40e-6, 4e-3):  # the model slows down (a thread pool's slow mode)
        cost[0] = latency
        before = clock.now
        assert slower(None) == "output"
        waited = clock.now - before - latency - 2 * READ  # the two reads around the call
        # exact to one clock read, whatever the call cost
        assert 0.05 * (latency + READ) <= waited <= 0.05 * (latency + READ) + READ, latency


def test_the_wait_does_not_depend_on_a_calibration(clock: Clock) -> None:
    """The old spin was sized once from the machine's speed at calibration: a CPU that sped up
    or slowed down afterwards delivered another fraction. The wait reads the clock: a 2.5 %
    slowdown is 2.5 % in every process."""
    cost = [1e-4]
    for fraction in (0.025, 0.05, 0.10):
        slower = slowdown.slowed(_model(clock, cost), None, fraction)
        before = clock.now
        slower(None)
        total = clock.now - before
        assert total / (cost[0] + 3 * READ) - 1 == pytest.approx(fraction, abs=0.002), fraction


def test_no_slowdown_returns_the_call_itself(clock: Clock) -> None:
    call = _model(clock, [1e-3])
    assert slowdown.slowed(call, None, 0.0) is call


def test_the_unslowed_side_pays_the_same_wrapper_and_waits_for_nothing(clock: Clock) -> None:
    """Beside a slowed B, A runs in the same wrapper (the clock reads around the call and the
    one that ends the wait), so the wrapper's own cost is on both sides and the measured
    difference is the injected work."""
    cost = [4e-6]
    same = slowdown.matched(_model(clock, cost))
    slower = slowdown.slowed(_model(clock, cost), None, 0.05)
    before, reads = clock.now, clock.reads
    assert same(None) == "output"
    assert clock.reads - reads == 3  # before, after, and the wait's one check
    assert clock.now - before == pytest.approx(4e-6 + 3 * READ)
    reads = clock.reads
    slower(None)
    assert clock.reads - reads > 3


def test_interleaved_a_is_wrapped_only_when_b_is_slowed(clock: Clock) -> None:
    from pytest_mlscope.passes import _side_a
    from pytest_mlscope.protocol import ArtifactRef, Cell, EvaluationRequest, MeasureOptions

    plain = EvaluationRequest(
        cell=Cell(
            model="m", framework="onnxruntime", device="cpu", batch_size=1, scenario="offline"
        ),
        manifest_path="/nowhere/m.yaml",
        artifact=ArtifactRef(format="onnx", path="/nowhere/m.onnx", sha256="0" * 64),
        measure=MeasureOptions(),
        work_dir="/nowhere",
    )
    call = _model(clock, [1e-3])
    assert _side_a(call, None, 0.0, plain) is call
    wrapped = _side_a(call, None, 0.0, plain.model_copy(update={"inject_slowdown": 0.05}))
    reads = clock.reads
    assert wrapped is not call and wrapped(None) == "output"
    assert clock.reads - reads == 3  # B's wrapper, with no work added: A is not slowed


def test_a_held_a_side_beside_a_slowed_b_in_another_worker_is_matched(clock: Clock) -> None:
    from types import SimpleNamespace

    from pytest_mlscope.passes import _hold_pass
    from pytest_mlscope.protocol import (
        ArtifactRef,
        Cell,
        EvaluationRequest,
        HoldPass,
        MeasureOptions,
    )

    held = EvaluationRequest(
        cell=Cell(model="m", framework="onnxruntime", device="cpu", batch_size=1),
        manifest_path="/nowhere/m.yaml",
        artifact=ArtifactRef(format="onnx", path="/nowhere/m.onnx", sha256="0" * 64),
        measure=MeasureOptions(warmup=0),
        work_dir="/nowhere",
        pass_=HoldPass(),
        matched_wrapper=True,
    )
    predictor = SimpleNamespace(predict=_model(clock, [1e-3]))
    measured = _hold_pass(held, predictor, [], [None], None)  # type: ignore[arg-type]
    reads = clock.reads
    assert measured.call is not None and measured.call(None) == "output"
    assert clock.reads - reads == 3

"""The injected slowdown is a fraction of each call, whatever the call costs at the moment.

A fake clock stands in for time: the model call and the spin each advance it by a known amount,
so the sizing is checked exactly, on any machine, under any load.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_mlscope import slowdown


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.spins: list[int] = []

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()

    def spin(iterations: int) -> int:
        # Short spins run faster per iteration than long ones (cached small integers): a
        # calibration that sized them from long bursts alone would under-deliver.
        per_iteration = 8e-9 if iterations < 1000 else 10e-9
        fake.now += iterations * per_iteration
        fake.spins.append(iterations)
        return iterations

    monkeypatch.setattr(slowdown.time, "perf_counter", fake)
    monkeypatch.setattr(slowdown, "spin", spin)
    return fake


def _model(clock: Clock, seconds: list[float]) -> Any:
    def call(_: Any) -> str:
        clock.now += seconds[0]
        return "output"

    return call


def test_the_spin_is_the_fraction_of_the_call_it_follows(clock: Clock) -> None:
    cost = [4e-6]  # a 4 µs model: the 5 % spin is 200 ns, 25 short iterations
    slower = slowdown.slowed(_model(clock, cost), None, 0.05)
    for latency in (4e-6, 8e-6, 40e-6):  # the model slows down (a thread pool's slow mode)
        cost[0] = latency
        before = clock.now
        assert slower(None) == "output"
        spun = clock.now - before - latency
        assert spun == pytest.approx(0.05 * latency, rel=0.05), latency


def test_no_slowdown_returns_the_call_itself(clock: Clock) -> None:
    call = _model(clock, [1e-3])
    assert slowdown.slowed(call, None, 0.0) is call


def test_the_unslowed_side_pays_the_same_wrapper_and_spins_nothing(clock: Clock) -> None:
    """Beside a slowed B, A runs in the same wrapper (two clock reads, one spin call), so the
    wrapper's own cost is on both sides and the measured difference is the injected work."""
    cost = [4e-6]
    same = slowdown.matched(_model(clock, cost))
    slower = slowdown.slowed(_model(clock, cost), None, 0.05)
    clock.spins.clear()
    before = clock.now
    assert same(None) == "output"
    assert clock.now - before == pytest.approx(4e-6)
    assert clock.spins == [0]  # the spin is called, with nothing to do
    slower(None)
    assert len(clock.spins) == 2 and clock.spins[1] > 0


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
    clock.spins.clear()
    assert wrapped is not call and wrapped(None) == "output"
    assert clock.spins == [0]  # B's wrapper, with no work added: A is not slowed


def test_a_held_a_side_beside_a_slowed_b_in_another_worker_is_matched(clock: Clock) -> None:
    from types import SimpleNamespace

    from pytest_mlscope.passes import _hold_pass
    from pytest_mlscope.protocol import ArtifactRef, Cell, EvaluationRequest, MeasureOptions

    held = EvaluationRequest(
        cell=Cell(model="m", framework="onnxruntime", device="cpu", batch_size=1),
        manifest_path="/nowhere/m.yaml",
        artifact=ArtifactRef(format="onnx", path="/nowhere/m.onnx", sha256="0" * 64),
        measure=MeasureOptions(warmup=0),
        work_dir="/nowhere",
        hold=True,
        matched_wrapper=True,
    )
    predictor = SimpleNamespace(predict=_model(clock, [1e-3]))
    measured = _hold_pass(held, predictor, [], [None], None)  # type: ignore[arg-type]
    clock.spins.clear()
    assert measured.call is not None and measured.call(None) == "output"
    assert clock.spins == [0]

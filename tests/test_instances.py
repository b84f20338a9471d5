"""A model edit is timed on a fresh pair of instances per pair of rounds.

Two loaded instances of one model differ by their memory layout, by a few percent, for their
whole life; so can the first session a process makes. A predictor that only counts stands in for
a framework here, so what is loaded and timed is checked exactly.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from pytest_mlscope.passes import _interleaved, renew_every
from pytest_mlscope.predictors.base import Predictor
from pytest_mlscope.protocol import (
    ArtifactRef,
    Cell,
    EvaluationRequest,
    HoldPass,
    Interleave,
    MeasureOptions,
    PredictorInfo,
    TimingPass,
)


class Counting(Predictor):
    """Each load is a new instance, numbered; a prediction answers with its instance."""

    name = "counting"
    formats = ("onnx",)
    loads: ClassVar[list[str]] = []
    predicted: ClassVar[list[int]] = []
    closed: ClassVar[list[int]] = []

    def load(self, artifact: ArtifactRef) -> None:
        self.instance = len(Counting.loads)
        Counting.loads.append(Path(artifact.path).stem)

    def predict(self, prepared: Any) -> Any:
        Counting.predicted.append(self.instance)
        return self.instance

    def close(self) -> None:
        Counting.closed.append(self.instance)

    def info(self) -> PredictorInfo:
        return PredictorInfo(framework=self.name, version="0", device="cpu")


def _artifact(path: Path, content: bytes) -> ArtifactRef:
    path.write_bytes(content)
    return ArtifactRef(format="onnx", path=str(path), sha256=hashlib.sha256(content).hexdigest())


def _request(tmp_path: Path, min_duration_s: float) -> EvaluationRequest:
    return EvaluationRequest(
        cell=Cell(model="m", framework="counting", device="cpu", batch_size=1),
        manifest_path=str(tmp_path / "m.yaml"),
        artifact=_artifact(tmp_path / "edited.onnx", b"B"),
        pass_=TimingPass(
            interleave=Interleave(artifact=_artifact(tmp_path / "baseline.onnx", b"A"), seed=5)
        ),
        measure=MeasureOptions(warmup=1, min_count=90, min_duration_s=min_duration_s, rounds=1),
        work_dir=str(tmp_path),
        predictors={"counting": "test_instances:Counting"},
    )


def test_each_pair_loads_both_files_afresh_and_never_times_the_first_instance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pytest_mlscope.passes as passes

    # A load this cheap renews every pair (renew_every's own test); fixed here, so a preempted
    # load on a busy machine cannot make it every second pair.
    monkeypatch.setattr(passes, "renew_every", lambda renew_s, pair_s: 1)
    Counting.loads.clear()
    Counting.closed.clear()
    item = Counting()
    item.load(_request(tmp_path, 0.6).artifact)  # the item's predictor: accuracy only
    Counting.predicted.clear()
    a, b = _interleaved(_request(tmp_path, 0.6), item, [np.zeros(1)], item.predict, [None])
    pairs = len(a.rounds)
    assert pairs == len(b.rounds) >= 30
    # the first pair (which also measured what loading costs), then one pair per further pair
    # of rounds, both files each time
    assert Counting.loads[1:] and len(Counting.loads) == 1 + 2 * pairs
    assert sorted(Counting.loads[1:]) == ["baseline"] * pairs + ["edited"] * pairs
    firsts = {Counting.loads[i] for i in range(1, len(Counting.loads), 2)}
    assert firsts == {"baseline", "edited"}  # loaded in random order, so neither is always first
    assert 0 not in Counting.predicted  # the first instance of the process is never timed
    assert len(set(Counting.predicted)) == 2 * pairs
    assert sorted(Counting.closed) == list(range(1, len(Counting.loads)))  # none left loaded


def test_a_model_too_slow_to_reload_is_timed_on_one_fresh_pair(tmp_path: Path) -> None:
    Counting.loads.clear()
    Counting.closed.clear()
    item = Counting()
    item.load(_request(tmp_path, 0.0).artifact)
    Counting.predicted.clear()
    # no duration floor: any load is more than a quarter of a pair's (zero) time
    a, _ = _interleaved(_request(tmp_path, 0.0), item, [np.zeros(1)], item.predict, [None])
    assert len(a.rounds) >= 30
    assert Counting.loads == ["edited", "baseline", "edited"] or Counting.loads == [
        "edited",
        "edited",
        "baseline",
    ]  # the item's, then one fresh pair
    assert set(Counting.predicted) == {1, 2}
    assert sorted(Counting.closed) == [1, 2]


def test_a_model_that_loads_slowly_is_renewed_as_often_as_a_quarter_of_the_time_allows() -> None:
    assert renew_every(renew_s=0.005, pair_s=0.04) == 1  # 5 ms beside 40 ms: every pair
    assert renew_every(renew_s=0.02, pair_s=0.04) == 2  # 20 ms: half a pair, every second one
    assert renew_every(renew_s=2.0, pair_s=0.04) == 200  # a 2 s load: rarely, but more than once
    assert renew_every(renew_s=0.001, pair_s=0.0) is None  # no duration to share: one pair


def test_a_held_model_is_timed_on_a_fresh_instance_for_each_round_the_host_renews(
    tmp_path: Path,
) -> None:
    """Across two stacks each side is held in its own worker; the host renews both for each
    pair, so the upgrade's A/B sees a new memory layout per pair, as an edit does in one."""
    from pytest_mlscope import worker
    from pytest_mlscope.protocol import AccuracyReport, ColdStart, EvaluationResult, RoundRequest

    request = _request(tmp_path, 0.0).model_copy(update={"pass_": HoldPass()})
    Counting.loads.clear()
    Counting.closed.clear()
    first = Counting()
    first.load(request.artifact)
    result = EvaluationResult(
        cell=request.cell,
        predictor=first.info(),
        artifact_sha256=request.artifact.sha256,
        cold_start=ColdStart(load_s=0.0, first_inference_s=0.0),
        accuracy=AccuracyReport(),
    )
    worker._HELD[request.cell] = worker._Held(
        request, first, first.predict, [None], [np.zeros(1)], result
    )
    round_options = MeasureOptions(warmup=0, min_count=5, min_duration_s=0.0)
    try:
        Counting.predicted.clear()
        kept = worker.time_round(RoundRequest(cell=request.cell, measure=round_options))
        assert len(kept.samples_ns) == 5 and set(Counting.predicted) == {0}
        for expected in (1, 2):
            Counting.predicted.clear()
            renewed = RoundRequest(cell=request.cell, measure=round_options, renew=True)
            got = worker.time_round(renewed)
            assert len(got.samples_ns) == 5 and got.rounds == [5]
            assert set(Counting.predicted) == {expected}  # warm-up and round: the new one only
            assert Counting.closed[-1] == expected - 1  # the one before is closed
        assert Counting.loads == ["edited"] * 3
    finally:
        worker.time_round(RoundRequest(cell=request.cell, measure=round_options, release=True))
    assert Counting.closed == [0, 1, 2]

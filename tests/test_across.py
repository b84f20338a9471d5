"""The rounds across two stacks' workers (pytest_mlscope.across), with workers that answer
from a script: which worker timed what, which process was replaced, what was released.

Speeds are given, never measured, so every assertion is exact and no load can move it.
"""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_mlscope.across import AcrossWorkers
from pytest_mlscope.measure import WORKERS_PER_SIDE
from pytest_mlscope.protocol import (
    AccuracyReport,
    ArtifactRef,
    Cell,
    ColdStart,
    EvaluationRequest,
    EvaluationResult,
    GenerationRound,
    MeasureOptions,
    PredictorInfo,
    RoundRequest,
)


class Worker:
    """One worker process as the host sees it: ``speeds[g]`` is the ns per call of its g-th
    process (a close ends one; the next request starts the next), with a little noise."""

    def __init__(self, name: str, speeds: list[float], log: list[tuple[Any, ...]]) -> None:
        self.name, self.speeds, self.log = name, speeds, log
        self.generation = 0
        self.noise = random.Random(name)
        self.ttft: float | None = None  # ns: rounds bring their generations (a generate cell)

    def evaluate(
        self, request: EvaluationRequest | RoundRequest, timeout: float | None = None
    ) -> EvaluationResult:
        result = EvaluationResult(
            cell=request.cell,
            predictor=PredictorInfo(framework="onnxruntime", version=self.name[0], device="cpu"),
            artifact_sha256="0" * 64,
            cold_start=ColdStart(load_s=0.0, first_inference_s=0.0),
            accuracy=AccuracyReport(),
        )
        if isinstance(request, EvaluationRequest):
            self.log.append(("hold", self.name, self.generation, request.checks))
            return result
        if request.release:
            self.log.append(("release", self.name, self.generation, request.cell.model))
            return result
        speed = self.speeds[min(self.generation, len(self.speeds) - 1)]
        samples = [int(speed * (1 + self.noise.gauss(0, 0.01))) for _ in range(3)]
        self.log.append(("round", self.name, self.generation, request.cell.model))
        generated = None
        if self.ttft is not None:  # a generate cell: each call's first token and decode time
            generated = GenerationRound(
                new_tokens=5, prompt_tokens=7,
                ttft_ns=[int(self.ttft * (1 + self.noise.gauss(0, 0.01))) for _ in samples],
                decode_ns=[int(s - self.ttft) for s in samples],
                gaps_ns=[int(s - self.ttft) // 4 for s in samples for _ in range(4)],
            )  # fmt: skip
        return result.model_copy(
            update={
                "samples_ns": samples,
                "telemetry": {"renew_s": 0.0},
                "generation_round": generated,
            }
        )

    def close(self) -> None:
        self.log.append(("close", self.name, self.generation))
        self.generation += 1


class Host(AcrossWorkers):
    """What the across-stacks rounds need of a session."""

    def __init__(self, tmp_path: Path, b_workers: list[Worker]) -> None:
        self.work_dir = tmp_path
        self.settings = SimpleNamespace(timeout=None)
        self.comparisons = 1
        self.b_workers = b_workers

    def runtime(self, cell: Cell, copy: int = 0) -> Any:
        return self.b_workers[min(copy, len(self.b_workers) - 1)]

    def threshold(self, manifest: Any) -> float:
        return 0.05


def _request(tmp_path: Path, model: str) -> EvaluationRequest:
    content = model.encode()
    (tmp_path / f"{model}.onnx").write_bytes(content)
    return EvaluationRequest(
        cell=Cell(model=model, framework="onnxruntime", device="cpu", batch_size=1),
        manifest_path=str(tmp_path / "m.yaml"),
        artifact=ArtifactRef(
            format="onnx",
            path=str(tmp_path / f"{model}.onnx"),
            sha256=hashlib.sha256(content).hexdigest(),
        ),
        # No duration floor: a block is MIN_PAIRS pairs, whatever the machine's speed.
        measure=MeasureOptions(warmup=0, min_count=3, min_duration_s=0.0, rounds=1),
        work_dir=str(tmp_path),
    )


def _run(tmp_path: Path, a: list[Worker], b: list[Worker]) -> tuple[EvaluationResult, str]:
    host = Host(tmp_path, b)
    b_request, a_request = _request(tmp_path, "m"), _request(tmp_path, "m_a")
    result, _, said = host._interleave_workers(
        SimpleNamespace(),
        b_request.cell,
        b_request,
        a_request.cell,
        a_request,
        lambda k: a[min(k, len(a) - 1)],
    )
    return result, said


def test_a_worker_that_stands_apart_is_replaced_and_its_meetings_timed_again(
    tmp_path: Path,
) -> None:
    """B's third worker starts 30 % slower than every other process; after the first block it
    is closed, its fresh process holds the model unchecked, and exactly the meetings it had are
    timed again before any decision. Nothing the slow process timed is kept, every worker still
    meets every other alike, and each held model is released once, by the process holding it."""
    log: list[tuple[Any, ...]] = []
    per_side = WORKERS_PER_SIDE
    a = [Worker(f"a{k}", [1e6], log) for k in range(per_side)]
    b = [Worker(f"b{k}", [1.3e6, 1e6] if k == 2 else [1e6], log) for k in range(per_side)]
    result, said = _run(tmp_path, a, b)

    assert [entry for entry in log if entry[0] == "close"] == [("close", "b2", 0)]
    assert re.search(
        # 30 % slower, as its side's others saw it through 1 % noise per call and the rounds
        # each drew (which thread answered first varies): 27 to 33 %.
        r"replaced by a fresh process, its pairs timed again: B's worker 3 \((2[7-9]|3[0-3])\.\d% "
        r"slower than its side's others\)",
        said,
    ), said
    holds = [entry for entry in log if entry[0] == "hold"]
    assert holds[0] == ("hold", "b0", 0, None)  # B's first worker checks accuracy
    assert ("hold", "b2", 1, []) in holds  # the fresh process: unchecked, as every other
    assert len(holds) == 2 * per_side + 1
    slow_rounds = [e for e in log if e[:3] == ("round", "b2", 0)]
    assert slow_rounds and max(result.samples_ns) < 1.2e6  # none of its rounds were kept
    met = [tuple(pair) for pair in result.paired_workers]
    assert len(met) == len(result.rounds) == len(result.paired_rounds)
    assert {pair for pair in met} == {(i, j) for i in range(per_side) for j in range(per_side)}
    assert sum(1 for _, j in met if j == 2) >= len(slow_rounds)  # timed again, as many times
    releases = sorted(entry[1:] for entry in log if entry[0] == "release")
    assert releases == sorted(
        [(w.name, 0, "m_a") for w in a] + [(w.name, 1 if w.name == "b2" else 0, "m") for w in b]
    )


def test_workers_alike_are_never_replaced(tmp_path: Path) -> None:
    log: list[tuple[Any, ...]] = []
    a = [Worker(f"a{k}", [1e6], log) for k in range(WORKERS_PER_SIDE)]
    b = [Worker(f"b{k}", [1.01e6], log) for k in range(WORKERS_PER_SIDE)]
    _, said = _run(tmp_path, a, b)
    assert not [entry for entry in log if entry[0] == "close"]
    assert "replaced" not in said


def test_one_worker_serving_both_sides_releases_both_models(tmp_path: Path) -> None:
    """The in-process runtime has no copies: one worker holds A's model and B's, and both are
    released at the end (one side's release must not stand for the other's)."""
    log: list[tuple[Any, ...]] = []
    only = Worker("b0", [1e6], log)
    result, _ = _run(tmp_path, [only], [only])
    assert {tuple(pair) for pair in result.paired_workers} == {(0, 0)}
    releases = sorted(entry[3] for entry in log if entry[0] == "release")
    assert releases == ["m", "m_a"]


def test_a_fresh_process_that_cannot_hold_leaves_its_worker_out(tmp_path: Path) -> None:
    """The replacement's hold fails: the item is timed on the others, and the verdict says so."""
    from pytest_mlscope.errors import WorkerCrashed

    log: list[tuple[Any, ...]] = []

    class Broken(Worker):
        def evaluate(self, request: Any, timeout: float | None = None) -> EvaluationResult:
            if self.generation == 1:
                raise WorkerCrashed("the fresh worker died at start")
            return super().evaluate(request, timeout)

    a = [Worker(f"a{k}", [1e6], log) for k in range(WORKERS_PER_SIDE)]
    b = [
        Broken(f"b{k}", [1.3e6], log) if k == 1 else Worker(f"b{k}", [1e6], log)
        for k in range(WORKERS_PER_SIDE)
    ]
    result, said = _run(tmp_path, a, b)
    assert re.search(r"B's worker 2 \(\d+\.\d% slower than its side's others\), left out: ", said)
    assert "died at start" in said
    assert all(j != 1 for _, j in result.paired_workers)
    assert max(result.samples_ns) < 1.2e6


@pytest.mark.parametrize("distance", [0.2, -0.2])
def test_what_a_replaced_worker_is_called(distance: float) -> None:
    from pytest_mlscope.across import _replaced

    # a higher level (B over A) is a faster A and a slower B
    assert _replaced("a", 0, distance) == (
        "A's worker 1 (18.1% faster than its side's others)"
        if distance > 0
        else "A's worker 1 (22.1% slower than its side's others)"
    )
    assert _replaced("b", 2, distance).startswith(
        "B's worker 3 (22.1% slower" if distance > 0 else "B's worker 3 (18.1% faster"
    )


def test_a_generate_item_across_two_stacks_judges_its_phases_on_the_pairs(tmp_path: Path) -> None:
    """Each round's answer carries its generations; the host joins them, B's figures with A's
    phases beside them in pair order, so time to first token is judged across stacks as in one
    worker: here B's is 1.5 times A's, inside whole calls that differ by 5 %."""
    from pytest_mlscope.compare import Side, verdict

    log: list[tuple[Any, ...]] = []
    a = [Worker(f"a{k}", [1e6], log) for k in range(WORKERS_PER_SIDE)]
    b = [Worker(f"b{k}", [1.05e6], log) for k in range(WORKERS_PER_SIDE)]
    for worker in a:
        worker.ttft = 1e5
    for worker in b:
        worker.ttft = 1.5e5
    result, _ = _run(tmp_path, a, b)
    figures = result.generation
    assert figures is not None and figures.new_tokens == 5 and figures.prompt_tokens == 7
    assert len(figures.ttft_ns) == len(result.samples_ns) == sum(result.rounds)
    assert len(figures.paired_ttft_ns) == len(result.paired_samples_ns)
    assert figures.ttft_ms == pytest.approx(0.15, rel=0.05)
    found = verdict(
        None,
        Side(
            samples_ns=result.samples_ns, rounds=result.rounds,
            paired_samples_ns=result.paired_samples_ns, paired_rounds=result.paired_rounds,
            paired_workers=result.paired_workers, generation=figures,
        ),
        threshold=0.10,
    )  # fmt: skip
    assert found.generation is not None and found.generation["ttft"]["kind"] == "regression"
    assert found.kind == "regression" and found.decided_by == "ttft", found.reason
    # Rounds without generations (the other scenarios) give no figures.
    plain, _ = _run(tmp_path, [Worker("a0", [1e6], log)], [Worker("b0", [1e6], log)])
    assert plain.generation is None


def test_a_held_decoder_s_round_brings_one_generation_per_timed_call(tmp_path: Path) -> None:
    """The worker's side: a round on a held generate model answers with the generations it
    timed (warm-up and earlier rounds left out), the prompt's length and the new tokens."""
    import time

    import numpy as np

    from pytest_mlscope import worker
    from pytest_mlscope.generation import Generating

    class Decoder:
        def generate(self, prepared: Any, new_tokens: int, stamps: list[int]) -> list[int]:
            for _ in range(new_tokens):
                stamps.append(time.perf_counter_ns())
            return list(range(new_tokens))

        def close(self) -> None:
            pass

    request = _request(tmp_path, "lm").model_copy(update={"new_tokens": 4})
    request = request.model_copy(
        update={"cell": request.cell.model_copy(update={"scenario": "generate"})}
    )
    predictor = Generating(Decoder(), 4)  # type: ignore[arg-type]
    for _ in range(3):  # warm-up and an earlier round
        predictor.predict(None)
    held = worker._Held(
        request, predictor, predictor.predict, [None], [np.zeros((1, 7))],
        Worker("b0", [1e6], []).evaluate(request),
    )  # fmt: skip
    worker._HELD[request.cell] = held
    try:
        measure = MeasureOptions(warmup=0, min_count=5, min_duration_s=0.0, rounds=1)
        answer = worker.time_round(RoundRequest(cell=request.cell, measure=measure))
    finally:
        worker._HELD.pop(request.cell, None)
    generated = answer.generation_round
    assert generated is not None and (generated.new_tokens, generated.prompt_tokens) == (4, 7)
    assert len(generated.ttft_ns) == len(answer.samples_ns) == 5
    assert len(generated.gaps_ns) == 5 * 3 and min(generated.gaps_ns) >= 0

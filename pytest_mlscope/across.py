"""A and B timed across worker processes of two stacks: several workers per side (each process
has a speed of its own), every A worker against every B worker, in alternating rounds."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mlscope.errors import EvaluationFailed, MlscopeError
from pytest_mlscope.evaluation import _safe
from pytest_mlscope.protocol import Cell, EvaluationRequest, EvaluationResult

if TYPE_CHECKING:
    import numpy as np

    from pytest_mlscope.manifest import Manifest
    from pytest_mlscope.runtimes import Runtime


class AcrossWorkers:
    """The rounds of an interleave whose sides cannot share a process; a part of
    :class:`MlscopeSession` (through :class:`Interleaving`)."""

    def _interleave_workers(
        self,
        manifest: Manifest,
        cell: Cell,
        request: EvaluationRequest,
        a_cell: Cell,
        a_request: EvaluationRequest,
        runtime_a: Callable[[int], Runtime],
    ) -> tuple[EvaluationResult, str, str]:
        """B in the cell's own workers, A in ``runtime_a``'s, in alternating rounds.

        Every worker loads, warms up and keeps its model (``hold``); then the host asks for one
        round at a time, in random order within each pair, so drift hits both stacks alike, and
        adds blocks of pairs until the verdict is clear (measure.LOOKS at most), as the
        in-worker interleave does. A process has a speed of its own for its life, which pairs
        inside one pair of processes carry whole: each side runs in measure.WORKERS_PER_SIDE
        processes, every A worker meets every B worker alike, and the verdict widens its
        interval by their spread (stats.worker_spread). A worker whose speed stands apart
        (stats.outlying_workers) is replaced by a fresh process between blocks, and the
        meetings it had are timed again before the next decision. The result is B's, with A's
        rounds as pairs; with A's framework version and what was done to the workers.
        """
        import random

        import numpy as np

        from pytest_mlscope.compare import settled
        from pytest_mlscope.measure import LOOKS, Block, pair_plan
        from pytest_mlscope.passes import ACROSS_RENEW_SHARE, renew_every
        from pytest_mlscope.protocol import HoldPass, RoundRequest
        from pytest_mlscope.stats import outlying_workers, summarize_scenario

        a_request = a_request.model_copy(
            update={
                "pass_": HoldPass(),
                "inject_slowdown": 0.0,
                "matched_wrapper": bool(request.inject_slowdown),
            }
        )
        inputs = self.work_dir / "inputs" / f"{_safe(cell.id)}-interleaved.npz"
        b_request = request.model_copy(update={"pass_": HoldPass(), "save_inputs": str(inputs)})
        # Every worker but B's first holds B's first's inputs, unchecked (what one process
        # computes, all do), untraced, and without the dataset's accuracy pass.
        unchecked = {
            "checks": [],
            "save_inputs": None,
            "save_outputs": None,
            "reference_outputs": None,
            "trace_level": "none",
            "inputs_path": str(inputs),
        }
        cells = {"a": a_cell, "b": cell}
        timeout = self.settings.timeout
        pairs, per_round = pair_plan(request.measure)
        # Per pair: A's samples, B's, the workers that timed them, and a generate cell's
        # generations of each side's round.
        timed: list[Pair] = []
        held: dict[tuple[int, str], tuple[Runtime, Cell]] = {}
        workers: dict[str, list[Runtime]] = {"b": [self.runtime(cell)]}

        def hold(key: str, index: int, hold_request: EvaluationRequest) -> Any:
            runtime, side = workers[key][index], "A (the baseline's side)" if key == "a" else "B"
            try:
                found = runtime.evaluate(hold_request, timeout)
            except MlscopeError as exc:
                raise EvaluationFailed(
                    f"{side}'s worker {index + 1} of {len(workers[key])} could not hold the "
                    f"model: {exc}"
                ) from exc
            held[id(runtime), key] = (runtime, cells[key])
            return found

        try:
            first_b = hold("b", 0, b_request)
            _readable(inputs)
            per_side, fewer = self._workers_per_side(cell, workers["b"][0])
            workers["b"] = _distinct(self.runtime(cell, k) for k in range(per_side))
            workers["a"] = _distinct(runtime_a(k) for k in range(per_side))
            if _shared(workers["a"], workers["b"]):
                # Both stacks are served by one kind of worker (a stack with neither image nor
                # venv): A takes copies of its own, unless there are none (in-process).
                workers["a"] = _distinct(runtime_a(k) for k in range(per_side, 2 * per_side))
            more = b_request.model_copy(update=unchecked)
            more_a = a_request.model_copy(update=unchecked)
            jobs = [("a", k, more_a) for k in range(len(workers["a"]))]
            jobs += [("b", k, more) for k in range(1, len(workers["b"]))]
            # Side by side, one at a time per worker: a worker serves one request at a time.
            queues: dict[int, list[tuple[str, int, EvaluationRequest]]] = {}
            for job in jobs:
                queues.setdefault(id(workers[job[0]][job[1]]), []).append(job)
            got: dict[tuple[str, int], Any] = {}

            def run(queue: list[tuple[str, int, EvaluationRequest]]) -> None:
                for key, index, hold_request in queue:
                    got[key, index] = hold(key, index, hold_request)

            with ThreadPoolExecutor(max_workers=len(queues)) as pool:
                for future in [pool.submit(run, queue) for queue in queues.values()]:
                    future.result()
            first_a = got["a", 0]
            rng = random.Random(random.randrange(2**31))
            threshold = self.threshold(manifest)
            combos = [(i, j) for i in range(len(workers["a"])) for j in range(len(workers["b"]))]
            schedule: list[tuple[int, int]] = []
            # Fresh instances of both sides through the measurement, as in one worker
            # (passes._Instances), and more often: across stacks the instances' memory layouts
            # are the largest error left (passes.ACROSS_RENEW_SHARE). The first pair renews
            # both and says what that costs.
            every: int | None = 1
            done = 0
            replaced: list[str] = []
            redo: list[tuple[int, int]] = []  # meetings of replaced workers, to time again
            decisions = 0
            while decisions < LOOKS:
                block = Block()
                # Replaced workers' meetings alone, or a block of new pairs.
                for _ in range(len(redo) or pairs):
                    if redo:
                        pair = redo.pop()
                    elif block.complete(request.measure):
                        break
                    else:
                        if not schedule:  # every A worker meets every B worker, in random order
                            schedule = rng.sample(combos, len(combos))
                        pair = schedule.pop()
                    renew = every is not None and done % every == 0
                    renew_s = 0.0
                    this: dict[str, list[int]] = {}
                    generations: dict[str, Any] = {}
                    for key in ("a", "b") if rng.random() < 0.5 else ("b", "a"):
                        runtime = workers[key][pair[0] if key == "a" else pair[1]]
                        got = runtime.evaluate(
                            RoundRequest(cell=cells[key], measure=per_round, renew=renew), timeout
                        )
                        this[key] = list(got.samples_ns)
                        generations[key] = got.generation_round
                        block.add(key, got.samples_ns)
                        renew_s += float(got.telemetry.get("renew_s", 0.0))
                    timed.append((this["a"], this["b"], pair, generations))
                    if done == 0:
                        every = renew_every(
                            renew_s, 2 * per_round.min_duration_s, ACROSS_RENEW_SHARE
                        )
                    done += 1
                    block.pairs += 1
                a_rounds, b_rounds, met = _rounds(timed)
                apart = outlying_workers(np.log(b_rounds) - np.log(a_rounds), met, threshold)
                apart = apart[: max(0, per_side - len(replaced))]
                if apart:  # no decision on them: set aside, started afresh, timed again
                    gone = {(side, index) for side, index, _ in apart}
                    kept: list[Pair] = []
                    dropped: list[tuple[int, int]] = []
                    for t in timed:
                        (dropped if gone & {(0, t[2][0]), (1, t[2][1])} else kept).append(t)
                    timed, dropped = kept, [t[2] for t in dropped]
                    for side, index, distance in apart:
                        key = "ab"[side]
                        runtime = workers[key][index]
                        held.pop((id(runtime), key), None)
                        runtime.close()
                        try:
                            hold(key, index, more if key == "b" else more_a)
                        except EvaluationFailed as exc:  # timed without it, if others are left
                            combos = [c for c in combos if c[side] != index]
                            schedule = [c for c in schedule if c[side] != index]
                            dropped = [c for c in dropped if c[side] != index]
                            if not combos:  # the side's last worker
                                raise
                            replaced.append(f"{_replaced(key, index, distance)}, left out: {exc}")
                            continue
                        replaced.append(_replaced(key, index, distance))
                    redo = rng.sample(dropped, len(dropped))
                    continue
                decisions += 1
                if settled(
                    a_rounds,
                    b_rounds,
                    threshold=threshold,
                    comparisons=self.comparisons,
                    looks=LOOKS,
                    workers=met,
                ):
                    break
        finally:
            for runtime, which in held.values():
                if not _alive(runtime):
                    continue  # a release would start it again, to hear that nothing is held
                with contextlib.suppress(Exception):  # the Docker SDK's errors too: release all
                    runtime.evaluate(RoundRequest(cell=which, measure=per_round, release=True))
        (a_samples, a_sizes), (b_samples, b_sizes) = _side(timed, 0), _side(timed, 1)
        summary = summarize_scenario(b_samples, cell.batch_size, cell.scenario)
        result = first_b.model_copy(
            update={
                "summary": summary,
                "samples_ns": b_samples,
                "rounds": b_sizes,
                "paired_samples_ns": a_samples,
                "paired_rounds": a_sizes,
                "paired_artifact_sha256": first_a.artifact_sha256,
                "paired_predictor": first_a.predictor,
                "paired_workers": [t[2] for t in timed],
                "generation": _generation(timed),
            }
        )
        renewed = (
            "one pair of instances"
            if every is None
            else "a fresh instance of each side per pair"
            if every == 1
            else f"a fresh instance of each side every {every} pairs"
        )
        if fewer:
            renewed += f"; {fewer}"
        if replaced:
            renewed += "; replaced by a fresh process, its pairs timed again: " + ", ".join(
                replaced
            )
        return result, first_a.predictor.version, renewed

    def _workers_per_side(self, cell: Cell, first: Runtime) -> tuple[int, str]:
        """How many worker processes each side gets, and why fewer than measure.WORKERS_PER_SIDE
        when so: GPU cells keep one CUDA context per side; on the host, the extra workers may
        take at most half the memory free now, each as much as the first one holds."""
        from pytest_mlscope.measure import WORKERS_PER_SIDE

        if cell.device == "gpu":
            return 1, (
                "one worker process per side on a GPU (one CUDA context each): a process's own "
                "speed is not in the interval"
            )
        process = getattr(first, "process", None)
        if process is None:
            return WORKERS_PER_SIDE, ""  # a container: its own memory limit guards the host
        import psutil

        from pytest_mlscope.runtimes.subprocess import _resident_bytes

        needs = max(_resident_bytes(process.pid), 1)
        spare = int(psutil.virtual_memory().available * 0.5 // needs)
        per_side = max(1, min(WORKERS_PER_SIDE, 1 + spare // 2))
        if per_side == WORKERS_PER_SIDE:
            return per_side, ""
        return per_side, (
            f"{per_side} worker process{'es' if per_side > 1 else ''} per side, not "
            f"{WORKERS_PER_SIDE}: each holds {needs / 2**30:.1f} GiB, and half the free memory "
            "allows no more"
        )


def _distinct(runtimes: Iterable[Runtime]) -> list[Runtime]:
    """The workers, once each: the in-process runtime has no copies to give."""
    found: list[Runtime] = []
    for runtime in runtimes:
        if not any(runtime is known for known in found):
            found.append(runtime)
    return found


def _shared(one: list[Runtime], other: list[Runtime]) -> bool:
    return any(a is b for a in one for b in other)


def _replaced(key: str, index: int, distance: float) -> str:
    """What the verdict says of a replaced worker; ``distance`` is its level's log ratio from
    its side's others (B over A: a higher level is a faster A, a slower B)."""
    import math

    slower = (distance > 0) != (key == "a")
    by = math.expm1(abs(distance)) if slower else -math.expm1(-abs(distance))
    return (
        f"{key.upper()}'s worker {index + 1} ({by:.1%} {'slower' if slower else 'faster'} than its "
        "side's others)"
    )


# One pair of rounds: A's samples, B's, the workers (A's index, B's), each side's generations.
Pair = tuple[list[int], list[int], tuple[int, int], dict[str, Any]]


def _generation(timed: list[Pair]) -> Any:
    """A generate item's figures over B's rounds, A's phases beside them (None otherwise)."""
    from pytest_mlscope.generation import combine_rounds

    return combine_rounds([t[3].get("b") for t in timed], [t[3].get("a") for t in timed])


def _rounds(
    timed: list[Pair],
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """A's and B's round medians, pair by pair, and the workers of each pair."""
    from pytest_mlscope.stats import round_medians

    a, b = (round_medians(*_side(timed, k)) for k in (0, 1))
    return a, b, [t[2] for t in timed]


def _side(timed: list[Pair], k: int) -> tuple[list[int], list[int]]:
    """One side's samples, pair after pair, and how many each pair's round had."""
    return [ns for t in timed for ns in t[k]], [len(t[k]) for t in timed]


def _alive(runtime: Runtime) -> bool:
    """Whether a worker process is still there to hear a release (a subprocess runtime's
    process; other runtimes are asked anyway)."""
    if not hasattr(runtime, "process"):
        return True
    process = runtime.process
    return process is not None and process.poll() is None


def _readable(path: Path) -> None:
    """Let every worker read the inputs file: containers run as another user than a host
    worker that wrote it with a strict umask (and the other way round, when the host may)."""
    with contextlib.suppress(OSError):
        path.parent.chmod(0o755)
        path.chmod(0o644)

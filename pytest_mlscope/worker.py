"""The evaluation a runtime hosts: verify and load the artifact, an accuracy pass, a timing pass.

Run as ``python -m pytest_mlscope.worker`` it serves requests, one JSON line in and one JSON
line out, until its input closes.
The in-process runtime calls :func:`handle` directly, so what is measured never depends on the
host. Framework output printed to stdout cannot corrupt the protocol: the worker moves the
protocol to a private descriptor and points fd 1 at stderr before any framework is imported.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from pytest_mlscope.errors import MlscopeError
from pytest_mlscope.passes import PASSES, timed_batches
from pytest_mlscope.protocol import (
    AccuracyReport,
    ColdStart,
    EvaluationRequest,
    EvaluationResult,
    LayerRow,
    MemoryUse,
    RoundRequest,
    TraceInfo,
    WorkerReply,
)

if TYPE_CHECKING:
    from pytest_mlscope.predictors.base import Predictor

_PREPARED_CACHE: dict[tuple[str, float, int | None], object] = {}


def _prepared(manifest_path: str, manifest: object, sequence_length: int | None) -> object:
    """Preprocessed data per manifest file (and its mtime) and sequence length, reused across
    a worker's items."""
    from pytest_mlscope.data import prepare

    key = (manifest_path, os.stat(manifest_path).st_mtime, sequence_length)
    if key not in _PREPARED_CACHE:
        _PREPARED_CACHE.clear()  # one manifest at a time: items arrive grouped by model
        _PREPARED_CACHE[key] = prepare(manifest, sequence_length)  # type: ignore[arg-type]
    return _PREPARED_CACHE[key]


def _save_inputs(path: str, batches: list[np.ndarray], scenario: str) -> None:
    """The batches the timing pass uses, for a count pass."""
    used = timed_batches(scenario, batches)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, *used)


def _load_inputs(path: str) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        names = sorted(archive.files, key=lambda name: int(name.removeprefix("arr_")))
        return [archive[name] for name in names]


def evaluate(request: EvaluationRequest) -> EvaluationResult:
    from pytest_mlscope.tracing.timeline import Spans

    started = time.perf_counter()
    cell = request.cell
    tracing = request.trace_level != "none" and request.pass_kind != "accuracy"
    spans = Spans(f"mlscope {cell.id}", enabled=tracing)
    try:
        return _evaluate(request, spans, started)
    finally:
        spans.close()


def _evaluate(request: EvaluationRequest, spans: Any, started: float) -> EvaluationResult:
    from pytest_mlscope.generation import new_predictor
    from pytest_mlscope.manifest import load_manifest
    from pytest_mlscope.memory import PeakWindow
    from pytest_mlscope.passes import check_accuracy
    from pytest_mlscope.tracing.timeline import Timeline
    from pytest_mlscope.zoo.files import verify

    cell = request.cell
    tracing = spans.enabled
    with spans.span("item", item=cell.id, level=request.trace_level):
        with spans.span("preprocess"):
            manifest = load_manifest(request.manifest_path, require_files=False)
            # A count pass under Valgrind gets the timing pass's inputs as a file: preparing the
            # dataset again there (scikit-learn, decoding, resizing) would take a minute.
            data = (
                None
                if request.inputs_path
                else _prepared(request.manifest_path, manifest, cell.sequence_length)
            )
            if request.inputs_path:
                raw_batches = _load_inputs(request.inputs_path)
            else:
                raw_batches = data.batches(cell.batch_size)  # type: ignore[attr-defined]
                if request.save_inputs:
                    _save_inputs(request.save_inputs, raw_batches, cell.scenario)
        predictor = new_predictor(request)
        # The dataset's batches and the framework's code are in place before the window opens:
        # what it sees is the model's (its weights, its working memory, its inputs as tensors).
        window = PeakWindow()
        with spans.span("load", artifact=request.artifact.path):
            predictor.import_framework()
            verify(request.artifact)
            window.start()
            predictor.reset_device_memory_peak()
            before = time.perf_counter()
            predictor.load(request.artifact)
            load_s = time.perf_counter() - before
        held = request.pass_kind == "hold"
        kept = False  # a held model stays loaded only if everything up to here worked
        try:
            batches = [predictor.prepare_input(b) for b in raw_batches]
            with spans.span("first inference"):
                before = time.perf_counter()
                first = predictor.predict(batches[0])
                first_inference_s = time.perf_counter() - before
                del first
            load_peak = window.peak()

            # Accuracy pass: every sample once; the rows added to fill the last batch are dropped.
            if (
                request.checks == []
                and request.save_outputs is None
                and (
                    request.pass_kind == "count"
                    or request.save_layer_outputs
                    or request.inputs_path
                )
            ):
                # a count pass after a checked timing pass, a failed agreement's layers, or one
                # more worker holding a model another one checked: the outputs are known, the
                # dataset is not run again
                accuracy = AccuracyReport()
            else:
                with spans.span("accuracy pass"):
                    accuracy = check_accuracy(request, manifest, data, predictor, batches)
            run_peak = window.peak()
            device_peak = predictor.device_memory_peak()
            if request.save_layer_outputs:
                from pytest_mlscope.divergence import save_layers

                save_layers(request.save_layer_outputs, predictor.layer_outputs(batches[0]))

            measured = PASSES[request.pass_kind](request, predictor, raw_batches, batches, spans)
            inputs, call = measured.inputs, measured.call

            # Profiling pass: only now, after the timing pass has finished.
            layers, trace = [], None
            if tracing:
                timeline = Timeline(cell.id)
                with spans.span("profiling pass", iterations=request.trace_iterations):
                    layers, trace = _profile(request, predictor, inputs[0], timeline)
            info = predictor.info()
            kept = held
        finally:
            if not kept:
                predictor.close()
    paired = measured.paired
    if trace is not None:
        spans.into(timeline)
        trace.notes.extend(spans.notes)
        timeline.write(Path(trace.path))  # type: ignore[arg-type]
    result = EvaluationResult(
        cell=cell,
        predictor=info,
        artifact_sha256=request.artifact.sha256,
        cold_start=ColdStart(load_s=load_s, first_inference_s=first_inference_s),
        accuracy=accuracy,
        summary=measured.summary,
        samples_ns=measured.samples,
        rounds=measured.rounds,
        paired_samples_ns=paired.samples_ns if paired else [],
        paired_rounds=paired.rounds if paired else [],
        paired_artifact_sha256=request.interleave.artifact.sha256 if paired else None,  # type: ignore[union-attr]
        instructions=measured.instructions,
        layers=layers,
        trace=trace,
        telemetry=(
            {**measured.telemetry, "memory_not_measured": window.why_not}
            if window.why_not
            else measured.telemetry
        ),
        generation=measured.generation,
        memory=(
            MemoryUse(
                before=window.before,
                load_peak=load_peak,
                run_peak=run_peak,
                device_peak=device_peak,
            )
            if window.before is not None and load_peak is not None and run_peak is not None
            else None
        ),
        outputs_path=request.save_outputs,
        worker_pid=os.getpid(),
        wall_s=time.perf_counter() - started,
    )
    if kept:
        _release(cell)
        raw = raw_batches[: len(inputs)]  # the timed inputs, as the dataset gave them
        _HELD[cell] = _Held(request, predictor, call, inputs, raw, result)  # type: ignore[arg-type]
    return result


class _Held:
    """A model a ``hold`` evaluation kept loaded, warmed up, for the host's timing rounds."""

    WARMUP = 3  # calls a fresh instance makes before it is timed (as passes._Instances)

    def __init__(
        self,
        request: EvaluationRequest,
        predictor: Predictor,
        call: Callable[[Any], object],
        inputs: list[Any],
        raw: list[Any],
        result: Any,
    ) -> None:
        self.request, self.raw, self.result = request, raw, result
        self.predictor, self.call, self.inputs = predictor, call, inputs
        self.renewals = 0

    def renew(self) -> None:
        """Replace the held instance by a fresh one of the same file, warmed up."""
        from pytest_mlscope.generation import new_predictor
        from pytest_mlscope.passes import held_call

        request = self.request
        self.predictor.close()
        predictor = new_predictor(request)
        predictor.load(request.artifact)
        inputs = [predictor.prepare_input(b) for b in self.raw]
        call = held_call(request, predictor, inputs[0])
        for i in range(self.WARMUP):
            call(inputs[i % len(inputs)])
        self.predictor, self.call, self.inputs = predictor, call, inputs
        self.renewals += 1


_HELD: dict[Any, _Held] = {}


def _release(cell: Any) -> None:
    held = _HELD.pop(cell, None)
    if held is not None:
        held.predictor.close()


def time_round(request: RoundRequest) -> EvaluationResult:
    """One round on a held model (samples only), or its release."""
    from pytest_mlscope.errors import EvaluationFailed
    from pytest_mlscope.generation import record_of, round_generations
    from pytest_mlscope.measure import time_calls

    if request.release:
        held = _HELD.get(request.cell)
        _release(request.cell)
        if held is None:
            raise EvaluationFailed(f"no model held for {request.cell.id}")
        return held.result
    held = _HELD.get(request.cell)
    if held is None:
        raise EvaluationFailed(
            f"no model held for {request.cell.id}: a hold evaluation must come first"
        )
    telemetry = {}
    if request.renew:
        before = time.perf_counter()
        held.renew()
        telemetry["renew_s"] = time.perf_counter() - before  # the host's cost-of-renewal check
    timing = time_calls(held.call, held.inputs, request.measure.model_copy(update={"warmup": 0}))
    record = record_of(held.predictor)
    return held.result.model_copy(
        update={
            "samples_ns": timing.samples_ns,
            "rounds": [len(timing.samples_ns)],
            "telemetry": telemetry,
            "generation_round": (
                round_generations(
                    record,
                    timing.window_ns,
                    held.request.new_tokens,
                    int(held.raw[0].shape[-1]),  # the timed prompt's tokens
                )
                if record is not None
                else None
            ),
        }
    )


_TRACE_COUNTER = itertools.count(1)  # trace files of one worker never collide


def _profile(
    request: EvaluationRequest, predictor: Predictor, prepared: Any, timeline: Any
) -> tuple[list[LayerRow], TraceInfo]:
    """The profiling pass: the predictor's profiler, telemetry beside it, one trace file."""
    import contextlib
    import statistics

    from pytest_mlscope.tracing import includes
    from pytest_mlscope.tracing.timeline import Telemetry

    level = request.trace_level
    trace_dir = Path(request.trace_dir or Path(request.work_dir) / "traces")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.cell.id)
    path = trace_dir / f"{name}-{os.getpid()}-{next(_TRACE_COUNTER)}.trace.json"
    before = time.perf_counter()
    telemetry = Telemetry() if includes(level, "system") else None
    rows: list[LayerRow] = []
    steps: list[float] = []
    notes: list[str] = []
    with telemetry or contextlib.nullcontext():
        if includes(level, "framework"):
            try:
                rows, steps, notes = predictor.profile(
                    prepared, request.trace_iterations, level, timeline, trace_dir
                )
            except Exception as exc:  # the timing pass's figures stand without a profile
                notes = [f"profiling failed, no layer table: {type(exc).__name__}: {exc}"]
    if telemetry is not None:
        telemetry.into(timeline)
    return rows, TraceInfo(
        level=level,
        iterations=request.trace_iterations if steps else 0,
        path=str(path),
        wall_s=time.perf_counter() - before,
        step_us=statistics.median(steps) if steps else None,
        notes=notes,
    )


def handle(request: EvaluationRequest | RoundRequest) -> WorkerReply:
    """Evaluate, turning any exception into a reply: a broken item never takes the worker down."""
    try:
        if isinstance(request, RoundRequest):
            return WorkerReply(ok=True, result=time_round(request))
        return WorkerReply(ok=True, result=evaluate(request))
    except MlscopeError as exc:
        return WorkerReply(ok=False, error=str(exc), error_type=type(exc).__name__)
    except Exception as exc:
        # One line for the user (what, and the last place it passed); the traceback travels
        # apart, and the host keeps it in a file the message names.
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" (in {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
        return WorkerReply(
            ok=False,
            error=f"{type(exc).__name__}: {exc}{where}",
            error_type=type(exc).__name__,
            traceback=traceback.format_exc(),
        )


def _protocol_stream() -> IO[str]:
    """Keep the real stdout for replies; send everything else written to fd 1 to stderr."""
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "w", buffering=1, encoding="utf-8")


class ProtocolMismatch(MlscopeError):
    """The host and this worker run different pytest-mlscope protocols."""


def parse_request(line: str) -> EvaluationRequest | RoundRequest:
    """One request line: its protocol version checked first (a stale venv stack or image would
    otherwise fail on some field with a validation error that names neither), then its kind."""
    import json

    from pydantic import TypeAdapter

    from pytest_mlscope.protocol import PROTOCOL_VERSION, Request

    try:
        raw = json.loads(line)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    version = raw.get("version") if isinstance(raw, dict) else None
    if version != PROTOCOL_VERSION:
        import pytest_mlscope

        raise ProtocolMismatch(
            f"the host sent worker protocol {version}, this worker speaks {PROTOCOL_VERSION} "
            f"(pytest-mlscope at {Path(pytest_mlscope.__file__).parent}, Python "
            f"{sys.version.split()[0]}): the worker's environment has another pytest-mlscope "
            "than the host; rebuild it (`mlscope stacks setup NAME` for a venv stack, "
            "`mlscope containers build` for an image)"
        )
    return TypeAdapter(Request).validate_python(raw)  # type: ignore[return-value]


def serve(stdin: IO[str], out: IO[str]) -> None:
    out.write(WorkerReply(ok=True, error_type="ready").model_dump_json() + "\n")
    out.flush()
    for line in stdin:
        if not line.strip():
            continue
        try:
            request = parse_request(line)
        except ProtocolMismatch as exc:
            reply = WorkerReply(ok=False, error=str(exc), error_type="ProtocolMismatch")
        except ValueError as exc:
            reply = WorkerReply(ok=False, error=f"bad request: {exc}", error_type="BadRequest")
        else:
            reply = handle(request)
        out.write(reply.model_dump_json() + "\n")
        out.flush()


PARENT_POLL_S = 1.0


def watch_parent(parent_pid: int) -> None:
    """Exit when the process that started us is gone (``kill -9`` of pytest, a lost CI job).

    A worker busy in a prediction, or stuck in one, never reads the EOF on its stdin; without
    this it would run on as an orphan, holding memory and CPU the next session measures with.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os._exit(70)

    threading.Thread(target=watch, name="mlscope-parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    from pytest_mlscope.callgrind import running_on_valgrind

    parent = os.environ.get("MLSCOPE_PARENT_PID", "")
    # Not under callgrind: the watcher's wake-ups (a GIL hand-over each) would land in whichever
    # round they fall in, tens of thousands of instructions. A counting worker is idle on its
    # stdin between requests, so it still ends with its parent, at the latest after one count.
    if parent.isdigit() and not running_on_valgrind():
        watch_parent(int(parent))
    argparse.ArgumentParser(
        prog="python -m pytest_mlscope.worker",
        description="serve evaluation requests: one JSON line in, one out, until stdin closes",
    ).parse_args(argv)
    serve(sys.stdin, _protocol_stream())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The worker's passes after load and accuracy, one function each: accuracy only (nothing timed),
timing (alone, or interleaved with the baseline's A side), counting under callgrind, and hold (kept
loaded for the host's rounds). The request's ``pass_`` (a typed document of its own per pass)
picks one.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_mlscope.protocol import AccuracyReport, CountPass, EvaluationRequest

if TYPE_CHECKING:
    from pytest_mlscope.generation import Generations
    from pytest_mlscope.measure import Timing
    from pytest_mlscope.predictors.base import Predictor


@dataclass
class Measured:
    """What a pass measured; the accuracy pass measures nothing."""

    inputs: list[Any] = field(default_factory=list)  # the timed inputs (profiling reuses them)
    call: Callable[[Any], object] | None = None
    summary: Any = None
    samples: list[int] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    instructions: list[float] = field(default_factory=list)
    paired: Timing | None = None
    telemetry: dict[str, Any] = field(default_factory=dict)
    generation: Any = None  # protocol.GenerationSummary, for a generate cell


def timed_batches(scenario: str, batches: list[Any]) -> list[Any]:
    """What the timing pass calls the model on (and a count pass counts): single_stream and
    generate time one query over and over; offline streams every batch."""
    return batches if scenario == "offline" else batches[:1]


def _timed_inputs(request: EvaluationRequest, batches: list[Any]) -> list[Any]:
    return timed_batches(request.cell.scenario, batches)


def _accuracy_pass(
    request: EvaluationRequest, predictor: Predictor, raw: list[Any], batches: list[Any], spans: Any
) -> Measured:
    return Measured(inputs=_timed_inputs(request, batches))


def _hold_pass(
    request: EvaluationRequest, predictor: Predictor, raw: list[Any], batches: list[Any], spans: Any
) -> Measured:
    """Warm up and keep the model: the host asks for the rounds (RoundRequest)."""
    inputs = _timed_inputs(request, batches)
    call = held_call(request, predictor, inputs[0])
    for i in range(request.measure.warmup):
        call(inputs[i % len(inputs)])
    return Measured(inputs=inputs, call=call)


def held_call(request: EvaluationRequest, predictor: Predictor, example: Any) -> Callable[..., Any]:
    """The call a held model's rounds time: slowed when this side is, else in the slowed side's
    wrapper when the other worker's side is (``matched_wrapper``)."""
    from pytest_mlscope.slowdown import matched, slowed

    if request.matched_wrapper and not request.inject_slowdown:
        return matched(predictor.predict)
    return slowed(predictor.predict, example, request.inject_slowdown)


def _count_pass(
    request: EvaluationRequest, predictor: Predictor, raw: list[Any], batches: list[Any], spans: Any
) -> Measured:
    """Instructions per call, per round, under callgrind."""
    from pytest_mlscope.callgrind import count_calls
    from pytest_mlscope.slowdown import slowed

    assert isinstance(request.pass_, CountPass)
    inputs = _timed_inputs(request, batches)
    call = slowed(predictor.predict, inputs[0], request.inject_slowdown, "instructions")
    for i in range(request.measure.warmup):
        call(inputs[i % len(inputs)])
    with spans.span("count pass"):
        counted = count_calls(call, inputs, request.pass_.rounds, request.pass_.round_instructions)
    return Measured(inputs=inputs, call=call, instructions=counted)


def _timing_pass(
    request: EvaluationRequest, predictor: Predictor, raw: list[Any], batches: list[Any], spans: Any
) -> Measured:
    """The predictor call alone, on inputs prepared beforehand; interleaved with the A side
    when the request names one."""
    from pytest_mlscope.generation import Generations, record_of
    from pytest_mlscope.measure import time_calls
    from pytest_mlscope.slowdown import slowed
    from pytest_mlscope.stats import summarize_scenario
    from pytest_mlscope.telemetry import Window, energy_figures

    cell = request.cell
    inputs = _timed_inputs(request, batches)
    paired = None
    beside = Generations() if record_of(predictor) is not None else None  # A's generations
    with spans.span("timing pass"), Window(gpu=cell.device == "gpu") as window:
        call = slowed(predictor.predict, inputs[0], request.inject_slowdown)
        if request.interleave is None:
            timing = time_calls(call, inputs, request.measure)
        else:
            paired, timing = _interleaved(request, predictor, raw, call, inputs, beside)
    summary = summarize_scenario(timing.samples_ns, cell.batch_size, cell.scenario)
    tokens = request.new_tokens if cell.scenario == "generate" else None
    energy = energy_figures(
        window.values, summary.median, cell.batch_size, tokens, paired is not None
    )
    return Measured(
        generation=_generation(request, predictor, raw, timing, paired, beside),
        inputs=inputs,
        call=call,
        summary=summary,
        samples=timing.samples_ns,
        rounds=timing.rounds,
        paired=paired,
        telemetry={**window.values, **energy},
    )


def _generation(
    request: EvaluationRequest,
    predictor: Any,
    raw: list[Any],
    timing: Timing,
    paired: Timing | None,
    beside: Generations | None,
) -> Any:
    from pytest_mlscope.generation import record_of, summarize_generations

    record = record_of(predictor)
    if record is None:
        return None
    prompt_tokens = int(raw[0].shape[-1])  # the timed prompt: a generate item times the first
    a_side = (beside, paired.window_ns) if paired is not None and beside is not None else None
    return summarize_generations(
        record, timing.window_ns, request.new_tokens, prompt_tokens, a_side
    )


def check_accuracy(
    request: EvaluationRequest,
    manifest: Any,
    data: Any,
    predictor: Predictor,
    batches: list[Any],
) -> AccuracyReport:
    """The accuracy pass: every sample once (the rows added to fill the last batch dropped),
    each check the manifest asks for; the outputs saved when the request says where."""
    from pathlib import Path

    import numpy as np

    from pytest_mlscope.accuracy import assess, postprocess

    raw = np.concatenate([predictor.to_numpy(predictor.predict(b)) for b in batches])
    output_spec = manifest.outputs[0]
    generate = request.cell.scenario == "generate"
    outputs = (
        raw[: len(data)]  # new token ids, compared as they are
        if generate
        else postprocess(raw[: len(data)], output_spec.postprocess)
    )
    # A decoder's next-token logits after each prompt: what agreement judges its first new
    # token by (a golden of greedy tokens needs none).
    prefill = (
        np.stack([predictor.prefill(b) for b in batches])[: len(data)]  # type: ignore[attr-defined]
        if generate and request.checks != []
        else None
    )
    if request.save_outputs:
        Path(request.save_outputs).parent.mkdir(parents=True, exist_ok=True)
        extra = {PREFILL: prefill} if prefill is not None else {}
        np.savez(request.save_outputs, **{output_spec.name: outputs}, **extra)
    reference = reference_prefill = None
    if request.reference_outputs:
        with np.load(request.reference_outputs, allow_pickle=False) as archive:
            reference = np.asarray(archive[archive.files[0]], dtype=np.float64)
            if PREFILL in archive.files:
                reference_prefill = np.asarray(archive[PREFILL], dtype=np.float64)
    spec = manifest.accuracy
    frameworks = spec.golden.frameworks if spec.golden is not None else None
    if frameworks is not None and request.cell.framework not in frameworks:
        spec = spec.model_copy(update={"golden": None})
    if request.checks is not None:
        spec = spec.model_copy(
            update={
                k: None
                for k in ("top1", "top5", "golden", "agreement", "paraphrase")
                if k not in request.checks
            }
        )
    return assess(
        spec,
        outputs,
        data.labels,
        reference=reference,
        golden=_golden(spec, manifest, output_spec.name),
        pair_labels=data.pair_labels,
        prefill=prefill,
        reference_prefill=reference_prefill,
    )


PREFILL = "prefill_logits"  # beside a decoder's saved outputs


def _golden(spec: object, manifest: object, output_name: str) -> Any:
    import numpy as np

    golden = spec.golden  # type: ignore[attr-defined]
    if golden is None:
        return None
    path = manifest.resolve(golden.path)  # type: ignore[attr-defined]
    with np.load(path, allow_pickle=False) as archive:
        key = output_name if output_name in archive else archive.files[0]
        return np.asarray(archive[key], dtype=np.float64)


PASSES: dict[str, Callable[..., Measured]] = {
    "accuracy": _accuracy_pass,
    "hold": _hold_pass,
    "count": _count_pass,
    "timing": _timing_pass,
}


def _interleaved(
    request: EvaluationRequest,
    predictor: Predictor,
    raw_batches: list[object],
    call_b: Callable[[object], object],
    inputs_b: list[object],
    beside: Generations | None = None,
) -> tuple[Timing, Timing]:
    """Time A (the baseline's artifact, unslowed) and B (this item) in alternating rounds.

    A that is the same file as B shares B's loaded model, so an A/A run compares one model with
    itself and nothing but the injected slowdown can tell the sides apart. A different file (a
    model edit) is verified, and each pair of rounds times a fresh instance of both files
    (:class:`_Instances`), or every few pairs when loading them would take more than a quarter
    of a pair. A generate cell's A side records its generations in ``beside``.
    """
    from pytest_mlscope.generation import record_of, recorded_apart
    from pytest_mlscope.measure import pair_plan, time_interleaved
    from pytest_mlscope.slowdown import slowed
    from pytest_mlscope.zoo.files import verify

    spec = request.interleave
    assert spec is not None
    decided = None
    if spec.threshold is not None:
        from functools import partial

        from pytest_mlscope.compare import settled
        from pytest_mlscope.measure import LOOKS

        decided = partial(
            settled, threshold=spec.threshold, comparisons=spec.comparisons, looks=LOOKS
        )
    if spec.artifact.sha256 == request.artifact.sha256:
        side_a = recorded_apart(predictor, beside)
        call_a = _side_a(side_a.predict, inputs_b[0], spec.inject_slowdown, request)
        return time_interleaved(
            call_a, inputs_b, call_b, inputs_b, request.measure, spec.seed, decided
        )
    verify(spec.artifact)
    instances = _Instances(
        request,
        raw_batches[: len(inputs_b)],
        random.Random(spec.seed),
        {"a": beside, "b": record_of(predictor)},
    )
    try:
        fresh_a, fresh_b = instances.renew()
        call_a = _side_a(instances.call("a"), fresh_a[0], spec.inject_slowdown, request)
        call_b = slowed(instances.call("b"), fresh_b[0], request.inject_slowdown)
        _, per_round = pair_plan(request.measure)
        every = renew_every(instances.renew_s, 2 * per_round.min_duration_s)
        return time_interleaved(
            call_a,
            fresh_a,
            call_b,
            fresh_b,
            request.measure,
            spec.seed,
            decided,
            instances.renew if every else None,
            every or 1,
        )
    finally:
        instances.close()


RENEW_SHARE = 0.25  # renewing (loads and warm-up) may add at most this share of a pair's time
# ... and across two stacks' workers, as much as the pair's rounds themselves: in one process A
# and B share an instance's luck as they share the process; across two, a kept instance is an
# offset of its worker. Not settled: a first measurement (outside the repository) had fresh
# processes scatter 2.7 to 4 % on the instance each loaded first and 1.0 % on a fresh one every
# round; benchmarks/instances.py, the same comparison rerun three times, found no clear
# difference (1.0 to 1.2 % robust sd either way; docs/benchmarks.md). The upgrade table was
# measured with this share, and items stayed at 7 to 9 s.
ACROSS_RENEW_SHARE = 1.0


def renew_every(renew_s: float, pair_s: float, share: float = RENEW_SHARE) -> int | None:
    """Every how many pairs both sides get fresh instances (in one worker, or in two held
    across stacks): every pair when reloading costs at most ``share`` of a pair's rounds, else
    as often as that share allows; None when the rounds have no duration to share."""
    if pair_s <= 0:
        return None
    import math

    return max(1, math.ceil(renew_s / (share * pair_s)))


class _Instances:
    """A fresh instance of A's model and of B's, loaded in random order, for each pair.

    B's item predictor, loaded first, only checks accuracy: the first session a process makes can
    differ from later ones, and two loaded instances of one file differ by their memory layout, by
    a few percent each way, for as long as they live. A new pair of instances per pair of rounds
    makes that pair-to-pair noise, which the paired interval then accounts for; kept instances
    would make it a bias no number of pairs removes.
    """

    WARMUP = 3  # calls per fresh instance before it is timed: its first ones are slow

    def __init__(
        self,
        request: EvaluationRequest,
        raw: list[Any],
        rng: random.Random,
        records: dict[str, Generations | None] | None = None,
    ) -> None:
        self.request, self.raw, self.rng = request, raw, rng
        self.records = records or {}  # where each side's generations go (a generate cell)
        self.live: dict[str, Predictor] = {}
        self.renew_s = 0.0  # the last renewal's loads and warm-up
        self.renewals = 0

    def call(self, side: str) -> Callable[[Any], Any]:
        live = self.live

        def predict(prepared: Any) -> Any:
            return live[side].predict(prepared)

        return predict

    def renew(self) -> tuple[list[Any], list[Any]]:
        import time

        assert self.request.interleave is not None
        self.close()
        started = time.perf_counter()
        order = ["a", "b"]
        self.rng.shuffle(order)
        from pytest_mlscope.generation import new_predictor, recorded_apart

        for side in order:
            model = new_predictor(self.request, self.records.get(side))
            model.load(self.request.interleave.artifact if side == "a" else self.request.artifact)
            self.live[side] = model
        inputs = {side: [self.live[side].prepare_input(b) for b in self.raw] for side in order}
        warm = {side: recorded_apart(self.live[side]) for side in order}
        for i in range(self.WARMUP):
            for side in order:
                warm[side].predict(inputs[side][i % len(inputs[side])])
        self.renew_s = time.perf_counter() - started
        self.renewals += 1
        return inputs["a"], inputs["b"]

    def close(self) -> None:
        for model in self.live.values():
            model.close()
        self.live.clear()


def _side_a(
    call: Callable[[Any], Any], example: Any, fraction: float, request: EvaluationRequest
) -> Callable[[Any], Any]:
    """A's call: slowed when A itself is, else in the wrapper B's injected slowdown runs in,
    so that the sides differ by the injected work only."""
    from pytest_mlscope.slowdown import matched, slowed

    if fraction or not request.inject_slowdown:
        return slowed(call, example, fraction)
    return matched(call)

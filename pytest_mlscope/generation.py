"""The generate scenario in the worker: greedy decoding, timed token by token.

A generate item's timed call is one whole generation (a prompt in, ``new_tokens`` tokens out),
so the timing loop, interleaving with the baseline and the verdict work on it unchanged: the
item's latency is the end-to-end time of a generation. Inside each call the predictor reads the
clock once per new token; those stamps give time to first token, the inter-token latencies and
decode tokens/s (:func:`summarize_generations`). A framework takes part by implementing
``Predictor.generate``; the loop is the framework's own (its cache, its argmax), so what is
timed is what a team's minimal generate loop would run.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_mlscope.protocol import EvaluationRequest, GenerationRound, GenerationSummary

if TYPE_CHECKING:
    from pytest_mlscope.predictors.base import Predictor


@dataclass
class Generations:
    """Each timed generation's start and its new tokens' stamps (perf_counter ns)."""

    starts: list[int] = field(default_factory=list)
    stamps: list[list[int]] = field(default_factory=list)


class Generating:
    """A predictor whose ``predict`` generates: what the worker's passes call for a generate
    cell. Everything else (load, prepare_input, info, profile, close) is the framework's own.

    ``record`` is where the generations go: the item's side keeps one, an interleaved A side
    sharing the loaded model gets a :meth:`twin` with its own, so the item's per-token figures
    are its own generations'.
    """

    def __init__(
        self, inner: Predictor, new_tokens: int, record: Generations | None = None
    ) -> None:
        self.inner, self.new_tokens = inner, new_tokens
        self.record = record if record is not None else Generations()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def predict(self, prepared: Any) -> Any:
        stamps: list[int] = []
        start = time.perf_counter_ns()
        tokens = self.inner.generate(prepared, self.new_tokens, stamps)
        record = self.record
        record.starts.append(start)
        record.stamps.append(stamps)
        return tokens

    def prefill(self, prepared: Any) -> np.ndarray:
        """The next-token logits after the prompt, [vocab]: the framework's forward pass, its
        last position (a model that returns every position's, or the last one's)."""
        output = self.inner.to_numpy(self.inner.predict(prepared))
        return np.asarray(output, dtype=np.float32).reshape(-1, output.shape[-1])[-1]

    def profile(
        self, prepared: Any, iterations: int, level: str, timeline: Any, trace_dir: Any
    ) -> Any:
        """The framework's profiler over whole generations, as the timing pass timed them: the
        layer table says where a generation's time goes (the prefill and every decode step;
        ``calls`` counts them), not the prefill's alone. The framework's ``profile`` times and
        hooks its ``predict``, which decodes for the length of the pass."""
        inner, new_tokens = self.inner, self.new_tokens
        if getattr(inner, "_program", None) is not None or not inner.profiles_by_predict:
            # An exported program hooked apart, or a profiler with a session of its own.
            rows, steps, notes = inner.profile(prepared, iterations, level, timeline, trace_dir)
            said = f"{inner.name} profiles its own call: the prefill's forward alone"
            return rows, steps, [*notes, said]
        inner.predict = lambda batch: inner.generate(batch, new_tokens, [])
        try:
            rows, steps, notes = inner.profile(prepared, iterations, level, timeline, trace_dir)
        finally:
            del inner.predict
        said = f"each profiled prediction is a whole generation: the prefill and {new_tokens - 1}"
        return rows, steps, [*notes, f"{said} decode steps"]

    def to_numpy(self, output: Any) -> np.ndarray:
        """The new token ids as a batch of one: [1, new_tokens]."""
        return np.asarray(output, dtype=np.int64).reshape(1, -1)

    def twin(self, record: Generations | None = None) -> Generating:
        """The same loaded model, with generations recorded apart (in ``record`` when given)."""
        return Generating(self.inner, self.new_tokens, record)

    def close(self) -> None:
        self.inner.close()


def record_of(predictor: Any) -> Generations | None:
    """Where a generate cell's predictor records its generations; None for other cells."""
    return predictor.record if isinstance(predictor, Generating) else None


def recorded_apart(predictor: Any, record: Generations | None = None) -> Any:
    """The predictor, with its generations kept out of the item's figures: dropped (warm-up
    calls), or kept in ``record`` (the interleaved A side's, judged beside B's)."""
    return predictor.twin(record) if isinstance(predictor, Generating) else predictor


def new_predictor(request: EvaluationRequest, record: Generations | None = None) -> Any:
    """A fresh predictor for the request's cell, not loaded: one that decodes for a generate
    cell (its generations go to ``record`` when given), else the framework's own."""
    from pytest_mlscope.predictors import predictor_class

    cell = request.cell
    predictor = predictor_class(cell.framework, request.predictors)(device=cell.device)
    if cell.scenario != "generate":
        return predictor
    return Generating(predictor, request.new_tokens, record)


def timed(record: Generations, window_ns: tuple[int, int]) -> list[tuple[int, list[int]]]:
    """The generations the timing pass timed: those begun inside its window (its first timed
    call to its last kept one), so warm-up calls, a calibration and a pair dropped at the
    deadline are left out; one per timed call, in order."""
    low, high = window_ns
    return [(s, t) for s, t in zip(record.starts, record.stamps, strict=True) if low <= s <= high]


def _phases(generations: list[tuple[int, list[int]]]) -> tuple[list[int], list[int], list[int]]:
    """Each generation's time to first token and decode time (first to last new token), and
    every gap between consecutive new tokens, ns."""
    ttft = [t[0] - s for s, t in generations]
    decode = [t[-1] - t[0] for _, t in generations]
    gaps = [b - a for _, t in generations for a, b in itertools.pairwise(t)]
    return ttft, decode, gaps


def _figures(
    phases: tuple[list[int], list[int], list[int]],
    new_tokens: int,
    prompt_tokens: int,
    paired: tuple[list[int], list[int], list[int]] | None,
) -> GenerationSummary:
    ttft, decode = np.asarray(phases[0], np.int64), np.asarray(phases[1], np.int64)
    rates = (new_tokens - 1) / np.maximum(decode, 1) * 1e9
    p50, p90, p99 = np.percentile(np.asarray(phases[2], np.int64), [50, 90, 99]) / 1e6
    return GenerationSummary(
        new_tokens=new_tokens,
        prompt_tokens=prompt_tokens,
        generations=len(ttft),
        ttft_ms=float(np.median(ttft)) / 1e6,
        ttft_p90_ms=float(np.percentile(ttft, 90)) / 1e6,
        itl_p50_ms=float(p50),
        itl_p90_ms=float(p90),
        itl_p99_ms=float(p99),
        tokens_per_s=float(np.median(rates)),
        ttft_ns=list(phases[0]),
        decode_ns=list(phases[1]),
        paired_ttft_ns=list(paired[0]) if paired else [],
        paired_decode_ns=list(paired[1]) if paired else [],
    )


def _whole(
    record: Generations, window_ns: tuple[int, int], new_tokens: int
) -> list[tuple[int, list[int]]]:
    # A generation that stopped short has no comparable figures; the per-generation lists then
    # no longer match the rounds, and the phases are not judged apart.
    return [(s, t) for s, t in timed(record, window_ns) if len(t) == new_tokens]


def summarize_generations(
    record: Generations,
    window_ns: tuple[int, int],
    new_tokens: int,
    prompt_tokens: int,
    paired: tuple[Generations, tuple[int, int]] | None = None,
) -> GenerationSummary | None:
    """The figures of the timed generations; ``paired`` is the interleaved A side's record and
    window, whose per-generation phases are kept beside B's for the verdict."""
    generations = _whole(record, window_ns, new_tokens)
    if not generations or new_tokens < 2:
        return None
    beside = _whole(*paired, new_tokens) if paired is not None else []
    return _figures(
        _phases(generations), new_tokens, prompt_tokens, _phases(beside) if beside else None
    )


def round_generations(
    record: Generations, window_ns: tuple[int, int], new_tokens: int, prompt_tokens: int
) -> GenerationRound | None:
    """One host-driven round's generations (a held model's, across two stacks' workers), for
    the host to put together with the other rounds (:func:`combine_rounds`)."""
    generations = _whole(record, window_ns, new_tokens)
    if not generations or new_tokens < 2:
        return None
    ttft, decode, gaps = _phases(generations)
    return GenerationRound(
        new_tokens=new_tokens,
        prompt_tokens=prompt_tokens,
        ttft_ns=ttft,
        decode_ns=decode,
        gaps_ns=gaps,
    )


def combine_rounds(
    b: list[GenerationRound | None], a: list[GenerationRound | None]
) -> GenerationSummary | None:
    """B's figures over the rounds of both sides' workers, pair after pair, with A's phases
    beside them; None when a round of B brought none (A's missing: B's figures alone)."""
    if not b or any(r is None for r in b):
        return None
    first = b[0]
    assert first is not None

    def joined(rounds: list[GenerationRound | None]) -> tuple[list[int], list[int], list[int]]:
        return tuple(  # type: ignore[return-value]
            [v for r in rounds if r is not None for v in getattr(r, name)]
            for name in ("ttft_ns", "decode_ns", "gaps_ns")
        )

    paired = joined(a) if a and all(r is not None for r in a) else None
    return _figures(joined(b), first.new_tokens, first.prompt_tokens, paired)

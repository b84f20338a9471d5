"""The timing loop and the scenarios built on it.

Timings are taken here, inside the worker, around the predictor call alone: no IPC, no
preprocessing and no bookkeeping beyond one clock read and one list append sit inside a sample.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from pytest_mlscope.protocol import MeasureOptions

T = TypeVar("T")

MIN_ROUND_SAMPLES = 3
# Interleaved A/B: at least this many pairs, however few rounds the manifest asks for. The
# paired interval narrows with the square root of the pairs, and short rounds cost nothing
# extra: a 3 % slowdown needs tens of pairs to be told from pair-to-pair noise of a few %.
MIN_PAIRS = 30
# ... and about this long per round, once the duration floor allows more than MIN_PAIRS: on a
# shared 2-core machine, 20 ms rounds gave a paired interval two to four times narrower than
# 67 ms ones in the same time (more pairs, and A and B closer in time, so drift cancels better).
ROUND_S = 0.02
# Sequential interleaving: the verdict's rule is applied after the first block of pairs and after
# each further block of the same size, at most LOOKS blocks; the measurement stops as soon as the
# item is decided. Each look spends a share of the error rates (compare.decision_levels), so
# looking cannot inflate them: a clear change or a clear no-change costs one block, a change
# near the threshold gets up to LOOKS times the pairs before it is called inconclusive.
LOOKS = 4
# Worker processes per side when A and B cannot share one (two stacks, two images). A process
# has a speed of its own for its life: on fresh instances every pair (passes.ACROSS_RENEW_SHARE)
# the workers of one stack scatter by about 0.7 % (sd) on this project's 2-core machine, and now
# and then one runs 4 to 30 % slower (replaced: stats.outlying_workers). The verdict widens its
# interval by the spread of the workers' levels (t on at most 2 x (n - 1) degrees of freedom).
# Simulated so (as tests/test_compare.py does, 400 items a condition, blocks of 30 or 80 pairs):
# 4 per side caught T 95 % of the time, 5 per side 96 to 98 % (T/2 flagged 2 to 2.5 %); 2 or 3
# leave t so few degrees of freedom that the interval widens past T.
WORKERS_PER_SIDE = 5


@dataclass(frozen=True)
class Timing:
    samples_ns: list[int]
    total_s: float
    stopped_by: str  # "target" (count and duration met) or "max_duration"
    rounds: list[int] = field(default_factory=list)  # samples per round; samples_ns concatenates
    # perf_counter_ns when the first timed call began and the last kept one ended: a call made
    # in between (a generation's own stamps) was timed; warm-up and a dropped pair lie outside.
    window_ns: tuple[int, int] = (0, 0)


def time_calls(call: Callable[[T], object], inputs: Sequence[T], options: MeasureOptions) -> Timing:
    """Warm up, then sample until BOTH min_count and min_duration_s are met, or max_duration_s.

    Both floors matter: a count floor alone lets a fast model finish in microseconds, dominated by
    one scheduler hiccup; a duration floor alone gives a slow model two samples. ``inputs`` are
    handed out round-robin, picked before the clock is read so the pick is not timed.

    With ``rounds`` > 1 the budget is split into consecutive rounds, each meeting its share of
    both floors (and at least MIN_ROUND_SAMPLES). The spread between round medians is what a
    verdict needs: it shows drift over time that one run's pooled samples hide. With
    ``precision`` set, rounds are added (within max_duration_s) until the median's relative 95 %
    half-width is below it: noisy items get more samples, quiet ones no more than the floors.
    """
    if not inputs:
        raise ValueError("time_calls needs at least one input")
    count = len(inputs)
    for i in range(options.warmup):
        call(inputs[i % count])
    rounds = max(1, options.rounds)
    per_round_count = max(-(-options.min_count // rounds), MIN_ROUND_SAMPLES if rounds > 1 else 1)
    per_round_ns = int(options.min_duration_s * 1e9 / rounds)
    deadline_ns = time.perf_counter_ns() + int(options.max_duration_s * 1e9)
    samples: list[int] = []
    sizes: list[int] = []
    start = time.perf_counter_ns()
    stopped_by = "target"
    planned = rounds
    while len(sizes) < planned:
        before = len(samples)
        reached = _sample(call, inputs, samples, per_round_count, per_round_ns, deadline_ns)
        sizes.append(len(samples) - before)
        if not reached:
            stopped_by = "max_duration"
            break
        if len(sizes) == planned and options.precision and not _precise(samples, options):
            planned += 1  # adaptive: one more round of the same size, until precise or max
    end = time.perf_counter_ns()
    return Timing(samples, (end - start) / 1e9, stopped_by, sizes, (start, end))


def pair_plan(options: MeasureOptions) -> tuple[int, MeasureOptions]:
    """How many pairs one block of an interleaved measurement takes at most, and each round's
    floors: the item's count and duration floors split over rounds of about ROUND_S, at least
    MIN_PAIRS per side (:class:`Block` ends a block once its floors are met). Shared
    by the in-worker interleave and the host-driven one across two stacks."""
    pairs = max(options.rounds, MIN_PAIRS, int(options.min_duration_s / ROUND_S))
    per_round = MeasureOptions(
        warmup=0,
        min_count=max(-(-options.min_count // pairs), MIN_ROUND_SAMPLES),
        min_duration_s=options.min_duration_s / pairs,
        max_duration_s=max(2 * options.max_duration_s / pairs, options.min_duration_s / pairs),
    )
    return pairs, per_round


@dataclass
class Block:
    """One block of pairs so far: how many, what each side has had, and since when.

    A block is complete with MIN_PAIRS (or the item's rounds) pairs once each side has had the
    item's count floor and the block has lasted both sides' duration floors (2 x
    ``min_duration_s``, loads of fresh instances included: renew_every keeps them to a quarter
    of a pair in one worker, and to as much as the pair's rounds across two stacks' workers,
    where a kept instance costs more than fewer pairs do). A model whose rounds are its count
    floor (three calls of a 50 ms model) stops at MIN_PAIRS; a fast one fills the time with
    20 ms rounds.
    """

    started_ns: int = field(default_factory=lambda: time.perf_counter_ns())
    pairs: int = 0
    count: dict[str, int] = field(default_factory=lambda: {"a": 0, "b": 0})

    def add(self, side: str, samples_ns: Sequence[int]) -> None:
        self.count[side] += len(samples_ns)

    def complete(self, options: MeasureOptions) -> bool:
        if self.pairs < max(MIN_PAIRS, options.rounds):
            return False
        if min(self.count.values()) < options.min_count:
            return False
        return time.perf_counter_ns() - self.started_ns >= 2 * options.min_duration_s * 1e9


def time_interleaved(
    call_a: Callable[[T], object],
    inputs_a: Sequence[T],
    call_b: Callable[[T], object],
    inputs_b: Sequence[T],
    options: MeasureOptions,
    seed: int = 0,
    settled: Callable[[list[float], list[float]], bool] | None = None,
    renew: Callable[[], tuple[Sequence[T], Sequence[T]]] | None = None,
    renew_every: int = 1,
) -> tuple[Timing, Timing]:
    """Alternate rounds of A and B, in random order within each pair; returns (A, B).

    Each side gets the floors of ``options`` (count, duration), split into at least MIN_PAIRS
    rounds, per block. Round i of A and of B ran back to back, so anything that drifts slower
    than a pair (frequency, neighbours, thermal state) hits both; the random order keeps "B
    always second" from becoming a bias of its own. With ``settled`` (A's and B's round medians
    so far -> decided?), blocks are added until it says yes or LOOKS blocks ran; without it, one
    block. A pair cut short by the deadline (2 x ``max_duration_s``) is dropped from both sides.

    ``renew`` (two different model files): called before every ``renew_every``-th pair after the
    first (which times the instances behind ``inputs_a`` and ``inputs_b``), it loads and warms up
    a fresh instance of each side behind ``call_a`` and ``call_b`` and returns their prepared
    inputs. Two instances of one model differ by their memory layout, by a percent or
    two and for their whole life; new draws through the measurement turn that into pair-to-pair
    noise, which the paired interval accounts for and more pairs average away.
    """
    import random

    if not inputs_a or not inputs_b:
        raise ValueError("time_interleaved needs at least one input per side")
    for i in range(options.warmup):
        call_a(inputs_a[i % len(inputs_a)])
        call_b(inputs_b[i % len(inputs_b)])
    pairs, per_round = pair_plan(options)
    per_round_count = per_round.min_count
    per_round_ns = int(per_round.min_duration_s * 1e9)
    deadline_ns = time.perf_counter_ns() + int(2 * options.max_duration_s * 1e9)
    rng = random.Random(seed)
    sides: dict[str, tuple[Callable[[T], object], Sequence[T], list[int], list[int]]] = {
        "a": (call_a, inputs_a, [], []),
        "b": (call_b, inputs_b, [], []),
    }
    start = time.perf_counter_ns()
    stopped_by = "target"
    medians: dict[str, list[float]] = {"a": [], "b": []}
    done = 0
    kept_until = start
    for _ in range(LOOKS if settled is not None else 1):
        block = Block()
        for _ in range(pairs):
            if block.complete(options):
                break
            done += 1
            # The first pair times the instances the caller made; later ones fresh instances.
            if renew is not None and done > 1 and (done - 1) % renew_every == 0:
                fresh_a, fresh_b = renew()
                sides["a"] = (call_a, fresh_a, sides["a"][2], sides["a"][3])
                sides["b"] = (call_b, fresh_b, sides["b"][2], sides["b"][3])
            order = ["a", "b"] if rng.random() < 0.5 else ["b", "a"]
            taken: dict[str, list[int]] = {}
            for key in order:
                call, inputs, _, _ = sides[key]
                taken[key] = []
                if not _sample(
                    call, inputs, taken[key], per_round_count, per_round_ns, deadline_ns
                ):
                    stopped_by = "max_duration"
                    break
            if stopped_by != "target":
                break
            block.pairs += 1
            for key, values in taken.items():
                block.add(key, values)
                sides[key][2].extend(values)
                sides[key][3].append(len(values))
                medians[key].append(_median(values) / 1e9)
            kept_until = time.perf_counter_ns()
        if stopped_by != "target" or settled is None or settled(medians["a"], medians["b"]):
            break
    total = (time.perf_counter_ns() - start) / 1e9
    return tuple(  # type: ignore[return-value]
        Timing(sides[key][2], total, stopped_by, sides[key][3], (start, kept_until))
        for key in ("a", "b")
    )


def _median(values: list[int]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return float(
        ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    )


def _precise(samples: list[int], options: MeasureOptions) -> bool:
    """Whether the median's 95 % interval half-width, relative to it, is within precision."""
    import numpy as np

    from pytest_mlscope.stats import median_ci

    values = np.sort(np.asarray(samples, dtype=np.float64))
    low, high = median_ci(values)
    median = float(np.median(values))
    return median > 0 and (high - low) / 2 / median <= (options.precision or 0.0)


def _sample(
    call: Callable[[T], object],
    inputs: Sequence[T],
    samples: list[int],
    min_count: int,
    min_ns: int,
    deadline_ns: int,
) -> bool:
    """One round: append samples until both floors are met (True) or the deadline passes."""
    clock = time.perf_counter_ns
    append = samples.append
    count = len(inputs)
    index = 0
    taken = 0
    start = clock()
    while True:
        item = inputs[index]
        index = index + 1 if index + 1 < count else 0
        before = clock()
        call(item)
        after = clock()
        append(after - before)
        taken += 1
        if taken >= min_count and after - start >= min_ns:
            return True
        if after >= deadline_ns:
            return False

"""Timing summaries and the timing loop, on plain arrays and real (sleeping) calls."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from pytest_mlscope.measure import MIN_PAIRS, time_calls, time_interleaved
from pytest_mlscope.protocol import MeasureOptions
from pytest_mlscope.stats import median_ci, summarize

# -- summarize -----------------------------------------------------------------------------------


def test_summary_fields_match_numpy_in_seconds_from_nanoseconds() -> None:
    samples_ns = [3_000_000, 1_000_000, 7_000_000, 2_000_000, 5_000_000, 4_000_000, 9_000_000]
    seconds = np.array(samples_ns, dtype=np.float64) / 1e9

    summary = summarize(samples_ns, batch_size=8)

    assert summary.count == 7
    assert summary.batch_size == 8
    assert summary.mean == pytest.approx(seconds.mean())
    assert summary.std == pytest.approx(seconds.std(ddof=1))
    assert summary.min == pytest.approx(0.001)
    assert summary.max == pytest.approx(0.009)
    assert summary.median == pytest.approx(np.median(seconds))
    assert summary.p90 == pytest.approx(np.percentile(seconds, 90))
    assert summary.p99 == pytest.approx(np.percentile(seconds, 99))


def test_throughput_is_batch_size_over_median_batch_time() -> None:
    summary = summarize(np.array([2_000_000, 4_000_000, 6_000_000]), batch_size=8)

    assert summary.median == pytest.approx(0.004)
    assert summary.throughput == pytest.approx(8 / 0.004)


def test_summary_of_one_sample_has_zero_spread() -> None:
    summary = summarize([1_500_000])

    assert summary.count == 1
    assert summary.std == 0.0
    assert summary.min == summary.median == summary.max == pytest.approx(0.0015)


def test_summarizing_zero_samples_is_refused() -> None:
    with pytest.raises(ValueError, match="zero samples"):
        summarize([])


def test_summary_median_ci_contains_the_sample_median() -> None:
    rng = np.random.default_rng(7)
    samples_ns = (rng.lognormal(mean=15, sigma=0.5, size=200)).astype(np.int64)

    summary = summarize(samples_ns)

    assert summary.median_ci_low <= summary.median <= summary.median_ci_high
    assert summary.median_ci_low < summary.median_ci_high


# -- median_ci -----------------------------------------------------------------------------------


def test_median_ci_contains_the_sample_median_for_many_sizes() -> None:
    rng = np.random.default_rng(3)
    for n in (6, 7, 10, 25, 50, 101, 1000):
        values = np.sort(rng.exponential(size=n))
        low, high = median_ci(values)
        assert low <= np.median(values) <= high, n


def test_median_ci_covers_the_true_median_about_95_percent_of_the_time() -> None:
    # lognormal(0, 1) has median exp(0) = 1.
    rng = np.random.default_rng(20240601)
    repetitions = 200
    covered = 0
    for _ in range(repetitions):
        values = np.sort(rng.lognormal(mean=0.0, sigma=1.0, size=101))
        low, high = median_ci(values)
        covered += low <= 1.0 <= high

    assert 0.90 <= covered / repetitions <= 0.99


@pytest.mark.parametrize("n", [1, 2, 5])
def test_median_ci_of_tiny_samples_is_the_range(n: int) -> None:
    values = np.sort(np.array([4.0, 1.0, 3.0, 2.0, 5.0][:n]))

    assert median_ci(values) == (values[0], values[-1])


def test_median_ci_of_no_samples_is_nan() -> None:
    low, high = median_ci(np.array([]))

    assert math.isnan(low) and math.isnan(high)


# -- time_calls ----------------------------------------------------------------------------------


def _sleep_1ms(_: object) -> None:
    time.sleep(0.001)


def test_time_calls_meets_the_duration_floor_beyond_the_count_floor() -> None:
    options = MeasureOptions(warmup=0, min_count=3, min_duration_s=0.05, max_duration_s=30)

    timing = time_calls(_sleep_1ms, [None], options)

    assert timing.stopped_by == "target"
    assert len(timing.samples_ns) >= 3
    assert timing.total_s >= 0.05
    if len(timing.samples_ns) > 3:
        # The duration floor is what kept it going, and it stopped at the first sample that met
        # it: the samples before the last one add up to less than the floor.
        assert sum(timing.samples_ns[:-1]) < 0.05e9


def test_time_calls_meets_the_count_floor_when_the_duration_floor_is_zero() -> None:
    options = MeasureOptions(warmup=0, min_count=30, min_duration_s=0.0, max_duration_s=30)

    timing = time_calls(_sleep_1ms, [None], options)

    assert timing.stopped_by == "target"
    assert len(timing.samples_ns) == 30
    assert all(sample >= 1_000_000 for sample in timing.samples_ns)


def test_time_calls_stops_at_max_duration_when_the_target_is_out_of_reach() -> None:
    options = MeasureOptions(warmup=0, min_count=1_000_000, min_duration_s=0.0, max_duration_s=0.05)

    timing = time_calls(_sleep_1ms, [None], options)

    assert timing.stopped_by == "max_duration"
    assert timing.total_s >= 0.05
    assert 0 < len(timing.samples_ns) < 1_000_000


def test_time_calls_runs_the_warmup_calls_before_sampling() -> None:
    calls: list[int] = []
    options = MeasureOptions(warmup=4, min_count=2, min_duration_s=0.0, max_duration_s=30)

    timing = time_calls(calls.append, [10, 20, 30], options)

    assert len(timing.samples_ns) == 2
    assert len(calls) == 4 + 2
    # Warm-up walks the inputs round-robin too, then sampling starts again from the first.
    assert calls == [10, 20, 30, 10, 10, 20]


def test_time_calls_hands_out_inputs_round_robin_in_order() -> None:
    seen: list[str] = []
    options = MeasureOptions(warmup=0, min_count=7, min_duration_s=0.0, max_duration_s=30)

    time_calls(seen.append, ["a", "b", "c"], options)

    assert seen == ["a", "b", "c", "a", "b", "c", "a"]


def test_time_calls_refuses_empty_inputs() -> None:
    with pytest.raises(ValueError, match="at least one input"):
        time_calls(_sleep_1ms, [], MeasureOptions())


def test_rounds_split_the_budget_and_record_their_sizes() -> None:
    options = MeasureOptions(warmup=0, min_count=40, min_duration_s=0.0, max_duration_s=5, rounds=4)
    timing = time_calls(lambda x: None, [0], options)
    assert timing.rounds == [10, 10, 10, 10]
    assert len(timing.samples_ns) == sum(timing.rounds)


def test_each_round_takes_at_least_three_samples() -> None:
    options = MeasureOptions(warmup=0, min_count=4, min_duration_s=0.0, max_duration_s=5, rounds=8)
    assert time_calls(lambda x: None, [0], options).rounds == [3] * 8


def test_adaptive_precision_adds_rounds_to_a_noisy_call_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pytest_mlscope.measure as measure

    # The calls' durations are the test's, not a loaded machine's (a real 2 ms sleep wakes up
    # late under load and spreads past any precision).
    clock = _FakeClock()
    monkeypatch.setattr(measure, "time", clock)
    rng = np.random.default_rng(0)

    def steady(_: object) -> None:
        clock.now += 2_000_000

    def noisy(_: object) -> None:
        clock.now += int(rng.choice([100_000, 2_000_000]))

    base = {"warmup": 0, "min_count": 12, "min_duration_s": 0.0, "max_duration_s": 3, "rounds": 4}
    quiet = time_calls(steady, [0], MeasureOptions(**base, precision=0.5))
    assert len(quiet.rounds) == 4
    loud = time_calls(noisy, [0], MeasureOptions(**base, precision=0.01))
    assert len(loud.rounds) > 4
    assert loud.stopped_by in ("target", "max_duration")


def test_interleaved_rounds_pair_up_and_alternate_in_random_order() -> None:
    order: list[str] = []
    options = MeasureOptions(warmup=2, min_count=60, min_duration_s=0.0, max_duration_s=5, rounds=4)
    a, b = time_interleaved(
        lambda x: order.append("a"), [0], lambda x: order.append("b"), [0], options, seed=3
    )
    assert len(a.rounds) == len(b.rounds) == MIN_PAIRS  # at least MIN_PAIRS, whatever rounds say
    assert a.rounds == b.rounds == [3] * MIN_PAIRS  # 60 / 30 = 2, raised to the round minimum
    timed = order[4:]  # after two warm-up calls per side
    firsts = [timed[i] for i in range(0, len(timed), 6)]  # each pair is 3 + 3 calls
    assert set(firsts) == {"a", "b"}  # both orders occur, so "B second" is not a bias


def test_interleaving_stops_at_the_deadline_with_whole_pairs() -> None:
    # 10 ms rounds (0.3 s over 30 pairs), but only 0.2 s in all (0.1 s per side).
    options = MeasureOptions(
        warmup=0, min_count=3, min_duration_s=0.3, max_duration_s=0.1, rounds=2
    )
    a, b = time_interleaved(lambda x: None, [0], lambda x: None, [0], options)
    assert a.stopped_by == b.stopped_by == "max_duration"
    assert 0 < len(a.rounds) == len(b.rounds) < MIN_PAIRS
    assert sum(a.rounds) == len(a.samples_ns) and sum(b.rounds) == len(b.samples_ns)


def test_renewed_interleaving_times_each_pair_on_its_own_instances() -> None:
    """Each pair's rounds run on the instances loaded (and warmed, by ``renew``) for it."""
    calls: list[tuple[str, int]] = []
    loaded: list[int] = []

    def renew() -> tuple[list[int], list[int]]:
        loaded.append(len(loaded))
        return [loaded[-1]], [loaded[-1]]

    options = MeasureOptions(warmup=2, min_count=90, min_duration_s=0.0, max_duration_s=5, rounds=1)
    time_interleaved(
        lambda x: calls.append(("a", x)), [-1], lambda x: calls.append(("b", x)), [-1],
        options, seed=1, renew=renew,
    )  # fmt: skip
    assert len(loaded) == MIN_PAIRS - 1  # one renewal per pair after the first
    per_pair = 3 + 3  # a round each (90 samples over 30 pairs)
    # warm-up and the first pair on the instances the caller made
    assert {instance for _, instance in calls[: 4 + per_pair]} == {-1}
    for pair in range(1, MIN_PAIRS):
        chunk = calls[4 + pair * per_pair : 4 + (pair + 1) * per_pair]
        assert {instance for _, instance in chunk} == {pair - 1}
        assert sorted(side for side, _ in chunk) == ["a"] * 3 + ["b"] * 3


class _FakeClock:
    """perf_counter_ns for pytest_mlscope.measure: advances only when a model call says so."""

    def __init__(self) -> None:
        self.now = 0

    def perf_counter_ns(self) -> int:
        return self.now


@pytest.mark.parametrize(
    ("call_ms", "min_count", "pairs", "per_round"),
    [
        (0.5, 50, 100, 40),  # fast: 2 s over 20 ms rounds, 40 calls each
        (50.0, 50, MIN_PAIRS, 3),  # slow: rounds of three calls, so a block stops at MIN_PAIRS
        # 4 s of pairs pass at 40 pairs, but the count floor asks for 1000 calls a side
        (5.0, 1000, 100, 10),
    ],
)
def test_a_block_of_pairs_fills_the_duration_floor_with_short_rounds(
    monkeypatch: pytest.MonkeyPatch, call_ms: float, min_count: int, pairs: int, per_round: int
) -> None:
    """A fast model gets many short pairs (A and B close in time, so drift cancels); a slow one
    no more than MIN_PAIRS, so its block takes what it took before."""
    import pytest_mlscope.measure as measure

    clock = _FakeClock()
    monkeypatch.setattr(measure, "time", clock)

    def model(_: object) -> None:
        clock.now += int(call_ms * 1e6)

    options = MeasureOptions(warmup=0, min_count=min_count, min_duration_s=2.0, max_duration_s=600)
    a, b = time_interleaved(model, [0], model, [0], options, seed=1)
    assert len(a.rounds) == len(b.rounds) == pairs
    assert set(a.rounds) == set(b.rounds) == {per_round}

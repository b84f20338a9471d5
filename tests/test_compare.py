"""Verdicts on arrays: the pure comparison logic, without a database or a model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pytest_mlscope.compare import (
    Noise,
    Side,
    accuracy_changes,
    compare_runs,
    decision_levels,
    host_differences,
    paired_verdict,
    settled,
    verdict,
)
from pytest_mlscope.measure import LOOKS
from pytest_mlscope.protocol import AccuracyCheck, AccuracyReport
from pytest_mlscope.stats import between_run_noise, round_medians, shift_interval, step_changes

HOST = {"arch": "x86_64", "cpu_model": "Xeon X", "physical_cores": 2, "gpus": []}


def run(
    rng: np.random.Generator,
    median_s: float = 0.010,
    rounds: int = 10,
    per_round: int = 30,
    drift: float = 0.02,
    jitter: float = 0.03,
    between: float = 0.0,
    **side: object,
) -> Side:
    """Samples the way a busy machine gives them: each run has its own level (``between``, a
    new process's offset), each round its own level around it (drift), and samples scatter
    around that (jitter)."""
    samples: list[int] = []
    median_s *= float(np.exp(rng.normal(0, between))) if between else 1.0
    for _ in range(rounds):
        level = median_s * np.exp(rng.normal(0, drift))
        values = level * np.exp(rng.normal(0, jitter, per_round))
        samples.extend(int(v * 1e9) for v in values)
    side.setdefault("host", HOST)
    side.setdefault("framework_version", "1.0")
    return Side(samples_ns=samples, rounds=[per_round] * rounds, **side)  # type: ignore[arg-type]


def test_no_baseline_result_is_new() -> None:
    found = verdict(None, run(np.random.default_rng(0)))
    assert found.kind == "new" and not found.fails


def test_an_unchanged_model_is_ok_with_an_interval_around_one() -> None:
    rng = np.random.default_rng(1)
    found = verdict(run(rng), run(rng), threshold=0.05)
    assert found.kind == "ok", found.describe()
    assert found.ratio_low < 1 < found.ratio_high
    assert found.threshold == pytest.approx(0.05)


def test_a_clear_slowdown_is_a_regression_with_its_numbers() -> None:
    rng = np.random.default_rng(2)
    found = verdict(run(rng), run(rng, median_s=0.0125), threshold=0.05, between_run_noise=0.02)
    assert found.kind == "regression" and found.fails, found.describe()
    assert found.ratio == pytest.approx(1.25, rel=0.03)
    assert found.ratio_low > 1.025
    assert found.baseline_median == pytest.approx(0.010, rel=0.05)
    assert found.current_median == pytest.approx(0.0125, rel=0.05)
    assert found.p_value < 1e-6
    assert found.ratio_text.startswith("+2") and "[" in found.ratio_text
    assert "above +2.5%, half the 5.0% threshold" in found.reason


def test_a_stored_slowdown_without_run_to_run_noise_is_inconclusive_and_says_how_to_decide() -> (
    None
):
    """Two processes differ by an offset one run cannot show: never fail on that ignorance."""
    rng = np.random.default_rng(2)
    found = verdict(run(rng), run(rng, median_s=0.0125), threshold=0.05, noise_runs=2)
    assert found.kind == "inconclusive" and not found.fails
    assert found.ratio == pytest.approx(1.25, rel=0.03)
    assert "regression within this run (+2" in found.reason
    assert "no run-to-run noise estimate for this item (2 comparable stored runs, 5 needed" in (
        found.reason
    )
    assert "interleaved" in found.reason and "--mlscope-count-instructions" in found.reason


def test_a_clear_speedup_is_an_improvement() -> None:
    rng = np.random.default_rng(3)
    found = verdict(run(rng), run(rng, median_s=0.008), threshold=0.05, between_run_noise=0.02)
    assert found.kind == "improvement" and not found.fails


def test_too_little_data_is_inconclusive_and_says_what_it_could_have_detected() -> None:
    rng = np.random.default_rng(4)
    baseline = run(rng, rounds=3, per_round=3, drift=0.08)
    current = run(rng, rounds=3, per_round=3, drift=0.08, median_s=0.0106)
    found = verdict(baseline, current, threshold=0.05)
    assert found.kind == "inconclusive", found.describe()
    assert found.detectable is not None and found.detectable > 0.05
    assert f"{found.detectable:.1%}" in found.reason


def test_round_noise_widens_the_interval_but_does_not_raise_the_threshold() -> None:
    """Noisy rounds make the interval wide (so: inconclusive), not the threshold high: more
    rounds would narrow the interval, while a raised threshold would never come down."""
    rng = np.random.default_rng(7)
    baseline = run(rng, drift=0.15, rounds=6)
    current = run(rng, drift=0.15, rounds=6, median_s=0.0108)
    found = verdict(baseline, current, threshold=0.02)
    assert found.noise > 0.02
    assert found.threshold == 0.02
    assert found.kind == "inconclusive"
    assert found.ratio_high - found.ratio_low > 0.1


def test_run_to_run_noise_widens_the_interval_and_keeps_the_threshold() -> None:
    """Noise larger than the slowdown makes the verdict unsure, not the threshold larger: the
    threshold is what the user asked to catch, and 'inconclusive' says what could be caught."""
    rng = np.random.default_rng(5)
    baseline, current = run(rng, rounds=30), run(rng, rounds=30, median_s=0.0108)
    found = verdict(baseline, current, threshold=0.02, between_run_noise=0.09)
    assert found.threshold == pytest.approx(0.02)
    assert found.between_run_noise == pytest.approx(0.09)
    assert found.kind == "inconclusive", found.describe()
    assert found.detectable is not None and found.detectable > 0.09


def test_accuracy_loss_is_a_regression_even_when_latency_is_unchanged() -> None:
    rng = np.random.default_rng(6)
    before = AccuracyReport(
        checks=[AccuracyCheck(name="top1", passed=True, value=0.99)], samples=450, top1=0.99
    )
    after = AccuracyReport(
        checks=[AccuracyCheck(name="top1", passed=False, value=0.95, detail="top-1 0.95")],
        samples=450,
        top1=0.95,
    )
    found = verdict(run(rng, accuracy=before), run(rng, accuracy=after))
    assert found.kind == "regression"
    assert found.accuracy_changes[0].startswith("top1 passed in the baseline and fails now")
    assert "top1 0.9900 -> 0.9500 (-4.00 points" in found.accuracy_changes[1]


def test_a_top1_drop_within_tolerance_is_not_an_accuracy_change() -> None:
    before = AccuracyReport(samples=450, top1=0.9911)
    after = AccuracyReport(samples=450, top1=0.9889)  # one sample of 450 flipped
    assert accuracy_changes(before, after, tolerance=0.005) == []


def test_another_cpu_or_framework_version_is_incomparable_and_named() -> None:
    rng = np.random.default_rng(7)
    other_cpu = {**HOST, "cpu_model": "EPYC Y"}
    found = verdict(run(rng), run(rng, host=other_cpu), framework="onnxruntime")
    assert found.kind == "incomparable"
    assert "CPU model: 'Xeon X' (baseline) vs 'EPYC Y' (now)" in found.reason
    upgraded = verdict(run(rng), run(rng, framework_version="1.1"), framework="onnxruntime")
    assert upgraded.kind == "incomparable"
    assert upgraded.differences == ["onnxruntime version: 1.0 (baseline) vs 1.1 (now)"]


def test_pairs_timed_beside_another_model_do_not_judge_against_this_baseline() -> None:
    """``mlscope compare A B`` with B's pairs from its session against run M: they say how B
    compared with M's model, not with A's. Judged on the pairs only when A's model is the one
    B was timed beside; otherwise on the stored design, and the reason says why."""
    from dataclasses import replace

    rng = np.random.default_rng(7)
    ran = run(rng)
    beside = run(rng, median_s=0.005)  # the A side B was paired with: twice as fast
    current = replace(
        ran,
        artifact_sha256="b" * 64,
        paired_samples_ns=beside.samples_ns,
        paired_rounds=beside.rounds,
        paired_artifact_sha256="m" * 64,
    )
    session = verdict(run(rng, artifact_sha256="m" * 64), current, threshold=0.05)
    assert session.design == "interleaved" and session.kind == "regression"
    other = verdict(run(rng, artifact_sha256="a" * 64), current, threshold=0.05)
    assert other.design != "interleaved" and other.kind != "regression", other.reason
    assert "timed it beside another model (sha256 mmmmmmmmmmmm)" in other.reason
    # A result stored before the pairs' model was kept is taken at its word.
    unknown = verdict(
        run(rng, artifact_sha256="a" * 64), replace(current, paired_artifact_sha256=None)
    )
    assert unknown.design == "interleaved"


def test_host_differences_name_gpus_and_ignore_unmaterial_facts() -> None:
    gpu = {**HOST, "gpus": [{"name": "H200"}], "hostname": "other", "memory_gb": 64}
    assert host_differences(HOST, gpu) == ["GPUs: none (baseline) vs ['H200'] (now)"]


def test_more_comparisons_guard_the_suite_not_each_item() -> None:
    """The family-wise interval widens with the items compared; the item's own does not."""
    assert decision_levels(1) == pytest.approx((0.95, 0.98))
    assert decision_levels(50, looks=4) == pytest.approx((1 - 0.05 / 4, 1 - 0.02 / 200))
    # 19 pairs clearly 6 % slower and one 2 % faster: the item's interval is above +2.5 %, the
    # family-wise one of 1000 items reaches the faster pair, so the suite is not risked on it.
    differences = np.array([0.06] * 19 + [-0.02])
    a = np.full(20, 0.010)
    b = a * np.exp(differences)
    assert paired_verdict(a, b, threshold=0.05).kind == "regression"
    assert paired_verdict(a, b, threshold=0.05, comparisons=1000).kind != "regression"


def test_verdicts_serialize_to_json_with_their_ratio_text() -> None:
    rng = np.random.default_rng(9)
    found = verdict(run(rng), run(rng, median_s=0.012))
    data = json.loads(json.dumps(found.as_dict()))
    assert data["kind"] == found.kind
    assert data["ratio_text"] == found.ratio_text


def test_unchanged_runs_on_a_drifting_machine_rarely_raise_an_alarm() -> None:
    """A/A with 4 % between-round drift and a 4 % offset per process, judged with the run-to-run
    noise that stored runs of the same item show: false alarms stay rare."""
    rng = np.random.default_rng(10)
    medians = [np.median(run(rng, drift=0.04, between=0.04).samples_ns) for _ in range(10)]
    noise = between_run_noise(medians)
    assert noise is not None and noise > 0.01
    kinds = [
        verdict(
            run(rng, drift=0.04, between=0.04),
            run(rng, drift=0.04, between=0.04),
            between_run_noise=noise,
            noise_runs=len(medians),
        ).kind
        for _ in range(300)
    ]
    assert kinds.count("regression") / len(kinds) <= 0.01
    assert kinds.count("improvement") / len(kinds) <= 0.01


def _sequential(rng: np.random.Generator, slowdown: float, pair_noise: float) -> str:
    """The interleaved design as the worker runs it: blocks of 30 pairs, the verdict's rule as
    the stopping rule after each, at most LOOKS blocks; then the verdict on all pairs. Each
    pair shares a level (drift), and its two rounds differ by ``pair_noise``."""
    a: list[float] = []
    b: list[float] = []
    for _ in range(LOOKS):
        drift = 0.010 * np.exp(rng.normal(0, 0.10, 30))
        a.extend(drift * np.exp(rng.normal(0, pair_noise / np.sqrt(2), 30)))
        b.extend(drift * (1 + slowdown) * np.exp(rng.normal(0, pair_noise / np.sqrt(2), 30)))
        if settled(a, b, threshold=0.05, looks=LOOKS):
            break
    return paired_verdict(a, b, threshold=0.05, looks=LOOKS).kind


@pytest.mark.parametrize("pair_noise", [0.02, 0.05])
def test_the_threshold_means_catch_this_in_the_sequential_interleaved_design(
    pair_noise: float,
) -> None:
    """At T = 5 %: unchanged is flagged at most 1 % of the time, +5 % is caught at least 95 %,
    +2.5 % is flagged at most 5 %; at pair noise of 2 % (a quiet CPU item) and 5 % (a noisy
    one, where the budget runs out more often for changes near T)."""
    rng = np.random.default_rng(17)
    trials = 300
    same = [_sequential(rng, 0.0, pair_noise) for _ in range(trials)]
    full = [_sequential(rng, 0.05, pair_noise) for _ in range(trials)]
    half = [_sequential(rng, 0.025, pair_noise) for _ in range(trials)]
    assert same.count("regression") / trials <= 0.01
    assert half.count("regression") / trials <= 0.05
    assert full.count("regression") / trials >= 0.95
    assert full.count("ok") / trials <= 0.025  # a slowdown of T is never waved through


def _process_speed(rng: np.random.Generator) -> float:
    """A worker's own offset, as measured across stacks here: about 0.7 % (sd), and now and then
    (1 in 20) a process 4 to 9 % slower for its life."""
    offset = rng.normal(0, 0.007)
    return offset + (np.log1p(rng.uniform(0.04, 0.09)) if rng.random() < 0.05 else 0.0)


def _across_workers(
    rng: np.random.Generator,
    slowdown: float,
    per_side: int | None = None,
    replace: bool = True,
    block: int = 30,
) -> str:
    """The interleaved design across two stacks as across.py runs it: WORKERS_PER_SIDE worker
    processes per side, each with a speed of its own for its life, every A worker meeting
    every B worker in turn, blocks of ``block`` pairs with the verdict's rule as the stopping
    rule (LOOKS decisions at most). After each block, a worker that stands apart
    (stats.outlying_workers) is replaced by a fresh one, its pairs dropped and the same
    meetings timed again before the next decision, as many times as there are workers per
    side."""
    from pytest_mlscope.measure import WORKERS_PER_SIDE
    from pytest_mlscope.stats import outlying_workers

    per_side = per_side or WORKERS_PER_SIDE
    offsets = [[_process_speed(rng) for _ in range(per_side)] for _ in "ab"]
    combos = [(i, j) for i in range(per_side) for j in range(per_side)]
    timed: list[tuple[float, float, tuple[int, int]]] = []
    replaced = decisions = done = 0
    redo: list[tuple[int, int]] = []
    while decisions < LOOKS:
        for _ in range(len(redo) or block):
            if redo:
                i, j = redo.pop()
            else:
                i, j = combos[done % len(combos)]
                done += 1
            level = 0.010 * np.exp(rng.normal(0, 0.10))
            a = level * np.exp(offsets[0][i] + rng.normal(0, 0.014))
            b = level * (1 + slowdown) * np.exp(offsets[1][j] + rng.normal(0, 0.014))
            timed.append((a, b, (i, j)))
        a_rounds, b_rounds, met = ([t[k] for t in timed] for k in range(3))
        apart = outlying_workers(np.log(b_rounds) - np.log(a_rounds), met, 0.05) if replace else []
        apart = apart[: per_side - replaced]
        if apart:
            for side, index, _ in apart:
                offsets[side][index] = _process_speed(rng)
                replaced += 1
            gone = {(side, index) for side, index, _ in apart}
            redo = [t[2] for t in timed if gone & {(0, t[2][0]), (1, t[2][1])}]
            timed = [t for t in timed if not gone & {(0, t[2][0]), (1, t[2][1])}]
            continue
        decisions += 1
        if settled(a_rounds, b_rounds, threshold=0.05, looks=LOOKS, workers=met):
            break
    return paired_verdict(a_rounds, b_rounds, threshold=0.05, looks=LOOKS, workers=met).kind


@pytest.mark.parametrize("block", [30, 80])
def test_the_threshold_holds_across_worker_processes_that_each_have_a_speed(block: int) -> None:
    """Two stacks cannot share a process, and each process has an offset of its own that no
    number of pairs removes. Timed in one pair of processes, half of T is flagged far more than
    promised; in several per side, with their spread in the interval and a worker that stands
    apart replaced, the promise of the one-process design holds again: with blocks of the
    fewest pairs (a slow model) and of as many as a fast one gets. Without replacing, a slow
    process among ten leaves the interval too wide to catch T as often."""
    rng = np.random.default_rng(21)
    trials = 300
    one_pair = [_across_workers(rng, 0.025, per_side=1, block=block) for _ in range(100)]
    assert one_pair.count("regression") / 100 > 0.10
    same = [_across_workers(rng, 0.0, block=block) for _ in range(trials)]
    half = [_across_workers(rng, 0.025, block=block) for _ in range(trials)]
    full = [_across_workers(rng, 0.05, block=block) for _ in range(trials)]
    assert same.count("regression") / trials <= 0.01
    assert half.count("regression") / trials <= 0.05
    assert full.count("regression") / trials >= 0.95
    assert full.count("ok") / trials <= 0.025  # a slowdown of T is never waved through
    kept = [_across_workers(rng, 0.05, replace=False, block=block) for _ in range(trials)]
    assert kept.count("regression") < full.count("regression")


def test_a_worker_that_stands_apart_is_named_and_noise_is_not() -> None:
    """A process 7 % slower than its side's others is named, with its side and how far; the
    same pairs without it name nobody, however noisy; a side of two cannot say which is apart."""
    from pytest_mlscope.stats import outlying_workers

    rng = np.random.default_rng(23)
    met = [(i, j) for _ in range(4) for i in range(4) for j in range(4)]
    b_offsets = [0.0, 0.002, np.log(1.07), -0.003]
    noisy = rng.normal(0, 0.03, len(met))
    d = np.array([b_offsets[j] for _, j in met]) + noisy
    ((side, worker, distance),) = outlying_workers(d, met, threshold=0.05)
    assert (side, worker) == (1, 2) and 0.05 < distance < 0.09
    assert outlying_workers(noisy, met, threshold=0.05) == []
    # a 2 % offset is below half the threshold: not worth a fresh process
    small = np.array([[0.0, 0.0, 0.02, 0.0][j] for _, j in met]) + noisy / 10
    assert outlying_workers(small, met, threshold=0.05) == []
    two = [(i % 2, j % 2) for i, j in met]
    assert outlying_workers(d, two, threshold=0.05) == []


def test_the_workers_spread_widens_the_verdict_and_says_so() -> None:
    """Pairs that agree closely inside each pair of processes, while the processes disagree:
    the interval is as wide as the processes' spread, and the reason says across how many."""
    from pytest_mlscope.stats import worker_spread

    rng = np.random.default_rng(22)
    offsets = {"a": [0.0, 0.02, -0.01, 0.015], "b": [0.01, -0.02, 0.0, 0.02]}
    met = [(i, j) for _ in range(3) for i in range(4) for j in range(4)]
    a = [0.01 * np.exp(offsets["a"][i] + rng.normal(0, 0.001)) for i, _ in met]
    b = [0.01 * np.exp(offsets["b"][j] + rng.normal(0, 0.001)) for _, j in met]
    spread = worker_spread(np.log(b) - np.log(a), met)
    assert spread is not None and (spread.a_workers, spread.b_workers) == (4, 4)
    assert 3 <= spread.df <= 6  # Welch–Satterthwaite: the two stacks' spreads need not match
    # sd of the levels about 1.5 %, over sqrt(1/4 + 1/4)
    assert 0.008 < spread.error < 0.013
    narrow = paired_verdict(a, b, threshold=0.05)
    wide = paired_verdict(a, b, threshold=0.05, workers=met)
    assert narrow.ratio_high - narrow.ratio_low < 0.015
    assert wide.ratio_high - wide.ratio_low > 0.03
    assert "across 4 + 4 worker processes, whose own speeds keep the interval" in wide.reason
    # one worker per side: nothing to estimate their spread from, nothing widened
    single = [(0, 0)] * len(met)
    assert worker_spread(np.log(b) - np.log(a), single) is None
    with pytest.raises(ValueError, match="one \\(a, b\\) worker pair per difference"):
        worker_spread([0.0, 0.1], [(0, 0)])


def test_one_stack_whose_processes_scatter_more_gets_fewer_degrees_of_freedom() -> None:
    """A and B are two stacks: when only one side's processes scatter, the error is theirs and
    the degrees of freedom are that side's (3), not both sides' pooled (6); a side with one
    worker borrows the other side's spread for its one offset."""
    from pytest_mlscope.stats import worker_spread

    met = [(i, j) for i in range(4) for j in range(4)]
    a_offsets = [0.0, 0.03, -0.02, 0.01]
    d = np.array([-a_offsets[i] + 0.0001 * j for i, j in met])
    spread = worker_spread(d, met)
    assert spread is not None and spread.df == pytest.approx(3.0, abs=0.01)
    assert spread.error == pytest.approx(np.std(a_offsets, ddof=1) / 2, rel=0.01)
    one_b = [(i, 0) for i, _ in met]
    borrowed = worker_spread(d, one_b)
    assert borrowed is not None and (borrowed.a_workers, borrowed.b_workers) == (4, 1)
    assert borrowed.df == 3
    assert borrowed.error == pytest.approx(np.std(a_offsets, ddof=1) * np.sqrt(1 / 4 + 1), rel=0.01)


def test_round_medians_fall_back_to_chunks_without_round_boundaries() -> None:
    samples = list(range(1, 101))
    assert len(round_medians(samples, [])) == 10
    assert list(round_medians(samples, [50, 50]) * 1e9) == pytest.approx([25.5, 75.5])


def test_the_shift_interval_covers_a_known_shift() -> None:
    rng = np.random.default_rng(11)
    hits = 0
    for _ in range(200):
        a = rng.normal(0, 1, 12)
        b = rng.normal(0.5, 1, 12)
        shift = shift_interval(a, b, 0.95)
        hits += shift.low <= 0.5 <= shift.high
    assert 0.90 <= hits / 200 <= 0.99


def test_interleaved_pairs_catch_a_small_slowdown_under_strong_drift() -> None:
    """Drift shared by each A/B pair cancels in the paired design; the unpaired one drowns."""
    rng = np.random.default_rng(12)
    drift = np.exp(rng.normal(0, 0.10, 30))  # 10 % round-to-round drift, shared by a pair
    a = 0.010 * drift * np.exp(rng.normal(0, 0.005, 30))
    b = 0.0105 * drift * np.exp(rng.normal(0, 0.005, 30))
    paired = paired_verdict(a, b, threshold=0.01)
    assert paired.kind == "regression", paired.describe()
    assert paired.ratio == pytest.approx(1.05, abs=0.01)
    assert paired.p_value < 0.001


def test_interleaved_pairs_of_an_unchanged_model_are_ok() -> None:
    rng = np.random.default_rng(13)
    drift = np.exp(rng.normal(0, 0.10, 30))
    a = 0.010 * drift * np.exp(rng.normal(0, 0.005, 30))
    b = 0.010 * drift * np.exp(rng.normal(0, 0.005, 30))
    assert paired_verdict(a, b, threshold=0.02).kind == "ok"


def test_known_run_to_run_noise_widens_the_interval() -> None:
    rng = np.random.default_rng(14)
    baseline, current = run(rng), run(rng, median_s=0.0108)
    alone = verdict(baseline, current, threshold=0.02, between_run_noise=0.001)
    informed = verdict(baseline, current, threshold=0.02, between_run_noise=0.06)
    assert informed.ratio_low <= alone.ratio_low and informed.ratio_high >= alone.ratio_high
    assert informed.threshold == pytest.approx(0.02)
    assert informed.kind != "regression"


def test_a_step_in_the_history_is_found_near_where_it_happened() -> None:
    rng = np.random.default_rng(15)
    series = list(rng.normal(1.0, 0.02, 20)) + list(rng.normal(1.1, 0.02, 20))
    (change,) = step_changes(series, window=8, alpha=0.001)
    assert 17 <= change.index <= 23
    assert change.change == pytest.approx(0.10, abs=0.03)
    assert change.p_value <= 0.001


def test_a_flat_history_has_no_step_and_a_short_one_has_no_noise_estimate() -> None:
    rng = np.random.default_rng(16)
    assert step_changes(list(rng.normal(1.0, 0.02, 40))) == []
    assert between_run_noise([1.0, 1.1, 0.9, 1.0]) is None
    assert between_run_noise([1.0, 1.02, 0.98, 1.01, 0.99, 1.0]) == pytest.approx(0.0149, abs=0.01)


# Instructions per call per round, as a count pass gives them for digits_cnn here.
COUNTS = [151_377.0, 151_088.0, 151_103.0, 151_516.0, 151_342.0]


def test_counts_decide_when_both_sides_have_them_whatever_the_timings() -> None:
    """Timings say 30 % slower (two processes on a busy machine); counts say the same work."""
    rng = np.random.default_rng(7)
    baseline = run(rng, instructions=COUNTS)
    current = run(rng, median_s=0.013, instructions=[c * 1.001 for c in COUNTS])
    found = verdict(baseline, current, threshold=0.01)
    assert found.kind == "ok" and found.design == "instructions", found.describe()
    assert found.reason.startswith("instructions per call (reached 95.0%): ")
    # Latency is still shown beside the counts: here, unsure without run-to-run noise.
    assert found.latency is not None and found.latency.startswith("inconclusive +")
    assert found.baseline_median is None and found.baseline_instructions == pytest.approx(151_342)
    slower = verdict(baseline, run(rng, instructions=[c * 1.03 for c in COUNTS]), threshold=0.01)
    assert slower.kind == "regression" and slower.ratio == pytest.approx(1.03, abs=0.002)
    # One side without counts: latency decides, as before.
    assert verdict(baseline, run(rng), threshold=0.01).design == "stored"


def test_a_count_verdict_still_puts_accuracy_and_environment_first() -> None:
    rng = np.random.default_rng(8)
    other_cpu = {**HOST, "cpu_model": "Xeon Y"}
    found = verdict(
        run(rng, instructions=COUNTS),
        run(rng, instructions=COUNTS, host=other_cpu),
    )
    assert found.kind == "incomparable" and "CPU model" in found.reason


def test_an_interleaved_run_compared_later_gets_the_verdict_its_session_gave() -> None:
    """compare_runs (mlscope compare, the report) judges a stored interleaved result on its
    stored pairs, with the threshold and comparisons its session used."""
    rng = np.random.default_rng(18)
    drift = 0.010 * np.exp(rng.normal(0, 0.05, 30))
    a_rounds = drift * np.exp(rng.normal(0, 0.01, 30))
    b_rounds = drift * 1.08 * np.exp(rng.normal(0, 0.01, 30))
    current = Side(
        samples_ns=[int(v * 1e9) for v in b_rounds],
        rounds=[1] * 30,
        host=HOST,
        framework_version="1.0",
        paired_samples_ns=[int(v * 1e9) for v in a_rounds],
        paired_rounds=[1] * 30,
    )
    baseline = run(rng)
    in_session = verdict(baseline, current, threshold=0.1, comparisons=7)
    later = compare_runs(
        {"m[x]": baseline},
        {"m[x]": current},
        settings={"m[x]": {"threshold": 0.1, "comparisons": 7}},
        noise={"m[x]": Noise()},
    )["m[x]"]
    assert in_session.design == later.design == "interleaved"
    assert (later.kind, later.ratio, later.ratio_low) == (
        in_session.kind,
        in_session.ratio,
        in_session.ratio_low,
    )
    assert later.kind == "regression" and later.threshold == 0.1 and later.comparisons == 7

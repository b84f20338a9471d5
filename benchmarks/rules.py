"""Our verdict statistics beside two other rules, on the same samples (not the shipped gate).

``benchmarks/verdicts.py`` measures the gate as it ships, through real ``pytest --mlscope``
sessions; this script hands one set of samples to several decision rules, so they differ only in
how they decide: false alarms and detections, ours against pytest-benchmark's and pyperf's.

Every repetition measures a model twice, as A (the baseline) and B (the change), and hands the
SAME samples to every rule, so the rules differ only in how they decide:

- ours: ``pytest_mlscope.compare.verdict`` for a stored baseline (unpaired), and
  ``pytest_mlscope.compare.paired_verdict`` for interleaved A/B; flagged = ``regression``. Shown at
  the default threshold (5 %) and at 2 % and 1 %, each as its own row.
- pytest-benchmark's ``--benchmark-compare-fail=median:5%``: flagged when the median of B's raw
  samples is more than 5 % above A's.
- pyperf's ``compare_to``: flagged when its t-test calls the difference significant and B's mean
  is higher, on all raw samples in seconds (what ``mlscope export --format pyperf`` gives it).

B is either A again (A/A: every flag is a false alarm) or A with a calibrated slowdown of 3, 5 or
10 % injected (``pytest_mlscope.slowdown``: CPU work after each call, never a sleep). Two designs:

1. Stored baseline from an earlier session: A in one fresh worker process, B in another one
   afterwards, through the real pipeline (``SubprocessRuntime`` + ``EvaluationRequest``) — the
   two CI jobs a stored baseline compares. As in the plugin, the item's run-to-run noise comes
   from its stored history (the A medians of the earlier repetitions, after five seed runs) and
   floors the threshold.
2. Interleaved A/B, as ``pytest --mlscope --mlscope-interleave`` runs it: one fresh worker per
   repetition times A (the model) and B (the model with the slowdown) in alternating rounds,
   random order within each pair; round i of A and of B form a pair.

3. ``--design counted`` (not part of the default run): the stored-baseline design on
   instruction counts, as ``--mlscope-count-instructions`` measures them. Each repetition counts
   A in one fresh worker under callgrind and B for every condition in its own fresh worker (the
   slowdown sized in instructions), two workers at a time: counts depend little on the load.
   The rules see per-round instructions per call instead of samples: ours (``count_verdict``),
   pytest-benchmark's 5 % median rule and pyperf's t-test, on the same figures.

Conditions run in a seeded random order, so drift on the machine does not line up with one.

Run from the repository root::

    .venv/bin/python benchmarks/rules.py            # full run, about 18 minutes on 2 cores
    .venv/bin/python benchmarks/rules.py --quick    # smoke run, about 3.5 minutes
    .venv/bin/python benchmarks/rules.py --json verdicts.json
    .venv/bin/python benchmarks/rules.py --design counted   # needs Valgrind, about 75 minutes
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from pytest_mlscope.callgrind import ROUND_INSTRUCTIONS
from pytest_mlscope.measure import MIN_ROUND_SAMPLES
from pytest_mlscope.protocol import MeasureOptions

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO / ".mlscope" / "artifacts"  # the plugin's default for a run from the repo root
JSON_VERSION = 1

CONDITIONS = (0.0, 0.03, 0.05, 0.10)  # injected slowdown of B; 0 is A/A
THRESHOLDS = (0.05, 0.02, 0.01)  # ours: the default, then lower ones
PYTEST_BENCHMARK_FAIL = 0.05  # --benchmark-compare-fail=median:5%
# The acceptance targets.
MAX_FALSE_ALARMS = 0.01
MIN_CAUGHT = {0.05: 0.95, 0.03: 0.80}

DESIGNS = {
    "stored": "Stored baseline from an earlier session (unpaired: A and B in separate fresh "
    "worker processes, one after the other)",
    "interleaved": "Interleaved A/B, `--mlscope-interleave` (one worker, paired rounds, random "
    "order within a pair)",
    "counted": "Stored baseline from an earlier session, counting instructions (A and B in "
    "separate fresh worker processes under callgrind)",
}
COUNT_ROUNDS = 5  # counted design: rounds of about 5M instructions per side


# -- plans ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    repetitions: int  # per condition and design
    rounds: int  # per side, stored design
    round_s: float  # each round's duration floor, per side, stored design
    pairs: int  # interleaved design: pairs of rounds
    pair_round_s: float  # interleaved design: each round's duration floor
    max_side_s: float  # a side never measures longer than this (all rounds together)


# A stored-baseline repetition costs two worker starts (~2.3 s each here: Python, scikit-learn,
# ONNX Runtime, the accuracy pass) on top of its measuring, so a side measures 1 s. An interleaved
# repetition is one worker start and 2 x 60 rounds of 40 ms: 4.8 s of measuring. Both stay within
# the 10 s of measuring per repetition. A digits_cnn round of 40 ms holds ~1,500 samples.
FULL = Plan(repetitions=40, rounds=10, round_s=0.1, pairs=60, pair_round_s=0.04, max_side_s=5.0)
QUICK = Plan(repetitions=8, rounds=10, round_s=0.1, pairs=60, pair_round_s=0.04, max_side_s=5.0)
HISTORY_SEED_RUNS = 5  # earlier sessions of A, so the store knows the run-to-run noise
HISTORY = 30  # as the plugin: the last 30 runs on this environment


# -- results -------------------------------------------------------------------------------------


@dataclass
class SideFigures:
    """What one side of a repetition measured, in seconds."""

    median_s: float
    mean_s: float
    count: int
    round_sizes: list[int]
    round_medians_s: list[float]
    worker_pid: int | None = None
    framework_version: str | None = None
    instructions: list[float] = field(default_factory=list)  # counted design: per call, per round


@dataclass
class OurVerdict:
    kind: str
    ratio: float | None
    ratio_low: float | None
    ratio_high: float | None
    threshold_applied: float | None
    noise: float | None


@dataclass
class Repetition:
    design: str
    index: int  # position in the design's schedule
    slowdown: float  # nominal; 0 is A/A
    started_s: float  # since the start of the experiment
    load_1m: float
    a: SideFigures
    b: SideFigures
    ratio: float  # median B / median A, raw samples
    flagged: dict[str, bool] = field(default_factory=dict)  # rule key -> flagged
    ours: dict[str, OurVerdict] = field(default_factory=dict)  # rule key -> our verdict
    pyperf_t: float | None = None  # pyperf t-score on equal counts
    pyperf_counts_differ: bool = False


def rule_keys() -> list[str]:
    return [*(our_key(t) for t in THRESHOLDS), "pytest_benchmark", "pyperf", "pyperf_equal"]


def our_key(threshold: float) -> str:
    return f"ours_{round(threshold * 100)}"


def rule_label(key: str, design: str) -> str:
    if key.startswith("ours_"):
        function = {"stored": "verdict", "counted": "count_verdict"}.get(design, "paired_verdict")
        default = " (default)" if key == our_key(0.05) else ""
        return f"ours, `{function}`, T = {key.removeprefix('ours_')} %{default}"
    if design == "counted":
        return {
            "pytest_benchmark": "pytest-benchmark's rule (median B / median A − 1 > 5 %), counts",
            "pyperf": "pyperf's `compare_to` rule (t-test, significant and slower) on the counts",
        }[key]
    return {
        "pytest_benchmark": "pytest-benchmark `--benchmark-compare-fail=median:5%`",
        "pyperf": "pyperf `compare_to` (significant, slower) on our export (quantiles per round)",
        "pyperf_equal": "pyperf t-test on equal counts (first n samples of each side)",
    }[key]


# -- the rules, all on the same samples ----------------------------------------------------------


def judge(
    repetition: Repetition,
    a_ns: np.ndarray,
    b_ns: np.ndarray,
    a_rounds: Sequence[int],
    b_rounds: Sequence[int],
    host: dict[str, Any],
    between_run_noise: float | None = None,
) -> None:
    """Every rule's decision on one repetition's samples, written into ``repetition``."""
    from pyperf._utils import is_significant

    from pytest_mlscope.compare import Side, paired_verdict, verdict

    for threshold in THRESHOLDS:
        if repetition.design == "stored":
            ours = verdict(
                Side(
                    samples_ns=a_ns.tolist(),
                    rounds=list(a_rounds),
                    host=host,
                    framework_version=repetition.a.framework_version,
                ),
                Side(
                    samples_ns=b_ns.tolist(),
                    rounds=list(b_rounds),
                    host=host,
                    framework_version=repetition.b.framework_version,
                ),
                threshold=threshold,
                between_run_noise=between_run_noise,
            )
        else:
            ours = paired_verdict(
                repetition.a.round_medians_s, repetition.b.round_medians_s, threshold=threshold
            )
        key = our_key(threshold)
        repetition.ours[key] = OurVerdict(
            ours.kind, ours.ratio, ours.ratio_low, ours.ratio_high, ours.threshold, ours.noise
        )
        repetition.flagged[key] = ours.kind == "regression"

    # pytest-benchmark's PercentageRegressionCheck: current / compared * 100 - 100 > 5.
    change = repetition.b.median_s / repetition.a.median_s - 1
    repetition.flagged["pytest_benchmark"] = change > PYTEST_BENCHMARK_FAIL

    # pyperf compare_to: ``is_significant_benchs`` calls ``is_significant`` on all values and
    # treats any exception as "significant"; its t-score refuses samples of different counts.
    # Row "pyperf" is compare_to on what ``mlscope export --format pyperf`` writes: each round as
    # PYPERF_VALUES_PER_RUN quantiles, so both sides have equal counts when their round counts
    # are equal. Row "pyperf_equal" is the t-test on the first n raw samples of each side.
    from pytest_mlscope.report.export import PYPERF_VALUES_PER_RUN, _quantiles

    def exported(samples: np.ndarray, rounds: Sequence[int]) -> list[float]:
        values = (samples / 1e9).tolist()
        out: list[float] = []
        begin = 0
        for size in rounds:
            if size:
                out.extend(_quantiles(values[begin : begin + size], PYPERF_VALUES_PER_RUN))
            begin += size
        return out

    a_x, b_x = exported(a_ns, a_rounds), exported(b_ns, b_rounds)
    slower = statistics.fmean(b_x) > statistics.fmean(a_x)
    try:
        significant, _ = is_significant(a_x, b_x)
    except Exception:  # as pyperf._compare.is_significant_benchs does
        significant = True
        repetition.pyperf_counts_differ = True
    repetition.flagged["pyperf"] = significant and slower
    a_s, b_s = (a_ns / 1e9).tolist(), (b_ns / 1e9).tolist()
    n = min(len(a_s), len(b_s))
    significant, t_score = is_significant(a_s[:n], b_s[:n])
    repetition.pyperf_t = float(t_score)
    repetition.flagged["pyperf_equal"] = significant and (
        statistics.fmean(b_s[:n]) > statistics.fmean(a_s[:n])
    )


def judge_counts(repetition: Repetition, between_run_noise: float | None = None) -> None:
    """Every rule's decision on one counted repetition's figures (instructions per call per
    round, both sides): ours, pytest-benchmark's 5 % median rule, and pyperf's t-test."""
    from pyperf._utils import is_significant

    from pytest_mlscope.compare import count_verdict

    a, b = repetition.a.instructions, repetition.b.instructions
    for threshold in THRESHOLDS:
        ours = count_verdict(a, b, threshold=threshold, between_run_noise=between_run_noise)
        key = our_key(threshold)
        repetition.ours[key] = OurVerdict(
            ours.kind, ours.ratio, ours.ratio_low, ours.ratio_high, ours.threshold, ours.noise
        )
        repetition.flagged[key] = ours.kind == "regression"
    repetition.flagged["pytest_benchmark"] = repetition.ratio - 1 > PYTEST_BENCHMARK_FAIL
    try:
        significant, t_score = is_significant(a, b)
        repetition.pyperf_t = float(t_score)
    except Exception:  # as pyperf._compare.is_significant_benchs does
        significant = True
    repetition.flagged["pyperf"] = significant and statistics.fmean(b) > statistics.fmean(a)


def side_figures(
    samples_ns: np.ndarray,
    rounds: Sequence[int],
    worker_pid: int | None = None,
    framework_version: str | None = None,
) -> SideFigures:
    from pytest_mlscope.stats import round_medians

    values = samples_ns / 1e9
    return SideFigures(
        median_s=float(np.median(values)),
        mean_s=float(values.mean()),
        count=int(values.size),
        round_sizes=list(rounds),
        round_medians_s=[float(x) for x in round_medians(samples_ns.tolist(), rounds)],
        worker_pid=worker_pid,
        framework_version=framework_version,
    )


# -- the model -----------------------------------------------------------------------------------


@dataclass
class Model:
    manifest: Any
    framework: str
    artifact: Any
    batch: np.ndarray
    warmup: int
    host: dict[str, Any]


def load_model(model: str, framework: str, cache_dir: Path) -> Model:
    from pytest_mlscope.data import prepare
    from pytest_mlscope.hardware import current_host
    from pytest_mlscope.manifest import load_manifest
    from pytest_mlscope.predictors import predictor_class
    from pytest_mlscope.zoo.cache import ArtifactCache

    manifest = load_manifest(REPO / "manifests" / f"{model}.yaml")
    formats = predictor_class(framework).formats
    artifact = ArtifactCache(cache_dir).for_framework(manifest, framework, formats)
    batch = prepare(manifest).batches(1)[0]
    return Model(
        manifest=manifest,
        framework=framework,
        artifact=artifact,
        batch=batch,
        warmup=manifest.performance.warmup,
        host=current_host().fingerprint(),
    )


# -- design 1: stored baseline, two fresh worker processes ---------------------------------------


def evaluate_in_fresh_worker(
    model: Model,
    measure: MeasureOptions,
    slowdown: float,
    work_dir: Path,
    interleave: bool,
    seed: int = 0,
) -> Any:
    """One measurement as a pytest-mlscope session takes it, in a worker started for it alone.

    With ``interleave``, the request is the one ``MlscopeSession`` sends for
    ``--mlscope-interleave`` with an injected slowdown: A is the item's own artifact, unslowed.
    """
    from pytest_mlscope.protocol import Cell, EvaluationRequest, Interleave, TimingPass
    from pytest_mlscope.runtimes.subprocess import SubprocessRuntime

    cell = Cell(model=model.manifest.name, framework=model.framework, device="cpu", batch_size=1)
    request = EvaluationRequest(
        cell=cell,
        manifest_path=str(model.manifest.path),
        artifact=model.artifact,
        measure=measure,
        work_dir=str(work_dir),
        checks=[],
        inject_slowdown=slowdown,
        pass_=TimingPass(
            interleave=Interleave(artifact=model.artifact, seed=seed) if interleave else None
        ),
    )
    runtime = SubprocessRuntime(work_dir=work_dir / "workers")
    try:
        return runtime.evaluate(request, timeout=300)
    finally:
        runtime.close()


def measure_in_fresh_worker(
    model: Model, plan: Plan, slowdown: float, work_dir: Path
) -> tuple[np.ndarray, list[int], int, str]:
    measure = MeasureOptions(
        warmup=model.warmup,
        min_count=plan.rounds * MIN_ROUND_SAMPLES,
        min_duration_s=plan.rounds * plan.round_s,
        max_duration_s=plan.max_side_s,
        rounds=plan.rounds,
    )
    result = evaluate_in_fresh_worker(model, measure, slowdown, work_dir, interleave=False)
    samples = np.asarray(result.samples_ns, dtype=np.int64)
    return samples, list(result.rounds), result.worker_pid, result.predictor.version


def count_in_fresh_worker(
    model: Model, slowdown: float, work_dir: Path, rounds: int = COUNT_ROUNDS
) -> SideFigures:
    """Instructions per call, one figure per round, from a worker started under callgrind.

    The worker reads the model's input from a file, as the plugin's count pass does (preparing
    the dataset under Valgrind would take longer than the counting)."""
    from pytest_mlscope import callgrind
    from pytest_mlscope.protocol import Cell, CountPass, EvaluationRequest
    from pytest_mlscope.runtimes.subprocess import SubprocessRuntime

    inputs = work_dir / "inputs.npz"
    if not inputs.exists():
        np.savez(inputs, model.batch)
    cell = Cell(model=model.manifest.name, framework=model.framework, device="cpu", batch_size=1)
    request = EvaluationRequest(
        cell=cell,
        manifest_path=str(model.manifest.path),
        artifact=model.artifact,
        measure=MeasureOptions(warmup=model.warmup),
        work_dir=str(work_dir),
        checks=[],
        inject_slowdown=slowdown,
        pass_=CountPass(rounds=rounds),
        inputs_path=str(inputs),
    )
    out = work_dir / "callgrind"
    out.mkdir(parents=True, exist_ok=True)
    runtime = SubprocessRuntime(
        work_dir=work_dir / "workers",
        launcher=callgrind.launcher(out),
        env=callgrind.environment(out),
    )
    try:
        result = runtime.evaluate(request, timeout=600)
    finally:
        runtime.close()
    return SideFigures(
        median_s=math.nan,
        mean_s=math.nan,
        count=len(result.instructions),
        round_sizes=[],
        round_medians_s=[],
        worker_pid=result.worker_pid,
        framework_version=result.predictor.version,
        instructions=list(result.instructions),
    )


def counted_processes(
    model: Model, slowdowns: Sequence[float], work_dir: Path
) -> list[SideFigures]:
    """One fresh worker under callgrind per entry of ``slowdowns``, two at a time (one per
    core): counts depend little on what else the machine does (under 1 % through a 75-minute run
    beside a CI run, where wall time moves tens of percent) and a worker under Valgrind takes
    about 30 s; the sides of one repetition run side by side, so a drift reaches both."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda f: count_in_fresh_worker(model, f, work_dir), slowdowns))


def stored_repetition(
    model: Model, plan: Plan, slowdown: float, work_dir: Path
) -> tuple[np.ndarray, list[int], np.ndarray, list[int], SideFigures, SideFigures]:
    a_ns, a_rounds, a_pid, a_version = measure_in_fresh_worker(model, plan, 0.0, work_dir)
    b_ns, b_rounds, b_pid, b_version = measure_in_fresh_worker(model, plan, slowdown, work_dir)
    return (
        a_ns,
        a_rounds,
        b_ns,
        b_rounds,
        side_figures(a_ns, a_rounds, a_pid, a_version),
        side_figures(b_ns, b_rounds, b_pid, b_version),
    )


# -- design 2: interleaved A/B, as --mlscope-interleave runs it ----------------------------------


def interleaved_repetition(
    model: Model, plan: Plan, slowdown: float, rng: random.Random, work_dir: Path
) -> tuple[np.ndarray, list[int], np.ndarray, list[int], SideFigures, SideFigures]:
    """One worker, started for this repetition, times A and B in alternating rounds."""
    measure = MeasureOptions(
        warmup=model.warmup,
        min_count=plan.pairs * MIN_ROUND_SAMPLES,
        min_duration_s=plan.pairs * plan.pair_round_s,
        max_duration_s=plan.max_side_s,
        rounds=plan.pairs,
    )
    result = evaluate_in_fresh_worker(
        model, measure, slowdown, work_dir, interleave=True, seed=rng.randrange(2**31)
    )
    a_ns = np.asarray(result.paired_samples_ns, dtype=np.int64)
    b_ns = np.asarray(result.samples_ns, dtype=np.int64)
    version = result.predictor.version
    return (
        a_ns,
        list(result.paired_rounds),
        b_ns,
        list(result.rounds),
        side_figures(a_ns, result.paired_rounds, result.worker_pid, version),
        side_figures(b_ns, result.rounds, result.worker_pid, version),
    )


# -- the experiment ------------------------------------------------------------------------------


def schedule(repetitions: int, rng: random.Random) -> list[float]:
    """Every condition ``repetitions`` times, shuffled."""
    order = [c for c in CONDITIONS for _ in range(repetitions)]
    rng.shuffle(order)
    return order


def run_design(
    design: str, model: Model, plan: Plan, rng: random.Random, start: float, work_dir: Path
) -> list[Repetition]:
    from pytest_mlscope.stats import between_run_noise

    results = []
    order = schedule(plan.repetitions, rng)
    history: list[float] = []  # stored medians of A, the baseline branch's runs
    if design == "stored":
        for index in range(HISTORY_SEED_RUNS):
            samples, _, _, _ = measure_in_fresh_worker(model, plan, 0.0, work_dir)
            history.append(float(np.median(samples)) / 1e9)
            _progress(
                f"[stored history {index + 1}/{HISTORY_SEED_RUNS}] A {_duration(history[-1])}"
            )
    if design == "counted":
        return run_counted(model, plan, rng, start, work_dir)
    for index, slowdown in enumerate(order):
        started = time.perf_counter() - start
        load = os.getloadavg()[0]
        noise = None
        if design == "stored":
            noise = between_run_noise(history[-HISTORY:])
            a_ns, a_rounds, b_ns, b_rounds, a, b = stored_repetition(
                model, plan, slowdown, work_dir
            )
            history.append(a.median_s)
        else:
            a_ns, a_rounds, b_ns, b_rounds, a, b = interleaved_repetition(
                model, plan, slowdown, rng, work_dir
            )
        repetition = Repetition(
            design=design,
            index=index,
            slowdown=slowdown,
            started_s=started,
            load_1m=load,
            a=a,
            b=b,
            ratio=b.median_s / a.median_s,
        )
        judge(repetition, a_ns, b_ns, a_rounds, b_rounds, model.host, noise)
        results.append(repetition)
        flagged = [k for k in rule_keys() if repetition.flagged[k]]
        _progress(
            f"[{design} {index + 1}/{len(order)} {time.perf_counter() - start:.0f} s] "
            f"{_condition(slowdown)}: A {_duration(a.median_s)}, B {_duration(b.median_s)} "
            f"({_pct(repetition.ratio - 1, 1, True)}); flagged by: {', '.join(flagged) or 'none'}"
        )
    return results


def run_counted(
    model: Model, plan: Plan, rng: random.Random, start: float, work_dir: Path
) -> list[Repetition]:
    """The stored-baseline design on instruction counts. Each repetition counts A (the baseline
    session) in one fresh worker and B for every condition, each in its own fresh worker: every
    condition's verdicts rest on 40 independent pairs of processes, and A is shared between the
    conditions of one repetition (5 workers per repetition instead of 8)."""
    from pytest_mlscope.stats import between_run_noise

    history: list[float] = []  # the baseline branch's stored medians, as the plugin keeps them
    for side in counted_processes(model, [0.0] * HISTORY_SEED_RUNS, work_dir):
        history.append(statistics.median(side.instructions))
    _progress(f"[counted history] A medians {', '.join(f'{h:.0f}' for h in history)}")
    results = []
    for index in range(plan.repetitions):
        started = time.perf_counter() - start
        load = os.getloadavg()[0]
        noise = between_run_noise(history[-HISTORY:])
        conditions = list(CONDITIONS)
        rng.shuffle(conditions)
        a, *bs = counted_processes(model, [0.0, *conditions], work_dir)
        history.append(statistics.median(a.instructions))
        line = []
        for slowdown, b in zip(conditions, bs, strict=True):
            ratio = statistics.median(b.instructions) / statistics.median(a.instructions)
            repetition = Repetition("counted", index, slowdown, started, load, a, b, ratio)
            judge_counts(repetition, noise)
            results.append(repetition)
            flagged = [k for k, v in repetition.flagged.items() if v]
            line.append(
                f"{_condition(slowdown)} {_pct(ratio - 1, 1, True)} "
                f"[{', '.join(flagged) or 'none'}]"
            )
        _progress(
            f"[counted {index + 1}/{plan.repetitions} {time.perf_counter() - start:.0f} s] "
            f"A {statistics.median(a.instructions):.0f} instructions per call; " + "; ".join(line)
        )
    return results


# -- report --------------------------------------------------------------------------------------


def machine(model: str, framework: str) -> dict[str, Any]:
    """The facts a reader needs to judge the figures (versions from metadata: nothing imported)."""
    from pytest_mlscope.hardware import current_host

    host = current_host()

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        "cpu_model": host.cpu_model,
        "physical_cores": host.physical_cores,
        "logical_cores": host.logical_cores,
        "memory_gb": host.memory_gb,
        "os": host.os,
        "python": platform.python_version(),
        "versions": {
            name: version(name)
            for name in (
                "pytest-mlscope",
                framework,
                "numpy",
                "scipy",
                "pyperf",
                "pytest-benchmark",
            )
        },
        "model": model,
        "framework": framework,
        "load_average_start": list(os.getloadavg()),
    }


def machine_line(facts: dict[str, Any]) -> str:
    load = ", ".join(f"{x:.2f}" for x in facts["load_average_start"])
    load_end = ", ".join(f"{x:.2f}" for x in facts["load_average_end"])
    versions = ", ".join(f"{k} {v}" for k, v in facts["versions"].items() if v)
    return (
        f"Machine: {facts['cpu_model']}, {facts['physical_cores']} cores "
        f"({facts['logical_cores']} logical), {facts['memory_gb']} GiB, {facts['os']}; "
        f"Python {facts['python']}, {versions}; load average {load} at start, {load_end} at end "
        f"(1-minute load seen at repetition starts: max {facts['load_1m_max']:.2f})"
    )


def _condition(slowdown: float) -> str:
    return "A/A" if slowdown == 0 else f"+{_pct(slowdown)}"


def _pct(value: float, digits: int = 0, sign: bool = False) -> str:
    """``5 %``, ``+1.7 %``: a fraction as a percentage, spaced as in the docs."""
    return f"{value * 100:{'+' if sign else ''}.{digits}f} %"


def _duration(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    return f"{seconds * 1e3:.2f} ms"


def _rate(hits: int, total: int) -> float:
    return hits / total if total else math.nan


def upper_bound_zero(n: int, confidence: float = 0.95) -> float:
    """One-sided upper confidence bound on a rate when 0 of n were seen (Clopper–Pearson)."""
    return 1 - (1 - confidence) ** (1 / n) if n else math.nan


def table(design: str, repetitions: Sequence[Repetition]) -> str:
    by_condition = {c: [r for r in repetitions if r.slowdown == c] for c in CONDITIONS}
    header = ["rule"]
    for condition, reps in by_condition.items():
        realized = statistics.median(r.ratio for r in reps) - 1 if reps else math.nan
        if condition == 0:
            header.append(f"A/A false alarms (median B/A {_pct(realized, 1, True)})")
        else:
            header.append(f"{_pct(condition)} caught (realized {_pct(realized, 1, True)})")
    header.append("targets")
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * len(CONDITIONS) + "---|"]
    present = [k for k in rule_keys() if repetitions and k in repetitions[0].flagged]
    for key in present:
        cells = [rule_label(key, design)]
        missed = []
        for condition, reps in by_condition.items():
            hits = sum(r.flagged[key] for r in reps)
            rate = _rate(hits, len(reps))
            text = f"{_pct(rate)} ({hits}/{len(reps)})"
            if condition == 0:
                ok = rate <= MAX_FALSE_ALARMS
                text += " ✓" if ok else " ✗"
                if not ok:
                    missed.append("A/A")
            elif condition in MIN_CAUGHT:
                ok = rate >= MIN_CAUGHT[condition]
                text += " ✓" if ok else " ✗"
                if not ok:
                    missed.append(_pct(condition))
            cells.append(text)
        cells.append("**meets**" if not missed else "misses " + ", ".join(missed))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(design: str, repetitions: Sequence[Repetition]) -> list[str]:
    """The figures behind the table: the A/A noise and what our default rule said."""
    lines = []
    aa = [r for r in repetitions if r.slowdown == 0]
    if aa:
        ratios = np.array([r.ratio - 1 for r in aa])
        low, high = np.percentile(ratios, [5, 95])
        lines.append(
            f"A/A: B/A ratio of medians from {_pct(ratios.min(), 1, True)} to "
            f"{_pct(ratios.max(), 1, True)} (90 % of repetitions within {_pct(low, 1, True)} .. "
            f"{_pct(high, 1, True)})."
        )
    for threshold in (0.05, 0.01):
        key = our_key(threshold)
        for condition in CONDITIONS:
            reps = [r for r in repetitions if r.slowdown == condition]
            if not reps:
                continue
            kinds: dict[str, int] = {}
            for r in reps:
                kinds[r.ours[key].kind] = kinds.get(r.ours[key].kind, 0) + 1
            applied = [r.ours[key].threshold_applied or threshold for r in reps]
            noise = [r.ours[key].noise or 0.0 for r in reps]
            raised = sum(1 for a in applied if a > threshold + 1e-12)
            widths = [(r.ours[key].ratio_high or 1) - (r.ours[key].ratio_low or 1) for r in reps]
            lines.append(
                f"ours T = {_pct(threshold)} on {_condition(condition)}: "
                + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
                + f"; interval width median {_pct(statistics.median(widths), 1)}; round noise "
                f"median {_pct(statistics.median(noise), 1)}; threshold raised by the "
                f"run-to-run noise in {raised}/{len(reps)} (applied median "
                f"{_pct(statistics.median(applied), 1)})."
            )
    if any(r.pyperf_counts_differ for r in repetitions):
        count = sum(r.pyperf_counts_differ for r in repetitions)
        lines.append(
            f"pyperf: the two sides had different sample counts in {count}/{len(repetitions)} "
            "repetitions; pyperf's t-score raises ValueError on that and compare_to counts it "
            "as significant."
        )
    return lines


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- main ----------------------------------------------------------------------------------------


def _repetition(data: dict[str, Any]) -> Repetition:
    data = dict(data)
    data["a"], data["b"] = SideFigures(**data["a"]), SideFigures(**data["b"])
    data["ours"] = {k: OurVerdict(**v) for k, v in data["ours"].items()}
    return Repetition(**data)


def print_saved(paths: Sequence[Path]) -> int:
    """The tables of saved runs, repetitions pooled per design; each run's facts first."""
    pooled: dict[str, list[Repetition]] = {}
    for path in paths:
        document = json.loads(path.read_text())
        print(
            f"{path.name}: seed {document['seed']}, {document['wall_s']:.0f} s; "
            + machine_line(document["machine"])
        )
        for data in document["repetitions"]:
            repetition = _repetition(data)
            pooled.setdefault(repetition.design, []).append(repetition)
    for index, (design, repetitions) in enumerate(pooled.items(), 1):
        n = sum(1 for r in repetitions if r.slowdown == 0)
        print()
        print(f"### {index}. {DESIGNS[design]} ({n} repetitions per condition)")
        print()
        print(table(design, repetitions))
        print()
        for line in notes(design, repetitions):
            print(f"- {line}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 repetitions (smoke run)")
    parser.add_argument("--json", metavar="PATH", type=Path, help="write per-repetition figures")
    parser.add_argument("--model", choices=("digits_cnn", "alexnet"), default="digits_cnn")
    parser.add_argument("--framework", choices=("onnxruntime", "torch"), default="onnxruntime")
    parser.add_argument("--seed", type=int, default=1, help="seed of the condition order")
    parser.add_argument(
        "--design",
        choices=("both", *DESIGNS),
        default="both",
        help="run one design only (default: both time designs; 'counted' needs Valgrind)",
    )
    parser.add_argument("--repetitions", type=int, help="per condition and design")
    parser.add_argument("--rounds", type=int, help="rounds per side, stored design")
    parser.add_argument("--round-seconds", type=float, help="duration floor of one stored round")
    parser.add_argument("--pairs", type=int, help="pairs of rounds, interleaved design")
    parser.add_argument(
        "--pair-round-seconds", type=float, help="duration floor of one interleaved round"
    )
    parser.add_argument(
        "--cache",
        metavar="DIR",
        type=Path,
        default=Path(os.environ.get("MLSCOPE_CACHE") or DEFAULT_CACHE),
        help="artifact cache (default: $MLSCOPE_CACHE, else .mlscope/artifacts in the repository)",
    )
    parser.add_argument(
        "--tables-from",
        metavar="JSON",
        type=Path,
        nargs="+",
        help="measure nothing: print the tables of earlier runs' --json files, their "
        "repetitions pooled per design (two runs of 20 read as one of 40)",
    )
    args = parser.parse_args(argv)
    if args.tables_from:
        return print_saved(args.tables_from)
    plan = QUICK if args.quick else FULL
    plan = Plan(
        repetitions=args.repetitions or plan.repetitions,
        rounds=args.rounds or plan.rounds,
        round_s=args.round_seconds or plan.round_s,
        pairs=args.pairs or plan.pairs,
        pair_round_s=args.pair_round_seconds or plan.pair_round_s,
        max_side_s=plan.max_side_s,
    )
    designs = ["stored", "interleaved"] if args.design == "both" else [args.design]

    start = time.perf_counter()
    facts = machine(args.model, args.framework)
    model = load_model(args.model, args.framework, args.cache)
    rng = random.Random(args.seed)
    results: dict[str, list[Repetition]] = {}
    with tempfile.TemporaryDirectory(prefix="mlscope-verdicts-") as work_dir:
        for design in designs:
            results[design] = run_design(design, model, plan, rng, start, Path(work_dir))
    facts["load_average_end"] = list(os.getloadavg())
    all_reps = [r for reps in results.values() for r in reps]
    facts["load_1m_max"] = max(r.load_1m for r in all_reps)
    wall_s = time.perf_counter() - start

    print(machine_line(facts))
    print(
        f"Plan: {'quick' if args.quick else 'full'}; {args.model} bs1 on {args.framework}; "
        f"{plan.repetitions} repetitions per condition and design, conditions in random order "
        f"(seed {args.seed}); stored: each side {plan.rounds} rounds × {plan.round_s:g} s, "
        f"run-to-run noise from the last {HISTORY} stored A runs (after {HISTORY_SEED_RUNS} "
        f"seed runs); interleaved: {plan.pairs} pairs of {plan.pair_round_s:g} s rounds; "
        f"counted: {COUNT_ROUNDS} rounds of about {ROUND_INSTRUCTIONS / 1e6:g}M instructions per "
        f"side, run-to-run noise from the stored A medians (after {HISTORY_SEED_RUNS} seed "
        f"runs); wall time {wall_s:.0f} s"
    )
    n = plan.repetitions
    print(
        f"Targets: A/A false alarms ≤ {_pct(MAX_FALSE_ALARMS)}; 5 % caught ≥ "
        f"{_pct(MIN_CAUGHT[0.05])}; 3 % caught ≥ {_pct(MIN_CAUGHT[0.03])} (✓ meets, ✗ misses). "
        f"With {n} A/A repetitions only 0/{n} meets ≤ 1 %, and 0/{n} still allows a rate up to "
        f"{_pct(upper_bound_zero(n), 1)} (95 % upper bound)."
    )
    for index, design in enumerate(designs, 1):
        print()
        print(f"### {index}. {DESIGNS[design]}")
        print()
        print(table(design, results[design]))
        print()
        for line in notes(design, results[design]):
            print(f"- {line}")

    if args.json:
        document = {
            "version": JSON_VERSION,
            "quick": args.quick,
            "seed": args.seed,
            "plan": asdict(plan),
            "machine": facts,
            "wall_s": wall_s,
            "conditions": list(CONDITIONS),
            "thresholds": list(THRESHOLDS),
            "repetitions": [asdict(r) for r in all_reps],
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

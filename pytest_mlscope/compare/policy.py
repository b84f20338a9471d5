"""The policy: which design decides an item (``verdict``), and comparisons of whole stored
runs (``compare_runs``) with the sides and noise they are built from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from pytest_mlscope.compare.generation import with_generation
from pytest_mlscope.compare.memory import MEMORY_THRESHOLD, with_memory
from pytest_mlscope.compare.rules import (
    DEFAULT_ALPHA,
    DEFAULT_THRESHOLD,
    Gate,
    count_verdict,
    latency_verdict,
    paired_verdict,
)
from pytest_mlscope.compare.verdicts import (
    ACCURACY_TOLERANCE,
    Side,
    Verdict,
    accuracy_changes,
    host_differences,
)
from pytest_mlscope.stats import round_medians


def _accuracy_regression(baseline: Side, current: Side, tolerance: float) -> Verdict | None:
    """Accuracy lost against the baseline is a regression, always, whatever the hardware."""
    lost = accuracy_changes(baseline.accuracy, current.accuracy, tolerance)
    if not lost:
        return None
    return Verdict(
        "regression",
        "accuracy: " + "; ".join(lost),
        accuracy_changes=lost,
        baseline_run=baseline.run_id,
    )


def verdict(
    baseline: Side | None,
    current: Side,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    comparisons: int = 1,
    alpha: float = DEFAULT_ALPHA,
    accuracy_tolerance: float = ACCURACY_TOLERANCE,
    framework: str = "framework",
    between_run_noise: float | None = None,
    noise_runs: int | None = None,
    count_noise: float | None = None,
    memory_threshold: float = MEMORY_THRESHOLD,
) -> Verdict:
    """The verdict for one item: the one policy the session, ``mlscope compare`` and the report
    all apply. ``comparisons`` is how many items the session compares (the family-wise
    correction); ``between_run_noise`` and ``count_noise`` are the item's spread across
    comparable stored runs (``noise_runs`` of them), None when too few are stored.

    Order of decisions: no baseline (and no A side timed beside) → ``new``; accuracy lost →
    ``regression``; latency on the pairs when the item was interleaved (the environment is the
    same by construction), else ``incomparable`` on another environment, else the stored
    design; instructions decide instead when both sides were counted on one environment, with
    latency's verdict kept beside them. A generate item's time to first token and time per
    output token are judged on the pairs as well (``compare.generation``): a phase's
    regression makes the item's. Last, the model's memory against the baseline's
    (``compare.memory``): more than ``memory_threshold`` more makes any of those but
    ``incomparable`` a regression, and the change is named in every verdict that has both
    figures.
    """
    unpaired = _pairs_of_another_model(baseline, current)
    if unpaired:
        current = replace(current, paired_samples_ns=(), paired_rounds=(), paired_workers=())
    found = _time_or_work(
        baseline,
        current,
        Gate(threshold, comparisons, alpha, between_run_noise, noise_runs),
        accuracy_tolerance=accuracy_tolerance,
        framework=framework,
        count_noise=count_noise,
    )
    if unpaired:
        found = replace(found, reason=f"{found.reason} ({unpaired})")
    found = with_generation(
        found, current, threshold=threshold, comparisons=comparisons, alpha=alpha
    )
    found = replace(found, memory_threshold=memory_threshold)
    if found.kind == "new" or baseline is None:
        return found
    return with_memory(found, baseline, current, memory_threshold)


def _pairs_of_another_model(baseline: Side | None, current: Side) -> str:
    """Why ``current``'s interleaved pairs cannot judge it against ``baseline`` (empty when
    they can): they timed it beside another model than the baseline's, as when ``mlscope
    compare`` is given another run than the one the session compared with. A result or a
    baseline that does not say which file it was (stored before that was kept) is taken at
    its word."""
    if baseline is None or not current.paired_samples_ns:
        return ""
    theirs, paired = baseline.artifact_sha256, current.paired_artifact_sha256
    if not theirs or not paired or theirs == paired:
        return ""
    return (
        f"not on the pairs stored with this result: they timed it beside another model "
        f"(sha256 {paired[:12]}) than this baseline's ({theirs[:12]})"
    )


def _time_or_work(
    baseline: Side | None,
    current: Side,
    gate: Gate,
    *,
    accuracy_tolerance: float,
    framework: str,
    count_noise: float | None,
) -> Verdict:
    """Every decision but memory's, in the order ``verdict`` gives; ``count_noise`` stands for
    the gate's run-to-run noise when instructions decide."""
    comparisons = gate.comparisons
    interleaved = bool(current.paired_samples_ns)
    if baseline is None and not interleaved:
        return Verdict("new", "no baseline result for this item", comparisons=comparisons)
    if baseline is not None:
        lost = _accuracy_regression(baseline, current, accuracy_tolerance)
        if lost is not None:
            return replace(lost, comparisons=comparisons)
    differences = (
        host_differences(
            baseline.host,
            current.host,
            baseline.framework_version,
            current.framework_version,
            framework,
        )
        if baseline is not None
        else []
    )
    latency: Verdict | None = None
    if interleaved:
        latency = _interleaved_latency(baseline, current, gate)
    elif differences:
        return Verdict(
            "incomparable",
            "different environment: " + "; ".join(differences),
            differences=differences,
            baseline_run=baseline.run_id if baseline else None,
            comparisons=comparisons,
        )
    elif baseline is not None and baseline.samples_ns and current.samples_ns:
        latency = latency_verdict(baseline, current, **asdict(gate))
    if (
        baseline is not None
        and baseline.instructions
        and current.instructions
        and not (differences)
    ):
        # Both sides counted: work, which a shared machine's drift does not move, decides.
        found = count_verdict(
            baseline.instructions,
            current.instructions,
            **asdict(replace(gate, between_run_noise=count_noise)),
            baseline_run=baseline.run_id,
        )
        reached = "" if found.confidence is None else f" (reached {found.confidence:.1%})"
        return replace(
            found,
            reason=f"instructions per call{reached}: {found.reason}",
            latency=latency.describe() if latency is not None else None,
            comparisons=comparisons,
        )
    if latency is None:
        which = "the baseline" if baseline is not None and not baseline.samples_ns else "this run"
        return Verdict(
            "new",
            f"no timing samples on {which}",
            baseline_run=baseline.run_id if baseline else None,
            comparisons=comparisons,
        )
    return replace(latency, comparisons=comparisons)


def _interleaved_latency(baseline: Side | None, current: Side, gate: Gate) -> Verdict:
    """Latency on the pairs of an item timed beside its A side (the baseline's model); pairing
    needs no run-to-run noise, so the gate's is not used."""
    from pytest_mlscope.measure import LOOKS

    a = round_medians(current.paired_samples_ns, current.paired_rounds)
    b = round_medians(current.samples_ns, current.rounds)
    if a.size < 2 or a.size != b.size:
        return Verdict("new", "interleaved timing gave no pairs of rounds to compare")
    if current.paired_workers and len(current.paired_workers) != a.size:
        return Verdict(
            "inconclusive",
            f"interleaved, but the result names the workers of {len(current.paired_workers)} "
            f"pairs for {a.size} pairs of rounds (an edited or damaged row): without which "
            "processes timed each pair, their own speeds cannot be told from a change",
        )
    found = paired_verdict(
        a,
        b,
        threshold=gate.threshold,
        comparisons=gate.comparisons,
        alpha=gate.alpha,
        looks=LOOKS,
        baseline_run=baseline.run_id if baseline else None,
        workers=current.paired_workers,
    )
    note = f"{found.pairs} pairs of rounds"
    if found.kind == "inconclusive":
        note += " (the item's timing budget ran out)"
    versions = (current.paired_version, current.framework_version)
    if current.paired_version and versions[0] != versions[1]:
        note += f", A on {versions[0]}, B on {versions[1]}"
    return replace(found, reason=f"interleaved, {note}: {found.reason}")


def environment(host: Mapping[str, Any], predictor: Any) -> dict[str, Any]:
    """The host's fingerprint, plus the container image a result was computed in, if any: two
    images are two software stacks even on one machine."""
    details = getattr(predictor, "details", None) or {}
    container = details.get("container") or {}
    found = dict(host)
    if container.get("image_id"):
        found["container_image"] = f"{container.get('image')} ({container['image_id'][7:19]})"
    return found


def side_of(record: Any, host: Mapping[str, Any], run_id: str | None = None) -> Side:
    """A stored result (a ``store.ResultRecord``) as one side of a comparison."""
    paired = getattr(record, "paired_predictor", None)
    return Side(
        samples_ns=record.samples_ns,
        rounds=record.rounds,
        accuracy=record.accuracy,
        host=environment(host, getattr(record, "predictor", None)),
        framework_version=record.framework_version,
        run_id=run_id,
        artifact_sha256=getattr(record, "artifact_sha256", None),
        layers=list(getattr(record, "layers", None) or []),
        instructions=list(getattr(record, "instructions", None) or []),
        paired_samples_ns=list(getattr(record, "paired_samples_ns", None) or []),
        paired_rounds=list(getattr(record, "paired_rounds", None) or []),
        paired_version=getattr(paired, "version", None) if paired is not None else None,
        paired_artifact_sha256=getattr(record, "paired_artifact_sha256", None),
        paired_workers=list(getattr(record, "paired_workers", None) or []),
        memory=record.memory.model if getattr(record, "memory", None) is not None else None,
        device_memory=(
            record.memory.device_peak if getattr(record, "memory", None) is not None else None
        ),
        generation=getattr(record, "generation", None),
    )


def run_sides(records: Mapping[str, Any], host: Mapping[str, Any], run_id: str) -> dict[str, Side]:
    """A stored run's results (item -> ``store.ResultRecord``) as comparison sides; items that
    measured nothing (skipped, errors before the worker answered) are left out."""
    return {
        item: side_of(record, host, run_id)
        for item, record in records.items()
        if record.samples_ns or record.accuracy or getattr(record, "instructions", None)
    }


@dataclass(frozen=True)
class Noise:
    """An item's spread across comparable stored runs, for the stored and counted designs."""

    latency: float | None = None
    instructions: float | None = None
    runs: int = 0


def compare_runs(
    baseline: Mapping[str, Side],
    current: Mapping[str, Side],
    *,
    threshold: float | None = None,
    memory_threshold: float | None = None,
    alpha: float = DEFAULT_ALPHA,
    ignore_environment: bool = False,
    noise: Mapping[str, Noise] | None = None,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Verdict]:
    """Verdicts for every item of ``current`` (by item id), against ``baseline``: ``verdict``
    for each, so a stored run compared later says what its session said.

    ``settings`` are what each item's session judged with (its stored verdict's threshold and
    comparisons); ``threshold`` and ``memory_threshold`` override them, else the defaults
    apply. ``noise`` is each
    item's run-to-run spread from runs stored before ``current``. ``ignore_environment``
    compares latencies across different environments anyway: the A/B of two framework versions
    or two machines that a user asked for explicitly.
    """
    compared = max(1, sum(1 for item in current if item in baseline))
    verdicts = {}
    for item, side in current.items():
        base = baseline.get(item)
        if ignore_environment and base is not None:
            side = replace(side, host=base.host, framework_version=base.framework_version)
        used = (settings or {}).get(item) or {}
        known = (noise or {}).get(item, Noise())
        framework = item.partition("[")[2].partition("-")[0] or "framework"
        verdicts[item] = verdict(
            base,
            side,
            threshold=threshold or used.get("threshold") or DEFAULT_THRESHOLD,
            comparisons=int(used.get("comparisons") or compared),
            alpha=alpha,
            framework=framework,
            between_run_noise=known.latency,
            noise_runs=known.runs,
            count_noise=known.instructions,
            memory_threshold=memory_threshold or used.get("memory_threshold") or MEMORY_THRESHOLD,
        )
    return verdicts

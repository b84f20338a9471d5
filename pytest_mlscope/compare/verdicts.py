"""What a comparison is made of and gives: the two sides, the verdict, and the differences
(environment, accuracy) that are named in one."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pytest_mlscope.protocol import AccuracyReport

VerdictKind = Literal["ok", "regression", "improvement", "inconclusive", "incomparable", "new"]

# Top-1/top-5 may drop by this much (absolute) before it counts as an accuracy regression:
# one flipped sample in a few hundred is numerical noise across builds, not a model change.
ACCURACY_TOLERANCE = 0.005
# Host facts whose difference makes latencies incomparable.
MATERIAL_HOST_FACTS = (
    ("arch", "architecture"),
    ("cpu_model", "CPU model"),
    ("physical_cores", "physical cores"),
    ("container_image", "container image"),
)


@dataclass(frozen=True)
class Side:
    """One side of a comparison: what a stored or fresh result says about an item."""

    samples_ns: Sequence[int]
    rounds: Sequence[int] = ()
    accuracy: AccuracyReport | None = None
    host: Mapping[str, Any] = field(default_factory=dict)
    framework_version: str | None = None
    run_id: str | None = None
    artifact_sha256: str | None = None
    layers: Sequence[Any] = ()  # the layer table (protocol.LayerRow), when the side was traced
    instructions: Sequence[float] = ()  # per call, per round, when the side was counted
    # Interleaved: the A side's samples and rounds, timed beside this one (round i of each is
    # pair i), and what A was (its framework version, its artifact).
    paired_samples_ns: Sequence[int] = ()
    paired_rounds: Sequence[int] = ()
    paired_version: str | None = None
    paired_artifact_sha256: str | None = None
    paired_workers: Sequence[Sequence[int]] = ()  # per pair, (A's worker, B's worker)
    memory: int | None = None  # bytes: the model's peak above its worker's (MemoryUse.model)
    device_memory: int | None = None  # bytes: the framework allocator's peak on the GPU
    # A generate item's per-generation figures (protocol.GenerationSummary), both sides'
    # when interleaved: its time to first token and per output token are judged apart.
    generation: Any = None


@dataclass(frozen=True)
class Verdict:
    kind: VerdictKind
    reason: str
    baseline_median: float | None = None
    current_median: float | None = None
    ratio: float | None = None  # current / baseline, Hodges–Lehmann on round medians
    ratio_low: float | None = None
    ratio_high: float | None = None
    confidence: float | None = None
    threshold: float | None = None  # the one applied: max(configured, run-to-run noise)
    noise: float | None = None  # relative spread of round medians (robust SD)
    between_run_noise: float | None = None  # the item's spread across stored runs, if known
    detectable: float | None = None  # smallest slowdown this data could have flagged
    p_value: float | None = None  # Mann–Whitney U, current slower, raw samples (informational)
    differences: list[str] = field(default_factory=list)
    accuracy_changes: list[str] = field(default_factory=list)
    layer_changes: list[str] = field(default_factory=list)  # slowest movers, when both traced
    baseline_run: str | None = None
    design: str | None = None  # "stored" (unpaired) or "interleaved" (paired rounds)
    pairs: int | None = None  # interleaved: pairs of rounds the decision rests on
    # design "instructions": the medians are instructions per call, not seconds
    baseline_instructions: float | None = None
    current_instructions: float | None = None
    # When instructions decided: what latency said beside them (kind, change, reason).
    latency: str | None = None
    comparisons: int | None = None  # items the session compared (the family-wise correction)
    # The model's memory (bytes) on each side and how it moved (compare.memory), when both
    # measured it; a memory regression fails the item whatever its latency says.
    baseline_memory: int | None = None
    current_memory: int | None = None
    memory_threshold: float | None = None
    memory: str | None = None
    # The same for the framework allocator's peak on the GPU (MemoryUse.device_peak).
    baseline_device_memory: int | None = None
    current_device_memory: int | None = None
    device_memory: str | None = None
    # "memory" when the memory rule made the kind (latency alone did not): the change column
    # shows memory's, and latency's per-layer movers and load suspicions are not added.
    decided_by: str | None = None
    # Over a sweep of sequence lengths, on the item that completed it: how the exponent of L
    # moved (compare.scaling.Scaling, as a dict); decided_by "scaling" when it made the kind.
    scaling: dict[str, Any] | None = None
    # A generate item's phases (compare.generation.PHASES -> kind, ratio, interval, change),
    # judged on the pairs as latency is; decided_by names the phase when one made the kind.
    generation: dict[str, Any] | None = None

    @property
    def ratio_text(self) -> str:
        """``+7.1% [+4.2%, +9.9%]``: the change in the median and its interval."""
        if self.ratio is None:
            return ""
        text = f"{self.ratio - 1:+.1%}"
        if self.ratio_low is not None and self.ratio_high is not None:
            text += f" [{self.ratio_low - 1:+.1%}, {self.ratio_high - 1:+.1%}]"
        return text

    @property
    def fails(self) -> bool:
        return self.kind == "regression"

    @property
    def change_text(self) -> str:
        """The change that decided: latency's interval, or memory's when memory decided."""
        if self.decided_by == "memory" and self.baseline_memory and self.current_memory:
            return f"memory {self.current_memory / self.baseline_memory - 1:+.1%}"
        if self.decided_by == "device_memory" and self.baseline_device_memory:
            change = (self.current_device_memory or 0) / self.baseline_device_memory - 1
            return f"device memory {change:+.1%}"
        if self.decided_by == "scaling" and self.scaling:
            memory = self.scaling.get("memory") or {}
            if self.scaling["kind"] != "regression" and memory.get("kind") == "regression":
                return f"memory exponent {memory['change']:+.2f}"
            return f"exponent {self.scaling['change']:+.2f}"
        if self.generation and self.decided_by in self.generation:
            return f"{self.decided_by.upper()} {self.generation[self.decided_by]['change']}"
        return self.ratio_text

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio_text"] = self.change_text
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in data.items()}

    def describe(self) -> str:
        text = f"{self.kind}"
        if self.change_text:
            text += f" {self.change_text}"
        return f"{text}: {self.reason}"


def host_differences(
    baseline: Mapping[str, Any],
    current: Mapping[str, Any],
    baseline_framework: str | None = None,
    current_framework: str | None = None,
    framework: str = "framework",
) -> list[str]:
    """What differs between two environments in ways that move latency, each named."""
    differences = []
    for key, label in MATERIAL_HOST_FACTS:
        before, after = baseline.get(key), current.get(key)
        if before != after and (before is not None or after is not None):
            differences.append(f"{label}: {before!r} (baseline) vs {after!r} (now)")
    gpus_before = [g.get("name") for g in baseline.get("gpus", []) or []]
    gpus_after = [g.get("name") for g in current.get("gpus", []) or []]
    if gpus_before != gpus_after:
        differences.append(
            f"GPUs: {gpus_before or 'none'} (baseline) vs {gpus_after or 'none'} (now)"
        )
    if baseline_framework and current_framework and baseline_framework != current_framework:
        differences.append(
            f"{framework} version: {baseline_framework} (baseline) vs {current_framework} (now)"
        )
    return differences


def accuracy_changes(
    baseline: AccuracyReport | None, current: AccuracyReport | None, tolerance: float
) -> list[str]:
    """Accuracy the baseline had and the current result lost."""
    if baseline is None or current is None:
        return []
    changes = []
    for check in baseline.checks:
        now = current.check(check.name)
        if check.passed and now is not None and not now.passed:
            changes.append(f"{check.name} passed in the baseline and fails now ({now.detail})")
    for name in ("top1", "top5"):
        before, after = getattr(baseline, name), getattr(current, name)
        if before is not None and after is not None and before - after > tolerance:
            changes.append(
                f"{name} {before:.4f} -> {after:.4f} ({(after - before) * 100:+.2f} points, "
                f"tolerance {tolerance * 100:.2f})"
            )
    return changes

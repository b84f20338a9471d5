"""The memory rule: a model that takes more memory than its baseline did, by more than its own
threshold, is a regression, whatever its latency says.

Memory is judged on one figure per side, the model's peak resident memory above what its worker
held before loading it (``protocol.MemoryUse.model``), without an interval: unlike time it does
not drift with the machine's load, and what moves it between two runs of one model is the
allocators' granularity (arenas, pages, a framework's pools), a few MiB at most. So a change
counts only when it is both larger than the threshold (a fraction of the baseline) and larger
than ``MEMORY_FLOOR``, which keeps a small model's allocator noise (1 MiB of 3 is +33 %) from
failing it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pytest_mlscope.compare.verdicts import Side, Verdict, VerdictKind

MEMORY_THRESHOLD = 0.10  # the default: 10 % more memory than the baseline's fails the item
MEMORY_FLOOR = 8 * 2**20  # bytes: smaller changes are never a finding


@dataclass(frozen=True)
class MemoryChange:
    kind: VerdictKind  # regression, improvement or ok
    baseline: int
    current: int
    threshold: float
    label: str = "memory"  # or "device memory": the framework allocator's peak on the GPU

    @property
    def ratio(self) -> float:
        return self.current / self.baseline if self.baseline > 0 else float("inf")

    def describe(self) -> str:
        change = f"{self.ratio - 1:+.1%}" if self.baseline > 0 else "from nothing"
        text = f"{self.label} {mib(self.baseline)} -> {mib(self.current)} ({change})"
        if self.kind == "regression":
            return f"{text}, more than the {self.threshold:.0%} allowed"
        return text


def mib(size: float) -> str:
    return f"{size / 2**20:.1f} MiB"


def memory_change(
    baseline: int | None,
    current: int | None,
    threshold: float = MEMORY_THRESHOLD,
    label: str = "memory",
) -> MemoryChange | None:
    """How the model's memory moved; None when either side did not measure it."""
    if baseline is None or current is None:
        return None
    grew = current - baseline
    if grew > MEMORY_FLOOR and grew > threshold * baseline:
        kind: VerdictKind = "regression"
    elif -grew > MEMORY_FLOOR and -grew > threshold * baseline:
        kind = "improvement"
    else:
        kind = "ok"
    return MemoryChange(kind, baseline, current, threshold, label)


def with_memory(found: Verdict, baseline: Side, current: Side, threshold: float) -> Verdict:
    """``found`` judged on memory as well: the model's resident peak, then (GPU items whose
    framework keeps one) its allocator's peak on the device, each by the same rule; either's
    regression fails the item unless another environment makes it ``incomparable``."""
    found = _with_one(found, baseline.memory, current.memory, threshold, "memory")
    return _with_one(
        found, baseline.device_memory, current.device_memory, threshold, "device memory"
    )


def _with_one(
    found: Verdict, before: int | None, after: int | None, threshold: float, label: str
) -> Verdict:
    device = label == "device memory"
    change = memory_change(before, after, threshold, label)
    if change is None:
        if (before is None) != (after is None):
            which = "the baseline's result" if before is None else "this result"
            said = f"{label} not compared: {which} has no figure"
            return replace(found, device_memory=said) if device else replace(found, memory=said)
        return found
    if device:
        found = replace(
            found,
            baseline_device_memory=change.baseline,
            current_device_memory=change.current,
            device_memory=change.describe(),
        )
    else:
        found = replace(
            found,
            baseline_memory=change.baseline,
            current_memory=change.current,
            memory=change.describe(),
        )
    # Another environment (CPU, framework release, image) moves memory as it moves time: named,
    # never judged, as latency is not.
    if change.kind != "regression" or found.kind == "incomparable":
        return found
    if found.kind == "regression":
        return replace(found, reason=f"{found.reason}; {change.describe()}")
    return replace(
        found,
        kind="regression",
        reason=f"{change.describe()} (latency: {found.describe()})",
        decided_by="device_memory" if device else "memory",
    )

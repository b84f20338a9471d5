"""What the machine did while an item was timed: CPU load, memory, clocks, energy where a counter
can be read, and on GPUs NVML's utilization and throttle reasons.

Energy is read from counters only: the CPU packages' RAPL counters (``/sys/class/powercap``,
often readable by root alone) and NVML's per-GPU total. Where neither can be read, as on most
virtual machines, the item says "not measurable here"; a TDP times the time is an estimate of
what a machine could draw, not a measurement of what it drew, and is never offered as one.

Readings are taken at the edges of the timing window only, never by a sampling thread inside it:
a thread waking up during the timing pass would be noise of our own making. What a window shows
is for reading a verdict: a GPU that throttled for heat or power during the timing pass, or a CPU
that other processes kept busy, makes a slowdown suspect rather than a finding.
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from pathlib import Path
from typing import Any

# NVML clock event ("throttle") reasons that mean the GPU ran slower than it could, by bit.
THROTTLE_REASONS = {
    0x0000000000000002: "applications clocks setting",
    0x0000000000000004: "software power cap",
    0x0000000000000008: "hardware slowdown",
    0x0000000000000020: "software thermal slowdown",
    0x0000000000000040: "hardware thermal slowdown",
    0x0000000000000080: "hardware power brake",
}
BUSY_NEIGHBOURS = 0.5  # other processes' share of one core, averaged, that makes timings suspect
POWERCAP = "/sys/class/powercap"  # MLSCOPE_POWERCAP names another root (a container's mount)


def rapl_packages(root: str | None = None) -> list[Path]:
    """The RAPL zones of whole CPU packages (``intel-rapl:0``; AMD's register under the same
    name), not their sub-zones (cores, uncore, DRAM), which the package's count includes."""
    base = Path(root or os.environ.get("MLSCOPE_POWERCAP") or POWERCAP)
    with contextlib.suppress(OSError):
        return sorted(
            zone
            for zone in base.iterdir()
            if zone.name.count(":") == 1 and (zone / "energy_uj").exists()
        )
    return []


def read_rapl(zones: list[Path]) -> list[int] | str:
    """Each zone's energy counter (µJ), or why they cannot be read."""
    if not zones:
        return "no RAPL counter (/sys/class/powercap has no CPU package zone)"
    try:
        return [int((zone / "energy_uj").read_text()) for zone in zones]
    except PermissionError:
        return f"the RAPL counters are readable by root only ({zones[0] / 'energy_uj'})"
    except (OSError, ValueError) as error:
        return f"the RAPL counters could not be read ({error})"


def rapl_joules(zones: list[Path], start: list[int], end: list[int]) -> float:
    """Joules between two readings, each counter's wrap at its ``max_energy_range_uj`` undone."""
    total = 0
    for zone, before, after in zip(zones, start, end, strict=True):
        if after < before:
            with contextlib.suppress(OSError, ValueError):
                after += int((zone / "max_energy_range_uj").read_text()) + 1
        total += max(0, after - before)
    return total / 1e6


def energy_figures(
    values: dict[str, Any],
    median_s: float,
    batch_size: int,
    tokens_per_call: int | None,
    both_sides: bool,
) -> dict[str, float | int | str | bool]:
    """Joules per inference (one sample of a batch; for a generate item one generation, and per
    new token beside it): the timing window's mean
    power over its measured counters times the median call. The window holds warm-up calls
    and, interleaved, A's calls beside B's; its power is theirs and the rest of the package's
    (a counter sees every process), which ``energy_scope`` says. Where nothing was measured,
    ``energy`` says why."""
    wall = values.get("wall_s")
    measured = [
        (key.removesuffix("_energy_j"), value)
        for key, value in values.items()
        if key.endswith("_energy_j") and isinstance(value, int | float)
    ]
    if not measured or not isinstance(wall, int | float) or wall <= 0:
        reasons = [str(v) for k, v in values.items() if k.endswith("energy_not_measured")]
        return {"energy": "not measurable here: " + "; ".join(reasons or ["no energy counter"])}
    watts = sum(value for _, value in measured) / wall
    scope = "the whole CPU package, other processes included" if "cpu" in dict(measured) else ""
    if both_sides:
        scope = ", ".join(filter(None, ["A's calls and B's, interleaved", scope]))
    found: dict[str, float | int | str | bool] = {
        "energy": f"measured: {', '.join(name for name, _ in measured)}",
        "energy_power_w": watts,
        "energy_per_inference_j": watts * median_s / max(1, batch_size),
    }
    if scope:
        found["energy_scope"] = scope
    if tokens_per_call:
        found["energy_per_token_j"] = watts * median_s / tokens_per_call
    return found


def _nvml() -> tuple[Any, list[Any]]:
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:
        return None, []
    return pynvml, handles


class Window:
    """Readings at the start and end of a timing pass, as one flat dict of numbers and text."""

    def __init__(self, gpu: bool = False) -> None:
        self.gpu = gpu
        self.values: dict[str, float | int | str | bool] = {}
        self._nvml: Any = None
        self._handles: list[Any] = []

    def __enter__(self) -> Window:
        import psutil

        self._process = psutil.Process()
        self._cpu = self._process.cpu_times()
        psutil.cpu_percent(None)  # primes the system-wide counter for the end reading
        self._frequency = _mhz()
        self._zones = rapl_packages()
        self._rapl = read_rapl(self._zones)
        if self.gpu:
            self._nvml, self._handles = _nvml()
            energy = self._nvml.nvmlDeviceGetTotalEnergyConsumption if self._nvml else None
            self._energy = [self._read(energy, handle) for handle in self._handles]
        self._started = time.perf_counter()
        return self

    def _read(self, read: Any, handle: Any) -> Any:
        with contextlib.suppress(Exception):
            return read(handle)
        return None

    def __exit__(self, *exc: object) -> None:
        import psutil

        wall = time.perf_counter() - self._started
        system = psutil.cpu_percent(None)
        cpu = self._process.cpu_times()
        used = (cpu.user - self._cpu.user) + (cpu.system - self._cpu.system)
        cores = psutil.cpu_count() or 1
        own = 100.0 * used / wall if wall > 0 else 0.0
        # Stored as measured, never rounded: rounding is for whoever shows a number. A timing
        # window of a fast model lasts well under a millisecond, which rounding to 3 decimals
        # stored as a wall time of 0.
        values: dict[str, float | int | str | bool] = {
            "wall_s": wall,
            "process_cpu_percent": own,  # of one core
            "system_cpu_percent": system,  # of all cores
            # Other processes' load, in cores: the machine's busy share less ours.
            "other_cores_busy": max(0.0, system * cores - own) / 100.0,
            "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        if isinstance(self._rapl, list):
            end = read_rapl(self._zones)
            if isinstance(end, list) and wall > 0:
                values["cpu_energy_j"] = rapl_joules(self._zones, self._rapl, end)
                values["cpu_power_w"] = values["cpu_energy_j"] / wall
        else:
            values["cpu_energy_not_measured"] = self._rapl
        if self.gpu and not self._handles:
            values["gpu_energy_not_measured"] = "no GPU answered NVML"
        end_frequency = _mhz()
        if self._frequency and end_frequency:
            values["cpu_mhz_start"] = self._frequency
            values["cpu_mhz_end"] = end_frequency
        for index, handle in enumerate(self._handles):
            values.update(self._gpu_values(index, handle, wall))
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
        self.values = values

    def _gpu_values(self, index: int, handle: Any, wall: float) -> dict[str, Any]:
        nvml, found = self._nvml, {}
        prefix = f"gpu{index}_"
        rates = self._read(nvml.nvmlDeviceGetUtilizationRates, handle)
        if rates is not None:
            found[prefix + "util_percent"] = rates.gpu
        memory = self._read(nvml.nvmlDeviceGetMemoryInfo, handle)
        if memory is not None:
            found[prefix + "memory_used_mb"] = memory.used / 2**20
        energy = self._read(nvml.nvmlDeviceGetTotalEnergyConsumption, handle)
        if energy is not None and self._energy[index] is not None and wall > 0:
            joules = (energy - self._energy[index]) / 1000
            found[prefix + "energy_j"] = joules
            found[prefix + "power_w"] = joules / wall
        clock = self._read(lambda h: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM), handle)
        if clock is not None:
            found[prefix + "sm_mhz"] = clock
        reasons = self._read(nvml.nvmlDeviceGetCurrentClocksThrottleReasons, handle)
        if reasons is not None:
            named = [text for bit, text in THROTTLE_REASONS.items() if reasons & bit]
            found[prefix + "throttle"] = ", ".join(named)
        return found


def _mhz() -> float | None:
    import psutil

    try:
        frequency = psutil.cpu_freq()
    except (OSError, NotImplementedError):
        return None
    return frequency.current if frequency and frequency.current else None


def suspicions(values: dict[str, Any]) -> list[str]:
    """Why a timing window's figures are suspect, in words; empty when nothing was seen."""
    found = []
    for key, value in sorted(values.items()):
        if key.endswith("_throttle") and value:
            found.append(f"{key.removesuffix('_throttle')} throttled ({value})")
    busy = values.get("other_cores_busy")
    if isinstance(busy, int | float) and busy > BUSY_NEIGHBOURS:
        found.append(f"other processes kept {busy:.1f} cores busy")
    return found

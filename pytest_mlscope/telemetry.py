"""What the machine did while an item was timed: CPU load, memory, clocks, and on GPUs NVML's
utilization, energy and throttle reasons.

Readings are taken at the edges of the timing window only, never by a sampling thread inside it:
a thread waking up during the timing pass would be noise of our own making. What a window shows
is for reading a verdict: a GPU that throttled for heat or power during the timing pass, or a CPU
that other processes kept busy, makes a slowdown suspect rather than a finding.
"""

from __future__ import annotations

import contextlib
import resource
import time
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

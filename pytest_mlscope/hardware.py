"""What this host has, collected once, and whether a manifest's requirements are met.

The fingerprint goes with every stored run, so results from different machines are never compared
as if they were the same; requirement matching turns "this host cannot run it" into a skip with a
reason instead of a failure.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_mlscope.manifest import Requirements


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gb: float
    compute_capability: str
    driver: str


@dataclass(frozen=True)
class Host:
    hostname: str
    arch: str
    os: str
    cpu_model: str
    physical_cores: int
    logical_cores: int
    memory_gb: float
    cpu_flags: frozenset[str]
    python: str
    gpus: tuple[Gpu, ...] = ()
    packages: dict[str, str] = field(default_factory=dict)

    def fingerprint(self) -> dict[str, object]:
        """The JSON-able facts stored with a run (flags left out: long and rarely read)."""
        data = asdict(self)
        data.pop("cpu_flags")
        data["gpus"] = [asdict(g) for g in self.gpus]
        return data


# Distributions whose versions shape results; recorded when installed, never imported.
TRACKED_PACKAGES = (
    "pytest-mlscope",
    "numpy",
    "torch",
    "onnxruntime",
    "onnxruntime-gpu",
    "tensorflow",
    "tensorrt",
    "onnx",
    "scikit-learn",
    "Pillow",
)


def package_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _cpu_info() -> tuple[str, frozenset[str]]:
    model, flags = platform.processor() or platform.machine(), frozenset()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return model, flags
    match = re.search(r"^(?:model name|Model|cpu)\s*:\s*(.+)$", text, re.MULTILINE)
    if match:
        model = match.group(1).strip()
    match = re.search(r"^(?:flags|Features)\s*:\s*(.+)$", text, re.MULTILINE)
    if match:
        flags = frozenset(match.group(1).split())
    return model, flags


def _gpus() -> tuple[Gpu, ...]:
    """NVIDIA GPUs through NVML when nvidia-ml-py and a driver are present; none otherwise."""
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return ()
    try:
        pynvml.nvmlInit()
    except Exception:
        return ()
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**30
            name = pynvml.nvmlDeviceGetName(handle)
            gpus.append(
                Gpu(
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    memory_gb=round(memory, 1),
                    compute_capability=f"{major}.{minor}",
                    driver=driver.decode() if isinstance(driver, bytes) else str(driver),
                )
            )
        return tuple(gpus)
    finally:
        pynvml.nvmlShutdown()


@functools.cache
def current_host() -> Host:
    import psutil

    model, flags = _cpu_info()
    packages = {name: v for name in TRACKED_PACKAGES if (v := package_version(name))}
    return Host(
        hostname=platform.node(),
        arch=platform.machine(),
        os=f"{platform.system()} {platform.release()}",
        cpu_model=model,
        physical_cores=psutil.cpu_count(logical=False) or os.cpu_count() or 1,
        logical_cores=psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        memory_gb=round(psutil.virtual_memory().total / 2**30, 1),
        cpu_flags=flags,
        python=platform.python_version() + f" ({sys.implementation.name})",
        gpus=_gpus(),
        packages=packages,
    )


def unmet_requirements(requires: Requirements, host: Host, device: str = "cpu") -> list[str]:
    """Reasons this host cannot run an item; empty when it can."""
    reasons = []
    if requires.arch and host.arch not in requires.arch:
        reasons.append(f"needs arch {' or '.join(requires.arch)}, this host is {host.arch}")
    if requires.min_memory_gb and host.memory_gb < requires.min_memory_gb:
        reasons.append(
            f"needs {requires.min_memory_gb} GiB of memory, this host has {host.memory_gb} GiB"
        )
    missing = [flag for flag in requires.cpu_flags if flag not in host.cpu_flags]
    if missing:
        reasons.append(f"needs CPU flags {', '.join(missing)}, which this host's CPU lacks")
    if device == "gpu" or requires.gpu:
        if not host.gpus:
            reasons.append("needs an NVIDIA GPU, none found (NVML)")
        elif requires.gpu:
            reasons.extend(_unmet_gpu(requires, host))
    return reasons


def _unmet_gpu(requires: Requirements, host: Host) -> list[str]:
    from packaging.version import Version

    assert requires.gpu is not None
    best = host.gpus[0]
    reasons = []
    wanted = requires.gpu.min_compute_capability
    if wanted and Version(best.compute_capability) < Version(wanted):
        reasons.append(
            f"needs compute capability {wanted}, {best.name} has {best.compute_capability}"
        )
    if requires.gpu.min_memory_gb and best.memory_gb < requires.gpu.min_memory_gb:
        reasons.append(
            f"needs {requires.gpu.min_memory_gb} GiB of GPU memory, {best.name} has "
            f"{best.memory_gb} GiB"
        )
    return reasons

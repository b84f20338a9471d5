"""What this host has, collected once, and whether a manifest's requirements are met.

The fingerprint goes with every stored run, so results from different machines are never compared
as if they were the same; requirement matching turns "this host cannot run it" into a skip with a
reason instead of a failure.
"""

from __future__ import annotations

import contextlib
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
    isa: tuple[str, ...] = ()  # the ISA extensions that matter to ML kernels, by common name
    gpu_note: str = ""  # why there are no GPUs, when there are none
    cuda_driver: str | None = None  # the CUDA version the driver supports (NVML)
    tuning: dict[str, object] = field(default_factory=dict)  # benchmarking state, see tuning()

    def has_isa(self, name: str) -> bool:
        return name in self.isa

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
    "tensorflow-cpu",
    "keras",
    "tensorrt",
    "onnx",
    "scikit-learn",
    "Pillow",
)


# Common names of ISA extensions -> the /proc/cpuinfo flags that show them (any one suffices).
ISA_FLAGS: dict[str, tuple[str, ...]] = {
    "sse4_2": ("sse4_2",),
    "avx": ("avx",),
    "avx2": ("avx2",),
    "fma": ("fma",),
    "f16c": ("f16c",),
    "avx512": ("avx512f",),
    "avx512_vnni": ("avx512_vnni",),
    "avx512_bf16": ("avx512_bf16",),
    "avx512_fp16": ("avx512_fp16",),
    "amx": ("amx_tile",),
    "amx_bf16": ("amx_bf16",),
    "amx_int8": ("amx_int8",),
    "neon": ("asimd", "neon"),
    "sve": ("sve",),
    "sve2": ("sve2",),
    "bf16": ("bf16",),  # arm
    "i8mm": ("i8mm",),
    "altivec": ("altivec",),
    "vsx": ("vsx",),
}


def isa_extensions(flags: frozenset[str]) -> tuple[str, ...]:
    return tuple(name for name, shown_by in ISA_FLAGS.items() if flags.intersection(shown_by))


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return None


def tuning() -> dict[str, object]:
    """What makes timings on this host noisier, as pyperf's ``system show`` reads it: frequency
    governor, turbo, ASLR, isolated CPUs, current frequency. Unreadable facts are left out."""
    import psutil

    found: dict[str, object] = {}
    governors = {
        g
        for cpu in range(os.cpu_count() or 1)
        if (g := _read(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"))
    }
    if governors:
        found["governor"] = ",".join(sorted(governors))
    no_turbo = _read("/sys/devices/system/cpu/intel_pstate/no_turbo")
    boost = _read("/sys/devices/system/cpu/cpufreq/boost")
    if no_turbo is not None:
        found["turbo"] = no_turbo == "0"
    elif boost is not None:
        found["turbo"] = boost == "1"
    aslr = _read("/proc/sys/kernel/randomize_va_space")
    if aslr is not None:
        found["aslr"] = aslr != "0"
    isolated = _read("/sys/devices/system/cpu/isolated")
    if isolated is not None:
        found["isolated_cpus"] = isolated
    try:
        frequency = psutil.cpu_freq()
    except (OSError, NotImplementedError):
        frequency = None
    if frequency is not None and frequency.current:
        found["cpu_mhz"] = round(frequency.current)
    return found


def noise_sources(state: dict[str, object]) -> list[str]:
    """The parts of a host's tuning state that add noise to timings, in words."""
    notes = []
    governor = state.get("governor")
    if governor and governor != "performance":
        notes.append(f"frequency governor {governor} (not performance)")
    if state.get("turbo") is True:
        notes.append("turbo boost on")
    if state.get("aslr") is True:
        notes.append("ASLR on")
    if "isolated_cpus" in state and not state["isolated_cpus"]:
        notes.append("no isolated CPUs")
    return notes


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


def _gpus() -> tuple[tuple[Gpu, ...], str, str | None]:
    """NVIDIA GPUs through NVML, why there are none, and the driver's CUDA version. No driver
    (no NVML library) is a normal answer on a CPU machine, not an error."""
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return (), "nvidia-ml-py is not installed", None
    try:
        pynvml.nvmlInit()
    except Exception as exc:
        text = str(exc) or type(exc).__name__
        if "LibraryNotFound" in type(exc).__name__:
            text = "no NVIDIA driver (the NVML library is not found)"
        return (), text, None
    try:
        cuda = None
        with contextlib.suppress(Exception):
            version = pynvml.nvmlSystemGetCudaDriverVersion()
            cuda = f"{version // 1000}.{version % 1000 // 10}"
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
        return tuple(gpus), "" if gpus else "NVML sees no GPU", cuda
    finally:
        pynvml.nvmlShutdown()


@functools.cache
def current_host() -> Host:
    import psutil

    model, flags = _cpu_info()
    packages = {name: v for name in TRACKED_PACKAGES if (v := package_version(name))}
    gpus, gpu_note, cuda = _gpus()
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
        gpus=gpus,
        packages=packages,
        isa=isa_extensions(flags),
        gpu_note=gpu_note,
        cuda_driver=cuda,
        tuning=tuning(),
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
    lacking = [name for name in requires.isa if not host.has_isa(name)]
    if lacking:
        reasons.append(
            f"needs {', '.join(lacking)}, which this host's CPU lacks (it has "
            f"{', '.join(host.isa) or 'none of the known extensions'})"
        )
    if device == "gpu" or requires.gpu:
        if not host.gpus:
            reasons.append(f"needs an NVIDIA GPU, none found ({host.gpu_note or 'NVML'})")
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

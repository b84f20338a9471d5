"""The predictor interface and its registry.

A predictor wraps one framework behind load / prepare_input / predict / to_numpy / close / info.
Only ``predict`` is timed, so everything a framework's own minimal inference loop would do once
(building a feed dict, wrapping an array as a tensor) belongs in ``prepare_input``. Predictor
modules import their framework inside methods, never at import time: the registry and the plugin
look at predictor classes without paying for torch or ONNX Runtime.

Third parties add a framework with an entry point in the ``mlscope.predictors`` group, or a
project adds one in its ini (``mlscope_predictors = name = module:Class``).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from pytest_mlscope.errors import ArtifactError, StackUnavailable
from pytest_mlscope.protocol import ArtifactRef, LayerProfile, PredictorInfo
from pytest_mlscope.vocabulary import BUILTIN_PREDICTORS

if TYPE_CHECKING:
    from pytest_mlscope.tracing.timeline import Timeline

ENTRY_POINT_GROUP = "mlscope.predictors"
# Set by the host for the instruction-count pass: predictors run their framework on this many
# threads. Counting measures work, and an idle thread pool's spin-waits would count as work.
THREADS_ENV = "MLSCOPE_THREADS"

# Used when the package's own entry points are not installed (running from a source tree).
BUILTIN = BUILTIN_PREDICTORS


class Predictor(ABC):
    """One framework's way to load a model artifact and run a batch."""

    name: ClassVar[str]
    # Artifact formats this predictor loads, preferred first (e.g. "onnx", "torch_state_dict").
    formats: ClassVar[tuple[str, ...]]
    # Distributions that provide the framework; the first installed one gives the version.
    distributions: ClassVar[tuple[str, ...]] = ()
    # The pytest-mlscope extra that installs it, for the skip reason.
    extra: ClassVar[str | None] = None
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    # A framework that cannot share the host's environment names its venv stack
    # (pytest_mlscope.stacks): its worker runs with that venv's Python.
    venv_stack: ClassVar[str | None] = None
    # A framework with no build for the host's OS or Python (Caffe: Debian bullseye's package)
    # runs in its container image whatever the session's runtime (``containers.SYSTEM_STACKS``).
    container_only: ClassVar[bool] = False
    # Whether ``profile`` profiles the model through ``predict`` (so a generate item's profiling
    # pass can hand it whole generations) rather than through a session of its own.
    profiles_by_predict: ClassVar[bool] = True

    def __init__(self, device: str = "cpu") -> None:
        self.device = device

    def import_framework(self) -> None:  # noqa: B027 - optional hook
        """Import what ``load`` imports, before the worker starts to measure the model's
        memory: the framework's own code and start-up allocations are not the model's. A
        predictor without it has its framework's import counted with its first model."""

    @abstractmethod
    def load(self, artifact: ArtifactRef) -> None:
        """Load the (already verified) artifact; timed as the cold start."""

    def named_callable(self, artifact: ArtifactRef, key: str, what: str) -> Any:
        """The ``package.module:name`` an artifact's metadata names under ``key`` (the class or
        function that builds the model its weights belong to), imported. The metadata may map
        framework names to targets: weights shared by several frameworks name one builder each.
        """
        named = artifact.metadata.get(key, "")
        if isinstance(named, dict):
            named = named.get(self.name, "")
        target = str(named)
        module_name, _, attribute = target.partition(":")
        if not module_name or not attribute:
            raise ArtifactError(
                f"{artifact.path}: a {artifact.format} artifact needs metadata "
                f"{key!r} = 'package.module:{what}'"
            )
        return getattr(importlib.import_module(module_name), attribute)

    def prepare_input(self, batch: np.ndarray) -> Any:
        """Turn a numpy batch into what ``predict`` takes. Not timed."""
        return batch

    @abstractmethod
    def predict(self, prepared: Any) -> Any:
        """Run one batch. The only call inside a timing sample."""

    def to_numpy(self, output: Any) -> np.ndarray:
        """The first output as a numpy array. Not timed."""
        return np.asarray(output)

    def generate(self, prepared: Any, new_tokens: int, stamps: list[int]) -> list[int]:
        """Decode ``new_tokens`` tokens greedily after the prompt ``prepared`` (a batch of one),
        with the framework's own cache; append ``time.perf_counter_ns()`` to ``stamps`` as each
        new token is known. Timed whole, as the generate scenario's call
        (pytest_mlscope.generation)."""
        raise StackUnavailable(
            f"the {self.name} predictor cannot generate: it has no decoding loop "
            "(Predictor.generate)"
        )

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model; the default keeps nothing to release."""

    def reset_device_memory_peak(self) -> None:  # noqa: B027 - optional hook
        """Start the framework allocator's device high-water mark afresh (before ``load``)."""

    def device_memory_peak(self) -> int | None:
        """The framework allocator's high-water mark on the GPU since the reset, bytes: what
        the memory rule judges for a GPU item beside the process's resident peak. None on CPU
        and for a framework that keeps no such counter (it is never estimated from NVML's
        device-wide figure, which every process on the GPU moves)."""
        return None

    def layer_outputs(self, prepared: Any) -> list[tuple[str, np.ndarray]] | None:
        """Each layer's output for one prediction, named by its module path, in the order the
        layers finish; None when the framework cannot expose them. Only a failed agreement asks
        (pytest_mlscope.divergence), so it may be slow and load the model again."""
        return None

    def profile(
        self,
        prepared: Any,
        iterations: int,
        level: str,
        timeline: Timeline,
        trace_dir: Path,
    ) -> LayerProfile:
        """The profiling pass: layer rows per inference, profiled prediction times (µs), notes.

        Called after the timing pass, never during it. A framework without a profiler of ours
        still shows its predictions on the timeline; its layer table stays empty, and says so.
        """
        steps = self.timeline_predictions(prepared, iterations, timeline)
        return [], steps, [f"no layer profiler for {self.name}: predictions only"]

    def timeline_predictions(
        self, prepared: Any, iterations: int, timeline: Timeline
    ) -> list[float]:
        """Predict ``iterations`` times, each on the timeline; their durations in µs."""
        import time

        steps = []
        for index in range(iterations):
            start = time.perf_counter_ns()
            self.predict(prepared)
            duration = (time.perf_counter_ns() - start) / 1e3
            steps.append(duration)
            timeline.complete(
                "predict", start / 1e3, duration, "framework", "framework", {"iteration": index}
            )
        return steps

    @abstractmethod
    def info(self) -> PredictorInfo: ...

    def described(self, version: str, **details: object) -> PredictorInfo:
        """What ``info`` returns: this predictor's framework and device, the framework's
        ``version`` and the ``details`` worth recording beside a result."""
        return PredictorInfo(
            framework=self.name, version=version, device=self.device, details=details
        )

    @classmethod
    def installed_version(cls) -> str | None:
        for distribution in cls.distributions:
            try:
                return metadata.version(distribution)
            except metadata.PackageNotFoundError:
                continue
        return None


def worker_threads() -> int | None:
    """The thread count the host asked this worker's frameworks to use, if any."""
    import os

    value = os.environ.get(THREADS_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def _entry_points(group: str) -> list[Any]:
    """Entry points of one group; Python 3.9 (the Caffe image's) has no ``group=`` keyword."""
    found = metadata.entry_points()
    if hasattr(found, "select"):
        return list(found.select(group=group))
    return list(found.get(group, []))  # type: ignore[attr-defined]


def registered_predictors(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Framework name -> "module:Class", from built-ins, entry points, then the project's ini."""
    found = dict(BUILTIN)
    for entry in _entry_points(ENTRY_POINT_GROUP):
        found[entry.name] = entry.value
    found.update(extra or {})
    return found


def predictor_class(name: str, extra: dict[str, str] | None = None) -> type[Predictor]:
    registry = registered_predictors(extra)
    target = registry.get(name)
    if target is None:
        known = ", ".join(sorted(registry))
        raise StackUnavailable(
            f"no predictor for framework {name!r} (known: {known}); register one with an "
            f"entry point in the {ENTRY_POINT_GROUP!r} group or the mlscope_predictors ini option"
        )
    module_name, _, attribute = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise StackUnavailable(f"predictor {name!r} ({target}) cannot be imported: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Predictor)):
        raise StackUnavailable(f"predictor {name!r} ({target}) is not a Predictor subclass")
    return cls


def framework_unavailable(
    name: str,
    version: str | None,
    device: str,
    extra: dict[str, str] | None = None,
    *,
    host: bool = True,
) -> str | None:
    """Why this environment cannot run a framework, or None. Imports no framework.

    ``host=False``: the framework runs elsewhere (a container); only the predictor is needed here.
    """
    try:
        cls = predictor_class(name, extra)
    except StackUnavailable as exc:
        return str(exc)
    if device not in cls.devices:
        return (
            f"the {name} predictor does not run on {device} (it runs on {', '.join(cls.devices)})"
        )
    if not host or not cls.distributions:
        return None
    if cls.venv_stack:
        from pytest_mlscope import stacks

        stack = stacks.get(cls.venv_stack)
        reason = stacks.unavailable(stack)
        if reason:
            return reason
        installed = stacks.installed_version(stack)
    else:
        installed = cls.installed_version()
    if installed is None:
        hint = f": pip install pytest-mlscope[{cls.extra}]" if cls.extra else ""
        return f"{name} is not installed{hint}"
    if version:
        try:
            ok = SpecifierSet(version).contains(Version(installed), prereleases=True)
        except InvalidVersion:
            ok = False
        if not ok:
            return f"{name} {installed} is installed, the manifest asks for {name}{version}"
    return None

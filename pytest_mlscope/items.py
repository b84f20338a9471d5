"""What pytest collects from a manifest: the file node, one item per cell, and the markers.

The item's run is short on purpose: the session evaluates and judges; the item turns the outcome
into pytest's language (a pass, a skip, an accuracy failure, a regression) and JUnit properties.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_mlscope.manifest import Manifest, Requirements
    from pytest_mlscope.protocol import Cell
    from pytest_mlscope.session import MlscopeSession

SESSION_KEY = pytest.StashKey["MlscopeSession"]()
RESULT_KEY = pytest.StashKey["EvaluationResult"]()
VERDICT_KEY = pytest.StashKey["Verdict"]()


def session_of(config: pytest.Config) -> MlscopeSession | None:
    """The run's session, or None without ``--mlscope``."""
    return config.stash.get(SESSION_KEY, None)


class ManifestFile(pytest.File):
    """A manifest: one test item per cell, or one collection error naming file:line:key."""

    def collect(self) -> Iterator[MlscopeItem]:
        from pytest_mlscope.cells import expand
        from pytest_mlscope.errors import ManifestError
        from pytest_mlscope.manifest import load_manifest

        session = session_of(self.config)
        assert session is not None
        try:
            manifest = load_manifest(self.path)
            session.register(manifest)
        except ManifestError as exc:
            raise self.CollectError(str(exc)) from None
        reasons: dict[tuple[str, str], tuple[str, bool] | None] = {}
        for cell in expand(manifest):
            self.config.addinivalue_line("markers", f"{cell.framework}: items on {cell.framework}")
            item = MlscopeItem.from_parent(self, name=cell.id, manifest=manifest, cell=cell)
            for marker in ("mlscope", cell.framework, cell.device, cell.scenario):
                item.add_marker(marker)
            if session.in_container(cell):
                item.add_marker("docker")
            key = (cell.framework_id, cell.device)
            if key not in reasons:
                reasons[key] = session.unavailable(manifest, cell)
            if reasons[key] is not None:
                reason, fails = reasons[key]  # type: ignore[misc]
                if fails:
                    item.blocked = reason
                else:
                    item.add_marker(pytest.mark.skip(reason=reason))
            yield item


class MlscopeItem(pytest.Item):
    def __init__(self, *, manifest: Manifest, cell: Cell, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.manifest = manifest
        self.cell = cell
        self.blocked: str | None = None  # a missing service, under CI=true

    def runtest(self) -> None:
        from pytest_mlscope.errors import AccuracyFailed, RegressionDetected, RegressionWarning
        from pytest_mlscope.judging import failure_message
        from pytest_mlscope.report.junit import properties

        session = session_of(self.config)
        assert session is not None
        if self.blocked:
            from pytest_mlscope.errors import StackUnavailable

            raise StackUnavailable(self.blocked)
        result, verdict = session.evaluate_in_turn(self.manifest, self.cell)
        self.stash[RESULT_KEY] = result
        if verdict is not None:
            self.stash[VERDICT_KEY] = verdict
        for key, value in properties(result, verdict).items():
            self.user_properties.append((key, value))
        if not result.accuracy.passed:
            lines = [f"{c.name}: {c.detail}" for c in result.accuracy.failures]
            raise AccuracyFailed("accuracy missed its target:\n  " + "\n  ".join(lines))
        strict = session.settings.strict and verdict is not None and verdict.kind == "inconclusive"
        if verdict is not None and (verdict.fails or strict):
            message = failure_message(verdict)
            if session.settings.fail_on_regression:
                raise RegressionDetected(message)
            import warnings

            warnings.warn(RegressionWarning(f"{self.cell.id}: {message}"), stacklevel=1)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        from pytest_mlscope.errors import MlscopeError

        if isinstance(excinfo.value, MlscopeError):
            return f"{self.cell.id}: {type(excinfo.value).__name__}: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        # The line of this cell's framework entry: where a skip or failure is best fixed.
        index = self.manifest.framework_index(self.cell.framework, self.cell.stack)
        where = self.manifest.where("framework", index)
        line = int(where.rsplit(":", 1)[1]) - 1
        return self.path, line, f"mlscope {self.cell.id}"


def mark_hardware(items: list[pytest.Item]) -> None:
    """``@pytest.mark.hardware(...)``: a ``gpu`` or ``cpu`` marker for ``-m``, and a skip with
    the exact reason on a host that lacks what the test asks for."""
    decided: dict[str, tuple[str, list[str]]] = {}
    for item in items:
        marker = item.get_closest_marker("hardware")
        if marker is None:
            continue
        if marker.args:
            raise pytest.UsageError(
                f"{item.nodeid}: @pytest.mark.hardware takes keyword arguments only"
            )
        key = repr(sorted(marker.kwargs.items()))
        if key not in decided:
            from pytest_mlscope.hardware import current_host, unmet_requirements

            try:
                requires, device = marker_requirements(marker.kwargs)
            except ValueError as exc:
                raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.hardware: {exc}") from None
            decided[key] = (device, unmet_requirements(requires, current_host(), device))
        device, unmet = decided[key]
        item.add_marker(device)
        if unmet:
            item.add_marker(pytest.mark.skip(reason=f"this host {'; '.join(unmet)}"))


# -- the hardware marker on hand-written tests ---------------------------------------------------

MARKER_ARGUMENTS = ("gpu", "min_compute_capability", "arch", "min_memory_gb", "isa",
                    "min_gpu_memory_gb")  # fmt: skip


def marker_requirements(kwargs: dict[str, object]) -> tuple[Requirements, str]:
    """``@pytest.mark.hardware(...)`` as manifest requirements and the device it implies."""
    from pytest_mlscope.hardware import ISA_FLAGS
    from pytest_mlscope.manifest import GpuRequirement, Requirements

    unknown = sorted(set(kwargs) - set(MARKER_ARGUMENTS))
    if unknown:
        raise ValueError(
            f"unknown argument {', '.join(unknown)}; expected {', '.join(MARKER_ARGUMENTS)}"
        )
    unknown_isa = sorted(set(_as_list(kwargs.get("isa"))) - set(ISA_FLAGS))
    if unknown_isa:
        raise ValueError(
            f"unknown isa {', '.join(unknown_isa)}; expected some of {', '.join(ISA_FLAGS)}"
        )
    wants_gpu = bool(kwargs.get("gpu")) or any(
        kwargs.get(k) is not None for k in ("min_compute_capability", "min_gpu_memory_gb")
    )
    gpu = None
    if wants_gpu:
        gpu = GpuRequirement(
            min_compute_capability=kwargs.get("min_compute_capability"),  # type: ignore[arg-type]
            min_memory_gb=kwargs.get("min_gpu_memory_gb"),  # type: ignore[arg-type]
        )
    requires = Requirements(
        arch=_as_list(kwargs.get("arch")) or None,
        min_memory_gb=kwargs.get("min_memory_gb"),  # type: ignore[arg-type]
        isa=_as_list(kwargs.get("isa")),
        gpu=gpu,
    )
    return requires, "gpu" if wants_gpu else "cpu"


def _as_list(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]  # type: ignore[attr-defined]

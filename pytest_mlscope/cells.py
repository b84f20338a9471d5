"""Expanding a manifest into test cells, and why a cell cannot run on this host."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_mlscope.protocol import Cell

if TYPE_CHECKING:
    from pytest_mlscope.hardware import Host
    from pytest_mlscope.manifest import Manifest


def expand(manifest: Manifest) -> list[Cell]:
    """model × framework × device × batch size × scenario, in manifest order.

    ``single_stream`` measures per-query latency at every batch size; ``offline`` measures
    throughput, which only the largest batch size says anything about.
    """
    performance = manifest.performance
    cells = []
    for framework in manifest.framework:
        for device in framework.devices:
            for scenario in performance.scenarios:
                sizes = (
                    performance.batch_sizes
                    if scenario == "single_stream"
                    else [max(performance.batch_sizes)]
                )
                for batch_size in sizes:
                    cells.append(
                        Cell(
                            model=manifest.name,
                            framework=framework.name,
                            device=device,
                            batch_size=batch_size,
                            scenario=scenario,
                            stack=framework.stack,
                        )
                    )
    return cells


def skip_reason(
    manifest: Manifest,
    cell: Cell,
    host: Host,
    predictors: dict[str, str] | None = None,
    *,
    in_container: bool = False,
) -> str | None:
    """Why this host or environment cannot run the cell (one sentence), or None.

    ``in_container``: the framework lives in the cell's image, not on the host, so only the
    predictor (which names the artifact formats) and the hardware are checked here; the image's
    framework version is checked against the manifest by the session.
    """
    from pytest_mlscope.hardware import unmet_requirements
    from pytest_mlscope.predictors import framework_unavailable

    spec = manifest.framework_spec(cell.framework, cell.stack)
    if spec.stack and spec.container and not in_container:
        return (
            f"{cell.framework_id} is a stack of its own, in its container image: run it with "
            "--mlscope-runtime docker"
        )
    unmet = unmet_requirements(manifest.requires, host, cell.device)
    if unmet and cell.device == "gpu":  # no GPU here: that is the reason, whatever else is missing
        return f"{manifest.name} {'; '.join(unmet)}"
    if in_container:
        reason = framework_unavailable(cell.framework, None, cell.device, predictors, host=False)
    else:
        reason = framework_unavailable(cell.framework, spec.version, cell.device, predictors)
    if reason:
        return reason
    if unmet:
        return f"{manifest.name} {'; '.join(unmet)}"
    return None

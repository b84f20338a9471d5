"""Expanding a manifest into test cells, and why a cell cannot run on this host."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_mlscope.protocol import Cell
from pytest_mlscope.vocabulary import Scenario

if TYPE_CHECKING:
    from pytest_mlscope.hardware import Host
    from pytest_mlscope.manifest import Manifest


def expand(manifest: Manifest) -> list[Cell]:
    """model × framework × device × batch size × sequence length × scenario, in manifest order.

    ``single_stream`` measures per-query latency at every batch size; ``offline`` measures
    throughput, which only the largest batch size says anything about. Every sequence length
    is an item of both: how cost grows with the length is what a sweep is for.
    """
    performance = manifest.performance
    lengths: list[int | None] = list(performance.sequence_lengths or [None])
    cells = []
    for framework in manifest.framework:
        for device in framework.devices:
            for scenario in performance.scenarios:
                sizes = (
                    performance.batch_sizes
                    if scenario != "offline"
                    else [max(performance.batch_sizes)]
                )
                for batch_size in sizes:
                    for length in lengths:
                        cells.append(
                            Cell(
                                model=manifest.name,
                                framework=framework.name,
                                device=device,
                                batch_size=batch_size,
                                scenario=scenario,
                                stack=framework.stack,
                                sequence_length=length,
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
    if not in_container:
        return text_unavailable(manifest) or packages_unavailable(manifest)
    return None


def outputs_scenario(manifest: Manifest) -> Scenario:
    """The scenario whose outputs a manifest's goldens and agreement references hold: a
    decoder's greedy tokens, every other model's forward pass."""
    return "generate" if "generate" in manifest.performance.scenarios else "single_stream"


def packages_unavailable(manifest: Manifest) -> str | None:
    """Why this environment lacks a package the manifest's model needs (``requires.packages``:
    the one holding its weights, say), looked up without importing it."""
    import importlib.util

    wanted = manifest.requires.packages
    missing = [name for name in wanted if _absent(importlib.util, name)]
    if not missing:
        return None
    how = "; ".join(wanted[name] or f"pip install {name.replace('_', '-')}" for name in missing)
    return f"{manifest.name} needs {', '.join(missing)}, not installed here: {how}"


def text_unavailable(manifest: Manifest) -> str | None:
    """Why this environment cannot tokenize the manifest's text (the worker tokenizes where it
    runs, so a host worker needs ``tokenizers`` and the package holding the tokenizer here)."""
    import importlib.util

    for spec in manifest.inputs:
        if spec.tokenizer is None:
            continue
        wanted = ["tokenizers"] + ([spec.tokenizer.package] if spec.tokenizer.package else [])
        missing = [name for name in wanted if _absent(importlib.util, name)]
        if missing:
            names = " and ".join(name.replace("_", "-") for name in missing)
            return (
                f"{manifest.name} tokenizes its input {spec.name!r} with {names}, which "
                f"{'is' if len(missing) == 1 else 'are'} not installed here: pip install "
                f"{' '.join(name.replace('_', '-') for name in missing)} (for the bundled text "
                "models: pip install 'pytest-mlscope[text]')"
            )
    return None


def _absent(util: object, name: str) -> bool:
    try:
        return util.find_spec(name) is None  # type: ignore[attr-defined]
    except (ImportError, ValueError):
        return True

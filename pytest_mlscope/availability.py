"""Every reason an item cannot run here, decided before it is measured: a framework that is not
installed, a venv stack not set up, a container image missing or stale, a device the host lacks.
The reason is what the skip says, and a missing service fails under CI=true instead of skipping.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from pytest_mlscope.protocol import (
    Cell,
)

if TYPE_CHECKING:
    from pytest_mlscope.manifest import Manifest


def _installed(metadata: Any, distribution: str) -> bool:
    try:
        metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def under_ci() -> bool:
    """CI=true: an item that needs a missing service (Docker daemon, image) fails, so a broken
    CI machine cannot pass by skipping everything."""
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


class Availability:
    """Skip reasons; a part of :class:`MlscopeSession`."""

    def unavailable(self, manifest: Manifest, cell: Cell) -> tuple[str, bool] | None:
        """Why this host cannot run a cell, and whether that fails the item instead of
        skipping it (a missing service under CI=true); None when it can run. What a manifest's
        item and a hand-written test's ``mlscope_eval`` both decide by."""
        reason, service_missing = self.skip_reason(manifest, cell)
        if reason is None:
            return None
        if service_missing and under_ci():
            return f"{reason} (CI=true: fails instead of skipping)", True
        return reason, False

    def skip_reason(self, manifest: Manifest, cell: Cell) -> tuple[str | None, bool]:
        """Why a cell cannot run here, and whether a missing service (a Docker daemon, an
        image) is the reason: under ``CI=true`` such items fail instead of skipping."""
        from pytest_mlscope.cells import skip_reason

        docker = self.in_container(cell)
        reason = skip_reason(
            manifest, cell, self.host, self.settings.predictors, in_container=docker
        )
        if reason and not docker:
            return reason, self._venv_stack_missing(cell)
        if reason or not docker:
            return reason, False
        image = self.image(cell)
        if image not in self._image_reasons:
            self._image_reasons[image] = self._check_image(manifest, cell, image)
        return self._image_reasons[image]

    def _venv_stack_missing(self, cell: Cell) -> bool:
        """Whether the cell's framework lives in a venv stack that is not set up: a missing
        service like a Docker image, which CI must provide (``mlscope stacks setup``)."""
        from pytest_mlscope import stacks
        from pytest_mlscope.errors import StackUnavailable
        from pytest_mlscope.predictors import predictor_class

        try:
            name = predictor_class(cell.framework, self.settings.predictors).venv_stack
        except StackUnavailable:
            return False
        return bool(name) and stacks.unavailable(stacks.get(name)) is not None

    def _check_image(self, manifest: Manifest, cell: Cell, image: str) -> tuple[str | None, bool]:
        from packaging.specifiers import SpecifierSet
        from packaging.version import InvalidVersion, Version

        from pytest_mlscope.containers import (
            LABEL,
            SYSTEM_STACKS,
            ContainerError,
            client,
            find_image,
            source_digest,
        )

        stack = image.split("/")[-1].split(":")[0]
        # Caffe's items use a container under any runtime: say which container needs the daemon.
        where = "docker runtime" if self.settings.runtime == "docker" else f"{stack} container"
        try:
            found = find_image(client(), image)
        except ContainerError as exc:
            return f"{where}: {exc}", True
        if found is None:
            system = SYSTEM_STACKS.get(stack)
            first = f"`mlscope containers base {stack}` (its base), then " if system else ""
            return (
                f"{where}: no image {image} here; build it with {first}"
                f"`mlscope containers build {stack}`",
                True,
            )
        labels = found.labels or {}
        built_from = labels.get(f"{LABEL}.source-hash")
        if built_from and built_from != source_digest():
            stack = labels.get(f"{LABEL}.stack", cell.framework)
            return (
                f"image {image} holds a pytest-mlscope worker built from other sources than "
                f"this one (version {labels.get(f'{LABEL}.version', '?')}, built "
                f"{found.attrs.get('Created', '?')[:19]}): rebuild it with "
                f"`mlscope containers build {stack}`",
                True,
            )
        version = labels.get(f"{LABEL}.framework-version")
        spec = manifest.framework_spec(cell.framework, cell.stack).version
        if version and spec:
            try:
                ok = SpecifierSet(spec).contains(Version(version), prereleases=True)
            except InvalidVersion:
                ok = False
            if not ok:
                return (
                    f"image {image} has {cell.framework} {version}, the manifest asks for "
                    f"{cell.framework}{spec}",
                    False,
                )
        return None, False

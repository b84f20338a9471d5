"""What goes into an image: the stack's Dockerfile, the pinned requirements, the package
source, and the content hash over all of it (``ImagePlan``, ``plan``)."""

from __future__ import annotations

import functools
import hashlib
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

import pytest_mlscope
from pytest_mlscope.containers.naming import (
    BUNDLED_STACKS,
    DEFAULT_BASE_IMAGE,
    DEFAULT_OFFLINE_BASE,
    DISTRIBUTION,
    GPU_DISTRIBUTIONS,
    HOST_ONLY,
    LABEL,
    PACKAGES_LABEL,
    REPOSITORY,
    SYSTEM_STACKS,
    ContainerError,
    SystemStack,
)
from pytest_mlscope.errors import StackUnavailable

RECIPES = Path(__file__).resolve().parent / "recipes"  # the bundled stacks', in the wheel


def project_recipes(start: Path | None = None) -> Path | None:
    """The project's own ``containers/`` (its stacks add to or replace the bundled ones), in
    the current directory or above it: a folder with a stack's Dockerfile or a base builder.
    None when there is none."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "containers"
        if candidate != RECIPES and _holds_recipes(candidate):
            return candidate
    return None


def _holds_recipes(folder: Path) -> bool:
    return (
        any(folder.glob("*/Dockerfile*"))
        or any(folder.glob("*/base.sh"))
        or (folder / "base" / "build.sh").is_file()
    )


def recipe_folders(folder: Path | None = None) -> list[Path]:
    """Where a stack's recipe is looked for, first match wins: ``folder`` (``--dir``) or the
    project's ``containers/``, then the recipes that ship with pytest-mlscope."""
    if folder is not None and not folder.is_dir():
        raise ContainerError(f"--dir {folder}: no such folder")
    first = folder.resolve() if folder is not None else project_recipes()
    return [first, RECIPES] if first is not None and first != RECIPES else [RECIPES]


def recipe(stack: str, name: str, folder: Path | None = None) -> Path | None:
    """A stack's file (``Dockerfile``, ``Dockerfile.gpu``, ``base.sh``) from the first folder
    that has the stack: a project's ``<stack>/`` replaces the bundled one whole, so a file it
    lacks is missing, never taken from the bundled recipe beside the project's others."""
    for root in recipe_folders(folder):
        if root == RECIPES:
            return _bundled(stack, name)
        if (root / stack).is_dir():
            found = root / stack / name
            return found if found.is_file() else None
    return None


def _bundled(stack: str, name: str) -> Path | None:
    """The bundled stacks share one Dockerfile (its build arguments say which stack), for the
    devices ``BUNDLED_STACKS`` lists; their base builders are files of their own."""
    device = {"Dockerfile": "cpu", "Dockerfile.gpu": "gpu"}.get(name)
    if device is not None:
        return RECIPES / "Dockerfile" if device in BUNDLED_STACKS.get(stack, ()) else None
    found = RECIPES / stack / name
    return found if found.is_file() else None


def base_recipe(stack: str | None = None, folder: Path | None = None) -> tuple[Path, str]:
    """The script that builds a base image with no container registry, and the tag it makes:
    the pip stacks' (``base/build.sh``, Debian bookworm's Python 3.11) or a system stack's own
    (``<stack>/base.sh``: Caffe's bullseye with Debian's Caffe)."""
    if stack is None:
        found, tag = recipe("base", "build.sh", folder), DEFAULT_OFFLINE_BASE
    else:
        system = SYSTEM_STACKS.get(stack)
        if system is None and stack not in stacks(folder):
            raise ContainerError(f"no stack {stack} (stacks: {', '.join(stacks(folder))})")
        if system is None:
            raise ContainerError(
                f"{stack} builds FROM a pip stacks' base; only "
                f"{', '.join(SYSTEM_STACKS)} {'has' if len(SYSTEM_STACKS) == 1 else 'have'} one "
                "of its own (`mlscope containers base` builds the pip stacks' one)"
            )
        found, tag = recipe(stack, "base.sh", folder), system.base_image
    if found is None:
        raise ContainerError(f"no base recipe for {stack or 'the pip stacks'} in any recipe folder")
    return found, tag


def stacks(folder: Path | None = None) -> list[str]:
    """Every stack with a Dockerfile: the project's and the bundled ones."""
    own = {p.parent.name for root in recipe_folders(folder) for p in root.glob("*/Dockerfile")}
    return sorted(own | set(BUNDLED_STACKS))


@dataclass(frozen=True)
class ImagePlan:
    """Everything that decides an image's content; ``digest`` hashes all of it."""

    stack: str
    device: str
    dockerfile: Path
    base_image: str
    python: str  # the minor version the wheelhouse is built for
    requirements: tuple[str, ...]
    framework_version: str
    source: Path  # the pytest_mlscope package folder copied into the image
    base_image_id: str | None = None  # the base's local id, when present: a new base rebuilds
    # The framework version is the host's (not asked for): the stack's default tag follows it.
    host_version: bool = True
    digest: str = field(default="", compare=False)

    @property
    def repository(self) -> str:
        return f"{REPOSITORY}/{self.stack}"

    @property
    def version_tag(self) -> str:
        """The framework version as a tag may spell it (``2.13.0+cpu`` -> ``2.13.0_cpu``)."""
        return re.sub(r"[^A-Za-z0-9_.-]", "_", self.framework_version)

    @property
    def tag(self) -> str:
        return f"{self.repository}:{self.version_tag}-{self.device}-{self.digest[:12]}"

    @property
    def aliases(self) -> list[str]:
        """Moving tags: this framework version's, and the stack's default for this device when
        the version is the host's (another release asked for never becomes the default)."""
        found = [f"{self.repository}:{self.version_tag}-{self.device}"]
        if self.host_version:
            found.insert(0, f"{self.repository}:{self.device}")
        return found

    @property
    def labels(self) -> dict[str, str]:
        return {
            f"{LABEL}.stack": self.stack,
            f"{LABEL}.device": self.device,
            f"{LABEL}.framework-version": self.framework_version,
            f"{LABEL}.python": self.python,
            f"{LABEL}.base-image": self.base_image,
            f"{LABEL}.content-hash": self.digest,
            f"{LABEL}.source-hash": source_digest(self.source),
            f"{LABEL}.version": pytest_mlscope.__version__,
        }


def _source_files(source: Path) -> Iterator[Path]:
    for path in sorted(source.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            yield path


@functools.cache
def source_digest(source: Path | None = None) -> str:
    """A hash of the pytest_mlscope package files: an image whose worker came from other sources
    than the host's could speak another protocol or measure differently."""
    source = source or Path(pytest_mlscope.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in _source_files(source):
        digest.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def worker_requirements(
    stack: str, device: str = "cpu", framework_version: str | None = None
) -> tuple[list[str], str]:
    """The worker's dependencies and the stack's framework, each pinned, and that framework's
    version.

    Pins are the versions installed here, so the container computes with what the host's
    subprocess runtime does; ``framework_version`` asks for another release of the framework.
    """
    from pytest_mlscope.predictors import predictor_class

    try:
        predictor = predictor_class(stack)
        extra, distributions = predictor.extra, predictor.distributions
    except StackUnavailable:
        # No predictor for it here (yet): the extra of the stack's name says what to install.
        extra, distributions = stack, (stack,)
    if extra is None:
        raise ContainerError(f"the {stack} predictor names no pytest-mlscope extra to install")
    try:
        declared = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        raise ContainerError(
            f"{DISTRIBUTION} is not installed, so its dependencies are unknown"
        ) from None
    framework_names = {d.lower() for d in distributions}
    pinned: list[str] = []
    version = framework_version
    framework_found = False
    for text in declared:
        requirement = Requirement(text)
        marker = requirement.marker
        core = marker is None or marker.evaluate({"extra": ""})
        if not (core or marker.evaluate({"extra": extra})):  # type: ignore[union-attr]
            continue
        name = requirement.name.lower()
        if name in HOST_ONLY:
            continue
        if name in framework_names:
            name = GPU_DISTRIBUTIONS.get(name, name) if device == "gpu" else name
            version = version or _installed(name) or _installed(requirement.name)
            if device == "gpu" and version and "+cpu" in version:
                version = version.split("+")[0]  # the host's CPU build; PyPI's is the CUDA one
            if version is None:
                raise ContainerError(
                    f"{requirement.name} is not installed here, so the version to put in the "
                    f"{stack} image is unknown: pass --framework-version"
                )
            pinned.append(f"{name}=={version}")
            framework_found = True
            continue
        installed = _installed(requirement.name)
        pinned.append(f"{requirement.name}=={installed}" if installed else str(requirement))
    if not framework_found or version is None:
        raise ContainerError(
            f"{DISTRIBUTION} has no extra {extra!r} naming a {stack} distribution to install"
        )
    return sorted(set(pinned), key=str.lower), version


def plan(
    stack: str,
    folder: Path | None = None,
    *,
    device: str = "cpu",
    base_image: str | None = None,
    framework_version: str | None = None,
    docker: Any = None,
) -> ImagePlan:
    name = "Dockerfile.gpu" if device == "gpu" else "Dockerfile"
    dockerfile = recipe(stack, name, folder)
    if dockerfile is None:
        roots = [root for root in recipe_folders(folder) if (root / stack).is_dir()]
        known = ", ".join(stacks(folder)) or "none"
        if roots and roots[0] != RECIPES:
            missing = roots[0] / stack / name
            raise ContainerError(f"no {missing} (stacks with a Dockerfile: {known})")
        if stack in BUNDLED_STACKS:
            raise ContainerError(
                f"the bundled recipe builds {stack} for {' and '.join(BUNDLED_STACKS[stack])} "
                f"only; a {device} image needs the project's own containers/{stack}/ with a "
                f"{name} (and a Dockerfile for the CPU: the folder replaces the bundled stack)"
            )
        raise ContainerError(f"no stack {stack!r} (stacks with a Dockerfile: {known})")
    if device == "gpu" and not base_image:
        raise ContainerError(
            f"a {stack} GPU image builds FROM a CUDA base image ({dockerfile}): pass --base "
            "(e.g. an nvidia/cuda runtime image with Python)"
        )
    system = SYSTEM_STACKS.get(stack)
    base = base_image or (system.base_image if system else DEFAULT_BASE_IMAGE)
    base_id = None
    base_labels: dict[str, str] = {}
    if docker is not None:
        try:
            found = docker.images.get(base)
            base_id, base_labels = found.id, dict(found.labels or {})
        except Exception:
            base_id = None
    python = "{}.{}".format(*sys.version_info[:2])
    if system is not None:
        requirements, version, python = _system_requirements(stack, system, base, base_labels)
        if framework_version and framework_version != version:
            raise ContainerError(
                f"{stack} comes from the base image's Debian package ({version} in {base}); "
                "another release needs another base, not --framework-version"
            )
    else:
        requirements, version = worker_requirements(stack, device, framework_version)
    made = ImagePlan(
        stack=stack,
        device=device,
        dockerfile=dockerfile,
        base_image=base,
        python=python,
        requirements=tuple(requirements),
        framework_version=version,
        source=Path(pytest_mlscope.__file__).resolve().parent,
        base_image_id=base_id,
        host_version=framework_version is None,
    )
    digest = hashlib.sha256()
    for part in (
        made.stack.encode(),  # one bundled Dockerfile builds every stack
        made.device.encode(),
        dockerfile.read_bytes(),
        "\n".join(made.requirements).encode(),
        made.python.encode(),
        base.encode(),
        (base_id or "").encode(),
        pytest_mlscope.__version__.encode(),
    ):
        digest.update(len(part).to_bytes(8, "big") + part)
    digest.update(source_digest(made.source).encode())
    return ImagePlan(**{**made.__dict__, "digest": digest.hexdigest()})


def _system_requirements(
    stack: str, system: SystemStack, base: str, labels: dict[str, str]
) -> tuple[list[str], str, str]:
    """The worker's requirements, the framework version and the Python of a system stack's
    base, read from the labels its base builder (``recipes/base/build.sh``) gave it."""
    packages = dict(
        item.split("=", 1) for item in labels.get(PACKAGES_LABEL, "").split() if "=" in item
    )
    framework_package = system.packages[0]
    if framework_package not in packages:
        where = f"{base} has no label {PACKAGES_LABEL} naming it" if labels else f"no {base} here"
        raise ContainerError(
            f"the {stack} stack builds FROM a base image with Debian's {framework_package} "
            f"({where}): build it with `mlscope containers base {stack}`"
        )
    python = labels.get(f"{LABEL}.python", "")
    if python.count(".") < 1:
        raise ContainerError(f"{base} has no label {LABEL}.python saying its Python version")
    # Debian's 1.0.0+git20180821.99bd997-8: the upstream release before any "+" or revision.
    version = re.split(r"[+~-]", packages[framework_package])[0]
    return sorted(system.requirements, key=str.lower), version, ".".join(python.split(".")[:2])

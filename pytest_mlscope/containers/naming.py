"""Names of container images: the repository, tags and labels, the stacks whose framework
comes with their base image, and the image a manifest's framework entry runs in."""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_mlscope.errors import MlscopeError

if TYPE_CHECKING:
    from pytest_mlscope.manifest import FrameworkSpec

DISTRIBUTION = "pytest-mlscope"
REPOSITORY = "mlscope"  # images are mlscope/<stack>:<tag>
# The pip stacks' base: the official slim image of the host's Python, the minor version the
# wheelhouse is built for (the Dockerfile refuses another).
DEFAULT_BASE_IMAGE = "python:{}.{}-slim".format(*sys.version_info[:2])
# What `mlscope containers base` builds (recipes/base/build.sh): python:3.11-slim's stand-in
# where no container registry is reachable.
DEFAULT_OFFLINE_BASE = "mlscope/base:bookworm"
LABEL = "org.mlscope"
# The worker never imports these: the store, the reports and pytest live on the host side only.
HOST_ONLY = frozenset({"pytest", "sqlalchemy", "jinja2", "matplotlib"})
# The distribution that carries a framework's GPU build, where it differs from the CPU one.
GPU_DISTRIBUTIONS = {"onnxruntime": "onnxruntime-gpu"}
# The stacks the bundled recipe (``recipes/Dockerfile``) builds, and for which devices; a
# project's own ``containers/<stack>/`` replaces one whole or adds another.
BUNDLED_STACKS = {
    "caffe": ("cpu",),
    "onnxruntime": ("cpu", "gpu"),
    "tensorflow": ("cpu",),
    "torch": ("cpu", "gpu"),
}
# Docker's names for machine architectures, as manifests' container maps use them.
ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


@dataclass(frozen=True)
class SystemStack:
    """A framework that comes with its base image's OS packages, not from pip.

    Caffe has no wheel; Debian packaged it up to bullseye (``python3-caffe``, Python 3.9).
    Its base image is debootstrapped with the packages (its recipe's ``base.sh``) and
    labelled with their versions; the worker's own dependencies are resolved for the base's
    Python rather than pinned to the host's (whose releases may not exist for 3.9), and numpy is
    left to Debian's, the one Caffe was built against.
    """

    base_image: str
    packages: tuple[str, ...]  # Debian packages the base holds; the first is the framework's
    requirements: tuple[str, ...]


SYSTEM_STACKS = {
    "caffe": SystemStack(
        base_image="mlscope/base:bullseye-caffe",
        packages=("python3-caffe", "libopenblas0-pthread"),
        requirements=(
            "pydantic>=2.6",
            "eval_type_backport>=0.2",  # pydantic reads `X | None` annotations on Python 3.9
            "PyYAML>=6.0",
            "packaging>=23.0",
            "psutil>=5.9",
            "scikit-learn>=1.0",  # numpy and scipy stay Debian's: Caffe was built against them
            "Pillow>=10.0",
            "opentelemetry-api>=1.20",
            "opentelemetry-sdk>=1.20",
            "nvidia-ml-py>=12.535",
        ),
    ),
}
# Where the base builder (``recipes/base/build.sh``, `mlscope containers base`) records the Debian
# packages it put in a base, as ``name=version`` separated by spaces.
PACKAGES_LABEL = f"{LABEL}.packages"


class ContainerError(MlscopeError):
    """An image cannot be planned or built, or no Docker daemon answers."""


def docker_arch(machine: str | None = None) -> str:
    machine = (machine or platform.machine()).lower()
    return ARCHES.get(machine, machine)


def default_image(stack: str, device: str = "cpu") -> str:
    """The moving tag `mlscope containers build` points at its latest build of a stack."""
    return f"{REPOSITORY}/{stack}:{device}"


def image_for(spec: FrameworkSpec, device: str, arch: str | None = None) -> str:
    """The image a framework entry runs in: its ``container`` map's entry for this machine's
    architecture and the cell's device, else the stack's default tag."""
    by_arch = (spec.container or {}).get(docker_arch(arch), {})
    return by_arch.get(device) or default_image(spec.name, device)  # type: ignore[call-overload]

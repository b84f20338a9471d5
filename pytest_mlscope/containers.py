"""Container images of software stacks: what goes into one, its content-hashed tag, the build.

An image holds pytest-mlscope's worker and one framework, nothing else. Its build context is put
together here: the stack's Dockerfile (``containers/<stack>/Dockerfile``), a requirements file
pinned to the versions installed on this host (so a container runs the same numpy and framework as
the subprocess runtime unless asked otherwise), a wheelhouse that the host builds with its own pip
(the image build then needs no network, no registry credentials and no CA bundle: the wheels come
in, the build runs with ``network_mode=none``), and the package source. The tag carries the stack,
the framework version, the device and a hash of all of that, so ``mlscope containers build``
rebuilds only when something that goes into the image changed.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.requirements import Requirement

import pytest_mlscope
from pytest_mlscope.errors import MlscopeError, StackUnavailable

if TYPE_CHECKING:
    from pytest_mlscope.manifest import FrameworkSpec

DISTRIBUTION = "pytest-mlscope"
REPOSITORY = "mlscope"  # images are mlscope/<stack>:<tag>
DEFAULT_BASE_IMAGE = "python:3.11-slim"
LABEL = "org.mlscope"
# The worker never imports these: the store, the reports and pytest live on the host side only.
HOST_ONLY = frozenset({"pytest", "sqlalchemy", "jinja2", "matplotlib"})
# The distribution that carries a framework's GPU build, where it differs from the CPU one.
GPU_DISTRIBUTIONS = {"onnxruntime": "onnxruntime-gpu"}
# Docker's names for machine architectures, as manifests' container maps use them.
ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


@dataclass(frozen=True)
class SystemStack:
    """A framework that comes with its base image's OS packages, not from pip.

    Caffe has no wheel; Debian packaged it up to bullseye (``python3-caffe``, Python 3.9).
    Its base image is debootstrapped with the packages (``containers/<stack>/base.sh``) and
    labelled with their versions; the worker's own dependencies are resolved for the base's
    Python rather than pinned to the host's (whose releases may not exist for 3.9), and numpy is
    left to Debian's, the one Caffe was built against.
    """

    base_image: str
    packages: tuple[str, ...]  # Debian packages the base holds; the first is the framework's
    requirements: tuple[str, ...]
    base_script: str  # builds the base, relative to containers/


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
        base_script="caffe/base.sh",
    ),
}
# Where ``containers/base/build.sh`` records the Debian packages it put in a base, as
# ``name=version`` separated by spaces.
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


# -- the docker daemon ---------------------------------------------------------------------------


def client(timeout: float = 60.0) -> Any:
    """A Docker SDK client that has answered a ping, or ContainerError saying why not."""
    try:
        import docker
    except ImportError:
        raise ContainerError(
            "the Docker SDK for Python is not installed: pip install pytest-mlscope[docker]"
        ) from None
    try:
        found = docker.from_env(timeout=int(timeout))
        found.ping()
    except Exception as exc:
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise ContainerError(f"no Docker daemon answers at {host}: {_first_line(exc)}") from None
    return found


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


# -- what goes into an image ---------------------------------------------------------------------


def containers_dir(start: Path | None = None) -> Path:
    """``containers/`` of the project: given, else in the current directory or above it."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "containers"
        if (candidate / "base" / "build.sh").exists() or any(candidate.glob("*/Dockerfile")):
            return candidate
    raise ContainerError(
        f"no containers/ folder with stack Dockerfiles in {here} or above it; "
        "pass --dir (the folder that holds <stack>/Dockerfile)"
    )


def stacks(folder: Path) -> list[str]:
    return sorted(p.parent.name for p in folder.glob("*/Dockerfile"))


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
    folder: Path,
    *,
    device: str = "cpu",
    base_image: str | None = None,
    framework_version: str | None = None,
    docker: Any = None,
) -> ImagePlan:
    dockerfile = folder / stack / ("Dockerfile.gpu" if device == "gpu" else "Dockerfile")
    if not dockerfile.exists():
        known = ", ".join(stacks(folder)) or "none"
        raise ContainerError(f"no {dockerfile} (stacks with a Dockerfile in {folder}: {known})")
    if device == "gpu" and not base_image:
        raise ContainerError(
            f"{dockerfile} builds FROM a CUDA base image: pass --base (e.g. an nvidia/cuda "
            "runtime image with Python)"
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
    base, read from the labels ``containers/base/build.sh`` gave it."""
    packages = dict(
        item.split("=", 1) for item in labels.get(PACKAGES_LABEL, "").split() if "=" in item
    )
    framework_package = system.packages[0]
    if framework_package not in packages:
        where = f"{base} has no label {PACKAGES_LABEL} naming it" if labels else f"no {base} here"
        raise ContainerError(
            f"the {stack} stack builds FROM a base image with Debian's {framework_package} "
            f"({where}): build it with containers/{system.base_script}"
        )
    python = labels.get(f"{LABEL}.python", "")
    if python.count(".") < 1:
        raise ContainerError(f"{base} has no label {LABEL}.python saying its Python version")
    # Debian's 1.0.0+git20180821.99bd997-8: the upstream release before any "+" or revision.
    version = re.split(r"[+~-]", packages[framework_package])[0]
    return sorted(system.requirements, key=str.lower), version, ".".join(python.split(".")[:2])


# -- building ------------------------------------------------------------------------------------


def wheelhouse_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "mlscope" / "wheelhouse"


def build_wheelhouse(
    requirements: list[str] | tuple[str, ...], target: Path, python: str | None = None
) -> None:
    """Wheels for every requirement and their dependencies, with this host's pip and network.

    ``pip wheel`` (not ``download``) so that a dependency published only as an sdist arrives
    built: the image has no compiler. For another Python than the host's (a system stack's
    base), ``pip download`` of binary wheels for that Python and this machine: the host cannot
    build wheels for an interpreter it does not have.
    """
    target.mkdir(parents=True, exist_ok=True)
    host_python = "{}.{}".format(*sys.version_info[:2])
    if python and python != host_python:
        _download_wheels(requirements, target, python)
        return
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write("\n".join(requirements) + "\n")
    try:
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--disable-pip-version-check",
                "--quiet",
                "--wheel-dir",
                str(target),
                "--requirement",
                handle.name,
            ],
            capture_output=True,
            text=True,
        )
    finally:
        os.unlink(handle.name)
    if completed.returncode != 0:
        tail = "\n".join(completed.stderr.strip().splitlines()[-15:])
        raise ContainerError(f"pip wheel for {', '.join(requirements)} failed:\n{tail}")


def _download_wheels(requirements: list[str] | tuple[str, ...], target: Path, python: str) -> None:
    tag = python.replace(".", "")
    machine = platform.machine()
    # Debian bullseye has glibc 2.31: any manylinux wheel up to that.
    platforms = [f"manylinux_2_{minor}_{machine}" for minor in (31, 28, 27, 24, 17, 12, 5)] + [
        f"manylinux2014_{machine}",
        f"manylinux2010_{machine}",
        f"manylinux1_{machine}",
    ]
    command = [
        sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet",
        "--only-binary=:all:", "--python-version", python, "--implementation", "cp",
        "--abi", f"cp{tag}", "--abi", "abi3", "--abi", "none",
        *(arg for p in platforms for arg in ("--platform", p)),
        "--dest", str(target), *requirements,
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        tail = "\n".join(completed.stderr.strip().splitlines()[-15:])
        raise ContainerError(
            f"pip download of wheels for Python {python} ({', '.join(requirements)}) failed:\n"
            f"{tail}"
        )


@dataclass
class Built:
    plan: ImagePlan
    image_id: str
    rebuilt: bool
    seconds: float
    size_mb: float


def find_image(docker: Any, reference: str) -> Any | None:
    import docker as sdk

    try:
        return docker.images.get(reference)
    except sdk.errors.ImageNotFound:
        return None


def build(made: ImagePlan, docker: Any, *, force: bool = False, log: Any = None) -> Built:
    """Build the image unless one with this content hash exists; move the aliases to it."""
    started = time.perf_counter()
    existing = None if force else find_image(docker, made.tag)
    rebuilt = existing is None
    if rebuilt:
        # One wheelhouse per requirement set: the context carries only this image's wheels
        # (pip's own cache keeps a second set from downloading again).
        key = hashlib.sha256("\n".join((made.python, *made.requirements)).encode()).hexdigest()
        wheels = wheelhouse_dir() / f"py{made.python}-{key[:16]}"
        if log:
            log(f"{made.stack}: building wheels for {len(made.requirements)} requirements")
        build_wheelhouse(made.requirements, wheels, made.python)
        with tempfile.TemporaryDirectory(prefix="mlscope-build-") as context_dir:
            context = Path(context_dir)
            shutil.copy(made.dockerfile, context / "Dockerfile")
            (context / "requirements.txt").write_text("\n".join(made.requirements) + "\n")
            # Hard links where the file system allows: the wheelhouse can be large (torch).
            shutil.copytree(wheels, context / "wheels", copy_function=_link_or_copy)
            shutil.copytree(
                made.source,
                context / "src" / "pytest_mlscope",
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            )
            if log:
                log(f"{made.stack}: docker build {made.tag} FROM {made.base_image}")
            try:
                existing, _ = docker.images.build(
                    path=str(context),
                    tag=made.tag,
                    buildargs={"BASE_IMAGE": made.base_image, "PYTHON_VERSION": made.python},
                    labels=made.labels,
                    # Everything a CPU build installs came in the context; a CUDA base may
                    # have to fetch Python from its distribution.
                    network_mode="host" if made.device == "gpu" else "none",
                    rm=True,
                    forcerm=True,
                    pull=False,
                )
            except Exception as exc:
                raise ContainerError(_build_failure(made, exc)) from None
    for alias in made.aliases:
        repository, _, tag = alias.rpartition(":")
        existing.tag(repository, tag)
    return Built(
        plan=made,
        image_id=existing.id,
        rebuilt=rebuilt,
        seconds=time.perf_counter() - started,
        size_mb=existing.attrs.get("Size", 0) / 1e6,
    )


def _link_or_copy(source: str, destination: str) -> str:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)
    return destination


def _build_failure(made: ImagePlan, exc: Exception) -> str:
    lines = []
    for entry in getattr(exc, "build_log", None) or []:
        text = entry.get("stream") or entry.get("error") or ""
        lines.extend(line for line in text.splitlines() if line.strip())
    tail = "\n".join(lines[-20:]) or _first_line(exc)
    hint = ""
    if "pull access denied" in tail or ("not found" in tail and made.base_image in tail):
        hint = (
            f"\n(the base image {made.base_image} is not here and could not be pulled: build an "
            "offline one with containers/base/build.sh and pass --base mlscope/base:bookworm)"
        )
    return f"building {made.tag} from {made.dockerfile} failed:\n{tail}{hint}"


def images(docker: Any) -> list[Any]:
    """Images this tool built, newest first."""
    found = docker.images.list(filters={"label": f"{LABEL}.stack"})
    return sorted(found, key=lambda image: image.attrs.get("Created", ""), reverse=True)


def superseded(docker: Any, stacks: list[str] | None = None) -> list[Any]:
    """Stack images that no moving tag points at any more.

    Every change to what goes into an image builds a new one under a new content-hashed tag and
    moves the moving tags (``mlscope/onnxruntime:cpu``, ``…:1.32.0-cpu``) to it; the build it
    replaced keeps only its content-hashed tag, and this finds it.
    """
    found = []
    for image in images(docker):
        labels = image.labels or {}
        if stacks and labels.get(f"{LABEL}.stack") not in stacks:
            continue
        digest = labels.get(f"{LABEL}.content-hash", "")
        moving = [t for t in image.tags if not (digest and t.endswith(f"-{digest[:12]}"))]
        if not moving:
            found.append(image)
    return found

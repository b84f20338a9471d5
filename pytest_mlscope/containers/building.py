"""The Docker daemon and builds: the client, the host-built wheelhouse, ``docker build`` with
no network, and the images this tool built (superseded ones included)."""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_mlscope.containers.naming import LABEL, SYSTEM_STACKS, ContainerError
from pytest_mlscope.containers.planning import ImagePlan, base_recipe, recipe

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


def build_base(stack: str | None = None, folder: Path | None = None, tag: str | None = None) -> str:
    """Build a base image without any container registry (debootstrap from a Debian mirror,
    then ``docker import``) and return its tag: the pip stacks' one, or a system stack's.

    The recipes are shell scripts because debootstrap is; they run as shipped in the wheel (or
    as the project's ``containers/`` overrides them), so no clone of this repository is needed.
    """
    script, default_tag = base_recipe(stack, folder)
    builder = recipe("base", "build.sh", folder)
    env = dict(os.environ)
    if builder is not None:  # a system stack's base.sh builds through the same builder
        env["MLSCOPE_BASE_BUILD"] = str(builder)
    if tag is None and stack is None:  # the builder's own default: its suite's tag
        suite = env.get("MLSCOPE_BASE_SUITE", "bookworm")
        default_tag = env.get("MLSCOPE_BASE_TAG") or f"mlscope/base:{suite}"
    chosen = tag or default_tag
    done = subprocess.run(["bash", str(script), *([tag] if tag else [])], env=env, check=False)
    if done.returncode != 0:
        raise ContainerError(
            f"{script} {chosen} failed (exit {done.returncode}); its output is above"
        )
    return chosen


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
                    buildargs={
                        "BASE_IMAGE": made.base_image,
                        "PYTHON_VERSION": made.python,
                        "STACK": made.stack,
                        # A system stack's framework is its base's OS package: the venv sees it.
                        "VENV_OPTIONS": (
                            "--system-site-packages" if made.stack in SYSTEM_STACKS else ""
                        ),
                    },
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
            "offline one with `mlscope containers base` and pass --base mlscope/base:bookworm)"
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


def prune(
    docker: Any, stacks: list[str] | None = None, *, dry_run: bool = False
) -> Iterator[tuple[str, float, str | None]]:
    """Remove the superseded builds (only name them, ``dry_run``): per image its name, its size
    in MB and why it was kept (a container still uses it, say), or None."""
    for image in superseded(docker, stacks):
        name = ", ".join(image.tags) or image.short_id
        size = image.attrs.get("Size", 0) / 1e6
        if not dry_run:
            try:
                docker.images.remove(image.id)
            except Exception as exc:
                yield name, size, _first_line(exc)
                continue
        yield name, size, None

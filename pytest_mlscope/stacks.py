"""Software stacks that cannot share the host's environment: a virtual environment of their own.

MXNet 1.9.1 (the last release) imports only with numpy < 1.24, while the host stack (TensorFlow,
recent scikit-learn) needs numpy >= 1.26. Its worker runs in a venv made for it, with the
versions that stack needs pinned, and pytest-mlscope's own code on ``PYTHONPATH`` — the worker
speaks the same protocol, only the interpreter differs. Containers do the same for stacks that
need another OS (``containers/``); a venv is enough when only Python packages clash.

Venvs live under ``$MLSCOPE_STACKS``, else ``~/.cache/mlscope/stacks/<name>-<hash>``, the hash
over the recipe, so a changed recipe is a new venv and every project on the machine shares one.
``mlscope stacks setup NAME`` makes one (from the package registry; nothing at test time).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pytest_mlscope.errors import MlscopeError


@dataclass(frozen=True)
class VenvStack:
    name: str
    framework: str  # the distribution whose version the manifest's specifier is checked against
    requirements: tuple[str, ...]
    why: str


# The worker's own needs (pydantic, PyYAML, packaging, scipy, scikit-learn's bundled data,
# Pillow, psutil, OpenTelemetry, NVML) at releases that accept this stack's numpy.
STACKS = {
    "mxnet": VenvStack(
        name="mxnet",
        framework="mxnet",
        requirements=(
            "mxnet==1.9.1",
            "numpy==1.23.5",
            "scipy==1.11.4",
            "scikit-learn==1.3.2",
            "pydantic>=2.6",
            "PyYAML>=6.0",
            "packaging>=23.0",
            "psutil>=5.9",
            "Pillow>=10.0",
            "opentelemetry-api>=1.20",
            "opentelemetry-sdk>=1.20",
            "nvidia-ml-py>=12.535",
        ),
        why="mxnet 1.9.1 fails to import with numpy >= 1.24 (np.bool); the host stack needs "
        "numpy >= 1.26",
    ),
}


# What the worker imports besides the framework: pinned at the host's releases in a rebuilt
# baseline stack, so only the framework (and its own dependencies) differ from the host.
WORKER_NEEDS = (
    "numpy",
    "scipy",
    "scikit-learn",
    "pydantic",
    "PyYAML",
    "packaging",
    "psutil",
    "Pillow",
    "opentelemetry-api",
    "opentelemetry-sdk",
    "nvidia-ml-py",
)


def baseline_stack(
    distribution: str, version: str, recorded: dict[str, str] | None = None
) -> VenvStack:
    """The software stack a baseline was measured on, as a venv recipe: its framework release,
    and the worker's needs at the releases the baseline recorded (numpy, say), else the host's.

    A framework upgrade is then timed A/B by naming the baseline: A in this venv, B on the host,
    interleaved across two workers. Content-hashed like every stack, so it is built once per
    machine and release.
    """
    from importlib import metadata

    pins = {}
    for name in WORKER_NEEDS:
        wanted = (recorded or {}).get(name)
        if wanted is None:
            try:
                wanted = metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
        pins[name] = wanted
    return VenvStack(
        name=f"{distribution}-{version}",
        framework=distribution,
        requirements=(f"{distribution}=={version}", *(f"{n}=={v}" for n, v in pins.items())),
        why=f"the baseline was measured on {distribution} {version}",
    )


class StackError(MlscopeError):
    """A venv stack is unknown, not set up, or could not be made."""


def get(name: str) -> VenvStack:
    try:
        return STACKS[name]
    except KeyError:
        raise StackError(f"no venv stack {name!r} (known: {', '.join(sorted(STACKS))})") from None


def root() -> Path:
    configured = os.environ.get("MLSCOPE_STACKS", "").strip()
    return Path(configured) if configured else Path.home() / ".cache" / "mlscope" / "stacks"


def location(stack: VenvStack) -> Path:
    recipe = json.dumps([stack.requirements, sys.version_info[:2]])
    return root() / f"{stack.name}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


def python(stack: VenvStack) -> Path:
    return location(stack) / "bin" / "python"


def installed_version(stack: VenvStack) -> str | None:
    """The framework's version in the stack's venv, read from its metadata (no import), or None
    when the venv is not set up (or was left half-made)."""
    folder = location(stack)
    if not (folder / ".complete").is_file():
        return None
    prefix = f"{stack.framework.replace('-', '_')}-"
    for info in (folder / "lib").glob(f"python*/site-packages/{prefix}*.dist-info"):
        return info.name.removeprefix(prefix).removesuffix(".dist-info")
    return None


def unavailable(stack: VenvStack) -> str | None:
    if installed_version(stack) is None:
        return (
            f"the {stack.name} stack (a venv of its own: {stack.why}) is not set up: run "
            f"`mlscope stacks setup {stack.name}`"
        )
    return None


def setup(stack: VenvStack, *, force: bool = False) -> Path:
    """Make the stack's venv with this Python, its requirements from the package registry.

    Under a file lock (two sessions set it up once), and the marker that makes it usable is
    written last, so a killed setup is redone rather than used.
    """
    from pytest_mlscope.zoo.cache import _locked

    target = location(stack)
    marker = target / ".complete"
    with _locked(target.with_name(f".{target.name}.lock")):
        if marker.is_file() and not force:
            return target
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
        completed = subprocess.run(
            [str(target / "bin" / "python"), "-m", "pip", "install", "-q",
             *stack.requirements],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if completed.returncode != 0:
            tail = "\n".join((completed.stderr or completed.stdout).strip().splitlines()[-15:])
            raise StackError(f"pip could not install the {stack.name} stack:\n{tail}")
        marker.write_text(json.dumps(list(stack.requirements)))
    return target


def source_path() -> str:
    """The folder holding the ``pytest_mlscope`` package: the venv worker imports it from there."""
    return str(Path(__file__).resolve().parent.parent)

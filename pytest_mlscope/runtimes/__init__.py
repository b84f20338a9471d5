"""Where a worker runs: in this process, or in a subprocess per software stack (containers:
``runtimes.docker``; which one serves a cell: ``runtimes.pool``)."""

from __future__ import annotations

from pathlib import Path

from pytest_mlscope.errors import MlscopeError
from pytest_mlscope.runtimes.base import HOST_RUNTIMES, RUNTIMES, Runtime

__all__ = ["RUNTIMES", "Runtime", "make_runtime"]


def make_runtime(
    kind: str, work_dir: Path, python_path: list[str], memory: str | None = None
) -> Runtime:
    if kind == "inprocess":
        from pytest_mlscope.runtimes.inprocess import InProcessRuntime

        return InProcessRuntime()
    if kind == "subprocess":
        from pytest_mlscope.runtimes.subprocess import SubprocessRuntime

        return SubprocessRuntime(work_dir=work_dir, python_path=python_path, memory=memory)
    raise MlscopeError(f"unknown runtime {kind!r}; expected one of {', '.join(HOST_RUNTIMES)}")

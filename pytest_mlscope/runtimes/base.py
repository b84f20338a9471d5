"""The one interface every runtime shares: evaluate a request, close."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from pytest_mlscope.errors import EvaluationFailed, MlscopeError
from pytest_mlscope.protocol import EvaluationRequest, EvaluationResult, RoundRequest, WorkerReply

RUNTIMES = ("subprocess", "inprocess")


class Runtime(ABC):
    name: str

    @abstractmethod
    def evaluate(
        self, request: EvaluationRequest | RoundRequest, timeout: float | None = None
    ) -> EvaluationResult:
        """Evaluate one cell (or time a round on a held model); raise WorkerCrashed,
        WorkerTimeout or EvaluationFailed."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Stop whatever the runtime started."""

    def describe(self) -> str:
        return self.name


def unwrap(reply: WorkerReply) -> EvaluationResult:
    if reply.ok and reply.result is not None:
        return reply.result
    raise EvaluationFailed(reply.error or "the worker replied without a result")


def make_runtime(kind: str, work_dir: Path, python_path: list[str]) -> Runtime:
    if kind == "inprocess":
        from pytest_mlscope.runtimes.inprocess import InProcessRuntime

        return InProcessRuntime()
    if kind == "subprocess":
        from pytest_mlscope.runtimes.subprocess import SubprocessRuntime

        return SubprocessRuntime(work_dir=work_dir, python_path=python_path)
    raise MlscopeError(f"unknown runtime {kind!r}; expected one of {', '.join(RUNTIMES)}")

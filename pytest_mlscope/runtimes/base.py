"""The one interface every runtime shares: evaluate a request, close."""

from __future__ import annotations

import itertools
import re
from abc import ABC, abstractmethod
from pathlib import Path

from pytest_mlscope.errors import EvaluationFailed, MlscopeError
from pytest_mlscope.protocol import EvaluationRequest, EvaluationResult, RoundRequest, WorkerReply
from pytest_mlscope.vocabulary import RUNTIMES  # noqa: F401 (imported from here)

HOST_RUNTIMES = ("subprocess", "inprocess")  # made by make_runtime; docker ones by the pool


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


def unwrap(reply: WorkerReply, work_dir: str | None = None) -> EvaluationResult:
    """The result, or EvaluationFailed with the worker's one-line error; an unexpected
    exception's traceback goes to a file under ``work_dir`` that the message names."""
    if reply.ok and reply.result is not None:
        return reply.result
    message = reply.error or "the worker replied without a result"
    if reply.traceback:
        if work_dir is not None:
            folder = Path(work_dir) / "tracebacks"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{reply.error_type or 'error'}-{next(_TRACEBACKS)}.txt"
            path.write_text(reply.traceback)
            message += f"; traceback: {path}"
        else:
            message += f"; traceback:\n{reply.traceback}"
    raise EvaluationFailed(message)


_TRACEBACKS = itertools.count(1)


_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def memory_bytes(text: str) -> int:
    """A memory size as Docker writes it (``150m``, ``8g``, ``1.5g``, ``4096`` bytes)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)i?b?\s*", text.lower())
    if not match or float(match[1]) <= 0:
        raise MlscopeError(f"expected a memory size such as 512m or 8g, got {text!r}")
    return int(float(match[1]) * _UNITS[match[2]])


def default_memory() -> str:
    """Half of this machine's memory: a runaway model fails its item, not the host."""
    import psutil

    return f"{psutil.virtual_memory().total // 2 // 2**20}m"


def check_ready(reply: WorkerReply, where: str) -> str | None:
    """Why a started worker cannot serve this host, or None: no ready line, or another protocol
    (a venv stack or image holding an older pytest-mlscope than the host's)."""
    from pytest_mlscope.protocol import PROTOCOL_VERSION

    if reply.error_type != "ready":
        return f"worker{where} sent {reply!r} instead of its ready line"
    if reply.version != PROTOCOL_VERSION:
        return (
            f"worker{where} speaks protocol {reply.version}, this host {PROTOCOL_VERSION}: its "
            "pytest-mlscope is not the host's; rebuild it (`mlscope stacks setup NAME` for a "
            "venv stack, `mlscope containers build` for an image)"
        )
    return None

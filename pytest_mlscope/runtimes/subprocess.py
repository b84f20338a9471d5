"""The subprocess runtime: one worker process per software stack, reused across items.

A worker that dies, hangs or outgrows its memory limit fails only the item it was on: the error
carries the cause and the tail of the worker's stderr, and the next item starts a fresh worker.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

from pytest_mlscope.errors import WorkerCrashed, WorkerTimeout
from pytest_mlscope.protocol import EvaluationRequest, EvaluationResult, RoundRequest, WorkerReply
from pytest_mlscope.runtimes.base import (
    Runtime,
    check_ready,
    default_memory,
    memory_bytes,
    unwrap,
)

STDERR_TAIL_LINES = 30
START_TIMEOUT_S = 120.0
# How often the worker's memory is looked at while an answer is awaited. A reading is ~50 µs of
# host CPU; twice a second keeps that far below anything the timing pass could see.
MEMORY_POLL_S = 0.5


def _tail(path: Path, lines: int = STDERR_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _resident_bytes(pid: int) -> int:
    """Resident memory of a process and its descendants; 0 once it is gone."""
    import psutil

    try:
        process = psutil.Process(pid)
        tree = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for member in tree:
        with contextlib.suppress(psutil.Error):
            total += member.memory_info().rss
    return total


def exit_description(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
            if name == "SIGKILL":  # nobody here sent it: the kernel's OOM killer, or a person
                return "killed by SIGKILL (out of memory, or killed from outside)"
            return f"killed by {name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class SubprocessRuntime(Runtime):
    name = "subprocess"
    _counter = itertools.count(1)

    def __init__(
        self,
        work_dir: Path,
        python: str = sys.executable,
        python_path: list[str] | None = None,
        env: dict[str, str] | None = None,
        memory: str | None = None,
        launcher: list[str] | None = None,
    ) -> None:
        self.work_dir = Path(work_dir)
        # A command the worker runs under (callgrind.launcher for the instruction-count pass).
        self.launcher = launcher or []
        self.python = python
        self.python_path = python_path or []
        self.env = env or {}
        # The worker and what it starts, by resident memory: past the limit the worker is killed
        # and its item fails saying so, before the kernel's OOM killer picks a victim at random.
        self.memory = memory or default_memory()
        self.memory_limit = memory_bytes(self.memory)
        self.process: subprocess.Popen[str] | None = None
        self.stderr_path: Path | None = None
        self.started = 0

    def _start(self) -> subprocess.Popen[str]:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.stderr_path = self.work_dir / f"worker-{os.getpid()}-{next(self._counter)}.stderr"
        # faulthandler: a segfault in a framework leaves the Python stack in the stderr tail.
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}
        # A worker outlives a pytest killed with -9 only as long as its current item: it watches
        # for its parent to go (see worker.watch_parent), even mid-prediction.
        env["MLSCOPE_PARENT_PID"] = str(os.getpid())
        if self.python_path:
            env["PYTHONPATH"] = os.pathsep.join(
                [*self.python_path, *filter(None, [env.get("PYTHONPATH")])]
            )
        with open(self.stderr_path, "w") as stderr:
            process = subprocess.Popen(
                [*self.launcher, self.python, "-m", "pytest_mlscope.worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=env,
                start_new_session=True,  # Ctrl-C in the terminal is handled by us, not the worker
            )
        self.started += 1
        self.process = process
        reply = self._read_reply(process, START_TIMEOUT_S, what="start")
        problem = check_ready(reply, f" {self.python}")
        if problem:
            self._kill()
            raise WorkerCrashed(problem)
        return process

    def _read_reply(
        self, process: subprocess.Popen[str], timeout: float | None, what: str
    ) -> WorkerReply:
        assert process.stdout is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while True:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                wait = MEMORY_POLL_S if remaining is None else min(MEMORY_POLL_S, remaining)
                if selector.select(wait):
                    break
                used = _resident_bytes(process.pid)
                if used > self.memory_limit:
                    self._kill()
                    raise WorkerCrashed(
                        f"worker (pid {process.pid}) was killed during {what} for exceeding its "
                        f"memory limit of {self.memory} (resident {used / 2**20:.0f} MiB; "
                        f"ini mlscope_worker_memory); its stderr ends with:\n"
                        f"{_tail(self.stderr_path) or '(empty)'}"  # type: ignore[arg-type]
                    )
                if remaining is not None and remaining <= wait:
                    self._kill()
                    raise WorkerTimeout(
                        f"worker (pid {process.pid}) gave no answer to {what} within "
                        f"{timeout:g} s and was killed; its stderr ends with:\n"
                        f"{_tail(self.stderr_path)}"  # type: ignore[arg-type]
                    )
        line = process.stdout.readline()
        if not line:
            code = process.wait(timeout=10)
            self.process = None
            raise WorkerCrashed(
                f"worker (pid {process.pid}) died during {what}: {exit_description(code)}; "
                f"its stderr ends with:\n{_tail(self.stderr_path) or '(empty)'}"  # type: ignore[arg-type]
            )
        return WorkerReply.model_validate_json(line)

    def evaluate(
        self, request: EvaluationRequest | RoundRequest, timeout: float | None = None
    ) -> EvaluationResult:
        process = self.process
        if process is None or process.poll() is not None:
            process = self._start()
        assert process.stdin is not None
        try:
            process.stdin.write(request.model_dump_json() + "\n")
            process.stdin.flush()
        except BrokenPipeError:
            self.process = None
            code = process.wait(timeout=10)
            raise WorkerCrashed(
                f"worker (pid {process.pid}) was gone before {request.cell.id}: "
                f"{exit_description(code)}"
            ) from None
        work_dir = request.work_dir if isinstance(request, EvaluationRequest) else None
        return unwrap(self._read_reply(process, timeout, what=request.cell.id), work_dir)

    def _kill(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def close(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        try:
            if process.stdin:
                process.stdin.close()
            process.wait(timeout=10)
        except (subprocess.TimeoutExpired, BrokenPipeError, OSError):
            self.process = process
            self._kill()

"""Instruction counts: a measure of work that a noisy machine cannot move.

Wall time on a shared 2-core CI box drifts by ±10 % from one second to the next (the same
process, the same model), so two CI jobs compared through a stored baseline cannot resolve a 3 %
slowdown however the statistics are done (``benchmarks/verdicts.py``). The number of instructions
a prediction executes does not drift: Valgrind's callgrind counts them, the same to a fraction of
a per cent from one process to the next, whatever else the machine is doing. It answers "does
this change make the model do more work?" — the question behind most framework and model
regressions — not "is it slower here, now?" (a change in cache behaviour or threading moves time
without moving the count). SQLite's and CodSpeed's CI gates count instructions for this reason.

The worker runs under ``valgrind --tool=callgrind --instr-atstart=no``: start-up, imports, the
model load and the warm-up run at Valgrind's uninstrumented speed, and only the counted rounds are
instrumented. The worker switches instrumentation on and dumps each round's totals itself, through
Valgrind's client requests: a magic instruction sequence that does nothing on a real CPU and that
Valgrind's JIT recognises. Python cannot emit it, so :func:`client_request` writes the 36 bytes of
x86-64 code into an executable page and calls them through ctypes (no compiler, no extension).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import math
import mmap
import os
import platform
import shutil
import statistics
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pytest_mlscope.errors import MlscopeError

T = TypeVar("T")

# valgrind.h: VG_USERREQ__RUNNING_ON_VALGRIND; callgrind.h: VG_USERREQ_TOOL_BASE('C','T') + n.
RUNNING_ON_VALGRIND = 0x1001
_CALLGRIND = (ord("C") << 24) | (ord("T") << 16)
ZERO_STATS = _CALLGRIND + 1
DUMP_STATS_AT = _CALLGRIND + 3
START_INSTRUMENTATION = _CALLGRIND + 4
STOP_INSTRUMENTATION = _CALLGRIND + 5

# uint64_t request(uint64_t *args, uint64_t default): rax = args, rdx = default, the preamble
# valgrind.h's __SPECIAL_INSTRUCTION_PREAMBLE (four rotations of rdi summing to 128 bits, a no-op),
# then xchg rbx,rbx (the "client request" marker); the answer comes back in rdx.
_X86_64_REQUEST = bytes.fromhex(
    "4889f8"  # mov rax, rdi
    "4889f2"  # mov rdx, rsi
    "48c1c703"  # rol rdi, 3
    "48c1c70d"  # rol rdi, 13
    "48c1c73d"  # rol rdi, 61
    "48c1c733"  # rol rdi, 51
    "4887db"  # xchg rbx, rbx
    "4889d0"  # mov rax, rdx
    "c3"  # ret
)

# The first instrumented calls count more than later ones (lazy set-up in the framework and in
# Python's specializing interpreter): this many are run and dropped; they also size the rounds.
SETTLE_CALLS = 2
# Then whole rounds, dropped too: a fresh process's count still falls by ~0.5 % over its first
# few million instructions.
SETTLE_ROUNDS = 3
# Empty reads whose median is the reading's own cost.
EMPTY_READS = 5
# A round runs calls until about this many instructions (under a second under callgrind), so
# what is left of the reading's cost (tens of instructions once settled) is a negligible share.
ROUND_INSTRUCTIONS = 3_000_000
MAX_CALLS_PER_ROUND = 1000


# --separate-threads=yes names each thread's dump with its Valgrind thread number; 1 is the
# process's initial thread.
MAIN_THREAD_SUFFIX = "-01"


class CallgrindError(MlscopeError):
    pass


_request: Callable[[int, int], int] | None = None
_page: mmap.mmap | None = None


def supported() -> str | None:
    """None when instruction counting can work here, else why not."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"instruction counting needs x86-64 (this machine is {platform.machine()})"
    if shutil.which("valgrind") is None:
        return "instruction counting needs Valgrind (apt-get install valgrind)"
    return None


def client_request(code: int, *args: int) -> int:
    """Valgrind client request ``code`` with up to five arguments; 0 when not under Valgrind."""
    global _request, _page
    if _request is None:
        if platform.machine().lower() not in ("x86_64", "amd64"):
            raise CallgrindError(supported() or "unsupported machine")
        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        page.write(_X86_64_REQUEST)
        address = ctypes.addressof(ctypes.c_char.from_buffer(page))
        function = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p, ctypes.c_uint64)(address)
        _page = page  # the code must outlive every call

        def request(args: int, default: int) -> int:
            return int(function(args, default))

        _request = request
    words = (ctypes.c_uint64 * 6)(code, *args, *([0] * (5 - len(args))))
    return _request(ctypes.addressof(words), 0)


def running_on_valgrind() -> bool:
    """Whether this process runs under Valgrind. Every worker asks at start, so the cheap test
    comes first: Valgrind preloads its own library into the programs it runs, and without it no
    executable page is mapped (some hardened systems refuse one)."""
    if "vgpreload" not in os.environ.get("LD_PRELOAD", ""):
        return False
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False  # no client requests here, so no counting either
    return client_request(RUNNING_ON_VALGRIND) != 0


def launcher(out_dir: Path) -> list[str]:
    """The command prefix that starts a worker under callgrind, instrumentation off."""
    reason = supported()
    if reason:
        raise CallgrindError(reason)
    return [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        "--quiet",
        "--separate-threads=yes",
        f"--callgrind-out-file={Path(out_dir) / 'callgrind.%p'}",
    ]


def read_totals(path: Path) -> int:
    """The total of the first event (Ir: instructions executed) in a callgrind dump."""
    with open(path) as dump:
        for line in dump:
            if line.startswith("totals:"):
                return int(line.split()[1])
    raise CallgrindError(f"{path}: no 'totals:' line in this callgrind dump")


class Counter:
    """Instructions executed between two reads, in this process (all its threads)."""

    def __init__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise CallgrindError("instructions are counted on the main thread only")
        if not running_on_valgrind():
            raise CallgrindError(
                "counting instructions needs the worker to run under valgrind --tool=callgrind "
                "(callgrind.launcher)"
            )
        self.out_file = Path(_out_file())
        self._label = ctypes.create_string_buffer(b"mlscope")

    def __enter__(self) -> Counter:
        client_request(START_INSTRUMENTATION)
        client_request(ZERO_STATS)
        return self

    def __exit__(self, *exc: object) -> None:
        client_request(STOP_INSTRUMENTATION)

    def read(self) -> int:
        """Instructions since the previous read (or since entering), then zero."""
        client_request(DUMP_STATS_AT, ctypes.addressof(self._label))  # since the last zero
        # Dumps are numbered per process and split per thread (callgrind.PID.N-TT, a file for
        # each thread that ran since the last one); each is removed once read, so what is there
        # is the dump just written. Only the main thread's counts: the frameworks run on it
        # (one thread, see environment), and any other thread that wakes now and then (a
        # library's timer, a pool) would add instructions by the wall-clock second.
        dumps = list(self.out_file.parent.glob(f"{self.out_file.name}.*"))
        mine = [d for d in dumps if d.name.endswith(MAIN_THREAD_SUFFIX)]
        try:
            if len(mine) != 1:
                raise CallgrindError(
                    f"expected one callgrind dump {self.out_file}.N{MAIN_THREAD_SUFFIX}, found "
                    f"{len(mine)}"
                )
            return read_totals(mine[0])
        finally:
            for dump in dumps:
                dump.unlink(missing_ok=True)
            client_request(ZERO_STATS)  # reading the dump is work too: it must not count


def _out_file() -> str:
    """Where callgrind writes this process's dumps (the launcher's --callgrind-out-file)."""
    for option in os.environ.get("MLSCOPE_CALLGRIND_OUT", "").split():
        return option.replace("%p", str(os.getpid()))
    raise CallgrindError(
        "MLSCOPE_CALLGRIND_OUT is not set: start the worker with callgrind.launcher and "
        "callgrind.environment"
    )


def environment(out_dir: Path) -> dict[str, str]:
    """The environment of a worker started with :func:`launcher`.

    Besides where its dumps go: one framework thread (an idle pool's spin-waits would count as
    work, and how long they spin depends on scheduling) and a fixed hash seed (set and dict
    orders, and so the code paths taken, otherwise differ from one process to the next).
    """
    from pytest_mlscope.predictors.base import THREADS_ENV

    return {
        "MLSCOPE_CALLGRIND_OUT": str(Path(out_dir) / "callgrind.%p"),
        THREADS_ENV: "1",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONHASHSEED": "0",
    }


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Python's cyclic collector runs every few hundred allocations, in one round and not the
    next: millions of instructions that belong to no call. Collected before, paused during."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Reader:
    """Instructions executed since the previous read, less the cost of reading.

    A read is a client request from Python through ctypes: some 55,000 instructions, falling by a
    few thousand over a process's first reads. Its median over a few empty reads, taken when
    :meth:`settle` is called, comes off every figure, so a small model's rounds count its calls,
    not the bookkeeping around them.
    """

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.overhead = 0.0
        counter.read()  # the collection and the first request's set-up
        self.settle()

    def settle(self) -> None:
        self.overhead = statistics.median(self.counter.read() for _ in range(EMPTY_READS))

    def __call__(self) -> float:
        return self.counter.read() - self.overhead


@contextlib.contextmanager
def counting() -> Iterator[_Reader]:
    with Counter() as counter, _no_gc():
        yield _Reader(counter)


def count_calls(
    call: Callable[[T], object],
    inputs: Sequence[T],
    rounds: int,
    round_instructions: float = ROUND_INSTRUCTIONS,
    max_calls_per_round: int = MAX_CALLS_PER_ROUND,
    settle_rounds: int = SETTLE_ROUNDS,
) -> list[float]:
    """Instructions per call, one figure per round (inputs round-robin, as the timing loop).

    Each round runs enough calls to execute about ``round_instructions`` (at least one call), so
    what is left of the reading's own cost is a negligible part of the figure.
    """
    if not inputs:
        raise ValueError("count_calls needs at least one input")
    figures = []
    with counting() as read:
        for i in range(SETTLE_CALLS):  # first instrumented calls; they size the rounds
            call(inputs[i % len(inputs)])
        per_call = max(1.0, read() / SETTLE_CALLS)
        calls = min(max_calls_per_round, max(1, math.ceil(round_instructions / per_call)))
        position = 0
        for round_ in range(-settle_rounds, rounds):  # settling: quickening, allocator growth
            if round_ == -1:  # the reading's cost as it is now; the next round is dropped too
                read.settle()
            for _ in range(calls):
                call(inputs[position % len(inputs)])
                position += 1
            figure = read() / calls
            if round_ >= 0:
                figures.append(figure)
    return figures


def count_one(function: Callable[[], Any]) -> float:
    """Instructions one call of ``function`` executes (for calibrating extra work)."""
    with counting() as read:
        function()
        return read()

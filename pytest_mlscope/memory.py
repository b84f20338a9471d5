"""How much memory a model takes in its worker: the peak resident set over loading it and running
it, above what the process held just before.

The process's own peak (``ru_maxrss``) says more about the largest model a worker ever held than
about this one, so the window starts anew: the kernel's high-water mark is reset
(``/proc/self/clear_refs``, Linux 4.0 and later) after free memory went back to the system (a
full collection, then glibc's ``malloc_trim``). That is not enough in a worker that held other
models (a framework keeps pools of its own that the next model reuses unseen), so the session
sends each timed item to a worker that served nothing before. Where the peak cannot be read the
figure is not measured, never estimated.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
from functools import cache

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"
_RESET_PEAK = "5"  # clear_refs: reset the peak resident set size (VmHWM) to the current one


def _status_kib(field: str) -> int | None:
    try:
        with open(_STATUS, encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


@cache
def _malloc_trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc (musl): nothing to trim


def release_free_memory() -> None:
    """Hand what the allocators hold free back to the system."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class PeakWindow:
    """One item's window: ``start()`` before the model loads, ``peak()`` whenever a phase ends.

    Readings are the whole process's, at the window's edges only (no sampling thread: the
    kernel keeps the high-water mark itself)."""

    def __init__(self) -> None:
        self.before: int | None = None  # bytes resident when the window started
        self.why_not: str | None = None

    def start(self) -> None:
        release_free_memory()
        try:
            with open(_CLEAR_REFS, "w", encoding="ascii") as refs:
                refs.write(_RESET_PEAK)
        except OSError as exc:
            self.why_not = f"the peak resident set cannot be reset here ({exc.strerror})"
            return
        rss = _status_kib("VmRSS")
        if rss is None:
            self.why_not = f"{_STATUS} has no VmRSS"
            return
        self.before = rss * 1024

    def peak(self) -> int | None:
        """The highest resident set since ``start()``, in bytes; None where not measurable."""
        if self.before is None:
            return None
        hwm = _status_kib("VmHWM")
        return None if hwm is None else hwm * 1024

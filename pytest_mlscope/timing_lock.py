"""The timing lock: items of one pytest-xdist session are measured one at a time, because parallel
items would take each other's cores and memory bandwidth, and measure that."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


class TimingTurn:
    """The timing lock pytest-xdist workers share; a part of :class:`MlscopeSession`."""

    @contextlib.contextmanager
    def timing_turn(self) -> Iterator[None]:
        """Hold the session's timing lock, when it has one (pytest-xdist workers share it), for
        as long as an item is measured: parallel items would take each other's cores and
        memory bandwidth, and measure that. The wait is not the item's time, and is counted."""
        self.lock_wait_s = 0.0
        if self.settings.timing_lock is None:
            yield
            return
        import fcntl

        started = time.monotonic()
        with open(self.settings.timing_lock, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.lock_wait_s = time.monotonic() - started
            self.lock_waited_s += self.lock_wait_s
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

"""Which process owns a running run: host, pid and start time, so a session can tell a run whose
process was killed from one still going."""

from __future__ import annotations

import os
import platform


def session_owner() -> str:
    """This process as the owner of a run: host, pid and start time (a pid alone is reused)."""
    import psutil

    return f"{platform.node()} {os.getpid()} {psutil.Process().create_time():.2f}"


def _owner_host(owner: str) -> str:
    return owner.rsplit(" ", 2)[0]


def _owner_alive(owner: str) -> bool:
    import psutil

    try:
        _host, pid, created = owner.rsplit(" ", 2)
        process = psutil.Process(int(pid))
        return abs(process.create_time() - float(created)) < 1.0
    except psutil.AccessDenied:  # someone else's process, alive: not ours to judge
        return True
    except (ValueError, psutil.NoSuchProcess):  # a zombie is a NoSuchProcess too
        return False

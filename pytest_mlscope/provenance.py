"""Where a run's code came from: the git commit, branch and dirtiness of the checkout.

Asked of git once per session and stored with the run; kept apart from the database code, which
only stores what it is given.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

GIT_TIMEOUT_S = 10


@dataclass(frozen=True)
class GitInfo:
    commit: str | None
    branch: str | None
    dirty: bool | None


def _git(path: str | os.PathLike[str], *args: str) -> str | None:
    """Output of one git command, or None when it fails for any reason."""
    # GIT_OPTIONAL_LOCKS=0: `git status` must not take the index lock while the user works.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        completed = subprocess.run(
            ["git", "-C", os.fspath(path), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            env=env,
            check=False,
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    if completed.returncode != 0:
        return None
    return completed.stdout.strip()


def git_info(path: str | os.PathLike[str]) -> GitInfo | None:
    """Commit, branch and dirtiness of the checkout at ``path``; None outside a git checkout.

    Never raises: a missing or broken git must not stop a test session from recording results.
    """
    if _git(path, "rev-parse", "--is-inside-work-tree") != "true":
        return None
    commit = _git(path, "rev-parse", "--verify", "-q", "HEAD") or None
    # symbolic-ref rather than `rev-parse --abbrev-ref`: it names the branch of a repository
    # with no commit yet, and fails (None) on a detached HEAD instead of answering "HEAD".
    branch = _git(path, "symbolic-ref", "--short", "-q", "HEAD") or None
    # Untracked files are left out: the results database and other outputs a session writes
    # would otherwise mark every run dirty.
    status = _git(path, "status", "--porcelain", "--untracked-files=no")
    return GitInfo(commit=commit, branch=branch, dirty=None if status is None else bool(status))

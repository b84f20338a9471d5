"""One exception type per kind of failure a user can act on.

Each message is meant to be read by a person in a test report: it says what was found, what was
expected and where (file:line:key, item id).
"""

from __future__ import annotations


class MlscopeError(Exception):
    """Base of every error pytest-mlscope raises on purpose."""


class StoreError(MlscopeError):
    """The results database cannot be opened, a run or baseline asked for is not in it, or a
    change asked for (moving a baseline, say) is refused. Defined here, not in the store, so
    code that also runs in a worker (the artifact cache) catches it without the database."""


class ManifestError(MlscopeError):
    """A manifest is invalid; carries every problem found, each with file:line:key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class ArtifactError(MlscopeError):
    """A model artifact is missing, cannot be built, or does not match its recorded checksum."""


class StackUnavailable(MlscopeError):
    """The software stack an item needs (framework, version, device) is not on this host."""


class WorkerCrashed(MlscopeError):
    """The worker process died while evaluating an item."""


class WorkerTimeout(MlscopeError):
    """The worker did not answer within the per-item timeout and was killed."""


class EvaluationFailed(MlscopeError):
    """The worker ran but the evaluation raised; the message carries the worker-side traceback."""


class AccuracyFailed(MlscopeError):
    """An item's outputs missed an accuracy target (top-k, golden outputs or agreement)."""


class RegressionDetected(MlscopeError):
    """An item is slower (or less accurate) than its baseline, beyond noise and threshold."""


class RegressionWarning(UserWarning):
    """A regression reported as a warning because failures were turned off (--mlscope-no-fail)."""

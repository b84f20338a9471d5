"""Where a worker runs: in this process, or in a subprocess per software stack."""

from pytest_mlscope.runtimes.base import Runtime, make_runtime

__all__ = ["Runtime", "make_runtime"]

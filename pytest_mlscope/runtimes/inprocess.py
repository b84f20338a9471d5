"""The in-process runtime: fastest to start, no isolation; for debugging and unit tests."""

from __future__ import annotations

from pytest_mlscope.protocol import EvaluationRequest, EvaluationResult, RoundRequest
from pytest_mlscope.runtimes.base import Runtime, unwrap


class InProcessRuntime(Runtime):
    name = "inprocess"

    def evaluate(
        self, request: EvaluationRequest | RoundRequest, timeout: float | None = None
    ) -> EvaluationResult:
        from pytest_mlscope.worker import handle

        work_dir = request.work_dir if isinstance(request, EvaluationRequest) else None
        result = unwrap(handle(request), work_dir)
        # This process has held pytest and every model before this one: its peak says nothing
        # of the model's own memory.
        return result.model_copy(update={"memory": None})

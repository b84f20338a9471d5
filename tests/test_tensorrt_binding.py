"""TensorRT runs on the addresses its context was given last; each prediction must bind its own
batch. Checked with a recording stand-in for the execution context (CI has no GPU): the real
engine path runs in benchmarks/gpu_check.py on a GPU machine."""

from __future__ import annotations

from typing import Any

from pytest_mlscope.predictors.tensorrt import TensorRTPredictor


class Buffer:
    def __init__(self, address: int, shape: tuple[int, ...]) -> None:
        self.address, self.shape = address, shape

    def data_ptr(self) -> int:
        return self.address


class Context:
    """Records what input address each execution ran on."""

    def __init__(self) -> None:
        self.addresses: dict[str, int] = {}
        self.ran_on: list[int] = []
        self.bindings = 0

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> None:
        pass

    def set_tensor_address(self, name: str, address: int) -> None:
        self.addresses[name] = address
        self.bindings += 1

    def execute_async_v3(self, stream: Any) -> None:
        self.ran_on.append(self.addresses["input"])


class Stream:
    cuda_stream = 0

    def synchronize(self) -> None:
        pass


def test_each_prediction_runs_on_its_own_batch_and_a_repeated_batch_binds_once() -> None:
    predictor = TensorRTPredictor()
    predictor.context, predictor.stream = Context(), Stream()
    predictor.input_name, predictor.output_name = "input", "logits"
    first = (Buffer(1000, (8, 1, 8, 8)), Buffer(1, (8, 10)))
    second = (Buffer(2000, (8, 1, 8, 8)), Buffer(2, (8, 10)))
    outputs = [predictor.predict(batch) for batch in (first, second, first)]
    assert predictor.context.ran_on == [1000, 2000, 1000]
    assert [o.address for o in outputs] == [1, 2, 1]
    for _ in range(10):  # single_stream: one batch over and over, bound once
        predictor.predict(first)
    assert predictor.context.ran_on[-10:] == [1000] * 10
    assert predictor.context.bindings == 6  # two addresses for each of the three switches

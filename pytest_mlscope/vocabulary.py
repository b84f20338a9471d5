"""The plugin's vocabulary, defined once: the built-in frameworks, devices, scenarios and trace
levels that options, markers, manifests, the worker protocol and the CLI all read.

Standard library only: the plugin module imports it in every pytest run, and the worker in every
stack image (the Caffe image's Python 3.9 included).
"""

from __future__ import annotations

from typing import Literal, get_args

# Framework name -> its predictor ("module:Class"); entry points and the ini add more.
BUILTIN_PREDICTORS = {
    "torch": "pytest_mlscope.predictors.torch:TorchPredictor",
    "onnxruntime": "pytest_mlscope.predictors.onnxruntime:OnnxRuntimePredictor",
    "tensorflow": "pytest_mlscope.predictors.tensorflow:TensorFlowPredictor",
    "mxnet": "pytest_mlscope.predictors.mxnet:MXNetPredictor",
    "tensorrt": "pytest_mlscope.predictors.tensorrt:TensorRTPredictor",
    "caffe": "pytest_mlscope.predictors.caffe:CaffePredictor",
    "llamacpp": "pytest_mlscope.predictors.llamacpp:LlamaCppPredictor",
}
FRAMEWORKS = tuple(BUILTIN_PREDICTORS)

# Where a worker runs (--mlscope-runtime); docker workers are made per image (runtimes.pool).
RUNTIMES = ("subprocess", "inprocess", "docker")

Device = Literal["cpu", "gpu"]
DEVICES: tuple[Device, ...] = get_args(Device)

# single_stream: one query at a time, latency; offline: every batch back to back, throughput;
# generate: a prompt in, a fixed number of new tokens decoded greedily, timed token by token.
Scenario = Literal["single_stream", "offline", "generate"]
SCENARIOS: tuple[Scenario, ...] = get_args(Scenario)

# Trace levels nest: each records what the one before it does, and more.
TraceLevel = Literal["none", "model", "framework", "library", "system", "full"]
TRACE_LEVELS: tuple[TraceLevel, ...] = get_args(TraceLevel)

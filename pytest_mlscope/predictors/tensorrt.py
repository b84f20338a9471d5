"""TensorRT predictor: the ONNX artifact built into an engine for this GPU, cached.

An engine is specific to the TensorRT version and the GPU it was built on, and building one takes
seconds to minutes, so engines are kept beside the artifact cache under a key of the ONNX file's
sha256, the TensorRT version, the GPU's name and compute capability and the batch-size profile.
Device buffers are torch CUDA tensors (torch is in the same environment wherever a CUDA build of
it is), so nothing but TensorRT itself is needed on top. Per-layer times come from TensorRT's
``IProfiler``, in the layer-table schema of the other predictors.

Without an NVIDIA GPU the items skip before a worker starts, with the reason (see
``framework_unavailable`` and the hardware requirements): TensorRT runs on GPUs only.

A user's own serialized plan (``tensorrt_plan``, ``.plan`` / ``.engine``) loads as it is, and only
on the TensorRT release the manifest says built it (``built_with``).

Not yet run on a GPU by this project's CI (it has none); ``benchmarks/gpu_check.py`` is the check
a machine with one runs.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
from packaging.version import Version

from pytest_mlscope.errors import ArtifactError, StackUnavailable
from pytest_mlscope.predictors.base import Predictor
from pytest_mlscope.protocol import ArtifactRef, LayerProfile, LayerRow, PredictorInfo

# The optimization profile: batch sizes 1..MAX_BATCH, tuned for OPT_BATCH.
OPT_BATCH = 8
MAX_BATCH = 64
WORKSPACE_BYTES = 1 << 30


def engine_key(onnx_sha256: str, trt_version: str, gpu: str, capability: str) -> str:
    """The cache key of an engine: a different model, TensorRT or GPU needs a new build."""
    text = "|".join([onnx_sha256, trt_version, gpu, capability, f"{OPT_BATCH}/{MAX_BATCH}"])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def engine_dir() -> Path:
    base = os.environ.get("MLSCOPE_CACHE") or str(Path.home() / ".cache" / "mlscope")
    return Path(base) / "tensorrt-engines"


def plan_refused(artifact: ArtifactRef, version: str) -> None:
    """Refuse a serialized plan that another TensorRT release built, before deserializing it:
    TensorRT would refuse it too, with a less helpful message, or (across patch releases
    without version compatibility) crash."""
    built_with = str(artifact.metadata.get("built_with", ""))
    if Version(built_with).release[:3] != Version(version).release[:3]:
        raise StackUnavailable(
            f"{artifact.path}: a TensorRT plan built with TensorRT {built_with} cannot run on "
            f"TensorRT {version}: pin tensorrt=={built_with} for this framework, or point the "
            "manifest at the ONNX file, which is built into an engine here"
        )


class TensorRTPredictor(Predictor):
    name = "tensorrt"
    formats = ("onnx", "tensorrt_plan")
    distributions = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11")
    extra = "tensorrt"
    devices = ("gpu",)

    def __init__(self, device: str = "gpu") -> None:
        super().__init__(device)
        self.engine: Any = None
        self.context: Any = None
        self.stream: Any = None
        self.input_name = ""
        self.output_name = ""
        self._bound: Any = None  # the prepared batch the context's addresses point at
        self.engine_path: Path | None = None
        self.built = False

    def import_framework(self) -> None:
        import tensorrt  # noqa: F401
        import torch  # noqa: F401

    def load(self, artifact: ArtifactRef) -> None:
        import tensorrt as trt
        import torch

        if artifact.format not in self.formats:
            raise ArtifactError(f"{artifact.path}: tensorrt cannot load format {artifact.format!r}")
        if artifact.format == "tensorrt_plan":
            plan_refused(artifact, trt.__version__)
        if not torch.cuda.is_available():
            raise StackUnavailable("TensorRT needs a CUDA GPU; torch sees none")
        logger = trt.Logger(trt.Logger.WARNING)
        if artifact.format == "tensorrt_plan":  # the user's engine, as they serialized it
            self.engine_path = Path(artifact.path)
            self._deserialize(trt, logger, self.engine_path.read_bytes())
            return
        name = torch.cuda.get_device_name()
        major, minor = torch.cuda.get_device_capability()
        key = engine_key(artifact.sha256, trt.__version__, name, f"{major}.{minor}")
        self.engine_path = engine_dir() / f"{key}.engine"
        if self.engine_path.exists():
            plan = self.engine_path.read_bytes()
        else:
            plan = self._build(trt, logger, artifact.path)
            self.engine_path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.engine_path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_bytes(plan)
            temporary.replace(self.engine_path)  # two workers building at once: one wins whole
            self.built = True
        self._deserialize(trt, logger, plan)

    def _deserialize(self, trt: Any, logger: Any, plan: bytes) -> None:
        import torch

        runtime = trt.Runtime(logger)
        self.engine = runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise ArtifactError(
                f"{self.engine_path}: TensorRT {trt.__version__} could not deserialize the "
                "engine (built for another GPU?)"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.stream = torch.cuda.Stream()

    def _build(self, trt: Any, logger: Any, onnx_path: str) -> bytes:
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # explicit batch: the only mode of TensorRT 10
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(onnx_path):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ArtifactError(f"{onnx_path}: TensorRT's ONNX parser refused it: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        # FP32 as the other frameworks compute, so the agreement check compares like with like:
        # TF32 (on by default from Ampere on) moves logits past the manifests' tolerances.
        config.clear_flag(trt.BuilderFlag.TF32)
        # Layer names and per-layer timing in the profiling pass need detailed verbosity.
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        profile = builder.create_optimization_profile()
        tensor = network.get_input(0)
        shape = tuple(tensor.shape)[1:]
        profile.set_shape(tensor.name, (1, *shape), (OPT_BATCH, *shape), (MAX_BATCH, *shape))
        config.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise ArtifactError(f"{onnx_path}: TensorRT could not build an engine")
        return bytes(plan)

    def prepare_input(self, batch: np.ndarray) -> Any:
        """The batch on the GPU and an output buffer of its own: copies are not timed. Each
        prepared batch owns its output, so the outputs of two batches never share memory."""
        import torch

        if len(batch) > MAX_BATCH:
            raise ArtifactError(f"batch {len(batch)} exceeds the engine's profile ({MAX_BATCH})")
        device_input = torch.from_numpy(np.ascontiguousarray(batch)).cuda()
        self.context.set_input_shape(self.input_name, tuple(device_input.shape))
        shape = tuple(self.context.get_tensor_shape(self.output_name))
        return device_input, torch.empty(shape, dtype=torch.float32, device="cuda")

    def predict(self, prepared: Any) -> Any:
        # The context runs on whatever addresses it was given last: bind this batch's, when it
        # is not the batch bound already (host-side bookkeeping, a few µs; a single_stream
        # item repeats one batch and binds once). Synchronized: a sample is the inference's
        # time, not the time to queue it.
        if prepared is not self._bound:
            device_input, output = prepared
            self.context.set_input_shape(self.input_name, tuple(device_input.shape))
            self.context.set_tensor_address(self.input_name, device_input.data_ptr())
            self.context.set_tensor_address(self.output_name, output.data_ptr())
            self._bound = prepared
        self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()
        return prepared[1]

    def to_numpy(self, output: Any) -> np.ndarray:
        return output.detach().cpu().numpy()

    def profile(
        self, prepared: Any, iterations: int, level: str, timeline: Any, trace_dir: Any
    ) -> LayerProfile:
        import tensorrt as trt

        totals: dict[str, list[float]] = {}

        class LayerTimes(trt.IProfiler):  # type: ignore[misc]
            def report_layer_time(self, layer_name: str, ms: float) -> None:
                totals.setdefault(layer_name, []).append(ms * 1e3)

        self.context.profiler = LayerTimes()
        try:
            steps = self.timeline_predictions(prepared, iterations, timeline)
        finally:
            self.context.profiler = None
        rows = [
            LayerRow(
                layer=name,
                op_type=_layer_kind(name),
                device="gpu",
                calls=len(times) // max(1, iterations) or 1,
                self_us=sum(times) / max(1, iterations),
                total_us=sum(times) / max(1, iterations),
            )
            for name, times in totals.items()
        ]
        notes = ["TensorRT IProfiler: fused layers are named after every layer they fused"]
        return rows, steps, notes

    def close(self) -> None:
        self.context = self.engine = self.stream = None
        self._bound = None

    def info(self) -> PredictorInfo:
        import tensorrt as trt
        import torch

        return self.described(
            trt.__version__,
            gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            engine=str(self.engine_path) if self.engine_path else None,
            engine_built_now=self.built,
        )


def _layer_kind(name: str) -> str:
    """TensorRT names a fused layer after what it fused (``/features/features.0/Conv + Relu``)."""
    lowered = name.lower()
    for kind in ("conv", "gemm", "matmul", "pool", "relu", "softmax", "reformat", "shuffle"):
        if kind in lowered:
            return kind
    return "layer"

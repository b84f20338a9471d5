"""ONNX Runtime predictor: CPU execution provider, full graph optimizations."""

from __future__ import annotations

from typing import Any

import numpy as np

from pytest_mlscope.errors import ArtifactError
from pytest_mlscope.predictors.base import Predictor, worker_threads
from pytest_mlscope.protocol import ArtifactRef, PredictorInfo


class OnnxRuntimePredictor(Predictor):
    name = "onnxruntime"
    formats = ("onnx",)
    distributions = ("onnxruntime", "onnxruntime-gpu")
    extra = "onnxruntime"

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        self.session: Any = None
        self.input_name = ""
        self._path = ""

    def load(self, artifact: ArtifactRef) -> None:
        import onnxruntime as ort

        if artifact.format != "onnx":
            raise ArtifactError(
                f"{artifact.path}: onnxruntime cannot load format {artifact.format!r}"
            )
        options = self._options()
        self._path = artifact.path
        self.session = ort.InferenceSession(
            artifact.path, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self._threads = options.intra_op_num_threads

    def _options(self) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = worker_threads()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            if threads == 1:  # nothing to hand work to: an idle pool's spinning is pure waste
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return options

    def profile(
        self, prepared: Any, iterations: int, level: str, timeline: Any, trace_dir: Any
    ) -> tuple[list[Any], list[float], list[str]]:
        """A second session, profiled; the timed one is never touched."""
        import onnxruntime as ort

        from pytest_mlscope.tracing.ort_profile import profile_ort

        def session(prefix: str) -> Any:
            options = self._options()
            options.enable_profiling = True
            options.profile_file_prefix = prefix
            return ort.InferenceSession(
                self._path, sess_options=options, providers=self.session.get_providers()
            )

        return profile_ort(
            self._path, session, self.predict, prepared, iterations, level, timeline, trace_dir
        )

    def prepare_input(self, batch: np.ndarray) -> Any:
        return {self.input_name: np.ascontiguousarray(batch)}

    def predict(self, prepared: Any) -> Any:
        return self.session.run(None, prepared)

    def to_numpy(self, output: Any) -> np.ndarray:
        return np.asarray(output[0])

    def close(self) -> None:
        self.session = None

    def info(self) -> PredictorInfo:
        import onnxruntime as ort

        providers = self.session.get_providers() if self.session is not None else []
        return PredictorInfo(
            framework=self.name,
            version=ort.__version__,
            device=self.device,
            details={"providers": providers, "intra_op_threads": self._threads or "default"},
        )

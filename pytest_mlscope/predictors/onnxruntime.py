"""ONNX Runtime predictor: CPU execution provider, full graph optimizations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pytest_mlscope.errors import ArtifactError
from pytest_mlscope.predictors.base import Predictor, worker_threads
from pytest_mlscope.protocol import ArtifactRef, LayerProfile, PredictorInfo


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

    def import_framework(self) -> None:
        import onnxruntime  # noqa: F401

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
    ) -> LayerProfile:
        """A second session, profiled; the timed one is never touched."""
        import onnxruntime as ort

        from pytest_mlscope.tracing.ort_profile import profile_ort

        def session(prefix: str, optimized: str | None = None) -> Any:
            options = self._options()
            options.enable_profiling = True
            options.profile_file_prefix = prefix
            if optimized:  # the graph ORT runs, to attribute the nodes it inserted
                options.optimized_model_filepath = optimized
                options.add_session_config_entry(
                    "session.optimized_model_external_initializers_file_name",
                    Path(optimized).name + ".data",
                )
                options.add_session_config_entry(
                    "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
                )
                options.log_severity_level = 3  # its "hardware specific" warning, every time
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

    def layer_outputs(self, prepared: Any) -> list[tuple[str, np.ndarray]] | None:
        """Every node's output made a graph output of a second session (the timed one is never
        touched); a module path's output is the last tensor its nodes produce, in graph order
        (ONNX keeps nodes topologically sorted), so a block's is its last node's."""
        try:
            import onnx
        except ImportError:
            return None
        import onnxruntime as ort

        from pytest_mlscope.tracing.ort_profile import layer_of

        model = onnx.load(self._path)
        try:
            typed = onnx.shape_inference.infer_shapes(model).graph.value_info
        except Exception:  # untyped outputs still load
            typed = []
        types = {info.name: info for info in typed}
        existing = {output.name for output in model.graph.output}
        produced: list[tuple[str, str]] = []  # (tensor, module path), in graph order
        for node in model.graph.node:
            path = layer_of(node.name) if node.name else ""
            for tensor in node.output:
                if not tensor:
                    continue
                if tensor not in existing:
                    model.graph.output.append(types.get(tensor) or onnx.ValueInfoProto(name=tensor))
                    existing.add(tensor)
                if path:
                    produced.append((tensor, path))
        session = ort.InferenceSession(
            model.SerializeToString(), self._options(), providers=self.session.get_providers()
        )
        names = [output.name for output in session.get_outputs()]
        values = dict(zip(names, session.run(names, prepared), strict=True))
        last: dict[str, tuple[int, str]] = {}
        for index, (tensor, path) in enumerate(produced):
            parts = path.split(".")
            for depth in range(1, len(parts) + 1):  # the node ends its module and every parent
                last[".".join(parts[:depth])] = (index, tensor)
        ordered = sorted(last.items(), key=lambda item: (item[1][0], -item[0].count(".")))
        return [(path, np.asarray(values[tensor])) for path, (_, tensor) in ordered]

    def close(self) -> None:
        self.session = None

    def info(self) -> PredictorInfo:
        import onnxruntime as ort

        providers = self.session.get_providers() if self.session is not None else []
        return self.described(
            ort.__version__,
            providers=providers,
            intra_op_threads=self._threads or "default",
        )

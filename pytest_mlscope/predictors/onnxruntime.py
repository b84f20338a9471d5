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
    profiles_by_predict = False  # a second, profiled session runs the graph's nodes

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        self.session: Any = None
        self.input_name = ""
        self._path = ""
        self._cache: dict[str, Any] = {"past": [], "mask": False, "positions": False}

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
        self._cache = self._cache_layout()

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
        prepared = {self.input_name: np.ascontiguousarray(batch)}
        if self._cache_inputs():  # a decoder exported with its cache: the prompt, none cached
            prepared.update(self._step_inputs(batch.shape[-1], {}))
        return prepared

    # A decoder exported with its key/value cache, in the names Hugging Face Optimum gives it:
    # ``past_key_values.N.key`` / ``.value`` in, ``present.N.key`` / ``.value`` out, the logits
    # first; ``attention_mask`` and ``position_ids`` when the graph takes them.
    PAST, PRESENT = "past_key_values.", "present."

    def _cache_layout(self) -> dict[str, Any]:
        """What the graph's cache looks like, read once at load (a step is timed): each past
        input's name, empty value and the index of the present output that feeds it next."""
        inputs = self.session.get_inputs()
        outputs = [o.name for o in self.session.get_outputs()]
        past = []
        for entry in inputs:
            if not entry.name.startswith(self.PAST):
                continue
            shape = [d if isinstance(d, int) else 0 for d in entry.shape]
            shape[0] = 1  # a batch of one, no past positions
            dtype = np.float16 if "float16" in entry.type else np.float32
            present = self.PRESENT + entry.name[len(self.PAST) :]
            index = outputs.index(present) if present in outputs else -1
            past.append((entry.name, np.zeros(shape, dtype=dtype), index))
        names = {entry.name for entry in inputs}
        return {
            "past": past,
            "mask": "attention_mask" in names,
            "positions": "position_ids" in names,
        }

    def _cache_inputs(self) -> list[Any]:
        return list(self._cache["past"]) if self.session is not None else []

    def _step_inputs(self, new: int, cache: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Everything but the ids for a step of ``new`` tokens after ``cache`` (empty: the
        prompt): the cache, the mask over every position, the new positions."""
        layout = self._cache
        steps = cache or {name: empty for name, empty, _ in layout["past"]}
        past = next(iter(steps.values())).shape[2] if steps else 0
        if layout["mask"]:
            steps["attention_mask"] = np.ones((1, past + new), dtype=np.int64)
        if layout["positions"]:
            steps["position_ids"] = np.arange(past, past + new, dtype=np.int64)[None, :]
        return steps

    def generate(self, prepared: Any, new_tokens: int, stamps: list[int]) -> list[int]:
        """Greedy decoding on the graph's own key/value cache (an Optimum-style export, above):
        the prompt's step, then one step per token fed the ``present`` outputs as the next
        ``past`` inputs."""
        import time

        from pytest_mlscope.errors import StackUnavailable

        if not self._cache_inputs():
            raise StackUnavailable(
                f"{self._path}: the onnxruntime predictor generates with a graph exported with "
                f"its key/value cache (inputs {self.PAST}N.key and .value, outputs "
                f"{self.PRESENT}N.key and .value, as Hugging Face Optimum exports decoders); "
                "this graph has none"
            )
        clock, session = time.perf_counter_ns, self.session
        cached = [(name, index) for name, _, index in self._cache["past"]]
        if any(index < 0 for _, index in cached):
            raise StackUnavailable(
                f"{self._path}: a {self.PAST}N input has no {self.PRESENT}N output to feed it"
            )
        feed = prepared
        tokens: list[int] = []
        while True:
            produced = session.run(None, feed)
            token = int(np.argmax(produced[0][0, -1]))
            tokens.append(token)
            stamps.append(clock())
            if len(tokens) == new_tokens:
                return tokens
            cache = {name: produced[index] for name, index in cached}
            feed = {
                self.input_name: np.array([[token]], dtype=np.int64),
                **self._step_inputs(1, cache),
            }

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

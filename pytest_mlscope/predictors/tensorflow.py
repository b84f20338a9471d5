"""TensorFlow predictor: a Keras 3 model called through one ``tf.function`` (graph mode, Grappler's
fusions, oneDNN kernels on CPU), built from the zoo's framework-neutral weights.

The artifact is ``numpy_weights`` (an ``.npz`` of the torch-trained parameters) whose metadata
names the Keras architecture that lays them out (``pytest_mlscope.zoo.keras_models``), so the
TensorFlow model computes what the torch model computes. The function is traced once for any batch
size (the input signature leaves the batch dimension open).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from pytest_mlscope.errors import ArtifactError
from pytest_mlscope.predictors.base import Predictor
from pytest_mlscope.protocol import ArtifactRef, PredictorInfo


def import_tensorflow() -> Any:
    """TensorFlow, with its C++ start-up chatter (oneDNN notices, CUDA probing) kept out of the
    worker's stderr tail, where a real error must stay readable."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


class TensorFlowPredictor(Predictor):
    name = "tensorflow"
    formats = ("numpy_weights",)
    distributions = ("tensorflow", "tensorflow-cpu", "tensorflow-intel")
    extra = "tensorflow"

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        self.model: Any = None
        self._call: Any = None

    def load(self, artifact: ArtifactRef) -> None:
        tf = import_tensorflow()
        if artifact.format != "numpy_weights":
            raise ArtifactError(
                f"{artifact.path}: tensorflow cannot load format {artifact.format!r}"
            )
        builder = self.named_callable(artifact, "architecture", "function")
        with np.load(artifact.path, allow_pickle=False) as stored:
            weights = {name: stored[name] for name in stored.files}
        kwargs = dict(artifact.metadata.get("kwargs", {}) or {})  # type: ignore[call-overload]
        device = "/GPU:0" if self.device == "gpu" else "/CPU:0"
        with tf.device(device):
            self.model = builder(weights, **kwargs)
        shape = [None, *self.model.input_shape[1:]]
        model = self.model

        def call(batch: Any) -> Any:
            return model(batch, training=False)

        self._call = tf.function(call, input_signature=[tf.TensorSpec(shape, tf.float32)])

    def prepare_input(self, batch: np.ndarray) -> Any:
        tf = import_tensorflow()
        device = "/GPU:0" if self.device == "gpu" else "/CPU:0"
        with tf.device(device):
            return tf.constant(np.ascontiguousarray(batch, dtype=np.float32))

    def predict(self, prepared: Any) -> Any:
        return self._call(prepared)

    def to_numpy(self, output: Any) -> np.ndarray:
        if isinstance(output, (tuple, list)):
            output = output[0]
        return np.asarray(output.numpy())

    def profile(
        self, prepared: Any, iterations: int, level: str, timeline: Any, trace_dir: Any
    ) -> tuple[list[Any], list[float], list[str]]:
        from pytest_mlscope.tracing.tf_profile import profile_tf

        return profile_tf(
            self.model, self.predict, prepared, iterations, level, timeline, trace_dir
        )

    def close(self) -> None:
        self.model = None
        self._call = None

    def info(self) -> PredictorInfo:
        tf = import_tensorflow()
        import keras

        threading = tf.config.threading
        return PredictorInfo(
            framework=self.name,
            version=tf.__version__,
            device=self.device,
            details={
                "keras": keras.__version__,
                "intra_op_threads": threading.get_intra_op_parallelism_threads() or "default",
                "inter_op_threads": threading.get_inter_op_parallelism_threads() or "default",
                "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
            },
        )

"""TensorFlow predictor: a Keras 3 model called through one ``tf.function`` (graph mode, Grappler's
fusions, oneDNN kernels on CPU), built from the zoo's framework-neutral weights.

The artifact is ``numpy_weights`` (an ``.npz`` of the torch-trained parameters) whose metadata
names the Keras architecture that lays them out (``pytest_mlscope.zoo.keras_models``), so the
TensorFlow model computes what the torch model computes. The function is traced once for any batch
size (the input signature leaves the batch dimension open).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import numpy as np

from pytest_mlscope.errors import ArtifactError
from pytest_mlscope.predictors.base import Predictor, worker_threads
from pytest_mlscope.protocol import ArtifactRef, PredictorInfo


def import_tensorflow() -> Any:
    """TensorFlow, with its C++ start-up chatter (oneDNN notices, CUDA probing) kept out of the
    worker's stderr tail, where a real error must stay readable."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


class TensorFlowPredictor(Predictor):
    name = "tensorflow"
    formats = ("numpy_weights", "keras", "saved_model")
    distributions = ("tensorflow", "tensorflow-cpu", "tensorflow-intel")
    extra = "tensorflow"

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        self.model: Any = None
        self._call: Any = None
        self._saved: Any = None  # a SavedModel: its loaded object (keeps the signature alive)
        self._dtype: Any = None

    def load(self, artifact: ArtifactRef) -> None:
        tf = import_tensorflow()
        threads = worker_threads()
        if threads:
            # Only before TensorFlow's runtime starts: a worker loads before any op runs; a
            # process that ran TensorFlow already keeps its pools.
            with contextlib.suppress(RuntimeError):
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(threads)
        device = "/GPU:0" if self.device == "gpu" else "/CPU:0"
        if artifact.format == "keras":  # a model the user saved with model.save("x.keras")
            import keras

            with tf.device(device):
                self.use(keras.models.load_model(artifact.path, compile=False))
            return
        if artifact.format == "saved_model":  # tf.saved_model.save, or Keras' model.export
            with tf.device(device):
                self._saved = tf.saved_model.load(artifact.path)
            signature = self._saved.signatures.get("serving_default")
            if signature is None:
                raise ArtifactError(
                    f"{artifact.path}: the SavedModel has no serving_default signature (found: "
                    f"{', '.join(self._saved.signatures) or 'none'})"
                )
            _, named = signature.structured_input_signature
            if len(named) != 1:
                raise ArtifactError(
                    f"{artifact.path}: serving_default takes {len(named)} inputs; "
                    "pytest-mlscope feeds a model one"
                )
            name, spec = next(iter(named.items()))
            self._dtype = spec.dtype
            self._call = lambda batch: signature(**{name: batch})
            return
        if artifact.format != "numpy_weights":
            raise ArtifactError(
                f"{artifact.path}: tensorflow cannot load format {artifact.format!r}"
            )
        builder = self.named_callable(artifact, "architecture", "function")
        with np.load(artifact.path, allow_pickle=False) as stored:
            weights = {name: stored[name] for name in stored.files}
        kwargs = dict(artifact.metadata.get("kwargs", {}) or {})  # type: ignore[call-overload]
        with tf.device(device):
            self.use(builder(weights, **kwargs))

    def use(self, model: Any) -> None:
        """Predict with a built Keras model (``load`` builds one from the artifact)."""
        self.model = model
        self._call = self._function()

    def _function(self) -> Any:
        """The model in one ``tf.function``, traced once for any batch size."""
        tf = import_tensorflow()
        model = self.model
        shape = [None, *model.input_shape[1:]]

        def call(batch: Any) -> Any:
            return model(batch, training=False)

        return tf.function(call, input_signature=[tf.TensorSpec(shape, tf.float32)])

    def prepare_input(self, batch: np.ndarray) -> Any:
        tf = import_tensorflow()
        device = "/GPU:0" if self.device == "gpu" else "/CPU:0"
        with tf.device(device):
            dtype = self._dtype.as_numpy_dtype if self._dtype is not None else np.float32
            return tf.constant(np.ascontiguousarray(batch, dtype=dtype))

    def predict(self, prepared: Any) -> Any:
        return self._call(prepared)

    def to_numpy(self, output: Any) -> np.ndarray:
        if isinstance(output, dict):  # a signature's outputs, by name: the first
            output = output[sorted(output)[0]]
        if isinstance(output, (tuple, list)):
            output = output[0]
        return np.asarray(output.numpy())

    def profile(
        self, prepared: Any, iterations: int, level: str, timeline: Any, trace_dir: Any
    ) -> tuple[list[Any], list[float], list[str]]:
        from pytest_mlscope.tracing.tf_profile import profile_tf

        if self.model is None:  # a SavedModel's signature: no Keras layers to name
            rows, steps, notes = super().profile(prepared, iterations, level, timeline, trace_dir)
            notes.append("a SavedModel is called through its signature: no layers to name")
            return rows, steps, notes

        # The profiled calls go to a function of their own. TensorFlow's executor stops tracing
        # an op once its running estimate falls under 8,000 cycles, which the timing pass's
        # calls teach it for a small layer on a fast CPU (digits_cnn's last dense layer, by the
        # machine); a fresh function starts every op at 1e8 cycles, and traced calls leave the
        # estimate alone, so every layer is in the profile on every machine.
        profiled = self._function()
        profiled(prepared)  # traced and optimized outside the profiler's window
        return profile_tf(
            self.model, self.predict, profiled, prepared, iterations, level, timeline, trace_dir
        )

    def close(self) -> None:
        self.model = None
        self._call = None
        self._saved = None

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

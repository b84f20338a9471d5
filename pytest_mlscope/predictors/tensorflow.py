"""TensorFlow predictor: a Keras 3 model called through one ``tf.function`` (graph mode, Grappler's
fusions, oneDNN kernels on CPU), built from the zoo's framework-neutral weights.

The artifact is ``numpy_weights`` (an ``.npz`` of the torch-trained parameters) whose metadata
names the Keras architecture that lays them out (``pytest_mlscope.zoo.keras_models``), so the
TensorFlow model computes what the torch model computes. The function is traced once for any batch
size (the input signature leaves the batch dimension open). A failed agreement reads every Keras
layer's output from one eager call (``layer_outputs``), in the reference's channels-first layout.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from pytest_mlscope.errors import ArtifactError
from pytest_mlscope.predictors.base import Predictor, worker_threads
from pytest_mlscope.protocol import ArtifactRef, LayerProfile, PredictorInfo


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

    def import_framework(self) -> None:
        import_tensorflow()
        import keras  # noqa: F401

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
    ) -> LayerProfile:
        from pytest_mlscope.tracing.tf_profile import profile_tf

        if self.model is None:  # a SavedModel's signature: no Keras layers to name
            steps = self.timeline_predictions(prepared, iterations, timeline)
            return [], steps, ["a SavedModel is called through its signature: no layers to name"]

        # The profiled calls go to a function of their own. TensorFlow's executor stops tracing
        # an op once its running estimate falls under 8,000 cycles, which the timing pass's
        # calls teach it for a small layer on a fast CPU (digits_cnn's last dense layer, by the
        # machine); a fresh function starts every op at 1e8 cycles, and traced calls leave the
        # estimate alone, so every layer is in the profile on every machine.
        profiled = self._function()
        profiled(prepared)  # traced and optimized outside the profiler's window
        return profile_tf(
            self.model,
            self.predict,
            profiled,
            prepared,
            iterations=iterations,
            level=level,
            timeline=timeline,
            trace_dir=trace_dir,
        )

    def layer_outputs(self, prepared: Any) -> list[tuple[str, np.ndarray]] | None:
        """Each Keras layer's output for one eager call of the model, in the order the layers
        finish (a nested model's or custom layer's own layers before it, like torch's hooks);
        None for a SavedModel called through its signature, which keeps no layers.

        Each layer's ``call`` is wrapped for the one call and restored after it: this reaches
        the layers of Sequential, functional and subclassed models alike, nested ones and a layer
        called twice (its second output is ``name#2`` once saved) included, where a sub-model
        of ``layer.output``s reaches only the outer graph. A top-level layer is named by its
        Keras name, as the layer table names it (``features.2``); a layer inside another by the
        path of names, joined with ``.`` (``block.conv``, then ``block``).

        Layouts: a model that takes channels-first input and moves it to channels-last itself
        (its first layer a ``Permute((2, 3, 1))`` of its one 4-D input, as the zoo's Keras builds
        and torch ports do) computes on NHWC tensors what the reference computes on NCHW ones.
        There, every 4-D output is returned as NCHW, so the divergence walk matches the
        convolutions by shape; that ``Permute`` is left out (it only moves the input, and
        returned as NCHW it *is* the input, which no layer of the reference outputs); and a
        ``Flatten`` of a 4-D tensor is returned in channels-first order (C, H, W), the order
        torch's flatten gives and the reference's next dense layer's weights were reordered
        from, so a faithful port's flatten matches the reference's instead of being reported as
        diverging for the order alone. Other layers that reshape a channels-last tensor
        (``Reshape``) keep Keras' order, and may go uncompared or unmatched.
        """
        if self.model is None:
            return None
        tf = import_tensorflow()
        import keras

        model = self.model
        moved = _layout_permute(model)
        captured: list[tuple[str, np.ndarray]] = []

        def wrapped(layer: Any, name: str) -> Any:
            original = layer.call

            def call(*args: Any, **kwargs: Any) -> Any:
                output = original(*args, **kwargs)
                if layer is not moved:
                    value = _numpy(tf, output)
                    if value is not None and moved is not None:
                        value = _channels_first(layer, keras, args, value)
                    if value is not None:
                        captured.append((name, value))
                return output

            return call

        layers = list(_named_layers(model, keras))
        patched = []
        try:
            for name, layer in layers:
                object.__setattr__(layer, "call", wrapped(layer, name))
                patched.append(layer)
            device = "/GPU:0" if self.device == "gpu" else "/CPU:0"
            with tf.device(device):
                model(prepared, training=False)
        finally:
            for layer in patched:
                object.__delattr__(layer, "call")
        return captured

    def close(self) -> None:
        self.model = None
        self._call = None
        self._saved = None

    def reset_device_memory_peak(self) -> None:
        if self.device == "gpu":
            import contextlib

            with contextlib.suppress(ValueError):  # no GPU:0 here: the item fails at load
                import_tensorflow().config.experimental.reset_memory_stats("GPU:0")

    def device_memory_peak(self) -> int | None:
        if self.device != "gpu":
            return None
        try:
            info = import_tensorflow().config.experimental.get_memory_info("GPU:0")
        except ValueError:
            return None
        return int(info["peak"])

    def info(self) -> PredictorInfo:
        tf = import_tensorflow()
        import keras

        threading = tf.config.threading
        return self.described(
            tf.__version__,
            keras=keras.__version__,
            intra_op_threads=threading.get_intra_op_parallelism_threads() or "default",
            inter_op_threads=threading.get_inter_op_parallelism_threads() or "default",
            onednn=os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
        )


def _named_layers(
    model: Any, keras: Any, prefix: str = "", seen: set[int] | None = None
) -> Iterator[tuple[str, Any]]:
    """(path, layer) for every layer under ``model``, each once (a layer shared by two models
    under the first path found); the call, not this, decides the order. Input layers, which
    compute nothing, are left out."""
    seen = set() if seen is None else seen
    if isinstance(model, keras.Model):
        children = list(model.layers)
    else:  # a custom layer's own layers (a residual block written as a Layer)
        children = list(
            getattr(model, "_flatten_layers", lambda **_: [])(include_self=False, recursive=False)
        )
    for layer in children:
        if isinstance(layer, keras.layers.InputLayer) or id(layer) in seen:
            continue
        seen.add(id(layer))
        path = f"{prefix}{layer.name}"
        yield path, layer
        yield from _named_layers(layer, keras, f"{path}.", seen)


def _layout_permute(model: Any) -> Any:
    """The ``Permute((2, 3, 1))`` that moves the model's one channels-first 4-D input to
    channels-last as its first layer, if it has one."""
    import keras

    try:
        shapes = [tuple(i.shape) for i in model.inputs]
    except (AttributeError, ValueError):  # a subclassed model: no declared inputs
        return None
    if len(shapes) != 1 or len(shapes[0]) != 4:
        return None
    first = next(
        (layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)), None
    )
    if isinstance(first, keras.layers.Permute) and tuple(first.dims) == (2, 3, 1):
        return first
    return None


def _numpy(tf: Any, output: Any) -> np.ndarray | None:
    """A layer's (first) output as numpy, floats as float32; None when it is no tensor."""
    if isinstance(output, (tuple, list)):  # an RNN's (output, states...)
        output = output[0] if output else None
    if not tf.is_tensor(output):
        return None
    if output.dtype.is_floating:
        output = tf.cast(output, tf.float32)
    return np.array(output)


def _channels_first(layer: Any, keras: Any, args: Any, value: np.ndarray) -> np.ndarray:
    """A layer's output of a channels-last model in the reference's channels-first terms."""
    if value.ndim == 4:
        return value.transpose(0, 3, 1, 2)
    source = args[0] if args else None
    if isinstance(layer, keras.layers.Flatten) and len(getattr(source, "shape", ())) == 4:
        n, h, w, c = (value.shape[0], *tuple(source.shape)[1:])
        return value.reshape(n, h, w, c).transpose(0, 3, 1, 2).reshape(n, -1)
    return value

"""MXNet predictor: a hybridized Gluon network (a cached static graph), in a venv stack of its own.

MXNet 1.9.1 needs numpy < 1.24, so its worker runs in the ``mxnet`` venv stack
(``pytest_mlscope.stacks``; ``mlscope stacks setup mxnet``), never in the host's environment. The
artifact is the zoo's ``numpy_weights``, laid out by ``pytest_mlscope.zoo.gluon_models``, or what
MXNet users save: ``HybridBlock.export``'s ``-symbol.json`` and ``.params``, one folder of both
(``mxnet_symbol``), loaded by ``SymbolBlock.imports`` as MXNet Model Server does.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pytest_mlscope.errors import ArtifactError
from pytest_mlscope.predictors.base import Predictor
from pytest_mlscope.protocol import ArtifactRef, LayerProfile, PredictorInfo


class MXNetPredictor(Predictor):
    name = "mxnet"
    formats = ("numpy_weights", "mxnet_symbol")
    distributions = ("mxnet",)
    venv_stack: ClassVar[str | None] = "mxnet"

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        self.net: Any = None
        self._artifact: ArtifactRef | None = None

    def import_framework(self) -> None:
        import mxnet  # noqa: F401

    def load(self, artifact: ArtifactRef) -> None:
        if artifact.format not in self.formats:
            raise ArtifactError(f"{artifact.path}: mxnet cannot load format {artifact.format!r}")
        self._artifact = artifact
        self.net = self._build(artifact)

    def _build(self, artifact: ArtifactRef) -> Any:
        if artifact.format == "mxnet_symbol":
            return _imported(Path(artifact.path))
        builder = self.named_callable(artifact, "architecture", "function")
        with np.load(artifact.path, allow_pickle=False) as stored:
            weights = {name: stored[name] for name in stored.files}
        kwargs = dict(artifact.metadata.get("kwargs", {}) or {})  # type: ignore[call-overload]
        return builder(weights, **kwargs)

    def prepare_input(self, batch: np.ndarray) -> Any:
        import mxnet as mx

        return mx.nd.array(np.ascontiguousarray(batch, dtype=np.float32), ctx=mx.cpu())

    def predict(self, prepared: Any) -> Any:
        output = self.net(prepared)
        output.wait_to_read()  # MXNet's engine is asynchronous: the call returns before the work
        return output

    def to_numpy(self, output: Any) -> np.ndarray:
        return np.asarray(output.asnumpy())

    def profile(
        self, prepared: Any, iterations: int, level: str, timeline: Any, trace_dir: Any
    ) -> LayerProfile:
        """Operators from mxnet.profiler, on an unbulked copy of the network (see
        :mod:`pytest_mlscope.tracing.mxnet_profile`); the timed network is never touched."""
        from pytest_mlscope.tracing.mxnet_profile import profile_mxnet

        artifact = self._artifact
        assert artifact is not None, "profile() before load()"
        layers = _symbol_layers(Path(artifact.path)) if artifact.format == "mxnet_symbol" else None
        return profile_mxnet(
            lambda: self._build(artifact), self.predict, prepared, iterations, timeline, layers
        )

    def layer_outputs(self, prepared: Any) -> list[tuple[str, np.ndarray]] | None:
        """The zoo's network one block at a time (its blocks run in sequence, each named by its
        torch name); an exported symbol through a second block over the same parameters whose
        outputs are every operator node's first output (``get_internals``), named as its layer
        table names them."""
        import mxnet as mx

        artifact = self._artifact
        assert artifact is not None, "layer_outputs() before load()"
        if artifact.format == "mxnet_symbol":
            folder = Path(artifact.path)
            internals = mx.sym.load(str(next(folder.glob("*-symbol.json")))).get_internals()
            outputs = internals.list_outputs()
            names, chosen = [], []
            for name, node in _symbol_layers(folder, raw=True):
                found = next((o for o in outputs if o.startswith(f"{node}_output")), None)
                if found is not None:
                    names.append(name)
                    chosen.append(internals[found])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "cannot decide type": the input's, given below
                inner = mx.gluon.SymbolBlock(
                    mx.sym.Group(chosen),
                    mx.sym.var(self.net.input_name),
                    params=self.net.collect_params(),
                )
            values = inner(prepared)
            values = values if isinstance(values, (list, tuple)) else [values]
            return [
                (name, np.asarray(value.asnumpy(), dtype=np.float32))
                for name, value in zip(names, values, strict=True)
            ]
        captured = []
        names = list(getattr(self.net, "layer_names", []))
        value = prepared
        for name, block in zip(names, self.net._children.values(), strict=True):
            value = block(value)
            captured.append((name, np.asarray(value.asnumpy(), dtype=np.float32)))
        return captured

    def close(self) -> None:
        self.net = None

    def info(self) -> PredictorInfo:
        import mxnet as mx

        features = mx.runtime.Features()
        return self.described(
            mx.__version__,
            numpy=np.__version__,
            mkldnn=features.is_enabled("MKLDNN"),
            blas=next(
                (f for f in ("BLAS_MKL", "BLAS_OPEN", "BLAS_ATLAS") if features.is_enabled(f)),
                "?",
            ),
        )


def _imported(folder: Path) -> Any:
    """The exported network, its inputs being the symbol's free variables that the params file
    does not hold (``export`` stores parameters as ``arg:``/``aux:`` entries), hybridized so it
    runs as the cached graph it was exported from."""
    import mxnet as mx

    symbol_file = next(folder.glob("*-symbol.json"))
    params_file = next(folder.glob("*.params"))
    symbol = mx.sym.load(str(symbol_file))
    stored = {name.split(":", 1)[-1] for name in mx.nd.load(str(params_file))}
    inputs = [name for name in symbol.list_inputs() if name not in stored]
    if len(inputs) != 1:
        raise ArtifactError(
            f"{symbol_file}: expected one input that the params do not hold, found {inputs}"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "... is not used in the graph": the label of a loss
        net = mx.gluon.SymbolBlock.imports(str(symbol_file), inputs, str(params_file), ctx=mx.cpu())
    net.input_name = inputs[0]
    net.hybridize(static_alloc=True, static_shape=True)
    return net


def _symbol_layers(folder: Path, raw: bool = False) -> list[tuple[str, str]]:
    """(name, operator) of an exported symbol's operator nodes, in the graph's order: the
    order its cached graph runs them. Gluon names a node by its block's prefix and ``_fwd``
    (``resnet0_stage1_conv0_fwd``); the suffix says nothing, so it goes. ``raw``: (name, the
    node's own name) instead."""
    import json

    graph = json.loads(next(folder.glob("*-symbol.json")).read_text())
    return [
        (node["name"].removesuffix("_fwd"), node["name"] if raw else node["op"])
        for node in graph["nodes"]
        if node["op"] != "null"
    ]

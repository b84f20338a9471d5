"""MXNet predictor: a hybridized Gluon network (a cached static graph), in a venv stack of its own.

MXNet 1.9.1 needs numpy < 1.24, so its worker runs in the ``mxnet`` venv stack
(``pytest_mlscope.stacks``; ``mlscope stacks setup mxnet``), never in the host's environment. The
artifact is the zoo's ``numpy_weights``, laid out by ``pytest_mlscope.zoo.gluon_models``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from pytest_mlscope.errors import ArtifactError
from pytest_mlscope.predictors.base import Predictor
from pytest_mlscope.protocol import ArtifactRef, PredictorInfo


class MXNetPredictor(Predictor):
    name = "mxnet"
    formats = ("numpy_weights",)
    distributions = ("mxnet",)
    venv_stack: ClassVar[str | None] = "mxnet"

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        self.net: Any = None
        self._artifact: ArtifactRef | None = None

    def load(self, artifact: ArtifactRef) -> None:
        if artifact.format != "numpy_weights":
            raise ArtifactError(f"{artifact.path}: mxnet cannot load format {artifact.format!r}")
        self._artifact = artifact
        self.net = self._build(artifact)

    def _build(self, artifact: ArtifactRef) -> Any:
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
    ) -> tuple[list[Any], list[float], list[str]]:
        """Operators from mxnet.profiler, on an unbulked copy of the network (see
        :mod:`pytest_mlscope.tracing.mxnet_profile`); the timed network is never touched."""
        from pytest_mlscope.tracing.mxnet_profile import profile_mxnet

        artifact = self._artifact
        assert artifact is not None, "profile() before load()"
        return profile_mxnet(
            lambda: self._build(artifact), self.predict, prepared, iterations, timeline
        )

    def close(self) -> None:
        self.net = None

    def info(self) -> PredictorInfo:
        import mxnet as mx

        features = mx.runtime.Features()
        return PredictorInfo(
            framework=self.name,
            version=mx.__version__,
            device=self.device,
            details={
                "numpy": np.__version__,
                "mkldnn": features.is_enabled("MKLDNN"),
                "blas": next(
                    (f for f in ("BLAS_MKL", "BLAS_OPEN", "BLAS_ATLAS") if features.is_enabled(f)),
                    "?",
                ),
            },
        )

"""The bundled models' builders (named by manifests as ``pytest_mlscope.zoo:alexnet``) and the
artifact cache. Importing this package imports no framework."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_mlscope.zoo.builders import BuiltArtifact


from pytest_mlscope.zoo.revision import BUILD_REVISION, revision


def _bundled(name: str) -> Callable[..., list[BuiltArtifact]]:
    """The bundled builder ``name`` of ``zoo.builders``, imported (with its frameworks) only when
    called."""

    @revision(BUILD_REVISION)
    def build(out_dir: Path, **kwargs: Any) -> list[BuiltArtifact]:
        from pytest_mlscope.zoo import builders

        built: list[BuiltArtifact] = getattr(builders, name)(out_dir, **kwargs)
        return built

    build.__name__ = build.__qualname__ = name
    bundled: Callable[..., list[BuiltArtifact]] = build
    return bundled


alexnet = _bundled("alexnet")
digits_cnn = _bundled("digits_cnn")
minilm = _bundled("minilm")
smollm2 = _bundled("smollm2")

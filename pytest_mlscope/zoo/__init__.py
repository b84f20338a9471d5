"""The bundled models' builders (named by manifests as ``pytest_mlscope.zoo:alexnet``) and the
artifact cache. Importing this package imports no framework."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_mlscope.zoo.builders import BuiltArtifact


from pytest_mlscope.zoo.revision import BUILD_REVISION, revision


@revision(BUILD_REVISION)
def alexnet(out_dir: Path, **kwargs: Any) -> list[BuiltArtifact]:
    from pytest_mlscope.zoo.builders import alexnet as build

    return build(out_dir, **kwargs)


@revision(BUILD_REVISION)
def digits_cnn(out_dir: Path, **kwargs: Any) -> list[BuiltArtifact]:
    from pytest_mlscope.zoo.builders import digits_cnn as build

    return build(out_dir, **kwargs)


@revision(BUILD_REVISION)
def minilm(out_dir: Path, **kwargs: Any) -> list[BuiltArtifact]:
    from pytest_mlscope.zoo.builders import minilm as build

    return build(out_dir, **kwargs)


@revision(BUILD_REVISION)
def smollm2(out_dir: Path, **kwargs: Any) -> list[BuiltArtifact]:
    from pytest_mlscope.zoo.builders import smollm2 as build

    return build(out_dir, **kwargs)

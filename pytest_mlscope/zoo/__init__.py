"""The bundled models' builders (named by manifests as ``pytest_mlscope.zoo:alexnet``) and the
artifact cache. Importing this package imports no framework."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_mlscope.zoo.builders import BuiltArtifact


# What the bundled builders write: 2 added numpy_weights (TensorFlow), 3 names each framework's
# builder of them (TensorFlow, MXNet), 4 added the Caffe net (prototxt + caffemodel). The artifact
# cache keys builds by it, so an older cache is rebuilt, not served short of a format.
BUILD_REVISION = 4


def revision(number: int) -> Any:
    """Mark what a builder writes; the artifact cache rebuilds when the number changes (a new
    format added, say), instead of serving an older build that lacks it."""

    def mark(builder: Any) -> Any:
        builder.revision = number
        return builder

    return mark


@revision(BUILD_REVISION)
def alexnet(out_dir: Path, **kwargs: Any) -> list[BuiltArtifact]:
    from pytest_mlscope.zoo.builders import alexnet as build

    return build(out_dir, **kwargs)


@revision(BUILD_REVISION)
def digits_cnn(out_dir: Path, **kwargs: Any) -> list[BuiltArtifact]:
    from pytest_mlscope.zoo.builders import digits_cnn as build

    return build(out_dir, **kwargs)

"""Build revisions: which builds the artifact cache may serve and which it must redo."""

from __future__ import annotations

from typing import Any

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

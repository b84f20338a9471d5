"""Container images of software stacks: what goes into one, its content-hashed tag, the build.

An image holds pytest-mlscope's worker and one framework, nothing else. Its build context is put
together here: the stack's Dockerfile (``recipes/Dockerfile`` in the package, one for every
bundled stack, or the project's own ``containers/<stack>/Dockerfile``), a requirements file pinned
to the versions installed on this host (so a container runs the same numpy and framework as the
subprocess runtime unless asked otherwise), a wheelhouse that the host builds with its own pip
(the image build then needs no network, no registry credentials and no CA bundle: the wheels come
in, the build runs with ``network_mode=none``), and the package source. The tag carries the stack,
the framework version, the device and a hash of all of that, so ``mlscope containers build``
rebuilds only when something that goes into the image changed.

``naming`` holds the repository, tags, labels and system stacks, ``planning`` what goes into an
image and its hash, ``building`` the daemon and the build. What the rest of the package and a
user's script use is importable here.
"""

from __future__ import annotations

from pytest_mlscope.containers.building import (
    Built,
    build,
    build_base,
    build_wheelhouse,
    client,
    find_image,
    images,
    prune,
    superseded,
    wheelhouse_dir,
)
from pytest_mlscope.containers.naming import (
    BUNDLED_STACKS,
    LABEL,
    SYSTEM_STACKS,
    ContainerError,
    SystemStack,
    default_image,
    docker_arch,
    image_for,
)
from pytest_mlscope.containers.planning import (
    RECIPES,
    ImagePlan,
    base_recipe,
    plan,
    project_recipes,
    recipe,
    recipe_folders,
    source_digest,
    stacks,
    worker_requirements,
)

__all__ = [
    "BUNDLED_STACKS",
    "LABEL",
    "RECIPES",
    "SYSTEM_STACKS",
    "Built",
    "ContainerError",
    "ImagePlan",
    "SystemStack",
    "base_recipe",
    "build",
    "build_base",
    "build_wheelhouse",
    "client",
    "default_image",
    "docker_arch",
    "find_image",
    "image_for",
    "images",
    "plan",
    "project_recipes",
    "prune",
    "recipe",
    "recipe_folders",
    "source_digest",
    "stacks",
    "superseded",
    "wheelhouse_dir",
    "worker_requirements",
]

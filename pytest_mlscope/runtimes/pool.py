"""Which worker serves a cell: the host's subprocess, a venv stack's, a container's, or the
count worker under callgrind. One worker per stack, started on first use and kept for the session;
an interleave across stacks asks for copies (``copy`` > 0), kept the same way.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from pytest_mlscope.protocol import (
    Cell,
)

if TYPE_CHECKING:
    from pytest_mlscope.runtimes import Runtime


class RuntimePool:
    """The session's workers, one per software stack (and the copies an interleave across two
    stacks asks for); a part of :class:`MlscopeSession`."""

    def in_container(self, cell: Cell) -> bool:
        """Whether the cell's worker runs in its stack's image: with the docker runtime, and
        always for a framework that has no build for the host (Caffe)."""
        from pytest_mlscope.errors import StackUnavailable
        from pytest_mlscope.predictors import predictor_class

        if self.settings.runtime == "docker":
            return True
        if cell.framework not in self._container_only:  # asked for every item at collection
            try:
                cls = predictor_class(cell.framework, self.settings.predictors)
                self._container_only[cell.framework] = cls.container_only
            except StackUnavailable:
                self._container_only[cell.framework] = False
        return self._container_only[cell.framework]

    def runtime(self, cell: Cell, copy: int = 0) -> Runtime:
        """One runtime per software stack: every framework on the host shares the host stack;
        with the docker runtime, each image is a stack of its own. ``copy`` > 0: another worker
        process of the same stack (a timing across workers needs several per side, since each
        process has a speed of its own)."""
        if self.in_container(cell):
            return self._docker_runtime(cell, self.image(cell), copy)
        from pytest_mlscope.predictors import predictor_class

        stack = predictor_class(cell.framework, self.settings.predictors).venv_stack
        if stack:
            from pytest_mlscope import stacks

            return self._venv_runtime(stacks.get(stack), copy)
        return self._host_runtime(self.settings.runtime, copy)

    def _venv_runtime(self, stack: Any, copy: int = 0) -> Runtime:
        """A subprocess worker in a venv stack (``pytest_mlscope.stacks.VenvStack``), with this
        pytest-mlscope on its path: the same worker and protocol, another interpreter."""
        from pytest_mlscope import stacks
        from pytest_mlscope.runtimes.subprocess import SubprocessRuntime

        key = _copy_key(f"venv:{stacks.location(stack)}", copy)
        if key not in self._runtimes:
            self._runtimes[key] = SubprocessRuntime(
                work_dir=self.work_dir / "workers",
                python=str(stacks.python(stack)),
                python_path=[
                    stacks.source_path(),
                    str(self.settings.rootdir),
                    *self.settings.python_path,
                ],
                memory=self.settings.worker_memory,
            )
        return self._runtimes[key]

    def _host_runtime(self, kind: str, copy: int = 0) -> Runtime:
        from pytest_mlscope.runtimes import make_runtime

        # The in-process runtime is this process: it has no copies to give.
        key = kind if kind == "inprocess" else _copy_key(kind, copy)
        if key not in self._runtimes:
            python_path = [str(self.settings.rootdir), *self.settings.python_path]
            self._runtimes[key] = make_runtime(
                kind, self.work_dir / "workers", python_path, memory=self.settings.worker_memory
            )
        return self._runtimes[key]

    def image(self, cell: Cell) -> str:
        """The container image a cell runs in (the manifest's ``container`` map, else the
        stack's default tag)."""
        from pytest_mlscope.containers import image_for

        spec = self.manifest(cell.model).framework_spec(cell.framework, cell.stack)
        return image_for(spec, cell.device)

    def _docker_runtime(self, cell: Cell, image: str, copy: int = 0) -> Runtime:
        from pytest_mlscope.runtimes.docker import DockerRuntime

        key = _copy_key(f"docker:{image}:{cell.device}", copy)
        if key not in self._runtimes:
            # Read-only: the project (manifests, goldens, predictors named in the ini), manifest
            # folders outside it and the artifact cache; writable: this session's folders only.
            reads = [
                self.settings.rootdir,
                self.settings.artifact_dir,
                *(p if p.is_dir() else p.parent for p in self.settings.manifest_paths),
            ]
            self._runtimes[key] = DockerRuntime(
                image,
                read_only=reads,
                writable=[self.work_dir, self.trace_dir],
                python_path=[str(self.settings.rootdir), *self.settings.python_path],
                gpu=cell.device == "gpu",
                memory=self.settings.docker_memory or self.settings.worker_memory,
            )
        return self._runtimes[key]

    def _count_runtime(self, cell: Cell) -> Runtime:
        """A worker under callgrind with the interpreter and path the cell's stack uses."""
        from pytest_mlscope import callgrind
        from pytest_mlscope.runtimes.subprocess import SubprocessRuntime

        stack = self.runtime(cell)
        if isinstance(stack, SubprocessRuntime):
            python, python_path, env = stack.python, stack.python_path, stack.env
        else:  # the in-process runtime: this interpreter, in a worker of its own
            python_path = [str(self.settings.rootdir), *self.settings.python_path]
            python, env = sys.executable, {}
        key = f"count:{python}"
        if key not in self._runtimes:
            out = self.work_dir / "callgrind"
            out.mkdir(parents=True, exist_ok=True)
            self._runtimes[key] = SubprocessRuntime(
                work_dir=self.work_dir / "workers",
                python=python,
                python_path=python_path,
                env={**env, **callgrind.environment(out)},
                memory=self.settings.worker_memory,
                launcher=callgrind.launcher(out),
            )
        return self._runtimes[key]


def _copy_key(key: str, copy: int) -> str:
    return f"{key}#{copy}" if copy else key

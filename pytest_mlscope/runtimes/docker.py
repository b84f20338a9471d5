"""The docker runtime: the worker in a container of its software stack, one per stack and session.

The container runs ``python -m pytest_mlscope.worker`` (the image's entry point) and speaks the
same line protocol as a subprocess worker, over the attached stdin and stdout. It gets no network,
a read-only root file system and read-only mounts of the project and the artifact cache under
``/mnt``; only the session's work and trace folders are writable. Paths in requests and results
are translated between the host's folders and their mount points, so the worker never needs the
host's directory tree (whose parents, such as pytest's 0700 temporary folders, it could not
enter). It runs as an unprivileged user (the host user, or the image's ``mlscope`` user when the
host side is root), without capabilities, under a memory limit.

A container that dies or hangs fails only the item it was on, with its exit status (OOM-killed
named) and the tail of its stderr; the next item starts a fresh container. Containers carry the
pid of the process that owns them, so one left behind by a killed pytest is removed by the next
session that starts a container.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import socket
import time
from pathlib import Path
from typing import Any

from pytest_mlscope.containers import LABEL, ContainerError, client
from pytest_mlscope.errors import StackUnavailable, WorkerCrashed, WorkerTimeout
from pytest_mlscope.protocol import (
    AccuracyPass,
    EvaluationRequest,
    EvaluationResult,
    RoundRequest,
    TimingPass,
    WorkerReply,
)
from pytest_mlscope.runtimes.base import Runtime, check_ready, default_memory, unwrap
from pytest_mlscope.runtimes.subprocess import exit_description

START_TIMEOUT_S = 120.0
STDERR_TAIL_LINES = 30
IMAGE_USER = "10001:10001"  # the unprivileged user every stack image defines
IMAGE_SOURCE = "/opt/mlscope/src"  # where images keep pytest_mlscope, first on the path
OWNER_LABEL = f"{LABEL}.owner"  # "<hostname>:<pid>" of the process that started the container


class _Attached:
    """Lines over a container's attached stdin/stdout (Docker's multiplexed stream framing)."""

    def __init__(self, sock: Any) -> None:
        # The SDK's wrapper (with the HTTP response it pins) must live as long as we use the
        # socket inside it: when the garbage collector takes it, it closes that socket, the
        # container's stdin ends and its worker exits 0 (seen when many workers start at once).
        self._owner = sock
        self.sock: socket.socket = getattr(sock, "_sock", sock)
        self.raw = b""  # bytes received, not yet split into frames
        self.text = b""  # stdout payload, not yet split into lines

    def send_line(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def close_input(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def _frames(self) -> None:
        while len(self.raw) >= 8:
            size = int.from_bytes(self.raw[4:8], "big")
            if len(self.raw) < 8 + size:
                return
            stream, payload = self.raw[0], self.raw[8 : 8 + size]
            self.raw = self.raw[8 + size :]
            if stream in (0, 1):  # stdin echo never comes; 2 is stderr, which is not attached
                self.text += payload

    def read_line(self, timeout: float | None) -> bytes | None:
        """The next stdout line; None at end of stream; TimeoutError when none came in time."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.text:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self.sock], [], [], remaining)
            if not ready:
                raise TimeoutError
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                return None
            self.raw += chunk
            self._frames()
        line, _, self.text = self.text.partition(b"\n")
        return line


class PathMap:
    """Host folders and where they are mounted in the container; longest prefix wins, so a
    writable work folder inside a read-only project is found as the work folder."""

    def __init__(self, mounts: list[tuple[Path, str, str]]) -> None:
        self.mounts = mounts  # (host folder, container folder, "ro" | "rw")

    def _translate(self, path: str, pairs: list[tuple[str, str]]) -> str | None:
        for source, target in sorted(pairs, key=lambda pair: len(pair[0]), reverse=True):
            if path == source or path.startswith(source.rstrip("/") + "/"):
                return target + path[len(source) :]
        return None

    def to_container(self, path: str) -> str:
        resolved = str(Path(path).resolve())
        found = self._translate(resolved, [(str(h), c) for h, c, _ in self.mounts])
        if found is None:
            folders = ", ".join(str(h) for h, _, _ in self.mounts)
            raise StackUnavailable(
                f"{path} is outside the folders mounted into the container ({folders}): keep "
                "models, manifests and data inside the project or the artifact cache"
            )
        return found

    def to_host(self, path: str) -> str:
        return self._translate(path, [(c, str(h)) for h, c, _ in self.mounts]) or path

    def request(self, request: EvaluationRequest) -> EvaluationRequest:
        def move(value: str | None) -> str | None:
            return None if value is None else self.to_container(value)

        changes: dict[str, Any] = {
            "manifest_path": move(request.manifest_path),
            "artifact": request.artifact.model_copy(update={"path": move(request.artifact.path)}),
            "work_dir": move(request.work_dir),
            "trace_dir": move(request.trace_dir),
            "reference_outputs": move(request.reference_outputs),
            "save_outputs": move(request.save_outputs),
            "save_inputs": move(request.save_inputs),
            "inputs_path": move(request.inputs_path),
        }
        work = request.pass_
        if isinstance(work, AccuracyPass) and work.save_layer_outputs is not None:
            changes["pass_"] = work.model_copy(
                update={"save_layer_outputs": move(work.save_layer_outputs)}
            )
        if isinstance(work, TimingPass) and work.interleave is not None:
            artifact = work.interleave.artifact
            moved = artifact.model_copy(update={"path": move(artifact.path)})
            changes["pass_"] = work.model_copy(
                update={"interleave": work.interleave.model_copy(update={"artifact": moved})}
            )
        return request.model_copy(update=changes)

    def result(self, result: EvaluationResult) -> EvaluationResult:
        if result.outputs_path:
            result.outputs_path = self.to_host(result.outputs_path)
        if result.trace is not None and result.trace.path:
            result.trace.path = self.to_host(result.trace.path)
        return result


class DockerRuntime(Runtime):
    name = "docker"
    _counter = itertools.count(1)

    def __init__(
        self,
        image: str,
        *,
        read_only: list[Path],
        writable: list[Path],
        python_path: list[str] | None = None,
        gpu: bool = False,
        memory: str | None = None,
    ) -> None:
        self.image = image
        self.read_only = list(dict.fromkeys(Path(p).resolve() for p in read_only))
        self.writable = list(dict.fromkeys(Path(p).resolve() for p in writable))
        mounts = [(p, f"/mnt/ro{i}", "ro") for i, p in enumerate(self.read_only)]
        mounts += [(p, f"/mnt/rw{i}", "rw") for i, p in enumerate(self.writable)]
        self.paths = PathMap(mounts)
        self.python_path = python_path or []
        self.gpu = gpu
        self.memory = memory or default_memory()
        self.container: Any = None
        self.stream: _Attached | None = None
        self.image_id: str | None = None
        self.started = 0
        self._docker: Any = None

    @property
    def docker(self) -> Any:
        if self._docker is None:
            try:
                self._docker = client()
            except ContainerError as exc:
                raise StackUnavailable(str(exc)) from None
        return self._docker

    def _user(self) -> str:
        uid = os.getuid()
        return IMAGE_USER if uid == 0 else f"{uid}:{os.getgid()}"

    def _volumes(self) -> dict[str, dict[str, str]]:
        """The mounts; writable folders are made (and, for a root host side, handed to the
        image's user) first. A read-only folder the worker's user could not read is an error
        that says so, not a puzzling failure inside the container."""
        volumes = {}
        for path, target, mode in self.paths.mounts:
            if mode == "rw":
                path.mkdir(parents=True, exist_ok=True)
                if os.getuid() == 0:
                    uid, gid = (int(part) for part in IMAGE_USER.split(":"))
                    os.chown(path, uid, gid)
            elif not path.exists():
                continue
            elif os.getuid() == 0 and path.stat().st_mode & 0o005 != 0o005:
                raise StackUnavailable(
                    f"the worker in {self.image} runs as uid {IMAGE_USER.split(':')[0]}, which "
                    f"cannot read {path} (mode {path.stat().st_mode & 0o777:o}, owner uid "
                    f"{path.stat().st_uid}): make it readable (chmod o+rx) or run pytest as a "
                    "user other than root, whose uid the container then takes"
                )
            volumes[str(path)] = {"bind": target, "mode": mode}
        return volumes

    def _reap_orphans(self) -> None:
        """Remove containers whose owning process on this host is gone (a killed pytest)."""
        import psutil

        hostname = socket.gethostname()
        with contextlib.suppress(Exception):
            for found in self.docker.containers.list(all=True, filters={"label": OWNER_LABEL}):
                owner = found.labels.get(OWNER_LABEL, "")
                host, _, pid = owner.rpartition(":")
                if host == hostname and pid.isdigit() and not psutil.pid_exists(int(pid)):
                    found.remove(force=True)

    def _start(self) -> _Attached:
        import docker as sdk

        try:
            image = self.docker.images.get(self.image)
        except sdk.errors.ImageNotFound:
            raise StackUnavailable(
                f"no image {self.image}: build it with `mlscope containers build "
                f"{self.image.split('/')[-1].split(':')[0]}`"
            ) from None
        self.image_id = image.id
        self._reap_orphans()
        requests = [sdk.types.DeviceRequest(count=-1, capabilities=[["gpu"]])] if self.gpu else None
        api = self.docker.api
        host_config = api.create_host_config(
            network_mode="none",
            mem_limit=self.memory,
            memswap_limit=self.memory,  # no swap: a model that does not fit fails, not crawls
            read_only=True,
            tmpfs={"/tmp": "rw,nosuid,nodev,size=512m"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            binds=self._volumes(),
            device_requests=requests,
        )
        created = api.create_container(
            image.id,
            name=f"mlscope-{os.getpid()}-{next(self._counter)}",
            # Not detached with stdin open: Docker sets StdinOnce, so our closing stdin ends the
            # worker, as for a subprocess.
            stdin_open=True,
            detach=False,
            user=self._user(),
            environment={
                "PYTHONPATH": os.pathsep.join([IMAGE_SOURCE, *self._python_path()]),
                "PYTHONUNBUFFERED": "1",
            },
            labels={OWNER_LABEL: f"{socket.gethostname()}:{os.getpid()}"},
            host_config=host_config,
        )
        container = self.docker.containers.get(created["Id"])
        self.container = container
        try:
            sock = self.docker.api.attach_socket(
                container.id, params={"stdin": 1, "stdout": 1, "stream": 1}
            )
            self.stream = _Attached(sock)
            container.start()
        except Exception as exc:
            self._remove()
            raise WorkerCrashed(f"container for {self.image} did not start: {exc}") from None
        self.started += 1
        reply = self._read_reply(START_TIMEOUT_S, what="start")
        problem = check_ready(reply, f" in {self.image}")
        if problem:
            self._remove()
            raise WorkerCrashed(problem)
        return self.stream

    def _python_path(self) -> list[str]:
        """The host's extra import folders (a project's own predictors) that are mounted."""
        found = []
        for entry in self.python_path:
            with contextlib.suppress(StackUnavailable):
                found.append(self.paths.to_container(entry))
        return found

    def _stderr_tail(self) -> str:
        if self.container is None:
            return ""
        try:
            text = self.container.logs(stdout=False, stderr=True, tail=STDERR_TAIL_LINES)
        except Exception as exc:
            return f"(its log could not be read: {exc})"
        return text.decode(errors="replace").rstrip()

    def _exit_description(self) -> str:
        try:
            status = self.container.wait(timeout=10).get("StatusCode")
            self.container.reload()
            oom = self.container.attrs.get("State", {}).get("OOMKilled")
        except Exception:
            return "exit status unknown"
        if oom:
            return f"killed for exceeding its memory limit of {self.memory} (OOM)"
        # Docker reports 128 + signal where a subprocess reports -signal.
        if status is not None and status > 128:
            return exit_description(128 - status)
        return exit_description(status)

    def _read_reply(self, timeout: float | None, what: str) -> WorkerReply:
        assert self.stream is not None and self.container is not None
        short = self.container.short_id
        try:
            line = self.stream.read_line(timeout)
        except TimeoutError:
            tail = self._stderr_tail()
            self._remove()
            raise WorkerTimeout(
                f"worker in container {short} ({self.image}) gave no answer to {what} within "
                f"{timeout:g} s and was killed; its stderr ends with:\n{tail or '(empty)'}"
            ) from None
        if line is None:
            exit_text, tail = self._exit_description(), self._stderr_tail()
            self._remove()
            raise WorkerCrashed(
                f"worker in container {short} ({self.image}) died during {what}: {exit_text}; "
                f"its stderr ends with:\n{tail or '(empty)'}"
            )
        return WorkerReply.model_validate_json(line)

    def evaluate(
        self, request: EvaluationRequest | RoundRequest, timeout: float | None = None
    ) -> EvaluationResult:
        if self.stream is None or self.container is None:
            self._start()
        assert self.stream is not None
        inside = self.paths.request(request) if isinstance(request, EvaluationRequest) else request
        try:
            self.stream.send_line(inside.model_dump_json())
        except OSError:
            exit_text = self._exit_description()
            self._remove()
            raise WorkerCrashed(
                f"the container for {self.image} was gone before {request.cell.id}: {exit_text}"
            ) from None
        work_dir = request.work_dir if isinstance(request, EvaluationRequest) else None
        reply = self._read_reply(timeout, what=request.cell.id)
        result = self.paths.result(unwrap(reply, work_dir))
        result.predictor.details["container"] = self.fingerprint()
        return result

    def run_command(self, argv: list[str]) -> tuple[int, str]:
        """Run a command beside the worker, in its container (same user, mounts, no network):
        what the stack sees, for debugging and for the isolation tests."""
        if self.container is None:
            self._start()
        exit_code, output = self.container.exec_run(argv, stdout=True, stderr=True)
        return exit_code, output.decode(errors="replace")

    def fingerprint(self) -> dict[str, str]:
        """What identifies the stack that computed a result: the image by tag and content id."""
        return {
            "runtime": "docker",
            "image": self.image,
            "image_id": self.image_id or "",
            "container": self.container.short_id if self.container is not None else "",
        }

    def _remove(self) -> None:
        container, self.container = self.container, None
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.close()
        if container is not None:
            with contextlib.suppress(Exception):
                container.remove(force=True)

    def close(self) -> None:
        """End the worker by closing its input, as for a subprocess; remove the container."""
        if self.stream is not None and self.container is not None:
            self.stream.close_input()
            with contextlib.suppress(Exception):
                self.container.wait(timeout=10)
        self._remove()

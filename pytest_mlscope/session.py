"""What one ``pytest --mlscope`` session accumulates: manifests, runtimes, the run in the store.

The plugin keeps one :class:`MlscopeSession` in ``config.stash`` and hands every stage to it; it is
plain Python and can be driven without pytest. Each result is written to the store as soon as its
item ends, so a crash later in the session never loses it.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mlscope.errors import EvaluationFailed, ManifestError, MlscopeError
from pytest_mlscope.protocol import (
    Cell,
    EvaluationRequest,
    EvaluationResult,
    Interleave,
    MeasureOptions,
)

if TYPE_CHECKING:
    from pytest_mlscope.compare import Noise, Side, Verdict
    from pytest_mlscope.hardware import Host
    from pytest_mlscope.manifest import Manifest
    from pytest_mlscope.runtimes import Runtime
    from pytest_mlscope.shard import Shard
    from pytest_mlscope.store import Store


@dataclass
class Settings:
    """Everything a session needs from the command line and ini, resolved to plain values."""

    rootdir: Path
    manifest_paths: list[Path]
    runtime: str = "subprocess"
    db: str | None = None
    cache_dir: Path | None = None
    timeout: float | None = None
    predictors: dict[str, str] = field(default_factory=dict)
    measure_overrides: dict[str, float] = field(default_factory=dict)
    python_path: list[str] = field(default_factory=list)
    pytest_args: list[str] = field(default_factory=list)
    baseline: str | None = None  # compare against this named baseline
    baseline_required: bool = False  # named on the command line: missing is an error
    save_baseline: str | None = None  # point this baseline at the session's run at the end
    force_baseline: bool = False
    threshold: float | None = None  # overrides every manifest's regression_threshold
    default_threshold: float = 0.05  # ini mlscope_threshold: for manifests that set none
    fail_on_regression: bool = True
    inject_slowdown: float = 0.0
    # Time items in alternating rounds with their baseline's model; None: whenever a baseline
    # is named (the default design), False: the stored design, True: also without a baseline
    # (an A/A run of the item against itself).
    interleave: bool | None = None
    strict: bool = False  # an inconclusive verdict fails the item too
    count_instructions: bool = False  # after timing, count instructions under callgrind
    trace_level: str | None = None  # overrides every manifest's performance.trace
    default_trace_level: str = "none"  # ini mlscope_trace
    worker_memory: str | None = None  # each worker's memory limit (default: half the host)
    docker_memory: str | None = None  # the docker runtime's (default: worker_memory)
    html: Path | None = None  # the HTML report written at the end of the session
    markdown: Path | None = None  # the markdown summary written at the end of the session
    shard: Shard | None = None  # run only this part of the suite
    shard_group: str | None = None  # the runners that split one suite
    # Under pytest-xdist: the run the controller opened, which this worker records into (the
    # controller closes it and writes the reports), and the lock that serializes timing.
    shared_run: str | None = None
    timing_lock: Path | None = None

    @property
    def interleaving(self) -> bool:
        """Whether items are timed beside an A side: asked for, or by default with a baseline."""
        if self.interleave is None:
            return bool(self.baseline)
        return self.interleave

    @property
    def state_dir(self) -> Path:
        return self.rootdir / ".mlscope"

    @property
    def db_location(self) -> str:
        return self.db or os.environ.get("MLSCOPE_DB") or str(self.state_dir / "results.db")

    @property
    def artifact_dir(self) -> Path:
        return self.cache_dir or Path(
            os.environ.get("MLSCOPE_CACHE") or self.state_dir / "artifacts"
        )


@dataclass
class Record:
    """One item's outcome, kept for the terminal summary."""

    cell: Cell
    outcome: str
    result: EvaluationResult | None = None
    message: str | None = None
    verdict: Verdict | None = None
    # The result's identity: the cell's id for a manifest item; a hand-written test's
    # evaluation adds the test, so the two never share a name in the store, exports or verdicts.
    item_id: str = ""

    def __post_init__(self) -> None:
        self.item_id = self.item_id or self.cell.id


KEEP_WORK_DIRS = 5
COUNT_ROUNDS = 5  # rounds of the count pass (each about 3M instructions, callgrind.count_calls)
HISTORY_FOR_NOISE = 30  # comparable earlier runs whose spread sets an item's run-to-run noise


def _with_suspicions(found: Verdict, result: EvaluationResult) -> Verdict:
    """A slowdown measured while the GPU throttled or neighbours kept the CPU busy says so."""
    from dataclasses import replace

    from pytest_mlscope.telemetry import suspicions

    seen = suspicions(result.telemetry)
    if not seen or found.kind not in ("regression", "inconclusive"):
        return found
    if found.design == "instructions":  # counts are what a busy machine cannot move
        return found
    return replace(found, reason=f"{found.reason}; suspect: {'; '.join(seen)} during timing")


def _installed(metadata: Any, distribution: str) -> bool:
    try:
        metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


class MlscopeSession:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.manifests: dict[str, Manifest] = {}
        self.records: list[Record] = []
        self._runtimes: dict[str, Runtime] = {}
        self._store: Store | None = None
        self._run_id: str | None = None
        self._cache: Any = None
        self._scanned = False
        self._baseline: dict[str, Side] | None = None
        self.baseline_note: str | None = None
        self.comparisons = 1  # items compared this session, for the multiple-testing correction
        self.saved_baseline: str | None = None
        self.shard: tuple[str, str | None] | None = None  # (K/N, group) once items were split
        self.shard_note: str | None = None
        self.report_lines: list[str] = []  # where the reports went, or why they did not
        self.lock_wait_s = 0.0  # the last item's wait for the timing lock (pytest-xdist)
        # Waits for the timing lock: on an xdist worker those not yet sent to the controller, on
        # the controller all its workers' (the summary says it).
        self.lock_waited_s = 0.0
        self.records_sent = 0  # records already sent to the xdist controller
        self.xdist_workers = 0  # on the controller of a pytest-xdist session: its workers
        # Per item id: what the A side of an interleaved measurement was, or why there was none.
        self._interleaved: dict[str, tuple[bool, str]] = {}
        # Per item id: why its instructions were not counted (a container stack, say).
        self.not_counted: dict[str, str] = {}
        self._image_reasons: dict[str, tuple[str | None, bool]] = {}
        self._container_only: dict[str, bool] = {}  # framework -> its predictor's container_only
        self._failed_stacks: dict[str, str] = {}  # baseline stacks that could not be rebuilt
        token = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        self.work_dir = settings.state_dir / "work" / token

    # -- manifests ------------------------------------------------------------------------------

    def register(self, manifest: Manifest) -> None:
        """Add a collected manifest; two files may not claim the same model name."""
        known = self.manifests.get(manifest.name)
        if known is not None and known.path != manifest.path:
            raise ManifestError(
                [
                    f"{manifest.where('name')}: name: {manifest.name!r} is already the name of "
                    f"{known.where('name')}"
                ]
            )
        self.manifests[manifest.name] = manifest

    def manifest(self, name: str) -> Manifest:
        """A manifest by model name, loading the configured manifest paths if not collected."""
        if name not in self.manifests and not self._scanned:
            from pytest_mlscope.manifest import load_manifest, manifest_files

            self._scanned = True
            for path in manifest_files(self.settings.manifest_paths):
                try:
                    manifest = load_manifest(path)
                except ManifestError:
                    continue  # reported when that file is collected or validated
                self.manifests.setdefault(manifest.name, manifest)
        if name not in self.manifests:
            where = ", ".join(str(p) for p in self.settings.manifest_paths) or "(none configured)"
            raise MlscopeError(f"no manifest named {name!r} in {where}")
        return self.manifests[name]

    @property
    def host(self) -> Host:
        from pytest_mlscope.hardware import current_host

        return current_host()

    # -- evaluation -----------------------------------------------------------------------------

    def measure_options(self, manifest: Manifest, **overrides: float) -> MeasureOptions:
        performance = manifest.performance
        values: dict[str, Any] = {
            "warmup": performance.warmup,
            "min_count": performance.min_count,
            "min_duration_s": performance.min_duration_s,
            "max_duration_s": performance.max_duration_s,
            "rounds": performance.rounds,
        }
        values.update(self.settings.measure_overrides)
        values.update(overrides)
        values["max_duration_s"] = max(values["max_duration_s"], values["min_duration_s"])
        values["warmup"] = int(values["warmup"])
        values["min_count"] = int(values["min_count"])
        values["rounds"] = int(values["rounds"])
        values.setdefault("precision", None)
        return MeasureOptions(**values)

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

    def runtime(self, cell: Cell) -> Runtime:
        """One runtime per software stack: every framework on the host shares the host stack;
        with the docker runtime, each image is a stack of its own."""
        if self.in_container(cell):
            return self._docker_runtime(cell, self.image(cell))
        from pytest_mlscope.predictors import predictor_class

        stack = predictor_class(cell.framework, self.settings.predictors).venv_stack
        if stack:
            from pytest_mlscope import stacks

            return self._venv_runtime(stacks.get(stack))
        return self._host_runtime(self.settings.runtime)

    def _venv_runtime(self, stack: Any) -> Runtime:
        """A subprocess worker in a venv stack (``pytest_mlscope.stacks.VenvStack``), with this
        pytest-mlscope on its path: the same worker and protocol, another interpreter."""
        from pytest_mlscope import stacks
        from pytest_mlscope.runtimes.subprocess import SubprocessRuntime

        key = f"venv:{stacks.location(stack)}"
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

    def _host_runtime(self, kind: str) -> Runtime:
        from pytest_mlscope.runtimes import make_runtime

        if kind not in self._runtimes:
            python_path = [str(self.settings.rootdir), *self.settings.python_path]
            self._runtimes[kind] = make_runtime(
                kind, self.work_dir / "workers", python_path, memory=self.settings.worker_memory
            )
        return self._runtimes[kind]

    def image(self, cell: Cell) -> str:
        """The container image a cell runs in (the manifest's ``container`` map, else the
        stack's default tag)."""
        from pytest_mlscope.containers import image_for

        spec = self.manifest(cell.model).framework_spec(cell.framework, cell.stack)
        return image_for(spec, cell.device)

    def _docker_runtime(self, cell: Cell, image: str) -> Runtime:
        from pytest_mlscope.runtimes.docker import DockerRuntime

        key = f"docker:{image}:{cell.device}"
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

    def skip_reason(self, manifest: Manifest, cell: Cell) -> tuple[str | None, bool]:
        """Why a cell cannot run here, and whether a missing service (a Docker daemon, an
        image) is the reason: under ``CI=true`` such items fail instead of skipping."""
        from pytest_mlscope.cells import skip_reason

        docker = self.in_container(cell)
        reason = skip_reason(
            manifest, cell, self.host, self.settings.predictors, in_container=docker
        )
        if reason and not docker:
            return reason, self._venv_stack_missing(cell)
        if reason or not docker:
            return reason, False
        image = self.image(cell)
        if image not in self._image_reasons:
            self._image_reasons[image] = self._check_image(manifest, cell, image)
        return self._image_reasons[image]

    def _venv_stack_missing(self, cell: Cell) -> bool:
        """Whether the cell's framework lives in a venv stack that is not set up: a missing
        service like a Docker image, which CI must provide (``mlscope stacks setup``)."""
        from pytest_mlscope import stacks
        from pytest_mlscope.errors import StackUnavailable
        from pytest_mlscope.predictors import predictor_class

        try:
            name = predictor_class(cell.framework, self.settings.predictors).venv_stack
        except StackUnavailable:
            return False
        return bool(name) and stacks.unavailable(stacks.get(name)) is not None

    def _check_image(self, manifest: Manifest, cell: Cell, image: str) -> tuple[str | None, bool]:
        from packaging.specifiers import SpecifierSet
        from packaging.version import InvalidVersion, Version

        from pytest_mlscope.containers import (
            LABEL,
            SYSTEM_STACKS,
            ContainerError,
            client,
            find_image,
            source_digest,
        )

        stack = image.split("/")[-1].split(":")[0]
        # Caffe's items use a container under any runtime: say which container needs the daemon.
        where = "docker runtime" if self.settings.runtime == "docker" else f"{stack} container"
        try:
            found = find_image(client(), image)
        except ContainerError as exc:
            return f"{where}: {exc}", True
        if found is None:
            system = SYSTEM_STACKS.get(stack)
            first = f"containers/{system.base_script} (its base), then " if system else ""
            return (
                f"{where}: no image {image} here; build it with {first}"
                f"`mlscope containers build {stack}`",
                True,
            )
        labels = found.labels or {}
        built_from = labels.get(f"{LABEL}.source-hash")
        if built_from and built_from != source_digest():
            stack = labels.get(f"{LABEL}.stack", cell.framework)
            return (
                f"image {image} holds a pytest-mlscope worker built from other sources than "
                f"this one (version {labels.get(f'{LABEL}.version', '?')}, built "
                f"{found.attrs.get('Created', '?')[:19]}): rebuild it with "
                f"`mlscope containers build {stack}`",
                True,
            )
        version = labels.get(f"{LABEL}.framework-version")
        spec = manifest.framework_spec(cell.framework, cell.stack).version
        if version and spec:
            try:
                ok = SpecifierSet(spec).contains(Version(version), prereleases=True)
            except InvalidVersion:
                ok = False
            if not ok:
                return (
                    f"image {image} has {cell.framework} {version}, the manifest asks for "
                    f"{cell.framework}{spec}",
                    False,
                )
        return None, False

    def _artifact(self, manifest: Manifest, framework: str) -> Any:
        from pytest_mlscope.predictors import predictor_class

        formats = predictor_class(framework, self.settings.predictors).formats
        return self.cache.for_framework(manifest, framework, formats)

    @property
    def cache(self) -> Any:
        """The artifact cache (``zoo.cache.ArtifactCache``), opened on first use."""
        if self._cache is None:
            from pytest_mlscope.zoo.cache import ArtifactCache

            self._cache = ArtifactCache(self.settings.artifact_dir)
        return self._cache

    def _reference_path(self, manifest: Manifest) -> Path | None:
        agreement = manifest.accuracy.agreement
        if agreement is None:
            return None
        return self.work_dir / "reference" / f"{_safe(manifest.name)}-{agreement.reference}.npz"

    def _ensure_reference(self, manifest: Manifest) -> Path:
        """The reference framework's outputs, computed by an accuracy-only pass if no item did."""
        path = self._reference_path(manifest)
        assert path is not None and manifest.accuracy.agreement is not None
        if path.exists():
            return path
        reference = manifest.accuracy.agreement.reference
        from pytest_mlscope.cells import skip_reason

        cell = Cell(model=manifest.name, framework=reference, device="cpu", batch_size=1)
        runtime = None
        reason, _ = self.skip_reason(manifest, cell)
        # No image for the reference: its outputs from the host's stack, when it has one.
        if (
            reason
            and self.in_container(cell)
            and skip_reason(manifest, cell, self.host, self.settings.predictors) is None
        ):
            reason, runtime = None, self._host_runtime("subprocess")
        if reason:
            raise EvaluationFailed(
                f"the agreement reference {reference} cannot run here, so agreement cannot be "
                f"checked: {reason}"
            )
        request = self._request(manifest, cell, accuracy_only=True, save_outputs=path)
        try:
            (runtime or self.runtime(cell)).evaluate(request, self.settings.timeout)
        except MlscopeError as exc:
            raise EvaluationFailed(f"the agreement reference {reference} failed: {exc}") from exc
        return path

    def _request(
        self,
        manifest: Manifest,
        cell: Cell,
        *,
        accuracy_only: bool = False,
        save_outputs: Path | None = None,
        reference: Path | None = None,
        checks: list[str] | None = None,
        interleave: bool = False,
        item_id: str | None = None,
        **overrides: float,
    ) -> EvaluationRequest:
        artifact = self._artifact(manifest, cell.framework)
        level = self.trace_level(manifest)
        return EvaluationRequest(
            trace_level="none" if accuracy_only else level,
            trace_dir=str(self.trace_dir),
            cell=cell,
            manifest_path=str(manifest.path),
            artifact=artifact,
            interleave=self._interleave_side(manifest, cell, artifact, item_id)
            if interleave
            else None,
            measure=self.measure_options(manifest, **overrides),
            work_dir=str(self.work_dir),
            reference_outputs=str(reference) if reference else None,
            save_outputs=str(save_outputs) if save_outputs else None,
            predictors=self.settings.predictors,
            accuracy_only=accuracy_only,
            checks=checks,
            inject_slowdown=self.settings.inject_slowdown,
        )

    def evaluate(
        self, manifest: Manifest, cell: Cell, item_id: str | None = None, **overrides: float
    ) -> EvaluationResult:
        """Accuracy and timing for one cell, in the cell's runtime; ``item_id`` names the result
        (and its baseline) when it is not the cell's own id (a hand-written test's evaluation)."""
        item = item_id or cell.id
        agreement = manifest.accuracy.agreement
        save = reference = None
        if agreement is not None:
            # The reference runs on the CPU; the same framework on a GPU is checked against it.
            if cell.framework == agreement.reference and cell.device == "cpu":
                candidate = self._reference_path(manifest)
                save = candidate if candidate and not candidate.exists() else None
            else:
                reference = self._ensure_reference(manifest)
        other = manifest.framework_spec(cell.framework, cell.stack).interleave_with
        interleaving = self.settings.interleaving
        across = interleaving and other is not None
        upgrade = (
            self._baseline_stack(manifest, cell, item) if interleaving and not across else None
        )
        request = self._request(
            manifest,
            cell,
            save_outputs=save,
            reference=reference,
            interleave=interleaving and not across and upgrade is None,
            item_id=item,
            **overrides,
        )
        if across:
            assert other is not None
            return self._interleave_stacks(manifest, cell, other, request, **overrides)
        if upgrade is not None:
            return self._interleave_baseline_stack(
                manifest, cell, upgrade, request, item, **overrides
            )
        counting = self.settings.count_instructions and self._countable(cell)
        if counting:
            inputs = self.work_dir / "inputs" / f"{_safe(cell.id)}.npz"
            request = request.model_copy(update={"save_inputs": str(inputs)})
        result = self.runtime(cell).evaluate(request, self.settings.timeout)
        if counting:
            result = self._count(cell, request, result)
        return result

    def check_counting(self) -> None:
        """Fail fast, before any item runs, when instructions cannot be counted here."""
        if self.settings.count_instructions:
            from pytest_mlscope.callgrind import supported

            reason = supported()
            if reason:
                raise MlscopeError(f"--mlscope-count-instructions: {reason}")

    def _countable(self, cell: Cell) -> bool:
        if self.in_container(cell):
            self.not_counted[cell.id] = (
                "instructions not counted: the count pass runs on host and venv stacks only "
                "(container images carry no Valgrind)"
            )
            return False
        return True

    def _count(
        self, cell: Cell, timed: EvaluationRequest, result: EvaluationResult
    ) -> EvaluationResult:
        """The count pass: the same model and inputs as the timing pass, in a worker of the same
        stack started under callgrind; instructions per call per round join the result."""
        from pytest_mlscope.protocol import CountOptions

        request = timed.model_copy(
            update={
                "count": CountOptions(rounds=COUNT_ROUNDS),
                "checks": [],
                "inputs_path": timed.save_inputs,
                "save_inputs": None,
                "save_outputs": None,
                "reference_outputs": None,
                "interleave": None,
                "trace_level": "none",
            }
        )
        counted = self._count_runtime(cell).evaluate(request, self.settings.timeout)
        return result.model_copy(update={"instructions": counted.instructions})

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

    def _interleave_stacks(
        self,
        manifest: Manifest,
        cell: Cell,
        other: str,
        request: EvaluationRequest,
        **overrides: float,
    ) -> EvaluationResult:
        """Time the item (B, its stack) against another stack of its framework (A, the manifest
        entry's ``interleave_with``) in alternating rounds, each in its own worker."""
        a_cell = cell.model_copy(update={"stack": other})
        reason, _ = self.skip_reason(manifest, a_cell)
        if reason:
            raise EvaluationFailed(f"cannot interleave with stack {other!r}: {reason}")
        a_request = self._request(manifest, a_cell, checks=[], **overrides)
        result, a_version = self._interleave_workers(
            manifest, cell, request, a_cell, a_request, self.runtime(a_cell)
        )
        where = f" in {self.image(a_cell)}" if self.in_container(a_cell) else ""
        self._interleaved[cell.id] = (
            True,
            f"stack {other} ({cell.framework} {a_version}{where})",
        )
        return result

    def _interleave_baseline_stack(
        self,
        manifest: Manifest,
        cell: Cell,
        stack: Any,
        request: EvaluationRequest,
        item_id: str,
        **overrides: float,
    ) -> EvaluationResult:
        """Time the item (B, on the host) against the baseline's model on the baseline's own
        framework release (A, in a venv rebuilt from the package registry): a framework upgrade,
        A/B-tested by naming the baseline."""
        side = self._interleave_side(manifest, cell, request.artifact, item_id)
        if side is None:
            artifact = request.artifact
            model = "this run's model (the baseline's own file is neither cached nor kept)"
        else:
            artifact, model = side.artifact, self._interleaved[cell.id][1]
        a_request = self._request(manifest, cell, checks=[], **overrides).model_copy(
            update={"artifact": artifact}
        )
        result, a_version = self._interleave_workers(
            manifest, cell, request, cell, a_request, self._venv_runtime(stack)
        )
        self._interleaved[cell.id] = (
            True,
            f"{model} on the baseline's {stack.framework} {a_version} (a venv rebuilt from the "
            "package registry)",
        )
        return result

    def _interleave_workers(
        self,
        manifest: Manifest,
        cell: Cell,
        request: EvaluationRequest,
        a_cell: Cell,
        a_request: EvaluationRequest,
        runtime_a: Runtime,
    ) -> tuple[EvaluationResult, str]:
        """B in the cell's own worker, A in ``runtime_a``, in alternating rounds.

        Both workers load, check and warm up their model and keep it (``hold``); then the host
        asks each for one round at a time, in random order within each pair, so drift hits both
        stacks alike, and adds blocks of pairs until the verdict is clear (measure.LOOKS at
        most), as the in-worker interleave does. The result is B's, with A's rounds as pairs;
        with A's framework version.
        """
        import contextlib
        import random

        from pytest_mlscope.compare import settled
        from pytest_mlscope.measure import LOOKS, pair_plan
        from pytest_mlscope.protocol import RoundRequest
        from pytest_mlscope.stats import round_medians, summarize_scenario

        a_request = a_request.model_copy(
            update={"hold": True, "inject_slowdown": 0.0, "interleave": None}
        )
        runtime_b = self.runtime(cell)
        timeout = self.settings.timeout
        pairs, per_round = pair_plan(request.measure)
        samples: dict[str, list[int]] = {"a": [], "b": []}
        sizes: dict[str, list[int]] = {"a": [], "b": []}
        sides = {"a": (runtime_a, a_cell), "b": (runtime_b, cell)}
        held: list[str] = []
        try:
            first_b = runtime_b.evaluate(
                request.model_copy(update={"hold": True, "interleave": None}), timeout
            )
            held.append("b")
            first_a = runtime_a.evaluate(a_request, timeout)
            held.append("a")
            rng = random.Random(random.randrange(2**31))
            threshold = self.threshold(manifest)
            for _ in range(LOOKS):
                for _ in range(pairs):
                    for key in ("a", "b") if rng.random() < 0.5 else ("b", "a"):
                        runtime, which = sides[key]
                        got = runtime.evaluate(RoundRequest(cell=which, measure=per_round), timeout)
                        samples[key].extend(got.samples_ns)
                        sizes[key].append(len(got.samples_ns))
                a_rounds = round_medians(samples["a"], sizes["a"])
                b_rounds = round_medians(samples["b"], sizes["b"])
                if settled(
                    a_rounds,
                    b_rounds,
                    threshold=threshold,
                    comparisons=self.comparisons,
                    looks=LOOKS,
                ):
                    break
        finally:
            for key in held:
                runtime, which = sides[key]
                with contextlib.suppress(MlscopeError):
                    runtime.evaluate(RoundRequest(cell=which, measure=per_round, release=True))
        summary = summarize_scenario(samples["b"], cell.batch_size, cell.scenario)
        result = first_b.model_copy(
            update={
                "summary": summary,
                "samples_ns": samples["b"],
                "rounds": sizes["b"],
                "paired_samples_ns": samples["a"],
                "paired_rounds": sizes["a"],
                "paired_artifact_sha256": first_a.artifact_sha256,
                "paired_predictor": first_a.predictor,
            }
        )
        return result, first_a.predictor.version

    def _baseline_stack(self, manifest: Manifest, cell: Cell, item_id: str) -> Any:
        """The venv stack (``stacks.VenvStack``) of the baseline's framework release, when the
        item's baseline result was measured on another release than the host's: set up now from
        the package registry, once per machine and release. None when the releases match, the
        item runs in a container or a venv stack of its own, or the stack cannot be made (then
        the reason joins the verdict, and the stored design decides)."""
        from pytest_mlscope import stacks
        from pytest_mlscope.predictors import predictor_class

        if not self.settings.baseline or self.in_container(cell):
            return None
        baseline = self._baseline_sides().get(item_id)
        cls = predictor_class(cell.framework, self.settings.predictors)
        if baseline is None or not baseline.framework_version or cls.venv_stack:
            return None
        installed = cls.installed_version()
        if installed is None or installed == baseline.framework_version:
            return None
        from importlib import metadata

        distribution = next(
            (d for d in cls.distributions if _installed(metadata, d)), cls.distributions[0]
        )
        recorded = dict(baseline.host.get("packages") or {})
        stack = stacks.baseline_stack(distribution, baseline.framework_version, recorded)
        if stacks.unavailable(stack) is None:
            return stack
        if stack.name in self._failed_stacks:
            self._interleaved[cell.id] = (False, self._failed_stacks[stack.name])
            return None
        started = time.monotonic()
        try:
            stacks.setup(stack)
        except (stacks.StackError, OSError) as exc:
            self._failed_stacks[stack.name] = (
                f"the baseline's {distribution} {baseline.framework_version} could not be "
                f"rebuilt: {exc}"
            )
            self._interleaved[cell.id] = (False, self._failed_stacks[stack.name])
            return None
        self.report_lines.append(
            f"the baseline's stack ({distribution} {baseline.framework_version}) was rebuilt "
            f"from the package registry in {time.monotonic() - started:.0f} s: "
            f"{stacks.location(stack)}"
        )
        return stack

    def trace_level(self, manifest: Manifest) -> str:
        """Command line, else the manifest's ``performance.trace`` when set, else ini."""
        if self.settings.trace_level:
            return self.settings.trace_level
        if "trace" in manifest.performance.model_fields_set:
            return manifest.performance.trace
        return self.settings.default_trace_level

    @property
    def trace_dir(self) -> Path:
        """Trace files live beside the database, one folder per session, never pruned with
        the work directories: the store points at them."""
        return self.settings.state_dir / "traces" / self.work_dir.name

    def _interleave_side(
        self, manifest: Manifest, cell: Cell, artifact: Any, item_id: str | None = None
    ) -> Interleave | None:
        """The A side of the interleaved design: the baseline's artifact, unslowed.

        Without a baseline result, A is the item's own artifact: an A/A run that shows the
        pair-to-pair noise, or the gate self-test when a slowdown is injected into B. The
        baseline's artifact is looked up in the local cache, then in the artifact store that
        lives with the results database (every saved baseline keeps its artifacts there), so a
        fresh CI runner or a replaced model file still times the baseline's model. Only when
        neither has it does the item fall back to the stored design, saying why.
        """
        import random

        item = item_id or cell.id
        baseline = self._baseline_sides().get(item) if self.settings.baseline else None
        if baseline is None and self.settings.interleave is None:
            return None  # new to the baseline: nothing to time it against, unless asked (A/A)
        moved = self._stack_moved(cell, baseline)
        if moved:
            self._interleaved[cell.id] = (False, f"stored design: {moved}")
            return None
        chosen = artifact
        if baseline is None or baseline.artifact_sha256 in (None, artifact.sha256):
            if self.settings.inject_slowdown:
                what = "the same model without the injected slowdown"
            elif baseline is not None:
                what = "the baseline's model (the same artifact)"
            else:
                what = "the same model (A/A)"
        else:
            assert baseline.artifact_sha256 is not None
            found, where = self._baseline_artifact(manifest, baseline.artifact_sha256)
            if found is None or found.format != artifact.format:
                self._interleaved[cell.id] = (
                    False,
                    f"stored design: the baseline's artifact (sha256 "
                    f"{baseline.artifact_sha256[:12]}) is neither in the cache "
                    f"{self.settings.artifact_dir} nor in the results database's artifact "
                    "store (saved baselines keep theirs; this one predates that or was "
                    "imported without them)",
                )
                return None
            chosen = found
            what = f"the baseline's artifact (sha256 {found.sha256[:12]}, {where})"
        self._interleaved[cell.id] = (True, what)
        return Interleave(
            artifact=chosen,
            seed=random.randrange(2**31),
            threshold=self.threshold(manifest),
            comparisons=self.comparisons,
        )

    def _stack_moved(self, cell: Cell, baseline: Side | None) -> str | None:
        """Why the baseline's side cannot be timed in this item's worker: it ran in another
        container image (or on the host, and the item in an image, or the other way round).
        Interleaving in one worker would time both on this stack and hide the change; a
        baseline's image is not rebuilt yet, so the stored design names the difference."""
        if baseline is None:
            return None
        before = str(baseline.host.get("container_image") or "").split(" (")[0] or None
        after = self.image(cell) if self.in_container(cell) else None
        if before == after:
            return None
        return (
            f"the baseline ran {f'in {before}' if before else 'on the host stack'}, this item "
            f"{f'in {after}' if after else 'on the host stack'}: one worker would time both on "
            "this one"
        )

    def _baseline_artifact(self, manifest: Manifest, sha256: str) -> tuple[Any, str]:
        """The baseline's artifact by checksum: the local cache first, then the store."""
        found = self.cache.find(manifest.name, sha256)
        if found is not None:
            return found, "from the artifact cache"
        found = self.cache.from_store(self.store, sha256)
        if found is not None:
            return found, "fetched from the results database"
        return None, ""

    def threshold(self, manifest: Manifest) -> float:
        """The slowdown the gate must catch: command line, else manifest, else ini."""
        return (
            self.settings.threshold
            or manifest.performance.regression_threshold
            or self.settings.default_threshold
        )

    def write_golden(self, manifest: Manifest, framework: str | None = None) -> Path:
        """Store a framework's outputs as the manifest's golden file (an explicit, reviewed act)."""
        golden = manifest.accuracy.golden
        if golden is None:
            raise MlscopeError(f"{manifest.where('accuracy')}: accuracy.golden is not set")
        agreement = manifest.accuracy.agreement
        framework = framework or (agreement.reference if agreement else manifest.framework[0].name)
        manifest.framework_spec(framework)
        path = manifest.resolve(golden.path)
        cell = Cell(model=manifest.name, framework=framework, device="cpu", batch_size=1)
        request = self._request(manifest, cell, accuracy_only=True, save_outputs=path, checks=[])
        self.runtime(cell).evaluate(request, self.settings.timeout)
        return path

    def _prune_work_dirs(self, keep: int = KEEP_WORK_DIRS) -> None:
        """Keep the newest work directories (worker logs, reference outputs) for post-mortems."""
        import shutil

        parent = self.work_dir.parent
        if not parent.is_dir():
            return
        old = sorted(parent.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)[keep:]
        for directory in old:
            shutil.rmtree(directory, ignore_errors=True)

    # -- verdicts ------------------------------------------------------------------------------

    def check_baselines(self) -> None:
        """Fail fast, before any item runs, on a baseline that cannot be used or saved."""
        from pytest_mlscope.store import StoreError

        settings = self.settings
        if settings.baseline and settings.baseline_required:
            self.store.get_baseline(settings.baseline)
        if settings.save_baseline and not settings.force_baseline:
            try:
                existing = self.store.get_baseline(settings.save_baseline)
            except StoreError:
                return
            raise MlscopeError(
                f"baseline {settings.save_baseline!r} already points to run "
                f"{existing.run_id[:12]}; pass --mlscope-force-baseline to move it"
            )

    def _baseline_sides(self) -> dict[str, Side]:
        """The baseline's result per item id, loaded once."""
        if self._baseline is None:
            from pytest_mlscope.compare import side_of
            from pytest_mlscope.store import StoreError

            self._baseline = {}
            name = self.settings.baseline
            if name:
                try:
                    record = self.store.get_baseline(name)
                except StoreError as exc:
                    if self.settings.baseline_required:
                        raise
                    self.baseline_note = f"{exc}; every item is new"
                    return self._baseline
                run = self.store.get_run(record.run_id)
                for item_id, result in self.store.latest_results(record.run_id).items():
                    if result.summary is None and result.accuracy is None:
                        continue
                    self._baseline[item_id] = side_of(result, run.host, run.id)
        return self._baseline

    def verdict(
        self, manifest: Manifest, result: EvaluationResult, item_id: str | None = None
    ) -> Verdict | None:
        """How a fresh result compares with the baseline; None when there is nothing to compare.

        ``compare.verdict`` decides, as it does for ``mlscope compare`` and the report; the
        session adds what only it knows: what the A side was, the slowest layers, counts that
        could not be taken, and load on the machine during timing.
        """
        if not self.settings.baseline and not result.paired_samples_ns:
            return None
        from dataclasses import replace

        from pytest_mlscope.compare import Noise, Side, environment, verdict

        current = Side(
            samples_ns=result.samples_ns,
            rounds=result.rounds,
            accuracy=result.accuracy,
            host=environment(self.host.fingerprint(), result.predictor),
            framework_version=result.predictor.version,
            instructions=result.instructions,
            artifact_sha256=result.artifact_sha256,
            paired_samples_ns=result.paired_samples_ns,
            paired_rounds=result.paired_rounds,
            paired_version=(
                result.paired_predictor.version
                if result.paired_predictor is not None
                else result.predictor.version
                if result.paired_samples_ns
                else None
            ),
            paired_artifact_sha256=result.paired_artifact_sha256,
        )
        item = item_id or result.cell.id
        baseline = self._baseline_sides().get(item) if self.settings.baseline else None
        # Run-to-run noise serves the stored and counted designs only: an interleaved item
        # without counts skips the history query.
        needed = not result.paired_samples_ns or bool(result.instructions)
        noise = self.noise(result, item) if needed else Noise()
        found = verdict(
            baseline,
            current,
            threshold=self.threshold(manifest),
            comparisons=self.comparisons,
            framework=result.cell.framework,
            between_run_noise=noise.latency,
            noise_runs=noise.runs,
            count_noise=noise.instructions,
        )
        interleaved = self._interleaved.get(result.cell.id)
        if found.design == "interleaved" and interleaved is not None and interleaved[0]:
            found = replace(
                found,
                reason=found.reason.replace(
                    "interleaved,", f"interleaved with {interleaved[1]},", 1
                ),
            )
        if (
            found.design == "interleaved"
            and result.paired_predictor is None
            and baseline is not None
            and baseline.framework_version not in (None, result.predictor.version)
        ):
            found = replace(
                found,
                reason=f"{found.reason} (both sides ran on {result.cell.framework} "
                f"{result.predictor.version}; the baseline's {baseline.framework_version} "
                "is not installed here)",
            )
        if (
            found.kind == "regression"
            and baseline is not None
            and baseline.layers
            and result.layers
        ):
            from pytest_mlscope.tracing.layers import diff_layers, slowest_movers

            movers = [
                c.describe() for c in slowest_movers(diff_layers(baseline.layers, result.layers))
            ]
            if movers:
                found = replace(
                    found,
                    reason=f"{found.reason}; slowest movers: {'; '.join(movers)}",
                    layer_changes=movers,
                )
        if interleaved is not None and not interleaved[0]:
            found = replace(found, reason=f"{found.reason} ({interleaved[1]})")
        if result.cell.id in self.not_counted:
            found = replace(found, reason=f"{found.reason} ({self.not_counted[result.cell.id]})")
        elif baseline is not None and bool(baseline.instructions) != bool(result.instructions):
            which = "this run" if baseline.instructions else "the baseline"
            found = replace(
                found,
                reason=f"{found.reason} (decided on latency: {which} has no instruction counts)",
            )
        return _with_suspicions(found, result)

    def noise(self, result: EvaluationResult, item_id: str | None = None) -> Noise:
        """The item's spread across comparable stored runs (same CPU model, framework version
        and container image), for the stored and counted designs."""
        from pytest_mlscope.compare import environment
        from pytest_mlscope.judging import item_noise

        return item_noise(
            self.store,
            item_id or result.cell.id,
            environment(self.host.fingerprint(), result.predictor),
            result.predictor.version,
        )

    @contextlib.contextmanager
    def timing_turn(self) -> Iterator[None]:
        """Hold the session's timing lock, when it has one (pytest-xdist workers share it), for
        as long as an item is measured: parallel items would take each other's cores and
        memory bandwidth, and measure that. The wait is not the item's time, and is counted."""
        self.lock_wait_s = 0.0
        if self.settings.timing_lock is None:
            yield
            return
        import fcntl

        started = time.monotonic()
        with open(self.settings.timing_lock, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.lock_wait_s = time.monotonic() - started
            self.lock_waited_s += self.lock_wait_s
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def evaluate_and_compare(
        self, manifest: Manifest, cell: Cell, item_id: str | None = None, **overrides: float
    ) -> tuple[EvaluationResult, Verdict | None]:
        """Evaluate, then compare. No second measurement: the interleaved design adds pairs until
        the verdict is clear, within the item's budget, and the stored one cannot confirm
        anything in the same process (a second measurement shares the first one's offset)."""
        result = self.evaluate(manifest, cell, item_id=item_id, **overrides)
        return result, self.verdict(manifest, result, item_id=item_id)

    # -- results --------------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        if self._store is None:
            from pytest_mlscope.store import Store

            self._store = Store.from_location(self.settings.db_location)
            # A session of this host killed before it could finish its run (kill -9, OOM):
            # nobody else will close it. Said in the summary, so the gap is not a mystery.
            for run_id in self._store.close_abandoned_runs():
                self.report_lines.append(
                    f"run {run_id[:12]} was left 'running' by a session that was killed; "
                    "marked incomplete (its stored results are kept)"
                )
        return self._store

    @property
    def run_id(self) -> str:
        """The run, started in the store when the first result arrives."""
        if self._run_id is None and self.settings.shared_run:
            self._run_id = self.settings.shared_run
        if self._run_id is None:
            from pytest_mlscope.store import INJECTED_TAG, git_info

            tags = {}
            if self.settings.inject_slowdown:
                tags[INJECTED_TAG] = str(self.settings.inject_slowdown)
            if self.shard is not None:
                tags["shard"] = self.shard[0]
                if self.shard[1]:
                    tags["shard_group"] = self.shard[1]
            self._run_id = self.store.start_run(
                host=self.host.fingerprint(),
                git=git_info(self.settings.rootdir),
                tags=tags,
                pytest_args=self.settings.pytest_args,
            )
        return self._run_id

    @property
    def started(self) -> bool:
        return self._run_id is not None

    def record(
        self,
        cell: Cell,
        outcome: str,
        result: EvaluationResult | None = None,
        message: str | None = None,
        verdict: Verdict | None = None,
        duration_s: float | None = None,
        item_id: str | None = None,
    ) -> None:
        self.records.append(Record(cell, outcome, result, message, verdict, item_id or cell.id))
        self.store.record_result(
            self.run_id,
            cell=cell,
            item_id=item_id,
            outcome=outcome,
            result=result,
            message=message,
            verdict=verdict.as_dict() if verdict else None,
            duration_s=duration_s,
        )

    def close(self, status: str = "complete") -> None:
        containers = {
            runtime.image: runtime.image_id
            for runtime in self._runtimes.values()
            if getattr(runtime, "image_id", None)
        }
        for runtime in self._runtimes.values():
            runtime.close()
        self._runtimes.clear()
        self._prune_work_dirs()
        if self._store is not None:
            if self._run_id is not None and not self.settings.shared_run:
                facts = {"containers": containers} if containers else None
                self._store.finish_run(self._run_id, status, host_facts=facts)
                name = self.settings.save_baseline
                if name and status == "complete":
                    self._store.set_baseline(
                        name,
                        self._run_id,
                        force=self.settings.force_baseline,
                        artifacts=self._baseline_artifacts(self._run_id),
                    )
                    self.saved_baseline = name
                self._write_reports()
            self._store.close()

    def _baseline_artifacts(self, run_id: str) -> list[Any]:
        """The model files a run measured, for the baseline saved from it to keep: found again
        from the stored checksums (an xdist controller never loaded them itself). A file that
        changed since it was measured, or that needs files beside it (Caffe's prototxt), is
        not kept, and the summary says so: that baseline's items fall back to the stored design
        on a machine without the file."""
        from pytest_mlscope.store import ArtifactEntry

        entries: dict[tuple[str, str], ArtifactEntry] = {}
        missed: list[str] = []
        for record in self.store.latest_results(run_id).values():
            key = (record.cell.model, record.cell.framework)
            if not record.artifact_sha256 or key in entries:
                continue
            try:
                artifact = self._artifact(self.manifest(record.cell.model), record.cell.framework)
            except MlscopeError as exc:
                missed.append(f"{record.cell.model}/{record.cell.framework} ({exc})")
                continue
            folder = Path(artifact.path).parent
            siblings = [
                v
                for v in artifact.metadata.values()
                if isinstance(v, str) and (folder / v).is_file()
            ]
            if artifact.sha256 != record.artifact_sha256 or siblings:
                why = "changed since it was measured" if not siblings else "a multi-file model"
                missed.append(f"{record.cell.model}/{record.cell.framework} ({why})")
                continue
            entries[key] = ArtifactEntry(
                sha256=artifact.sha256,
                model=record.cell.model,
                framework=record.cell.framework,
                format=artifact.format,
                path=artifact.path,
            )
        if missed:
            self.report_lines.append("the baseline keeps no model file for: " + "; ".join(missed))
        return list(entries.values())

    def _write_reports(self) -> None:
        """The HTML report and the markdown summary of the stored run.

        Built from the database, like ``mlscope report``, so both show the same thing. A report
        that cannot be written is said in the summary, never raised: the results are stored.
        """
        markdown_targets = [self.settings.markdown] if self.settings.markdown else []
        step_summary = os.environ.get("GITHUB_STEP_SUMMARY", "").strip()
        if step_summary:
            markdown_targets.append(Path(step_summary))
        if self.settings.html is None and not markdown_targets:
            return
        from pytest_mlscope.report import data as report_data

        try:
            data = report_data.load(self.store, self.run_id)
        except Exception as exc:  # the run is stored; a report bug must not hide that
            self.report_lines.append(f"no report: reading run {self.run_id[:12]} failed: {exc}")
            return
        if self.settings.html is not None:
            from pytest_mlscope.report import html

            try:
                html.write(html.render(data), self.settings.html)
                self.report_lines.append(f"HTML report: {self.settings.html}")
            except Exception as exc:
                self.report_lines.append(f"HTML report not written: {exc}")
        if markdown_targets:
            from pytest_mlscope.report import markdown

            text = markdown.render(
                data, html_path=str(self.settings.html) if self.settings.html else None
            )
            for target in markdown_targets:
                appending = target != self.settings.markdown
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with target.open("a" if appending else "w", encoding="utf-8") as handle:
                        handle.write(text)
                    self.report_lines.append(f"markdown summary: {target}")
                except OSError as exc:
                    self.report_lines.append(f"markdown summary not written to {target}: {exc}")

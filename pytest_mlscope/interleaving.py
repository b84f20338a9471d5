"""The baseline's side of an interleaved measurement: its model file (fetched from the results
database by hash), its software stack (another venv, rebuilt from the registry), and the pairs
of rounds timed across workers of both stacks (several per side: each process has a speed of its
own) when the sides cannot share one process.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mlscope.availability import _installed
from pytest_mlscope.errors import EvaluationFailed, MlscopeError
from pytest_mlscope.evaluation import _safe
from pytest_mlscope.protocol import (
    Cell,
    EvaluationRequest,
    EvaluationResult,
    Interleave,
)

if TYPE_CHECKING:
    from pytest_mlscope.compare import Side
    from pytest_mlscope.manifest import Manifest
    from pytest_mlscope.runtimes import Runtime


class Interleaving:
    """The A side of interleaved A/B timing; a part of :class:`MlscopeSession`."""

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
        result, a_version, renewed = self._interleave_workers(
            manifest, cell, request, a_cell, a_request, lambda k: self.runtime(a_cell, k)
        )
        where = f" in {self.image(a_cell)}" if self.in_container(a_cell) else ""
        self._interleaved[cell.id] = (
            True,
            f"stack {other} ({cell.framework} {a_version}{where}; {renewed})",
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
            # The baseline's file (another than this run's) is nowhere to be had: timing this
            # run's model on both stacks would hide the model's own change. The stored design
            # decides, with the reason _interleave_side gave.
            return self.runtime(cell).evaluate(request, self.settings.timeout)
        artifact, model = side.artifact, self._interleaved[cell.id][1]
        a_request = self._request(manifest, cell, checks=[], **overrides).model_copy(
            update={"artifact": artifact}
        )
        result, a_version, renewed = self._interleave_workers(
            manifest, cell, request, cell, a_request, lambda k: self._venv_runtime(stack, k)
        )
        self._interleaved[cell.id] = (
            True,
            f"{model} on the baseline's {stack.framework} {a_version} (a venv rebuilt from the "
            f"package registry; {renewed})",
        )
        return result

    def _interleave_workers(
        self,
        manifest: Manifest,
        cell: Cell,
        request: EvaluationRequest,
        a_cell: Cell,
        a_request: EvaluationRequest,
        runtime_a: Callable[[int], Runtime],
    ) -> tuple[EvaluationResult, str, str]:
        """B in the cell's own workers, A in ``runtime_a``'s, in alternating rounds.

        Every worker loads, warms up and keeps its model (``hold``); then the host asks for one
        round at a time, in random order within each pair, so drift hits both stacks alike, and
        adds blocks of pairs until the verdict is clear (measure.LOOKS at most), as the
        in-worker interleave does. A process has a speed of its own for its life, which pairs
        inside one pair of processes carry whole: each side runs in measure.WORKERS_PER_SIDE
        processes, every A worker meets every B worker alike, and the verdict widens its
        interval by their spread (stats.worker_spread). The result is B's, with A's rounds as
        pairs; with A's framework version and how often each side's instances were renewed.
        """
        import random

        from pytest_mlscope.compare import settled
        from pytest_mlscope.measure import LOOKS, Block, pair_plan
        from pytest_mlscope.passes import renew_every
        from pytest_mlscope.protocol import RoundRequest
        from pytest_mlscope.stats import round_medians, summarize_scenario

        a_request = a_request.model_copy(
            update={
                "hold": True,
                "inject_slowdown": 0.0,
                "matched_wrapper": bool(request.inject_slowdown),
                "interleave": None,
            }
        )
        inputs = self.work_dir / "inputs" / f"{_safe(cell.id)}-interleaved.npz"
        b_request = request.model_copy(
            update={"hold": True, "interleave": None, "save_inputs": str(inputs)}
        )
        # Every worker but B's first holds B's first's inputs, unchecked (what one process
        # computes, all do), untraced, and without the dataset's accuracy pass.
        unchecked = {
            "checks": [],
            "save_inputs": None,
            "save_outputs": None,
            "reference_outputs": None,
            "trace_level": "none",
            "inputs_path": str(inputs),
        }
        cells = {"a": a_cell, "b": cell}
        timeout = self.settings.timeout
        pairs, per_round = pair_plan(request.measure)
        samples: dict[str, list[int]] = {"a": [], "b": []}
        sizes: dict[str, list[int]] = {"a": [], "b": []}
        met: list[tuple[int, int]] = []
        held: list[tuple[Runtime, Cell]] = []
        workers: dict[str, list[Runtime]] = {"b": [self.runtime(cell)]}

        def hold(key: str, index: int, hold_request: EvaluationRequest) -> Any:
            runtime, side = workers[key][index], "A (the baseline's side)" if key == "a" else "B"
            try:
                found = runtime.evaluate(hold_request, timeout)
            except MlscopeError as exc:
                raise EvaluationFailed(
                    f"{side}'s worker {index + 1} of {len(workers[key])} could not hold the "
                    f"model: {exc}"
                ) from exc
            held.append((runtime, cells[key]))
            return found

        try:
            first_b = hold("b", 0, b_request)
            _readable(inputs)
            per_side, fewer = self._workers_per_side(cell, workers["b"][0])
            workers["a"] = _distinct(runtime_a(k) for k in range(per_side))
            workers["b"] += _distinct(self.runtime(cell, k) for k in range(1, per_side))
            more = b_request.model_copy(update=unchecked)
            more_a = a_request.model_copy(update=unchecked)
            jobs = [("a", k, more_a) for k in range(len(workers["a"]))]
            jobs += [("b", k, more) for k in range(1, len(workers["b"]))]
            with ThreadPoolExecutor(max_workers=len(jobs)) as pool:  # side by side
                started = [pool.submit(hold, *job) for job in jobs]
                first_a = started[0].result()
                for job in started[1:]:
                    job.result()
            rng = random.Random(random.randrange(2**31))
            threshold = self.threshold(manifest)
            combos = [(i, j) for i in range(len(workers["a"])) for j in range(len(workers["b"]))]
            schedule: list[tuple[int, int]] = []
            # Fresh instances of both sides through the measurement, as in one worker
            # (passes._Instances): a held instance's memory layout would be an offset no number
            # of pairs removes. The first pair renews both and says what that costs.
            every: int | None = 1
            done = 0
            for _ in range(LOOKS):
                block = Block()
                for _ in range(pairs):
                    if block.complete(request.measure):
                        break
                    if not schedule:  # every A worker meets every B worker, in random order
                        schedule = rng.sample(combos, len(combos))
                    pair = schedule.pop()
                    renew = every is not None and done % every == 0
                    renew_s = 0.0
                    for key in ("a", "b") if rng.random() < 0.5 else ("b", "a"):
                        runtime = workers[key][pair[0] if key == "a" else pair[1]]
                        got = runtime.evaluate(
                            RoundRequest(cell=cells[key], measure=per_round, renew=renew), timeout
                        )
                        samples[key].extend(got.samples_ns)
                        sizes[key].append(len(got.samples_ns))
                        block.add(key, got.samples_ns)
                        renew_s += float(got.telemetry.get("renew_s", 0.0))
                    met.append(pair)
                    if done == 0:
                        every = renew_every(renew_s, 2 * per_round.min_duration_s)
                    done += 1
                    block.pairs += 1
                a_rounds = round_medians(samples["a"], sizes["a"])
                b_rounds = round_medians(samples["b"], sizes["b"])
                if settled(
                    a_rounds,
                    b_rounds,
                    threshold=threshold,
                    comparisons=self.comparisons,
                    looks=LOOKS,
                    workers=met,
                ):
                    break
        finally:
            for runtime, which in held:
                if not _alive(runtime):
                    continue  # a release would start it again, to hear that nothing is held
                with contextlib.suppress(Exception):  # the Docker SDK's errors too: release all
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
                "paired_workers": met,
            }
        )
        renewed = (
            "one pair of instances"
            if every is None
            else "a fresh instance of each side per pair"
            if every == 1
            else f"a fresh instance of each side every {every} pairs"
        )
        if fewer:
            renewed += f"; {fewer}"
        return result, first_a.predictor.version, renewed

    def _workers_per_side(self, cell: Cell, first: Runtime) -> tuple[int, str]:
        """How many worker processes each side gets, and why fewer than measure.WORKERS_PER_SIDE
        when so: GPU cells keep one CUDA context per side; on the host, the extra workers may
        take at most half the memory free now, each as much as the first one holds."""
        from pytest_mlscope.measure import WORKERS_PER_SIDE

        if cell.device == "gpu":
            return 1, (
                "one worker process per side on a GPU (one CUDA context each): a process's own "
                "speed is not in the interval"
            )
        process = getattr(first, "process", None)
        if process is None:
            return WORKERS_PER_SIDE, ""  # a container: its own memory limit guards the host
        import psutil

        from pytest_mlscope.runtimes.subprocess import _resident_bytes

        needs = max(_resident_bytes(process.pid), 1)
        spare = int(psutil.virtual_memory().available * 0.5 // needs)
        per_side = max(1, min(WORKERS_PER_SIDE, 1 + spare // 2))
        if per_side == WORKERS_PER_SIDE:
            return per_side, ""
        return per_side, (
            f"{per_side} worker process{'es' if per_side > 1 else ''} per side, not "
            f"{WORKERS_PER_SIDE}: each holds {needs / 2**30:.1f} GiB, and half the free memory "
            "allows no more"
        )

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

    def _interleave_side(
        self,
        manifest: Manifest,
        cell: Cell,
        artifact: Any,
        item_id: str | None = None,
        across: bool = False,
    ) -> Interleave | None:
        """The A side of the interleaved design: the baseline's artifact, unslowed.

        Without a baseline result, A is the item's own artifact: an A/A run that shows the
        pair-to-pair noise, or the gate self-test when a slowdown is injected into B. The
        baseline's artifact is looked up in the local cache, then in the artifact store that
        lives with the results database (every saved baseline keeps its artifacts there), so a
        fresh CI runner or a replaced model file still times the baseline's model. Only when
        neither has it does the item fall back to the stored design, saying why. ``across``: A
        runs in a worker of its own stack (the baseline's image), so a moved stack is the point.
        """
        import random

        item = item_id or cell.id
        baseline = self._baseline_sides().get(item) if self.settings.baseline else None
        if baseline is None and self.settings.interleave is None:
            return None  # new to the baseline: nothing to time it against, unless asked (A/A)
        moved = None if across else self._stack_moved(cell, baseline)
        if moved:
            known = self._interleaved.get(cell.id)
            if known is None or known[0]:  # else _baseline_image said why its image is unusable
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
            if found is None and where:
                self._interleaved[cell.id] = (False, f"stored design: {where}")
                return None
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
            # A file fetched from the store carries no metadata: what the manifest says about
            # loading this format (a state dict's class, a plan's TensorRT) holds for both.
            chosen = found.model_copy(update={"metadata": {**artifact.metadata, **found.metadata}})
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
        Interleaving in one worker would time both on this stack and hide the change: the
        baseline's image is timed in a worker of its own when the daemon has it
        (:meth:`_baseline_image`), else the stored design names the difference."""
        if baseline is None:
            return None
        before, ident = _recorded_image(baseline)
        after = self.image(cell) if self.in_container(cell) else None
        if before == after:
            # The same tag may name another image now: rebuilt with another release of the
            # framework (a rebuild for a new pytest-mlscope alone changes the id, not the stack).
            now = self._image_version(after) if after else None
            was = baseline.framework_version
            if not (now and was and now != was):
                return None
            before = f"{before} ({ident}, {cell.framework} {was})"
            after = f"{after} (rebuilt since, {cell.framework} {now})"
        return (
            f"the baseline ran {f'in {before}' if before else 'on the host stack'}, this item "
            f"{f'in {after}' if after else 'on the host stack'}: one worker would time both on "
            "this one"
        )

    def _image_version(self, image: str) -> str | None:
        """The framework release the image a tag names on this daemon was built with (its
        label), once per session."""
        from pytest_mlscope.containers import LABEL, client, find_image

        if image not in self._image_versions:
            try:
                found = find_image(client(), image)
            except Exception:  # no daemon: the item skips for it anyway
                found = None
            labels = (found.labels or {}) if found is not None else {}
            self._image_versions[image] = labels.get(f"{LABEL}.framework-version")
        return self._image_versions[image]

    def _baseline_image(self, cell: Cell, item_id: str) -> tuple[str, str] | None:
        """The image to time the baseline's side in, when the baseline ran in another image than
        this item's and this daemon has it, with this worker inside: (its id, how to name it).
        Otherwise None, with the reason in the verdict when the image is missing or stale."""
        from pytest_mlscope.containers import LABEL, client, find_image, source_digest

        baseline = self._baseline_sides().get(item_id) if self.settings.baseline else None
        if baseline is None or not self._stack_moved(cell, baseline):
            return None
        name, ident = _recorded_image(baseline)
        if name is None:
            return None  # it ran on the host stack, which has changed since: stored design
        named = f"{name} ({ident})" if ident else name
        try:
            found = find_image(client(), ident or name)
        except Exception as exc:  # no SDK or daemon (ContainerError), or the daemon's APIError
            self._interleaved[cell.id] = (False, f"stored design: {exc}")
            return None
        if found is None:
            version = baseline.framework_version or "?"
            self._interleaved[cell.id] = (
                False,
                f"stored design: the baseline ran in {named}, which this Docker daemon does not "
                f"have; build it (`mlscope containers build {cell.framework} --framework-version "
                f"{version}`) or pull it, and the baseline's side is timed beside this one",
            )
            return None
        built_from = (found.labels or {}).get(f"{LABEL}.source-hash")
        if built_from != source_digest():  # unlabelled: pulled, or built by an older version
            self._interleaved[cell.id] = (
                False,
                f"stored design: the baseline's image {named} holds a pytest-mlscope worker "
                "built from other sources than this one, so it cannot serve this session's "
                "rounds",
            )
            return None
        return found.id, named

    def _interleave_baseline_image(
        self,
        manifest: Manifest,
        cell: Cell,
        image: tuple[str, str],
        request: EvaluationRequest,
        item_id: str,
        **overrides: float,
    ) -> EvaluationResult:
        """Time the item (B, in its image or on the host) against the baseline's model in the
        image the baseline ran in (A): a new image (a framework upgrade inside it, a new base)
        A/B-tested by naming the baseline, as long as the daemon still has the old one."""
        image_id, named = image
        side = self._interleave_side(manifest, cell, request.artifact, item_id, across=True)
        if side is None:  # the baseline's file is nowhere to be had: as for a release, above
            return self.runtime(cell).evaluate(request, self.settings.timeout)
        artifact, model = side.artifact, self._interleaved[cell.id][1]
        a_request = self._request(manifest, cell, checks=[], **overrides).model_copy(
            update={"artifact": artifact}
        )
        result, a_version, renewed = self._interleave_workers(
            manifest,
            cell,
            request,
            cell,
            a_request,
            lambda k: self._docker_runtime(cell, image_id, k),
        )
        self._interleaved[cell.id] = (
            True,
            f"{model} in the baseline's image {named} ({cell.framework} {a_version}; {renewed})",
        )
        return result

    def _baseline_artifact(self, manifest: Manifest, sha256: str) -> tuple[Any, str]:
        """The baseline's artifact by checksum: the local cache first, then the store; (None,
        why) when the store keeps it in an artifact directory this machine does not see."""
        from pytest_mlscope.errors import StoreError

        found = self.cache.find(manifest.name, sha256)
        if found is not None:
            return found, "from the artifact cache"
        try:
            found = self.cache.from_store(self.store, sha256)
        except StoreError as exc:
            if " is missing: " not in str(exc):
                raise  # damaged: never timed, and said as an error
            return None, str(exc)
        if found is not None:
            return found, "fetched from the results database"
        return None, ""


def _recorded_image(baseline: Side) -> tuple[str | None, str]:
    """The image a stored result ran in, as recorded: its tag and 12-digit id, or (None, "")."""
    recorded = str(baseline.host.get("container_image") or "")
    name, _, ident = recorded.partition(" (")
    return (name or None), ident.rstrip(")")


def _distinct(runtimes: Iterable[Runtime]) -> list[Runtime]:
    """The workers, once each: the in-process runtime has no copies to give."""
    found: list[Runtime] = []
    for runtime in runtimes:
        if not any(runtime is known for known in found):
            found.append(runtime)
    return found


def _alive(runtime: Runtime) -> bool:
    """Whether a worker process is still there to hear a release (a subprocess runtime's
    process; other runtimes are asked anyway)."""
    if not hasattr(runtime, "process"):
        return True
    process = runtime.process
    return process is not None and process.poll() is None


def _readable(path: Path) -> None:
    """Let every worker read the inputs file: containers run as another user than a host
    worker that wrote it with a strict umask (and the other way round, when the host may)."""
    with contextlib.suppress(OSError):
        path.parent.chmod(0o755)
        path.chmod(0o644)

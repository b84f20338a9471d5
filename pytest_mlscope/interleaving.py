"""The baseline's side of an interleaved measurement: its model file (fetched from the results
database by hash), its software stack (another venv, rebuilt from the registry), and the pairs
of rounds timed across workers of both stacks (several per side: each process has a speed of its
own) when the sides cannot share one process.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pytest_mlscope.across import AcrossWorkers
from pytest_mlscope.availability import _installed
from pytest_mlscope.errors import EvaluationFailed
from pytest_mlscope.protocol import (
    Cell,
    EvaluationRequest,
    EvaluationResult,
    Interleave,
)

if TYPE_CHECKING:
    from pytest_mlscope.compare import Side
    from pytest_mlscope.manifest import Manifest


class Interleaving(AcrossWorkers):
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

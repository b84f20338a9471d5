"""One item's evaluation, top to bottom: the artifact, the reference outputs, the worker request,
the timing pass (interleaved with the baseline's side when there is one), the count pass, and the
verdict call. What the worker measures is decided here; how it is judged, in ``judging``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mlscope.cells import outputs_scenario
from pytest_mlscope.errors import EvaluationFailed, MlscopeError
from pytest_mlscope.protocol import (
    AccuracyPass,
    Cell,
    CountPass,
    EvaluationRequest,
    EvaluationResult,
    TimingPass,
)

if TYPE_CHECKING:
    from pytest_mlscope.compare import Verdict
    from pytest_mlscope.manifest import Manifest


COUNT_ROUNDS = 5  # rounds of the count pass (each about 3M instructions, callgrind.count_calls)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


class Evaluation:
    """An item's passes through its worker; a part of :class:`MlscopeSession`."""

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

    def _reference_path(self, manifest: Manifest, length: int | None) -> Path | None:
        """The reference's outputs, one file per sequence length (tokenized text padded or cut
        to another length is another input)."""
        agreement = manifest.accuracy.agreement
        if agreement is None:
            return None
        seq = f"-seq{length}" if length is not None else ""
        name = f"{_safe(manifest.name)}-{agreement.reference}{seq}.npz"
        return self.work_dir / "reference" / name

    def _ensure_reference(self, manifest: Manifest, length: int | None) -> Path:
        """The reference framework's outputs, computed by an accuracy-only pass if no item did."""
        path = self._reference_path(manifest, length)
        assert path is not None and manifest.accuracy.agreement is not None
        if path.exists():
            return path
        reference = manifest.accuracy.agreement.reference
        cell = Cell(
            model=manifest.name,
            framework=reference,
            device="cpu",
            batch_size=1,
            sequence_length=length,
            scenario=outputs_scenario(manifest),
        )
        runtime, reason = self._reference_runtime(manifest, cell)
        if runtime is None:
            raise EvaluationFailed(
                f"the agreement reference {reference} cannot run here, so agreement cannot be "
                f"checked: {reason}"
            )
        request = self._request(manifest, cell, accuracy=AccuracyPass(), save_outputs=path)
        try:
            runtime.evaluate(request, self.settings.timeout)
        except MlscopeError as exc:
            raise EvaluationFailed(f"the agreement reference {reference} failed: {exc}") from exc
        return path

    def _reference_runtime(self, manifest: Manifest, cell: Cell) -> tuple[Any, str | None]:
        """Where the agreement reference runs: its own runtime, or, when it has no image, the
        host's stack if that has it; (None, why) when neither can run it."""
        from pytest_mlscope.cells import skip_reason

        reason, _ = self.skip_reason(manifest, cell)
        if reason is None:
            return self.runtime(cell), None
        if (
            self.in_container(cell)
            and skip_reason(manifest, cell, self.host, self.settings.predictors) is None
        ):
            return self._host_runtime("subprocess"), None
        return None, reason

    def _request(
        self,
        manifest: Manifest,
        cell: Cell,
        *,
        accuracy: AccuracyPass | None = None,
        save_outputs: Path | None = None,
        reference: Path | None = None,
        checks: list[str] | None = None,
        interleave: bool = False,
        item_id: str | None = None,
        **overrides: float,
    ) -> EvaluationRequest:
        artifact = self._artifact(manifest, cell.framework)
        level = self.trace_level(manifest)
        work = accuracy
        if work is None:
            side = self._interleave_side(manifest, cell, artifact, item_id) if interleave else None
            work = TimingPass(interleave=side)
        return EvaluationRequest(
            pass_=work,
            trace_level="none" if accuracy is not None else level,
            trace_dir=str(self.trace_dir),
            cell=cell,
            manifest_path=str(manifest.path),
            artifact=artifact,
            measure=self.measure_options(manifest, **overrides),
            work_dir=str(self.work_dir),
            reference_outputs=str(reference) if reference else None,
            save_outputs=str(save_outputs) if save_outputs else None,
            predictors=self.settings.predictors,
            checks=checks,
            inject_slowdown=self.settings.inject_slowdown,
            new_tokens=manifest.performance.new_tokens,
        )

    def evaluate(
        self, manifest: Manifest, cell: Cell, item_id: str | None = None, **overrides: float
    ) -> EvaluationResult:
        """Accuracy and timing for one cell, in the cell's runtime; ``item_id`` names the result
        (and its baseline) when it is not the cell's own id (a hand-written test's evaluation).
        A failed agreement says where the item and the reference part; a missed golden, where
        the item parts from the golden's own layers, when ``mlscope golden`` kept them."""
        result = self._evaluate_cell(manifest, cell, item_id, **overrides)
        if result.accuracy is None:
            return result
        found = {}
        for check in result.accuracy.checks:
            if check.passed:
                continue
            if check.name == "agreement":
                found[check.name] = self._divergence(manifest, cell)
            elif check.name == "golden" and self._golden_layers(manifest).is_file():
                found[check.name] = self._golden_divergence(manifest, cell)
        if not found:
            return result
        checks = [
            c.model_copy(update={"detail": f"{c.detail}; {found[c.name]}"})
            if c.name in found
            else c
            for c in result.accuracy.checks
        ]
        return result.model_copy(
            update={"accuracy": result.accuracy.model_copy(update={"checks": checks})}
        )

    def _golden_layers(self, manifest: Manifest) -> Path:
        """Where ``mlscope golden`` keeps the golden framework's layer outputs for the first
        sample, beside the golden file (``goldens/alexnet.npz`` -> ``alexnet.layers.npz``)."""
        golden = manifest.accuracy.golden
        assert golden is not None
        path = manifest.resolve(golden.path)
        return path.with_name(f"{path.stem}.layers.npz")

    def _item_layers(self, manifest: Manifest, cell: Cell, runtime: Any) -> Any:
        """The item's layer outputs on the first batch, from an accuracy-only pass of its own
        (once per cell: the file is the cache)."""
        from pytest_mlscope.divergence import load_layers

        # In the work folder itself: the one a container's worker may write to (a folder the
        # host makes in it belongs to the host's user).
        path = self.work_dir / f"layers-{_safe(cell.id)}.npz"
        if not path.exists():
            layers = AccuracyPass(save_layer_outputs=str(path))
            request = self._request(manifest, cell, accuracy=layers, checks=[])
            runtime.evaluate(request, self.settings.timeout)
        return load_layers(path)

    def _golden_divergence(self, manifest: Manifest, cell: Cell) -> str:
        """The first of the item's layers (on the first sample) whose output none of the
        golden's layers has: what changed since the golden was written (a model edit, an
        upgrade that computes one layer differently)."""
        from pytest_mlscope.divergence import first_divergence, load_layers

        golden = manifest.accuracy.golden
        assert golden is not None
        try:
            reference = load_layers(self._golden_layers(manifest))
            single = cell.model_copy(update={"batch_size": 1})
            layers = self._item_layers(manifest, single, self.runtime(cell))
            if reference is None or layers is None:
                return (
                    "the first diverging layer is not known: "
                    f"{cell.framework if layers is None else 'the golden'} keeps no layer outputs"
                )
            return first_divergence(reference, layers, atol=golden.atol, rtol=golden.rtol).describe(
                "the golden"
            )
        except Exception as exc:  # the golden's failure must reach the user whatever happens
            return f"the first diverging layer could not be found: {type(exc).__name__}: {exc}"

    def _divergence(self, manifest: Manifest, cell: Cell) -> str:
        """The first of the item's layers whose output none of the reference's layers has, on
        the first batch (pytest_mlscope.divergence); each side in its own worker, once."""
        from pytest_mlscope.divergence import first_divergence

        agreement = manifest.accuracy.agreement
        assert agreement is not None
        reference = Cell(
            model=manifest.name,
            framework=agreement.reference,
            device="cpu",
            batch_size=cell.batch_size,
            sequence_length=cell.sequence_length,
        )
        found = {}
        try:
            for side in (reference, cell):
                if side is reference:
                    runtime, reason = self._reference_runtime(manifest, side)
                else:
                    runtime, reason = self.runtime(side), None
                if runtime is None:
                    return f"the first diverging layer is not known: {reason}"
                found[side.id] = (side, self._item_layers(manifest, side, runtime))
        except Exception as exc:  # the agreement's failure must reach the user whatever happens
            return f"the first diverging layer could not be found: {type(exc).__name__}: {exc}"
        missing = sorted({side.framework for side, layers in found.values() if layers is None})
        if missing:
            return (
                f"the first diverging layer is not known: {' and '.join(missing)} cannot expose "
                f"{'its' if len(missing) == 1 else 'their'} layers' outputs"
            )
        try:
            return first_divergence(
                found[reference.id][1],  # type: ignore[arg-type]
                found[cell.id][1],  # type: ignore[arg-type]
                atol=agreement.atol,
                rtol=agreement.rtol,
            ).describe(reference.framework)
        except Exception as exc:  # as above
            return f"the first diverging layer could not be found: {type(exc).__name__}: {exc}"

    def _evaluate_cell(
        self, manifest: Manifest, cell: Cell, item_id: str | None = None, **overrides: float
    ) -> EvaluationResult:
        item = item_id or cell.id
        agreement = manifest.accuracy.agreement
        save = reference = None
        if agreement is not None:
            # The reference runs on the CPU; the same framework on a GPU is checked against it.
            if cell.framework == agreement.reference and cell.device == "cpu":
                candidate = self._reference_path(manifest, cell.sequence_length)
                save = candidate if candidate and not candidate.exists() else None
            else:
                reference = self._ensure_reference(manifest, cell.sequence_length)
        other = manifest.framework_spec(cell.framework, cell.stack).interleave_with
        interleaving = self.settings.interleaving
        across = interleaving and other is not None
        self._interleaved.pop(cell.id, None)
        upgrade = (
            self._baseline_stack(manifest, cell, item) if interleaving and not across else None
        )
        image = None
        if interleaving and not across and upgrade is None and self.settings.baseline:
            image = self._baseline_image(cell, item)
        request = self._request(
            manifest,
            cell,
            save_outputs=save,
            reference=reference,
            interleave=interleaving and not across and upgrade is None and image is None,
            item_id=item,
            **overrides,
        )
        # Each timed item starts in a worker that has served nothing before (the stack's worker
        # starts again on its next request): what the item measures, its memory above all,
        # owes nothing to the models loaded before it.
        self.runtime(cell).close()
        if across:
            assert other is not None
            return self._interleave_stacks(manifest, cell, other, request, **overrides)
        if upgrade is not None:
            return self._interleave_baseline_stack(
                manifest, cell, upgrade, request, item, **overrides
            )
        if image is not None:
            return self._interleave_baseline_image(
                manifest, cell, image, request, item, **overrides
            )
        counting = self.settings.count_instructions and self._countable(cell)
        if counting:
            inputs = self.work_dir / "inputs" / f"{_safe(cell.id)}.npz"
            request = request.model_copy(update={"save_inputs": str(inputs)})
        result = self.runtime(cell).evaluate(request, self.settings.timeout)
        if counting:
            result = self._count(cell, request, result)
        return result

    def evaluate_in_turn(
        self, manifest: Manifest, cell: Cell, item_id: str | None = None, **overrides: float
    ) -> tuple[EvaluationResult, Verdict | None]:
        """Evaluate and compare in this session's timing turn (parallel pytest-xdist workers
        take turns, so no item is timed beside another): a manifest's item and a hand-written
        test's ``mlscope_eval`` both measure through here."""
        with self.timing_turn():
            return self.evaluate_and_compare(manifest, cell, item_id, **overrides)

    def evaluate_and_compare(
        self, manifest: Manifest, cell: Cell, item_id: str | None = None, **overrides: float
    ) -> tuple[EvaluationResult, Verdict | None]:
        """Evaluate, then compare. No second measurement: the interleaved design adds pairs until
        the verdict is clear, within the item's budget, and the stored one cannot confirm
        anything in the same process (a second measurement shares the first one's offset)."""
        result = self.evaluate(manifest, cell, item_id=item_id, **overrides)
        return result, self.verdict(manifest, result, item_id=item_id)

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
        request = timed.model_copy(
            update={
                "pass_": CountPass(rounds=COUNT_ROUNDS),
                "checks": [],
                "inputs_path": timed.save_inputs,
                "save_inputs": None,
                "save_outputs": None,
                "reference_outputs": None,
                "trace_level": "none",
            }
        )
        counted = self._count_runtime(cell).evaluate(request, self.settings.timeout)
        return result.model_copy(update={"instructions": counted.instructions})

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

    def write_golden(self, manifest: Manifest, framework: str | None = None) -> Path:
        """Store a framework's outputs as the manifest's golden file (an explicit, reviewed act)."""
        golden = manifest.accuracy.golden
        if golden is None:
            raise MlscopeError(f"{manifest.where('accuracy')}: accuracy.golden is not set")
        agreement = manifest.accuracy.agreement
        framework = framework or (agreement.reference if agreement else manifest.framework[0].name)
        manifest.framework_spec(framework)
        path = manifest.resolve(golden.path)
        # Tokenized text at the longest length of the sweep: the one that cuts the fewest texts.
        lengths = manifest.performance.sequence_lengths
        cell = Cell(
            model=manifest.name,
            framework=framework,
            device="cpu",
            batch_size=1,
            sequence_length=max(lengths) if lengths else None,
            scenario=outputs_scenario(manifest),
        )
        # With the outputs, each layer's on the first sample, where the framework exposes them:
        # a later miss then says which layer changed since (none kept where it cannot).
        layers = self._golden_layers(manifest)
        both = AccuracyPass(save_layer_outputs=str(layers))
        request = self._request(manifest, cell, accuracy=both, save_outputs=path, checks=[])
        self.runtime(cell).evaluate(request, self.settings.timeout)
        from pytest_mlscope.divergence import load_layers

        if load_layers(layers) is None:
            layers.unlink(missing_ok=True)
        return path

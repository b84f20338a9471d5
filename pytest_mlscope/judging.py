"""The verdict policy applied to stored runs: where the session's run-to-run noise comes from,
the comparison of two stored runs that ``mlscope compare`` and the report make, and what a
failed item says.

``compare`` stays pure; this module reads the store for it, so a stored run judged later gets
the noise and settings its session judged it with, and says what the session said.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pytest_mlscope.errors import MlscopeError

if TYPE_CHECKING:
    from pytest_mlscope.compare import Noise, Side, Verdict
    from pytest_mlscope.manifest import Manifest
    from pytest_mlscope.protocol import EvaluationResult
    from pytest_mlscope.store import RunRecord, Store

HISTORY_FOR_NOISE = 30  # comparable earlier runs whose spread sets an item's run-to-run noise


def item_noise(
    store: Store,
    item_id: str,
    host: dict[str, Any],
    framework_version: str | None,
    before: str | None = None,
) -> Noise:
    """An item's run-to-run spread of latency and of instructions, from its stored results on a
    comparable environment (CPU model, framework version, container image), filtered before
    the HISTORY_FOR_NOISE newest are taken; ``before`` (a run id) leaves out that run and every
    later one, so a stored run compared later gets the noise its session saw."""
    from pytest_mlscope.compare import Noise
    from pytest_mlscope.stats import between_run_noise

    points = store.comparable_history(
        item_id,
        cpu_model=host.get("cpu_model"),
        framework_version=framework_version,
        container_image=host.get("container_image"),
        before=before,
        limit=HISTORY_FOR_NOISE,
    )
    counts = [p.instructions for p in points if p.instructions]
    return Noise(
        latency=between_run_noise([p.median for p in points]),
        instructions=between_run_noise(counts),
        runs=len(points),
    )


def compare_stored_runs(
    store: Store,
    baseline: RunRecord,
    current: RunRecord,
    *,
    threshold: float | None = None,
    memory_threshold: float | None = None,
    ignore_environment: bool = False,
    scaling_threshold: float | None = None,
) -> dict[str, Verdict]:
    """Every item of ``current`` against ``baseline``, by ``compare.verdict``: with the noise of
    the runs stored before ``current`` and the thresholds and comparisons its session used (its
    stored verdicts), unless ``threshold``, ``memory_threshold`` or ``scaling_threshold``
    overrides them; sweeps over sequence lengths by ``compare.scaling``."""
    from pytest_mlscope.compare import compare_runs, environment, run_sides

    records = store.latest_results(current.id)
    sides_b = run_sides(records, current.host, current.id)
    sides_a = run_sides(store.latest_results(baseline.id), baseline.host, baseline.id)
    noise = {}
    settings: dict[str, dict[str, Any]] = {}
    for item in sides_b:
        record = records[item]
        noise[item] = item_noise(
            store,
            item,
            environment(current.host, record.predictor),
            record.framework_version,
            before=current.id,
        )
        if record.verdict:
            settings[item] = {
                key: record.verdict.get(key)
                for key in ("threshold", "comparisons", "memory_threshold")
            }
    verdicts = compare_runs(
        sides_a,
        sides_b,
        threshold=threshold,
        memory_threshold=memory_threshold,
        ignore_environment=ignore_environment,
        noise=noise,
        settings=settings,
    )
    return _stored_sweeps(records, verdicts, scaling_threshold, sides_a)


def _stored_sweeps(
    records: dict[str, Any],
    verdicts: dict[str, Verdict],
    threshold: float | None,
    baseline: Mapping[str, Side],
) -> dict[str, Verdict]:
    """Each complete sweep of a stored run judged as its session judged it: on the item with
    the longest length, with the scaling threshold the session used (its stored verdict's)
    unless ``threshold`` overrides it."""
    from pytest_mlscope.compare.scaling import SCALING_THRESHOLD, sweep_scaling, with_scaling

    sweeps: dict[Any, dict[int, str]] = {}
    for item, record in records.items():
        length = record.cell.sequence_length
        if length is not None and item == record.cell.id and item in verdicts:
            sweeps.setdefault(record.cell.model_copy(update={"sequence_length": None}), {})[
                length
            ] = item
    for items in sweeps.values():
        last = items[max(items)]
        stored = (records[last].verdict or {}).get("scaling") or {}
        scaling = sweep_scaling(
            {length: records[item] for length, item in items.items()},
            threshold or stored.get("threshold") or SCALING_THRESHOLD,
            {
                length: baseline[item].memory if item in baseline else None
                for length, item in items.items()
            },
        )
        if scaling is not None:
            verdicts[last] = with_scaling(verdicts[last], scaling)
    return verdicts


def failure_message(verdict: Verdict) -> str:
    """What a failed item says: the verdict, then the numbers it rests on, by design."""
    lines = [verdict.describe()]
    for said in (verdict.memory, verdict.device_memory):
        if said is not None and said not in verdict.reason:
            lines.append(said)
    if verdict.baseline_instructions is not None and verdict.current_instructions is not None:
        lines.append(
            f"instructions per call {verdict.baseline_instructions:,.0f} (baseline run "
            f"{(verdict.baseline_run or '?')[:12]}) -> {verdict.current_instructions:,.0f}; "
            f"threshold {verdict.threshold:.1%}, noise {verdict.noise:.2%}, "
            f"Mann-Whitney p={verdict.p_value:.2g}"
        )
    if verdict.baseline_median is not None and verdict.current_median is not None:
        if verdict.design == "interleaved":
            lines.append(
                f"median {verdict.baseline_median * 1e3:.4g} ms (A) -> "
                f"{verdict.current_median * 1e3:.4g} ms (B), round medians; threshold "
                f"{verdict.threshold:.1%}, pair noise {verdict.noise:.1%}, "
                f"Wilcoxon signed-rank p={verdict.p_value:.2g}"
            )
        else:
            lines.append(
                f"median {verdict.baseline_median * 1e3:.4g} ms (baseline run "
                f"{(verdict.baseline_run or '?')[:12]}) -> {verdict.current_median * 1e3:.4g} "
                f"ms; threshold {verdict.threshold:.1%}, noise {verdict.noise:.1%}, "
                f"Mann-Whitney p={verdict.p_value:.2g}"
            )
    if verdict.latency:
        lines.append(f"latency beside the counts: {verdict.latency}")
    return "\n  ".join(lines)


def _with_suspicions(found: Verdict, result: EvaluationResult) -> Verdict:
    """A slowdown measured while the GPU throttled or neighbours kept the CPU busy says so."""
    from dataclasses import replace

    from pytest_mlscope.telemetry import suspicions

    seen = suspicions(result.telemetry)
    if not seen or found.kind not in ("regression", "inconclusive"):
        return found
    if found.design == "instructions" or found.decided_by in ("memory", "device_memory"):
        return found  # counts, and memory, are what a busy machine cannot move
    return replace(found, reason=f"{found.reason}; suspect: {'; '.join(seen)} during timing")


class Judging:
    """The verdict of each item against the named baseline; a part of :class:`MlscopeSession`."""

    def threshold(self, manifest: Manifest) -> float:
        """The slowdown the gate must catch: command line, else manifest, else ini."""
        return (
            self.settings.threshold
            or manifest.performance.regression_threshold
            or self.settings.default_threshold
        )

    def memory_threshold(self, manifest: Manifest) -> float:
        """How much more memory than the baseline's fails an item: command line, else
        manifest, else ini."""
        return (
            self.settings.memory_threshold
            or manifest.performance.memory_threshold
            or self.settings.default_memory_threshold
        )

    def scaling_threshold(self, manifest: Manifest) -> float:
        """How much the exponent of L may grow over a sweep: command line, else manifest,
        else ini."""
        return (
            self.settings.scaling_threshold
            or manifest.performance.scaling_threshold
            or self.settings.default_scaling_threshold
        )

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
            paired_workers=result.paired_workers,
            memory=result.memory.model if result.memory is not None else None,
            device_memory=result.memory.device_peak if result.memory is not None else None,
            generation=result.generation,
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
            memory_threshold=self.memory_threshold(manifest),
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
            and found.decided_by not in ("memory", "device_memory")
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
        if item_id in (None, result.cell.id):
            found = self._with_scaling(manifest, result, found)
        return _with_suspicions(found, result)

    def _with_scaling(
        self, manifest: Manifest, result: EvaluationResult, found: Verdict
    ) -> Verdict:
        """On the item that completes a sweep over sequence lengths in this session: how time
        grows with the length against the baseline's (compare.scaling), from each length's
        interleaved pairs. A sweep partly selected (``-k seq64``) or split across pytest-xdist
        workers is not judged as a sweep; its items are, one by one."""
        from pytest_mlscope.compare.scaling import sweep_scaling, with_scaling

        lengths = manifest.performance.sequence_lengths
        cell = result.cell
        if not lengths or cell.sequence_length is None or len(lengths) < 2:
            return found
        seen = self._sweeps.setdefault(cell.model_copy(update={"sequence_length": None}), {})
        seen[cell.sequence_length] = result
        if set(seen) != set(lengths) or any(not r.paired_samples_ns for r in seen.values()):
            return found
        sides = self._baseline_sides() if self.settings.baseline else {}
        memory = {
            length: sides[r.cell.id].memory if r.cell.id in sides else None
            for length, r in seen.items()
        }
        scaling = sweep_scaling(seen, self.scaling_threshold(manifest), memory)
        return found if scaling is None else with_scaling(found, scaling)

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

"""What one ``pytest --mlscope`` session accumulates: manifests, runtimes, the run in the store.

The plugin keeps one :class:`MlscopeSession` in ``config.stash`` and hands every stage to it; it is
plain Python and can be driven without pytest. Each result is written to the store as soon as its
item ends, so a crash later in the session never loses it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mlscope.availability import Availability
from pytest_mlscope.errors import ManifestError, MlscopeError
from pytest_mlscope.evaluation import Evaluation
from pytest_mlscope.interleaving import Interleaving
from pytest_mlscope.judging import Judging, _with_suspicions  # noqa: F401 (tests import it here)
from pytest_mlscope.protocol import (
    Cell,
    EvaluationResult,
    MeasureOptions,
)
from pytest_mlscope.runtimes.pool import RuntimePool
from pytest_mlscope.timing_lock import TimingTurn

if TYPE_CHECKING:
    from pytest_mlscope.compare import Side, Verdict
    from pytest_mlscope.hardware import Host
    from pytest_mlscope.manifest import Manifest
    from pytest_mlscope.report.data import ReportData
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
    artifact_store: Path | None = None  # baselines' model files there, not in the database
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
    memory_threshold: float | None = None  # overrides every manifest's memory_threshold
    default_memory_threshold: float = 0.10  # ini mlscope_memory_threshold
    scaling_threshold: float | None = None  # overrides every manifest's scaling_threshold
    default_scaling_threshold: float = 0.05  # ini mlscope_scaling_threshold
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


class MlscopeSession(RuntimePool, Availability, Evaluation, Interleaving, Judging, TimingTurn):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.manifests: dict[str, Manifest] = {}
        self.manifest_files = 0  # collected, loaded or not (none: say where the plugin looked)
        self.records: list[Record] = []
        self._runtimes: dict[str, Runtime] = {}
        self._store: Store | None = None
        self._run_id: str | None = None
        # The run is recorded with its first result (a session that runs nothing stores none),
        # but it began here: its start time says so.
        self._began = datetime.now(UTC)
        self._cache: Any = None
        self._scanned = False
        self._baseline: dict[str, Side] | None = None
        self.baseline_note: str | None = None
        self.comparisons = 1  # items compared this session, for the multiple-testing correction
        self.saved_baseline: str | None = None
        self.shard: tuple[str, str | None] | None = None  # (K/N, group) once items were split
        self.shard_note: str | None = None
        self.report_lines: list[str] = []  # where the reports went, or why they did not
        self.report_data: ReportData | None = None  # the stored run, read back at close
        self.lock_wait_s = 0.0  # the last item's wait for the timing lock (pytest-xdist)
        # Waits for the timing lock: on an xdist worker those not yet sent to the controller, on
        # the controller all its workers' (the summary says it).
        self.lock_waited_s = 0.0
        self.records_sent = 0  # records already sent to the xdist controller
        self.xdist_workers = 0  # on the controller of a pytest-xdist session: its workers
        # Per item id: what the A side of an interleaved measurement was, or why there was none.
        self._interleaved: dict[str, tuple[bool, str]] = {}
        # Per sweep (its cell without the length): each length's result so far, this session.
        self._sweeps: dict[Cell, dict[int, EvaluationResult]] = {}
        self._image_versions: dict[str, str | None] = {}  # tag -> its framework release
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

    # -- results --------------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        if self._store is None:
            from pytest_mlscope.store import Store

            self._store = Store.from_location(self.settings.db_location)
            self._store.artifact_dir = self.settings.artifact_store
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
                started_at=self._began,
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
                self.report_data = self._report_data()
                if self.report_data is not None:
                    self._write_reports(self.report_data)
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

    def _file_reports(self) -> list[tuple[str, Path, bool]]:
        """The file reports the settings ask for: (format, where, whether it appends). The
        markdown summary also goes to GitHub's step summary when one is set, appended."""
        html, markdown = self.settings.html, self.settings.markdown
        wanted = [("html", html, False)] if html else []
        wanted += [("markdown", markdown, False)] if markdown else []
        step_summary = os.environ.get("GITHUB_STEP_SUMMARY", "").strip()
        if step_summary:
            wanted.append(("markdown", Path(step_summary), True))
        return wanted

    def _report_data(self) -> ReportData | None:
        """What every report of this run shows, read back from the database before it closes:
        the terminal table, the HTML report and the markdown summary then say what the store
        holds, as ``mlscope show`` and ``mlscope report`` will later. Each item's history and
        the other systems are read only when a file report shows them. None, said in the
        summary, when the run cannot be read: its results are stored all the same."""
        from pytest_mlscope.report import FORMATS
        from pytest_mlscope.report import data as report_data

        full = any(FORMATS[name].history for name, _, _ in self._file_reports())
        try:
            data = report_data.load(
                self.store, self.run_id, history=report_data.HISTORY_RUNS if full else 0,
                across=full,
            )  # fmt: skip
        except Exception as exc:  # the run is stored; a report bug must not hide that
            self.report_lines.append(f"no report: reading run {self.run_id[:12]} failed: {exc}")
            return None
        if self.settings.baseline:
            data.against = f"baseline {self.settings.baseline!r}"
        elif self.settings.interleaving:
            data.against = "A side"
        if self.baseline_note:
            data.notes.append(self.baseline_note)
        data.declared = {
            name: report_data.Declared(
                frameworks=tuple(
                    f"{spec.name}@{spec.stack}" if spec.stack else spec.name
                    for spec in manifest.framework
                ),
                reference=manifest.accuracy.agreement.reference
                if manifest.accuracy.agreement
                else None,
            )
            for name, manifest in self.manifests.items()
        }
        return data

    def _write_reports(self, data: ReportData) -> None:
        """The run's file reports, as the settings ask: each format from the registry
        (``pytest_mlscope.report.FORMATS``). A report that cannot be written is said in the
        summary, never raised: the results are stored."""
        from pytest_mlscope.report import FORMATS

        for name, target, appending in self._file_reports():
            try:
                FORMATS[name].write(data, target, append=appending, html=self.settings.html)
                self.report_lines.append(f"{FORMATS[name].title}: {target}")
            except Exception as exc:
                self.report_lines.append(f"{FORMATS[name].title} not written to {target}: {exc}")

    def summary_notes(self) -> Iterator[str]:
        """What the end of the session says about the session itself, after its results: where
        the run went, how pytest-xdist shared the timing, the reports written."""
        if self.shard_note:
            yield self.shard_note
        if self.started:
            yield f"run {self.run_id} stored in {self.store.url}"
        if self.xdist_workers:
            yield (
                f"{self.xdist_workers} pytest-xdist workers, one run: items were timed one at a "
                f"time across workers (a lock, {self.lock_waited_s:.1f} s waited in all) so "
                "parallel items did not distort each other's timings"
            )
        yield from self.report_lines
        if self.saved_baseline:
            yield f"baseline {self.saved_baseline!r} now points to run {self.run_id}"

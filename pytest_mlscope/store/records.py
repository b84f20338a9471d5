"""What the store hands back: frozen records of runs, results, baselines and artifacts, and the
conversions from database rows to them (documents parsed back into the protocol's types)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from pytest_mlscope.protocol import (
    AccuracyReport,
    Cell,
    ColdStart,
    GenerationSummary,
    LayerRow,
    MemoryUse,
    PredictorInfo,
    Summary,
    TraceInfo,
)
from pytest_mlscope.store.values import _aware, _stamp


@dataclass(frozen=True)
class RunRecord:
    """One pytest session as stored, with how many of its items ended in each outcome."""

    id: str
    started_at: datetime
    finished_at: datetime | None
    status: str
    git_commit: str | None
    git_branch: str | None
    git_dirty: bool | None
    hostname: str
    host: dict[str, Any]
    tags: dict[str, str]
    pytest_args: list[str]
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class ResultRecord:
    """One cell's stored result; documents are parsed back into the protocol's types.

    ``summary``, ``accuracy``, ``cold_start`` and ``predictor`` are None when the item never
    reached an evaluation (skipped, or an error before the worker answered). ``rounds`` holds
    the number of samples in each measurement round (``samples_ns`` is their concatenation);
    ``verdict`` is the comparison with a baseline as the comparison code stored it, or None.
    """

    id: int
    run_id: str
    item_id: str
    cell: Cell
    outcome: str
    message: str | None
    framework_version: str | None
    artifact_sha256: str | None
    summary: Summary | None
    samples_ns: list[int]
    rounds: list[int]
    accuracy: AccuracyReport | None
    cold_start: ColdStart | None
    predictor: PredictorInfo | None
    verdict: dict[str, Any] | None
    recorded_at: datetime
    layers: list[LayerRow] = field(default_factory=list)
    trace: TraceInfo | None = None
    telemetry: dict[str, Any] = field(default_factory=dict)
    memory: MemoryUse | None = None
    generation: GenerationSummary | None = None
    duration_s: float | None = None
    instructions: list[float] = field(default_factory=list)
    # Interleaved: the A side timed beside this result (round i of each is pair i).
    paired_samples_ns: list[int] = field(default_factory=list)
    paired_rounds: list[int] = field(default_factory=list)
    paired_artifact_sha256: str | None = None
    paired_predictor: PredictorInfo | None = None
    paired_workers: list[tuple[int, int]] = field(default_factory=list)


INJECTED_TAG = "inject_slowdown"  # runs tagged so measured a deliberately slowed model


@dataclass(frozen=True)
class HistoryPoint:
    """One stored median of an item, with the run it came from."""

    run_id: str
    started_at: datetime
    git_commit: str | None
    git_branch: str | None
    median: float
    framework_version: str | None
    cpu_model: str | None


@dataclass(frozen=True)
class ComparablePoint:
    """One stored result of an item on a comparable environment: its median, and its median
    instructions per call when the run counted them."""

    run_id: str
    median: float
    instructions: float | None


@dataclass(frozen=True)
class SystemPoint:
    """One timed result of a model with the host it ran on (the across-systems view)."""

    run_id: str
    started_at: datetime
    hostname: str
    host: dict[str, Any]
    cell: Cell
    summary: Summary
    framework_version: str | None
    container: str | None


@dataclass(frozen=True)
class BaselineRecord:
    """A named pointer to the run that later runs are compared against.

    ``created_at`` is when the name was first set, ``updated_at`` when it last changed.
    """

    name: str
    run_id: str
    created_at: datetime
    updated_at: datetime
    note: str | None


@dataclass(frozen=True)
class ArtifactEntry:
    """A model file a baseline keeps: the artifact ``model`` was measured with by ``framework``.

    ``sha256`` is the checksum recorded when it was measured; the file at ``path`` must still have
    it, or storing it is refused (the file changed since).
    """

    sha256: str
    model: str
    framework: str
    format: str
    path: str | os.PathLike[str]


@dataclass(frozen=True)
class StoredArtifact:
    """A model file as the database holds it: ``size`` bytes of file, ``stored_size`` compressed,
    in ``chunks`` chunks; or, with ``location``, as a file in that artifact directory."""

    sha256: str
    format: str
    filename: str
    size: int
    stored_size: int
    chunks: int
    created_at: datetime
    location: str | None = None


@dataclass(frozen=True)
class BaselineArtifact:
    """One artifact a baseline keeps, with what it is for and what it takes."""

    sha256: str
    model: str
    framework: str
    format: str
    filename: str
    size: int
    stored_size: int
    location: str | None = None  # the artifact directory holding it; None: in the database


def _run_record(row: sa.RowMapping, counts: dict[str, int]) -> RunRecord:
    return RunRecord(
        id=row["id"],
        started_at=_stamp(row["started_at"]),
        finished_at=_aware(row["finished_at"]),
        status=row["status"],
        git_commit=row["git_commit"],
        git_branch=row["git_branch"],
        git_dirty=row["git_dirty"],
        hostname=row["hostname"],
        host=dict(row["host"] or {}),
        tags=dict(row["tags"] or {}),
        pytest_args=list(row["pytest_args"] or []),
        counts=counts,
    )


def _cell(row: sa.RowMapping) -> Cell:
    return Cell(
        model=row["model"],
        framework=row["framework"],
        device=row["device"],
        batch_size=row["batch_size"],
        scenario=row["scenario"],
        stack=row.get("stack"),
        sequence_length=row.get("sequence_length"),
    )


def _result_record(row: sa.RowMapping) -> ResultRecord:
    paired = dict(row.get("paired") or {})
    return ResultRecord(
        id=row["id"],
        run_id=row["run_id"],
        item_id=row["item_id"],
        cell=_cell(row),
        outcome=row["outcome"],
        message=row["message"],
        framework_version=row["framework_version"],
        artifact_sha256=row["artifact_sha256"],
        summary=Summary.model_validate(row["summary"]) if row["summary"] is not None else None,
        samples_ns=[int(sample) for sample in row["samples_ns"] or []],
        rounds=[int(size) for size in row["rounds"] or []],
        accuracy=(
            AccuracyReport.model_validate(row["accuracy"]) if row["accuracy"] is not None else None
        ),
        cold_start=(
            ColdStart.model_validate(row["cold_start"]) if row["cold_start"] is not None else None
        ),
        predictor=(
            PredictorInfo.model_validate(row["predictor"]) if row["predictor"] is not None else None
        ),
        verdict=dict(row["verdict"]) if row["verdict"] is not None else None,
        recorded_at=_stamp(row["recorded_at"]),
        layers=[LayerRow.model_validate(r) for r in row.get("layers") or []],
        trace=TraceInfo.model_validate(row["trace"]) if row.get("trace") is not None else None,
        telemetry=dict(row.get("telemetry") or {}),
        memory=MemoryUse.model_validate(row["memory"]) if row.get("memory") else None,
        generation=(
            GenerationSummary.model_validate(row["generation"]) if row.get("generation") else None
        ),
        duration_s=row.get("duration_s"),
        instructions=[float(x) for x in row.get("instructions") or []],
        paired_samples_ns=[int(sample) for sample in row.get("paired_samples_ns") or []],
        paired_rounds=[int(size) for size in paired.get("rounds") or []],
        paired_artifact_sha256=paired.get("artifact_sha256"),
        paired_predictor=(
            PredictorInfo.model_validate(paired["predictor"]) if paired.get("predictor") else None
        ),
        paired_workers=[(int(a), int(b)) for a, b in paired.get("workers") or []],
    )


def _baseline_record(row: sa.RowMapping) -> BaselineRecord:
    return BaselineRecord(
        name=row["name"],
        run_id=row["run_id"],
        created_at=_stamp(row["created_at"]),
        updated_at=_stamp(row["updated_at"]),
        note=row["note"],
    )

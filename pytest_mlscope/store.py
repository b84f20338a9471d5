"""The results database: every run and every cell's result, raw samples included.

SQLAlchemy Core only, with portable column types, so the same tables live in a local SQLite file
(the default) or a PostgreSQL server a team shares. This is the one place that opens the database;
the plugin and the ``mlscope`` command both go through :class:`Store`. The schema carries a
version so an older pytest-mlscope refuses a database written by a newer one instead of
misreading it.

Besides runs and their results it keeps named baselines: a name (``main``, ``release-1.2``)
pointing to the run that later runs are compared against, and the model files that run measured
(content-addressed, compressed, in chunks), so a fresh CI machine or an edited model file can still
time the baseline's model beside the current one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import uuid
import zlib
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from pytest_mlscope.errors import ArtifactError, MlscopeError
from pytest_mlscope.protocol import (
    AccuracyReport,
    Cell,
    ColdStart,
    EvaluationResult,
    LayerRow,
    PredictorInfo,
    Summary,
    TraceInfo,
)

SCHEMA_VERSION = 7
# Each step takes a database from version N to N + 1, in one transaction. A database written by
# an older pytest-mlscope keeps every result it had. A step is SQL text ({json} is the backend's
# JSON type) or a function of the connection (new tables, indexes, converted columns).
MIGRATIONS: dict[int, list[str | Callable[[sa.Connection], None]]] = {
    1: [
        "ALTER TABLE results ADD COLUMN layers {json}",
        "ALTER TABLE results ADD COLUMN trace {json}",
    ],
    2: [
        "ALTER TABLE results ADD COLUMN stack VARCHAR(255)",
        "ALTER TABLE results ADD COLUMN telemetry {json}",
    ],
    3: [
        # Development builds between 0.1.0 and this step wrote version 3 before telemetry joined
        # step 2: such a database gets the column now.
        lambda connection: _add_missing_column(connection, "results", "telemetry", "{json}"),
        "ALTER TABLE results ADD COLUMN duration_s FLOAT",
        lambda connection: _create_indexes(connection),
        lambda connection: shard_plans_table.create(connection, checkfirst=True),
    ],
    4: [
        # Who runs a session (so a killed one is recognised) and the run's CPU model as a column
        # (history reads it for every point, without parsing each run's host document).
        "ALTER TABLE runs ADD COLUMN owner VARCHAR(255)",
        "ALTER TABLE runs ADD COLUMN cpu_model VARCHAR(255)",
        lambda connection: _fill_cpu_models(connection),
        # Raw samples as packed int64 instead of JSON text: a tenth of the encoding time.
        lambda connection: _pack_samples(connection),
    ],
    5: [
        # Instructions per call, per round, from the count pass (pytest_mlscope.callgrind).
        "ALTER TABLE results ADD COLUMN instructions {json}",
    ],
    6: [
        # The model files baselines keep (artifact_blobs, artifact_chunks, baseline_artifacts).
        lambda connection: _create_artifact_tables(connection),
        # The A side of an interleaved result (its samples packed, the rest a document), so a
        # stored run is judged again on its pairs by mlscope compare and the report.
        lambda connection: _add_paired_columns(connection),
    ],
}

RUN_STATUSES = ("running", "complete", "incomplete")
OUTCOMES = ("passed", "failed", "error", "skipped")

# Long enough to ride out another pytest process (xdist worker, parallel CI job) committing.
SQLITE_BUSY_TIMEOUT_MS = 30_000
GIT_TIMEOUT_S = 10

# Branch-like names: release-1.2, feature/x, nightly_cpu.
BASELINE_NAME = re.compile(r"[A-Za-z0-9._/-]{1,100}")
SHA256 = re.compile(r"[0-9a-f]{64}")

# Raw bytes per stored chunk of an artifact: what one statement carries, and all of a file that is
# ever in memory while it is stored or fetched.
ARTIFACT_CHUNK_SIZE = 4 * 1024 * 1024
# Weights barely compress at any level (random-like floats by 7 %), and level 1 is the quickest;
# files with long runs of zeros still shrink a lot.
ARTIFACT_COMPRESSION_LEVEL = 1
# Setting a baseline retries when another session freed or re-referenced its artifacts meanwhile.
ARTIFACT_ATTEMPTS = 3


class Int64Array(sa.types.TypeDecorator[list[int]]):
    """A list of integers stored as packed little-endian int64 (8 bytes a value).

    Raw samples run to thousands of values per result; as JSON text they were most of what an
    insert cost, and most of what reading a baseline back cost.
    """

    impl = sa.LargeBinary
    cache_ok = True

    def process_bind_param(self, value: Sequence[int] | None, dialect: sa.Dialect) -> bytes | None:
        if value is None:
            return None
        values = array("q", value)
        if sys.byteorder != "little":
            values.byteswap()
        return values.tobytes()

    def process_result_value(self, value: bytes | None, dialect: sa.Dialect) -> list[int] | None:
        if value is None:
            return None
        values = array("q")
        values.frombytes(bytes(value))
        if sys.byteorder != "little":
            values.byteswap()
        return values.tolist()


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _json_dumps(value: Any) -> str:
    """JSON that every backend accepts: PostgreSQL's json type refuses NaN and Infinity (a
    one-sample summary has a NaN spread), so they are written as strings, which the protocol's
    float fields read back as the same values. Most documents hold none: they are written
    as they are, and only the rest walked (raw samples run to thousands of numbers)."""
    try:
        return _JSON_ENCODER.encode(value)
    except ValueError:
        return _JSON_ENCODER.encode(_finite(value))


# Built once: json.dumps with an option builds a new encoder for every document.
_JSON_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


class StoreError(MlscopeError):
    """The results database cannot be opened, a run or baseline asked for is not in it, or a
    change asked for (moving a baseline, say) is refused."""


metadata = sa.MetaData()

# One row, pinned by its primary key so two processes creating the schema at once cannot
# leave two version rows behind.
schema_version_table = sa.Table(
    "schema_version",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("version", sa.Integer, nullable=False),
)

runs_table = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("git_commit", sa.String(64), nullable=True),
    sa.Column("git_branch", sa.Text, nullable=True),
    sa.Column("git_dirty", sa.Boolean, nullable=True),
    sa.Column("host", sa.JSON, nullable=False),
    sa.Column("hostname", sa.String(255), nullable=False, index=True),
    sa.Column("tags", sa.JSON, nullable=False),
    sa.Column("pytest_args", sa.JSON, nullable=False),
    # The session writing the run, "host pid start-time" (schema 5): a run left 'running' by a
    # process that is gone was killed, and the next session on that host marks it incomplete.
    sa.Column("owner", sa.String(255), nullable=True),
    sa.Column("cpu_model", sa.String(255), nullable=True),
)

# none_as_null: a missing document is SQL NULL, not the JSON text 'null', so queries can test it.
_NullableJSON = sa.JSON(none_as_null=True)

results_table = sa.Table(
    "results",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), nullable=False, index=True),
    sa.Column("item_id", sa.Text, nullable=False),
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("framework", sa.String(255), nullable=False),
    sa.Column("device", sa.String(32), nullable=False),
    sa.Column("batch_size", sa.Integer, nullable=False),
    sa.Column("scenario", sa.String(32), nullable=False),
    # One of several stacks of the framework in the manifest (Cell.stack); None for the only one.
    sa.Column("stack", sa.String(255), nullable=True),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("message", sa.Text, nullable=True),
    sa.Column("framework_version", sa.String(255), nullable=True),
    sa.Column("artifact_sha256", sa.String(64), nullable=True),
    sa.Column("summary", _NullableJSON, nullable=True),
    sa.Column("samples_ns", Int64Array, nullable=False),
    # Samples per measurement round, in order; samples_ns is their concatenation.
    sa.Column("rounds", sa.JSON, nullable=False, default=lambda: [], server_default="[]"),
    sa.Column("accuracy", _NullableJSON, nullable=True),
    sa.Column("cold_start", _NullableJSON, nullable=True),
    sa.Column("predictor", _NullableJSON, nullable=True),
    # What the comparison with a baseline concluded, as the comparison code wrote it.
    sa.Column("verdict", _NullableJSON, nullable=True),
    # The profiling pass: layer table rows, and the trace's level, file and notes (schema 2).
    sa.Column("layers", _NullableJSON, nullable=True),
    sa.Column("trace", _NullableJSON, nullable=True),
    sa.Column("telemetry", _NullableJSON, nullable=True),
    # Instructions per call, one figure per round, from the count pass (schema 6).
    sa.Column("instructions", _NullableJSON, nullable=True),
    # Interleaved (schema 7): the A side's samples, and its rounds, artifact and predictor.
    sa.Column("paired_samples_ns", Int64Array, nullable=True),
    sa.Column("paired", _NullableJSON, nullable=True),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    # Wall time of the item in pytest (schema 4): what sharding balances on.
    sa.Column("duration_s", sa.Float, nullable=True),
)

# History, trend plots and the across-systems view look results up by item or model; runs are
# listed newest first. Declared here so a new database gets them and migration 3 adds them.
_INDEXES = (
    sa.Index("ix_results_item_id", results_table.c.item_id, results_table.c.id),
    sa.Index("ix_results_model", results_table.c.model),
    sa.Index("ix_runs_started_at", runs_table.c.started_at),
)


def _add_missing_column(connection: sa.Connection, table: str, column: str, kind: str) -> None:
    columns = {c["name"] for c in sa.inspect(connection).get_columns(table)}
    if column not in columns:
        json_type = "JSONB" if connection.dialect.name == "postgresql" else "JSON"
        connection.execute(
            sa.text(f"ALTER TABLE {table} ADD COLUMN {column} {kind}".format(json=json_type))
        )


def _create_indexes(connection: sa.Connection) -> None:
    for index in _INDEXES:
        index.create(connection, checkfirst=True)


def _fill_cpu_models(connection: sa.Connection) -> None:
    rows = connection.execute(sa.text("SELECT id, host FROM runs")).all()
    updates = []
    for run_id, host in rows:
        document = json.loads(host) if isinstance(host, str | bytes) else host
        cpu_model = (document or {}).get("cpu_model") if isinstance(document, dict) else None
        if cpu_model:
            updates.append({"id": run_id, "cpu_model": str(cpu_model)[:255]})
    if updates:
        connection.execute(
            sa.text("UPDATE runs SET cpu_model = :cpu_model WHERE id = :id"), updates
        )


def _pack_samples(connection: sa.Connection) -> None:
    """Rewrite results.samples_ns from JSON text to packed int64, keeping the column's name."""
    postgres = connection.dialect.name == "postgresql"
    blob = "BYTEA" if postgres else "BLOB"
    connection.execute(sa.text(f"ALTER TABLE results ADD COLUMN samples_packed {blob}"))
    packer = Int64Array().process_bind_param
    rows = connection.execute(sa.text("SELECT id, samples_ns FROM results")).all()
    updates = []
    for result_id, stored in rows:
        if isinstance(stored, bytes | memoryview):  # written by this version already
            packed = bytes(stored)
        else:
            values = json.loads(stored) if isinstance(stored, str) else stored
            packed = packer([int(value) for value in values or []], connection.dialect)
        updates.append({"id": result_id, "packed": packed})
    if updates:
        connection.execute(
            sa.text("UPDATE results SET samples_packed = :packed WHERE id = :id"), updates
        )
    connection.execute(sa.text("ALTER TABLE results DROP COLUMN samples_ns"))
    connection.execute(sa.text("ALTER TABLE results RENAME COLUMN samples_packed TO samples_ns"))
    if postgres:
        connection.execute(sa.text("ALTER TABLE results ALTER COLUMN samples_ns SET NOT NULL"))
    _tune_samples_storage(connection)


def _tune_samples_storage(connection: sa.Connection) -> None:
    """PostgreSQL: compress raw samples with lz4, or not at all where the server lacks it.

    Its default (pglz) spent half of a bulk insert's time on the samples; lz4 takes a tenth of
    that. Needs PostgreSQL 14 built with lz4 (Debian's is); any other server keeps them as
    they come, which is still faster than pglz.
    """
    if connection.dialect.name != "postgresql":
        return
    try:
        with connection.begin_nested():
            connection.execute(
                sa.text("ALTER TABLE results ALTER COLUMN samples_ns SET COMPRESSION lz4")
            )
    except sa_exc.DBAPIError:
        connection.execute(
            sa.text("ALTER TABLE results ALTER COLUMN samples_ns SET STORAGE EXTERNAL")
        )


# How one sharded suite was split: the first runner of a group to collect writes the plan, every
# other runner of the group reads it, so all of them split the same way whatever history
# arrived in between (the key's primary key makes the first writer win).
shard_plans_table = sa.Table(
    "shard_plans",
    metadata,
    sa.Column("group_id", sa.String(255), primary_key=True),
    sa.Column("shards", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("items_digest", sa.String(64), primary_key=True),
    sa.Column("plan", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

baselines_table = sa.Table(
    "baselines",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), nullable=False, index=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("note", sa.Text, nullable=True),
)

# Model files, stored once per content (schema 7). A blob's row is written in the same transaction
# as all of its chunks, so a blob that is listed is whole; ``size`` counts the file's bytes,
# ``stored_size`` the compressed chunks'. ``filename`` keeps the suffix a loader goes by.
artifact_blobs_table = sa.Table(
    "artifact_blobs",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("stored_size", sa.BigInteger, nullable=False),
    sa.Column("chunks", sa.Integer, nullable=False),
    sa.Column("format", sa.String(64), nullable=False),
    sa.Column("filename", sa.String(255), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

artifact_chunks_table = sa.Table(
    "artifact_chunks",
    metadata,
    sa.Column("sha256", sa.String(64), sa.ForeignKey("artifact_blobs.sha256"), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    # zlib-compressed, ARTIFACT_CHUNK_SIZE bytes of the file before compression.
    sa.Column("data", sa.LargeBinary, nullable=False),
)

# Which blobs a baseline keeps: the artifact each (model, framework) of its run was measured with.
# A blob no baseline references is freed.
baseline_artifacts_table = sa.Table(
    "baseline_artifacts",
    metadata,
    sa.Column("baseline", sa.String(255), sa.ForeignKey("baselines.name"), primary_key=True),
    sa.Column(
        "sha256",
        sa.String(64),
        sa.ForeignKey("artifact_blobs.sha256"),
        primary_key=True,
        index=True,
    ),
    sa.Column("model", sa.String(255), primary_key=True),
    sa.Column("framework", sa.String(255), primary_key=True),
    sa.Column("format", sa.String(64), nullable=False),
)

_ARTIFACT_TABLES = (artifact_blobs_table, artifact_chunks_table, baseline_artifacts_table)


def _add_paired_columns(connection: sa.Connection) -> None:
    blob = "BYTEA" if connection.dialect.name == "postgresql" else "BLOB"
    _add_missing_column(connection, "results", "paired_samples_ns", blob)
    _add_missing_column(connection, "results", "paired", "{json}")


def _create_artifact_tables(connection: sa.Connection) -> None:
    for table in _ARTIFACT_TABLES:
        table.create(connection, checkfirst=True)
    _tune_chunk_storage(connection)


def _tune_chunk_storage(connection: sa.Connection) -> None:
    """PostgreSQL: keep chunks as they come; they are zlib output already, and the server's own
    compression would spend time on every one for nothing."""
    if connection.dialect.name == "postgresql":
        connection.execute(
            sa.text("ALTER TABLE artifact_chunks ALTER COLUMN data SET STORAGE EXTERNAL")
        )


@dataclass(frozen=True)
class GitInfo:
    commit: str | None
    branch: str | None
    dirty: bool | None


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
    duration_s: float | None = None
    instructions: list[float] = field(default_factory=list)
    # Interleaved: the A side timed beside this result (round i of each is pair i).
    paired_samples_ns: list[int] = field(default_factory=list)
    paired_rounds: list[int] = field(default_factory=list)
    paired_artifact_sha256: str | None = None
    paired_predictor: PredictorInfo | None = None


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
    in ``chunks`` chunks."""

    sha256: str
    format: str
    filename: str
    size: int
    stored_size: int
    chunks: int
    created_at: datetime


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


class _ReferencesRaced(Exception):
    """Another session freed a blob, or referenced it for the same baseline, while this one was
    writing a baseline's references: the transaction is rolled back and set again."""


def default_location() -> str:
    """``$MLSCOPE_DB`` when set, else ``.mlscope/results.db`` under the current directory.

    Made absolute here so a location stays the same file whatever directory it is used from.
    """
    configured = os.environ.get("MLSCOPE_DB", "").strip()
    if configured:
        return configured
    return str(Path.cwd() / ".mlscope" / "results.db")


def session_owner() -> str:
    """This process as the owner of a run: host, pid and start time (a pid alone is reused)."""
    import psutil

    return f"{platform.node()} {os.getpid()} {psutil.Process().create_time():.2f}"


def _owner_host(owner: str) -> str:
    return owner.rsplit(" ", 2)[0]


def _owner_alive(owner: str) -> bool:
    import psutil

    try:
        _host, pid, created = owner.rsplit(" ", 2)
        process = psutil.Process(int(pid))
        return abs(process.create_time() - float(created)) < 1.0
    except psutil.AccessDenied:  # someone else's process, alive: not ours to judge
        return True
    except (ValueError, psutil.NoSuchProcess):  # a zombie is a NoSuchProcess too
        return False


def _text(value: str | None, limit: int | None = None) -> str | None:
    """Text every backend stores: PostgreSQL refuses NUL characters outright, and values past
    a column's length (SQLite would keep them; the item id, in full, is in a text column)."""
    if value is None:
        return None
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    return value[:limit] if limit is not None else value


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    # SQLite keeps no offset: values are written in UTC and come back naive.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _sqlite_file(url: sa.URL) -> Path | None:
    """The file behind a SQLite URL; None for in-memory databases and other backends."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _enable_sqlite_concurrency(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets `mlscope runs` read while a test session writes, and the busy timeout makes
    # concurrent writers (xdist workers) wait for each other instead of failing "locked".
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL still survives a killed process (every commit is in the log before
        # COMMIT returns); only a power cut may drop the last commits, never corrupt the file.
        # It halves what each per-result commit costs.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


class Store:
    """A results database opened at a SQLAlchemy URL, its schema created or checked."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        """Open ``url``; with ``create=False`` a missing SQLite file is an error, not a new DB.

        The CLI opens with ``create=False`` so a typo in ``--db`` is reported instead of
        silently showing an empty, freshly created database.
        """
        try:
            parsed = sa.make_url(url)
        except sa_exc.ArgumentError as exc:
            raise StoreError(f"not a database URL: {url!r} ({exc})") from None
        self.url: str = parsed.render_as_string(hide_password=True)
        path = _sqlite_file(parsed)
        if path is not None and not path.exists():
            if not create:
                raise StoreError(f"no results database at {path}; run pytest --mlscope first")
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._engine = sa.create_engine(parsed, json_serializer=_json_dumps)
        except ImportError as exc:
            raise StoreError(
                f"cannot open results database {self.url}: its driver is not installed ({exc})"
            ) from None
        if parsed.get_backend_name() == "sqlite":
            sa.event.listen(self._engine, "connect", _enable_sqlite_concurrency)
        try:
            self._prepare_schema()
        except sa_exc.SQLAlchemyError as exc:
            self._engine.dispose()
            reason = getattr(exc, "orig", None) or exc
            raise StoreError(f"cannot open results database {self.url}: {reason}") from None
        except StoreError:
            self._engine.dispose()
            raise

    @classmethod
    def from_location(cls, location: str | os.PathLike[str], *, create: bool = True) -> Store:
        """Open a location as users write it: a URL (``postgresql://…``) or a plain file path."""
        text = os.fspath(location)
        if "://" in text:
            return cls(text, create=create)
        path = Path(text).expanduser().resolve()
        return cls(f"sqlite:///{path}", create=create)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # -- schema ----------------------------------------------------------------------------------

    def _stored_version(self, connection: sa.Connection) -> int | None:
        if not sa.inspect(connection).has_table(schema_version_table.name):
            return None
        return connection.execute(
            sa.select(schema_version_table.c.version).where(schema_version_table.c.id == 1)
        ).scalar_one_or_none()

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"results database {self.url} has schema version {version}, newer than the "
                f"{SCHEMA_VERSION} this pytest-mlscope understands; upgrade pytest-mlscope"
            )
        if version < SCHEMA_VERSION and version not in MIGRATIONS:
            raise StoreError(
                f"results database {self.url} has schema version {version}, older than "
                f"{SCHEMA_VERSION}, and no migration from it is known"
            )

    def _migrate(self, version: int) -> None:
        """Bring an older database up to SCHEMA_VERSION, one step per transaction.

        The version row is updated only if it still says what we read, so two sessions opening
        the same old database at once migrate it once.
        """
        json_type = "JSONB" if self._engine.dialect.name == "postgresql" else "JSON"
        while version < SCHEMA_VERSION:
            with self._engine.begin() as connection:
                current = self._stored_version(connection)
                if current is not None and current > version:
                    version = current  # someone else migrated meanwhile
                    continue
                for statement in MIGRATIONS[version]:
                    if callable(statement):
                        statement(connection)
                    else:
                        connection.execute(sa.text(statement.format(json=json_type)))
                connection.execute(
                    sa.update(schema_version_table)
                    .where(schema_version_table.c.id == 1)
                    .values(version=version + 1)
                )
            version += 1

    def _prepare_schema(self) -> None:
        with self._engine.connect() as connection:
            version = self._stored_version(connection)
        if version is not None:
            self._check_version(version)
            if version < SCHEMA_VERSION:
                self._migrate(version)
            return
        try:
            with self._engine.begin() as connection:
                metadata.create_all(connection)
                _tune_samples_storage(connection)
                _tune_chunk_storage(connection)
                connection.execute(
                    sa.insert(schema_version_table).values(id=1, version=SCHEMA_VERSION)
                )
        except (sa_exc.IntegrityError, sa_exc.OperationalError, sa_exc.ProgrammingError):
            # Another process may have created the schema between our check and our create;
            # then what it wrote is what counts. Otherwise the error is real.
            with self._engine.connect() as connection:
                version = self._stored_version(connection)
            if version is None:
                raise
            self._check_version(version)

    # -- writing ---------------------------------------------------------------------------------

    def start_run(
        self,
        *,
        host: dict[str, Any],
        git: GitInfo | None = None,
        tags: dict[str, str] | None = None,
        pytest_args: list[str] | None = None,
    ) -> str:
        """Record a session as 'running' before any item runs, so a crash still leaves a trace."""
        run_id = uuid.uuid4().hex
        with self._engine.begin() as connection:
            connection.execute(
                sa.insert(runs_table).values(
                    id=run_id,
                    owner=session_owner(),
                    cpu_model=str(host.get("cpu_model") or "")[:255] or None,
                    started_at=_now(),
                    finished_at=None,
                    status="running",
                    git_commit=git.commit if git else None,
                    git_branch=git.branch if git else None,
                    git_dirty=git.dirty if git else None,
                    host=host,
                    hostname=str(host.get("hostname") or ""),
                    tags=dict(tags or {}),
                    pytest_args=list(pytest_args or []),
                )
            )
        return run_id

    def record_result(
        self,
        run_id: str,
        *,
        cell: Cell,
        outcome: str,
        result: EvaluationResult | None = None,
        message: str | None = None,
        verdict: dict[str, Any] | None = None,
        duration_s: float | None = None,
        item_id: str | None = None,
    ) -> None:
        """Store one item's result, committed at once so a later crash never loses it.

        ``verdict`` is the comparison with a baseline, a JSON-able dict stored as given;
        ``duration_s`` the item's wall time in pytest, which later shard plans balance on;
        ``item_id`` the result's name when it is not the cell's id (a hand-written test's
        evaluation of a cell that a manifest item also runs).
        """
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
        values: dict[str, Any] = {
            "run_id": run_id,
            "item_id": _text(item_id or cell.id),
            "model": _text(cell.model, 255),
            "framework": _text(cell.framework, 255),
            "device": cell.device,
            "batch_size": cell.batch_size,
            "scenario": cell.scenario,
            "stack": _text(cell.stack, 255),
            "outcome": outcome,
            # A crashed worker's stderr tail can hold any bytes a framework printed.
            "message": _text(message),
            "framework_version": None,
            "artifact_sha256": None,
            "summary": None,
            "samples_ns": [],
            "rounds": [],
            "accuracy": None,
            "cold_start": None,
            "predictor": None,
            "verdict": dict(verdict) if verdict is not None else None,
            "layers": None,
            "trace": None,
            "telemetry": None,
            "instructions": None,
            "paired_samples_ns": None,
            "paired": None,
            "recorded_at": _now(),
            "duration_s": duration_s,
        }
        if result is not None:
            values.update(
                framework_version=result.predictor.version,
                artifact_sha256=result.artifact_sha256,
                summary=result.summary.model_dump() if result.summary else None,
                samples_ns=list(result.samples_ns),  # ints already: the protocol validated them
                rounds=list(result.rounds),
                accuracy=result.accuracy.model_dump(),
                cold_start=result.cold_start.model_dump(),
                predictor=result.predictor.model_dump(mode="json"),
                layers=[row.model_dump() for row in result.layers] if result.layers else None,
                trace=result.trace.model_dump() if result.trace else None,
                telemetry=dict(result.telemetry) or None,
                instructions=list(result.instructions) or None,
            )
            if result.paired_samples_ns:
                values.update(
                    paired_samples_ns=list(result.paired_samples_ns),
                    paired={
                        "rounds": list(result.paired_rounds),
                        "artifact_sha256": result.paired_artifact_sha256,
                        "predictor": result.paired_predictor.model_dump(mode="json")
                        if result.paired_predictor
                        else None,
                    },
                )
        try:
            with self._engine.begin() as connection:
                # Values as parameters, not in the statement: one compiled INSERT serves all.
                connection.execute(sa.insert(results_table), [values])
        except sa_exc.IntegrityError:
            raise StoreError(f"cannot record {cell.id}: no run {run_id} in {self.url}") from None

    def finish_run(
        self, run_id: str, status: str = "complete", host_facts: dict[str, Any] | None = None
    ) -> None:
        """Close a run; 'incomplete' marks a session that was interrupted or had errors.

        ``host_facts`` join the run's environment fingerprint: what was learnt only while the
        run went on, such as the container images its stacks ran in.
        """
        if status not in RUN_STATUSES:
            raise ValueError(f"status must be one of {', '.join(RUN_STATUSES)}, got {status!r}")
        values: dict[str, Any] = {"finished_at": _now(), "status": status}
        with self._engine.begin() as connection:
            if host_facts:
                host = connection.execute(
                    sa.select(runs_table.c.host).where(runs_table.c.id == run_id)
                ).scalar()
                values["host"] = {**(host or {}), **host_facts}
            updated = connection.execute(
                sa.update(runs_table).where(runs_table.c.id == run_id).values(**values)
            )
        if updated.rowcount == 0:
            raise StoreError(f"no run {run_id} in {self.url}")

    def close_abandoned_runs(self) -> list[str]:
        """Mark 'incomplete' the runs this host's sessions left 'running' and then died with
        (``kill -9``, an OOM kill, a lost CI runner): their process is gone, so nobody else
        will. Each keeps every result it stored and ends at its last one. Runs of other hosts
        are left alone (their processes cannot be seen from here). Returns their ids."""
        here = platform.node()
        with self._engine.connect() as connection:
            rows = connection.execute(
                sa.select(runs_table.c.id, runs_table.c.owner, runs_table.c.started_at).where(
                    runs_table.c.status == "running", runs_table.c.owner.is_not(None)
                )
            ).all()
        abandoned = [
            (run_id, started_at)
            for run_id, owner, started_at in rows
            if _owner_host(owner) == here and not _owner_alive(owner)
        ]
        closed = []
        for run_id, started_at in abandoned:
            with self._engine.begin() as connection:
                last = connection.execute(
                    sa.select(sa.func.max(results_table.c.recorded_at)).where(
                        results_table.c.run_id == run_id
                    )
                ).scalar()
                updated = connection.execute(
                    sa.update(runs_table)
                    .where(runs_table.c.id == run_id, runs_table.c.status == "running")
                    .values(status="incomplete", finished_at=last or started_at)
                )
            if updated.rowcount:  # another session may have closed it first
                closed.append(run_id)
        return closed

    # -- reading ---------------------------------------------------------------------------------

    def runs(self, limit: int = 20) -> list[RunRecord]:
        """The most recent runs, newest first, each with its result counts by outcome."""
        query = (
            sa.select(runs_table)
            .order_by(runs_table.c.started_at.desc(), runs_table.c.id)
            .limit(limit)
        )
        with self._engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
            counts = self._counts(connection, [row["id"] for row in rows])
        return [_run_record(row, counts.get(row["id"], {})) for row in rows]

    def get_run(self, run_id_or_prefix: str) -> RunRecord:
        """The run whose id starts with the given text; refused when none or several match."""
        prefix = run_id_or_prefix.strip().lower()
        if not prefix:
            raise StoreError("expected a run id or a prefix of one, got an empty string")
        query = (
            sa.select(runs_table)
            .where(runs_table.c.id.startswith(prefix, autoescape=True))
            .order_by(runs_table.c.started_at.desc())
            .limit(6)
        )
        with self._engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
            if not rows:
                raise StoreError(f"no run matches {run_id_or_prefix!r} in {self.url}")
            if len(rows) > 1:
                shown = ", ".join(row["id"] for row in rows[:5])
                more = " and more" if len(rows) > 5 else ""
                raise StoreError(
                    f"run prefix {run_id_or_prefix!r} is ambiguous: it matches {shown}{more}; "
                    f"give more characters"
                )
            row = rows[0]
            counts = self._counts(connection, [row["id"]])
        return _run_record(row, counts.get(row["id"], {}))

    def results(self, run_id: str) -> list[ResultRecord]:
        """A run's results in the order they were recorded."""
        query = (
            sa.select(results_table)
            .where(results_table.c.run_id == run_id)
            .order_by(results_table.c.id)
        )
        with self._engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [_result_record(row) for row in rows]

    def latest_results(self, run_id: str) -> dict[str, ResultRecord]:
        """Each item of a run with the last result recorded for it, in recording order.

        A run may record an item twice (a rerun within one session); the last one counts.
        """
        latest = (
            sa.select(sa.func.max(results_table.c.id))
            .where(results_table.c.run_id == run_id)
            .group_by(results_table.c.item_id)
        )
        query = (
            sa.select(results_table)
            .where(results_table.c.id.in_(latest))
            .order_by(results_table.c.id)
        )
        with self._engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return {row["item_id"]: _result_record(row) for row in rows}

    def item_history(
        self, item_id: str, *, branch: str | None = None, limit: int = 200
    ) -> list[HistoryPoint]:
        """An item's timed results across runs, oldest first (the last ``limit`` of them).

        ``branch`` keeps the runs made on that git branch: the line a baseline follows. Runs
        with an injected slowdown (gate self-tests) are left out: they are not the model's
        history.
        """
        where = [results_table.c.item_id == item_id]
        if branch is not None:
            where.append(runs_table.c.git_branch == branch)
        rows = self._timed_rows(
            where,
            [
                results_table.c.framework_version,
                runs_table.c.git_commit,
                runs_table.c.git_branch,
                runs_table.c.cpu_model,
            ],
            limit,
        )
        return [
            HistoryPoint(
                run_id=row["run_id"],
                started_at=_aware(row["started_at"]),  # type: ignore[arg-type]
                git_commit=row["git_commit"],
                git_branch=row["git_branch"],
                median=float(row["summary"]["median"]),
                framework_version=row["framework_version"],
                cpu_model=row["cpu_model"],
            )
            for row in reversed(rows)
        ]

    def comparable_history(
        self,
        item_id: str,
        *,
        cpu_model: str | None,
        framework_version: str | None,
        container_image: str | None = None,
        before: str | None = None,
        limit: int = 30,
    ) -> list[ComparablePoint]:
        """An item's stored medians (and instruction counts) from runs on a comparable
        environment, oldest first: the ``limit`` newest of those, chosen after filtering, so
        runs on other machines or framework versions never crowd them out.

        ``before`` (a run id) keeps only runs started before that run: the history a session
        saw when it judged that run. Gate self-tests (injected slowdowns) are left out.
        """
        from pytest_mlscope.compare import environment

        where = [
            results_table.c.item_id == item_id,
            runs_table.c.cpu_model == cpu_model
            if cpu_model is not None
            else runs_table.c.cpu_model.is_(None),
            results_table.c.framework_version == framework_version
            if framework_version is not None
            else results_table.c.framework_version.is_(None),
        ]
        if before is not None:
            started = sa.select(runs_table.c.started_at).where(runs_table.c.id == before)
            where.append(runs_table.c.started_at < started.scalar_subquery())
            where.append(runs_table.c.id != before)
        query = (
            sa.select(
                results_table.c.run_id,
                results_table.c.summary,
                results_table.c.instructions,
                results_table.c.predictor,
                runs_table.c.tags,
                runs_table.c.host,
            )
            .join(runs_table, runs_table.c.id == results_table.c.run_id)
            .where(*where, results_table.c.summary.is_not(None))
            .order_by(runs_table.c.started_at.desc(), results_table.c.id.desc())
        )
        points: list[ComparablePoint] = []
        with self._engine.connect() as connection:
            for row in connection.execute(query).mappings():
                median = (row["summary"] or {}).get("median")
                if median is None or INJECTED_TAG in (row["tags"] or {}):
                    continue
                predictor = (
                    PredictorInfo.model_validate(row["predictor"]) if row["predictor"] else None
                )
                image = environment(row["host"] or {}, predictor).get("container_image")
                if image != container_image:
                    continue
                counts = row["instructions"] or []
                points.append(
                    ComparablePoint(
                        run_id=row["run_id"],
                        median=float(median),
                        instructions=float(statistics.median(counts)) if counts else None,
                    )
                )
                if len(points) >= limit:
                    break
        return points[::-1]

    def _timed_rows(self, where: list[Any], columns: list[Any], limit: int) -> list[sa.RowMapping]:
        """Timed results joined with their runs, newest first: the ``limit`` newest that match,
        less those without a median and those of runs with an injected slowdown (gate
        self-tests, not the model's history)."""
        query = (
            sa.select(
                results_table.c.run_id,
                results_table.c.summary,
                runs_table.c.started_at,
                runs_table.c.tags,
                *columns,
            )
            .join(runs_table, runs_table.c.id == results_table.c.run_id)
            .where(*where, results_table.c.summary.is_not(None))
            .order_by(runs_table.c.started_at.desc(), results_table.c.id.desc())
            .limit(limit)
        )
        with self._engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [
            row
            for row in rows
            if (row["summary"] or {}).get("median") is not None
            and INJECTED_TAG not in (row["tags"] or {})
        ]

    def item_durations(self, item_ids: Iterable[str], *, last: int = 5) -> dict[str, float]:
        """Each item's median wall time over its ``last`` results that recorded one.

        Items never run (or only by a pytest-mlscope before schema 4) are absent.
        """
        wanted = sorted(set(item_ids))
        if not wanted:
            return {}
        rank = (
            sa.func.row_number()
            .over(partition_by=results_table.c.item_id, order_by=results_table.c.id.desc())
            .label("rank")
        )
        recent = (
            sa.select(results_table.c.item_id, results_table.c.duration_s, rank)
            .where(results_table.c.item_id.in_(wanted), results_table.c.duration_s.is_not(None))
            .subquery()
        )
        query = sa.select(recent.c.item_id, recent.c.duration_s).where(recent.c.rank <= last)
        with self._engine.connect() as connection:
            rows = connection.execute(query).all()
        found: dict[str, list[float]] = {}
        for item_id, duration in rows:
            found.setdefault(item_id, []).append(float(duration))
        return {item: statistics.median(values) for item, values in found.items()}

    def shard_plan(
        self,
        group: str,
        shards: int,
        items_digest: str,
        make: Callable[[], dict[str, int]],
    ) -> tuple[dict[str, int], bool]:
        """The plan of a sharded suite: item id -> shard index, and whether this call made it.

        The first runner of ``group`` to get here stores what ``make`` returns; the others
        read that, so a plan never changes under a group even as new durations arrive.
        """
        key = (
            shard_plans_table.c.group_id == group,
            shard_plans_table.c.shards == shards,
            shard_plans_table.c.items_digest == items_digest,
        )
        select = sa.select(shard_plans_table.c.plan).where(*key)
        with self._engine.connect() as connection:
            stored = connection.execute(select).scalar_one_or_none()
        if stored is not None:
            return dict(stored), False
        plan = make()
        try:
            with self._engine.begin() as connection:
                connection.execute(
                    sa.insert(shard_plans_table).values(
                        group_id=group,
                        shards=shards,
                        items_digest=items_digest,
                        plan=plan,
                        created_at=_now(),
                    )
                )
        except sa_exc.IntegrityError:
            with self._engine.connect() as connection:
                return dict(connection.execute(select).scalar_one()), False
        return plan, True

    def model_results(self, model: str, *, limit: int = 5000) -> list[SystemPoint]:
        """A model's timed results from every run, newest first, with the host of each run.

        The across-systems view keeps, per system, the newest of each configuration; reading
        the summaries only (no raw samples) keeps that cheap on a large shared database.
        """
        rows = self._timed_rows(
            [results_table.c.model == model],
            [
                results_table.c.model,
                results_table.c.framework,
                results_table.c.device,
                results_table.c.batch_size,
                results_table.c.scenario,
                results_table.c.stack,
                results_table.c.framework_version,
                results_table.c.predictor,
                runs_table.c.hostname,
                runs_table.c.host,
            ],
            limit,
        )
        points = []
        for row in rows:
            details = (row["predictor"] or {}).get("details") or {}
            points.append(
                SystemPoint(
                    run_id=row["run_id"],
                    started_at=_aware(row["started_at"]),  # type: ignore[arg-type]
                    hostname=row["hostname"],
                    host=dict(row["host"] or {}),
                    cell=_cell(row),
                    summary=Summary.model_validate(row["summary"]),
                    framework_version=row["framework_version"],
                    container=(details.get("container") or {}).get("image"),
                )
            )
        return points

    # -- copying between databases ---------------------------------------------------------------

    def has_run(self, run_id: str) -> bool:
        query = sa.select(runs_table.c.id).where(runs_table.c.id == run_id)
        with self._engine.connect() as connection:
            return connection.execute(query).first() is not None

    def export_run(self, run_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """A run's row and its results' rows, as stored (ids of results left out)."""
        with self._engine.connect() as connection:
            run = (
                connection.execute(sa.select(runs_table).where(runs_table.c.id == run_id))
                .mappings()
                .first()
            )
            if run is None:
                raise StoreError(f"no run {run_id} in {self.url}")
            rows = (
                connection.execute(
                    sa.select(results_table)
                    .where(results_table.c.run_id == run_id)
                    .order_by(results_table.c.id)
                )
                .mappings()
                .all()
            )

        # SQLite hands datetimes back naive (they were written in UTC); say so, or PostgreSQL
        # would read them in its session's time zone.
        def plain(row: sa.RowMapping, drop: tuple[str, ...] = ()) -> dict[str, Any]:
            return {
                key: _aware(value) if isinstance(value, datetime) else value
                for key, value in row.items()
                if key not in drop
            }

        return plain(run), [plain(row, ("id",)) for row in rows]

    def import_run(self, run: dict[str, Any], results: Sequence[dict[str, Any]]) -> bool:
        """Add a run exported from another database, in one transaction; False (and nothing
        written) when a run with its id is here already. Run ids are UUIDs, so a run copied
        twice is recognised, and copying again adds only what is new."""
        return bool(self.import_runs([(run, results)]))

    def import_runs(
        self,
        exported: Iterable[tuple[dict[str, Any], Sequence[dict[str, Any]]]],
        *,
        runs_per_transaction: int = 100,
    ) -> list[str]:
        """Add exported runs in bulk, the ids of those added in order; runs already here are
        passed over. Each transaction holds whole runs with all their results, so an interrupted
        import leaves no half run; committing many at once is what makes bulk ingest fast (a
        commit per run cost as much as the rows)."""
        added: list[str] = []
        batch: list[tuple[dict[str, Any], Sequence[dict[str, Any]]]] = []
        for pair in exported:
            batch.append(pair)
            if len(batch) >= runs_per_transaction:
                added += self._import_batch(batch)
                batch = []
        if batch:
            added += self._import_batch(batch)
        return added

    def _import_batch(
        self, batch: list[tuple[dict[str, Any], Sequence[dict[str, Any]]]]
    ) -> list[str]:
        ids = [run["id"] for run, _rows in batch]
        try:
            with self._engine.begin() as connection:
                present = set(
                    connection.execute(
                        sa.select(runs_table.c.id).where(runs_table.c.id.in_(ids))
                    ).scalars()
                )
                fresh = []
                for run, rows in batch:
                    # One id twice in a batch: the first counts, as if imported one by one.
                    if run["id"] not in present:
                        present.add(run["id"])
                        fresh.append((run, rows))
                if not fresh:
                    return []
                connection.execute(sa.insert(runs_table), [run for run, _rows in fresh])
                results = [row for _run, rows in fresh for row in rows]
                if results:
                    connection.execute(sa.insert(results_table), results)
        except sa_exc.IntegrityError:
            if len(batch) == 1:
                if self.has_run(ids[0]):  # another copy got there first
                    return []
                raise
            # Another copy raced us on some of these runs: go one run at a time.
            return [run_id for pair in batch for run_id in self._import_batch([pair])]
        return [run["id"] for run, _rows in fresh]

    # -- baselines -------------------------------------------------------------------------------

    def set_baseline(
        self,
        name: str,
        run_id_or_prefix: str,
        *,
        force: bool = False,
        note: str | None = None,
        artifacts: Sequence[ArtifactEntry] | None = None,
    ) -> BaselineRecord:
        """Point baseline ``name`` at a run (an id or a unique prefix of one).

        Refused without ``force`` when the name already points to another run, or when the run
        is not 'complete'. Pointing a baseline at the run it already points to changes nothing
        (except the note, when a different one is given). With ``force`` a moved baseline takes
        the given note, or none.

        ``artifacts`` are the model files the run measured: each is stored (once, whoever else
        keeps it) and becomes what the baseline keeps, in place of what it kept before. Without
        them a baseline keeps its artifacts while it points to the same run, and drops them when
        it moves (they were another run's). Artifacts no baseline keeps any more are freed.
        """
        _check_baseline_name(name)
        run = self.get_run(run_id_or_prefix)
        entries = _unique_entries(artifacts) if artifacts is not None else None
        if entries:
            # Refuse before storing what may be gigabytes of models for nothing.
            with self._engine.connect() as connection:
                _check_move(self._baseline(connection, name), run, force=force)
        stored: set[str] = set()
        try:
            for _attempt in range(ARTIFACT_ATTEMPTS):
                for entry in entries or ():
                    if self.put_artifact(entry.path, sha256=entry.sha256, format=entry.format):
                        stored.add(entry.sha256)
                try:
                    baseline, released = self._point_baseline(
                        name, run, force=force, note=note, entries=entries
                    )
                except _ReferencesRaced:
                    continue
                self._free_artifacts(released)
                return baseline
            raise StoreError(
                f"cannot set baseline {name!r} in {self.url}: other sessions changed its "
                f"artifacts {ARTIFACT_ATTEMPTS} times while it was being set; retry"
            )
        except Exception:
            # Stored for this baseline, which did not take them; the error is what counts.
            with contextlib.suppress(sa_exc.SQLAlchemyError):
                self._free_artifacts(stored)
            raise

    def _point_baseline(
        self,
        name: str,
        run: RunRecord,
        *,
        force: bool,
        note: str | None,
        entries: list[ArtifactEntry] | None,
    ) -> tuple[BaselineRecord, set[str]]:
        """Set the baseline row and its artifact references in one transaction; the baseline
        as stored, and the blobs it stopped referencing."""
        try:
            # One transaction: the name's primary key makes a concurrent insert of the same
            # name fail here rather than silently overwrite, and the update only applies if the
            # baseline still points where it did when read.
            with self._engine.begin() as connection:
                existing = self._baseline(connection, name)
                same_run = existing is not None and existing.run_id == run.id
                now = _now()
                if existing is not None and same_run and note in (None, existing.note):
                    if entries is None:
                        return existing, set()
                elif existing is None:
                    _check_move(existing, run, force=force)
                    connection.execute(
                        sa.insert(baselines_table).values(
                            name=name, run_id=run.id, created_at=now, updated_at=now, note=note
                        )
                    )
                else:
                    _check_move(existing, run, force=force)
                    updated = connection.execute(
                        sa.update(baselines_table)
                        .where(
                            baselines_table.c.name == name,
                            baselines_table.c.run_id == existing.run_id,
                        )
                        .values(run_id=run.id, updated_at=now, note=note)
                    )
                    if updated.rowcount != 1:
                        raise StoreError(
                            f"baseline {name!r} was changed by someone else while being set; "
                            f"look at it again (mlscope baseline show {name}) and retry"
                        )
                released: set[str] = set()
                if entries is not None or not same_run:
                    try:
                        released = self._refer(connection, name, entries or [])
                    except sa_exc.IntegrityError:
                        raise _ReferencesRaced from None
                stored = self._baseline(connection, name)
        except sa_exc.IntegrityError:
            # Another process created the name between our read and our insert.
            with self._engine.connect() as connection:
                existing = self._baseline(connection, name)
            if existing is None:
                raise StoreError(f"cannot set baseline {name!r} in {self.url}") from None
            if existing.run_id == run.id:
                if entries is not None:
                    raise _ReferencesRaced from None  # set again, now with the artifacts
                return existing, set()
            raise StoreError(_already_set(existing)) from None
        except sa_exc.OperationalError as exc:
            reason = getattr(exc, "orig", None) or exc
            raise StoreError(f"cannot set baseline {name!r} in {self.url}: {reason}") from None
        assert stored is not None
        return stored, released

    @staticmethod
    def _refer(connection: sa.Connection, name: str, entries: list[ArtifactEntry]) -> set[str]:
        """Make ``entries`` what baseline ``name`` keeps; the blobs it no longer references."""
        references = baseline_artifacts_table.c
        before = set(
            connection.execute(sa.select(references.sha256).where(references.baseline == name))
            .scalars()
            .all()
        )
        connection.execute(sa.delete(baseline_artifacts_table).where(references.baseline == name))
        if entries:
            connection.execute(
                sa.insert(baseline_artifacts_table),
                [
                    {
                        "baseline": name,
                        "sha256": entry.sha256,
                        "model": _text(entry.model, 255),
                        "framework": _text(entry.framework, 255),
                        "format": entry.format,
                    }
                    for entry in entries
                ],
            )
        return before - {entry.sha256 for entry in entries}

    def baselines(self) -> list[BaselineRecord]:
        """Every baseline, sorted by name."""
        query = sa.select(baselines_table).order_by(baselines_table.c.name)
        with self._engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [_baseline_record(row) for row in rows]

    def get_baseline(self, name: str) -> BaselineRecord:
        """The baseline called ``name``; refused, naming the known ones, when there is none."""
        with self._engine.connect() as connection:
            found = self._baseline(connection, name)
        if found is None:
            raise self._no_baseline(name)
        return found

    def baseline_artifacts(self, name: str) -> list[BaselineArtifact]:
        """The artifacts baseline ``name`` keeps, by model and framework; refused, naming the
        known baselines, when there is none by that name."""
        blobs, references = artifact_blobs_table.c, baseline_artifacts_table.c
        query = (
            sa.select(
                references.sha256,
                references.model,
                references.framework,
                references.format,
                blobs.filename,
                blobs.size,
                blobs.stored_size,
            )
            .join(artifact_blobs_table, blobs.sha256 == references.sha256)
            .where(references.baseline == name)
            .order_by(references.model, references.framework, references.sha256)
        )
        with self._engine.connect() as connection:
            if self._baseline(connection, name) is None:
                raise self._no_baseline(name)
            rows = connection.execute(query).mappings().all()
        return [BaselineArtifact(**row) for row in rows]

    def delete_baseline(self, name: str) -> int:
        """Forget a baseline (its run stays) and free the artifacts no other baseline keeps;
        the bytes freed, as they were stored. Refused when there is no baseline by that name."""
        references = baseline_artifacts_table.c
        with self._engine.begin() as connection:
            kept = set(
                connection.execute(
                    sa.select(references.sha256).where(references.baseline == name)
                ).scalars()
            )
            connection.execute(
                sa.delete(baseline_artifacts_table).where(references.baseline == name)
            )
            deleted = connection.execute(
                sa.delete(baselines_table).where(baselines_table.c.name == name)
            )
        if deleted.rowcount == 0:
            raise self._no_baseline(name)
        return self._free_artifacts(kept)

    @staticmethod
    def _baseline(connection: sa.Connection, name: str) -> BaselineRecord | None:
        row = (
            connection.execute(sa.select(baselines_table).where(baselines_table.c.name == name))
            .mappings()
            .one_or_none()
        )
        return _baseline_record(row) if row is not None else None

    def _no_baseline(self, name: str) -> StoreError:
        known = [baseline.name for baseline in self.baselines()]
        listed = f"known: {', '.join(known)}" if known else "none set yet"
        return StoreError(f"no baseline named {name!r} ({listed})")

    # -- artifacts -------------------------------------------------------------------------------

    def put_artifact(
        self,
        path: str | os.PathLike[str],
        *,
        sha256: str,
        format: str,
        filename: str | None = None,
    ) -> bool:
        """Store a model file under its checksum; False (nothing written) when it is stored
        already, by this session or another one at the same moment.

        The file is read once, a chunk at a time, and hashed as it is read: one that no longer
        has ``sha256`` is refused with :class:`ArtifactError` and nothing is kept. The blob and
        all its chunks are one transaction, so a killed session leaves no half of one.
        ``filename`` (default: the file's name) is what a fetched copy is called.
        """
        _check_sha256(sha256)
        source = Path(path)
        name = _safe_filename(filename or source.name)
        if self.has_artifact(sha256):
            return False
        try:
            handle = open(source, "rb")  # noqa: SIM115 - closed below, with the transaction
        except OSError as exc:
            raise ArtifactError(
                f"cannot store artifact {source} (sha256 {sha256}): {exc.strerror or exc}"
            ) from None
        blobs = artifact_blobs_table.c
        try:
            with handle, self._engine.begin() as connection:
                # The blob's row first: a second session storing the same file waits here, on the
                # primary key, and then finds it taken, instead of writing its chunks twice.
                connection.execute(
                    sa.insert(artifact_blobs_table).values(
                        sha256=sha256,
                        size=0,
                        stored_size=0,
                        chunks=0,
                        format=format,
                        filename=name,
                        created_at=_now(),
                    )
                )
                digest = hashlib.sha256()
                size = stored_size = count = 0
                while chunk := handle.read(ARTIFACT_CHUNK_SIZE):
                    digest.update(chunk)
                    data = zlib.compress(chunk, ARTIFACT_COMPRESSION_LEVEL)
                    connection.execute(
                        sa.insert(artifact_chunks_table).values(sha256=sha256, seq=count, data=data)
                    )
                    size += len(chunk)
                    stored_size += len(data)
                    count += 1
                if digest.hexdigest() != sha256:
                    raise ArtifactError(
                        f"artifact {source} has sha256 {digest.hexdigest()}, expected {sha256}; "
                        f"the file changed after its checksum was recorded, so it is not stored"
                    )
                connection.execute(
                    sa.update(artifact_blobs_table)
                    .where(blobs.sha256 == sha256)
                    .values(size=size, stored_size=stored_size, chunks=count)
                )
        except sa_exc.IntegrityError:
            if self.has_artifact(sha256):  # another session stored it first
                return False
            raise StoreError(f"cannot store artifact {sha256} in {self.url}") from None
        except OSError as exc:
            raise ArtifactError(
                f"cannot store artifact {source} (sha256 {sha256}): {exc.strerror or exc}"
            ) from None
        except sa_exc.OperationalError as exc:
            reason = getattr(exc, "orig", None) or exc
            raise StoreError(f"cannot store artifact {sha256} in {self.url}: {reason}") from None
        return True

    def has_artifact(self, sha256: str) -> bool:
        """Whether the file with this checksum is stored (whole: a blob is written at once)."""
        return self.artifact(sha256) is not None

    def artifact(self, sha256: str) -> StoredArtifact | None:
        """The stored file with this checksum, or None."""
        query = sa.select(artifact_blobs_table).where(artifact_blobs_table.c.sha256 == sha256)
        with self._engine.connect() as connection:
            row = connection.execute(query).mappings().one_or_none()
        if row is None:
            return None
        created_at = _aware(row["created_at"])
        assert created_at is not None
        return StoredArtifact(
            sha256=row["sha256"],
            format=row["format"],
            filename=row["filename"],
            size=row["size"],
            stored_size=row["stored_size"],
            chunks=row["chunks"],
            created_at=created_at,
        )

    def fetch_artifact(self, sha256: str, directory: str | os.PathLike[str]) -> Path:
        """The stored file, written to ``directory/<sha256>/<its filename>``; its path.

        A copy already there with the right checksum is used as it is. Chunks are written to a
        temporary file, one at a time, and renamed into place only once the whole file has the
        checksum, so a reader never sees a partial or corrupt model. Refused when the database
        does not hold the file, or holds it damaged.
        """
        from pytest_mlscope.zoo.cache import sha256_file

        _check_sha256(sha256)
        stored = self.artifact(sha256)
        if stored is None:
            raise StoreError(f"artifact {sha256} is not stored in {self.url}")
        target = Path(directory) / sha256 / _safe_filename(stored.filename)
        if target.is_file() and sha256_file(target) == sha256:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".part", dir=target.parent
        )
        partial = Path(temporary)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                problem = self._write_chunks(stored, handle)
            if problem is not None:
                if not self.has_artifact(sha256):
                    problem = "it was freed while being fetched"
                raise StoreError(f"artifact {sha256} in {self.url} is corrupt: {problem}")
            partial.chmod(0o644)  # mkstemp makes it private; workers in containers read it
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return target

    def _write_chunks(self, stored: StoredArtifact, handle: Any) -> str | None:
        """Write a blob's chunks, decompressed, to ``handle``; what is wrong with them, or None."""
        chunks = artifact_chunks_table.c
        query = (
            sa.select(chunks.seq, chunks.data)
            .where(chunks.sha256 == stored.sha256)
            .order_by(chunks.seq)
            # One chunk at a time from the server, not the whole file in the driver's buffer.
            .execution_options(yield_per=1)
        )
        digest = hashlib.sha256()
        size = count = 0
        with self._engine.connect() as connection:
            for seq, data in connection.execute(query):
                if seq != count:
                    return f"chunk {count} of {stored.chunks} is missing"
                try:
                    raw = zlib.decompress(data)
                except zlib.error as exc:
                    return f"chunk {seq} of {stored.chunks} does not decompress ({exc})"
                digest.update(raw)
                handle.write(raw)
                size += len(raw)
                count += 1
        if count != stored.chunks:
            return f"{count} of its {stored.chunks} chunks are stored"
        if size != stored.size:
            return f"its chunks hold {size} bytes, expected {stored.size}"
        if digest.hexdigest() != stored.sha256:
            return f"its chunks read back with sha256 {digest.hexdigest()}"
        return None

    def free_artifacts(self) -> int:
        """Free every stored artifact no baseline keeps (left by an interrupted session, say);
        the bytes freed, as they were stored."""
        blobs, references = artifact_blobs_table.c, baseline_artifacts_table.c
        unreferenced = sa.select(blobs.sha256).where(
            ~sa.exists().where(references.sha256 == blobs.sha256)
        )
        with self._engine.connect() as connection:
            candidates = set(connection.execute(unreferenced).scalars())
        return self._free_artifacts(candidates)

    def _free_artifacts(self, candidates: Iterable[str]) -> int:
        """Delete those of ``candidates`` that no baseline references; the bytes freed.

        One transaction per blob, each deleting only while nothing references it: a blob that
        another session references meanwhile stays (its reference then holds the row, and the
        delete fails on the foreign key, undoing the chunks' delete with it).
        """
        blobs, chunks = artifact_blobs_table.c, artifact_chunks_table.c
        freed = 0
        for sha256 in sorted(set(candidates)):
            unreferenced = ~sa.exists().where(baseline_artifacts_table.c.sha256 == sha256)
            try:
                with self._engine.begin() as connection:
                    # A write first, so SQLite takes its lock before reading what to delete.
                    connection.execute(
                        sa.delete(artifact_chunks_table).where(
                            chunks.sha256 == sha256, unreferenced
                        )
                    )
                    stored_size = connection.execute(
                        sa.select(blobs.stored_size).where(blobs.sha256 == sha256, unreferenced)
                    ).scalar_one_or_none()
                    if stored_size is None:
                        continue  # gone already, or referenced: nothing was deleted
                    connection.execute(
                        sa.delete(artifact_blobs_table).where(blobs.sha256 == sha256)
                    )
                freed += int(stored_size)
            except sa_exc.IntegrityError:
                continue  # referenced meanwhile: kept, chunks and all
        return freed

    def close(self) -> None:
        """Release pooled connections (and with them SQLite's file handles)."""
        self._engine.dispose()

    @staticmethod
    def _counts(connection: sa.Connection, run_ids: list[str]) -> dict[str, dict[str, int]]:
        if not run_ids:
            return {}
        query = (
            sa.select(results_table.c.run_id, results_table.c.outcome, sa.func.count())
            .where(results_table.c.run_id.in_(run_ids))
            .group_by(results_table.c.run_id, results_table.c.outcome)
        )
        counts: dict[str, dict[str, int]] = {}
        for run_id, outcome, count in connection.execute(query):
            counts.setdefault(run_id, {})[outcome] = count
        # Outcomes in their usual reading order, whatever order the database returned them in.
        order = {outcome: i for i, outcome in enumerate(OUTCOMES)}
        return {
            run_id: dict(sorted(by_outcome.items(), key=lambda kv: order.get(kv[0], len(order))))
            for run_id, by_outcome in counts.items()
        }


def _run_record(row: sa.RowMapping, counts: dict[str, int]) -> RunRecord:
    started_at = _aware(row["started_at"])
    assert started_at is not None
    return RunRecord(
        id=row["id"],
        started_at=started_at,
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
    )


def _result_record(row: sa.RowMapping) -> ResultRecord:
    paired = dict(row.get("paired") or {})
    recorded_at = _aware(row["recorded_at"])
    assert recorded_at is not None
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
        recorded_at=recorded_at,
        layers=[LayerRow.model_validate(r) for r in row.get("layers") or []],
        trace=TraceInfo.model_validate(row["trace"]) if row.get("trace") is not None else None,
        telemetry=dict(row.get("telemetry") or {}),
        duration_s=row.get("duration_s"),
        instructions=[float(x) for x in row.get("instructions") or []],
        paired_samples_ns=[int(sample) for sample in row.get("paired_samples_ns") or []],
        paired_rounds=[int(size) for size in paired.get("rounds") or []],
        paired_artifact_sha256=paired.get("artifact_sha256"),
        paired_predictor=(
            PredictorInfo.model_validate(paired["predictor"]) if paired.get("predictor") else None
        ),
    )


def _baseline_record(row: sa.RowMapping) -> BaselineRecord:
    created_at = _aware(row["created_at"])
    updated_at = _aware(row["updated_at"])
    assert created_at is not None and updated_at is not None
    return BaselineRecord(
        name=row["name"],
        run_id=row["run_id"],
        created_at=created_at,
        updated_at=updated_at,
        note=row["note"],
    )


def _check_baseline_name(name: str) -> None:
    if not BASELINE_NAME.fullmatch(name):
        raise StoreError(
            f"baseline name {name!r} is not valid: use 1 to 100 letters, digits, "
            f"'.', '_', '-' or '/' (like main, release-1.2, feature/x)"
        )


def _check_move(existing: BaselineRecord | None, run: RunRecord, *, force: bool) -> None:
    """Refuse, unless forced, to use a run that is not complete or to move a name that points
    to another run; pointing a baseline at its own run again needs nothing."""
    if force or (existing is not None and existing.run_id == run.id):
        return
    if run.status != "complete":
        raise StoreError(
            f"run {run.id[:12]} is {run.status}, not complete; only a complete run "
            f"can become a baseline (pass --force to use it anyway)"
        )
    if existing is not None:
        raise StoreError(_already_set(existing))


def _check_sha256(sha256: str) -> None:
    if not SHA256.fullmatch(sha256):
        raise StoreError(
            f"expected an artifact's sha256 as 64 lowercase hex digits, got {sha256!r}"
        )


def _unique_entries(artifacts: Sequence[ArtifactEntry]) -> list[ArtifactEntry]:
    """The entries once each per (file, model, framework): several cells of one model and
    framework (batch sizes, devices) measured the same file."""
    unique: dict[tuple[str, str, str], ArtifactEntry] = {}
    for entry in artifacts:
        _check_sha256(entry.sha256)
        unique.setdefault((entry.sha256, entry.model, entry.framework), entry)
    return list(unique.values())


def _safe_filename(name: str) -> str:
    """The name a fetched artifact is written under: the last part of the stored one only, so a
    name stored by someone else (``../../.bashrc``) cannot place it outside the fetch directory."""
    base = Path(name.replace("\\", "/").replace("\x00", "")).name
    return base[:255] if base not in ("", ".", "..") else "artifact"


def _already_set(existing: BaselineRecord) -> str:
    moment = existing.updated_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return (
        f"baseline {existing.name!r} already points to run {existing.run_id[:12]} "
        f"(set {moment}); pass --force to move it"
    )


# -- git -----------------------------------------------------------------------------------------


def _git(path: str | os.PathLike[str], *args: str) -> str | None:
    """Output of one git command, or None when it fails for any reason."""
    # GIT_OPTIONAL_LOCKS=0: `git status` must not take the index lock while the user works.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        completed = subprocess.run(
            ["git", "-C", os.fspath(path), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            env=env,
            check=False,
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    if completed.returncode != 0:
        return None
    return completed.stdout.strip()


def git_info(path: str | os.PathLike[str]) -> GitInfo | None:
    """Commit, branch and dirtiness of the checkout at ``path``; None outside a git checkout.

    Never raises: a missing or broken git must not stop a test session from recording results.
    """
    if _git(path, "rev-parse", "--is-inside-work-tree") != "true":
        return None
    commit = _git(path, "rev-parse", "--verify", "-q", "HEAD") or None
    # symbolic-ref rather than `rev-parse --abbrev-ref`: it names the branch of a repository
    # with no commit yet, and fails (None) on a detached HEAD instead of answering "HEAD".
    branch = _git(path, "symbolic-ref", "--short", "-q", "HEAD") or None
    # Untracked files are left out: the results database and other outputs a session writes
    # would otherwise mark every run dirty.
    status = _git(path, "status", "--porcelain", "--untracked-files=no")
    return GitInfo(commit=commit, branch=branch, dirty=None if status is None else bool(status))

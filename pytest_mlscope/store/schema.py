"""The database's tables, their portable column types and the migrations between schema versions:
everything about the database's shape, and nothing about what is read or written through it."""

from __future__ import annotations

import json
import sys
from array import array
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

SCHEMA_VERSION = 11
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
    7: [
        # A blob whose bytes live in a directory (--mlscope-artifact-store) instead of chunks.
        lambda connection: _add_missing_column(
            connection, "artifact_blobs", "location", "VARCHAR(1024)"
        ),
    ],
    8: [
        # The model's memory in its worker (protocol.MemoryUse), gated beside its latency.
        lambda connection: _add_missing_column(connection, "results", "memory", "{json}"),
    ],
    9: [
        # Tokens per sample of a text model's item (Cell.sequence_length); NULL for the others.
        lambda connection: _add_missing_column(connection, "results", "sequence_length", "INTEGER"),
    ],
    10: [
        # A generate item's per-token figures (protocol.GenerationSummary); NULL for the others.
        lambda connection: _add_missing_column(connection, "results", "generation", "{json}"),
    ],
}

RUN_STATUSES = ("running", "complete", "incomplete")
OUTCOMES = ("passed", "failed", "error", "skipped")


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
    # Tokens per sample, for a model whose input is tokenized text (schema 10).
    sa.Column("sequence_length", sa.Integer, nullable=True),
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
    sa.Column("memory", _NullableJSON, nullable=True),
    sa.Column("generation", _NullableJSON, nullable=True),
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
# ``location`` (schema 8): the artifact directory that holds the file instead of chunks (a model
# too large for the database), written there before the row; NULL for chunks.
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
    sa.Column("location", sa.String(1024), nullable=True),
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

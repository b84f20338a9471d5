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

The package's modules each keep one part (``schema``, ``records``, the :class:`Store` mixins
``runs``, ``history``, ``baselines``, ``artifacts``, ``transfer``, composed in ``core``); every name
is imported from here, as it was from the single module this package replaced.
"""

from __future__ import annotations

from pytest_mlscope.ownership import session_owner
from pytest_mlscope.provenance import GIT_TIMEOUT_S, GitInfo, git_info
from pytest_mlscope.store.artifacts import (
    ARTIFACT_CHUNK_SIZE,
    ARTIFACT_COMPRESSION_LEVEL,
    SHA256,
)
from pytest_mlscope.store.base import StoreError
from pytest_mlscope.store.baselines import ARTIFACT_ATTEMPTS, BASELINE_NAME
from pytest_mlscope.store.core import SQLITE_BUSY_TIMEOUT_MS, Store, default_location
from pytest_mlscope.store.records import (
    INJECTED_TAG,
    ArtifactEntry,
    BaselineArtifact,
    BaselineRecord,
    ComparablePoint,
    HistoryPoint,
    ResultRecord,
    RunRecord,
    StoredArtifact,
    SystemPoint,
)
from pytest_mlscope.store.schema import (
    MIGRATIONS,
    OUTCOMES,
    RUN_STATUSES,
    SCHEMA_VERSION,
    Int64Array,
    artifact_blobs_table,
    artifact_chunks_table,
    baseline_artifacts_table,
    baselines_table,
    metadata,
    results_table,
    runs_table,
    schema_version_table,
    shard_plans_table,
)

__all__ = [
    "ARTIFACT_ATTEMPTS",
    "ARTIFACT_CHUNK_SIZE",
    "ARTIFACT_COMPRESSION_LEVEL",
    "BASELINE_NAME",
    "GIT_TIMEOUT_S",
    "INJECTED_TAG",
    "MIGRATIONS",
    "OUTCOMES",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "SHA256",
    "SQLITE_BUSY_TIMEOUT_MS",
    "ArtifactEntry",
    "BaselineArtifact",
    "BaselineRecord",
    "ComparablePoint",
    "GitInfo",
    "HistoryPoint",
    "Int64Array",
    "ResultRecord",
    "RunRecord",
    "Store",
    "StoreError",
    "StoredArtifact",
    "SystemPoint",
    "artifact_blobs_table",
    "artifact_chunks_table",
    "baseline_artifacts_table",
    "baselines_table",
    "default_location",
    "git_info",
    "metadata",
    "results_table",
    "runs_table",
    "schema_version_table",
    "session_owner",
    "shard_plans_table",
]

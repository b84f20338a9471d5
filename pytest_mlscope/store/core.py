"""Opening a results database: the engine and its SQLite settings, the schema created, checked or
migrated, and :class:`Store` composed from the mixins that each keep one concern."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from pytest_mlscope.store.artifacts import ArtifactsMixin
from pytest_mlscope.store.base import StoreError
from pytest_mlscope.store.baselines import BaselinesMixin
from pytest_mlscope.store.history import HistoryMixin
from pytest_mlscope.store.runs import RunsMixin
from pytest_mlscope.store.schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    _tune_chunk_storage,
    _tune_samples_storage,
    metadata,
    schema_version_table,
)
from pytest_mlscope.store.transfer import TransferMixin
from pytest_mlscope.store.values import _json_dumps

# Long enough to ride out another pytest process (xdist worker, parallel CI job) committing.
SQLITE_BUSY_TIMEOUT_MS = 30_000
# How long a session that lost the race to create the schema waits for the winner's version row.
SCHEMA_RACE_S = 10.0


def default_location() -> str:
    """``$MLSCOPE_DB`` when set, else ``.mlscope/results.db`` under the current directory.

    Made absolute here so a location stays the same file whatever directory it is used from.
    """
    configured = os.environ.get("MLSCOPE_DB", "").strip()
    if configured:
        return configured
    return str(Path.cwd() / ".mlscope" / "results.db")


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


class Store(RunsMixin, HistoryMixin, TransferMixin, BaselinesMixin, ArtifactsMixin):
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
            version = self._version_of_another(SCHEMA_RACE_S)
            if version is None:
                raise
            self._check_version(version)

    def _version_of_another(self, seconds: float) -> int | None:
        """The version another process writes as it creates the schema: SQLite commits each
        CREATE TABLE as it goes, so its tables can be there a moment before its version row.
        None at once when there is no version table at all."""
        deadline = time.monotonic() + seconds
        while True:
            with self._engine.connect() as connection:
                if not sa.inspect(connection).has_table(schema_version_table.name):
                    return None
                version = self._stored_version(connection)
            if version is not None or time.monotonic() > deadline:
                return version
            time.sleep(0.05)

    def close(self) -> None:
        """Release pooled connections (and with them SQLite's file handles)."""
        self._engine.dispose()

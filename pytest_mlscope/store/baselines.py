"""Named baselines: a name pointing to the run later runs are compared against, and which stored
model files it keeps; setting, moving and deleting them safely while other sessions do too."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from pytest_mlscope.store.artifacts import ArtifactsMixin, _check_sha256
from pytest_mlscope.store.base import StoreError
from pytest_mlscope.store.records import (
    ArtifactEntry,
    BaselineArtifact,
    BaselineRecord,
    RunRecord,
    _baseline_record,
)
from pytest_mlscope.store.schema import (
    artifact_blobs_table,
    baseline_artifacts_table,
    baselines_table,
)
from pytest_mlscope.store.values import _now, _text

# Branch-like names: release-1.2, feature/x, nightly_cpu.
BASELINE_NAME = re.compile(r"[A-Za-z0-9._/-]{1,100}")
# Setting a baseline retries when another session freed or re-referenced its artifacts meanwhile.
ARTIFACT_ATTEMPTS = 3


class _ReferencesRaced(Exception):
    """Another session freed a blob, or referenced it for the same baseline, while this one was
    writing a baseline's references: the transaction is rolled back and set again."""


class BaselinesMixin(ArtifactsMixin):
    """Setting, reading and deleting named baselines and the artifacts they keep (stored and
    freed through the artifacts' own methods)."""

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
                blobs.location,
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


def _unique_entries(artifacts: Sequence[ArtifactEntry]) -> list[ArtifactEntry]:
    """The entries once each per (file, model, framework): several cells of one model and
    framework (batch sizes, devices) measured the same file."""
    unique: dict[tuple[str, str, str], ArtifactEntry] = {}
    for entry in artifacts:
        _check_sha256(entry.sha256)
        unique.setdefault((entry.sha256, entry.model, entry.framework), entry)
    return list(unique.values())


def _already_set(existing: BaselineRecord) -> str:
    moment = existing.updated_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return (
        f"baseline {existing.name!r} already points to run {existing.run_id[:12]} "
        f"(set {moment}); pass --force to move it"
    )

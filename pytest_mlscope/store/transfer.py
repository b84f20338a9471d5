"""Copying runs between databases (``mlscope export``/``import``): a run's rows as stored, and
adding exported runs in bulk, each whole or not at all."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from pytest_mlscope.store.base import StoreError, _StoreBase
from pytest_mlscope.store.schema import results_table, runs_table
from pytest_mlscope.store.values import _aware


class TransferMixin(_StoreBase):
    """Exporting runs from one database and importing them into another."""

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

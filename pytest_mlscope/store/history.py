"""Queries across runs: an item's history and comparable medians, wall times and the shard plans
balanced on them, and a model's results on every system."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from pytest_mlscope.protocol import PredictorInfo, Summary
from pytest_mlscope.store.base import _StoreBase
from pytest_mlscope.store.records import (
    INJECTED_TAG,
    ComparablePoint,
    HistoryPoint,
    SystemPoint,
    _cell,
)
from pytest_mlscope.store.schema import results_table, runs_table, shard_plans_table
from pytest_mlscope.store.values import _now, _stamp


class HistoryMixin(_StoreBase):
    """Reading results across runs: histories, durations, shard plans, systems."""

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
                started_at=_stamp(row["started_at"]),
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
        columns = [results_table.c.instructions, results_table.c.predictor, runs_table.c.host]
        query = self._timed_query(where, columns)  # no limit: filtered before the newest are kept
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

    @staticmethod
    def _timed_query(where: list[Any], columns: list[Any]) -> sa.Select[Any]:
        """Timed results joined with their runs, newest first."""
        return (
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
        )

    def _timed_rows(self, where: list[Any], columns: list[Any], limit: int) -> list[sa.RowMapping]:
        """Timed results joined with their runs, newest first: the ``limit`` newest that match,
        less those without a median and those of runs with an injected slowdown (gate
        self-tests, not the model's history)."""
        query = self._timed_query(where, columns).limit(limit)
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
                results_table.c.sequence_length,
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
                    started_at=_stamp(row["started_at"]),
                    hostname=row["hostname"],
                    host=dict(row["host"] or {}),
                    cell=_cell(row),
                    summary=Summary.model_validate(row["summary"]),
                    framework_version=row["framework_version"],
                    container=(details.get("container") or {}).get("image"),
                )
            )
        return points

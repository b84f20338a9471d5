"""Runs and their results: starting and finishing a session's run, recording each item's
result as it ends, closing runs whose process died, and reading them back."""

from __future__ import annotations

import platform
import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from pytest_mlscope.ownership import _owner_alive, _owner_host, session_owner
from pytest_mlscope.protocol import Cell, EvaluationResult
from pytest_mlscope.provenance import GitInfo
from pytest_mlscope.store.base import StoreError, _StoreBase
from pytest_mlscope.store.records import ResultRecord, RunRecord, _result_record, _run_record
from pytest_mlscope.store.schema import OUTCOMES, RUN_STATUSES, results_table, runs_table
from pytest_mlscope.store.values import _now, _text


class RunsMixin(_StoreBase):
    """Writing runs and results, and reading them back by run."""

    # -- writing ---------------------------------------------------------------------------------

    def start_run(
        self,
        *,
        host: dict[str, Any],
        git: GitInfo | None = None,
        tags: dict[str, str] | None = None,
        pytest_args: list[str] | None = None,
        started_at: datetime | None = None,
    ) -> str:
        """Record a session as 'running' before any item runs, so a crash still leaves a trace.
        ``started_at``: when the session began, if the run is recorded later (with its first
        result); default now."""
        run_id = uuid.uuid4().hex
        with self._engine.begin() as connection:
            connection.execute(
                sa.insert(runs_table).values(
                    id=run_id,
                    owner=session_owner(),
                    cpu_model=str(host.get("cpu_model") or "")[:255] or None,
                    started_at=started_at or _now(),
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
            "sequence_length": cell.sequence_length,
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
            "memory": None,
            "generation": None,
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
                memory=result.memory.model_dump() if result.memory else None,
                generation=result.generation.model_dump() if result.generation else None,
                instructions=list(result.instructions) or None,
            )
            if result.paired_samples_ns:
                values.update(
                    paired_samples_ns=list(result.paired_samples_ns),
                    paired={
                        "rounds": list(result.paired_rounds),
                        "workers": [list(pair) for pair in result.paired_workers],
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

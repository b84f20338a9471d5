"""pytest-xdist: one run for the whole session, however many workers measure it.

The controller opens the run and hands its id to every worker, which records its items into it;
the controller closes it and writes the reports, once. Items are measured one at a time across
workers (a file lock), so parallel workers do not take each other's cores while they time: what
xdist still runs in parallel is collection, worker start-up and everything that is not timing.
Each item's record travels back to the controller on its test report, for the terminal summary.

Registered only when xdist is in use (its hooks do not exist otherwise).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_mlscope.errors import MlscopeError

if TYPE_CHECKING:
    from pytest_mlscope.session import MlscopeSession

RUN_KEY = "mlscope_run_id"
LOCK_KEY = "mlscope_timing_lock"
RECORD_ATTRIBUTE = "mlscope_record"  # a JSON string: xdist carries a report's plain attributes


def is_controller(config: pytest.Config) -> bool:
    return (
        not hasattr(config, "workerinput")
        and getattr(config.option, "dist", "no") != "no"
        and not config.getoption("collectonly")
    )


def worker_settings(config: pytest.Config) -> dict[str, Any]:
    """What a worker takes from its controller: the run to record into, the timing lock."""
    workerinput = getattr(config, "workerinput", None) or {}
    if RUN_KEY not in workerinput:
        return {}
    return {"shared_run": workerinput[RUN_KEY], "timing_lock": Path(workerinput[LOCK_KEY])}


class Controller:
    def __init__(self, session: MlscopeSession) -> None:
        self.session = session
        self.lock = session.settings.state_dir / "timing.lock"

    def pytest_configure_node(self, node: Any) -> None:
        self.lock.parent.mkdir(parents=True, exist_ok=True)
        node.workerinput[RUN_KEY] = self.session.run_id  # started in the store on first use
        node.workerinput[LOCK_KEY] = str(self.lock)
        self.session.xdist_workers += 1

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        text = getattr(report, RECORD_ATTRIBUTE, None)
        if not text:
            return
        data = json.loads(text)
        for entry in data["records"]:
            record = record_from_dict(entry)
            self.session.records.append(record)
            with contextlib.suppress(MlscopeError):  # the summary's reference marks need it
                self.session.manifest(record.cell.model)
        self.session.comparisons = max(self.session.comparisons, data["comparisons"])
        self.session.lock_waited_s += data["lock_waited_s"]


def records_to_json(session: MlscopeSession) -> str:
    """The records this worker made since it last sent any (one test's), with its counters."""
    fresh = session.records[session.records_sent :]
    session.records_sent = len(session.records)
    waited, session.lock_waited_s = session.lock_waited_s, 0.0
    return json.dumps(
        {
            "records": [
                {
                    "cell": record.cell.model_dump(mode="json"),
                    "item_id": record.item_id,
                    "outcome": record.outcome,
                    "result": record.result.model_dump_json() if record.result else None,
                    "message": record.message,
                    "verdict": dataclasses.asdict(record.verdict) if record.verdict else None,
                }
                for record in fresh
            ],
            "comparisons": session.comparisons,
            "lock_waited_s": waited,
        }
    )


def record_from_dict(data: dict[str, Any]) -> Any:
    from pytest_mlscope.compare import Verdict
    from pytest_mlscope.protocol import Cell, EvaluationResult
    from pytest_mlscope.session import Record

    return Record(
        cell=Cell.model_validate(data["cell"]),
        outcome=data["outcome"],
        result=EvaluationResult.model_validate_json(data["result"]) if data["result"] else None,
        message=data["message"],
        verdict=Verdict(**data["verdict"]) if data["verdict"] else None,
        item_id=data.get("item_id") or "",
    )

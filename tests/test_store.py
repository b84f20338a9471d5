"""The results database, on real SQLite files."""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import zlib
from pathlib import Path

import pytest
import sqlalchemy as sa
from _services import postgres_database

from pytest_mlscope import store as store_module
from pytest_mlscope.errors import ArtifactError
from pytest_mlscope.protocol import (
    AccuracyCheck,
    AccuracyReport,
    Cell,
    ColdStart,
    EvaluationResult,
    MemoryUse,
    PredictorInfo,
    Summary,
)
from pytest_mlscope.store import (
    SCHEMA_VERSION,
    ArtifactEntry,
    BaselineRecord,
    GitInfo,
    Store,
    StoreError,
    artifact_blobs_table,
    artifact_chunks_table,
    default_location,
    git_info,
)
from pytest_mlscope.zoo.cache import ArtifactCache
from pytest_mlscope.zoo.files import sha256_file, verify

HOST = {"hostname": "bench-01", "arch": "x86_64", "cpu_model": "Test CPU", "memory_gb": 31.2}
CELL = Cell(model="alexnet", framework="onnxruntime", batch_size=8)
SOURCE_ROOT = Path(__file__).resolve().parents[1]


def make_result(cell: Cell = CELL, samples_ns: list[int] | None = None) -> EvaluationResult:
    samples = samples_ns if samples_ns is not None else [1_200_000, 1_250_000, 1_300_000]
    return EvaluationResult(
        cell=cell,
        predictor=PredictorInfo(
            framework=cell.framework,
            version="1.17.3",
            device=cell.device,
            details={"providers": ["CPUExecutionProvider"], "threads": 4},
        ),
        artifact_sha256="ab" * 32,
        cold_start=ColdStart(load_s=0.25, first_inference_s=0.0125),
        accuracy=AccuracyReport(
            checks=[AccuracyCheck(name="top1", passed=True, value=0.981, detail=">= 0.97")],
            samples=360,
            top1=0.981,
            top5=1.0,
        ),
        summary=Summary(
            count=len(samples),
            mean=1.25e-3,
            std=4.1e-5,
            min=1.2e-3,
            median=1.25e-3,
            p90=1.29e-3,
            p99=1.3e-3,
            max=1.3e-3,
            median_ci_low=1.22e-3,
            median_ci_high=1.28e-3,
            throughput=6400.0,
            batch_size=cell.batch_size,
        ),
        samples_ns=samples,
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "results.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request: pytest.FixtureRequest, db_path: Path):
    """Where a store test's database lives: a SQLite file, and a fresh PostgreSQL database; the
    tests that take ``store`` run on both with the same assertions."""
    if request.param == "sqlite":
        yield str(db_path)
        return
    with postgres_database() as url:
        yield url


@pytest.fixture
def store(store_location: str):
    with Store.from_location(store_location) as opened:
        yield opened


@pytest.fixture
def sqlite_store(db_path: Path):
    with Store.from_location(db_path) as opened:
        yield opened


def test_a_plain_path_opens_a_sqlite_file_and_creates_its_directory(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "results.db"
    with Store.from_location(path) as store:
        assert path.is_file()
        assert store.url == f"sqlite:///{path.resolve()}"


def test_sqlite_database_is_in_wal_mode(sqlite_store: Store, db_path: Path) -> None:
    with sqlite3.connect(db_path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_url_hides_the_password() -> None:
    with pytest.raises(StoreError) as caught:
        # No server listens on port 1; the URL still has to be shown without its password.
        Store("postgresql+psycopg://alice:s3cret@127.0.0.1:1/results")
    assert "s3cret" not in str(caught.value)


def test_a_new_run_is_running_with_its_host_git_and_tags(store: Store) -> None:
    git = GitInfo(commit="0123456789abcdef0123456789abcdef01234567", branch="main", dirty=True)
    run_id = store.start_run(
        host=HOST, git=git, tags={"ci": "nightly"}, pytest_args=["--mlscope", "-k", "alexnet"]
    )
    run = store.get_run(run_id)
    assert len(run_id) == 32
    assert run.status == "running"
    assert run.finished_at is None
    assert run.started_at.tzinfo is not None
    assert (run.git_commit, run.git_branch, run.git_dirty) == (git.commit, "main", True)
    assert run.hostname == "bench-01"
    assert run.host == HOST
    assert run.tags == {"ci": "nightly"}
    assert run.pytest_args == ["--mlscope", "-k", "alexnet"]
    assert run.counts == {}


def test_a_run_without_git_stores_none(store: Store) -> None:
    run = store.get_run(store.start_run(host=HOST))
    assert (run.git_commit, run.git_branch, run.git_dirty) == (None, None, None)
    assert run.tags == {}
    assert run.pytest_args == []


def test_finish_run_sets_status_and_time(store: Store) -> None:
    run_id = store.start_run(host=HOST)
    store.finish_run(run_id, "incomplete")
    run = store.get_run(run_id)
    assert run.status == "incomplete"
    assert run.finished_at is not None
    assert run.finished_at >= run.started_at


def test_a_run_recorded_with_its_first_result_starts_when_its_session_began(store: Store) -> None:
    """The session records its run when the first result arrives (a session that runs nothing
    stores none); a one-item session's run still says when it began, not when it ended."""
    from datetime import UTC, datetime, timedelta

    began = datetime.now(UTC) - timedelta(seconds=56)
    run_id = store.start_run(host=HOST, started_at=began)
    store.finish_run(run_id, "complete")
    run = store.get_run(run_id)
    assert abs((run.started_at - began).total_seconds()) < 1
    assert (run.finished_at - run.started_at).total_seconds() >= 55  # type: ignore[operator]


def test_finishing_an_unknown_run_is_refused(store: Store) -> None:
    with pytest.raises(StoreError, match="no run deadbeef"):
        store.finish_run("deadbeef")


def test_an_unknown_status_is_refused(store: Store) -> None:
    run_id = store.start_run(host=HOST)
    with pytest.raises(ValueError, match="status must be one of"):
        store.finish_run(run_id, "done")


def test_a_second_run_is_added_not_replaced(db_path: Path) -> None:
    with Store.from_location(db_path) as store:
        first = store.start_run(host=HOST)
        store.record_result(first, cell=CELL, outcome="passed", result=make_result())
        store.finish_run(first)
    with Store.from_location(db_path) as store:
        second = store.start_run(host=HOST)
        store.record_result(second, cell=CELL, outcome="failed", message="slower")
        store.finish_run(second)
        runs = store.runs()
        assert [run.id for run in runs] == [second, first]
        assert runs[0].counts == {"failed": 1}
        assert runs[1].counts == {"passed": 1}
        assert len(store.results(first)) == 1


def test_runs_are_listed_newest_first_up_to_the_limit(store: Store) -> None:
    ids = [store.start_run(host=HOST) for _ in range(4)]
    assert [run.id for run in store.runs(limit=3)] == ids[::-1][:3]


def test_counts_are_by_outcome_in_reading_order(store: Store) -> None:
    run_id = store.start_run(host=HOST)
    for outcome in ["skipped", "failed", "passed", "passed", "error"]:
        store.record_result(run_id, cell=CELL, outcome=outcome)
    (run,) = store.runs()
    assert list(run.counts.items()) == [("passed", 2), ("failed", 1), ("error", 1), ("skipped", 1)]
    assert run.total == 5


def test_results_come_back_in_insertion_order_with_documents_parsed(store: Store) -> None:
    run_id = store.start_run(host=HOST)
    cells = [
        Cell(model="alexnet", framework="torch", batch_size=1),
        Cell(model="alexnet", framework="onnxruntime", batch_size=8, scenario="offline"),
        Cell(model="digits_cnn", framework="torch", device="gpu"),
    ]
    original = make_result(cells[1])
    store.record_result(run_id, cell=cells[0], outcome="skipped", message="needs a GPU")
    store.record_result(run_id, cell=cells[1], outcome="passed", result=original)
    store.record_result(run_id, cell=cells[2], outcome="error", message="worker crashed")

    results = store.results(run_id)
    assert [r.cell for r in results] == cells
    assert [r.item_id for r in results] == [c.id for c in cells]
    assert results[1].item_id == "alexnet[onnxruntime-cpu-bs8-offline]"
    assert [r.outcome for r in results] == ["skipped", "passed", "error"]

    stored = results[1]
    assert stored.summary == original.summary
    assert stored.accuracy == original.accuracy
    assert stored.accuracy is not None and stored.accuracy.headline() == "top1=0.981"
    assert stored.cold_start == original.cold_start
    assert stored.predictor == original.predictor
    assert stored.framework_version == "1.17.3"
    assert stored.artifact_sha256 == "ab" * 32
    assert stored.message is None


def test_an_item_without_evaluation_keeps_its_message_and_no_documents(store: Store) -> None:
    run_id = store.start_run(host=HOST)
    store.record_result(run_id, cell=CELL, outcome="skipped", message="needs arch ppc64le")
    (result,) = store.results(run_id)
    assert result.message == "needs arch ppc64le"
    assert result.summary is None
    assert result.accuracy is None
    assert result.cold_start is None
    assert result.predictor is None
    assert result.samples_ns == []
    assert result.framework_version is None


def test_samples_round_trip_exactly(store: Store) -> None:
    # Values past 2**53 would be rounded by any path through a float.
    samples = [1, 999, 1_234_567_891, 2**53 + 1, 2**62 + 12345, *range(10_000, 20_000)]
    run_id = store.start_run(host=HOST)
    store.record_result(run_id, cell=CELL, outcome="passed", result=make_result(samples_ns=samples))
    (result,) = store.results(run_id)
    assert result.samples_ns == samples
    assert all(type(sample) is int for sample in result.samples_ns)


def test_a_summary_with_nan_round_trips(store: Store) -> None:
    # One sample has no spread: the worker reports std as NaN, and it must come back as NaN.
    result = make_result(samples_ns=[1_000_000])
    assert result.summary is not None
    summary = result.summary.model_copy(update={"std": math.nan, "count": 1})
    result = result.model_copy(update={"summary": summary})
    run_id = store.start_run(host=HOST)
    store.record_result(run_id, cell=CELL, outcome="passed", result=result)
    (stored,) = store.results(run_id)
    assert stored.summary is not None and math.isnan(stored.summary.std)


def test_an_unknown_outcome_is_refused(store: Store) -> None:
    run_id = store.start_run(host=HOST)
    with pytest.raises(ValueError, match="outcome must be one of"):
        store.record_result(run_id, cell=CELL, outcome="xfailed")


def test_a_result_for_an_unknown_run_is_refused(store: Store) -> None:
    with pytest.raises(StoreError, match="no run nosuchrun"):
        store.record_result("nosuchrun", cell=CELL, outcome="passed")


def test_results_survive_a_crash_before_finish_run(db_path: Path) -> None:
    # A real crash: the writing process dies with os._exit, never closing or finishing anything.
    script = textwrap.dedent(
        f"""
        import os
        from pytest_mlscope.protocol import Cell
        from pytest_mlscope.store import Store

        store = Store.from_location({str(db_path)!r})
        run_id = store.start_run(host={{"hostname": "crashy"}})
        cell = Cell(model="alexnet", framework="torch")
        store.record_result(run_id, cell=cell, outcome="passed")
        store.record_result(run_id, cell=cell, outcome="failed", message="too slow")
        print(run_id, flush=True)
        os._exit(3)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SOURCE_ROOT), *sys.path])}
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert completed.returncode == 3, completed.stderr
    run_id = completed.stdout.strip()

    with Store.from_location(db_path) as store:
        run = store.get_run(run_id)
        assert run.status == "running"
        assert run.finished_at is None
        assert run.counts == {"passed": 1, "failed": 1}
        assert [r.message for r in store.results(run_id)] == [None, "too slow"]


def test_a_run_is_found_by_a_unique_prefix(store: Store) -> None:
    run_id = store.start_run(host=HOST)
    assert store.get_run(run_id[:6]).id == run_id
    assert store.get_run(run_id.upper()).id == run_id


def test_run_prefix_that_matches_two_runs_is_refused(store: Store) -> None:
    # Seventeen hex ids cannot all start with different digits: at least two share one.
    by_first_digit: dict[str, list[str]] = {}
    for _ in range(17):
        run_id = store.start_run(host=HOST)
        by_first_digit.setdefault(run_id[0], []).append(run_id)
    prefix, shared = next((d, ids) for d, ids in by_first_digit.items() if len(ids) > 1)
    with pytest.raises(StoreError) as caught:
        store.get_run(prefix)
    message = str(caught.value)
    assert f"run prefix {prefix!r} is ambiguous" in message
    for run_id in shared[-5:]:  # the newest five are named
        assert run_id in message


def test_an_empty_run_prefix_is_refused(store: Store) -> None:
    store.start_run(host=HOST)
    with pytest.raises(StoreError, match="empty"):
        store.get_run("  ")


def test_run_prefix_that_matches_nothing_is_refused_with_the_database(store: Store) -> None:
    store.start_run(host=HOST)
    with pytest.raises(StoreError) as caught:
        store.get_run("zz")
    assert "no run matches 'zz'" in str(caught.value)
    assert store.url in str(caught.value)  # the password hidden, as everywhere


def test_like_wildcards_in_a_prefix_match_nothing(store: Store) -> None:
    store.start_run(host=HOST)
    with pytest.raises(StoreError, match="no run matches"):
        store.get_run("%")
    with pytest.raises(StoreError, match="no run matches"):
        store.get_run("_")


def test_newer_schema_version_is_refused(db_path: Path) -> None:
    Store.from_location(db_path).close()
    with sqlite3.connect(db_path) as connection:
        connection.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError) as caught:
        Store.from_location(db_path)
    message = str(caught.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in message
    assert "upgrade pytest-mlscope" in message


def test_reopening_keeps_one_schema_version_row(db_path: Path) -> None:
    for _ in range(3):
        Store.from_location(db_path).close()
    with sqlite3.connect(db_path) as connection:
        rows = connection.execute("SELECT version FROM schema_version").fetchall()
    assert rows == [(SCHEMA_VERSION,)]


def test_opening_without_create_refuses_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "results.db"
    with pytest.raises(StoreError, match=r"no results database at .*; run pytest --mlscope first"):
        Store.from_location(missing, create=False)
    assert not missing.parent.exists()


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    path.write_bytes(b"this is not sqlite, just some text that is long enough" * 10)
    with pytest.raises(StoreError, match="cannot open results database"):
        Store.from_location(path)


def test_a_malformed_url_is_refused() -> None:
    with pytest.raises(StoreError, match="not a database URL"):
        Store("::not a url::")


def test_default_location_follows_mlscope_db(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLSCOPE_DB", raising=False)
    assert default_location() == str(tmp_path / ".mlscope" / "results.db")
    monkeypatch.setenv("MLSCOPE_DB", "postgresql://ci@db/results")
    assert default_location() == "postgresql://ci@db/results"


# -- rounds, verdicts, latest results -------------------------------------------------------------

VERDICT = {
    "kind": "regression",
    "ratio": 1.071,
    "ratio_text": "+7.1% [+4.2%, +9.9%]",
    "p_value": 0.0004,
    "baseline": {"name": "main", "run_id": "ab" * 16},
    "reasons": ["median slower by 7.1%", "Mann-Whitney p < 0.01"],
}


def test_rounds_and_verdict_round_trip(store: Store) -> None:
    result = make_result(samples_ns=[1, 2, 3, 4, 5, 6, 7]).model_copy(update={"rounds": [3, 4]})
    run_id = store.start_run(host=HOST)
    store.record_result(run_id, cell=CELL, outcome="failed", result=result, verdict=VERDICT)
    (stored,) = store.results(run_id)
    assert stored.rounds == [3, 4]
    assert sum(stored.rounds) == len(stored.samples_ns)
    assert stored.verdict == VERDICT


def test_a_result_without_rounds_or_verdict_stores_an_empty_list_and_none(store: Store) -> None:
    run_id = store.start_run(host=HOST)
    store.record_result(run_id, cell=CELL, outcome="passed", result=make_result())
    store.record_result(run_id, cell=CELL, outcome="skipped", message="needs a GPU")
    for stored in store.results(run_id):
        assert stored.rounds == []
        assert stored.verdict is None
    import sqlalchemy as sa

    with store._engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT rounds IS NULL, verdict IS NULL FROM results")
        ).fetchall()
    assert [tuple(map(bool, row)) for row in rows] == [(False, True)] * 2  # SQL NULL, not 'null'


def test_a_verdict_can_be_stored_without_an_evaluation(store: Store) -> None:
    run_id = store.start_run(host=HOST)
    verdict = {"kind": "missing", "reason": "the baseline has this item, this run did not run it"}
    store.record_result(run_id, cell=CELL, outcome="skipped", verdict=verdict)
    (stored,) = store.results(run_id)
    assert stored.verdict == verdict


def test_latest_results_picks_the_last_of_duplicates(store: Store) -> None:
    other = Cell(model="digits_cnn", framework="torch")
    run_id = store.start_run(host=HOST)
    store.record_result(run_id, cell=CELL, outcome="failed", message="first try")
    store.record_result(run_id, cell=other, outcome="passed")
    store.record_result(run_id, cell=CELL, outcome="passed", result=make_result())
    elsewhere = store.start_run(host=HOST)
    store.record_result(elsewhere, cell=CELL, outcome="error", message="another run")

    latest = store.latest_results(run_id)
    assert list(latest) == [other.id, CELL.id]  # in the order the chosen results were recorded
    assert latest[CELL.id].outcome == "passed"
    assert latest[CELL.id].message is None
    assert latest[CELL.id].summary is not None
    assert latest[other.id].outcome == "passed"
    assert len(store.results(run_id)) == 3  # results() still has every row


def test_latest_results_of_a_run_without_results_is_empty(store: Store) -> None:
    assert store.latest_results(store.start_run(host=HOST)) == {}
    assert store.latest_results("nosuchrun") == {}


# -- baselines -----------------------------------------------------------------------------------


def complete_run(store: Store, results: int = 1) -> str:
    run_id = store.start_run(host=HOST)
    for _ in range(results):
        store.record_result(run_id, cell=CELL, outcome="passed", result=make_result())
    store.finish_run(run_id)
    return run_id


def set_time(baseline: BaselineRecord) -> str:
    return baseline.updated_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def test_a_baseline_is_set_by_run_prefix_and_read_back(store: Store) -> None:
    run_id = complete_run(store)
    baseline = store.set_baseline("main", run_id[:7], note="nightly of 1 May")
    assert baseline.name == "main"
    assert baseline.run_id == run_id
    assert baseline.note == "nightly of 1 May"
    assert baseline.created_at.tzinfo is not None
    assert baseline.created_at == baseline.updated_at
    assert store.get_baseline("main") == baseline
    assert store.baselines() == [baseline]


def test_baselines_are_listed_by_name(store: Store) -> None:
    run_id = complete_run(store)
    for name in ["release-1.2", "feature/x", "main", "Main_2"]:
        store.set_baseline(name, run_id)
    assert [b.name for b in store.baselines()] == ["Main_2", "feature/x", "main", "release-1.2"]


def test_no_baselines_is_an_empty_list(store: Store) -> None:
    assert store.baselines() == []


def test_moving_a_baseline_needs_force_and_names_the_current_run_and_time(store: Store) -> None:
    first, second = complete_run(store), complete_run(store)
    current = store.set_baseline("main", first)
    with pytest.raises(StoreError) as caught:
        store.set_baseline("main", second)
    assert str(caught.value) == (
        f"baseline 'main' already points to run {first[:12]} (set {set_time(current)}); "
        f"pass --force to move it"
    )
    assert store.get_baseline("main") == current

    moved = store.set_baseline("main", second, force=True, note="after the fix")
    assert moved.run_id == second
    assert moved.created_at == current.created_at
    assert moved.updated_at > current.updated_at
    assert moved.note == "after the fix"
    assert store.get_baseline("main") == moved


def test_a_forced_move_without_a_note_drops_the_old_note(store: Store) -> None:
    first, second = complete_run(store), complete_run(store)
    store.set_baseline("main", first, note="describes the first run")
    assert store.set_baseline("main", second, force=True).note is None


def test_setting_a_baseline_to_its_own_run_is_a_no_op(store: Store) -> None:
    run_id = complete_run(store)
    original = store.set_baseline("main", run_id, note="keep me")
    assert store.set_baseline("main", run_id) == original
    assert store.set_baseline("main", run_id[:6], note="keep me") == original
    assert store.set_baseline("main", run_id, force=True) == original
    assert store.get_baseline("main") == original


def test_a_new_note_for_the_same_run_updates_only_the_note(store: Store) -> None:
    run_id = complete_run(store)
    original = store.set_baseline("main", run_id, note="old")
    updated = store.set_baseline("main", run_id, note="new")
    assert (updated.run_id, updated.note, updated.created_at) == (
        run_id,
        "new",
        original.created_at,
    )
    assert updated.updated_at > original.updated_at


@pytest.mark.parametrize("status", ["running", "incomplete"])
def test_a_run_that_is_not_complete_needs_force(store: Store, status: str) -> None:
    run_id = store.start_run(host=HOST)
    if status != "running":
        store.finish_run(run_id, status)
    with pytest.raises(StoreError) as caught:
        store.set_baseline("main", run_id)
    message = str(caught.value)
    assert f"run {run_id[:12]} is {status}, not complete" in message
    assert "--force" in message
    assert store.baselines() == []
    assert store.set_baseline("main", run_id, force=True).run_id == run_id


def test_moving_to_an_incomplete_run_names_its_status_first(store: Store) -> None:
    store.set_baseline("main", complete_run(store))
    incomplete = store.start_run(host=HOST)
    store.finish_run(incomplete, "incomplete")
    with pytest.raises(StoreError, match="is incomplete, not complete"):
        store.set_baseline("main", incomplete)


def test_a_baseline_for_an_unknown_run_is_refused(store: Store) -> None:
    complete_run(store)
    with pytest.raises(StoreError, match="no run matches 'zz'"):
        store.set_baseline("main", "zz")
    assert store.baselines() == []


@pytest.mark.parametrize(
    "name", ["", "has space", "semi;colon", "x" * 101, "naïve", "tab\there", "star*"]
)
def test_a_bad_baseline_name_is_refused(store: Store, name: str) -> None:
    run_id = complete_run(store)
    with pytest.raises(StoreError, match="is not valid"):
        store.set_baseline(name, run_id)
    assert store.baselines() == []


@pytest.mark.parametrize("name", ["main", "release-1.2", "feature/x", "v2_nightly", "x" * 100])
def test_branch_like_baseline_names_are_accepted(store: Store, name: str) -> None:
    run_id = complete_run(store)
    assert store.set_baseline(name, run_id).name == name


def test_an_unknown_baseline_names_the_known_ones(store: Store) -> None:
    with pytest.raises(StoreError) as caught:
        store.get_baseline("main")
    assert str(caught.value) == "no baseline named 'main' (none set yet)"
    run_id = complete_run(store)
    store.set_baseline("release-1.2", run_id)
    store.set_baseline("nightly", run_id)
    with pytest.raises(StoreError) as caught:
        store.get_baseline("main")
    assert str(caught.value) == "no baseline named 'main' (known: nightly, release-1.2)"


def test_deleting_a_baseline_keeps_its_run(store: Store) -> None:
    run_id = complete_run(store)
    store.set_baseline("main", run_id)
    store.set_baseline("other", run_id)
    store.delete_baseline("main")
    assert [b.name for b in store.baselines()] == ["other"]
    assert store.get_run(run_id).total == 1
    with pytest.raises(StoreError, match=r"no baseline named 'main' \(known: other\)"):
        store.delete_baseline("main")
    # A deleted name can be set again, to any run, without force.
    assert store.set_baseline("main", complete_run(store)).name == "main"


def test_a_second_store_cannot_take_a_baseline_another_store_set(db_path: Path) -> None:
    with Store.from_location(db_path) as a, Store.from_location(db_path) as b:
        first, second = complete_run(a), complete_run(b)
        winner = a.set_baseline("main", first)
        with pytest.raises(StoreError, match=r"already points to run .*; pass --force to move it"):
            b.set_baseline("main", second)
        assert b.get_baseline("main") == winner
        assert b.set_baseline("main", first) == winner  # the same run is still no conflict


def test_an_insert_that_loses_a_race_is_a_store_error_naming_force(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # B reads "no baseline", then A commits its own before B inserts: B's insert hits the
    # primary key, and that must read as a refusal, not an IntegrityError.
    with Store.from_location(db_path) as a, Store.from_location(db_path) as b:
        first, second = complete_run(a), complete_run(b)
        real_lookup = b._baseline
        lookups = []

        def lookup_after_a_wins(connection, name):  # type: ignore[no-untyped-def]
            if not lookups:
                lookups.append(name)
                a.set_baseline(name, first)
                return None
            return real_lookup(connection, name)

        monkeypatch.setattr(b, "_baseline", lookup_after_a_wins)
        with pytest.raises(StoreError) as caught:
            b.set_baseline("main", second)
        assert caught.value.__cause__ is None
        assert str(caught.value).startswith(f"baseline 'main' already points to run {first[:12]}")
        assert str(caught.value).endswith("pass --force to move it")
        assert a.get_baseline("main").run_id == first


def test_a_lost_race_to_the_same_run_is_no_conflict(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Store.from_location(db_path) as a, Store.from_location(db_path) as b:
        run_id = complete_run(a)
        real_lookup = b._baseline
        lookups = []

        def lookup_after_a_wins(connection, name):  # type: ignore[no-untyped-def]
            if not lookups:
                lookups.append(name)
                a.set_baseline(name, run_id)
                return None
            return real_lookup(connection, name)

        monkeypatch.setattr(b, "_baseline", lookup_after_a_wins)
        assert b.set_baseline("main", run_id) == a.get_baseline("main")


def race_to_set(stores: list[Store], runs: list[str], name: str) -> list[object]:
    """Every store sets ``name`` to its own run at once; what each got back or raised."""
    barrier = threading.Barrier(len(stores))
    outcomes: list[object] = [None] * len(stores)

    def contend(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = stores[i].set_baseline(name, runs[i])
        except Exception as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def test_threads_racing_to_create_a_baseline_leave_one_winner(db_path: Path) -> None:
    stores = [Store.from_location(db_path) for _ in range(4)]
    try:
        runs = [complete_run(store) for store in stores]
        for attempt in range(5):
            name = f"race-{attempt}"
            outcomes = race_to_set(stores, runs, name)
            winners = [o for o in outcomes if isinstance(o, BaselineRecord)]
            losers = [o for o in outcomes if not isinstance(o, BaselineRecord)]
            assert len(winners) == 1, outcomes
            assert all(isinstance(o, StoreError) and "--force" in str(o) for o in losers), outcomes
            assert stores[0].get_baseline(name) == winners[0]
    finally:
        for store in stores:
            store.close()


# -- durations and shard plans -------------------------------------------------------------------


def test_item_durations_are_the_median_of_the_latest_results(store: Store) -> None:
    other = Cell(model="alexnet", framework="torch", batch_size=8)
    run_id = store.start_run(host=HOST)
    for duration in (50.0, 3.0, 4.0, 5.0):  # the oldest (50 s) falls out of the last three
        store.record_result(run_id, cell=CELL, outcome="passed", duration_s=duration)
    store.record_result(run_id, cell=other, outcome="passed")  # no duration recorded
    found = store.item_durations([CELL.id, other.id, "never-ran"], last=3)
    assert found == {CELL.id: pytest.approx(4.0)}
    assert store.latest_results(run_id)[CELL.id].duration_s == pytest.approx(5.0)
    assert store.item_durations([]) == {}


def test_the_first_shard_plan_of_a_group_is_the_one_every_runner_reads(store: Store) -> None:
    first, made = store.shard_plan("GITHUB_RUN_ID=7.1", 2, "d1", lambda: {"a": 0, "b": 1})
    assert made and first == {"a": 0, "b": 1}
    again, made = store.shard_plan("GITHUB_RUN_ID=7.1", 2, "d1", lambda: {"a": 1, "b": 0})
    assert not made and again == first
    other, made = store.shard_plan("GITHUB_RUN_ID=7.1", 3, "d1", lambda: {"a": 2, "b": 0})
    assert made and other == {"a": 2, "b": 0}  # another N is another plan


def test_runners_racing_to_store_a_shard_plan_all_get_the_winners(store_location: str) -> None:
    stores = [Store.from_location(store_location) for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    outcomes: list[object] = [None] * len(stores)

    def runner(index: int) -> None:
        def make() -> dict[str, int]:
            barrier.wait(timeout=30)  # everyone has read "no plan yet" before anyone writes
            return {"item": index}

        try:
            outcomes[index] = stores[index].shard_plan("race", 4, "digest", make)
        except Exception as exc:  # pragma: no cover - shown by the assertion below
            outcomes[index] = exc

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(len(stores))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        for opened in stores:
            opened.close()
    plans = [o[0] for o in outcomes if isinstance(o, tuple)]
    assert len(plans) == len(stores), outcomes
    assert all(plan == plans[0] for plan in plans)
    assert sum(made for _, made in outcomes) == 1  # type: ignore[misc]


# -- copying between databases -------------------------------------------------------------------


def test_a_run_copied_into_another_database_reads_back_the_same(
    db_path: Path, store_location: str, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    """From a SQLite file into each backend: every stored document and sample survives."""
    from pytest_mlscope.cli import main

    with Store.from_location(db_path.with_name("source.db")) as source:
        kept = complete_run(source, results=2)
        source.record_result(kept, cell=CELL, outcome="failed", message="x", duration_s=1.5,
                             verdict={"kind": "ok", "ratio": 1.01})  # fmt: skip
        moved = source.set_baseline("main", kept)
        unfinished = source.start_run(host=HOST)  # a session still running: not copied
        before = source.results(kept)
        run_before = source.get_run(kept)
        location = source.url
    argv = ["copy", "--db", location, "--to", store_location]
    assert main([*argv, "--baselines"]) == 0
    assert "copied 1 run (3 results)" in capsys.readouterr().out
    after = store.results(kept)
    assert [(r.cell, r.outcome, r.samples_ns, r.summary, r.accuracy, r.verdict, r.duration_s)
            for r in after] == [(r.cell, r.outcome, r.samples_ns, r.summary, r.accuracy,
                                 r.verdict, r.duration_s) for r in before]  # fmt: skip
    run_after = store.get_run(kept)
    assert run_after.started_at == run_before.started_at and run_after.host == run_before.host
    assert store.get_baseline("main").run_id == moved.run_id
    assert not store.has_run(unfinished)
    assert main(argv) == 0  # again: nothing new
    assert "copied 0 runs (0 results)" in capsys.readouterr().out
    assert len(store.results(kept)) == 3


def test_a_bulk_import_adds_whole_runs_in_batches_and_passes_over_those_present(
    store: Store, tmp_path: Path
) -> None:
    with Store.from_location(tmp_path / "source.db") as source:
        run_ids = []
        for index in range(7):
            run_id = source.start_run(host=HOST)
            for size in range(index % 3 + 1):
                samples = [1_000_000 + index, 2_000_000 + size, 2**40]  # past 32 bits as well
                cell = CELL.model_copy(update={"batch_size": size + 1})
                result = make_result(cell, samples_ns=samples)
                source.record_result(run_id, cell=cell, outcome="passed", result=result)
            source.finish_run(run_id)
            run_ids.append(run_id)
        exported = [source.export_run(run_id) for run_id in run_ids]
        expected = {run_id: [r.samples_ns for r in source.results(run_id)] for run_id in run_ids}
    assert store.import_run(*exported[3])  # one already there
    twice = [*exported, exported[0]]  # and one twice in the same batch
    added = store.import_runs(twice, runs_per_transaction=3)
    assert added == [run_id for run_id in run_ids if run_id != run_ids[3]]
    for run_id in run_ids:
        assert [r.samples_ns for r in store.results(run_id)] == expected[run_id]
    assert store.import_runs(exported) == []


def test_a_run_left_running_by_a_killed_session_is_closed_as_incomplete(
    store_location: str,
) -> None:
    # A real kill -9 of the writing process, after it stored two results.
    script = textwrap.dedent(
        f"""
        import os, signal
        from pytest_mlscope.protocol import Cell
        from pytest_mlscope.store import Store

        store = Store.from_location({store_location!r})
        run_id = store.start_run(host={{"hostname": "killed"}})
        cell = Cell(model="alexnet", framework="torch")
        store.record_result(run_id, cell=cell, outcome="passed")
        store.record_result(run_id, cell=cell, outcome="failed", message="too slow")
        print(run_id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SOURCE_ROOT), *sys.path])}
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert completed.returncode == -9, completed.stderr
    killed = completed.stdout.strip()
    with Store.from_location(store_location) as store:
        alive = store.start_run(host=HOST)  # this process's own run: still going
        assert store.get_run(killed).status == "running"
        assert store.close_abandoned_runs() == [killed]
        run = store.get_run(killed)
        assert run.status == "incomplete"
        assert run.counts == {"passed": 1, "failed": 1}
        assert run.finished_at == store.results(killed)[-1].recorded_at
        assert store.get_run(alive).status == "running"
        assert store.close_abandoned_runs() == []


def test_copy_refuses_its_own_database_and_a_baseline_that_would_move(
    db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_mlscope.cli import main

    with (
        Store.from_location(db_path) as source,
        Store.from_location(db_path.with_name("other.db")) as other,
    ):
        source.set_baseline("main", complete_run(source))
        other.set_baseline("main", complete_run(other))
    assert main(["copy", "--db", str(db_path), "--to", str(db_path)]) == 2
    assert "--to is the database the runs come from" in capsys.readouterr().err
    argv = ["copy", "--db", str(db_path), "--to", str(db_path.with_name("other.db")), "--baselines"]
    assert main(argv) == 1
    assert "baseline 'main' not copied: baseline 'main' already points to run" in (
        capsys.readouterr().out
    )
    assert main([*argv, "--force"]) == 0


# -- artifacts a baseline keeps ------------------------------------------------------------------


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    """Chunks of 1 KiB, so a file of a few KiB is stored in several."""
    monkeypatch.setattr(store_module.artifacts, "ARTIFACT_CHUNK_SIZE", 1024)
    return 1024


def model_file(directory: Path, name: str = "model.onnx", seed: int = 0) -> tuple[Path, str]:
    """A file of 5.5 KiB: random bytes (as weights are) and a run of zeros (which compress)."""
    import random

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    noise = random.Random(seed).randbytes(3 * 1024)
    path.write_bytes(noise + bytes(2 * 1024) + noise[:512])
    return path, sha256_file(path)


def entry(path: Path, sha256: str, framework: str = "onnxruntime") -> ArtifactEntry:
    return ArtifactEntry(
        sha256=sha256, model="alexnet", framework=framework, format="onnx", path=path
    )


def count_rows(store: Store, table: sa.Table) -> int:
    with store._engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_a_file_of_several_chunks_round_trips_compressed_under_its_name(
    store: Store, tmp_path: Path, small_chunks: int
) -> None:
    path, sha256 = model_file(tmp_path / "models")
    assert store.put_artifact(path, sha256=sha256, format="onnx") is True
    stored = store.artifact(sha256)
    assert stored is not None
    assert (stored.filename, stored.format, stored.size) == ("model.onnx", "onnx", 5632)
    assert stored.stored_size < stored.size  # the zeros compressed
    assert count_rows(store, artifact_chunks_table) == 6
    fetched = store.fetch_artifact(sha256, tmp_path / "fetched")
    assert fetched == tmp_path / "fetched" / sha256 / "model.onnx"
    assert fetched.read_bytes() == path.read_bytes()
    assert sorted(p.name for p in fetched.parent.iterdir()) == ["model.onnx"]  # no temp left
    # A copy already there is used as it is; a damaged one is written again.
    assert store.fetch_artifact(sha256, tmp_path / "fetched") == fetched
    fetched.write_bytes(b"edited")
    assert store.fetch_artifact(sha256, tmp_path / "fetched").read_bytes() == path.read_bytes()


def test_an_empty_file_round_trips(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "empty.pt2"
    path.write_bytes(b"")
    sha256 = sha256_file(path)
    assert store.put_artifact(path, sha256=sha256, format="torch_export")
    assert store.fetch_artifact(sha256, tmp_path / "fetched").read_bytes() == b""


def test_storing_the_same_file_twice_keeps_one_blob(
    store: Store, tmp_path: Path, small_chunks: int
) -> None:
    path, sha256 = model_file(tmp_path / "a")
    copy, _ = model_file(tmp_path / "b", name="renamed.onnx")
    assert store.put_artifact(path, sha256=sha256, format="onnx") is True
    assert store.put_artifact(path, sha256=sha256, format="onnx") is False
    assert store.put_artifact(copy, sha256=sha256, format="onnx") is False
    assert count_rows(store, artifact_blobs_table) == 1
    assert count_rows(store, artifact_chunks_table) == 6
    assert store.artifact(sha256).filename == "model.onnx"  # type: ignore[union-attr]


def test_sessions_storing_the_same_file_at_once_store_it_once(
    store_location: str, tmp_path: Path, small_chunks: int
) -> None:
    path, sha256 = model_file(tmp_path)
    stores = [Store.from_location(store_location) for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    outcomes: list[object] = [None] * len(stores)

    def put(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = stores[i].put_artifact(path, sha256=sha256, format="onnx")
        except Exception as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=put, args=(i,)) for i in range(len(stores))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert sorted(outcomes, key=str) == [False, False, False, True], outcomes
        assert count_rows(stores[0], artifact_chunks_table) == 6
        fetched = stores[0].fetch_artifact(sha256, tmp_path / "fetched")
        assert fetched.read_bytes() == path.read_bytes()
    finally:
        for opened in stores:
            opened.close()


def test_a_file_that_changed_since_it_was_hashed_is_refused_with_both_hashes(
    store: Store, tmp_path: Path, small_chunks: int
) -> None:
    path, sha256 = model_file(tmp_path)
    path.write_bytes(path.read_bytes() + b"edited")
    with pytest.raises(ArtifactError) as caught:
        store.put_artifact(path, sha256=sha256, format="onnx")
    assert f"has sha256 {sha256_file(path)}, expected {sha256}" in str(caught.value)
    assert not store.has_artifact(sha256)
    assert count_rows(store, artifact_chunks_table) == 0
    with pytest.raises(ArtifactError, match=r"cannot store artifact .*missing\.onnx"):
        store.put_artifact(tmp_path / "missing.onnx", sha256=sha256, format="onnx")


def test_a_tampered_chunk_is_refused_naming_the_sha256_and_leaves_no_file(
    store: Store, tmp_path: Path, small_chunks: int
) -> None:
    path, sha256 = model_file(tmp_path / "models")
    store.put_artifact(path, sha256=sha256, format="onnx")
    chunks = artifact_chunks_table.c

    def tamper(data: bytes) -> None:
        with store._engine.begin() as connection:
            connection.execute(
                sa.update(artifact_chunks_table)
                .where(chunks.sha256 == sha256, chunks.seq == 2)
                .values(data=data)
            )

    target = tmp_path / "fetched"
    tamper(zlib.compress(bytes(1024)))  # whole, but not the stored bytes
    with pytest.raises(StoreError) as caught:
        store.fetch_artifact(sha256, target)
    assert str(caught.value).startswith(f"artifact {sha256} in {store.url} is corrupt: ")
    assert "reads back with sha256" in str(caught.value)
    tamper(b"not zlib")
    with pytest.raises(StoreError, match=f"{sha256} .* corrupt: chunk 2 of 6 does not decompress"):
        store.fetch_artifact(sha256, target)
    with store._engine.begin() as connection:
        connection.execute(
            sa.delete(artifact_chunks_table).where(chunks.sha256 == sha256, chunks.seq == 2)
        )
    with pytest.raises(StoreError, match=f"{sha256} .* is corrupt: chunk 2 of 6 is missing"):
        store.fetch_artifact(sha256, target)
    assert list((target / sha256).iterdir()) == []  # no partial file under any name


def test_a_large_model_goes_to_the_artifact_directory_and_comes_back_from_it(
    store: Store, store_location: str, tmp_path: Path
) -> None:
    """--mlscope-artifact-store: the file, not chunks, under its checksum in the directory; the
    database keeps its row, so baselines reference it, fetch it and free it as before."""
    directory = tmp_path / "share"
    store.artifact_dir = directory
    path, sha256 = model_file(tmp_path / "models")
    run_id = complete_run(store)
    store.set_baseline("main", run_id, artifacts=[entry(path, sha256)])
    kept = directory / sha256[:2] / sha256
    assert kept.read_bytes() == path.read_bytes()
    assert count_rows(store, artifact_chunks_table) == 0
    stored = store.artifact(sha256)
    assert stored is not None and stored.location == str(directory.resolve())
    assert stored.chunks == 0 and stored.size == path.stat().st_size
    assert [a.location for a in store.baseline_artifacts("main")] == [str(directory.resolve())]
    # Another session, without the option: the recorded directory is where it looks.
    with Store.from_location(store_location) as other:
        fetched = other.fetch_artifact(sha256, tmp_path / "fetched")
    assert fetched.name == "model.onnx" and fetched.read_bytes() == path.read_bytes()
    assert not list(directory.rglob("*.part"))
    store.delete_baseline("main")
    assert not kept.exists() and store.artifact(sha256) is None  # freed, file and row


def test_an_artifact_directory_mounted_elsewhere_or_missing_is_named(
    store: Store, tmp_path: Path
) -> None:
    import shutil

    store.artifact_dir = tmp_path / "share"
    path, sha256 = model_file(tmp_path / "models")
    store.set_baseline("main", complete_run(store), artifacts=[entry(path, sha256)])
    shutil.move(tmp_path / "share", tmp_path / "mounted-here")
    store.artifact_dir = None
    with pytest.raises(StoreError) as caught:
        store.fetch_artifact(sha256, tmp_path / "fetched")
    message = str(caught.value)
    assert message.startswith(f"artifact {sha256} in {store.url} is missing: ")
    assert str((tmp_path / "share").resolve()) in message
    assert "--mlscope-artifact-store=DIR" in message
    store.artifact_dir = tmp_path / "mounted-here"  # the same share, another mount point
    assert store.fetch_artifact(sha256, tmp_path / "fetched").read_bytes() == path.read_bytes()
    kept = tmp_path / "mounted-here" / sha256[:2] / sha256
    kept.write_bytes(kept.read_bytes()[:-1] + b"!")
    with pytest.raises(StoreError, match=f"{sha256} .* is corrupt: .* reads back with sha256"):
        store.fetch_artifact(sha256, tmp_path / "again")
    store.delete_baseline("main")  # freed where this session mounts the share
    assert not kept.exists() and store.artifact(sha256) is None


def test_a_file_that_changed_is_not_written_to_the_artifact_directory(
    store: Store, tmp_path: Path
) -> None:
    store.artifact_dir = tmp_path / "share"
    path, sha256 = model_file(tmp_path / "models")
    path.write_bytes(path.read_bytes() + b"edited after hashing")
    with pytest.raises(ArtifactError, match="the file changed after its checksum was recorded"):
        store.put_artifact(path, sha256=sha256, format="onnx")
    assert store.artifact(sha256) is None
    assert [p for p in (tmp_path / "share").rglob("*") if p.is_file()] == []


def test_fetching_a_file_that_is_not_stored_names_it_and_the_database(
    store: Store, tmp_path: Path
) -> None:
    with pytest.raises(StoreError) as caught:
        store.fetch_artifact("ef" * 32, tmp_path)
    assert str(caught.value) == f"artifact {'ef' * 32} is not stored in {store.url}"
    with pytest.raises(StoreError, match="expected an artifact's sha256 as 64 lowercase hex"):
        store.fetch_artifact("../../etc", tmp_path)


def test_a_stored_name_cannot_place_a_fetched_file_outside_its_directory(
    store: Store, tmp_path: Path
) -> None:
    path, sha256 = model_file(tmp_path / "models")
    store.put_artifact(path, sha256=sha256, format="onnx", filename="../../escaped.onnx")
    fetched = store.fetch_artifact(sha256, tmp_path / "fetched")
    assert fetched == tmp_path / "fetched" / sha256 / "escaped.onnx"


def test_a_baseline_keeps_its_artifacts_and_lists_them_by_model_and_framework(
    store: Store, tmp_path: Path, small_chunks: int
) -> None:
    onnx, onnx_sha = model_file(tmp_path / "a")
    exported, exported_sha = model_file(tmp_path / "b", name="model.pt2", seed=1)
    artifacts = [
        entry(onnx, onnx_sha, "onnxruntime"),
        entry(onnx, onnx_sha, "onnxruntime"),  # two cells of one framework: kept once
        entry(onnx, onnx_sha, "openvino"),  # one file, two frameworks
        ArtifactEntry(exported_sha, "alexnet", "torch", "torch_export", exported),
    ]
    baseline = store.set_baseline("main", complete_run(store), artifacts=artifacts)
    kept = store.baseline_artifacts("main")
    assert [(k.framework, k.sha256, k.format, k.filename, k.size) for k in kept] == [
        ("onnxruntime", onnx_sha, "onnx", "model.onnx", 5632),
        ("openvino", onnx_sha, "onnx", "model.onnx", 5632),
        ("torch", exported_sha, "torch_export", "model.pt2", 5632),
    ]
    assert count_rows(store, artifact_blobs_table) == 2
    # Set again, to the same run, with one artifact: the baseline row is unchanged.
    assert store.set_baseline("main", baseline.run_id, artifacts=artifacts[3:]) == baseline
    assert [k.sha256 for k in store.baseline_artifacts("main")] == [exported_sha]
    assert not store.has_artifact(onnx_sha)  # nothing keeps it any more
    with pytest.raises(StoreError, match=r"no baseline named 'other' \(known: main\)"):
        store.baseline_artifacts("other")


def test_deleting_one_of_two_baselines_sharing_a_blob_keeps_it_and_the_last_frees_it(
    store: Store, tmp_path: Path, small_chunks: int
) -> None:
    shared, shared_sha = model_file(tmp_path / "a")
    own, own_sha = model_file(tmp_path / "b", seed=1)
    run_id = complete_run(store)
    store.set_baseline("main", run_id, artifacts=[entry(shared, shared_sha), entry(own, own_sha)])
    store.set_baseline("release-1.2", run_id, artifacts=[entry(shared, shared_sha)])
    own_size = store.artifact(own_sha).stored_size  # type: ignore[union-attr]
    shared_size = store.artifact(shared_sha).stored_size  # type: ignore[union-attr]
    assert store.delete_baseline("main") == own_size
    assert store.has_artifact(shared_sha) and not store.has_artifact(own_sha)
    assert store.fetch_artifact(shared_sha, tmp_path / "f").read_bytes() == shared.read_bytes()
    assert store.delete_baseline("release-1.2") == shared_size
    assert not store.has_artifact(shared_sha)
    assert count_rows(store, artifact_chunks_table) == 0
    assert store.get_run(run_id).total == 1


def test_a_baseline_moved_with_force_keeps_only_its_new_run_s_artifacts(
    store: Store, tmp_path: Path
) -> None:
    old, old_sha = model_file(tmp_path / "a")
    new, new_sha = model_file(tmp_path / "b", seed=1)
    store.set_baseline("main", complete_run(store), artifacts=[entry(old, old_sha)])
    store.set_baseline("main", complete_run(store), force=True, artifacts=[entry(new, new_sha)])
    assert [k.sha256 for k in store.baseline_artifacts("main")] == [new_sha]
    assert not store.has_artifact(old_sha)
    # Moved without artifacts: what it kept was the other run's, and goes.
    store.set_baseline("main", complete_run(store), force=True)
    assert store.baseline_artifacts("main") == []
    assert count_rows(store, artifact_blobs_table) == 0


def test_a_refused_baseline_stores_none_of_its_artifacts(store: Store, tmp_path: Path) -> None:
    path, sha256 = model_file(tmp_path)
    store.set_baseline("main", complete_run(store))
    with pytest.raises(StoreError, match="pass --force to move it"):
        store.set_baseline("main", complete_run(store), artifacts=[entry(path, sha256)])
    assert not store.has_artifact(sha256)
    # Refused after the first file was stored (the second is missing): the first goes too.
    missing = entry(tmp_path / "gone.onnx", "00" * 32)
    with pytest.raises(ArtifactError, match=r"gone\.onnx"):
        store.set_baseline(
            "main", complete_run(store), force=True, artifacts=[entry(path, sha256), missing]
        )
    assert not store.has_artifact(sha256)
    assert store.baseline_artifacts("main") == []


def test_a_blob_freed_while_a_baseline_is_set_is_stored_again(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another session deletes the last baseline keeping the file between our storing it and
    # our referencing it: the reference fails on the foreign key, and the set is retried.
    path, sha256 = model_file(tmp_path)
    run_id = complete_run(store)
    store.set_baseline("other", run_id, artifacts=[entry(path, sha256)])
    real_put = store.put_artifact
    puts: list[bool] = []

    def put_then_lose_it(*args, **kwargs):  # type: ignore[no-untyped-def]
        puts.append(real_put(*args, **kwargs))
        if len(puts) == 1:
            store.delete_baseline("other")
        return puts[-1]

    monkeypatch.setattr(store, "put_artifact", put_then_lose_it)
    store.set_baseline("main", run_id, artifacts=[entry(path, sha256)])
    assert puts == [False, True]
    assert [k.sha256 for k in store.baseline_artifacts("main")] == [sha256]


def test_unreferenced_artifacts_are_freed_on_request(store: Store, tmp_path: Path) -> None:
    loose, loose_sha = model_file(tmp_path / "a")
    kept, kept_sha = model_file(tmp_path / "b", seed=1)
    store.put_artifact(loose, sha256=loose_sha, format="onnx")
    store.set_baseline("main", complete_run(store), artifacts=[entry(kept, kept_sha)])
    loose_size = store.artifact(loose_sha).stored_size  # type: ignore[union-attr]
    assert store.free_artifacts() == loose_size
    assert not store.has_artifact(loose_sha) and store.has_artifact(kept_sha)
    assert store.free_artifacts() == 0


def test_the_cache_fetches_a_baseline_s_artifact_from_the_database_once(
    store: Store, tmp_path: Path, small_chunks: int
) -> None:
    path, sha256 = model_file(tmp_path / "models")
    cache = ArtifactCache(tmp_path / "cache")
    assert cache.from_store(store, sha256) is None
    store.set_baseline("main", complete_run(store), artifacts=[entry(path, sha256)])
    assert cache.from_store(store, sha256, format="torch_export") is None
    ref = cache.from_store(store, sha256, format="onnx")
    assert ref is not None
    assert ref.path == str(cache.root / "from-store" / sha256 / "model.onnx")
    assert (ref.format, ref.sha256) == ("onnx", sha256)
    assert ref.expected_by == f"fetched from the results database {store.url}"
    verify(ref)
    path.unlink()  # the model file replaced by an edit: the copy stays
    assert cache.from_store(store, sha256) == ref


def test_a_model_folder_is_stored_as_one_artifact_and_fetched_whole(
    store: Store, tmp_path: Path, small_chunks: int
) -> None:
    """A SavedModel is a folder: its hash is its canonical tar's, which the database keeps; a
    fetched copy is the same folder, and a file changed inside it changes the hash."""
    from pytest_mlscope.zoo.cache import sha256_path

    folder = tmp_path / "models" / "net_saved"
    (folder / "variables").mkdir(parents=True)
    (folder / "assets").mkdir()
    (folder / "saved_model.pb").write_bytes(b"graph" * 1000)
    (folder / "variables" / "variables.index").write_bytes(bytes(range(256)) * 40)
    sha256 = sha256_path(folder)
    assert store.put_artifact(folder, sha256=sha256, format="saved_model")
    fetched = store.fetch_artifact(sha256, tmp_path / "fetched")
    assert fetched == tmp_path / "fetched" / sha256 / "net_saved" and fetched.is_dir()
    assert sha256_path(fetched) == sha256
    assert (fetched / "assets").is_dir()  # empty folders travel too
    assert store.fetch_artifact(sha256, tmp_path / "fetched") == fetched  # used as it is
    (folder / "saved_model.pb").write_bytes(b"other")
    assert sha256_path(folder) != sha256
    with pytest.raises(ArtifactError, match="changed after its checksum was recorded"):
        store.put_artifact(folder, sha256="0" * 64, format="saved_model")


def test_a_version_6_database_is_migrated_and_gains_the_artifact_tables(
    store_location: str, tmp_path: Path
) -> None:
    with Store.from_location(store_location) as store:
        run_id = complete_run(store)
        store.set_baseline("main", run_id)
        # What pytest-mlscope wrote before schema 7: no artifact tables, no A side of pairs.
        with store._engine.begin() as connection:
            for table in ("baseline_artifacts", "artifact_chunks", "artifact_blobs"):
                connection.execute(sa.text(f"DROP TABLE {table}"))
            columns = {c["name"] for c in sa.inspect(connection).get_columns("results")}
            for column in {"paired_samples_ns", "paired"} & columns:
                connection.execute(sa.text(f"ALTER TABLE results DROP COLUMN {column}"))
            connection.execute(sa.text("UPDATE schema_version SET version = 6"))
    with Store.from_location(store_location) as store:
        assert store.results(run_id)[0].samples_ns == make_result().samples_ns
        assert store.get_baseline("main").run_id == run_id
        assert store.baseline_artifacts("main") == []
        path, sha256 = model_file(tmp_path)
        store.set_baseline("main", run_id, artifacts=[entry(path, sha256)])
        assert store.fetch_artifact(sha256, tmp_path / "f").read_bytes() == path.read_bytes()
        with store._engine.connect() as connection:
            version = connection.execute(sa.text("SELECT version FROM schema_version")).all()
    assert version == [(SCHEMA_VERSION,)] and SCHEMA_VERSION == 11


def test_a_version_7_database_keeps_its_chunked_artifacts_and_gains_their_location(
    store_location: str, tmp_path: Path
) -> None:
    path, sha256 = model_file(tmp_path)
    with Store.from_location(store_location) as store:
        store.set_baseline("main", complete_run(store), artifacts=[entry(path, sha256)])
        with store._engine.begin() as connection:  # what schema 7 had: no location column
            connection.execute(sa.text("ALTER TABLE artifact_blobs DROP COLUMN location"))
            connection.execute(sa.text("UPDATE schema_version SET version = 7"))
    with Store.from_location(store_location) as store:
        stored = store.artifact(sha256)
        assert stored is not None and stored.location is None and stored.chunks == 1
        assert store.fetch_artifact(sha256, tmp_path / "f").read_bytes() == path.read_bytes()
        with store._engine.connect() as connection:
            version = connection.execute(sa.text("SELECT version FROM schema_version")).all()
    assert version == [(SCHEMA_VERSION,)]


def test_a_version_8_database_gains_the_memory_column_and_keeps_its_results(
    store_location: str,
) -> None:
    with Store.from_location(store_location) as store:
        run_id = complete_run(store)
        with store._engine.begin() as connection:  # what schema 8 had: no memory column
            connection.execute(sa.text("ALTER TABLE results DROP COLUMN memory"))
            connection.execute(sa.text("UPDATE schema_version SET version = 8"))
    memory = MemoryUse(before=10 * 2**20, load_peak=30 * 2**20, run_peak=42 * 2**20)
    with Store.from_location(store_location) as store:
        (old,) = store.results(run_id)
        assert old.memory is None and old.samples_ns == make_result().samples_ns
        new = store.start_run(host=HOST)
        measured = make_result().model_copy(update={"memory": memory})
        store.record_result(new, cell=CELL, outcome="passed", result=measured)
        (stored,) = store.results(new)
    assert stored.memory == memory and stored.memory.model == 32 * 2**20


def test_a_version_9_database_gains_the_sequence_length_and_keeps_its_results(
    store_location: str,
) -> None:
    with Store.from_location(store_location) as store:
        run_id = complete_run(store)
        with store._engine.begin() as connection:  # what schema 9 had: no sequence length
            connection.execute(sa.text("ALTER TABLE results DROP COLUMN sequence_length"))
            connection.execute(sa.text("UPDATE schema_version SET version = 9"))
    text_cell = Cell(model="minilm", framework="torch", sequence_length=64)
    with Store.from_location(store_location) as store:
        (old,) = store.results(run_id)
        assert old.cell == CELL and old.cell.sequence_length is None
        new = store.start_run(host=HOST)
        store.record_result(new, cell=text_cell, outcome="passed", result=make_result())
        (stored,) = store.results(new)
    assert stored.cell == text_cell
    assert stored.item_id == "minilm[torch-cpu-bs1-seq64-single_stream]"


def test_a_version_10_database_gains_the_generation_column_and_keeps_its_results(
    store_location: str,
) -> None:
    from pytest_mlscope.protocol import GenerationSummary

    with Store.from_location(store_location) as store:
        run_id = complete_run(store)
        with store._engine.begin() as connection:  # what schema 10 had: no generation figures
            connection.execute(sa.text("ALTER TABLE results DROP COLUMN generation"))
            connection.execute(sa.text("UPDATE schema_version SET version = 10"))
    cell = Cell(model="smollm2", framework="torch", scenario="generate")
    figures = GenerationSummary(
        new_tokens=16, prompt_tokens=6, generations=3, ttft_ms=9.5, ttft_p90_ms=10.0,
        itl_p50_ms=4.0, itl_p90_ms=4.5, itl_p99_ms=6.0, tokens_per_s=240.0,
        ttft_ns=[9_000_000, 9_500_000, 10_000_000], decode_ns=[60_000_000] * 3,
    )  # fmt: skip
    with Store.from_location(store_location) as store:
        (old,) = store.results(run_id)
        assert old.generation is None
        new = store.start_run(host=HOST)
        result = make_result().model_copy(update={"cell": cell, "generation": figures})
        store.record_result(new, cell=cell, outcome="passed", result=result)
        (stored,) = store.results(new)
    assert stored.item_id == "smollm2[torch-cpu-bs1-generate]"
    assert stored.generation == figures


def test_copy_with_baselines_carries_the_artifacts_they_keep(
    db_path: Path, store_location: str, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_mlscope.cli import main

    path, sha256 = model_file(db_path.parent / "models")
    with Store.from_location(db_path.with_name("source.db")) as source:
        source.set_baseline("main", complete_run(source), artifacts=[entry(path, sha256)])
        location = source.url
    path.unlink()  # only the source database has it now
    assert main(["copy", "--db", location, "--to", store_location, "--baselines"]) == 0
    assert "with 1 artifact" in capsys.readouterr().out
    assert [k.sha256 for k in store.baseline_artifacts("main")] == [sha256]
    fetched = store.fetch_artifact(sha256, db_path.parent / "fetched")
    assert sha256_file(fetched) == sha256


def test_copy_moves_directory_kept_models_into_a_directory_of_the_target_own(
    db_path: Path, store_location: str, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_mlscope.cli import main
    from pytest_mlscope.cli.common import EXIT_ERROR

    path, sha256 = model_file(db_path.parent / "models")
    with Store.from_location(db_path.with_name("source.db")) as source:
        source.artifact_dir = db_path.parent / "source-share"
        source.set_baseline("main", complete_run(source), artifacts=[entry(path, sha256)])
        location = source.url
    copy = ["copy", "--db", location, "--to", store_location, "--baselines"]
    assert main([*copy, f"--artifact-store={db_path.parent / 'source-share'}"]) == EXIT_ERROR
    assert "give the target database a directory of its own" in capsys.readouterr().err
    assert main([*copy, f"--artifact-store={db_path.parent / 'target-share'}"]) == 0
    assert "with 1 artifact" in capsys.readouterr().out
    kept = store.baseline_artifacts("main")
    assert [(k.sha256, k.location) for k in kept] == [
        (sha256, str((db_path.parent / "target-share").resolve()))
    ]
    assert (db_path.parent / "target-share" / sha256[:2] / sha256).read_bytes() == (
        path.read_bytes()
    )


# -- git -----------------------------------------------------------------------------------------
# -- git -----------------------------------------------------------------------------------------

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git executable")


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def bounded_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    # Keep git from finding a repository above tmp_path, whatever the machine's layout.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    repo = tmp_path / "repo"
    repo.mkdir()
    return repo


@needs_git
def test_git_info_outside_a_checkout_is_none(bounded_git: Path) -> None:
    assert git_info(bounded_git) is None


def test_git_info_of_a_missing_directory_is_none(tmp_path: Path) -> None:
    assert git_info(tmp_path / "does-not-exist") is None


@needs_git
def test_git_info_reports_commit_branch_and_dirtiness(bounded_git: Path) -> None:
    repo = bounded_git
    _git(repo, "init", "-q", "-b", "trunk")
    empty = git_info(repo)
    assert empty == GitInfo(commit=None, branch="trunk", dirty=False)

    (repo / "model.txt").write_text("v1\n")
    _git(repo, "add", "model.txt")
    _git(repo, "commit", "-q", "-m", "first")
    clean = git_info(repo)
    assert clean is not None
    assert clean.commit is not None and len(clean.commit) == 40
    assert (clean.branch, clean.dirty) == ("trunk", False)

    (repo / "untracked.db").write_text("results")
    assert git_info(repo) == clean  # untracked outputs do not make a checkout dirty
    (repo / "model.txt").write_text("v2\n")
    assert git_info(repo) == GitInfo(commit=clean.commit, branch="trunk", dirty=True)

    _git(repo, "checkout", "-q", "--detach")
    detached = git_info(repo)
    assert detached is not None and detached.branch is None


def test_a_version_1_database_is_migrated_and_keeps_its_results(db_path: Path) -> None:
    """Through every migration since: layers and trace (2), stack and telemetry (3), durations,
    indexes and shard plans (4), run owners, CPU models and packed samples (5), instruction
    counts (6)."""
    from pytest_mlscope.protocol import LayerRow, TraceInfo

    with Store.from_location(db_path) as store:
        old_run = store.start_run(host={"cpu_model": "x"})
        store.record_result(old_run, cell=CELL, outcome="passed", result=make_result())
    # What pytest-mlscope 0.1 wrote: no layers, no trace, schema version 1.
    with sqlite3.connect(db_path) as connection:
        connection.execute("ALTER TABLE results DROP COLUMN layers")
        connection.execute("ALTER TABLE results DROP COLUMN trace")
        connection.execute("ALTER TABLE results DROP COLUMN stack")
        connection.execute("ALTER TABLE results DROP COLUMN telemetry")
        connection.execute("ALTER TABLE results DROP COLUMN duration_s")
        for index in ("ix_results_item_id", "ix_results_model", "ix_runs_started_at"):
            connection.execute(f"DROP INDEX {index}")
        connection.execute("DROP TABLE shard_plans")
        connection.execute("ALTER TABLE runs DROP COLUMN owner")
        connection.execute("ALTER TABLE runs DROP COLUMN cpu_model")
        connection.execute("ALTER TABLE results DROP COLUMN instructions")
        connection.execute("ALTER TABLE results DROP COLUMN paired_samples_ns")
        connection.execute("ALTER TABLE results DROP COLUMN paired")
        # Before schema 5 raw samples were JSON text.
        connection.execute(
            "UPDATE results SET samples_ns = ?", (json.dumps(make_result().samples_ns),)
        )
        connection.execute("UPDATE schema_version SET version = 1")
    traced = make_result().model_copy(
        update={
            "layers": [LayerRow(layer="features.0", op_type="Conv2d", self_us=5, total_us=5)],
            "trace": TraceInfo(level="framework", iterations=20, path="/tmp/t.json"),
        }
    )
    with Store.from_location(db_path) as store:
        old = store.latest_results(old_run)[CELL.id]
        assert old.samples_ns == make_result().samples_ns and old.layers == [] and old.trace is None
        new_run = store.start_run(host={"cpu_model": "x"})
        store.record_result(new_run, cell=CELL, outcome="passed", result=traced)
        new = store.latest_results(new_run)[CELL.id]
    assert new.layers[0].layer == "features.0" and new.trace.path == "/tmp/t.json"
    stacked = CELL.model_copy(update={"stack": "ort131"})
    watched = make_result().model_copy(update={"telemetry": {"other_cores_busy": 0.2}})
    with Store.from_location(db_path) as store:
        store.record_result(new_run, cell=stacked, outcome="passed", result=watched)
        found = store.latest_results(new_run)
    assert found[stacked.id].cell == stacked and "@ort131" in stacked.id
    assert found[stacked.id].telemetry == {"other_cores_busy": 0.2}
    assert found[CELL.id].cell.stack is None and found[CELL.id].telemetry == {}
    with sqlite3.connect(db_path) as connection:
        assert connection.execute("SELECT version FROM schema_version").fetchall() == [
            (SCHEMA_VERSION,)
        ]
        indexes = {row[0] for row in connection.execute("SELECT name FROM sqlite_master "
                                                         "WHERE type = 'index'")}  # fmt: skip
    assert {"ix_results_item_id", "ix_results_model", "ix_runs_started_at"} <= indexes
    with Store.from_location(db_path) as store:
        store.record_result(new_run, cell=CELL, outcome="passed", duration_s=2.5)
        assert store.item_durations([CELL.id]) == {CELL.id: 2.5}
        assert store.shard_plan("g", 2, "d", lambda: {"x": 1}) == ({"x": 1}, True)
        assert [point.cpu_model for point in store.item_history(CELL.id)] == ["x", "x"]
        counted = make_result().model_copy(update={"instructions": [151_000.5, 151_200.0]})
        store.record_result(new_run, cell=CELL, outcome="passed", result=counted)
        assert store.latest_results(new_run)[CELL.id].instructions == [151_000.5, 151_200.0]
        assert store.latest_results(old_run)[CELL.id].instructions == []


HOSTILE_NAMES = [
    "<script>alert(1)</script>",
    "x'); DROP TABLE runs; --",
    'quote"s and \\backslashes\\ and %s %(name)s ?',
    "модель_模型_🚀_e\u0301",
    "m" * 5000,
    "\x1b[2J\x1b[31mred\x1b[0m",
    "nul\x00byte",
]


def test_hostile_names_and_messages_are_stored_read_back_and_shown_safely(store: Store) -> None:
    from pytest_mlscope.report import data as report_data
    from pytest_mlscope.report import html, markdown

    run_id = store.start_run(host=HOST)
    cells = [Cell(model=name, framework="onnxruntime") for name in HOSTILE_NAMES]
    for cell in cells:
        store.record_result(run_id, cell=cell, outcome="failed", result=make_result(cell),
                            message=f"stderr tail: {cell.model}")  # fmt: skip
    store.finish_run(run_id)
    stored = store.results(run_id)
    stored_as = [name.replace("\x00", "\ufffd") for name in HOSTILE_NAMES]  # NUL: not text
    assert [r.cell.model for r in stored] == [name[:255] for name in stored_as]  # the column
    assert [r.item_id for r in stored] == [cell.id.replace("\x00", "\ufffd") for cell in cells]
    assert [r.message for r in stored] == [f"stderr tail: {name}" for name in stored_as]
    assert store.get_run(run_id).counts == {"failed": len(HOSTILE_NAMES)}  # no table dropped
    for result in stored:
        (point,) = store.item_history(result.item_id)
        assert point.run_id == run_id

    data = report_data.load(store, run_id)
    page = html.render(data)
    assert (
        "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    )
    assert "DROP TABLE runs" in page and "\x1b" not in page
    text = markdown.render(data)
    # Names as inline code (shown verbatim), messages escaped; escape sequences written out.
    assert "`<script>alert(1)</script>[onnxruntime" in text
    assert "stderr tail: &lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "\x1b" not in text and "\\x1b[2J" in text


def test_the_terminal_table_shows_control_characters_escaped() -> None:
    from pytest_mlscope.report.terminal import table

    shown = table(["item"], [["\x1b[2Jred\x00\n"]])
    assert "\x1b" not in shown and "\x00" not in shown
    assert "\\x1b[2Jred\\x00\\n" in shown

"""Session faults: pytest itself killed or interrupted mid-session, with real workers.

A CI gate must never lose what it measured or corrupt what it compares against: a ``kill -9``
leaves the database readable with earlier runs and baselines intact and the partial run closed
as incomplete by the next session; Ctrl-C stops the workers and stores what finished.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from _services import postgres_database
from test_plugin import QUICK, _faulty_suite, _run

from conftest import copy_manifest
from pytest_mlscope.store import Store

REPO = Path(__file__).resolve().parent.parent


def _start(pytester: pytest.Pytester, *args: str) -> subprocess.Popen[str]:
    """A pytest session in the background, as a user starts one."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "--mlscope",
            "-p",
            "no:cacheprovider",
            *QUICK,
            "--mlscope-manifests",
            "manifests",
            *args,
        ],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _wait_for_results(db: Path, run_count: int, results: int, timeout: float = 240) -> str:
    """The newest run's id once it has stored ``results`` results."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists():
            with Store.from_location(db, create=False) as store:
                runs = store.runs()
                if len(runs) >= run_count and runs[0].total >= results:
                    return runs[0].id
        time.sleep(0.5)
    raise AssertionError(f"no run with {results} results in {db} within {timeout} s")


def _workers(process: psutil.Process) -> list[psutil.Process]:
    found = []
    for child in process.children(recursive=True):
        try:
            if "pytest_mlscope.worker" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            pass
    return found


def _gone(processes: list[psutil.Process], timeout: float) -> bool:
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return not alive


def test_kill_9_of_pytest_keeps_the_database_and_the_next_session_closes_the_run(
    pytester: pytest.Pytester,
) -> None:
    _faulty_suite(pytester, "hangs")
    db = pytester.path / ".mlscope" / "results.db"
    first = _run(pytester, "--mlscope-manifests", "manifests", "-k", "bs1",
                 "--mlscope-save-baseline", "main")  # fmt: skip
    first.assert_outcomes(passed=2)

    session = _start(pytester, "-k", "hangs and single_stream")  # bs1 passes, then bs8 hangs
    killed_run = _wait_for_results(db, run_count=2, results=1)
    time.sleep(1.0)  # into the hanging bs8 item
    workers = _workers(psutil.Process(session.pid))
    assert workers, "the session should have a worker"
    session.send_signal(signal.SIGKILL)
    session.communicate(timeout=60)
    assert session.returncode == -signal.SIGKILL
    # The worker, stuck in its prediction, sees its parent go and exits by itself.
    assert _gone(workers, timeout=15), "a worker outlived the killed pytest"

    with Store.from_location(db, create=False) as store:
        runs = {run.id: run for run in store.runs()}
        baseline = store.get_baseline("main")
        assert runs[baseline.run_id].status == "complete"
        assert runs[baseline.run_id].counts == {"passed": 2}
        assert runs[killed_run].status == "running"
        assert runs[killed_run].counts == {"passed": 1}

    after = _run(pytester, "--mlscope-manifests", "manifests", "-k", "onnxruntime and bs1-single")
    after.assert_outcomes(passed=1)
    after.stdout.fnmatch_lines(
        [
            f"*run {killed_run[:12]} was left 'running' by a session that was killed; marked "
            "incomplete (its stored results are kept)*"
        ]
    )
    with Store.from_location(db, create=False) as store:
        killed = store.get_run(killed_run)
        assert killed.status == "incomplete" and killed.counts == {"passed": 1}
        assert killed.finished_at == store.results(killed_run)[-1].recorded_at
        assert store.get_baseline("main").run_id == baseline.run_id


def test_ctrl_c_stops_the_workers_and_stores_what_finished(pytester: pytest.Pytester) -> None:
    _faulty_suite(pytester, "hangs")
    db = pytester.path / ".mlscope" / "results.db"
    session = _start(pytester, "-k", "hangs and single_stream")
    run_id = _wait_for_results(db, run_count=1, results=1)
    time.sleep(1.0)
    workers = _workers(psutil.Process(session.pid))
    assert workers
    session.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends pytest
    output, _ = session.communicate(timeout=60)
    assert session.returncode == pytest.ExitCode.INTERRUPTED, output
    assert "KeyboardInterrupt" in output
    assert _gone(workers, timeout=5), "Ctrl-C left a worker running"
    with Store.from_location(db, create=False) as store:
        run = store.get_run(run_id)
    assert run.status == "incomplete"
    assert run.counts == {"passed": 1}


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, pytester: pytest.Pytester) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(pytester.path / ".mlscope" / "results.db")
        return
    with postgres_database() as url:
        yield url


def test_four_xdist_workers_store_every_result_in_one_run_and_take_turns_timing(
    pytester: pytest.Pytester, database: str
) -> None:
    manifests = pytester.path / "manifests"
    manifests.mkdir()
    for name in ("digits_cnn", "alexnet"):
        copy_manifest(name, manifests)
    shutil.copytree(REPO / "manifests" / "goldens", manifests / "goldens")
    result = pytester.runpytest_subprocess(
        "--mlscope", "--mlscope-manifests", "manifests", "-p", "no:cacheprovider", *QUICK,
        "-n", "4", f"--mlscope-db={database}",
    )  # fmt: skip
    output = result.stdout.str()
    assert "database is locked" not in output and "Traceback" not in output
    result.assert_outcomes(passed=12)
    result.stdout.fnmatch_lines(["4 workers [[]12 items[]]"])
    waited = re.search(r"4 pytest-xdist workers, one run: items were timed one at a time across "
                       r"workers \(a lock, ([\d.]+) s waited in all\)", output)  # fmt: skip
    assert waited and float(waited[1]) > 0, output
    # The controller's summary has every item, as a session without xdist would.
    for model in ("digits_cnn", "alexnet"):
        for framework in ("torch", "onnxruntime"):
            assert f"{model}[{framework}-cpu-bs1-single_stream]" in output
    with Store.from_location(database, create=False) as store:
        (run,) = store.runs()
        results = store.results(run.id)
    assert run.status == "complete" and run.counts == {"passed": 12}
    assert len({r.cell.id for r in results}) == 12
    assert all(r.summary is not None and r.samples_ns for r in results)

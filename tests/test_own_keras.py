"""A Keras model the user built and saved themselves (``model.save("net.keras")``), not a zoo
build: it loads by its suffix, meets its golden outputs and is profiled layer by layer."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # imported once per process: see tests/test_gate.py

from pytest_mlscope.store import Store

ITEM = "team_mlp[tensorflow-cpu-bs1-single_stream]"
MANIFEST = """\
name: team_mlp
framework:
  - name: tensorflow
model:
  source: {path: {tensorflow: net.keras}}
inputs:
  - name: input
    shape: [1, 8, 8]
outputs:
  - name: logits
dataset: {name: npz, path: inputs.npz}
accuracy:
  golden: {path: golden.npz, atol: 1.0e-5, rtol: 1.0e-4}
performance:
  batch_sizes: [1]
  scenarios: [single_stream]
"""


def test_a_users_keras_file_loads_meets_its_golden_and_names_its_layers(
    tmp_path: Path, pytester: pytest.Pytester
) -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((1, 8, 8)),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(32, activation="relu", name="hidden"),
            keras.layers.Dense(10, name="scores"),
        ]
    )
    project = tmp_path / "team"
    manifests = project / "manifests"
    manifests.mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\nmlscope_manifests = ["manifests"]\n'
    )
    model.save(manifests / "net.keras")
    inputs = np.random.default_rng(2).standard_normal((10, 1, 8, 8)).astype(np.float32)
    np.savez(manifests / "inputs.npz", inputs=inputs)
    np.savez(manifests / "golden.npz", logits=model.predict(inputs, verbose=0))
    (manifests / "team_mlp.yaml").write_text(MANIFEST)
    with contextlib.chdir(project):
        result = pytester.runpytest_subprocess(
            "--mlscope", "-p", "no:cacheprovider", "--mlscope-trace=framework",
            "--mlscope-min-count=20", "--mlscope-min-duration=0.05",
        )  # fmt: skip
    result.assert_outcomes(passed=1)
    with Store.from_location(project / ".mlscope" / "results.db", create=False) as store:
        record = store.latest_results(store.runs(limit=1)[0].id)[ITEM]
    assert record.artifact_sha256 is not None
    assert {"hidden", "scores"} <= {row.layer for row in record.layers}, record.layers


def test_a_savedmodel_folder_is_one_artifact_from_init_to_a_baseline_fetched_elsewhere(
    tmp_path: Path, pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same kind of model exported as a SavedModel folder (``model.export``): ``mlscope init``
    reads its serving signature, the item meets its golden, and a baseline keeps the folder in
    the database, so a second checkout with an empty cache and another copy of the folder still
    finds the baseline's model by its hash."""
    from pytest_mlscope.cli import main
    from pytest_mlscope.zoo.cache import sha256_path

    def exported(seed: int, folder: Path) -> None:
        keras.utils.set_random_seed(seed)
        model = keras.Sequential(
            [keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)]
        )
        model.export(str(folder), verbose=False)

    def session(*args: str) -> pytest.RunResult:
        return pytester.runpytest_subprocess(
            "--mlscope", "-p", "no:cacheprovider", *args, "--mlscope-min-count=20",
            "--mlscope-min-duration=0.05", "--mlscope-db=../ci.db",
            "--mlscope-cache=cache",  # each checkout's own, empty at first
        )  # fmt: skip

    one = tmp_path / "one"
    (one / "models").mkdir(parents=True)
    (one / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\nmlscope_manifests = ["models"]\n'
    )
    exported(1, one / "models" / "net_saved")
    inputs = np.random.default_rng(4).standard_normal((8, 6)).astype(np.float32)
    np.savez(one / "models" / "data.npz", inputs=inputs)
    with contextlib.chdir(one):
        assert main(["init", "models/net_saved", "--dataset=models/data.npz"]) == 0
        assert "tensorflow, input" in capsys.readouterr().out
        assert main(["golden", "models/net_saved.yaml"]) == 0
        session("--mlscope-save-baseline=main").assert_outcomes(passed=1)
    # The folder's hash does not depend on file times or where it lies.
    import shutil

    folder = one / "models" / "net_saved"
    shutil.copytree(folder, tmp_path / "copy")
    assert sha256_path(tmp_path / "copy") == sha256_path(folder)
    # Another checkout with an empty cache, where the model was edited (retrained weights):
    # the baseline's folder exists only in the database.
    two = tmp_path / "two"
    shutil.copytree(one, two, ignore=shutil.ignore_patterns(".mlscope", "cache", "net_saved"))
    exported(2, two / "models" / "net_saved")
    with contextlib.chdir(two):
        assert main(["golden", "models/net_saved.yaml"]) == 0
        session("--mlscope-baseline=main").assert_outcomes(passed=1)
    with Store.from_location(tmp_path / "ci.db", create=False) as store:
        kept = store.artifact(sha256_path(folder))
        record = store.latest_results(store.runs(limit=1)[0].id)[
            "net_saved[tensorflow-cpu-bs1-single_stream]"
        ]
    assert kept is not None and kept.format == "saved_model"
    assert record.verdict is not None and record.verdict["design"] == "interleaved"
    fetched = list((two / "cache" / "from-store").glob("*/net_saved"))
    assert [sha256_path(path) for path in fetched] == [sha256_path(folder)]
    assert (fetched[0] / "saved_model.pb").is_file()

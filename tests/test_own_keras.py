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

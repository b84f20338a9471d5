"""A Keras model the user built and saved themselves (``model.save("net.keras")``), not a zoo
build: it loads by its suffix, meets its golden outputs and is profiled layer by layer. Ported by
hand from the team's torch CNN, it exposes its layers' outputs, so a failed agreement with torch
names the first layer where the two part."""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # imported once per process: see tests/test_gate.py
import torch  # the same: a pytester test below exports the torch side
from torch import nn

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
        # the plumbing, not the statistics: a threshold no noise reaches
        session("--mlscope-baseline=main", "--mlscope-threshold=3").assert_outcomes(passed=1)
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


def _torch_net(nested: bool) -> nn.Module:
    """The team's torch CNN for 1x8x8 inputs; ``nested``: its feature layers in a block."""
    torch.manual_seed(0)
    features = OrderedDict(
        conv1=nn.Conv2d(1, 8, 3, padding=1),
        relu1=nn.ReLU(),
        conv2=nn.Conv2d(8, 16, 3, padding=1),
        relu2=nn.ReLU(),
        pool=nn.MaxPool2d(2),
    )
    head = OrderedDict(
        flatten=nn.Flatten(), fc1=nn.Linear(16 * 4 * 4, 32), relu3=nn.ReLU(), fc2=nn.Linear(32, 10)
    )
    if nested:
        return nn.Sequential(OrderedDict(features=nn.Sequential(features), **head)).eval()
    return nn.Sequential(OrderedDict(**features, **head)).eval()


def _keras_port(net: nn.Module, nested: bool) -> Any:
    """The same network in Keras, ported by hand the usual way: channels-first input moved to
    channels-last by a first Permute, kernels laid out for Keras, and the first dense layer's
    inputs reordered from torch's (C, H, W) flatten to Keras' (H, W, C) one. ``nested``: the
    feature layers in a Sequential block of a functional model, named as torch names them."""
    from keras import layers

    state = {name: value.detach().numpy() for name, value in net.state_dict().items()}
    prefix = "features." if nested else ""
    features = [
        layers.Conv2D(8, 3, padding="same", name="conv1"),
        layers.ReLU(name="relu1"),
        layers.Conv2D(16, 3, padding="same", name="conv2"),
        layers.ReLU(name="relu2"),
        layers.MaxPooling2D(2, name="pool"),
    ]
    head = [
        layers.Flatten(name="flatten"),
        layers.Dense(32, name="fc1"),
        layers.ReLU(name="relu3"),
        layers.Dense(10, name="fc2"),
    ]
    to_channels_last = layers.Permute((2, 3, 1), name="to_channels_last")
    if nested:
        inputs = keras.Input((1, 8, 8), name="input")
        block = keras.Sequential([keras.Input((8, 8, 1)), *features], name="features")
        x = block(to_channels_last(inputs))
        for layer in head:
            x = layer(x)
        model = keras.Model(inputs, x, name="port")
    else:
        model = keras.Sequential([keras.Input((1, 8, 8)), to_channels_last, *features, *head])
    for name in ("conv1", "conv2"):
        weight, bias = state[f"{prefix}{name}.weight"], state[f"{prefix}{name}.bias"]
        owner = model.get_layer("features") if nested else model
        owner.get_layer(name).set_weights([weight.transpose(2, 3, 1, 0), bias])
    fc1 = state["fc1.weight"].reshape(32, 16, 4, 4).transpose(0, 2, 3, 1).reshape(32, -1)
    model.get_layer("fc1").set_weights([fc1.T, state["fc1.bias"]])
    model.get_layer("fc2").set_weights([state["fc2.weight"].T, state["fc2.bias"]])
    return model


def _digits() -> np.ndarray:
    return np.random.default_rng(5).standard_normal((12, 1, 8, 8)).astype(np.float32)


@pytest.mark.parametrize("port", ["sequential", "nested", "zoo"])
def test_a_faithful_keras_port_shows_no_diverging_layer(tmp_path: Path, port: str) -> None:
    """Layer for layer, the Keras model computes what the torch one does: every convolution
    (NHWC inside Keras, returned as NCHW) and the flatten (returned in torch's order) matches
    the torch layer of its name, and the model still predicts after its layers were read. The
    user's file is read back the way the worker loads it; the zoo's functional build (torch
    names: ``features.2``) the way the zoo builds it."""
    from pytest_mlscope.divergence import first_divergence
    from pytest_mlscope.predictors.tensorflow import TensorFlowPredictor
    from pytest_mlscope.predictors.torch import TorchPredictor
    from pytest_mlscope.protocol import ArtifactRef

    tensorflow = TensorFlowPredictor()
    if port == "zoo":
        from pytest_mlscope.zoo.keras_models import digits_cnn
        from pytest_mlscope.zoo.models import DigitsCNN

        torch.manual_seed(0)
        net = DigitsCNN().eval()
        tensorflow.use(digits_cnn({k: v.numpy() for k, v in net.state_dict().items()}))
    else:
        net = _torch_net(nested=port == "nested")
        _keras_port(net, nested=port == "nested").save(tmp_path / "net.keras")
        tensorflow.load(ArtifactRef(format="keras", path=str(tmp_path / "net.keras"), sha256=""))
    batch = _digits()[:1]
    torch.export.save(torch.export.export(net, (torch.from_numpy(batch),)), tmp_path / "net.pt2")
    reference = TorchPredictor()
    reference.load(ArtifactRef(format="torch_export", path=str(tmp_path / "net.pt2"), sha256=""))
    expected = reference.layer_outputs(reference.prepare_input(batch))
    prepared = tensorflow.prepare_input(batch)
    layers = tensorflow.layer_outputs(prepared)
    assert expected is not None and layers is not None
    names = [name for name, _ in layers]
    if port == "zoo":
        leaves = [f"features.{i}" for i in range(5)] + [f"classifier.{i}" for i in range(4)]
    else:
        leaves = [n for n, m in net.named_modules() if n and not list(m.children())]
    # Torch's leaf modules, by their torch names, in torch's order; the Permute that only
    # moves the input is left out; a nested block follows its own layers, as in torch.
    assert [n for n in names if n != "features"] == leaves, names
    assert ("features" in names) == (port == "nested")
    shapes = dict(expected)
    assert all(value.shape == shapes[name].shape for name, value in layers), names
    found = first_divergence(expected, layers, atol=1e-4, rtol=1e-3)
    assert found.layer is None, found.describe("torch")
    assert found.compared == len(layers)
    outputs = tensorflow.to_numpy(tensorflow.predict(prepared))
    np.testing.assert_allclose(outputs, expected[-1][1], atol=1e-4, rtol=1e-3)


def test_a_savedmodel_has_no_layers_to_expose(tmp_path: Path) -> None:
    from pytest_mlscope.predictors.tensorflow import TensorFlowPredictor
    from pytest_mlscope.protocol import ArtifactRef

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    model.export(str(tmp_path / "saved"), verbose=False)
    predictor = TensorFlowPredictor()
    predictor.load(ArtifactRef(format="saved_model", path=str(tmp_path / "saved"), sha256=""))
    batch = predictor.prepare_input(np.ones((1, 6), np.float32))
    assert predictor.layer_outputs(batch) is None


AGREEMENT = """\
name: port
framework:
  - name: torch
  - name: tensorflow
model:
  source: {path: {torch: net.pt2, tensorflow: net.keras}}
inputs:
  - name: input
    shape: [1, 8, 8]
outputs:
  - name: logits
dataset: {name: npz, path: inputs.npz}
accuracy:
  agreement: {reference: torch, atol: 1.0e-4, rtol: 1.0e-3}
performance:
  batch_sizes: [1]
  scenarios: [single_stream]
"""


def test_a_weight_changed_in_the_keras_port_is_named_as_the_first_divergence(
    tmp_path: Path, pytester: pytest.Pytester
) -> None:
    """The user's Keras port with one weight of ``conv2`` changed: agreement with torch fails,
    and the failure and the stored result name ``conv2``, the layer where TensorFlow parts
    from torch, not the flatten after it, whose element order differs between the two."""
    net = _torch_net(nested=False)
    model = _keras_port(net, nested=False)
    kernel, bias = model.get_layer("conv2").get_weights()
    kernel[1, 1, 0, 0] += 0.5
    model.get_layer("conv2").set_weights([kernel, bias])
    project = tmp_path / "team"
    manifests = project / "manifests"
    manifests.mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\nmlscope_manifests = ["manifests"]\n'
    )
    model.save(manifests / "net.keras")
    inputs = _digits()
    batch = torch.export.Dim("batch")
    program = torch.export.export(
        net, (torch.from_numpy(inputs[:2]),), dynamic_shapes=({0: batch},)
    )
    torch.export.save(program, manifests / "net.pt2")
    np.savez(manifests / "inputs.npz", inputs=inputs)
    (manifests / "port.yaml").write_text(AGREEMENT)
    with contextlib.chdir(project):
        result = pytester.runpytest_subprocess(
            "--mlscope", "-p", "no:cacheprovider", "-k", "tensorflow",
            "--mlscope-min-count=20", "--mlscope-min-duration=0.05",
        )  # fmt: skip
    result.assert_outcomes(failed=1)  # torch's item is not timed; its reference outputs are
    result.stdout.fnmatch_lines(["*first diverging layer: conv2 (*"])
    with Store.from_location(project / ".mlscope" / "results.db", create=False) as store:
        records = store.latest_results(store.runs(limit=1)[0].id)
    check = records["port[tensorflow-cpu-bs1-single_stream]"].accuracy.check("agreement")
    assert not check.passed
    assert "first diverging layer: conv2 (" in check.detail
    assert "2 earlier layers matched" in check.detail


def test_a_keras_transformer_over_int64_tokens_keeps_its_two_layers_apart(
    tmp_path: Path, pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    """A transformer encoder as a Keras user writes one (functional, int64 tokens, each block's
    layers named by their path): ``mlscope init`` reads its signature, ``mlscope golden`` its
    outputs, and the item meets them with a layer table that keeps the two blocks apart."""
    from pytest_mlscope.cli import main

    keras.utils.set_random_seed(3)
    tokens = keras.Input((12,), dtype="int64", name="tokens")
    x = keras.layers.Embedding(100, 32, name="embed")(tokens)
    for i in range(2):
        attention = keras.layers.MultiHeadAttention(4, 8, name=f"layers.{i}.self_attn")(x, x)
        x = keras.layers.LayerNormalization(name=f"layers.{i}.norm1")(x + attention)
        hidden = keras.layers.Dense(64, activation="relu", name=f"layers.{i}.linear1")(x)
        hidden = keras.layers.Dense(32, name=f"layers.{i}.linear2")(hidden)
        x = keras.layers.LayerNormalization(name=f"layers.{i}.norm2")(x + hidden)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    model = keras.Model(tokens, keras.layers.Dense(5, name="head")(x))
    project = tmp_path / "team"
    (project / "models").mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\nmlscope_manifests = ["models"]\n'
    )
    model.save(project / "models" / "encoder.keras")
    data = np.random.default_rng(3).integers(0, 100, (8, 12), dtype=np.int64)
    np.savez(project / "models" / "tokens.npz", inputs=data)
    with contextlib.chdir(project):
        assert main(["init", "models/encoder.keras", "--dataset=models/tokens.npz"]) == 0
        assert "int64" in (project / "models" / "encoder.yaml").read_text()
        assert main(["golden", "models/encoder.yaml"]) == 0
        capsys.readouterr()
        result = pytester.runpytest_subprocess(
            "--mlscope", "-p", "no:cacheprovider", "--mlscope-trace=framework",
            "--mlscope-min-count=20", "--mlscope-min-duration=0.05",
        )  # fmt: skip
    result.assert_outcomes(passed=1)
    with Store.from_location(project / ".mlscope" / "results.db", create=False) as store:
        record = store.latest_results(store.runs(limit=1)[0].id)[
            "encoder[tensorflow-cpu-bs1-single_stream]"
        ]
    assert record.accuracy is not None and record.accuracy.passed, record.accuracy
    layers = {row.layer for row in record.layers}
    for index in (0, 1):
        assert {f"layers.{index}.self_attn", f"layers.{index}.linear1"} <= layers, layers

"""``mlscope init``: from a team's model files to a manifest that validates and passes.

The files are the team's own, exported here as users export them (torch.export, TorchScript,
torch.onnx, Keras), in a folder outside this repository; nothing comes from the zoo.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np
import onnx  # noqa: F401 (imported once per process: see tests/test_gate.py)
import pytest
import torch
import yaml
from torch import nn

from pytest_mlscope.cli import main
from pytest_mlscope.manifest import load_manifest


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


class Tokens(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(tokens).mean(1))


def _onnx(net: nn.Module, example: torch.Tensor, path: Path, name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (example,), str(path), input_names=[name], output_names=["scores"],
            dynamic_axes={name: {0: "batch"}}, dynamo=False,
        )  # fmt: skip


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("team") / "models"
    root.mkdir()
    torch.manual_seed(0)
    net = Net().eval()
    example = torch.randn(2, 3, 6, 6)
    batch = torch.export.Dim("batch")
    torch.export.save(
        torch.export.export(net, (example,), dynamic_shapes=({0: batch},)), root / "net.pt2"
    )
    torch.jit.trace(net, example).save(str(root / "net.pt"))
    _onnx(net, example, root / "net.onnx", "pixels")
    np.savez(root / "data.npz", inputs=np.random.default_rng(1).random((10, 3, 6, 6), np.float32))
    np.savez(root / "small.npz", inputs=np.zeros((4, 3, 5, 5), np.float32))
    tokens = Tokens().eval()
    _onnx(tokens, torch.randint(0, 50, (1, 7)), root / "tokens.onnx", "ids")
    return root


def _manifest(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_two_files_give_one_validated_manifest_that_golden_and_pytest_pass(
    models: Path, pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    project = models.parent
    (project / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\nmlscope_manifests = ["models"]\n'
    )
    with contextlib.chdir(project):
        assert main(["init", "models/net.pt2", "models/net.onnx", "--dataset=models/data.npz"]) == 0
        said = capsys.readouterr().out
        assert "mlscope golden models/net.yaml" in said
        written = _manifest(models / "net.yaml")
        assert written["inputs"] == [{"name": "pixels", "shape": [3, 6, 6], "dtype": "float32"}]
        assert written["outputs"] == [{"name": "scores"}]  # the names the team exported
        assert written["model"]["source"] == {
            "path": {"torch": "net.pt2", "onnxruntime": "net.onnx"}
        }
        assert written["accuracy"]["agreement"]["reference"] == "torch"
        assert written["dataset"] == {"name": "npz", "path": "data.npz"}
        load_manifest(models / "net.yaml", require_files=False)
        assert main(["golden", "models/net.yaml"]) == 0
        assert (models / "goldens" / "net.npz").is_file()
        result = pytester.runpytest_subprocess(
            "--mlscope", "-p", "no:cacheprovider", "--mlscope-min-count=20",
            "--mlscope-min-duration=0.05", "--mlscope-warmup=3",
        )  # fmt: skip
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*net[[]onnxruntime-cpu-bs1-single_stream[]]*golden,agreement*"])


def test_without_a_dataset_random_inputs_of_the_models_shape_are_written(
    models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A saved TorchScript archive keeps no input shape: the ONNX file beside it says it.
    assert main(["init", str(models / "net.pt"), str(models / "net.onnx"), "--name=scripted"]) == 0
    written = _manifest(models / "scripted.yaml")
    assert written["model"]["source"]["path"]["torch"] == "net.pt"
    with np.load(models / written["dataset"]["path"]) as archive:
        assert archive["inputs"].shape[1:] == (3, 6, 6)
        assert archive["inputs"].dtype == np.float32
    assert main(["init", str(models / "net.pt"), "--name=alone"]) == 2
    assert "record no input shape or dtype" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["tokens.onnx"], "the input is int64: random values may be out of the model's range"),
        (
            ["net.onnx", "--dataset=small.npz", "--name=small"],
            "its samples have shape [3, 5, 5], the model takes",
        ),
        (["net.pt2", "tokens.onnx", "--name=both"], "the files disagree on the input dtype"),
        (["net.onnx", "tokens.onnx", "--name=two"], "one file per framework"),
        (["net.onnx", "--name=net"], "net.yaml exists; pass --force"),
        (["data.npz"], "not a model file mlscope init reads"),
        (["net.onnx", "--name=My-Net"], "--name: expected lowercase letters, digits and _"),
        (["broken.onnx", "--name=broken"], "broken.onnx: cannot be read as onnx: "),
    ],
)
def test_what_cannot_make_a_manifest_is_refused_with_the_reason(
    models: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], expected: str
) -> None:
    (models / "net.yaml").touch()
    (models / "broken.onnx").write_bytes(b"not a protobuf at all")
    before = sorted(p.name for p in models.iterdir())
    with contextlib.chdir(models):
        assert main(["init", *arguments]) == 2
    assert expected in capsys.readouterr().err
    assert sorted(p.name for p in models.iterdir()) == before  # nothing half-made left behind


def test_a_manifest_whose_files_would_leave_its_folder_is_refused(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "elsewhere" / "net.yaml"
    assert main(["init", str(models / "net.onnx"), f"--output={output}"]) == 2
    assert "is not inside" in capsys.readouterr().err
    assert not output.exists()


def test_a_keras_file_gives_its_own_shape_and_framework(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((6, 6, 3), name="image"), keras.layers.Flatten(),
                              keras.layers.Dense(4, name="logits")])  # fmt: skip
    model.save(tmp_path / "net.keras")
    assert main(["init", str(tmp_path / "net.keras")]) == 0
    written = _manifest(tmp_path / "net.yaml")
    assert written["framework"] == [{"name": "tensorflow"}]
    assert written["inputs"][0]["shape"] == [6, 6, 3]
    assert "agreement" not in written["accuracy"]  # one framework: goldens only
    load_manifest(tmp_path / "net.yaml", require_files=False)

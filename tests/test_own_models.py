"""A user's own torch network, written and exported the way users do it, none of it from the zoo.

It is a small residual CNN: a stem, three residual blocks (conv, BatchNorm, ReLU, conv,
BatchNorm, add), and a linear head. It is exported three ways: ``torch.export.save`` (.pt2),
``torch.jit.trace`` (TorchScript .pt) and ``torch.onnx.export`` (.onnx). The project has npz data
of its own, and one manifest per model file. Every item must load, agree across torch and ONNX
Runtime, and produce a layer table that keeps the three blocks apart: ``layers.0.conv1`` to
``layers.2.conv2``, never three calls of one ``conv1`` row.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from pytest_mlscope.store import Store

TIMING = ("--mlscope-min-count=20", "--mlscope-min-duration=0.05", "--mlscope-warmup=3")
BLOCK_LAYERS = [f"layers.{b}.{name}" for b in range(3) for name in ("conv1", "conv2")]


class Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class ResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.layers = nn.Sequential(Block(8), Block(8), Block(8))
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x)).mean((2, 3)))


class Encoder(nn.Module):
    """A two-layer transformer encoder over int64 tokens, with a classification head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(100, 32)
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)).mean(1))


def _network() -> ResNet:
    torch.manual_seed(0)
    net = ResNet()
    for module in net.modules():  # trained-looking statistics, so BatchNorm is not the identity
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return net.eval()


MANIFEST = """\
name: {name}
description: The team's residual CNN, exported by the team
framework:
{frameworks}
model:
  source: {{path: {{{paths}}}}}
inputs:
{inputs}
outputs:
  - name: logits
dataset: {{name: npz, path: {data}}}
accuracy:
{accuracy}
performance:
  batch_sizes: [1]
  scenarios: [single_stream]
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's folder, outside this repository: their model files, data and manifests."""
    root = tmp_path_factory.mktemp("team")
    (root / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\nmlscope_manifests = ["manifests"]\n'
    )
    manifests = root / "manifests"
    manifests.mkdir()
    net = _network()
    example = torch.randn(2, 1, 8, 8)
    batch = torch.export.Dim("batch")
    program = torch.export.export(net, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, manifests / "resnet.pt2")
    torch.jit.trace(net, example).save(str(manifests / "resnet.pt"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (example,), str(manifests / "resnet.onnx"), input_names=["input"],
            output_names=["logits"], dynamic_axes={"input": {0: "batch"}}, dynamo=False,
        )  # fmt: skip
    inputs = np.random.default_rng(1).standard_normal((12, 1, 8, 8)).astype(np.float32)
    np.savez(manifests / "inputs.npz", inputs=inputs)
    with torch.no_grad():
        np.savez(manifests / "golden.npz", logits=net(torch.from_numpy(inputs)).numpy())
    (manifests / "resnet.yaml").write_text(
        MANIFEST.format(
            name="resnet",
            inputs=IMAGE,
            data="inputs.npz",
            frameworks="  - name: torch\n  - name: onnxruntime",
            paths="torch: resnet.pt2, onnxruntime: resnet.onnx",
            accuracy="  agreement: {reference: torch, atol: 1.0e-4, rtol: 1.0e-3}",
        )
    )
    (manifests / "resnet_script.yaml").write_text(
        MANIFEST.format(
            name="resnet_script",
            inputs=IMAGE,
            data="inputs.npz",
            frameworks="  - name: torch",
            paths="torch: resnet.pt",
            accuracy="  golden: golden.npz",
        )
    )
    _export_encoder(manifests)
    return root


IMAGE = "  - name: input\n    shape: [1, 8, 8]"
TOKENS = "  - name: tokens\n    shape: [12]\n    dtype: int64"


def _export_encoder(manifests: Path) -> None:
    torch.manual_seed(1)
    net = Encoder().eval()
    example = torch.randint(0, 100, (1, 12))
    torch.export.save(torch.export.export(net, (example,)), manifests / "encoder.pt2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (example,), str(manifests / "encoder.onnx"), input_names=["tokens"],
            output_names=["logits"], dynamo=False,
        )  # fmt: skip
    tokens = np.random.default_rng(3).integers(0, 100, (8, 12), dtype=np.int64)
    np.savez(manifests / "tokens.npz", inputs=tokens)
    (manifests / "encoder.yaml").write_text(
        MANIFEST.format(
            name="encoder",
            inputs=TOKENS,
            data="tokens.npz",
            frameworks="  - name: torch\n  - name: onnxruntime",
            paths="torch: encoder.pt2, onnxruntime: encoder.onnx",
            accuracy="  agreement: {reference: torch, atol: 1.0e-4, rtol: 1.0e-3}",
        )
    )


def _layers(db: Path) -> dict[str, list[str]]:
    with Store.from_location(db, create=False) as store:
        run = store.runs(limit=1)[0]
        return {
            item: [row["layer"] if isinstance(row, dict) else row.layer for row in record.layers]
            for item, record in store.latest_results(run.id).items()
        }


def test_a_users_exported_resnet_loads_agrees_and_keeps_its_blocks_apart(
    project: Path, pytester: pytest.Pytester
) -> None:
    with contextlib.chdir(project):
        result = pytester.runpytest_subprocess(
            "--mlscope", "-p", "no:cacheprovider", "--mlscope-trace=framework", *TIMING
        )
    result.assert_outcomes(passed=5)
    layers = _layers(project / ".mlscope" / "results.db")
    exported = layers["resnet[torch-cpu-bs1-single_stream]"]
    onnx_rows = layers["resnet[onnxruntime-cpu-bs1-single_stream]"]
    for rows in (exported, onnx_rows):
        assert set(BLOCK_LAYERS) <= set(rows), rows
        assert "conv1" not in rows and "conv2" not in rows  # no merged row
    assert {"layers.0.bn1", "layers.2.bn2"} <= set(exported)  # torch keeps BatchNorm apart
    assert len(exported) == len(set(exported))
    # The nodes ONNX Runtime inserts around its NCHWc convolutions count under the layer they
    # serve, in a row of their own op, never as a layer named after ORT's node.
    with Store.from_location(project / ".mlscope" / "results.db", create=False) as store:
        record = store.latest_results(store.runs(limit=1)[0].id)[
            "resnet[onnxruntime-cpu-bs1-single_stream]"
        ]
    reorders = [row.layer for row in record.layers if row.op_type.startswith("Reorder")]
    assert reorders and all(layer in ("stem", "pool", *BLOCK_LAYERS) for layer in reorders)
    assert not any("Reorder" in row or "_token_" in row for row in onnx_rows), onnx_rows
    # TorchScript takes no hooks: it is timed and checked, and says why it has no layer rows.
    assert layers["resnet_script[torch-cpu-bs1-single_stream]"] == ["(other)"]
    # The transformer's two layers stay apart on both frameworks; attention is a layer of its
    # own in torch (it computes through out_proj's weight without calling it).
    for framework in ("torch", "onnxruntime"):
        rows = layers[f"encoder[{framework}-cpu-bs1-single_stream]"]
        for index in (0, 1):
            assert any(r.startswith(f"encoder.layers.{index}.") for r in rows), rows
    torch_rows = layers["encoder[torch-cpu-bs1-single_stream]"]
    assert {"encoder.layers.0.self_attn", "encoder.layers.1.linear2"} <= set(torch_rows)


def test_a_torch_save_state_dict_under_a_pt_name_is_refused_with_the_fix(tmp_path: Path) -> None:
    from pytest_mlscope.errors import ArtifactError
    from pytest_mlscope.zoo.files import file_format

    path = tmp_path / "weights.pt"
    torch.save(_network().state_dict(), path)
    with pytest.raises(ArtifactError, match=r"torch\.jit\.save, or with torch\.export\.save"):
        file_format(path)


def test_onnx_runtime_sees_the_export_the_user_made(project: Path) -> None:
    # The ONNX file is the user's own export, not a zoo build: its node names carry their
    # module tree, which is what the layer table reads.
    session = ort.InferenceSession(str(project / "manifests" / "resnet.onnx"))
    assert [i.name for i in session.get_inputs()] == ["input"]


def _predictors(manifests: Path, name: str, onnx_file: str | None = None) -> tuple[Any, Any]:
    from pytest_mlscope.predictors.onnxruntime import OnnxRuntimePredictor
    from pytest_mlscope.predictors.torch import TorchPredictor
    from pytest_mlscope.protocol import ArtifactRef

    exported = TorchPredictor()
    program = manifests / f"{name}.pt2"
    exported.load(ArtifactRef(format="torch_export", path=str(program), sha256=""))
    runtime = OnnxRuntimePredictor()
    path = manifests / (onnx_file or f"{name}.onnx")
    runtime.load(ArtifactRef(format="onnx", path=str(path), sha256=""))
    return exported, runtime


@pytest.mark.parametrize(("name", "data"), [("resnet", "inputs.npz"), ("encoder", "tokens.npz")])
def test_the_users_faithful_exports_show_no_diverging_layer(
    project: Path, name: str, data: str
) -> None:
    """Every layer ONNX Runtime names in the export matches one of torch's, BatchNorm folded into
    the convolution before it included: a real divergence is never blamed on the converter."""
    from pytest_mlscope.divergence import first_divergence

    manifests = project / "manifests"
    with np.load(manifests / data) as archive:
        batch = archive["inputs"][:1]
    exported, runtime = _predictors(manifests, name)
    reference = exported.layer_outputs(exported.prepare_input(batch))
    layers = runtime.layer_outputs(runtime.prepare_input(batch))
    found = first_divergence(reference, layers, atol=1e-4, rtol=1e-3)
    assert found.layer is None, found.describe("torch")
    assert found.compared >= (10 if name == "resnet" else 8), [n for n, _ in layers]


def _change_one_weight(path: Path, node: str = "layers.1/conv2/Conv") -> None:
    """One weight of one convolution of the team's ONNX file, changed in place."""
    model = onnx.load(str(path))
    weights = {init.name: init for init in model.graph.initializer}
    conv = next(n for n in model.graph.node if n.name.endswith(node))
    changed = onnx.numpy_helper.to_array(weights[conv.input[1]]).copy()
    changed[0, 0, 1, 1] += 0.5
    weights[conv.input[1]].CopyFrom(onnx.numpy_helper.from_array(changed, conv.input[1]))
    onnx.save(model, str(path))


def test_a_weight_changed_in_one_convolution_is_named_as_the_first_divergence(
    project: Path, pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """The team's ONNX file, one weight of ``layers.1.conv2`` changed: agreement fails, and the
    failure, the stored result and the report name that layer, not a layer BatchNorm was folded
    into upstream (``layers.0.conv1`` computes what torch's ``layers.0.bn1`` outputs)."""
    import shutil

    copy = tmp_path / "team"
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns(".mlscope"))
    path = copy / "manifests" / "resnet.onnx"
    _change_one_weight(path)
    with contextlib.chdir(copy):
        result = pytester.runpytest_subprocess(
            "--mlscope", "-p", "no:cacheprovider", "-k", "resnet and not script", *TIMING
        )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*first diverging layer: layers.1.conv2 (*"])
    with Store.from_location(copy / ".mlscope" / "results.db", create=False) as store:
        records = store.latest_results(store.runs(limit=1)[0].id)
    check = records["resnet[onnxruntime-cpu-bs1-single_stream]"].accuracy.check("agreement")
    assert not check.passed
    assert "first diverging layer: layers.1.conv2 (" in check.detail
    assert "earlier layers matched" in check.detail


def test_a_golden_miss_names_the_first_layer_that_changed_since_the_golden(
    project: Path, pytester: pytest.Pytester, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``mlscope golden`` keeps, beside the golden outputs, each layer's output on the first
    sample; when the team's ONNX file later computes ``layers.1.conv2`` differently, the golden
    miss names that layer (no second framework is needed: the golden's own layers are the
    reference)."""
    import shutil

    from pytest_mlscope.cli import main

    copy = tmp_path / "team"
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns(".mlscope"))
    (copy / "manifests" / "resnet_onnx.yaml").write_text(
        MANIFEST.format(
            name="resnet_onnx",
            inputs=IMAGE,
            data="inputs.npz",
            frameworks="  - name: onnxruntime",
            paths="onnxruntime: resnet.onnx",
            accuracy="  golden: {path: goldens/resnet_onnx.npz, atol: 1.0e-4, rtol: 1.0e-3}",
        )
    )
    with contextlib.chdir(copy):
        assert main(["golden", "manifests/resnet_onnx.yaml"]) == 0
    out = capsys.readouterr().out
    assert "outputs of onnxruntime" in out
    assert "resnet_onnx.layers.npz" in out and "first layer that changed" in out
    path = copy / "manifests" / "resnet.onnx"
    _change_one_weight(path)
    with contextlib.chdir(copy):
        result = pytester.runpytest_subprocess(
            "--mlscope", "-p", "no:cacheprovider", "-k", "resnet_onnx", *TIMING
        )
    result.assert_outcomes(failed=1)
    with Store.from_location(copy / ".mlscope" / "results.db", create=False) as store:
        records = store.latest_results(store.runs(limit=1)[0].id)
    check = records["resnet_onnx[onnxruntime-cpu-bs1-single_stream]"].accuracy.check("golden")
    assert check is not None and not check.passed
    assert "first diverging layer: layers.1.conv2 (" in check.detail, check.detail
    assert "matches none of the golden's layers" in check.detail

"""The formats users save beyond ONNX and torch.export, each made the way its users make it, in
the framework's own environment: an MXNet Gluon network exported to ``-symbol.json`` and
``.params`` (in the MXNet venv stack), a Caffe deploy prototxt and caffemodel written by Caffe
(in the Caffe image), a torch state dict saved from a training checkpoint with the class that
reads it, and a TensorRT plan with the release that built it. The zoo builds none of them."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch  # imported once per process: pytester drops modules a test imports (conftest)
from _services import requires_ci

from pytest_mlscope import containers, stacks
from pytest_mlscope.errors import ArtifactError, ManifestError, StackUnavailable
from pytest_mlscope.manifest import load_manifest
from pytest_mlscope.protocol import ArtifactRef
from pytest_mlscope.store import Store
from pytest_mlscope.zoo.cache import ArtifactCache
from pytest_mlscope.zoo.files import TREE_FORMATS, sha256_path

QUICK = ("--mlscope-min-count=20", "--mlscope-min-duration=0.05", "--mlscope-warmup=2")

MANIFEST = """\
name: team_resnet
framework:
  - name: {framework}
model:
  source: {{path: {{{framework}: {files}}}}}
inputs:
  - name: x
    shape: [3, 16, 16]
outputs:
  - name: logits
dataset: {{name: npz, path: inputs.npz}}
accuracy:
  golden: {{path: golden.npz, atol: 1.0e-4, rtol: 1.0e-3}}
performance:
  batch_sizes: [1]
  scenarios: [single_stream]
"""


def _team(root: Path, name: str, manifest: str, folder: str = "models") -> Path:
    """A team's project: its pyproject pointing at a folder of manifests, and one manifest."""
    models = root / folder
    models.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(
        f'[tool.pytest.ini_options]\nmlscope_manifests = ["{folder}"]\n'
    )
    (models / f"{name}.yaml").write_text(manifest)
    return models


def _project(root: Path, framework: str, files: str) -> Path:
    manifest = MANIFEST.format(framework=framework, files=files)
    return _team(root, "team_resnet", manifest, folder="manifests")


def _layers(project: Path, item: str) -> list[str]:
    with Store.from_location(project / ".mlscope" / "results.db", create=False) as store:
        record = store.latest_results(store.runs(limit=1)[0].id)[item]
    assert record.accuracy is not None and record.accuracy.passed, record.accuracy
    return [row.layer for row in record.layers]


# -- MXNet: HybridBlock.export ---------------------------------------------------------------------

MXNET_EXPORT = """
import mxnet as mx
import numpy as np
from mxnet.gluon import nn


class Block(nn.HybridBlock):
    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.conv1 = nn.Conv2D(channels, 3, padding=1, use_bias=False)
            self.bn1 = nn.BatchNorm()
            self.conv2 = nn.Conv2D(channels, 3, padding=1, use_bias=False)
            self.bn2 = nn.BatchNorm()

    def hybrid_forward(self, F, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(y)))


mx.random.seed(0)
net = nn.HybridSequential(prefix="net_")
with net.name_scope():
    net.add(nn.Conv2D(8, 3, padding=1, prefix="stem_"))
    for i in range(3):
        net.add(Block(8, prefix=f"layers{i}_"))
    net.add(nn.GlobalAvgPool2D(prefix="pool_"), nn.Dense(10, prefix="head_"))
net.initialize(mx.init.Xavier())
net(mx.nd.zeros((1, 3, 16, 16)))  # shapes are inferred on the first call
for p in net.collect_params().values():  # trained-looking BatchNorm statistics
    if p.name.endswith(("running_mean", "running_var")):
        p.set_data(mx.nd.random.uniform(0.5, 1.5, p.shape))
net.hybridize()
inputs = np.random.default_rng(0).standard_normal((16, 3, 16, 16)).astype(np.float32)
golden = net(mx.nd.array(inputs)).asnumpy()
net.export("net", epoch=0)
np.savez("inputs.npz", inputs=inputs)
np.savez("golden.npz", logits=golden)
"""


def test_an_mxnet_export_loads_by_its_symbol_file_and_keeps_its_blocks_apart(
    tmp_path: Path, pytester: pytest.Pytester
) -> None:
    """``net.export("net")`` writes ``net-symbol.json`` and ``net-0000.params``; the manifest
    names the symbol file and the params are found beside it. The item meets the golden the
    user's own MXNet computed, its layer table has a row per node of each block, and a baseline
    keeps both files as one artifact."""
    mxnet = stacks.get("mxnet")
    if stacks.unavailable(mxnet):
        requires_ci(stacks.unavailable(mxnet) or "")
    manifests = _project(tmp_path / "team", "mxnet", "net-symbol.json")
    (manifests / "export.py").write_text(MXNET_EXPORT)
    subprocess.run(
        [str(stacks.python(mxnet)), "export.py"], cwd=manifests, check=True, capture_output=True
    )
    assert {"net-symbol.json", "net-0000.params"} <= {p.name for p in manifests.iterdir()}
    with contextlib.chdir(tmp_path / "team"):
        result = pytester.runpytest_subprocess(
            "--mlscope", "-p", "no:cacheprovider", "--mlscope-trace=framework", *QUICK,
            "--mlscope-save-baseline=main",
        )  # fmt: skip
    result.assert_outcomes(passed=1)
    layers = _layers(tmp_path / "team", "team_resnet[mxnet-cpu-bs1-single_stream]")
    for block in range(3):
        for node in ("conv0", "batchnorm0", "conv1", "batchnorm1", "_plus0"):
            assert layers.count(f"net_layers{block}_{node}") == 1, layers
    assert {"net_stem", "net_head"} <= set(layers)
    files = [manifests / "net-symbol.json", manifests / "net-0000.params"]
    with Store.from_location(tmp_path / "team" / ".mlscope" / "results.db", create=False) as store:
        (kept,) = store.baseline_artifacts("main")
        assert kept.sha256 == sha256_path(files)
        fetched = store.fetch_artifact(kept.sha256, tmp_path / "elsewhere")
    assert TREE_FORMATS["mxnet_symbol"](fetched)
    assert sorted(p.name for p in fetched.iterdir()) == ["net-0000.params", "net-symbol.json"]


# -- Caffe: a deploy prototxt and the caffemodel Caffe saved ---------------------------------------

CAFFE_EXPORT = '''
import caffe
import numpy as np

TEXT = """
name: "team_resnet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 16 dim: 16 } } }
layer { name: "stem" type: "Convolution" bottom: "data" top: "stem"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 weight_filler { type: "msra" } } }
"""
BLOCK = """
layer {{ name: "{p}.conv1" type: "Convolution" bottom: "{x}" top: "{p}.conv1"
  convolution_param {{ num_output: 8 kernel_size: 3 pad: 1 bias_term: false weight_filler {{ type: "msra" }} }} }}
layer {{ name: "{p}.bn1" type: "BatchNorm" bottom: "{p}.conv1" top: "{p}.conv1" }}
layer {{ name: "{p}.scale1" type: "Scale" bottom: "{p}.conv1" top: "{p}.conv1" scale_param {{ bias_term: true }} }}
layer {{ name: "{p}.relu1" type: "ReLU" bottom: "{p}.conv1" top: "{p}.conv1" }}
layer {{ name: "{p}.conv2" type: "Convolution" bottom: "{p}.conv1" top: "{p}.conv2"
  convolution_param {{ num_output: 8 kernel_size: 3 pad: 1 bias_term: false weight_filler {{ type: "msra" }} }} }}
layer {{ name: "{p}.add" type: "Eltwise" bottom: "{x}" bottom: "{p}.conv2" top: "{p}.out" }}
layer {{ name: "{p}.relu2" type: "ReLU" bottom: "{p}.out" top: "{p}.out" }}
"""
HEAD = """
layer { name: "pool" type: "Pooling" bottom: "layers.2.out" top: "pool" pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "logits" inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
"""
text, previous = TEXT, "stem"
for i in range(3):
    text += BLOCK.format(p=f"layers.{i}", x=previous)
    previous = f"layers.{i}.out"
with open("deploy.prototxt", "w") as handle:
    handle.write(text + HEAD)
caffe.set_random_seed(0)
caffe.set_mode_cpu()
net = caffe.Net("deploy.prototxt", caffe.TEST)
rng = np.random.default_rng(0)
for name, blobs in net.params.items():
    if ".bn" in name:  # trained-looking statistics: mean, variance, their scale factor
        blobs[0].data[...] = rng.uniform(-0.1, 0.1, blobs[0].data.shape)
        blobs[1].data[...] = rng.uniform(0.5, 1.5, blobs[1].data.shape)
        blobs[2].data[...] = 1.0
    elif ".scale" in name:
        blobs[0].data[...] = rng.uniform(0.5, 1.5, blobs[0].data.shape)
net.save("net.caffemodel")
inputs = rng.standard_normal((16, 3, 16, 16)).astype(np.float32)
golden = []
for sample in inputs:
    net.blobs["data"].data[...] = sample
    golden.append(net.forward()["logits"][0].copy())
np.savez("inputs.npz", inputs=inputs)
np.savez("golden.npz", logits=np.stack(golden))
'''  # noqa: E501 - prototxt as Caffe users write it, one layer a line


@pytest.fixture(scope="module")
def docker_client() -> Any:
    """The Docker client, made once per module and before any pytester test starts: pytester
    drops the modules a test imports, and a second import of requests' classes breaks the next
    client ("You can only merge into CookieJar")."""
    try:
        client = containers.client()
    except containers.ContainerError as exc:
        requires_ci(str(exc))
        raise
    image = containers.default_image("caffe")
    if containers.find_image(client, image) is None:
        requires_ci(
            f"no image {image}: `mlscope containers base caffe`, then "
            "`mlscope containers build caffe`"
        )
    return client


def test_a_caffe_prototxt_and_caffemodel_written_by_caffe_meet_their_golden(
    tmp_path: Path, pytester: pytest.Pytester, docker_client: Any
) -> None:
    """Caffe itself (in the Caffe image) writes the deploy prototxt and the caffemodel, as a
    Caffe user's files are; the manifest lists both, and the item runs them in the container,
    meets Caffe's own golden outputs and names each block's layers by their prototxt names."""
    client, image = docker_client, containers.default_image("caffe")
    project = tmp_path / "team"
    manifests = _project(project, "caffe", "[deploy.prototxt, net.caffemodel]")
    (manifests / "export.py").write_text(CAFFE_EXPORT)
    for folder in (tmp_path, project, manifests, Path(os.environ["MLSCOPE_CACHE"])):
        os.chmod(folder, 0o755)  # the worker's unprivileged user reads them
    client.containers.run(
        image, ["python3", "export.py"], entrypoint=[], working_dir="/work",
        volumes={str(manifests): {"bind": "/work", "mode": "rw"}},
        user=f"{os.getuid()}:{os.getgid()}", environment={"MPLCONFIGDIR": "/tmp"}, remove=True,
    )  # fmt: skip
    with contextlib.chdir(project):
        result = pytester.runpytest_subprocess(
            "--mlscope", "-p", "no:cacheprovider", "--mlscope-trace=framework", *QUICK
        )
    result.assert_outcomes(passed=1)
    layers = _layers(project, "team_resnet[caffe-cpu-bs1-single_stream]")
    for block in range(3):
        for layer in ("conv1", "bn1", "scale1", "conv2", "add"):
            assert layers.count(f"layers.{block}.{layer}") == 1, layers
    assert {"stem", "fc"} <= set(layers)


# -- torch: a state dict from a training checkpoint, with its class --------------------------------

NETDEF = """
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(y)))


class TeamNet(nn.Module):
    def __init__(self, width=8, blocks=2):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.layers = nn.Sequential(*[Block(width) for _ in range(blocks)])
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        return self.head(self.layers(self.stem(x)).mean(dim=(2, 3)))
"""

STATE_DICT_MANIFEST = """\
name: team_net
framework:
  - name: torch
  - name: onnxruntime
model:
  source:
    path:
      torch: {path: checkpoint.pt, format: torch_state_dict, module: "netdef:TeamNet",
              kwargs: {width: 8, blocks: 3}}
      onnxruntime: net.onnx
inputs:
  - name: x
    shape: [3, 16, 16]
outputs:
  - name: logits
dataset: {name: npz, path: inputs.npz}
accuracy:
  agreement: {reference: torch, atol: 1.0e-4, rtol: 1.0e-3}
performance:
  batch_sizes: [1]
  scenarios: [single_stream]
"""


def _trained(project: Path, seed: int) -> None:
    """What a training script leaves: a checkpoint with the model's state dict (and the
    optimizer's), and the ONNX export the team serves."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"netdef_{seed}", project / "netdef.py")
    assert spec is not None and spec.loader is not None
    netdef = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(netdef)
    torch.manual_seed(seed)
    model = netdef.TeamNet(width=8, blocks=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for _ in range(3):  # a few steps, so BatchNorm's running statistics are not the defaults
        optimizer.zero_grad()
        model(torch.randn(8, 3, 16, 16)).square().mean().backward()
        optimizer.step()
    model.eval()
    torch.save(
        {"epoch": 3, "model_state_dict": model.state_dict(),
         "optimizer_state_dict": optimizer.state_dict()},
        project / "models" / "checkpoint.pt",
    )  # fmt: skip
    torch.onnx.export(
        model, (torch.zeros(1, 3, 16, 16),), str(project / "models" / "net.onnx"),
        input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "n"}},
        dynamo=False,
    )  # fmt: skip


def test_a_state_dict_loads_with_its_class_and_a_baseline_fetched_elsewhere_keeps_it(
    tmp_path: Path, pytester: pytest.Pytester
) -> None:
    """A checkpoint's state dict with ``module: netdef:TeamNet`` (the project's own class,
    imported from its rootdir in the worker) agrees with the team's ONNX export. A second
    checkout with retrained weights and an empty cache times the baseline's checkpoint,
    fetched from the database, beside its own: the class and its kwargs come from the manifest,
    since a fetched file carries none."""
    one = tmp_path / "one"
    _team(one, "team_net", STATE_DICT_MANIFEST)
    (one / "netdef.py").write_text(NETDEF)
    inputs = np.random.default_rng(3).standard_normal((8, 3, 16, 16)).astype(np.float32)
    np.savez(one / "models" / "inputs.npz", inputs=inputs)
    _trained(one, seed=1)

    def session(*args: str) -> pytest.RunResult:
        return pytester.runpytest_subprocess(
            "--mlscope", "-p", "no:cacheprovider", *args, *QUICK, "--mlscope-db=../ci.db",
            "--mlscope-cache=cache", "--mlscope-trace=framework",
        )  # fmt: skip

    with contextlib.chdir(one):
        session("--mlscope-save-baseline=main").assert_outcomes(passed=2)
    two = tmp_path / "two"
    shutil.copytree(one, two, ignore=shutil.ignore_patterns(".mlscope", "cache", "__pycache__"))
    _trained(two, seed=2)
    with contextlib.chdir(two):
        # the plumbing, not the statistics: a threshold no noise reaches
        session("--mlscope-baseline=main", "-k", "torch", "--mlscope-threshold=3").assert_outcomes(
            passed=1
        )
    with Store.from_location(tmp_path / "ci.db", create=False) as store:
        runs = store.runs(limit=2)
        before = store.latest_results(runs[1].id)
        second = store.latest_results(runs[0].id)["team_net[torch-cpu-bs1-single_stream]"]
    first, onnx = (before[f"team_net[{f}-cpu-bs1-single_stream]"] for f in ("torch", "onnxruntime"))
    assert onnx.accuracy is not None and onnx.accuracy.passed, onnx.accuracy
    checks = {c.name: c.passed for c in onnx.accuracy.checks}
    assert checks == {"agreement": True}, checks
    assert {"layers.0.conv1", "layers.2.bn2", "head"} <= {row.layer for row in first.layers}
    assert second.verdict is not None and second.verdict["design"] == "interleaved", second.verdict
    assert "fetched from the results database" in str(second.verdict), second.verdict


def test_a_state_dict_that_does_not_fit_its_class_says_so(tmp_path: Path) -> None:
    from pytest_mlscope.predictors.torch import TorchPredictor

    torch.save({"weight": torch.zeros(3, 3)}, tmp_path / "weights.pt")
    artifact = ArtifactRef(
        format="torch_state_dict", path=str(tmp_path / "weights.pt"), sha256="0" * 64,
        metadata={"module": "torch.nn:Linear", "kwargs": {"in_features": 4, "out_features": 2}},
    )  # fmt: skip
    with pytest.raises(ArtifactError, match=r"does not fit torch.nn:Linear\(in_features=4.*"):
        TorchPredictor().load(artifact)
    torch.save(torch.nn.Linear(4, 2), tmp_path / "module.pt")  # a whole pickled module
    with pytest.raises(ArtifactError, match="not a state dict torch can read with weights_only"):
        TorchPredictor().load(artifact.model_copy(update={"path": str(tmp_path / "module.pt")}))


# -- the files of one model, staged; what the manifest says about them -----------------------------


def test_the_files_of_one_model_are_one_artifact_wherever_they_lie(tmp_path: Path) -> None:
    """Two files make one artifact: a folder in the cache holding both under their names, whose
    sha256 is theirs however they were named in the manifest; a second look reuses it."""
    manifests = _project(tmp_path, "mxnet", "net-symbol.json")
    (manifests / "net-symbol.json").write_text('{"nodes": []}')
    (manifests / "net-0000.params").write_bytes(b"\x01" * 64)
    (manifests / "inputs.npz").write_bytes(b"")
    (manifests / "golden.npz").write_bytes(b"")
    cache = ArtifactCache(tmp_path / "cache")
    manifest = load_manifest(manifests / "team_resnet.yaml")
    by_symbol = cache.for_framework(manifest, "mxnet", ("mxnet_symbol",))
    assert by_symbol.format == "mxnet_symbol"
    assert Path(by_symbol.path).parent == tmp_path / "cache" / "files"
    assert sha256_path(Path(by_symbol.path)) == by_symbol.sha256
    text = (manifests / "team_resnet.yaml").read_text()
    (manifests / "team_resnet.yaml").write_text(
        text.replace("net-symbol.json", "[net-0000.params, net-symbol.json]")
    )
    listed = cache.for_framework(
        load_manifest(manifests / "team_resnet.yaml"), "mxnet", ("mxnet_symbol",)
    )
    assert (listed.path, listed.sha256) == (by_symbol.path, by_symbol.sha256)
    # A second epoch beside the first: which params go with the symbol is no longer clear.
    (manifests / "net-0001.params").write_bytes(b"\x02" * 64)
    (manifests / "team_resnet.yaml").write_text(text)
    with pytest.raises(ArtifactError, match=r"found net-0000.params, net-0001.params\): name both"):
        cache.for_framework(load_manifest(manifests / "team_resnet.yaml"), "mxnet", ("x",))


def test_what_a_model_file_entry_needs_is_said_at_its_line(tmp_path: Path) -> None:
    def problems(entry: str) -> str:
        (tmp_path / "m.yaml").write_text(
            MANIFEST.format(framework="tensorrt", files="x").replace(
                "{path: {tensorrt: x}}", "\n    path:\n      tensorrt: " + entry
            )
        )
        with pytest.raises(ManifestError) as caught:
            load_manifest(tmp_path / "m.yaml", require_files=False)
        return str(caught.value)

    assert "m.yaml:7: model.source.path.tensorrt: expected 'built_with: <TensorRT version>'" in (
        problems("{path: net.plan, format: tensorrt_plan}")
    )
    assert "m.yaml:7: model.source.path.tensorrt.built_with: expected a TensorRT version" in (
        problems("{path: net.plan, format: tensorrt_plan, built_with: latest}")
    )
    assert "m.yaml:7: model.source.path.tensorrt.format: expected 'onnx', " in (
        problems("{path: net.plan, format: plan}")
    )
    assert "m.yaml:7: model.source.path.tensorrt: expected format torch_state_dict with" in (
        problems("{path: net.plan, module: 'a:B'}")
    )
    assert "m.yaml:7: model.source.path.tensorrt: expected a file name, a list of the files" in (
        problems("7")
    )


def test_a_tensorrt_plan_runs_only_on_the_release_that_built_it() -> None:
    from pytest_mlscope.predictors.tensorrt import plan_refused

    plan = ArtifactRef(
        format="tensorrt_plan", path="net.plan", sha256="0" * 64, metadata={"built_with": "10.3.0"}
    )
    plan_refused(plan, "10.3.0.26")  # the same release, another build of it
    with pytest.raises(StackUnavailable, match=r"built with TensorRT 10.3.0 cannot run on Tens"):
        plan_refused(plan, "10.8.0")


def test_a_plan_named_by_its_suffix_keeps_its_release_for_the_worker(tmp_path: Path) -> None:
    manifests = _project(tmp_path, "tensorrt", "{path: net.plan, built_with: 10.3.0}")
    (manifests / "net.plan").write_bytes(b"plan")
    for name in ("inputs.npz", "golden.npz"):
        (manifests / name).write_bytes(b"")
    manifest = load_manifest(manifests / "team_resnet.yaml")
    artifact = ArtifactCache(tmp_path / "cache").for_framework(manifest, "tensorrt", ("onnx",))
    assert (artifact.format, artifact.metadata) == ("tensorrt_plan", {"built_with": "10.3.0"})
    assert artifact.path == str(manifests / "net.plan")


# -- where an MXNet port parts from torch ----------------------------------------------------------

PORT_MANIFEST = """\
name: digits_port
framework:
  - name: torch
  - name: mxnet
model:
  source:
    path:
      torch: {path: digits.pt, format: torch_state_dict, module: "pytest_mlscope.zoo.models:DigitsCNN"}
      mxnet: digits-symbol.json
inputs:
  - name: image
    shape: [1, 8, 8]
outputs:
  - name: logits
dataset: {name: npz, path: inputs.npz}
accuracy:
  agreement: {reference: torch, atol: 1.0e-4, rtol: 1.0e-3}
performance:
  batch_sizes: [1]
  scenarios: [single_stream]
"""  # noqa: E501 - a manifest as a team writes it

PORT_EXPORT = """
import sys

import mxnet as mx
import numpy as np

from pytest_mlscope.zoo import gluon_models

weights = dict(np.load("weights.npz"))
weights["features.2.weight"][0] *= float(sys.argv[1])  # the port's second convolution
net = gluon_models.digits_cnn(weights)
net(mx.nd.zeros((1, 1, 8, 8)))
net.export("digits", epoch=0)
"""


def test_an_mxnet_port_that_parts_from_torch_names_its_node(
    tmp_path: Path, pytester: pytest.Pytester
) -> None:
    """A team's Gluon port of a torch network, exported from MXNet with the torch weights: a
    faithful port agrees; one whose second convolution's first filter is off fails agreement,
    and the failure names that convolution's node (Gluon's ``conv1``, closest to torch's
    ``features.2``: the two name their layers differently, and are matched by their outputs)."""
    from pytest_mlscope.zoo.models import DigitsCNN

    mxnet = stacks.get("mxnet")
    if stacks.unavailable(mxnet):
        requires_ci(stacks.unavailable(mxnet) or "")
    project = tmp_path / "team"
    models = _team(project, "digits_port", PORT_MANIFEST)
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    torch.save(model.state_dict(), models / "digits.pt")
    np.savez(models / "weights.npz", **{k: v.numpy() for k, v in model.state_dict().items()})
    inputs = np.random.default_rng(5).standard_normal((8, 1, 8, 8)).astype(np.float32)
    np.savez(models / "inputs.npz", inputs=inputs)
    (models / "export.py").write_text(PORT_EXPORT)
    repo = Path(__file__).resolve().parent.parent

    def exported(scale: str) -> pytest.RunResult:
        subprocess.run(
            [str(stacks.python(mxnet)), "export.py", scale], cwd=models, check=True,
            capture_output=True, env={**os.environ, "PYTHONPATH": str(repo)},
        )  # fmt: skip
        with contextlib.chdir(project):
            return pytester.runpytest_subprocess("--mlscope", "-p", "no:cacheprovider", *QUICK)

    exported("1.0").assert_outcomes(passed=2)
    exported("1.5").assert_outcomes(passed=1, failed=1)
    with Store.from_location(project / ".mlscope" / "results.db", create=False) as store:
        record = store.latest_results(store.runs(limit=1)[0].id)[
            "digits_port[mxnet-cpu-bs1-single_stream]"
        ]
    assert record.accuracy is not None
    check = record.accuracy.check("agreement")
    assert check is not None and not check.passed
    assert "first diverging layer: conv1 (" in check.detail, check.detail
    assert "closest: features.2," in check.detail and "2 earlier layers matched" in check.detail


CAFFE_PORT_MANIFEST = PORT_MANIFEST.replace("mxnet", "caffe").replace(
    "caffe: digits-symbol.json", "caffe: [digits_cnn.prototxt, digits_cnn.caffemodel]"
)


def test_a_caffe_port_that_parts_from_torch_names_its_layer(
    tmp_path: Path, pytester: pytest.Pytester, docker_client: Any
) -> None:
    """Caffe runs one layer at a time to expose each layer's output (its in-place ReLUs
    overwrite their input's blob): a faithful port of a torch network agrees; one whose second
    convolution's first filter is off fails agreement, and the failure names that layer."""
    from pytest_mlscope.zoo import caffe_models
    from pytest_mlscope.zoo.models import DigitsCNN

    project = tmp_path / "team"
    models = _team(project, "digits_port", CAFFE_PORT_MANIFEST)
    for folder in (tmp_path, project, models, Path(os.environ["MLSCOPE_CACHE"])):
        os.chmod(folder, 0o755)  # the worker's unprivileged user reads them
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    torch.save(model.state_dict(), models / "digits.pt")
    weights = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    inputs = np.random.default_rng(5).standard_normal((8, 1, 8, 8)).astype(np.float32)
    np.savez(models / "inputs.npz", inputs=inputs)

    def ported(scale: float) -> pytest.RunResult:
        changed = {**weights, "features.2.weight": weights["features.2.weight"].copy()}
        changed["features.2.weight"][0] *= scale
        caffe_models.write("digits_cnn", models, changed)
        with contextlib.chdir(project):
            return pytester.runpytest_subprocess("--mlscope", "-p", "no:cacheprovider", *QUICK)

    ported(1.0).assert_outcomes(passed=2)
    ported(1.5).assert_outcomes(passed=1, failed=1)
    with Store.from_location(project / ".mlscope" / "results.db", create=False) as store:
        record = store.latest_results(store.runs(limit=1)[0].id)[
            "digits_port[caffe-cpu-bs1-single_stream]"
        ]
    assert record.accuracy is not None
    check = record.accuracy.check("agreement")
    assert check is not None and not check.passed
    assert "first diverging layer: features.2 (" in check.detail, check.detail
    assert "2 earlier layers matched" in check.detail, check.detail

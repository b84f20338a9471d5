"""Caffe: the zoo's Caffe nets read back by protobuf itself, the container stack's plan, and the
items run for real in the image `.ci/run` builds (Debian bullseye's Caffe), agreeing with torch.

Without a Docker daemon or the image the container tests skip on a laptop and fail under CI=true.
Build the image with ``mlscope containers base caffe`` then ``mlscope containers build caffe``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from _services import requires_ci

from pytest_mlscope import containers
from pytest_mlscope.manifest import load_manifest
from pytest_mlscope.protocol import Cell
from pytest_mlscope.session import MlscopeSession, Settings
from pytest_mlscope.store import Store
from pytest_mlscope.tracing.layers import OTHER
from pytest_mlscope.zoo.cache import ArtifactCache

REPO = Path(__file__).resolve().parent.parent
MANIFESTS = REPO / "manifests"
CAFFE_IMAGE = containers.default_image("caffe")


def _net_parameter_class() -> type:
    """NetParameter with the fields a caffemodel's weights use, from protobuf's own descriptors:
    an independent reader of what ``zoo.caffe_models`` encodes by hand."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fd = descriptor_pb2.FileDescriptorProto(name="mlscope_test_caffe.proto", package="t")
    f = descriptor_pb2.FieldDescriptorProto
    optional, repeated = f.LABEL_OPTIONAL, f.LABEL_REPEATED

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        proto = fd.message_type.add(name=name)
        for field_name, number, label, kind, type_name in fields:
            added = proto.field.add(name=field_name, number=number, label=label, type=kind)
            if type_name:
                added.type_name = type_name
            if label == repeated and kind in (f.TYPE_FLOAT, f.TYPE_INT64):
                added.options.packed = True

    message("BlobShape", ("dim", 1, repeated, f.TYPE_INT64, ""))
    message(
        "BlobProto",
        ("data", 5, repeated, f.TYPE_FLOAT, ""),
        ("shape", 7, optional, f.TYPE_MESSAGE, ".t.BlobShape"),
    )
    message(
        "LayerParameter",
        ("name", 1, optional, f.TYPE_STRING, ""),
        ("type", 2, optional, f.TYPE_STRING, ""),
        ("blobs", 7, repeated, f.TYPE_MESSAGE, ".t.BlobProto"),
    )
    message(
        "NetParameter",
        ("name", 1, optional, f.TYPE_STRING, ""),
        ("layer", 100, repeated, f.TYPE_MESSAGE, ".t.LayerParameter"),
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("t.NetParameter"))


@pytest.mark.parametrize("model", ["digits_cnn", "alexnet"])
def test_the_caffemodel_holds_the_torch_weights_under_the_torch_names(
    model: str, artifact_dir: Path
) -> None:
    manifest = load_manifest(MANIFESTS / f"{model}.yaml")
    artifacts = ArtifactCache(artifact_dir).artifacts(manifest)
    caffe, weights = artifacts["caffe"], artifacts["numpy_weights"]
    net = _net_parameter_class()()
    net.ParseFromString(Path(caffe.path).read_bytes())
    assert net.name == model
    with np.load(weights.path) as stored:
        expected = {name: stored[name] for name in stored.files}
    found = {}
    for layer in net.layer:
        assert layer.type in ("Convolution", "InnerProduct"), layer.type
        weight, bias = layer.blobs
        found[f"{layer.name}.weight"] = np.asarray(weight.data, np.float32).reshape(
            tuple(weight.shape.dim)
        )
        found[f"{layer.name}.bias"] = np.asarray(bias.data, np.float32).reshape(
            tuple(bias.shape.dim)
        )
    assert found.keys() == expected.keys()
    for name, array in expected.items():
        assert found[name].shape == array.shape, name
        np.testing.assert_array_equal(found[name], array, err_msg=name)
    # The deploy prototxt beside it: every weighted layer, in order, and the checksum recorded.
    prototxt = Path(caffe.path).with_name(caffe.metadata["prototxt"])
    text = prototxt.read_text()
    names = [line.split('"')[1] for line in text.splitlines() if line.startswith("layer {")]
    assert names[0] == "data"
    weighted = [n for n in names if f"{n}.weight" in expected]
    assert weighted == [layer.name for layer in net.layer]
    import hashlib

    assert hashlib.sha256(text.encode()).hexdigest() == caffe.metadata["prototxt_sha256"]


def test_the_caffe_plan_needs_its_base_and_reads_the_version_from_its_labels(
    tmp_path: Path,
) -> None:
    folder = None  # the recipes that ship with the package

    class Images:
        def __init__(self, labels: dict[str, str] | None) -> None:
            self.labels = labels

        def get(self, name: str) -> object:
            if self.labels is None:
                raise LookupError(name)
            return type("Image", (), {"id": "sha256:base", "labels": self.labels})()

    class Client:
        def __init__(self, labels: dict[str, str] | None) -> None:
            self.images = Images(labels)

    with pytest.raises(containers.ContainerError, match=r"`mlscope containers base caffe`"):
        containers.plan("caffe", folder, docker=Client(None))
    with pytest.raises(containers.ContainerError, match="python3-caffe"):
        containers.plan("caffe", folder, docker=Client({"org.mlscope.python": "3.11.2"}))
    labels = {
        "org.mlscope.python": "3.9.2",
        "org.mlscope.packages": "python3-caffe=1.0.0+git20180821.99bd997-8+b2 "
        "libopenblas0-pthread=0.3.13+ds-3+deb11u1",
    }
    made = containers.plan("caffe", folder, docker=Client(labels))
    assert (made.framework_version, made.python) == ("1.0.0", "3.9")
    assert made.base_image == "mlscope/base:bullseye-caffe"
    assert made.tag.startswith("mlscope/caffe:1.0.0-cpu-")
    assert "eval_type_backport>=0.2" in made.requirements
    assert not any(r.lower().startswith(("numpy", "scipy", "pytest")) for r in made.requirements)
    with pytest.raises(containers.ContainerError, match="needs another base"):
        containers.plan("caffe", folder, docker=Client(labels), framework_version="1.1.0")


def test_caffe_cells_run_in_the_container_whatever_the_runtime(tmp_path: Path) -> None:
    """No daemon here (DOCKER_HOST points at nothing): the reason names the container, the
    base script and the build command's stack, and it is a missing service (fails under CI)."""
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    shutil.copy(MANIFESTS / "digits_cnn.yaml", manifests)
    session = MlscopeSession(Settings(rootdir=tmp_path, manifest_paths=[manifests]))
    caffe = Cell(model="digits_cnn", framework="caffe")
    assert session.in_container(caffe)
    assert not session.in_container(Cell(model="digits_cnn", framework="torch"))
    assert session.image(caffe) == CAFFE_IMAGE
    previous = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = f"unix://{tmp_path}/no-docker.sock"
    try:
        reason, service = session.skip_reason(session.manifest("digits_cnn"), caffe)
    finally:
        if previous is None:
            del os.environ["DOCKER_HOST"]
        else:
            os.environ["DOCKER_HOST"] = previous
    assert service
    assert reason is not None and reason.startswith("caffe container: no Docker daemon answers")


# -- in the container ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def caffe_image() -> str:
    try:
        client = containers.client()
    except containers.ContainerError as exc:
        requires_ci(str(exc))
        raise
    if containers.find_image(client, CAFFE_IMAGE) is None:
        requires_ci(
            f"no image {CAFFE_IMAGE}: mlscope containers base caffe, then "
            "mlscope containers build caffe"
        )
    return CAFFE_IMAGE


def test_caffe_agrees_with_torch_and_names_every_layer(
    pytester: pytest.Pytester, caffe_image: str
) -> None:
    """The bundled models on Caffe in its container, from a session on the default subprocess
    runtime: agreement with torch holds, the image is recorded, the layer table is Caffe's."""
    for folder in (pytester.path, os.environ["MLSCOPE_CACHE"]):
        os.chmod(folder, 0o755)  # the container's unprivileged user reads them
    target = pytester.path / "manifests"
    target.mkdir()
    for name in ("digits_cnn", "alexnet"):
        shutil.copy(MANIFESTS / f"{name}.yaml", target)
    shutil.copytree(MANIFESTS / "goldens", target / "goldens")
    pytester.makeini("[pytest]\nmlscope_manifests = manifests\n")
    result = pytester.runpytest_subprocess(
        "--mlscope", "-p", "no:cacheprovider", "-k", "(torch or caffe) and bs1 and single_stream",
        "--mlscope-min-count", "5", "--mlscope-min-duration", "0.2", "--mlscope-warmup", "2",
        "--mlscope-trace", "framework", "-v",
    )  # fmt: skip
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*alexnet?caffe-cpu-bs1-single_stream? PASSED*"])
    store = Store.from_location(pytester.path / ".mlscope" / "results.db", create=False)
    (run,) = store.runs()
    results = {r.cell.id: r for r in store.results(run.id)}
    store.close()
    for model, weighted in (("digits_cnn", 4), ("alexnet", 8)):
        got = results[f"{model}[caffe-cpu-bs1-single_stream]"]
        assert got.framework_version == "1.0.0"
        assert got.accuracy is not None and got.accuracy.passed, got.accuracy
        checks = {c.name: c.passed for c in got.accuracy.checks}
        assert checks.get("agreement") is True, checks
        details = got.predictor.details  # type: ignore[union-attr]
        assert details["container"]["image"] == caffe_image
        assert details["blas"] == "OpenBLAS"
        rows = {row.layer: row for row in got.layers}
        kinds = [r.op_type for r in got.layers if r.op_type in ("Convolution", "InnerProduct")]
        assert len(kinds) == weighted, rows
        assert rows["features.0"].op_type == "Convolution"
        assert rows["features.0"].kernels[0] == "im2col + sgemm (OpenBLAS)"
        assert got.layers[-1].layer == OTHER
        total = sum(r.self_us for r in got.layers)
        # Of the size of the profiling pass's own uninstrumented predictions, seconds apart (as
        # test_tracing's): the timing pass's median, taken before, moves with the machine's load.
        assert got.trace is not None and got.trace.step_us
        assert 0.25 < total / got.trace.step_us < 2.5, (total, got.trace.step_us)
    digits = results["digits_cnn[caffe-cpu-bs1-single_stream]"].accuracy
    assert digits is not None and digits.top1 is not None and digits.top1 > 0.97

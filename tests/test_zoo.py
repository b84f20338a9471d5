"""The artifact cache and the bundled digits model, built for real once per test session.

The digits CNN is built into the session's shared cache (``artifact_dir``); tests that tamper with
files or delete them work on a private copy of that cache, never on the shared one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pytest_mlscope.data import prepare
from pytest_mlscope.errors import ArtifactError, ManifestError
from pytest_mlscope.manifest import Manifest, load_manifest
from pytest_mlscope.predictors import predictor_class
from pytest_mlscope.protocol import ArtifactRef
from pytest_mlscope.zoo.cache import RECORD, ArtifactCache
from pytest_mlscope.zoo.files import sha256_file, verify


@pytest.fixture(scope="module")
def digits_artifacts(artifact_dir: Path, digits_manifest: Manifest) -> dict[str, ArtifactRef]:
    """The digits CNN's artifacts in the shared cache (built by the first test that asks)."""
    return ArtifactCache(artifact_dir).artifacts(digits_manifest)


@pytest.fixture
def private_cache(
    tmp_path: Path, artifact_dir: Path, digits_artifacts: dict[str, ArtifactRef]
) -> Path:
    """A copy of the shared cache that a test may damage."""
    target = tmp_path / "cache"
    shutil.copytree(artifact_dir, target)
    return target


def _line_of(text: str, fragment: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if fragment in line)


# -- building and caching ------------------------------------------------------------------------


def test_building_digits_gives_a_state_dict_an_onnx_file_and_weights_with_their_sha256(
    digits_artifacts: dict[str, ArtifactRef], artifact_dir: Path
) -> None:
    assert set(digits_artifacts) == {"torch_state_dict", "onnx", "numpy_weights", "caffe"}
    for fmt, artifact in digits_artifacts.items():
        path = Path(artifact.path)
        assert artifact.format == fmt
        assert path.is_file()
        assert path.is_relative_to(artifact_dir.resolve() / "digits_cnn")
        assert artifact.sha256 == sha256_file(path)
        assert RECORD in artifact.expected_by
        verify(artifact)  # the recorded checksum holds
    assert Path(digits_artifacts["onnx"].path).suffix == ".onnx"
    assert digits_artifacts["torch_state_dict"].metadata["module"] == (
        "pytest_mlscope.zoo.models:DigitsCNN"
    )


def test_the_record_keeps_each_artifacts_sha256(digits_artifacts: dict[str, ArtifactRef]) -> None:
    record = Path(digits_artifacts["onnx"].path).parent / RECORD

    recorded = json.loads(record.read_text())["artifacts"]

    assert {fmt: entry["sha256"] for fmt, entry in recorded.items()} == {
        fmt: artifact.sha256 for fmt, artifact in digits_artifacts.items()
    }


def test_a_second_call_reuses_the_built_artifacts(
    digits_artifacts: dict[str, ArtifactRef], artifact_dir: Path, digits_manifest: Manifest
) -> None:
    paths = [Path(a.path) for a in digits_artifacts.values()]
    paths.append(paths[0].parent / RECORD)
    before = {path: path.stat().st_mtime_ns for path in paths}

    again = ArtifactCache(artifact_dir).artifacts(digits_manifest)

    assert again == digits_artifacts
    assert {path: path.stat().st_mtime_ns for path in paths} == before


def test_onnxruntime_is_given_the_onnx_artifact(
    digits_artifacts: dict[str, ArtifactRef], artifact_dir: Path, digits_manifest: Manifest
) -> None:
    chosen = ArtifactCache(artifact_dir).for_framework(digits_manifest, "onnxruntime", ("onnx",))

    assert chosen == digits_artifacts["onnx"]


def test_torch_is_given_its_first_available_format(
    digits_artifacts: dict[str, ArtifactRef], artifact_dir: Path, digits_manifest: Manifest
) -> None:
    chosen = ArtifactCache(artifact_dir).for_framework(
        digits_manifest, "torch", ("torch_export", "torch_state_dict")
    )

    assert chosen == digits_artifacts["torch_state_dict"]


def test_a_framework_whose_formats_the_model_lacks_is_told_what_there_is(
    digits_artifacts: dict[str, ArtifactRef], artifact_dir: Path, digits_manifest: Manifest
) -> None:
    with pytest.raises(ArtifactError) as excinfo:
        ArtifactCache(artifact_dir).for_framework(digits_manifest, "tensorflow", ("savedmodel",))

    message = str(excinfo.value)
    assert "model.source gives formats caffe, numpy_weights, onnx, torch_state_dict" in message
    assert "tensorflow loads savedmodel" in message


# -- checksums -----------------------------------------------------------------------------------


def test_a_tampered_artifact_is_refused_with_both_hashes(
    private_cache: Path, digits_manifest: Manifest
) -> None:
    artifact = ArtifactCache(private_cache).artifacts(digits_manifest)["onnx"]
    with open(artifact.path, "ab") as handle:
        handle.write(b"\0")
    tampered = sha256_file(artifact.path)

    with pytest.raises(ArtifactError) as excinfo:
        verify(artifact)

    message = str(excinfo.value)
    assert artifact.sha256 != tampered
    assert f"has sha256 {tampered}, expected {artifact.sha256}" in message
    assert artifact.path in message
    assert RECORD in message  # who recorded the expected hash


def test_a_missing_artifact_is_refused_by_verify(
    private_cache: Path, digits_manifest: Manifest
) -> None:
    artifact = ArtifactCache(private_cache).artifacts(digits_manifest)["onnx"]
    Path(artifact.path).unlink()

    with pytest.raises(ArtifactError, match="is missing"):
        verify(artifact)


def test_a_record_whose_file_is_missing_is_rebuilt(
    private_cache: Path, digits_manifest: Manifest, digits_artifacts: dict[str, ArtifactRef]
) -> None:
    cache = ArtifactCache(private_cache)
    Path(cache.artifacts(digits_manifest)["onnx"].path).unlink()

    rebuilt = cache.artifacts(digits_manifest)

    assert set(rebuilt) == {"torch_state_dict", "onnx", "numpy_weights", "caffe"}
    for artifact in rebuilt.values():
        assert Path(artifact.path).is_relative_to(private_cache.resolve())
        verify(artifact)
    # The build is deterministic: the same bytes as the shared cache's.
    assert {f: a.sha256 for f, a in rebuilt.items()} == {
        f: a.sha256 for f, a in digits_artifacts.items()
    }


PATH_MANIFEST = """\
name: local_digits
framework:
  - name: onnxruntime
model:
  source: {{path: {{onnxruntime: model.onnx}}}}
  sha256:
    onnxruntime: "{pinned}"
inputs:
  - name: input
    shape: [1, 8, 8]
    preprocess: [{{scale: 16}}, {{layout: chw}}]
outputs:
  - name: logits
dataset: {{name: sklearn_digits}}
"""


def _path_manifest(tmp_path: Path, onnx: ArtifactRef, pinned: str) -> Manifest:
    shutil.copy(onnx.path, tmp_path / "model.onnx")
    path = tmp_path / "local.yaml"
    path.write_text(PATH_MANIFEST.format(pinned=pinned))
    return load_manifest(path)


def test_a_pinned_sha256_that_differs_names_the_manifest_line_key_and_both_hashes(
    tmp_path: Path, digits_artifacts: dict[str, ArtifactRef], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the manifest then shows as local.yaml
    wrong = "0" * 64
    manifest = _path_manifest(tmp_path, digits_artifacts["onnx"], wrong)
    actual = digits_artifacts["onnx"].sha256
    line = _line_of(manifest.path.read_text(), wrong)

    with pytest.raises(ArtifactError) as excinfo:
        ArtifactCache(tmp_path / "cache").for_framework(manifest, "onnxruntime", ("onnx",))

    message = str(excinfo.value)
    assert message.startswith(f"manifest local.yaml:{line}: model.sha256.onnxruntime: ")
    assert f"expected {wrong}" in message
    assert f"has {actual}" in message


def test_a_pinned_sha256_that_matches_is_named_as_the_expectation(
    tmp_path: Path, digits_artifacts: dict[str, ArtifactRef]
) -> None:
    onnx = digits_artifacts["onnx"]
    manifest = _path_manifest(tmp_path, onnx, onnx.sha256)

    chosen = ArtifactCache(tmp_path / "cache").for_framework(manifest, "onnxruntime", ("onnx",))

    assert chosen.path == str(tmp_path.resolve() / "model.onnx")
    assert chosen.sha256 == onnx.sha256
    assert "model.sha256" in chosen.expected_by
    verify(chosen)


# -- the built model, through the predictors -----------------------------------------------------


@pytest.fixture(scope="module")
def digits_outputs(
    digits_artifacts: dict[str, ArtifactRef], digits_manifest: Manifest
) -> dict[str, np.ndarray]:
    """Logits of every test digit, from torch, ONNX Runtime and TensorFlow."""
    inputs = prepare(digits_manifest).inputs
    outputs = {}
    for framework, fmt in (
        ("torch", "torch_state_dict"),
        ("onnxruntime", "onnx"),
        ("tensorflow", "numpy_weights"),
    ):
        predictor = predictor_class(framework)()
        predictor.load(digits_artifacts[fmt])
        try:
            outputs[framework] = predictor.to_numpy(
                predictor.predict(predictor.prepare_input(inputs))
            )
        finally:
            predictor.close()
    return outputs


def test_torch_and_onnxruntime_agree_on_the_digits_model(
    digits_outputs: dict[str, np.ndarray],
) -> None:
    torch_logits, ort_logits = digits_outputs["torch"], digits_outputs["onnxruntime"]

    assert torch_logits.shape == ort_logits.shape == (450, 10)
    np.testing.assert_array_equal(torch_logits.argmax(axis=1), ort_logits.argmax(axis=1))
    assert np.abs(torch_logits - ort_logits).max() < 1e-4


def test_tensorflow_computes_what_torch_computes_from_the_shared_weights(
    digits_outputs: dict[str, np.ndarray],
) -> None:
    """The Keras model is laid out from the torch-trained weights (kernels transposed, the
    flattened feature map reordered): the same logits, not just the same classes."""
    torch_logits, tf_logits = digits_outputs["torch"], digits_outputs["tensorflow"]

    assert tf_logits.shape == (450, 10)
    np.testing.assert_array_equal(torch_logits.argmax(axis=1), tf_logits.argmax(axis=1))
    assert np.abs(torch_logits - tf_logits).max() < 1e-4


def test_the_numpy_weights_are_torch_names_in_torch_layout_without_pickle(
    digits_artifacts: dict[str, ArtifactRef],
) -> None:
    import torch

    artifact = digits_artifacts["numpy_weights"]
    assert artifact.metadata["architecture"] == {
        "tensorflow": "pytest_mlscope.zoo.keras_models:digits_cnn",
        "mxnet": "pytest_mlscope.zoo.gluon_models:digits_cnn",
    }
    state = torch.load(digits_artifacts["torch_state_dict"].path, weights_only=True)
    with np.load(artifact.path, allow_pickle=False) as weights:
        assert sorted(weights.files) == sorted(state)
        for name, tensor in state.items():
            np.testing.assert_array_equal(weights[name], tensor.numpy())


def test_a_new_build_revision_is_a_new_cache_key(
    digits_manifest: Manifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache built before the builders wrote numpy_weights is rebuilt, not served without it."""
    import pytest_mlscope.zoo

    cache = ArtifactCache(tmp_path)
    now = cache._key(digits_manifest)
    monkeypatch.setattr(pytest_mlscope.zoo.digits_cnn, "revision", 1)
    assert cache._key(digits_manifest) != now
    monkeypatch.delattr(pytest_mlscope.zoo.digits_cnn, "revision")
    assert cache._key(digits_manifest) not in (now,)


def test_the_digits_model_reaches_its_top1_target_in_torch(
    digits_outputs: dict[str, np.ndarray], digits_manifest: Manifest
) -> None:
    labels = prepare(digits_manifest).labels
    assert labels is not None

    top1 = float(np.mean(digits_outputs["torch"].argmax(axis=1) == labels))

    assert top1 >= 0.97


class _Payload:
    """What a hostile state dict carries: an object whose unpickling runs a command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_pickled_payload_in_a_state_dict_is_refused_not_run(
    tmp_path: Path, digits_artifacts: dict[str, ArtifactRef]
) -> None:
    import torch

    marker = tmp_path / "pwned"
    hostile = tmp_path / "model.pt"
    torch.save({"weight": _Payload(marker)}, hostile)
    # Its checksum is "right": what protects us here is weights_only, not the hash.
    genuine = digits_artifacts["torch_state_dict"]
    artifact = genuine.model_copy(update={"path": str(hostile), "sha256": sha256_file(hostile)})
    predictor = predictor_class("torch")()
    with pytest.raises(Exception, match=r"Weights only load failed|Unsupported global"):
        predictor.load(artifact)
    assert not marker.exists()


def test_a_python_tag_in_a_manifest_is_refused_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = (Path(__file__).parent.parent / "manifests" / "digits_cnn.yaml").read_text()
    path = tmp_path / "digits_cnn.yaml"
    path.write_text(
        text.replace("seed: 0}", f'seed: !!python/object/apply:os.system ["touch {marker}"]}}')
    )
    with pytest.raises(ManifestError, match="got the tag !!python/object/apply"):
        load_manifest(path)
    assert not marker.exists()

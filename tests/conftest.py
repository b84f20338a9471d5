"""Shared fixtures for the plugin's own tests: real manifests, one artifact cache per test session.

Artifacts (AlexNet is ~250 MB per format) are built once per test session into a temporary cache
that every test, and every pytester-driven inner session (through MLSCOPE_CACHE), reuses.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pytest_mlscope import stacks
from pytest_mlscope.manifest import Manifest, load_manifest

REPO = Path(__file__).resolve().parent.parent
MANIFESTS = REPO / "manifests"

if os.environ.get("MLSCOPE_TEST_POSTGRES"):
    # Pytester puts sys.modules back after each of its tests, so a driver first imported inside
    # one is dropped while its C extension stays loaded: the next import raises exceptions of
    # classes SQLAlchemy no longer recognizes. Imported once, here, it is never dropped.
    import psycopg  # noqa: F401
    import sqlalchemy.dialects.postgresql.psycopg  # noqa: F401

# The same holds for the C extensions the report draws with: a pytester test that also renders a
# report in-process would drop numpy and matplotlib for every test after it.
import matplotlib.figure  # noqa: E402, F401
import numpy  # noqa: E402, F401

# And the OTLP exporter's HTTP client: requests first imported inside a pytester test is dropped
# with http.cookiejar, and a later session no longer recognises its own cookie jar ("You can only
# merge into CookieJar"), so no span reaches the collector.
import requests  # noqa: E402, F401


@pytest.fixture(scope="session")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


# Where the venv stacks are (`mlscope stacks setup`), read before pytester points HOME at a
# temporary folder: inner sessions find them through MLSCOPE_STACKS.
STACKS_ROOT = stacks.root()


@pytest.fixture(autouse=True)
def _shared_artifact_cache(artifact_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSCOPE_CACHE", str(artifact_dir))
    monkeypatch.setenv("MLSCOPE_STACKS", str(STACKS_ROOT))
    monkeypatch.delenv("MLSCOPE_DB", raising=False)


@pytest.fixture
def manifest_dir(tmp_path: Path) -> Path:
    """A copy of the bundled manifests (and goldens) that a test may edit."""
    target = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, target)
    return target


@pytest.fixture(scope="session")
def alexnet_manifest() -> Manifest:
    return load_manifest(MANIFESTS / "alexnet.yaml")


@pytest.fixture(scope="session")
def digits_manifest() -> Manifest:
    return load_manifest(MANIFESTS / "digits_cnn.yaml")


TENSORFLOW_ENTRY = '  - name: tensorflow\n    version: ">=2.16"\n'
MXNET_ENTRY = '  - name: mxnet\n    version: ">=1.9"\n'
CAFFE_ENTRY = '  - name: caffe\n    version: ">=1.0"\n'
TENSORRT_ENTRY = '  - name: tensorrt\n    version: ">=10.0"\n    devices: [gpu]\n'


def copy_manifest(name: str, target: Path) -> Path:
    """A bundled manifest copied for a test project, on torch and ONNX Runtime only.

    The plugin's tests of sessions, stores and verdicts need one cheap framework or two; a
    TensorFlow worker takes seconds to start, MXNet's lives in a venv stack, Caffe's in its
    container image, and TensorRT's items (GPU only) would be skips in every outcome count. Those
    are tested in test_zoo, test_tracing, test_stacks, test_caffe and the bundled-suite test.
    """
    text = (MANIFESTS / f"{name}.yaml").read_text()
    entries = (TENSORFLOW_ENTRY, MXNET_ENTRY, CAFFE_ENTRY, TENSORRT_ENTRY)
    assert all(entry in text for entry in entries)
    for entry in entries:
        text = text.replace(entry, "")
    path = target / f"{name}.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester project with the digits manifest: the cheapest real model, one file to edit."""
    target = pytester.path / "manifests"
    target.mkdir()
    copy_manifest("digits_cnn", target)
    pytester.makeini("[pytest]\nmlscope_manifests = manifests\n")
    return pytester

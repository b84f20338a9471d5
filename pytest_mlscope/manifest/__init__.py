"""The manifest schema and its one loader.

A manifest is user input that gates CI, so every problem is reported at once, each as a single
line naming the file, the line and the key (``manifest alexnet.yaml:14: performance.batch_sizes:
expected a list of positive integers, got "eight"``). YAML is parsed with the safe loader only, and
nothing in a manifest is executed except an explicitly named ``builder``.

``schema`` holds the pydantic models, ``parsing`` turns a file's YAML into data with each key's
line, ``loading`` validates it and phrases the problems. The public names are importable from
here.
"""

from __future__ import annotations

from pytest_mlscope.errors import ManifestError
from pytest_mlscope.manifest.loading import load_manifest, manifest_files
from pytest_mlscope.manifest.parsing import (
    MAX_DEPTH,
    MAX_MANIFEST_BYTES,
    MAX_VALUES,
    ManifestSource,
)
from pytest_mlscope.manifest.preprocess import (
    PREPROCESS_STEPS,
    CenterCropStep,
    DecodeStep,
    LayoutStep,
    Normalize,
    NormalizeStep,
    PreprocessStep,
    ResizeStep,
    ScaleStep,
    Size,
)
from pytest_mlscope.manifest.schema import (
    AccuracySpec,
    Agreement,
    BuilderSource,
    DatasetSpec,
    Device,
    FrameworkSpec,
    Golden,
    GpuRequirement,
    InputSpec,
    Manifest,
    ModelFiles,
    ModelSource,
    ModelSpec,
    OutputSpec,
    Paraphrase,
    PathSource,
    PerformanceSpec,
    Requirements,
    Scenario,
    TokenizerSpec,
    TopK,
    UrlSource,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_MANIFEST_BYTES",
    "MAX_VALUES",
    "PREPROCESS_STEPS",
    "AccuracySpec",
    "Agreement",
    "BuilderSource",
    "CenterCropStep",
    "DatasetSpec",
    "DecodeStep",
    "Device",
    "FrameworkSpec",
    "Golden",
    "GpuRequirement",
    "InputSpec",
    "LayoutStep",
    "Manifest",
    "ManifestError",
    "ManifestSource",
    "ModelFiles",
    "ModelSource",
    "ModelSpec",
    "Normalize",
    "NormalizeStep",
    "OutputSpec",
    "Paraphrase",
    "PathSource",
    "PerformanceSpec",
    "PreprocessStep",
    "Requirements",
    "ResizeStep",
    "ScaleStep",
    "Scenario",
    "Size",
    "TokenizerSpec",
    "TopK",
    "UrlSource",
    "load_manifest",
    "manifest_files",
]

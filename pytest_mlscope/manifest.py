"""The manifest schema and its one loader.

A manifest is user input that gates CI, so every problem is reported at once, each as a single
line naming the file, the line and the key (``manifest alexnet.yaml:14: performance.batch_sizes:
expected a list of positive integers, got "eight"``). YAML is parsed with the safe loader only, and
nothing in a manifest is executed except an explicitly named ``builder``.
"""

from __future__ import annotations

import difflib
import json
import re
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from pytest_mlscope.errors import ManifestError

NAME_PATTERN = r"^[a-z0-9_]+$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
MAX_MANIFEST_BYTES = 1_000_000
MAX_DEPTH = 32
# Values after anchors and aliases are expanded: a few hundred in a real manifest, while a
# kilobyte of nested aliases ("billion laughs") expands to 10**9.
MAX_VALUES = 100_000
# Plain YAML only: a tag such as !!python/object/apply would be ignored by the safe loader's
# structure anyway, but a manifest that carries one is not what its author thinks it is.
_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{kind}"
    for kind in ("map", "seq", "str", "int", "float", "bool", "null", "timestamp")
)

Device = Literal["cpu", "gpu"]
Scenario = Literal["single_stream", "offline"]
PositiveInt = Annotated[int, Field(gt=0, strict=True)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
NonNegative = Annotated[float, Field(ge=0.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
        if value is not None:
            try:
                SpecifierSet(value)
            except InvalidSpecifier:
                raise ValueError(
                    f"expected a PEP 440 version specifier such as '>=1.17', got {value!r}"
                ) from None
        return value

    @property
    def specifier(self) -> SpecifierSet:
        return SpecifierSet(self.version or "")


# -- model sources -------------------------------------------------------------------------------


class BuilderSource(_Strict):
    builder: Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")]
    seed: int = 0
    params: dict[str, str | int | float | bool] = {}


class PathSource(_Strict):
    path: str | dict[str, str]


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


class Normalize(_Strict):
    mean: Annotated[list[float], Field(min_length=1)]
    std: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)]

    @model_validator(mode="after")
    def _same_length(self) -> Normalize:
        if len(self.mean) != len(self.std):
            raise ValueError("expected mean and std of the same length")
        return self


Size = Union[PositiveInt, tuple[PositiveInt, PositiveInt]]  # noqa: UP007


class DecodeStep(_Strict):
    decode: Literal["rgb", "bgr", "gray"]


class ResizeStep(_Strict):
    resize: Size


class CenterCropStep(_Strict):
    center_crop: Size


class ScaleStep(_Strict):
    scale: Annotated[float, Field(gt=0)]


class NormalizeStep(_Strict):
    normalize: Normalize


class LayoutStep(_Strict):
    layout: Literal["chw", "hwc"]


PREPROCESS_STEPS = ("decode", "resize", "center_crop", "scale", "normalize", "layout")


def _step_kind(value: Any) -> str | None:
    if isinstance(value, dict) and len(value) == 1:
        key = next(iter(value))
        return key if key in PREPROCESS_STEPS else None
    return None


PreprocessStep = Annotated[
    Union[  # noqa: UP007
        Annotated[DecodeStep, Tag("decode")],
        Annotated[ResizeStep, Tag("resize")],
        Annotated[CenterCropStep, Tag("center_crop")],
        Annotated[ScaleStep, Tag("scale")],
        Annotated[NormalizeStep, Tag("normalize")],
        Annotated[LayoutStep, Tag("layout")],
    ],
    Discriminator(
        _step_kind,
        custom_error_type="preprocess_step",
        custom_error_message="expected a mapping with exactly one key, one of "
        + ", ".join(PREPROCESS_STEPS),
    ),
]


class InputSpec(_Strict):
    name: str
    shape: Annotated[list[PositiveInt], Field(min_length=1)]
    dtype: Literal["float32", "float16", "int64", "int32", "uint8"] = "float32"
    preprocess: list[PreprocessStep] = []


class OutputSpec(_Strict):
    name: str
    postprocess: list[Literal["softmax", "sigmoid"]] = []


class DatasetSpec(_Strict):
    name: Literal["sklearn_sample_images", "sklearn_digits", "npz"]
    split: Literal["train", "test", "all"] = "test"
    path: str | None = None
    limit: PositiveInt | None = None

    @model_validator(mode="after")
    def _npz_needs_path(self) -> DatasetSpec:
        if self.name == "npz" and not self.path:
            raise ValueError("expected a 'path' for the npz dataset")
        return self


# -- accuracy ------------------------------------------------------------------------------------


class TopK(_Strict):
    min: Probability


class Agreement(_Strict):
    reference: str
    atol: NonNegative = 1e-4
    rtol: NonNegative = 1e-3
    top1_match: Probability = 1.0


class Golden(_Strict):
    path: str
    atol: NonNegative = 1e-4
    rtol: NonNegative = 1e-3


class AccuracySpec(_Strict):
    top1: TopK | None = None
    top5: TopK | None = None
    agreement: Agreement | None = None
    golden: Golden | None = None

    @field_validator("golden", mode="before")
    @classmethod
    def _golden_shorthand(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value


# -- performance and requirements ----------------------------------------------------------------


class PerformanceSpec(_Strict):
    batch_sizes: Annotated[list[PositiveInt], Field(min_length=1)] = [1]
    scenarios: Annotated[list[Scenario], Field(min_length=1)] = ["single_stream"]
    warmup: Annotated[int, Field(ge=0, strict=True)] = 5
    min_count: PositiveInt = 50
    min_duration_s: NonNegative = 2.0
    max_duration_s: Annotated[float, Field(gt=0)] = 60.0
    # Consecutive measurement rounds; their spread is the noise a verdict accounts for.
    rounds: Annotated[int, Field(ge=1, le=1000, strict=True)] = 10
    # None: the ini option mlscope_threshold, else 5 %.
    regression_threshold: Annotated[float, Field(gt=0, lt=10)] | None = None
    # Profiling pass after the timing pass (pytest_mlscope.tracing); --mlscope-trace overrides.
    trace: Literal["none", "model", "framework", "library", "system", "full"] = "none"

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
    task: Literal["image_classification", "text_embedding", "raw"] = "raw"
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


# -- loading -------------------------------------------------------------------------------------


@dataclass
class ManifestSource:
    """Where each key of a parsed document sits in its file."""

    path: Path
    lines: dict[tuple[str | int, ...], int] = field(default_factory=dict)

    @property
    def display(self) -> str:
        try:
            return str(self.path.relative_to(Path.cwd()))
        except ValueError:
            return str(self.path)

    def line_of(self, key: Iterable[str | int]) -> int:
        key = tuple(key)
        while key and key not in self.lines:
            key = key[:-1]
        return self.lines.get(key, 1)


def _format_key(key: Iterable[str | int]) -> str:
    text = ""
    for part in key:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(document)"


def _shown(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Composer:
    """Turns a YAML node tree into plain data while recording the line of every key."""

    def __init__(self, source: ManifestSource) -> None:
        self.source = source
        self.constructor = yaml.constructor.SafeConstructor()
        self.problems: list[str] = []
        self.values = 0

    def problem(self, line: int, key: tuple[str | int, ...], message: str) -> None:
        self.problems.append(
            f"manifest {self.source.display}:{line}: {_format_key(key)}: {message}"
        )

    def build(self, node: yaml.Node, key: tuple[str | int, ...], depth: int = 0) -> Any:
        self.source.lines.setdefault(key, node.start_mark.line + 1)
        if depth > MAX_DEPTH:
            self.problem(node.start_mark.line + 1, key, f"nested deeper than {MAX_DEPTH} levels")
            return None
        self.values += 1
        if self.values > MAX_VALUES:
            if self.values == MAX_VALUES + 1:
                self.problem(
                    node.start_mark.line + 1,
                    key,
                    f"expected at most {MAX_VALUES} values with aliases expanded; "
                    "the document holds more",
                )
            return None
        if node.tag not in _PLAIN_TAGS:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            self.problem(
                node.start_mark.line + 1,
                key,
                f"expected plain YAML values, got the tag {tag} "
                "(a manifest is data: nothing in it is constructed or run)",
            )
            return None
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            seen: dict[Any, int] = {}
            for key_node, value_node in node.value:
                line = key_node.start_mark.line + 1
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _PLAIN_TAGS:
                    self.problem(line, key, "expected plain scalar keys")
                    continue
                name = self._scalar(key_node, key)
                if not isinstance(name, str):
                    name = str(name)
                if name in seen:
                    self.problem(
                        line, (*key, name), f"duplicate key (first defined on line {seen[name]})"
                    )
                    continue
                seen[name] = line
                self.source.lines[(*key, name)] = line
                result[name] = self.build(value_node, (*key, name), depth + 1)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*key, i), depth + 1) for i, item in enumerate(node.value)]
        return self._scalar(node, key)

    def _scalar(self, node: yaml.Node, key: tuple[str | int, ...]) -> Any:
        try:
            return self.constructor.construct_object(node)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:  # a date like 2024-13-45
            what = " ".join(str(getattr(exc, "problem", None) or exc).split())
            self.problem(node.start_mark.line + 1, key, f"expected a valid value: {what}")
            return None


def _parse(path: Path, text: str, source: ManifestSource) -> tuple[Any, list[str]]:
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        what = exc.problem or str(exc)
        return None, [f"manifest {source.display}:{line}: (document): invalid YAML: {what}"]
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        line = text.count("\n", 0, exc.position) + 1
        return None, [
            f"manifest {source.display}:{line}: (document): invalid YAML: expected printable "
            f"characters, got {exc.character!r}"
            if isinstance(exc.character, str)
            else f"manifest {source.display}:{line}: (document): invalid YAML: {exc.reason}"
        ]
    except yaml.YAMLError as exc:
        what = " ".join(str(exc).split())
        return None, [f"manifest {source.display}:1: (document): invalid YAML: {what}"]
    except RecursionError:  # PyYAML composes nested collections recursively
        return None, [
            f"manifest {source.display}:1: (document): expected at most {MAX_DEPTH} levels of "
            "nesting, got too many for the YAML parser"
        ]
    if node is None:
        return None, [
            f"manifest {source.display}:1: (document): expected a mapping, got an empty file"
        ]
    composer = _Composer(source)
    data = composer.build(node, ())
    return data, composer.problems


# Phrases for keys whose expected value is better said in the user's words than pydantic's.
_EXPECTED = {
    ("performance", "batch_sizes"): "a list of positive integers",
    ("performance", "batch_sizes", "*"): "a positive integer",
    ("performance", "scenarios"): "a list of scenarios (single_stream, offline)",
    ("performance", "scenarios", "*"): "a scenario (single_stream or offline)",
    ("inputs", "*", "shape"): "a list of positive integers (batch excluded)",
    ("inputs", "*", "shape", "*"): "a positive integer (one dimension, batch excluded)",
    ("framework",): "a list of frameworks, each a mapping with a 'name'",
    ("framework", "*", "devices"): "a list of devices (cpu, gpu)",
    ("framework", "*", "devices", "*"): "a device (cpu or gpu)",
    ("model", "sha256"): "a sha256 hex digest (64 lowercase hex characters, quoted)",
    ("model", "source", "builder"): "an importable 'module:callable'",
    ("name",): "a name of lowercase letters, digits and underscores",
    ("framework", "*", "name"): "a name of lowercase letters, digits and underscores",
}


def _model_fields_at(loc: tuple[str | int, ...]) -> list[str] | None:
    """Field names of the schema model reached by following ``loc``, for 'did you mean'."""
    annotation: Any = Manifest
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(part, int):
            if get_origin(annotation) is list:
                annotation = get_args(annotation)[0]
                continue
            return None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            info = annotation.model_fields.get(part)
            if info is None:
                return None
            annotation = info.annotation
            continue
        return None
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return None


def _unwrap(annotation: Any) -> Any:
    # ``X | None`` is a types.UnionType (Python 3.10+), ``Optional[X]`` a typing.Union; the
    # Caffe image's worker runs on Python 3.9, which has only the latter.
    unions = tuple(u for u in (Union, getattr(types, "UnionType", None)) if u is not None)
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in unions:
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _data_key(data: Any, loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    """Keep the parts of a pydantic error location that step into the data (drop union tags)."""
    key: list[str | int] = []
    current = data
    for part in loc:
        in_dict = isinstance(current, dict) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        if in_dict or in_list:
            key.append(part)
            current = current[part]
        elif isinstance(current, dict) and isinstance(part, str) and part not in current:
            # A missing or unknown key: name it, but stop walking.
            if part.isidentifier():
                key.append(part)
            break
    return tuple(key)


def _expected_phrase(key: tuple[str | int, ...]) -> str | None:
    generic = tuple("*" if isinstance(p, int) else p for p in key)
    for size in range(len(generic), 0, -1):
        phrase = _EXPECTED.get(generic[:size])
        if phrase:
            return phrase
    return None


def _describe(error: dict[str, Any], key: tuple[str | int, ...], data: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        unknown = key[-1] if key else "?"
        allowed = _model_fields_at(key[:-1]) or []
        message = f"unknown key {unknown!r}"
        close = difflib.get_close_matches(str(unknown), allowed, n=1)
        if close:
            message += f"; did you mean {close[0]!r}?"
        if allowed:
            message += f" (expected one of: {', '.join(allowed)})"
        return message
    if kind == "missing":
        return "required key is missing"
    got = error.get("input")
    phrase = _expected_phrase(key)
    if kind == "value_error":
        text = str(error.get("ctx", {}).get("error", error["msg"]))
        return f"{text}" if text.startswith("expected") else f"expected {text}, got {_shown(got)}"
    if phrase is None:
        message = error["msg"]
        message = message[0].lower() + message[1:]
        message = message.replace("input should be ", "").replace("value should be ", "")
        phrase = message.removeprefix("expected ")
    return f"expected {phrase}, got {_shown(got)}"


def _validation_problems(exc: ValidationError, data: Any, source: ManifestSource) -> Iterator[str]:
    seen: set[tuple[tuple[str | int, ...], str]] = set()
    for error in exc.errors():
        key = _data_key(data, error["loc"])
        message = _describe(error, key, data)
        if (key, message) in seen:
            continue
        seen.add((key, message))
        line = source.line_of(key)
        yield f"manifest {source.display}:{line}: {_format_key(key)}: {message}"


def _semantic_problems(
    manifest: Manifest, source: ManifestSource, require_files: bool
) -> Iterator[str]:
    def problem(key: tuple[str | int, ...], message: str) -> str:
        return f"manifest {source.display}:{source.line_of(key)}: {_format_key(key)}: {message}"

    names = [spec.name for spec in manifest.framework]
    stacks = [(spec.name, spec.stack) for spec in manifest.framework]
    for i, (name, stack) in enumerate(stacks):
        if (name, stack) in stacks[:i]:
            yield problem(
                ("framework", i, "stack" if stack else "name"),
                f"framework {name!r}{f' stack {stack!r}' if stack else ''} is listed twice"
                + ("" if stack else "; give the second stack a name with 'stack:'"),
            )
    for i, spec in enumerate(manifest.framework):
        if spec.interleave_with is None:
            continue
        others = [s for n, s in stacks if n == spec.name and s and s != spec.stack]
        if spec.interleave_with not in others:
            yield problem(
                ("framework", i, "interleave_with"),
                f"expected the 'stack:' of another {spec.name} entry "
                f"({', '.join(others) or 'there is none'}), got {spec.interleave_with!r}",
            )
    names = list(dict.fromkeys(names))
    agreement = manifest.accuracy.agreement
    if agreement and agreement.reference not in names:
        yield problem(
            ("accuracy", "agreement", "reference"),
            f"expected one of this manifest's frameworks ({', '.join(names)}), "
            f"got {agreement.reference!r}",
        )
    for framework in manifest.model.sha256:
        if framework not in names:
            yield problem(
                ("model", "sha256", framework),
                f"expected a framework of this manifest ({', '.join(names)}), got {framework!r}",
            )
    paths: list[tuple[tuple[str | int, ...], str]] = []
    if manifest.accuracy.golden:
        paths.append((("accuracy", "golden"), manifest.accuracy.golden.path))
    if manifest.dataset.path:
        paths.append((("dataset", "path"), manifest.dataset.path))
    source_path = getattr(manifest.model.source, "path", None)
    if isinstance(source_path, str):
        paths.append((("model", "source", "path"), source_path))
    elif isinstance(source_path, dict):
        for framework, value in source_path.items():
            if framework not in names:
                yield problem(
                    ("model", "source", "path", framework),
                    f"expected a framework of this manifest ({', '.join(names)}), "
                    f"got {framework!r}",
                )
            paths.append((("model", "source", "path", framework), value))
    root = source.path.parent.resolve()
    for key, relative in paths:
        resolved = (root / relative).resolve()
        if not resolved.is_relative_to(root):
            yield problem(key, f"expected a path inside {root}, got {relative!r}")
        elif require_files and not resolved.exists():
            yield problem(key, f"expected an existing file, got {relative!r} (no such file)")


def _line_number(problem: str) -> int:
    match = re.match(r"manifest .*?:(\d+): ", problem)
    return int(match.group(1)) if match else 0


def load_manifest(path: str | Path, *, require_files: bool = True) -> Manifest:
    """Load and validate one manifest; raise ManifestError listing every problem found.

    ``require_files=False`` accepts files the manifest names that do not exist yet (a golden file
    about to be written); paths that escape the manifest's directory are refused either way.
    """
    path = Path(path).resolve()
    source = ManifestSource(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ManifestError(
            [f"manifest {source.display}:1: (document): cannot read: {exc}"]
        ) from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(
            [
                f"manifest {source.display}:1: (document): expected at most "
                f"{MAX_MANIFEST_BYTES} bytes, got {len(raw)}"
            ]
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(
            [f"manifest {source.display}:1: (document): expected UTF-8 text: {exc}"]
        ) from None
    data, problems = _parse(path, text, source)
    if problems:
        raise ManifestError(problems)
    if not isinstance(data, dict):
        raise ManifestError(
            [f"manifest {source.display}:1: (document): expected a mapping, got {_shown(data)}"]
        )
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        problems = list(_validation_problems(exc, data, source))
        raise ManifestError(sorted(problems, key=_line_number)) from None
    manifest._source = source
    problems = list(_semantic_problems(manifest, source, require_files))
    if problems:
        raise ManifestError(problems)
    return manifest


def manifest_files(paths: Iterable[str | Path]) -> list[Path]:
    """Every ``*.yaml``/``*.yml`` under the given files and directories, sorted."""
    found: list[Path] = []
    for entry in paths:
        entry = Path(entry)
        if entry.is_dir():
            found.extend(sorted(p for p in entry.rglob("*") if p.suffix in (".yaml", ".yml")))
        elif entry.exists():
            found.append(entry)
    return found


def is_manifest_name(name: str) -> bool:
    return re.match(NAME_PATTERN, name) is not None

"""Loading a manifest: validation against the schema, every problem as one ``file:line: key:
message`` line, then the checks across keys (names, paths) that the schema cannot express."""

from __future__ import annotations

import difflib
import re
import shlex
import types
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from pytest_mlscope.errors import ManifestError
from pytest_mlscope.manifest.parsing import (
    MAX_MANIFEST_BYTES,
    ManifestSource,
    _format_key,
    _parse,
    _shown,
)
from pytest_mlscope.manifest.schema import TEXT_DATASETS, Manifest, ModelFiles
from pytest_mlscope.vocabulary import DEVICES, SCENARIOS

# Phrases for keys whose expected value is better said in the user's words than pydantic's.
_EXPECTED = {
    ("performance", "batch_sizes"): "a list of positive integers",
    ("performance", "batch_sizes", "*"): "a positive integer",
    ("performance", "scenarios"): f"a list of scenarios ({', '.join(SCENARIOS)})",
    ("performance", "scenarios", "*"): f"a scenario ({' or '.join(SCENARIOS)})",
    ("inputs", "*", "shape"): "a list of positive integers (batch excluded)",
    ("performance", "sequence_lengths"): "a list of positive integers (tokens per sample)",
    ("performance", "sequence_lengths", "*"): "a positive integer (tokens per sample)",
    ("inputs", "*", "shape", "*"): "a positive integer (one dimension, batch excluded)",
    ("framework",): "a list of frameworks, each a mapping with a 'name'",
    ("framework", "*", "devices"): f"a list of devices ({', '.join(DEVICES)})",
    ("framework", "*", "devices", "*"): f"a device ({' or '.join(DEVICES)})",
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


def _data_key(data: Any, loc: tuple[Any, ...], names_a_key: bool = True) -> tuple[str | int, ...]:
    """Keep the parts of a pydantic error location that step into the data (drop union tags).
    ``names_a_key``: the last part may be a key the data lacks (a missing or unknown one)."""
    key: list[str | int] = []
    current = data
    for i, part in enumerate(loc):
        in_dict = isinstance(current, dict) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        if in_dict or in_list:
            key.append(part)
            current = current[part]
        elif isinstance(current, dict) and isinstance(part, str) and i == len(loc) - 1:
            if not names_a_key:
                break
            # A missing or unknown key (always the last part): name it, and stop walking.
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
        key = _data_key(data, error["loc"], error["type"] in ("missing", "extra_forbidden"))
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
    golden = manifest.accuracy.golden
    for i, framework in enumerate(golden.frameworks or [] if golden else []):
        if framework not in names:
            yield problem(
                ("accuracy", "golden", "frameworks", i),
                f"expected a framework of this manifest ({', '.join(names)}), got {framework!r}",
            )
    for framework in manifest.model.sha256:
        if framework not in names:
            yield problem(
                ("model", "sha256", framework),
                f"expected a framework of this manifest ({', '.join(names)}), got {framework!r}",
            )
    yield from (problem(key, message) for key, message in _text_problems(manifest))
    paths: list[tuple[tuple[str | int, ...], str]] = []
    for i, spec in enumerate(manifest.inputs):
        if spec.tokenizer is not None and spec.tokenizer.package is None:
            paths.append((("inputs", i, "tokenizer", "path"), spec.tokenizer.path))
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
            if isinstance(value, str):
                paths.append((("model", "source", "path", framework), value))
                continue
            files = value.path if isinstance(value, ModelFiles) else value
            key: tuple[str | int, ...] = ("model", "source", "path", framework)
            if isinstance(value, ModelFiles):
                key += ("path",)
            if isinstance(files, str):
                paths.append((key, files))
            else:
                paths.extend(((*key, i), f) for i, f in enumerate(files))
    root = source.path.parent.resolve()
    for key, relative in paths:
        resolved = (root / relative).resolve()
        if not resolved.is_relative_to(root):
            yield problem(key, f"expected a path inside {root}, got {relative!r}")
        elif require_files and not resolved.exists():
            hint = (
                f"; write it with `mlscope golden {shlex.quote(str(source.display))}`"
                if key[:2] == ("accuracy", "golden")
                else ""
            )
            yield problem(key, f"expected an existing file, got {relative!r} (no such file){hint}")


def _text_problems(manifest: Manifest) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """A tokenized input, its sequence lengths and a text dataset go together."""
    tokenized = [i for i, spec in enumerate(manifest.inputs) if spec.tokenizer is not None]
    lengths = manifest.performance.sequence_lengths
    scenarios = manifest.performance.scenarios
    if "generate" in scenarios:
        yield from _generate_problems(manifest, tokenized)
        return
    if tokenized and not lengths:
        yield (
            ("inputs", tokenized[0], "tokenizer"),
            "a tokenized input needs performance.sequence_lengths (the token counts to pad or "
            "truncate to, e.g. [16, 64, 128])",
        )
    if lengths and not tokenized:
        yield (
            ("performance", "sequence_lengths"),
            "expected an input with a 'tokenizer': the lengths are what tokenized text is "
            "padded or truncated to",
        )
    if tokenized and manifest.dataset.name not in TEXT_DATASETS:
        yield (
            ("dataset", "name"),
            f"expected a text dataset ({' or '.join(TEXT_DATASETS)}) for the tokenized input "
            f"{manifest.inputs[tokenized[0]].name!r}, got {manifest.dataset.name!r}",
        )
    if manifest.dataset.name in TEXT_DATASETS and not tokenized:
        yield (
            ("inputs", 0),
            f"the dataset {manifest.dataset.name} is text: expected a 'tokenizer' on an input",
        )
    if manifest.accuracy.paraphrase is not None and manifest.dataset.name != "text_pairs":
        yield (
            ("accuracy", "paraphrase"),
            f"ranks labelled sentence pairs: expected dataset text_pairs, got "
            f"{manifest.dataset.name!r}",
        )


def _generate_problems(
    manifest: Manifest, tokenized: list[int]
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """A generate item decodes after each prompt of a text dataset, one prompt at a time."""
    performance = manifest.performance
    if performance.scenarios != ["generate"]:
        yield (
            ("performance", "scenarios"),
            "generate decodes tokens and the other scenarios time one forward pass: expected "
            f"generate alone, got {performance.scenarios}",
        )
    if not tokenized or manifest.dataset.name != "text":
        yield (
            ("dataset", "name"),
            "generate continues text prompts: expected dataset text (one prompt a line) and a "
            f"'tokenizer' on the input, got {manifest.dataset.name!r}",
        )
    if performance.sequence_lengths:
        yield (
            ("performance", "sequence_lengths"),
            "generate feeds each prompt as it tokenizes (no padding): expected no sequence_lengths",
        )
    if performance.batch_sizes != [1]:
        yield (
            ("performance", "batch_sizes"),
            f"generate decodes one prompt at a time: expected [1], got {performance.batch_sizes}",
        )
    for check in ("top1", "top5", "paraphrase"):
        if getattr(manifest.accuracy, check) is not None:
            yield (
                ("accuracy", check),
                "generate's outputs are token ids: expected golden or agreement checks only",
            )


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

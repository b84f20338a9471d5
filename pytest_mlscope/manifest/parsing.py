"""Reading a manifest file: YAML (safe, plain values only, bounded) into plain data, with the
line of every key recorded for ``file:line: key`` messages."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

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

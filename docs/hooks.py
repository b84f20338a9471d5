"""MkDocs hooks: the references generated from the code at build time, so they cannot drift.

A page holds a marker, ``<!-- generated: NAME -->``, which is replaced by the Markdown that
``GENERATORS[NAME]`` writes: the manifest keys from the pydantic schema
(``pytest_mlscope.manifest.schema``), the options and ini keys the plugin registers on a real
pytest parser (``pytest_mlscope.options.add_options``), and every ``mlscope`` command's help
from its argparse parser. An unknown marker fails the build.
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import os
import re
import tokenize
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

MARKER = re.compile(r"<!-- generated: (\w+) -->")
TABLE_ROW = re.compile(r"^\|.*$", re.MULTILINE)
CODE_SPAN = re.compile(r"`[^`]*`")


def on_page_markdown(markdown: str, **_: Any) -> str:
    """MkDocs' page_markdown event: fill every marker of the page, and unescape the pipes in the
    code spans of its tables (GitHub needs ``\\|`` there, Python-Markdown a plain ``|``)."""
    markdown = TABLE_ROW.sub(
        lambda row: CODE_SPAN.sub(lambda code: code.group(0).replace("\\|", "|"), row.group(0)),
        markdown,
    )
    return MARKER.sub(lambda match: GENERATORS[match.group(1)](), markdown)


def _cell(text: str) -> str:
    """Text for a Markdown table cell: no pipes, no line breaks, no HTML."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("\n", " ")


# -- the manifest schema -------------------------------------------------------------------------

BUILTIN_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean"}
LIMITS = (
    ("gt", "> {}"),
    ("ge", "≥ {}"),
    ("lt", "< {}"),
    ("le", "≤ {}"),
    ("min_length", "at least {}"),
    ("max_length", "at most {}"),
    ("pattern", "matching `{}`"),
)
SKIPPED_COMMENTS = ("noqa", "fmt:", "type:")


def _limits(metadata: Sequence[Any]) -> list[str]:
    """A field's or a type's constraints (``gt``, ``min_length``, ``pattern``...) in words."""
    found: list[str] = []
    for item in metadata:
        if isinstance(item, FieldInfo):
            found += _limits(item.metadata)
            continue
        for name, form in LIMITS:
            value = getattr(item, name, None)
            if value is not None:
                found.append(form.format(value))
    return found


def _type(annotation: Any, models: list[tuple[type[BaseModel], str]], where: str = "") -> str:
    """An annotation in words. The pydantic models it names go to ``models``, each with where it
    sits below the field: ``[]`` in a list, ``.<key>`` in a mapping."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        text = _type(args[0], models, where)
        limits = _limits(args[1:])
        return f"{text} ({', '.join(limits)})" if limits else text
    if origin in (Union, types.UnionType):
        return " or ".join(_type(arg, models, where) for arg in args if arg is not type(None))
    if origin is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in args)
    if origin is list:
        return f"list of {_type(args[0], models, where + '[]')}"
    if origin is tuple:
        return "[" + ", ".join(_type(arg, models, where) for arg in args) + "]"
    if origin is dict:
        key, value = _type(args[0], models, where), _type(args[1], models, where + ".<key>")
        return f"mapping of {key} to {value}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        models.append((annotation, where))
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    return BUILTIN_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "none"
    if isinstance(value, BaseModel):
        return "its defaults"
    return f"`{json.dumps(value, default=str)}`"


def _comments(model: type[BaseModel]) -> dict[str, str]:
    """The comments above a field of the model's source and at the end of its line."""
    source = inspect.getsource(model)
    comments: dict[int, str] = {}
    code: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            text = token.string.lstrip("#").strip()
            if not text.startswith(SKIPPED_COMMENTS):
                comments[token.start[0]] = text
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            code.add(token.start[0])
    found: dict[str, str] = {}
    for number, line in enumerate(source.splitlines(), start=1):
        match = re.match(r" {4}(\w+)\s*:", line)
        if match is None or match.group(1) not in model.model_fields:
            continue
        above, previous = [], number - 1
        while previous in comments and previous not in code:
            above.insert(0, comments[previous])
            previous -= 1
        after = [comments[number]] if number in comments else []
        found[match.group(1)] = " ".join(above + after)
    return found


def _places(model: type[BaseModel], path: str, found: dict[type[BaseModel], list[str]]) -> None:
    """Where each model sits in a manifest (``inputs[].preprocess[]``), depth first."""
    if model in found:
        found[model].append(path)
        return
    found[model] = [path]
    for name, field in model.model_fields.items():
        nested: list[tuple[type[BaseModel], str]] = []
        _type(field.annotation, nested)
        for child, where in nested:
            _places(child, f"{path}.{name}{where}".lstrip("."), found)


def _section(model: type[BaseModel], paths: list[str]) -> str:
    """A model's table: each key, its type, its default and the comment on it in the source."""
    comments = _comments(model)
    rows = ["| key | type | default | notes |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        text = _type(field.annotation, [])
        limits = _limits(field.metadata)
        if limits:
            text += f" ({', '.join(limits)})"
        about = field.description or comments.get(name, "")
        rows.append(f"| `{name}` | {_cell(text)} | {_cell(_default(field))} | {_cell(about)} |")
    heading = ", ".join(f"`{path}`" for path in paths if path) or "The manifest"
    doc = model.__dict__.get("__doc__")
    about_model = f"*{model.__name__}*" + (f": {inspect.cleandoc(doc)}" if doc else "")
    return (
        f"## {heading} {{#{model.__name__.lower()}}}\n\n{about_model}\n\n" + "\n".join(rows) + "\n"
    )


def manifest_reference() -> str:
    """Every key of a manifest: its type, its default and what the schema's source says of it."""
    from pytest_mlscope.manifest.schema import Manifest

    found: dict[type[BaseModel], list[str]] = {}
    _places(Manifest, "", found)
    return "\n".join(_section(model, paths) for model, paths in found.items())


# -- the plugin's options and ini keys -----------------------------------------------------------


def _flag(names: Sequence[str], attrs: dict[str, Any]) -> str:
    if attrs.get("nargs") == 0:
        return ", ".join(f"`{name}`" for name in names)
    choices = attrs.get("choices")
    value = attrs.get("metavar") or (
        "{" + ",".join(choices) + "}" if choices else attrs["dest"].upper()
    )
    return ", ".join(f"`{name}={value}`" for name in names)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return "" if value in (None, "", []) else f"`{value}`"


def options_reference() -> str:
    """The command-line options and ini keys, as ``add_options`` registers them with pytest."""
    from _pytest.config.argparsing import Parser

    from pytest_mlscope.options import add_options

    parser = Parser(_ispytest=True)
    add_options(parser)
    options = ["| option | default | what it does |", "|---|---|---|"]
    for option in parser.getgroup("mlscope").options:
        attrs = option.attrs()
        default = "off" if attrs.get("nargs") == 0 else _value(attrs.get("default"))
        help_text = (attrs.get("help") or "").replace("%%", "%")
        options.append(f"| {_flag(option.names(), attrs)} | {default} | {_cell(help_text)} |")
    ini = ["| ini key | type | default | what it sets |", "|---|---|---|---|"]
    # Parser has no public view of its ini keys: _inidict maps each to (help, type, default).
    for name, (help_text, kind, default, *_) in parser._inidict.items():
        ini.append(f"| `{name}` | {kind or 'string'} | {_value(default)} | {_cell(help_text)} |")
    return "\n".join(["### Command line", "", *options, "", "### Ini keys", "", *ini, ""])


# -- the mlscope command -------------------------------------------------------------------------


def _commands(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """The parser and every subcommand's, depth first, in the order they were added."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            unique = {id(sub): sub for sub in action.choices.values()}
            for sub in unique.values():
                yield from _commands(sub)


def cli_reference() -> str:
    """Each ``mlscope`` command's ``--help``, 100 columns wide."""
    from pytest_mlscope.cli import build_parser, trace

    # ``mlscope trace diff`` and ``trace compare`` have parsers of their own (cli.main).
    own = {"mlscope trace": [trace.diff_parser(), trace.compare_parser()]}
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "102"  # argparse's width is COLUMNS - 2
    try:
        parts = []
        for command in _commands(build_parser()):
            for each in [command, *own.get(command.prog, [])]:
                help_text = each.format_help().rstrip()
                parts.append(f"### `{each.prog}`\n\n```text\n{help_text}\n```\n")
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before
    return "\n".join(parts)


GENERATORS: dict[str, Callable[[], str]] = {
    "manifest": manifest_reference,
    "options": options_reference,
    "cli": cli_reference,
}

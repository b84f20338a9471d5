"""A path option's value written as a separate argument can move pytest's rootdir: refuse that.

pytest chooses its rootdir and ini file before it loads any plugin, so at that moment it does not
know that ``--mlscope-db`` takes a value: in ``pytest --mlscope --mlscope-db /ci/results.db`` it
reads ``/ci/results.db`` as a test path. While the file does not exist pytest passes over it. Once
it exists (the second CI run), pytest searches for an ini file from ``/ci`` upward, finds none,
takes ``/ci`` as the rootdir and never reads the project's ``pyproject.toml``: testpaths,
``mlscope_manifests`` and the other settings are silently dropped and other tests are collected.
``--mlscope-db=/ci/results.db`` is one argument that starts with ``-``, which pytest passes over
as an option. This module recognizes the first case so the plugin can stop with the fix instead of
running the wrong suite. It reads files, never pytest's private search functions, whose signatures
change between pytest releases.
"""

from __future__ import annotations

import itertools
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

# Every pytest run given an mlscope option imports this module: the parsers of configuration files
# are imported only where a path option was written apart and a file must be read.

# The plugin's options whose value is a file or folder. An option added to options.py that takes a
# path belongs here too.
PATH_OPTIONS = (
    "--mlscope-manifests",
    "--mlscope-db",
    "--mlscope-cache",
    "--mlscope-artifact-store",
    "--mlscope-html",
    "--mlscope-md",
)

# The files pytest's own search (``_pytest.config.findpaths.locate_config``) looks for in each
# folder, in its order of precedence. The two ``pytest.toml`` names are pytest 9's.
_DEDICATED = ("pytest.toml", ".pytest.toml", "pytest.ini", ".pytest.ini")


@dataclass(frozen=True)
class MisreadPath:
    """A path option's value that pytest took for a test path, and what it cost."""

    option: str
    value: str
    rootdir: Path
    inifile: Path

    def __str__(self) -> str:
        joined = shlex.quote(f"{self.option}={self.value}")
        return (
            f"{self.option} {self.value}: pytest took {self.value!r} for a test path (it looks "
            f"for its rootdir and ini file before it knows that {self.option} takes a value), so "
            f"its rootdir is {self.rootdir} and it did not read {self.inifile}, this project's "
            "configuration: its testpaths, mlscope_* settings and addopts would be ignored and "
            "other tests collected. Expected the value joined to its option: write "
            f"{joined}, or name the configuration file: -c {shlex.quote(str(self.inifile))}"
        )


def separate_values(args: Sequence[str]) -> list[tuple[str, str]]:
    """Each path option written as two arguments, ``--mlscope-db PATH``, with its value."""
    found = []
    for option, value in itertools.pairwise(args):
        if option == "--":
            break
        if option in PATH_OPTIONS and not value.startswith("-"):
            found.append((option, value))
    return found


def _existing_path(arg: str, invocation_dir: Path) -> Path | None:
    """``arg`` as pytest's rootdir search reads it: the path before any ``::``, if it exists."""
    path = Path(os.path.normpath(invocation_dir / arg.split("::", 1)[0]))
    try:
        return path if path.exists() else None
    except OSError:  # a name too long for the file system, for one
        return None


def _ini_has_section(path: Path, section: str) -> bool:
    import configparser

    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, OSError, UnicodeDecodeError):
        return False  # pytest would refuse it itself; nothing of ours to say about it
    return parser.has_section(section)


def _pyproject_has_pytest(path: Path) -> bool:
    import tomllib

    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError):
        return False
    tool = document.get("tool")
    return isinstance(tool, dict) and isinstance(tool.get("pytest"), dict)


def _configures_pytest(path: Path) -> bool:
    if path.name in _DEDICATED:
        return True
    if path.name == "pyproject.toml":
        return _pyproject_has_pytest(path)
    return _ini_has_section(path, "pytest" if path.name == "tox.ini" else "tool:pytest")


def project_inifile(start: Path) -> Path | None:
    """The configuration file pytest finds from ``start`` when given no path: its search, upward.

    The first file with a pytest section, walking up from ``start``; else the nearest
    ``pyproject.toml``, which pytest takes for the rootdir marker even without a pytest table.
    """
    nearest_pyproject = None
    for folder in (start, *start.parents):
        for name in (*_DEDICATED, "pyproject.toml", "tox.ini", "setup.cfg"):
            path = folder / name
            if not path.is_file():
                continue
            if name == "pyproject.toml" and nearest_pyproject is None:
                nearest_pyproject = path
            if _configures_pytest(path):
                return path
    return nearest_pyproject


def find_misread(
    *,
    args: Sequence[str],
    positional: Sequence[str],
    invocation_dir: Path,
    rootdir: Path,
    inipath: Path | None,
) -> MisreadPath | None:
    """The path option value that cost pytest the project's configuration, if one did.

    ``args`` are the arguments pytest parsed (``PYTEST_ADDOPTS`` included), ``positional`` the
    test paths among them once our options are known. It is a misread when pytest found no ini
    file, one lies in ``invocation_dir`` or above, every test path given lies under that file's
    folder (so without our value pytest would have found it), and a path option's separate value
    names an existing path outside that folder. Test paths of the user's own outside the project
    are a choice, not a misread: then nothing is reported.
    """
    values = separate_values(args)
    if not values or inipath is not None:
        return None
    inifile = project_inifile(invocation_dir)
    if inifile is None:
        return None
    project = inifile.parent

    def outside(arg: str) -> bool:
        path = _existing_path(arg, invocation_dir)
        return path is not None and not path.is_relative_to(project)

    if any(outside(arg) for arg in positional if not arg.startswith("-")):
        return None
    for option, value in values:
        if outside(value):
            return MisreadPath(option=option, value=value, rootdir=rootdir, inifile=inifile)
    return None


def check(config: pytest.Config, args: Sequence[str]) -> None:
    """Stop the session with a usage error when a path option's value moved the rootdir."""
    import pytest

    namespace = config.known_args_namespace
    if namespace.help or namespace.version:
        return  # `pytest --help` must print its help whatever else is on the line
    misread = find_misread(
        args=args,
        positional=namespace.file_or_dir,
        invocation_dir=config.invocation_params.dir,
        rootdir=config.rootpath,
        inipath=config.inipath,
    )
    if misread is not None:
        raise pytest.UsageError(str(misread))

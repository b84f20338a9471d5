"""Recognizing a path option's value that pytest took for a test path: plain tests on real folders.

The plugin-level behaviour (exit code 4, the message on stderr) is in test_plugin.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_mlscope.rootdir import find_misread, project_inifile, separate_values


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "pyproject.toml").write_text('[tool.pytest.ini_options]\ntestpaths = ["tests"]\n')
    (folder / "tests").mkdir()
    return folder


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "ci"
    folder.mkdir()
    (folder / "results.db").touch()
    return folder


def _misread(project: Path, args: list[str], positional: tuple[str, ...] = ()) -> object:
    return find_misread(
        args=args,
        positional=positional,
        invocation_dir=project,
        rootdir=project.parent,
        inipath=None,
    )


def test_only_path_options_written_apart_are_values_pytest_may_misread() -> None:
    args = ["--mlscope-db", "/ci/a.db", "--mlscope-html=/r.html", "--mlscope-baseline", "main"]
    assert separate_values([*args, "--mlscope-md", "-q", "--", "--mlscope-cache", "/c"]) == [
        ("--mlscope-db", "/ci/a.db")
    ]


def test_an_existing_folder_outside_the_project_is_named_with_the_missed_file_and_the_fix(
    project: Path, outside: Path
) -> None:
    misread = _misread(project, ["--mlscope", "--mlscope-cache", str(outside)])
    text = str(misread)
    assert text.startswith(f"--mlscope-cache {outside}: pytest took '{outside}' for a test path")
    assert f"its rootdir is {project.parent} and it did not read {project / 'pyproject.toml'}" in (
        text
    )
    assert f"write --mlscope-cache={outside}, or name the configuration file: -c " in text


@pytest.mark.parametrize(
    "case",
    ["missing file", "inside the project", "joined with =", "ini file found", "own test path"],
)
def test_nothing_is_reported_where_pytest_found_what_the_user_meant(
    project: Path, outside: Path, case: str
) -> None:
    value = {"missing file": str(outside / "new.db"), "inside the project": "tests"}
    args = ["--mlscope-db", value.get(case, str(outside / "results.db"))]
    if case == "joined with =":
        args = ["=".join(args)]
    positional = (str(outside),) if case == "own test path" else ("tests",)
    inipath = project / "pyproject.toml" if case == "ini file found" else None
    found = find_misread(
        args=args,
        positional=positional,
        invocation_dir=project,
        rootdir=project.parent,
        inipath=inipath,
    )
    assert found is None


def test_the_project_file_is_found_the_way_pytest_searches_upward(tmp_path: Path) -> None:
    child = tmp_path / "child"
    child.mkdir()
    (child / "pyproject.toml").write_text('[project]\nname = "child"\n')
    (child / "tox.ini").write_text("[tox]\nenvlist = py\n")
    assert project_inifile(child) == child / "pyproject.toml"  # the rootdir marker, no table
    (tmp_path / "setup.cfg").write_text("[tool:pytest]\naddopts = -q\n")
    assert project_inifile(child) == tmp_path / "setup.cfg"  # a pytest section wins, above
    (child / "tox.ini").write_text("[pytest]\naddopts = -q\n")
    assert project_inifile(child) == child / "tox.ini"

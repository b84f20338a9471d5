"""The documentation: the site builds with no warning, its references are generated from the code,
and the README stays a short front page whose commands are the ones CI runs."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _services import requires_ci

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
CI_RUN = REPO / ".ci" / "run"
# The only place the README may link outside the repository: the paper the plugin rebuilds.
OUTSIDE_LINKS = {"https://arxiv.org/abs/1811.09737"}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site as `mkdocs build --strict` writes it (warnings are errors)."""
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        requires_ci("mkdocs-material is not installed: pip install -e '.[dev]'")
    directory = tmp_path_factory.mktemp("site")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(directory)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
    )
    output = built.stdout + built.stderr
    assert built.returncode == 0, output[-4000:]
    assert "WARNING" not in output, output[-4000:]
    return directory


def page(site: Path, name: str) -> str:
    text = (site / name / "index.html").read_text()
    assert "<!-- generated:" not in text  # every marker was filled
    return text


def test_manifest_reference_is_generated_from_the_schema(site: Path) -> None:
    from pytest_mlscope.manifest.schema import (
        Agreement,
        FrameworkSpec,
        Manifest,
        ModelFiles,
        PerformanceSpec,
    )

    text = page(site, "reference/manifest")
    for model in (Manifest, FrameworkSpec, PerformanceSpec, Agreement, ModelFiles):
        for key in model.model_fields:
            assert f"<code>{key}</code>" in text, (model.__name__, key)
    # types, defaults and the source's comments come along
    assert "Consecutive measurement rounds" in text
    assert "<code>tensorrt_plan</code>" in text
    assert '<code>["single_stream"]</code>' in text


def test_options_reference_is_generated_from_the_registered_options(site: Path) -> None:
    from _pytest.config.argparsing import Parser

    from pytest_mlscope.options import add_options

    parser = Parser(_ispytest=True)
    add_options(parser)
    text = page(site, "reference/options")
    for option in parser.getgroup("mlscope").options:
        for name in option.names():
            assert name in text, name
        # the help as the plugin gives it (up to any character HTML or Markdown would change)
        help_text = re.split(r"[(`'<>&%]", option.attrs()["help"])[0].strip()
        assert help_text in text, option.names()
    for name in parser._inidict:
        assert f"<code>{name}</code>" in text, name
    for name in ("--mlscope-baseline", "mlscope_manifests", "--mlscope-shard"):
        assert name in text


def test_cli_reference_holds_every_command(site: Path) -> None:
    text = page(site, "reference/cli")
    for command in ("init", "validate", "baseline set", "trace diff", "trace compare", "copy"):
        assert f"usage: mlscope {command}" in text, command


def _ci_line(comment: str) -> str:
    """The first command of .ci/run after the comment line that starts with ``comment``."""
    lines = CI_RUN.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(comment))
    return next(line for line in lines[start + 1 :] if line.strip() and not line.startswith("#"))


def test_readme_is_short_and_runs_what_ci_runs() -> None:
    text = README.read_text()
    assert len(text.splitlines()) < 250
    quick_start = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", quick_start, flags=re.S)
    # the plugin's own tests, exactly as .ci/run calls them
    test_command = _ci_line("# -- the README's test command")
    assert test_command.startswith("python3 -m venv .venv && ")
    assert test_command in commands
    # the quick start: the bundled suite on the defaults, which .ci/run runs last
    suite = _ci_line("# The README's quick start")
    assert suite == ".venv/bin/pytest --mlscope"
    assert any(
        c.startswith("python3 -m venv .venv && ") and c.endswith(f"&& {suite}") for c in commands
    )


def test_readme_links_resolve() -> None:
    links = re.findall(r"\]\(([^)\s]+)\)", README.read_text())
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        if re.match(r"[a-z]+:", link):
            assert link in OUTSIDE_LINKS, link
            continue
        path = link.split("#", 1)[0]
        assert path and (REPO / path).exists(), link

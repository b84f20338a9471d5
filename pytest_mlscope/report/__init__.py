"""Every format a stored run is written in, registered in one place.

Each format renders one :class:`~pytest_mlscope.report.data.ReportData`, read from the results
database by :func:`~pytest_mlscope.report.data.load`: the session's end, ``mlscope report`` and
``mlscope export`` all go through :data:`FORMATS`, so a new format is one entry here (and its
module), and every way of asking for it finds it. Modules load only when their format is
written: the plugin's start-up imports none of jinja2, matplotlib or pyperf.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_mlscope.report.data import ReportData


@dataclass(frozen=True)
class Format:
    """One way to write a run: ``write(data, path, append=, html=)`` writes the file and
    returns how many items it holds; ``html`` is where the run's HTML report is (a summary
    links to it); ``append`` adds to the file (GitHub's step summary) instead of replacing it."""

    name: str
    title: str  # how a session's summary names the file it wrote
    what: str  # for --help
    write: Callable[..., int]
    # Whether it needs each item's history and the other systems' results (slower to read).
    history: bool = False


def _text(data: ReportData, path: Path, *, append: bool = False, html: Path | None = None) -> int:
    from pytest_mlscope.report.terminal import summary_lines

    lines = summary_lines(data, everything_in=str(html) if html else None)
    _put(path, "\n".join(lines) + "\n", append)
    return len(data.items)


def _markdown(
    data: ReportData, path: Path, *, append: bool = False, html: Path | None = None
) -> int:
    from pytest_mlscope.report import markdown

    _put(path, markdown.render(data, html_path=str(html) if html else None), append)
    return len(data.items)


def _html(data: ReportData, path: Path, *, append: bool = False, html: Path | None = None) -> int:
    from pytest_mlscope.report import html as page

    page.write(page.render(data), path)
    return len(data.items)


def _pyperf(data: ReportData, path: Path, *, append: bool = False, html: Path | None = None) -> int:
    from pytest_mlscope.report.export import write_pyperf

    return write_pyperf(data.run, [item.record for item in data.items], path)


def _pytest_benchmark(
    data: ReportData, path: Path, *, append: bool = False, html: Path | None = None
) -> int:
    from pytest_mlscope.report.export import write_pytest_benchmark

    return write_pytest_benchmark(data.run, [item.record for item in data.items], path)


def _put(path: Path, text: str, append: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a" if append else "w", encoding="utf-8") as handle:
        handle.write(text)


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("html", "HTML report", "a self-contained page with plots", _html, history=True),
        Format(
            "markdown", "markdown summary", "a summary for a pull request", _markdown, history=True
        ),
        Format("text", "text summary", "the table the session prints", _text),
        Format("pyperf", "pyperf file", "JSON for python -m pyperf compare_to", _pyperf),
        Format(
            "pytest-benchmark",
            "pytest-benchmark file",
            "JSON for pytest-benchmark compare",
            _pytest_benchmark,
        ),
    )
}

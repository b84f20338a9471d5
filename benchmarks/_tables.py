"""Where the benchmarks' tables go: between their markers in docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path

PAGE = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def write_table(name: str, text: str, page: Path = PAGE) -> None:
    """Replace what stands between ``<!-- name -->`` and ``<!-- /name -->`` on the page."""
    begin, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    content = page.read_text()
    start, stop = content.index(begin) + len(begin), content.index(end)
    page.write_text(content[:start] + "\n" + text.rstrip("\n") + "\n" + content[stop:])

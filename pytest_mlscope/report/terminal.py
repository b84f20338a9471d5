"""The table printed at the end of a ``pytest --mlscope`` session."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_mlscope.session import MlscopeSession


def format_ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def format_rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> Iterator[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = (
            str(v).rjust(w) if i in right else str(v).ljust(w)
            for i, (v, w) in enumerate(zip(row, widths, strict=True))
        )
        return "  ".join(cells).rstrip()

    yield line(header)
    for row in rows:
        yield line(row)


def summary_lines(session: MlscopeSession) -> Iterator[str]:
    header = ("item", "outcome", "accuracy", "median ms", "p99 ms", "items/s", "cold start ms")
    rows = []
    for record in session.records:
        result = record.result
        summary = result.summary if result else None
        cold = (
            format_ms(result.cold_start.load_s + result.cold_start.first_inference_s)
            if result
            else "-"
        )
        rows.append(
            (
                record.cell.id,
                record.outcome,
                result.accuracy.headline() if result else "-",
                format_ms(summary.median if summary else None),
                format_ms(summary.p99 if summary else None),
                format_rate(summary.throughput if summary else None),
                cold,
            )
        )
    yield from table(header, rows, right={3, 4, 5, 6})
    if session.started:
        yield f"run {session.run_id} stored in {session.store.url}"

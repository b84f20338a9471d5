"""What the ``mlscope`` subcommands share: exit statuses, opening the results database, and
the small text formatters behind their tables and ``key: value`` headers."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_mlscope.report.terminal import RESULT_COLUMNS, RESULT_NUMBERS, result_row, table

if TYPE_CHECKING:
    from pytest_mlscope.store import ResultRecord, RunRecord, Store

# Exit statuses: 1 means "what you asked about is not right" (an invalid manifest); 2 means the
# command could not do its job (no database, unknown run), as argparse uses for usage errors.
EXIT_OK = 0
EXIT_INVALID = 1
EXIT_ERROR = 2

DB_HELP = "database file or SQLAlchemy URL (default: $MLSCOPE_DB, else .mlscope/results.db)"


# -- formatting ----------------------------------------------------------------------------------


def local_time(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {outcome}" for outcome, n in counts.items()) or "no results"


def size_text(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    size = count / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def pairs_text(pairs: Sequence[tuple[str, str]]) -> str:
    width = max(len(key) for key, _ in pairs) + 1
    return "\n".join(f"{key + ':':<{width}} {value}".rstrip() for key, value in pairs)


def shown_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def git_text(run: RunRecord) -> str:
    if not run.git_commit and not run.git_branch:
        return "-"
    text = (run.git_commit or "no commit")[:10]
    if run.git_branch:
        text += f" on {run.git_branch}"
    if run.git_dirty:
        text += " (dirty)"
    return text


# -- arguments and the database ------------------------------------------------------------------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def open_store(location: str | None) -> Store:
    from pytest_mlscope.store import Store, default_location

    # Reading never creates: a wrong --db must say so rather than show an empty database.
    return Store.from_location(location or default_location(), create=False)


# -- a run's results (``mlscope show``, ``mlscope baseline show``) -------------------------------


def _verdict_text(verdict: dict[str, object] | None) -> str:
    if not verdict:
        return "-"
    return f"{verdict.get('kind', '')} {verdict.get('ratio_text') or ''}".strip() or "-"


def _result_table(results: Sequence[ResultRecord]) -> str:
    """The results under RESULT_COLUMNS, plus a verdict column when any result has one."""
    rows = [
        result_row(r.item_id, r.outcome, r.accuracy, r.summary, r.cold_start, r.memory)
        for r in results
    ]
    if not any(r.verdict for r in results):
        return table(RESULT_COLUMNS, rows, RESULT_NUMBERS)
    for row, result in zip(rows, results, strict=True):
        row.append(_verdict_text(result.verdict))
    return table([*RESULT_COLUMNS, "verdict"], rows, RESULT_NUMBERS)


def stored_run(store: Store, run_id: str) -> tuple[RunRecord, list[ResultRecord], str]:
    """A run, its results and the database's location: what ``print_run`` prints."""
    run = store.get_run(run_id)
    return run, store.results(run.id), store.url


def print_run(run: RunRecord, results: Sequence[ResultRecord], location: str) -> None:
    """What `mlscope show` prints for a run: its header, results table and failure messages."""
    host = run.host
    host_text = " · ".join(
        str(part)
        for part in (
            run.hostname,
            host.get("cpu_model"),
            f"{host.get('physical_cores', '?')} cores",
            f"{host.get('memory_gb', '?')} GiB",
        )
        if part
    )
    finished = f", finished {local_time(run.finished_at)}" if run.finished_at else ""
    header = [
        ("run", run.id),
        ("started", local_time(run.started_at) + finished),
        ("status", f"{run.status} ({counts_text(run.counts)})"),
        ("git", git_text(run)),
        ("host", host_text or "-"),
        ("database", location),
    ]
    if run.tags:
        header.append(("tags", ", ".join(f"{k}={v}" for k, v in sorted(run.tags.items()))))
    print(pairs_text(header))
    if not results:
        print("\nno results recorded")
        return
    print()
    print(_result_table(results))
    from pytest_mlscope.report.data import Item
    from pytest_mlscope.report.terminal import generation_lines

    for line in generation_lines([Item(record=r, verdict=r.verdict) for r in results]):
        print(line)
    failures = [r for r in results if r.outcome in ("failed", "error") and r.message]
    if failures:
        print()
        for result in failures:
            lines = result.message.strip().splitlines() if result.message else []
            print(f"{result.outcome.upper()} {result.item_id}: {lines[0] if lines else ''}")
            for extra in lines[1:]:
                print(f"    {extra}")

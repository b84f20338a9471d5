"""The run as a short markdown page for CI job summaries (GitHub's ``$GITHUB_STEP_SUMMARY``).

Short on purpose: the verdict counts, the items that need a look with their numbers, and one
table. Names come from manifests and a shared database, so every cell is escaped for markdown
and HTML (GitHub renders both).
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING

from pytest_mlscope.report.terminal import printable

if TYPE_CHECKING:
    from pytest_mlscope.report.data import Item, LayersAcross, ReportData

MAX_ROWS = 50  # a job summary is read, not searched; the HTML report has every row
MAX_LAYERS = 15  # slowest layers per model in the side-by-side tables
# What can start emphasis, code, links, tables or strike-through inside a table cell; < > &
# are HTML-escaped first (GitHub renders inline HTML).
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def escape(text: str) -> str:
    """Text that shows as itself in a markdown table cell, whatever it contains."""
    flat = printable(" ".join(str(text).split()))
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(flat, quote=False))


def _code(text: str) -> str:
    """Inline code, which markdown shows verbatim; only a backtick could end it early."""
    return "`" + printable(" ".join(str(text).split())).replace("`", "'") + "`"


def render(data: ReportData, *, html_path: str | None = None) -> str:
    from pytest_mlscope.report.terminal import ms, number

    run = data.run
    lines = [f"## pytest-mlscope: run `{run.id[:12]}` ({escape(run.status)})", ""]
    commit = (run.git_commit or "-")[:10]
    where = f"{escape(run.hostname)}, {escape(str(run.host.get('cpu_model') or '?'))}"
    lines.append(f"commit `{commit}` on {escape(run.git_branch or '-')} · host {where}")
    if data.baseline_runs:
        base = ", ".join(
            f"`{b.id[:12]}` ({(b.git_commit or '-')[:10]})" for b in data.baseline_runs
        )
        name = f"**{escape(data.baseline.name)}** → " if data.baseline else ""
        lines.append(f"baseline: {name}run {base}")
    counts = data.counts()
    if data.compared:
        lines += ["", " · ".join(f"**{n}** {kind}" for kind, n in counts.items())]
    outcomes = ", ".join(f"{n} {outcome}" for outcome, n in data.outcomes().items())
    lines += ["", f"items: {outcomes or 'none'}"]
    for note in data.notes:
        lines.append(f"> {escape(note)}")

    flagged = data.flagged()
    if flagged:
        lines += ["", "### Needs a look", ""]
        for item in flagged:
            verdict = item.verdict or {}
            text = f"- **{escape(item.kind or '')}** {_code(item.id)}"
            if verdict.get("ratio_text"):
                text += f" {escape(verdict['ratio_text'])}"
            text += f": {escape(verdict.get('reason') or '')}"
            lines.append(text)
            movers = verdict.get("layer_changes") or []
            if movers:
                lines.append(f"  - slowest movers: {escape('; '.join(movers))}")

    failed = [i for i in data.items if i.record.outcome in ("failed", "error")]
    if failed:
        lines += ["", "### Failed", ""]
        for item in failed:
            lines.append(f"- {_code(item.id)}: {escape(item.why)}")
    lines += _skipped(data.items)

    lines += [
        "",
        "| item | outcome | accuracy | median ms | p99 ms | items/s | memory MiB | vs baseline "
        "| verdict |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    order = {id(item): i for i, item in enumerate(flagged)}
    rows = sorted(data.items, key=lambda item: order.get(id(item), len(order)))
    for item in rows[:MAX_ROWS]:
        record, summary = item.record, item.record.summary
        verdict = item.verdict or {}
        lines.append(
            "| "
            + " | ".join(
                [
                    escape(item.id),
                    escape(record.outcome),
                    escape(record.accuracy.headline() if record.accuracy else "-"),
                    ms(summary.median if summary else None),
                    ms(summary.p99 if summary else None),
                    number(summary.throughput if summary else None),
                    f"{record.memory.model / 2**20:.1f}" if record.memory is not None else "-",
                    escape(verdict.get("ratio_text") or "-"),
                    escape(verdict.get("kind") or "-"),
                ]
            )
            + " |"
        )
    if len(rows) > MAX_ROWS:
        lines.append(f"\n{len(rows) - MAX_ROWS} more items in the HTML report")
    lines += _generation(data.items)
    lines += _energy(data.items)
    lines += _scaling(data.items)
    for group in data.layers_across:
        lines += ["", *_layers_across(group)]
    if html_path:
        lines += ["", f"Full report (plots, layer diffs, history): `{html_path}`"]
    return "\n".join(lines) + "\n"


def _section(title: str, columns: list[str], rows: list[list[str]]) -> list[str]:
    """A titled table of escaped cells; nothing when there are no rows."""
    if not rows:
        return []
    return [
        "",
        f"### {title}",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(escape(cell) for cell in row) + " |" for row in rows),
    ]


def _generation(items: list[Item]) -> list[str]:
    """Each generate item's time to first token, inter-token latency and tokens/s."""
    from pytest_mlscope.report.terminal import GENERATION_COLUMNS, generation_rows

    return _section("Generation", GENERATION_COLUMNS, generation_rows(items))


def _energy(items: list[Item]) -> list[str]:
    """Joules per inference where a counter measured them, else why nothing was measured."""
    from pytest_mlscope.report.terminal import ENERGY_COLUMNS, energy_rows

    rows, why_not = energy_rows(items)
    if not rows and why_not:
        return ["", f"Energy: {escape(why_not)} (no estimate is offered in its place)"]
    return _section("Energy", ENERGY_COLUMNS, rows)


def _scaling(items: list[Item]) -> list[str]:
    """Each sweep over sequence lengths judged against its baseline: time ∝ L^k, k's change."""
    from pytest_mlscope.report.terminal import scaling_lines

    found = list(scaling_lines(items))
    return ["", "```", *found, "```"] if found else []


def _layers_across(group: LayersAcross) -> list[str]:
    """One model's slowest layers side by side: each framework's self µs and its first kernel
    (escaped, not inline code: a ``|`` in a code span still splits a GitHub table's cell)."""
    from pytest_mlscope.tracing.layers import OTHER

    labels = group.labels
    lines = [
        f"### Layers across frameworks: {escape(group.title)}",
        "",
        "| layer | op | " + " | ".join(escape(label) for label in labels) + " | fastest |",
        "| --- | --- | " + " | ".join("---:" for _ in labels) + " | --- |",
    ]
    named = [entry for entry in group.rows if entry.layer != OTHER]
    for entry in named[:MAX_LAYERS]:
        cells = [
            ""
            if side is None
            else f"{side.self_us:,.1f}" + (f" {escape(side.kernels[0])}" if side.kernels else "")
            for side in entry.sides
        ]
        fastest = escape(group.fastest(entry) or "")
        row = [escape(entry.layer), escape("/".join(entry.op_types)), *cells, fastest]
        lines.append("| " + " | ".join(row) + " |")
    if len(named) > MAX_LAYERS:
        lines.append(f"\n{len(named) - MAX_LAYERS} more layers in the HTML report")
    return lines


SKIPPED_NAMED = 3  # items named per skip reason; the rest are counted


def _skipped(items: list[Item]) -> list[str]:
    """Why items were skipped, one line per reason: a host without a GPU skips every GPU item
    for one reason, which a line per item would repeat."""
    reasons: dict[str, list[str]] = {}
    for item in items:
        if item.record.outcome == "skipped":
            reasons.setdefault(item.why or "no reason given", []).append(item.id)
    if not reasons:
        return []
    lines = ["", "### Skipped", ""]
    for reason, ids in reasons.items():
        named = ", ".join(_code(i) for i in ids[:SKIPPED_NAMED])
        if len(ids) > SKIPPED_NAMED:
            named += f" and {len(ids) - SKIPPED_NAMED} more"
        lines.append(f"- {escape(reason)}: {named}")
    return lines

"""Plain-text tables: the end-of-session summary and the ``mlscope`` command's listings.

One table layout and one set of number formats, so a run reads the same in the pytest summary
and in ``mlscope show``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_mlscope.protocol import AccuracyReport, ColdStart, MemoryUse, Summary
    from pytest_mlscope.report.data import Item, ReportData

RESULT_COLUMNS = (
    "item",
    "outcome",
    "accuracy",
    "median ms",
    "p99 ms",
    "items/s",
    "cold start ms",
    "memory MiB",
)
RESULT_NUMBERS = {3, 4, 5, 6, 7}
VERDICT_COLUMNS = ("vs baseline", "verdict")


def number(value: float | None) -> str:
    """About three significant digits without exponents: 1234, 123, 12.3, 1.23, 0.456."""
    if value is None or math.isnan(value):
        return "-"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def ms(seconds: float | None) -> str:
    return number(None if seconds is None else seconds * 1e3)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str, *, lines: bool = False) -> str:
    """``text`` with control characters (ESC, NUL, …) written as escapes; with ``lines``,
    newlines and tabs are kept (a page shows them as themselves, a table row cannot)."""
    pattern = _CONTROL_BUT_LINES if lines else _CONTROL
    return pattern.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    right: Collection[int] = (),
    rule: bool = True,
) -> str:
    """Columns padded to their widest cell; columns in ``right`` (numbers) right-aligned.

    Control characters are shown escaped: names come from a database others write to, and an
    escape sequence in one must not repaint the reader's terminal.
    """
    header = [printable(title) for title in header]
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [len(title) for title in header]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    lines = [line(header)]
    if rule:
        lines.append("  ".join("-" * width for width in widths).rstrip())
    lines.extend(line(row) for row in rows)
    return "\n".join(lines)


def result_row(
    item_id: str,
    outcome: str,
    accuracy: AccuracyReport | None,
    summary: Summary | None,
    cold_start: ColdStart | None,
    memory: MemoryUse | None = None,
) -> list[str]:
    """One row under RESULT_COLUMNS."""
    return [
        item_id,
        outcome,
        accuracy.headline() if accuracy else "-",
        ms(summary.median if summary else None),
        ms(summary.p99 if summary else None),
        number(summary.throughput if summary else None),
        ms(cold_start.load_s + cold_start.first_inference_s) if cold_start else "-",
        f"{memory.model / 2**20:.1f}" if memory is not None else "-",
    ]


def _top(rows: list[Any], k: int) -> list[Any]:
    from pytest_mlscope.tracing.layers import top_layers

    return top_layers(rows, k)


def sweep_id(cell: Any) -> str:
    """A sweep's name: its items' id without the sequence length."""
    return cell.model_copy(update={"sequence_length": None}).id


def _undetectable(verdict: dict[str, Any] | None) -> bool:
    """Whether a verdict's data could not have flagged a slowdown of its own threshold."""
    if not verdict or verdict.get("detectable") is None or verdict.get("threshold") is None:
        return False
    return bool(verdict["detectable"] > verdict["threshold"])


def _memory_growth(memory: dict[str, Any] | None) -> str:
    """Memory's exponent of L, baseline -> now, and its kind (compare.scaling.MemoryScaling)."""
    if not memory:
        return ""
    before, after = memory["baseline_exponent"], memory["current_exponent"]
    return f"L^{before:.2f} -> L^{after:.2f} {memory['kind']}"


def scaling_lines(items: Sequence[Any]) -> Iterator[str]:
    """Each sweep over sequence lengths judged against the baseline: how time grows with L."""
    rows = []
    for item in items:
        scaling = (item.verdict or {}).get("scaling")
        if not scaling:
            continue
        rows.append(
            [
                sweep_id(item.record.cell),
                f"seq{scaling['lengths'][0]}-seq{scaling['lengths'][-1]}",
                f"L^{scaling['baseline_exponent']:.2f} -> L^{scaling['current_exponent']:.2f}",
                f"{scaling['change']:+.2f} [{scaling['low']:+.2f}, {scaling['high']:+.2f}]",
                scaling["kind"],
                _memory_growth(scaling.get("memory")),
            ]
        )
    if rows:
        yield "scaling over sequence length (time ∝ L^k, baseline -> now; change of k, 95 %):"
        columns = ["sweep", "lengths", "time", "change of k", "verdict", "memory"]
        yield from ("  " + line for line in table(columns, rows, ()).splitlines())


GENERATION_COLUMNS = [
    "item", "prompt", "new", "TTFT ms", "TTFT p90", "ITL p50 ms", "ITL p90", "ITL p99",
    "tokens/s", "generation ms", "TTFT vs baseline", "TPOT vs baseline",
]  # fmt: skip


def _phase(verdict: Any, phase: str) -> str:
    """A phase's change against the baseline and its kind (compare.generation), when judged."""
    judged = ((verdict or {}).get("generation") or {}).get(phase)
    return f"{judged['change']} {judged['kind']}" if judged else ""


def generation_rows(items: Sequence[Any]) -> list[list[str]]:
    """Each generate item's per-token figures: time to first token (the prompt's prefill and
    the first pick), inter-token latency, decode tokens/s, the whole generation's median (the
    latency its verdict judges) and, against a baseline, each phase's own verdict."""
    rows = []
    for item in items:
        figures = item.record.generation
        if figures is None:
            continue
        summary = item.record.summary
        rows.append(
            [
                item.id,
                str(figures.prompt_tokens),
                str(figures.new_tokens),
                f"{figures.ttft_ms:.2f}",
                f"{figures.ttft_p90_ms:.2f}",
                f"{figures.itl_p50_ms:.2f}",
                f"{figures.itl_p90_ms:.2f}",
                f"{figures.itl_p99_ms:.2f}",
                f"{figures.tokens_per_s:,.1f}",
                ms(summary.median if summary else None),
                _phase(item.verdict, "ttft"),
                _phase(item.verdict, "tpot"),
            ]
        )
    return rows


def generation_lines(items: Sequence[Any]) -> Iterator[str]:
    rows = generation_rows(items)
    if rows:
        yield "generation (greedy; prompt and new tokens; medians over the timed generations):"
        yield from ("  " + line for line in table(GENERATION_COLUMNS, rows, ()).splitlines())


ENERGY_COLUMNS = ["item", "J/inference", "J/token", "mean W", "counters", "what they saw"]


def energy_rows(items: Sequence[Any]) -> tuple[list[list[str]], str | None]:
    """Each item's energy where a counter measured it (telemetry.energy_figures), and, when no
    item's was measurable, why not: counters only, never an estimate."""
    rows, why_not = [], None
    for item in items:
        seen = item.record.telemetry or {}
        if "energy_per_inference_j" in seen:
            per_token = seen.get("energy_per_token_j")
            rows.append(
                [
                    item.id,
                    f"{seen['energy_per_inference_j']:.4g}",
                    f"{per_token:.4g}" if per_token is not None else "",
                    f"{seen.get('energy_power_w', 0.0):.1f}",
                    str(seen.get("energy", "")).removeprefix("measured: "),
                    str(seen.get("energy_scope", "")),
                ]
            )
        elif why_not is None and seen.get("energy"):
            why_not = str(seen["energy"])
    return rows, None if rows else why_not


def energy_lines(items: Sequence[Any]) -> Iterator[str]:
    rows, why_not = energy_rows(items)
    if rows:
        yield "energy (measured counters; the timing pass's mean power x the median call):"
        yield from ("  " + line for line in table(ENERGY_COLUMNS, rows, ()).splitlines())
    elif why_not:
        yield f"energy: {why_not} (no estimate is offered in its place)"


def matrix_lines(data: ReportData) -> Iterator[str]:
    """The seed's "one model across frameworks" table: per model and framework (stack), the
    median latency of its single-stream item at its smallest batch (and sequence length), and
    whether it agrees with the manifest's reference framework."""
    cells: dict[str, dict[str, tuple[tuple[int, int], str]]] = {}
    for item in data.items:
        record = item.record
        cell = record.cell
        if cell.scenario != "single_stream" or record.summary is None:
            continue
        agreement = record.accuracy.check("agreement") if record.accuracy else None
        declared = data.declared.get(cell.model)
        reference = declared.reference if declared else None
        if (reference, "cpu") == (cell.framework_id, cell.device):
            mark = "ref"
        elif agreement is None:
            mark = ""
        else:
            mark = "agrees" if agreement.passed else "DISAGREES"
        text = f"{ms(record.summary.median)} ms {mark}".rstrip()
        known = cells.setdefault(cell.model, {}).get(cell.framework_id)
        size = (cell.batch_size, cell.sequence_length or 0)
        if known is None or size < known[0]:
            seq = f" seq{cell.sequence_length}" if cell.sequence_length is not None else ""
            cells[cell.model][cell.framework_id] = (size, f"{text} (bs{cell.batch_size}{seq})")
    models = {model: row for model, row in cells.items() if len(row) > 1}
    if not models:
        return
    # Columns in the manifests' order (the reference first, usually), not in the order items ran.
    declared_order = [
        framework
        for model in models
        if model in data.declared
        for framework in data.declared[model].frameworks
    ]
    seen = {f for row in models.values() for f in row}
    frameworks = [f for f in dict.fromkeys([*declared_order, *sorted(seen)]) if f in seen]
    yield "across frameworks (single-stream median; agreement with the manifest's reference):"
    rows = [
        [model, *(row.get(f, (0, "-"))[1] for f in frameworks)] for model, row in models.items()
    ]
    for line in table(["model", *frameworks], rows).splitlines():
        yield "  " + line


SHORT_TABLE = 30  # rows in the end-of-session table before passing items are left out


def _worth_showing(items: Sequence[Item]) -> list[Item]:
    """Every item if they fit; else failures, regressions and unsure verdicts first, then as
    many others as fit. The HTML report has them all."""
    if len(items) <= SHORT_TABLE:
        return list(items)
    quiet = ("ok", "new", None)

    def remarkable(item: Item) -> bool:
        return item.record.outcome not in ("passed", "skipped") or item.kind not in quiet

    chosen = [item for item in items if remarkable(item)]
    room = max(0, SHORT_TABLE - len(chosen))
    chosen_ids = {id(i) for i in chosen} | {id(i) for i in
                  [i for i in items if not remarkable(i)][:room]}  # fmt: skip
    return [item for item in items if id(item) in chosen_ids]


def summary_lines(data: ReportData, *, everything_in: str | None = None) -> Iterator[str]:
    """A run's results as the end of its session prints them: the table (the remarkable items
    when there are many; ``everything_in`` names the report that has them all), the verdicts in
    a line with their notes, where the traces are and one model across frameworks."""
    compared = data.against is not None or data.compared
    rows = []
    shown = _worth_showing(data.items)
    for item in shown:
        record = item.record
        row = result_row(
            item.id,
            record.outcome,
            record.accuracy,
            record.summary,
            record.cold_start,
            record.memory,
        )
        if compared:
            verdict = item.verdict
            row += [verdict.get("ratio_text") or "-", verdict["kind"]] if verdict else ["-", "-"]
        rows.append(row)
    columns = [*RESULT_COLUMNS, *(VERDICT_COLUMNS if compared else ())]
    yield from table(columns, rows, RESULT_NUMBERS).splitlines()
    hidden = len(data.items) - len(shown)
    if hidden:
        where = f" in {everything_in}" if everything_in else ""
        yield f"... and {hidden} more items that passed unremarkably (every item{where})"
    if compared:
        counts: dict[str, int] = {}
        designs: dict[str, int] = {}
        for item in data.items:
            if item.verdict:
                counts[item.verdict["kind"]] = counts.get(item.verdict["kind"], 0) + 1
                if item.verdict.get("design"):
                    design = item.verdict["design"]
                    designs[design] = designs.get(design, 0) + 1
        verdicts = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "none"
        how = ", ".join(f"{n} {design}" for design, n in sorted(designs.items()))
        m = data.comparisons
        # An item whose timing could not have flagged a slowdown of the threshold (its budget
        # ran out on a noisy machine) is outside the promise: said, not left to the reason.
        short = [item for item in data.items if _undetectable(item.verdict)]
        yield (
            f"compared with {data.against or 'a baseline'}: {verdicts}"
            + (f" ({how})" if how else "")
            + "; a slowdown of the threshold is caught, half of it is not flagged, over "
            f"{m} item{'s' if m != 1 else ''}"
            + (
                f" (but {len(short)} whose timing could not tell a slowdown of the threshold "
                "apart: below)"
                if short
                else ""
            )
        )
        # Unsure verdicts pass; why each is unsure is what to act on (more time, a quieter
        # machine, instruction counts), so it is printed rather than left in the report.
        for item in data.items:
            if item.verdict and item.verdict["kind"] == "inconclusive":
                yield f"  inconclusive {item.id}: {item.verdict.get('reason', '')}"
        yield from data.notes
    yield from generation_lines(data.items)
    yield from energy_lines(data.items)
    yield from scaling_lines(data.items)
    traced = [item.record for item in data.items if item.record.trace and item.record.trace.path]
    if traced:
        yield f"traces ({traced[0].trace.level}), open in https://ui.perfetto.dev:"  # type: ignore[union-attr]
        for record in traced:
            top = ", ".join(f"{row.layer} {row.self_us:.0f} µs" for row in _top(record.layers, 3))
            yield f"  {record.item_id}: {record.trace.path}" + (f" (top: {top})" if top else "")  # type: ignore[union-attr]
    yield from matrix_lines(data)
    if data.items:
        from pytest_mlscope.hardware import noise_sources

        noisy = noise_sources(data.run.host.get("tuning") or {})
        if noisy:
            yield (
                f"host not tuned for benchmarking ({', '.join(noisy)}): expect noisier timings "
                "(`python -m pyperf system tune` fixes what it can)"
            )

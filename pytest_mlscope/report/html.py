"""The HTML regression report: one self-contained file (inline CSS, SVG images as data URIs,
a small sorting script) that opens offline and can be attached to a CI job.

Everything from the database is escaped by jinja2's autoescape; the page's Content Security
Policy allows only its own script (by hash) and data-URI images, so a hostile name in a shared
database is shown as text and could not run even if an escape were missed.
"""

from __future__ import annotations

import base64
import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import markupsafe

from pytest_mlscope.compare.memory import MEMORY_THRESHOLD, memory_change
from pytest_mlscope.report.terminal import ms, number, printable

if TYPE_CHECKING:
    from pytest_mlscope.report.data import AcrossSystems, Item, ReportData

# Sorts a table by the clicked column: numbers by their data-value, text otherwise; a second
# click reverses. Kept in one constant so the page's CSP can name it by hash.
SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, column) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var descending = th.getAttribute("aria-sort") === "ascending";
      table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", descending ? "descending" : "ascending");
      function key(row) {
        var cell = row.cells[column];
        var value = cell.getAttribute("data-value");
        if (value !== null && value !== "" && !isNaN(Number(value))) return Number(value);
        return cell.textContent.trim().toLowerCase();
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (typeof x !== typeof y) { x = String(x); y = String(y); }
        return (x < y ? -1 : x > y ? 1 : 0) * (descending ? -1 : 1);
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""
TRACE_PEEK_BYTES = 64


def _environment() -> Any:
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("pytest_mlscope.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        # Control characters in a name from a shared database are shown as escapes, as in the
        # terminal, not passed to the page invisible.
        finalize=_shown,
    )
    environment.filters["ms"] = ms
    environment.filters["number"] = number
    environment.filters["pct"] = _pct
    environment.filters["when"] = _when
    return environment


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.1%}" if signed else f"{value:.1%}"


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def _shown(value: Any) -> Any:
    """Plain text as the page shows it; markup the report made itself (Markup) as it is."""
    if isinstance(value, str) and not isinstance(value, markupsafe.Markup):
        return printable(value, lines=True)
    return value


def trace_state(path: str | None) -> tuple[str, str | None]:
    """Whether a trace file can be opened: ('ok', uri), or ('missing' | 'empty' | 'truncated' |
    'unreadable', None). A cheap look at both ends of the file, not a parse: traces run to
    hundreds of MB, and the report must not break on a bad one."""
    if not path:
        return "missing", None
    file = Path(path)
    try:
        size = file.stat().st_size
        if size == 0:
            return "empty", None
        with file.open("rb") as handle:
            head = handle.read(TRACE_PEEK_BYTES).lstrip()
            handle.seek(max(0, size - TRACE_PEEK_BYTES))
            tail = handle.read().rstrip()
    except FileNotFoundError:
        return "missing", None
    except OSError:
        return "unreadable", None
    if head[:1] not in (b"{", b"[") or tail[-1:] not in (b"}", b"]"):
        return "truncated", None
    return "ok", file.resolve().as_uri()


def _item_view(item: Item) -> dict[str, Any]:
    record = item.record
    summary = record.summary
    verdict = item.verdict or {}
    cold = record.cold_start
    state, uri = trace_state(record.trace.path if record.trace else None)
    return {
        "item": item,
        "id": item.id,
        "anchor": "item-" + hashlib.sha1(item.id.encode()).hexdigest()[:12],
        "cell": record.cell,
        "outcome": record.outcome,
        "message": record.message,
        "why": item.why,
        "accuracy": record.accuracy.headline() if record.accuracy else "-",
        "accuracy_ok": record.accuracy.passed if record.accuracy else None,
        "summary": summary,
        "cold_start": (cold.load_s + cold.first_inference_s) if cold else None,
        "memory_mib": record.memory.model / 2**20 if record.memory is not None else None,
        "memory_change": memory_change(
            verdict.get("baseline_memory"),
            verdict.get("current_memory"),
            verdict.get("memory_threshold") or MEMORY_THRESHOLD,
        ),
        "verdict": verdict,
        "kind": verdict.get("kind") or "",
        "ratio": verdict.get("ratio"),
        "interval": (
            f"[{verdict['ratio_low'] - 1:+.1%}, {verdict['ratio_high'] - 1:+.1%}]"
            if verdict.get("ratio_low") is not None and verdict.get("ratio_high") is not None
            else "-"
        ),
        "layer_changes": [c for c in item.layer_diff if c.kind != "same"][:10],
        "trace": record.trace,
        "trace_state": state,
        "trace_uri": uri,
        "framework_version": record.framework_version,
    }


def render(data: ReportData, *, title: str | None = None) -> str:
    """The report as one HTML document."""
    from pytest_mlscope import __version__
    from pytest_mlscope.report.plots import all_plots

    items = [_item_view(item) for item in data.items]
    by_id = {view["id"]: view for view in items}
    template = _environment().get_template("report.html.j2")
    return template.render(
        title=title or f"pytest-mlscope report, run {data.run.id[:12]}",
        data=data,
        run=data.run,
        items=items,
        flagged=[by_id[item.id] for item in data.flagged()],
        flagged_ids={item.id for item in data.flagged()},
        traced=[view for view in items if view["trace"] is not None],
        counts=data.counts(),
        plots=all_plots(data),
        generation=_generation_table(data.items),
        energy=_energy_table(data.items),
        sweeps=[
            (item.id, item.verdict["scaling"])
            for item in data.items
            if item.verdict and item.verdict.get("scaling")
        ],
        host=_host_rows(data.run.host),
        **_page(__version__),
    )


def _generation_table(items: list[Any]) -> tuple[list[str], list[list[str]]] | None:
    from pytest_mlscope.report.terminal import GENERATION_COLUMNS, generation_rows

    rows = generation_rows(items)
    return (GENERATION_COLUMNS, rows) if rows else None


def _energy_table(items: list[Any]) -> tuple[list[str], list[list[str]], str | None]:
    from pytest_mlscope.report.terminal import ENERGY_COLUMNS, energy_rows

    rows, why_not = energy_rows(items)
    return ENERGY_COLUMNS, rows, why_not


def _host_rows(host: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for key in ("hostname", "arch", "os", "cpu_model", "physical_cores", "logical_cores",
                "memory_gb", "python", "cuda_driver"):  # fmt: skip
        if host.get(key) not in (None, ""):
            rows.append((key.replace("_", " "), str(host[key])))
    gpus = host.get("gpus") or []
    names = ", ".join(str(gpu.get("name")) for gpu in gpus)
    rows.append(("gpus", names or host.get("gpu_note") or "none"))
    if host.get("isa"):
        rows.append(("isa", ", ".join(host["isa"])))
    for name, version in sorted((host.get("packages") or {}).items()):
        rows.append((name, str(version)))
    for image, image_id in sorted((host.get("containers") or {}).items()):
        rows.append(("container", f"{image} ({str(image_id)[7:19]})"))
    return rows


def render_across(views: list[AcrossSystems], location: str) -> str:
    """``mlscope report --across-systems``: the across-systems section on a page of its own."""
    from pytest_mlscope import __version__
    from pytest_mlscope.report.plots import systems

    return (
        _environment()
        .get_template("across.html.j2")
        .render(
            title=f"pytest-mlscope: {', '.join(v.model for v in views)} across systems",
            views=views,
            location=location,
            plots={view.model: systems(view) for view in views},
            **_page(__version__),
        )
    )


def _page(version: str) -> dict[str, Any]:
    digest = base64.b64encode(hashlib.sha256(SORT_SCRIPT.encode()).digest()).decode()
    return {
        "script": SORT_SCRIPT,
        "script_hash": f"sha256-{digest}",
        "version": version,
        "generated": datetime.now(UTC),
    }


def write(text: str, path: str | os.PathLike[str]) -> Path:
    """Write a rendered page atomically: a reader (a CI artifact upload) never sees half."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    partial.write_text(text, encoding="utf-8")
    partial.replace(target)
    return target

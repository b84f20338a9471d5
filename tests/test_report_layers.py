"""The report's side-by-side layer tables: one model's layers matched by path across the
frameworks of a run, each with its self time and the kernels it chose (what ``mlscope trace
compare`` prints), from a real store and from a real traced session."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_store import HOST, make_result

from pytest_mlscope.protocol import Cell, LayerRow
from pytest_mlscope.report import data as report_data
from pytest_mlscope.report import html, markdown
from pytest_mlscope.store import Store
from pytest_mlscope.tracing.layers import OTHER

HEADING = "Layers across frameworks: alexnet (cpu, bs1, single_stream)"
HOSTILE_KERNEL = "<script>alert(1)</script> & co"


class _Sections(HTMLParser):
    """Each ``section.layers-across`` of a page: its heading and, per layer, its cells' text."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[dict[str, object]] = []
        self._inside = False  # in a layers-across section (sections do not nest)
        self._tag: str | None = None
        self._row: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        if tag == "section" and "layers-across" in classes:
            self._inside = True
            self.sections.append({"heading": "", "rows": {}})
        elif not self._inside:
            return
        elif tag in ("h2", "td"):
            self._tag = tag
            if tag == "td" and self._row is not None:
                self._row.append("")
        elif tag == "tr" and dict(attrs).get("data-layer") is not None:
            self._row = []
            self.sections[-1]["rows"][dict(attrs)["data-layer"]] = self._row  # type: ignore[index]

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._inside = False
        if tag in ("section", "tr"):
            self._row = None
        if tag == self._tag:
            self._tag = None

    def handle_data(self, data: str) -> None:
        if not self._inside:
            return
        if self._tag == "h2":
            self.sections[-1]["heading"] += data  # type: ignore[operator]
        elif self._tag == "td" and self._row:
            self._row[-1] += data


def _sections(page: str) -> list[dict[str, object]]:
    parser = _Sections()
    parser.feed(page)
    return parser.sections


def _row(layer: str, op: str, us: float, *kernels: str) -> LayerRow:
    return LayerRow(layer=layer, op_type=op, self_us=us, total_us=us, kernels=list(kernels))


TABLES = {
    "torch": [
        _row("features.0", "Conv2d", 900.0, "oneDNN convolution (jit:avx2)", "aten::add_"),
        _row("classifier.1", "Linear", 300.0, "addmm"),
        _row(OTHER, "(other)", 50.0),
    ],
    "onnxruntime": [
        _row("features.0", "FusedConv", 400.0, "Conv+Relu/NCHWc (CPU)"),
        _row("classifier.1", "Gemm", 350.0, HOSTILE_KERNEL),
        _row("ReorderOutput", "ReorderOutput", 5.0, "ReorderOutput (CPU)"),
    ],
}


def _store_run(store: Store, tables: dict[str, list[LayerRow]], batch_size: int = 1) -> str:
    run = store.start_run(host=HOST)
    for framework in ("torch", "onnxruntime", "tensorflow"):
        cell = Cell(model="alexnet", framework=framework, batch_size=batch_size)
        result = make_result(cell).model_copy(update={"layers": tables.get(framework, [])})
        store.record_result(run, cell=cell, outcome="passed", result=result)
    # Another batch size of the model, traced on one framework only: a group of its own, too
    # small to show.
    cell = Cell(model="alexnet", framework="tensorflow", batch_size=8)
    result = make_result(cell).model_copy(update={"layers": [_row("features.0", "Conv2D", 1.0)]})
    store.record_result(run, cell=cell, outcome="passed", result=result)
    store.finish_run(run)
    return run


def test_the_report_puts_one_models_layers_side_by_side_across_frameworks(tmp_path: Path) -> None:
    with Store.from_location(tmp_path / "results.db") as store:
        both = _store_run(store, TABLES)
        only_torch = _store_run(store, {"torch": TABLES["torch"]})
        data = report_data.load(store, both)
        alone = report_data.load(store, only_torch)

    (group,) = data.layers_across
    assert group.labels == ["onnxruntime", "torch"]  # by item id, as `trace compare` orders them
    assert [entry.layer for entry in group.rows] == [
        "features.0", "classifier.1", "ReorderOutput", OTHER,
    ]  # fmt: skip
    assert group.wins() == {"onnxruntime": 1, "torch": 1}

    page = html.render(data)
    assert HOSTILE_KERNEL not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page
    (section,) = _sections(page)
    assert section["heading"] == HEADING
    rows = section["rows"]
    assert isinstance(rows, dict)
    # layer, op, onnxruntime µs, its kernels, torch µs, its kernels, fastest
    assert rows["features.0"] == [
        "features.0", "FusedConv/Conv2d", "400.0", "Conv+Relu/NCHWc (CPU)",
        "900.0", "oneDNN convolution (jit:avx2), aten::add_", "onnxruntime",
    ]  # fmt: skip
    assert rows["classifier.1"] == [
        "classifier.1", "Gemm/Linear", "350.0", HOSTILE_KERNEL, "300.0", "addmm", "torch",
    ]  # fmt: skip
    # A layer only one framework has: empty cells for the other, no fastest.
    assert rows["ReorderOutput"] == [
        "ReorderOutput", "ReorderOutput", "5.0", "ReorderOutput (CPU)", "", "", "",
    ]  # fmt: skip
    assert "fastest per layer: onnxruntime 1, torch 1" in page
    assert page.count("Layers across frameworks") == 1  # not for tensorflow's lone bs8 table

    summary = markdown.render(data)
    assert f"### {markdown.escape(HEADING)}" in summary
    assert "| features.0 | FusedConv/Conv2d | 400.0 Conv+Relu/NCHWc (CPU) | 900.0 oneDNN" in summary
    assert (
        "<script>" not in summary
        and "350.0 &lt;script&gt;alert(1)&lt;/script&gt; &amp; co |" in (summary)
    )

    # One framework traced (the others ran untraced): nothing to put side by side, no heading.
    assert alone.layers_across == []
    assert "Layers across frameworks" not in html.render(alone)
    assert "Layers across frameworks" not in markdown.render(alone)


def test_a_traced_session_on_two_frameworks_reports_their_kernels_per_layer(
    suite: pytest.Pytester,
) -> None:
    """Real profiles: torch and ONNX Runtime on the digits CNN, both name its first convolution
    ``features.0``, and the session's own report shows each framework's kernels for it."""
    report = suite.path / "report.html"
    result = suite.runpytest_subprocess(
        "--mlscope", "-p", "no:cacheprovider", "--mlscope-trace=library",
        "-k", "digits and bs1 and single_stream and (torch or onnxruntime)",
        "--mlscope-min-count", "50", "--mlscope-min-duration", "0.2", "--mlscope-warmup", "5",
        f"--mlscope-html={report}",
    )  # fmt: skip
    result.assert_outcomes(passed=2)
    (section,) = _sections(report.read_text())
    assert section["heading"] == "Layers across frameworks: digits_cnn (cpu, bs1, single_stream)"
    rows = section["rows"]
    assert isinstance(rows, dict)
    first = rows["features.0"]
    assert first[0] == "features.0"
    ort_us, ort_kernels, torch_us, torch_kernels = first[2:6]
    assert float(ort_us.replace(",", "")) > 0 and float(torch_us.replace(",", "")) > 0
    assert ort_kernels and torch_kernels  # each framework names what it ran for the layer
    assert ort_kernels != torch_kernels

"""How the results database and the report scale: 10 000 stored results, a report over 1 000 runs.

1. **Insert**: 1 000 runs of 10 items each (alexnet and digits_cnn on torch and onnxruntime at
   a few batch sizes), every result as a session stores it — its own transaction, with its raw
   samples (``--samples`` per result), accuracy, cold start, predictor and a verdict. Reported:
   the wall time of the 10 000 ``record_result`` calls (runs are started and finished around
   them, outside the clock, as a session does) and the rate. Then the same 10 000 results
   inserted in bulk, as ``mlscope copy`` moves history into another database: whole runs, 100 to
   a transaction (``Store.import_runs``), into ``--copy-to`` (default: a new SQLite file).
2. **Report**: the HTML report of the newest run, compared now with a named baseline (the 500th
   run), each item's trend plot reading its history over all 1 000 runs (``--history``), the
   across-systems view reading every result of both models. Reported: reading the database, and
   drawing and rendering, separately; and the page's size.

Targets on this project's 2-core CI machine: insert <= 2 s, report <= 5 s. Run from the
repository root::

    .venv/bin/python benchmarks/store_scale.py                       # SQLite in a temp folder
    .venv/bin/python benchmarks/store_scale.py --db postgresql+psycopg://user:pw@127.0.0.1/db
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

TARGET_INSERT_S = 2.0
TARGET_REPORT_S = 5.0
CELLS = [
    ("alexnet", "torch", 1), ("alexnet", "onnxruntime", 1), ("alexnet", "onnxruntime", 8),
    ("digits_cnn", "torch", 1), ("digits_cnn", "torch", 8), ("digits_cnn", "torch", 32),
    ("digits_cnn", "onnxruntime", 1), ("digits_cnn", "onnxruntime", 8),
    ("digits_cnn", "onnxruntime", 32), ("alexnet", "torch", 8),
]  # fmt: skip
HOSTS = [
    {"hostname": f"runner-{i}", "arch": "x86_64", "cpu_model": cpu, "physical_cores": cores,
     "logical_cores": cores, "memory_gb": memory, "gpus": [], "python": "3.11.7",
     "packages": {"torch": "2.13.0+cpu", "onnxruntime": "1.32.0"}}
    for i, (cpu, cores, memory) in enumerate(
        [("Intel(R) Xeon(R) Processor", 2, 23.6), ("AMD EPYC 9654", 96, 755.0)]
    )
]  # fmt: skip


def _result(cell: object, rng: random.Random, samples: int) -> object:
    from pytest_mlscope.protocol import (
        AccuracyCheck,
        AccuracyReport,
        ColdStart,
        EvaluationResult,
        PredictorInfo,
    )
    from pytest_mlscope.stats import summarize

    base = 20e6 if cell.model == "alexnet" else 0.05e6  # type: ignore[attr-defined]
    scale = base * cell.batch_size**0.7  # type: ignore[attr-defined]
    samples_ns = [int(scale * rng.lognormvariate(0, 0.05)) for _ in range(samples)]
    return EvaluationResult(
        cell=cell,
        predictor=PredictorInfo(framework=cell.framework, version="1.0", device="cpu"),  # type: ignore[attr-defined]
        artifact_sha256="ab" * 32,
        cold_start=ColdStart(load_s=0.2, first_inference_s=0.01),
        accuracy=AccuracyReport(
            checks=[AccuracyCheck(name="top1", passed=True, value=0.99, detail=">= 0.97")],
            samples=360,
            top1=0.99,
        ),
        summary=summarize(samples_ns, cell.batch_size),  # type: ignore[attr-defined]
        samples_ns=samples_ns,
        rounds=[samples // 5] * 5,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help="a SQLAlchemy URL (default: a new SQLite file)")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=500, help="raw samples per result")
    parser.add_argument("--history", type=int, default=1000, help="runs in each trend plot")
    parser.add_argument("--keep", metavar="PATH", help="write the report here")
    parser.add_argument("--copy-to", help="an empty database for the bulk insert (default: SQLite)")
    args = parser.parse_args(argv)

    from pytest_mlscope.protocol import Cell
    from pytest_mlscope.report import data as report_data
    from pytest_mlscope.report import html
    from pytest_mlscope.store import Store

    folder = tempfile.TemporaryDirectory(prefix="mlscope-scale-")
    location = args.db or str(Path(folder.name) / "results.db")
    rng = random.Random(7)
    cells = [Cell(model=m, framework=f, batch_size=b) for m, f, b in CELLS]
    # Results are built before the clock starts: what is timed is the database, not pydantic.
    prepared = [[_result(cell, rng, args.samples) for cell in cells] for _ in range(50)]
    verdict = {"kind": "ok", "reason": "inside the threshold", "ratio": 1.01, "ratio_low": 0.99,
               "ratio_high": 1.03, "threshold": 0.05, "baseline_run": None}  # fmt: skip

    with Store.from_location(location) as store:
        inserting = 0.0
        run_ids = []
        for index in range(args.runs):
            run_id = store.start_run(host=HOSTS[index % 7 == 6])  # every 7th run elsewhere
            run_ids.append(run_id)
            batch = prepared[index % len(prepared)]
            started = time.perf_counter()
            for cell, result in zip(cells, batch, strict=True):
                store.record_result(run_id, cell=cell, outcome="passed", result=result,
                                    verdict=verdict, duration_s=1.0)  # fmt: skip
            inserting += time.perf_counter() - started
            store.finish_run(run_id)
        store.set_baseline("main", run_ids[len(run_ids) // 2])
        total = args.runs * len(cells)

        started = time.perf_counter()
        loaded = report_data.load(store, run_ids[-2], baseline="main", history=args.history)
        reading = time.perf_counter() - started
        started = time.perf_counter()
        page = html.render(loaded)
        drawing = time.perf_counter() - started
        url = store.url
        exported = [store.export_run(run_id) for run_id in run_ids]
    with Store.from_location(args.copy_to or str(Path(folder.name) / "copy.db")) as target:
        started = time.perf_counter()
        target.import_runs(exported)
        bulk = time.perf_counter() - started
        bulk_url = target.url
    if args.keep:
        html.write(page, args.keep)
    folder.cleanup()

    report = reading + drawing
    points = sum(len(item.history) for item in loaded.items)
    print(
        f"database: {url.split('://')[0]}; {args.runs} runs x {len(cells)} items, "
        f"{args.samples} samples per result"
    )
    print(
        f"insert {total} results: {inserting:.2f} s ({total / inserting:,.0f} results/s); "
        f"target <= {TARGET_INSERT_S:.0f} s"
    )
    print(
        f"bulk insert (mlscope copy) of {total} results into {bulk_url.split('://')[0]}: "
        f"{bulk:.2f} s ({total / bulk:,.0f} results/s, whole runs 100 to a transaction)"
    )
    print(
        f"report over {args.runs} runs: {report:.2f} s (reading {reading:.2f} s, drawing and "
        f"rendering {drawing:.2f} s), {len(page) / 1e6:.2f} MB, {points} history points, "
        f"{len(loaded.across)} across-systems views; target <= {TARGET_REPORT_S:.0f} s"
    )
    return 0 if min(inserting, bulk) <= TARGET_INSERT_S and report <= TARGET_REPORT_S else 1


if __name__ == "__main__":
    sys.exit(main())

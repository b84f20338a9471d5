"""Stored runs written in the formats of pyperf and pytest-benchmark, so their own tools
(``python -m pyperf compare_to``, ``pytest-benchmark compare``) read our measurements.

Each format is produced through its own library (pyperf's ``BenchmarkSuite``, pytest-benchmark's
``Stats``), so the files are what those tools write themselves. Both libraries are optional:
``pip install pyperf pytest-benchmark``.
"""

from __future__ import annotations

import json
import os
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mlscope.errors import MlscopeError

if TYPE_CHECKING:
    from pytest_mlscope.store import ResultRecord, RunRecord


def _timed(results: list[ResultRecord]) -> list[ResultRecord]:
    return [r for r in results if r.samples_ns]


def _rounds(result: ResultRecord) -> list[list[float]]:
    """Samples in seconds, split into the measurement's rounds (one round if none recorded)."""
    values = [ns / 1e9 for ns in result.samples_ns]
    sizes = result.rounds if result.rounds and sum(result.rounds) == len(values) else [len(values)]
    chunks, start = [], 0
    for size in sizes:
        if size:
            chunks.append(values[start : start + size])
        start += size
    return chunks


PYPERF_VALUES_PER_RUN = 25


def _quantiles(values: list[float], count: int) -> list[float]:
    """``count`` evenly spaced quantiles of ``values`` (midpoints, so min and max are not forced).

    pyperf's ``compare_to`` runs a t-test that refuses samples of unequal size (it raises, and
    ``compare_to`` then calls the difference significant), while our rounds hold as many samples
    as fit their duration. Summarizing each round by the same number of quantiles keeps its
    distribution (mean and median within rounding) and makes two exports with the same number of
    rounds comparable value for value.
    """
    import numpy as np

    probabilities = (np.arange(count) + 0.5) / count
    return [float(v) for v in np.quantile(np.asarray(values), probabilities)]


def write_pyperf(run: RunRecord, results: list[ResultRecord], path: str | os.PathLike[str]) -> int:
    """One pyperf benchmark per item, one pyperf run per measurement round; returns the count.

    Each run holds PYPERF_VALUES_PER_RUN values (see ``_quantiles``), as pyperf's own runner
    gives every worker process the same number of values.
    """
    try:
        import pyperf
    except ImportError:
        raise MlscopeError("exporting to pyperf needs pyperf: pip install pyperf") from None
    suite = None
    host = run.host or {}
    for result in _timed(results):
        runs = []
        for values in _rounds(result):
            metadata: dict[str, Any] = {
                "name": result.item_id,
                "unit": "second",
                "date": run.started_at.astimezone(UTC).isoformat(timespec="seconds"),
                "hostname": run.hostname,
                "loops": 1,
            }
            if host.get("cpu_model"):
                metadata["cpu_model_name"] = host["cpu_model"]
            if result.framework_version:
                metadata[f"{result.cell.framework}_version"] = result.framework_version
            runs.append(
                pyperf.Run(
                    _quantiles(values, PYPERF_VALUES_PER_RUN),
                    metadata=metadata,
                    collect_metadata=False,
                )
            )
        benchmark = pyperf.Benchmark(runs)
        if suite is None:
            suite = pyperf.BenchmarkSuite([benchmark])
        else:
            suite.add_benchmark(benchmark)
    if suite is None:
        raise MlscopeError(f"run {run.id[:12]} has no timed results to export")
    Path(path).unlink(missing_ok=True)  # pyperf refuses to overwrite
    suite.dump(str(path))
    return len(suite)


def write_pytest_benchmark(
    run: RunRecord, results: list[ResultRecord], path: str | os.PathLike[str]
) -> int:
    """pytest-benchmark's saved-session JSON: one benchmark per item, stats from its samples."""
    try:
        from pytest_benchmark.stats import Stats
    except ImportError:
        raise MlscopeError(
            "exporting to pytest-benchmark needs it installed: pip install pytest-benchmark"
        ) from None
    benchmarks = []
    for result in _timed(results):
        stats = Stats()
        for ns in result.samples_ns:
            stats.update(ns / 1e9)
        data = stats.as_dict()
        data["data"] = [ns / 1e9 for ns in result.samples_ns]
        data["iterations"] = 1
        cell = result.cell
        benchmarks.append(
            {
                "group": cell.model,
                "name": result.item_id,
                "fullname": result.item_id,
                "params": {
                    "framework": cell.framework,
                    "device": cell.device,
                    "batch_size": cell.batch_size,
                    "scenario": cell.scenario,
                },
                "param": cell.param_id,
                "extra_info": {"framework_version": result.framework_version},
                "options": {
                    "disable_gc": False,
                    "timer": "perf_counter_ns",
                    "min_rounds": len(result.samples_ns),
                    "max_time": 0,
                    "min_time": 0,
                    "warmup": True,
                },
                "stats": data,
            }
        )
    if not benchmarks:
        raise MlscopeError(f"run {run.id[:12]} has no timed results to export")
    host = run.host or {}
    document = {
        "machine_info": {
            "node": run.hostname,
            "processor": host.get("arch", ""),
            "machine": host.get("arch", ""),
            "python_version": str(host.get("python", "")).split(" ")[0],
            "cpu": {"brand_raw": host.get("cpu_model", "")},
        },
        "commit_info": {
            "id": run.git_commit,
            "branch": run.git_branch,
            "dirty": bool(run.git_dirty),
        },
        "benchmarks": benchmarks,
        "datetime": run.started_at.astimezone(UTC).isoformat(),
        "version": "5.1.0",
    }
    Path(path).write_text(json.dumps(document, indent=2))
    return len(benchmarks)

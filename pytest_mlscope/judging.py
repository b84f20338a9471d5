"""The verdict policy applied to stored runs: where the session's run-to-run noise comes from,
and the comparison of two stored runs that ``mlscope compare`` and the report make.

``compare`` stays pure; this module reads the store for it, so a stored run judged later gets
the noise and settings its session judged it with, and says what the session said.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_mlscope.compare import Noise, Verdict
    from pytest_mlscope.store import RunRecord, Store

HISTORY_FOR_NOISE = 30  # comparable earlier runs whose spread sets an item's run-to-run noise


def item_noise(
    store: Store,
    item_id: str,
    host: dict[str, Any],
    framework_version: str | None,
    before: str | None = None,
) -> Noise:
    """An item's run-to-run spread of latency and of instructions, from its stored results on a
    comparable environment (CPU model, framework version, container image), filtered before
    the HISTORY_FOR_NOISE newest are taken; ``before`` (a run id) leaves out that run and every
    later one, so a stored run compared later gets the noise its session saw."""
    from pytest_mlscope.compare import Noise
    from pytest_mlscope.stats import between_run_noise

    points = store.comparable_history(
        item_id,
        cpu_model=host.get("cpu_model"),
        framework_version=framework_version,
        container_image=host.get("container_image"),
        before=before,
        limit=HISTORY_FOR_NOISE,
    )
    counts = [p.instructions for p in points if p.instructions]
    return Noise(
        latency=between_run_noise([p.median for p in points]),
        instructions=between_run_noise(counts),
        runs=len(points),
    )


def compare_stored_runs(
    store: Store,
    baseline: RunRecord,
    current: RunRecord,
    *,
    threshold: float | None = None,
    ignore_environment: bool = False,
) -> dict[str, Verdict]:
    """Every item of ``current`` against ``baseline``, by ``compare.verdict``: with the noise of
    the runs stored before ``current`` and the threshold and comparisons its session used (its
    stored verdicts), unless ``threshold`` overrides them."""
    from pytest_mlscope.compare import compare_runs, environment, run_sides

    records = store.latest_results(current.id)
    sides_b = run_sides(records, current.host, current.id)
    sides_a = run_sides(store.latest_results(baseline.id), baseline.host, baseline.id)
    noise = {}
    settings: dict[str, dict[str, Any]] = {}
    for item in sides_b:
        record = records[item]
        noise[item] = item_noise(
            store,
            item,
            environment(current.host, record.predictor),
            record.framework_version,
            before=current.id,
        )
        if record.verdict:
            settings[item] = {key: record.verdict.get(key) for key in ("threshold", "comparisons")}
    return compare_runs(
        sides_a,
        sides_b,
        threshold=threshold,
        ignore_environment=ignore_environment,
        noise=noise,
        settings=settings,
    )

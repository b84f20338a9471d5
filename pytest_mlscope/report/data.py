"""What a report shows, read from the results database: one run, its verdicts, its baseline's
results, each item's history and the same model on other systems.

The HTML report, the markdown summary and ``mlscope report`` all start from :func:`load`, so a
report written at the end of a session and one rebuilt later from a shared database agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_mlscope.store import (
        BaselineRecord,
        HistoryPoint,
        ResultRecord,
        RunRecord,
        Store,
        SystemPoint,
    )
    from pytest_mlscope.tracing.layers import LayerAcross, LayerChange

VERDICT_ORDER = ("regression", "inconclusive", "incomparable", "improvement", "new", "ok")
HISTORY_RUNS = 30  # runs in each item's trend plot
# Host facts that make two machines different systems (hostnames do not: two runners with the
# same hardware label are one system).
SYSTEM_FACTS = (
    ("arch", "architecture"),
    ("cpu_model", "CPU"),
    ("physical_cores", "physical cores"),
    ("logical_cores", "logical cores"),
    ("memory_gb", "memory GiB"),
)


@dataclass
class Item:
    """One item of the reported run and what it is compared with."""

    record: ResultRecord
    verdict: dict[str, Any] | None = None
    baseline: ResultRecord | None = None
    history: list[HistoryPoint] = field(default_factory=list)
    layer_diff: list[LayerChange] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.record.item_id

    @property
    def kind(self) -> str | None:
        return (self.verdict or {}).get("kind")

    @property
    def why(self) -> str:
        """Why the item did not pass, in one line: a skip's reason (its first line), a failure's
        last line (where the error says what went wrong); empty when it passed."""
        if self.record.outcome == "passed":
            return ""
        lines = [line.strip() for line in (self.record.message or "").splitlines()]
        lines = [line for line in lines if line]
        if not lines:
            return ""
        return lines[0] if self.record.outcome == "skipped" else lines[-1]


@dataclass(frozen=True)
class System:
    """Machines with the same hardware facts, and what the newest of their runs said."""

    key: str
    label: str
    facts: dict[str, Any]
    hostnames: tuple[str, ...]
    latest: datetime


@dataclass
class AcrossSystems:
    """A model's newest result per configuration on every system in the database."""

    model: str
    systems: list[System]
    configs: list[str]  # framework[@stack]-device-bsN-scenario, in a stable order
    cells: dict[tuple[str, str], SystemPoint]  # (config, system key) -> newest point
    differences: list[str]  # the hardware facts that differ between the systems, named

    def median(self, config: str, system: str) -> float | None:
        point = self.cells.get((config, system))
        return point.summary.median if point else None


@dataclass
class LayersAcross:
    """One model's layer tables side by side across the frameworks (or stacks) of a run, at one
    device, batch size and scenario: what ``mlscope trace compare`` prints, for the report."""

    model: str
    device: str
    batch_size: int
    scenario: str
    records: list[ResultRecord]  # one per framework (or stack), by item id
    rows: list[LayerAcross]  # matched by path, slowest on any side first, ``(other)`` last

    @property
    def labels(self) -> list[str]:
        return [record.cell.framework_id for record in self.records]

    @property
    def title(self) -> str:
        return f"{self.model} ({self.device}, bs{self.batch_size}, {self.scenario})"

    def fastest(self, entry: LayerAcross) -> str | None:
        """The framework with the least self time in a layer two or more of them ran; None for
        ``(other)``, a layer only one names, or a tie."""
        from pytest_mlscope.tracing.layers import OTHER

        sides = zip(entry.sides, self.labels, strict=True)
        present = [(row.self_us, label) for row, label in sides if row is not None]
        if entry.layer == OTHER or len(present) < 2:
            return None
        present.sort()
        return present[0][1] if present[0][0] < present[1][0] else None

    def wins(self) -> dict[str, int]:
        """Per framework, how many layers it ran fastest (in column order, zeros left out)."""
        counts = dict.fromkeys(self.labels, 0)
        for entry in self.rows:
            label = self.fastest(entry)
            if label is not None:
                counts[label] += 1
        return {label: n for label, n in counts.items() if n}

    def totals(self) -> list[float]:
        """Each framework's self times summed: a whole profiled prediction, ``(other)`` included."""
        return [sum(row.self_us for row in record.layers) for record in self.records]


def layers_across(records: Iterable[ResultRecord]) -> list[LayersAcross]:
    """The items with layer tables grouped by model, device, batch size and scenario, each group
    of two or more frameworks (or stacks) matched layer by layer with ``side_by_side``."""
    from pytest_mlscope.tracing.layers import side_by_side

    groups: dict[tuple[str, str, int, str], list[ResultRecord]] = {}
    for record in sorted(records, key=lambda r: r.item_id):
        if record.layers:
            cell = record.cell
            key = (cell.model, cell.device, cell.batch_size, cell.scenario)
            groups.setdefault(key, []).append(record)
    return [
        LayersAcross(*key, records=chosen, rows=side_by_side([r.layers for r in chosen]))
        for key, chosen in groups.items()
        if len(chosen) > 1
    ]


@dataclass(frozen=True)
class Declared:
    """What a model's manifest says that its stored results do not: its frameworks (stacks) in
    the manifest's order, and the one the others must agree with. Known to a session, which has
    the manifests; a report rebuilt from the database alone orders by name and marks no
    reference."""

    frameworks: tuple[str, ...]
    reference: str | None = None


@dataclass
class ReportData:
    """Everything any report of one stored run shows: every format (terminal, markdown, HTML,
    the exports) renders from this, so they cannot disagree."""

    run: RunRecord
    location: str
    items: list[Item]
    baseline: BaselineRecord | None = None
    baseline_runs: list[RunRecord] = field(default_factory=list)
    across: list[AcrossSystems] = field(default_factory=list)
    layers_across: list[LayersAcross] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # What the verdicts compared with, in words ("baseline 'main'", "A side"): set by the session
    # that judged them, or by load() when it judges against a named baseline now.
    against: str | None = None
    declared: dict[str, Declared] = field(default_factory=dict)  # by model

    def counts(self) -> dict[str, int]:
        """Items per verdict, in reading order (regressions first), 'none' for uncompared."""
        found: dict[str, int] = {}
        for item in self.items:
            kind = item.kind or "none"
            found[kind] = found.get(kind, 0) + 1
        order = {kind: i for i, kind in enumerate(VERDICT_ORDER)}
        return dict(sorted(found.items(), key=lambda kv: order.get(kv[0], len(order))))

    def outcomes(self) -> dict[str, int]:
        return dict(self.run.counts)

    @property
    def compared(self) -> bool:
        return any(item.verdict for item in self.items)

    @property
    def comparisons(self) -> int:
        """How many items the verdicts' suite-wide false-alarm budget was shared by."""
        found = [(item.verdict or {}).get("comparisons") or 0 for item in self.items]
        return max([1, *found])

    def flagged(self) -> list[Item]:
        """Items a reader should look at: regressions, then inconclusive, then improvements."""
        wanted = ("regression", "inconclusive", "incomparable", "improvement")
        order = {kind: i for i, kind in enumerate(wanted)}
        chosen = [item for item in self.items if item.kind in order]
        return sorted(chosen, key=lambda item: order[item.kind or ""])


def config_of(cell: Any) -> str:
    """An item id without its model: the column key of the across-systems table."""
    framework = f"{cell.framework}@{cell.stack}" if cell.stack else cell.framework
    return f"{framework}-{cell.device}-bs{cell.batch_size}-{cell.scenario}"


def system_key(host: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    facts: dict[str, Any] = {key: host.get(key) for key, _ in SYSTEM_FACTS}
    if isinstance(facts.get("memory_gb"), int | float):
        facts["memory_gb"] = round(float(facts["memory_gb"]))
    facts["gpus"] = [gpu.get("name") for gpu in host.get("gpus") or []]
    key = "|".join(f"{name}={facts[name]}" for name in sorted(facts))
    return key, facts


def system_label(facts: dict[str, Any]) -> str:
    gpus = facts.get("gpus") or []
    gpu = ", ".join(str(g) for g in gpus) if gpus else "no GPU"
    return (
        f"{facts.get('cpu_model') or '?'} · {facts.get('physical_cores') or '?'} cores · "
        f"{facts.get('memory_gb') or '?'} GiB · {gpu} ({facts.get('arch') or '?'})"
    )


def _fact(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "none"
    return "none" if value in (None, "") else str(value)


def system_differences(systems: list[System]) -> list[str]:
    """Each hardware fact on which the systems differ, with every system's value."""
    differences = []
    for name, label in (*SYSTEM_FACTS, ("gpus", "GPUs")):
        values = [system.facts.get(name) for system in systems]
        if any(value != values[0] for value in values):
            shown = "; ".join(f"{_fact(value)} (system {i + 1})" for i, value in enumerate(values))
            differences.append(f"{label}: {shown}")
    return differences


def across_systems(store: Store, model: str) -> AcrossSystems:
    """The newest result of each configuration of ``model`` on each system, newest system first."""
    systems: dict[str, System] = {}
    hostnames: dict[str, dict[str, None]] = {}
    cells: dict[tuple[str, str], SystemPoint] = {}
    configs: dict[str, None] = {}
    for point in store.model_results(model):  # newest first
        key, facts = system_key(point.host)
        if key not in systems:
            systems[key] = System(key, system_label(facts), facts, (), point.started_at)
        hostnames.setdefault(key, {})[point.hostname] = None
        config = config_of(point.cell)
        configs[config] = None
        cells.setdefault((config, key), point)
    found = [
        System(s.key, s.label, s.facts, tuple(hostnames[s.key]), s.latest) for s in systems.values()
    ]
    return AcrossSystems(
        model=model,
        systems=found,
        configs=sorted(configs),
        cells=cells,
        differences=system_differences(found),
    )


def _recompute(
    store: Store, run: RunRecord, results: dict[str, ResultRecord], baseline_run: RunRecord
) -> dict[str, dict[str, Any]]:
    from pytest_mlscope.judging import compare_stored_runs

    verdicts = compare_stored_runs(store, baseline_run, run)
    return {item: verdict.as_dict() for item, verdict in verdicts.items()}


def load(
    store: Store,
    run_ref: str,
    *,
    baseline: str | None = None,
    history: int = HISTORY_RUNS,
    across: bool = True,
) -> ReportData:
    """Everything the report of run ``run_ref`` shows.

    With ``baseline`` the run is compared with that named baseline now (the verdicts stored
    with the run may have been made against another one, or none); without it the stored
    verdicts are shown as the session made them.
    """
    from pytest_mlscope.store import StoreError
    from pytest_mlscope.tracing.layers import diff_layers

    run = store.get_run(run_ref)
    results = store.latest_results(run.id)
    data = ReportData(run=run, location=store.url, items=[Item(r) for r in results.values()])
    verdicts = {item: record.verdict for item, record in results.items() if record.verdict}
    if baseline is not None:
        data.against = f"baseline {baseline!r}"
        data.baseline = store.get_baseline(baseline)
        base_run = store.get_run(data.baseline.run_id)
        if base_run.id == run.id:
            data.notes.append(f"baseline {baseline!r} points to this run: nothing to compare")
            verdicts = {}
        else:
            verdicts = _recompute(store, run, results, base_run)
            data.notes.append(
                f"verdicts computed now against baseline {baseline!r} (run {base_run.id[:12]}) "
                "by the session's rule, with each item's threshold and the run-to-run noise of "
                "the runs stored before this one"
            )
    base_ids = list(
        dict.fromkeys(v["baseline_run"] for v in verdicts.values() if v.get("baseline_run"))
    )
    base_results: dict[str, dict[str, ResultRecord]] = {}
    for base_id in base_ids:
        try:
            data.baseline_runs.append(store.get_run(base_id))
        except StoreError:  # a baseline run deleted since: the verdicts still stand
            data.notes.append(f"baseline run {base_id[:12]} is no longer in the database")
            continue
        base_results[base_id] = store.latest_results(base_id)
    if data.against is None and base_ids:  # the session knew the baseline's name; this, its run
        data.against = "baseline run " + ", ".join(base_id[:12] for base_id in base_ids)
    for item in data.items:
        item.verdict = verdicts.get(item.id)
        base_id = (item.verdict or {}).get("baseline_run")
        if base_id in base_results:
            item.baseline = base_results[base_id].get(item.id)
        if item.baseline and item.baseline.layers and item.record.layers:
            item.layer_diff = diff_layers(item.baseline.layers, item.record.layers)
        if history and item.record.summary is not None:
            item.history = store.item_history(item.id, limit=history)
    data.layers_across = layers_across(item.record for item in data.items)
    if across:
        for model in dict.fromkeys(item.record.cell.model for item in data.items):
            view = across_systems(store, model)
            if len(view.systems) > 1:
                data.across.append(view)
    return data

"""Splitting one suite across the N runners of a CI matrix, so each runs 1/N of the items.

The split must be the same on every runner: each collects the whole suite and keeps its own
part, and nothing coordinates them but the shared database. So the plan is made once per group
(a CI pipeline id, or the commit) by the first runner to collect, stored, and read by the others;
a runner that sees no database plan makes the same plan anyway from the same inputs. Items are
balanced by their stored durations (longest first onto the least-loaded shard), items never run
counting as the median known duration.
"""

from __future__ import annotations

import hashlib
import os
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_mlscope.session import MlscopeSession

SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
# The id of one CI pipeline run, by CI system: every runner of a matrix sees the same value.
GROUP_VARIABLES = (
    ("GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT"),
    ("CI_PIPELINE_ID", None),  # GitLab
    ("BUILDKITE_BUILD_ID", None),
    ("CIRCLE_WORKFLOW_ID", None),
    ("BUILD_TAG", None),  # Jenkins
)


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based, as CI matrices count
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse(text: str) -> Shard:
    """``K/N`` with 1 <= K <= N, as in ``--mlscope-shard 2/4``."""
    match = SHARD.fullmatch(text or "")
    if not match:
        raise ValueError(f"expected K/N (like 2/4), got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"expected 1 <= K <= N in K/N, got {text!r}")
    return Shard(index, count)


def default_group(
    environ: Mapping[str, str] | None = None, commit: str | None = None
) -> str | None:
    """The CI pipeline this runner belongs to, else the commit; None when neither is known."""
    env = os.environ if environ is None else environ
    for name, attempt in GROUP_VARIABLES:
        value = env.get(name, "").strip()
        if value:
            suffix = f".{env.get(attempt, '').strip()}" if attempt and env.get(attempt) else ""
            return f"{name}={value}{suffix}"
    return f"commit={commit}" if commit else None


def items_digest(items: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(items)).encode()).hexdigest()


def plan(items: Sequence[str], shards: int, durations: Mapping[str, float]) -> dict[str, int]:
    """Item -> shard (0-based): longest items first, each onto the least-loaded shard.

    Deterministic: ties are broken by item id and by the lower shard index.
    """
    known = [durations[item] for item in items if item in durations]
    default = statistics.median(known) if known else 1.0
    weight = {item: durations.get(item, default) for item in items}
    loads = [0.0] * shards
    assigned: dict[str, int] = {}
    for item in sorted(set(items), key=lambda item: (-weight[item], item)):
        target = min(range(shards), key=lambda shard: (loads[shard], shard))
        assigned[item] = target
        loads[target] += weight[item]
    return assigned


def load(plan_: Mapping[str, int], durations: Mapping[str, float], shard: int) -> float:
    """Estimated seconds of one shard's items (unknown items at the median)."""
    known = list(durations.values())
    default = statistics.median(known) if known else 0.0
    return sum(durations.get(item, default) for item, s in plan_.items() if s == shard)


class Sharding:
    """``--mlscope-shard K/N``: keep this runner's part of the collected items.

    Runs after ``-k``/``-m`` deselection (trylast), so the runners split what they all select.
    """

    def __init__(self, session: MlscopeSession) -> None:
        self.session = session

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        from pytest_mlscope.items import MlscopeItem
        from pytest_mlscope.store import git_info

        shard = self.session.settings.shard
        assert shard is not None
        nodes = [item.nodeid for item in items]
        cells = {item.nodeid: item.cell.id for item in items if isinstance(item, MlscopeItem)}
        store = self.session.store
        stored = store.item_durations(cells.values())
        durations = {node: stored[cell] for node, cell in cells.items() if cell in stored}
        group = self.session.settings.shard_group
        if group is None:
            git = git_info(self.session.settings.rootdir)
            group = default_group(commit=git.commit if git else None)
        if group is None:
            assigned, made = plan(nodes, shard.count, durations), True
        else:
            assigned, made = store.shard_plan(
                group,
                shard.count,
                items_digest(nodes),
                lambda: plan(nodes, shard.count, durations),
            )
        mine = shard.index - 1
        keep = [item for item in items if assigned.get(item.nodeid, mine) == mine]
        drop = [item for item in items if assigned.get(item.nodeid, mine) != mine]
        if drop:
            config.hook.pytest_deselected(items=drop)
        items[:] = keep
        total = sum(load(assigned, durations, s) for s in range(shard.count))
        how = "made here" if made else "read from the database"
        self.session.shard = (str(shard), group)
        self.session.shard_note = (
            f"shard {shard}: {len(keep)} of {len(nodes)} items, about "
            f"{load(assigned, durations, mine):.0f} s of {total:.0f} s by stored durations "
            f"({len(durations)} items known); plan {how}"
            + (f" for group {group}" if group else " (no group: runners must share history)")
        )

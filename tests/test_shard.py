"""Splitting a suite across the runners of a CI matrix: the plan itself, and real sessions that
split the bundled suite through one database."""

from __future__ import annotations

import re
import shutil

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_mlscope import shard
from pytest_mlscope.protocol import Cell
from pytest_mlscope.store import Store


def test_k_of_n_is_parsed_and_checked() -> None:
    assert shard.parse("2/4") == shard.Shard(2, 4) and str(shard.parse(" 1 / 3 ")) == "1/3"
    for bad in ("0/4", "5/4", "4", "a/b", "1/0", ""):
        with pytest.raises(ValueError, match="K/N"):
            shard.parse(bad)


def test_the_group_is_the_ci_pipeline_else_the_commit() -> None:
    github = {"GITHUB_RUN_ID": "991", "GITHUB_RUN_ATTEMPT": "2"}
    assert shard.default_group(github, commit="abc") == "GITHUB_RUN_ID=991.2"
    assert shard.default_group({"CI_PIPELINE_ID": "55"}) == "CI_PIPELINE_ID=55"
    assert shard.default_group({}, commit="abc") == "commit=abc"
    assert shard.default_group({}) is None


@given(
    durations=st.dictionaries(
        st.text(min_size=1, max_size=8), st.floats(0.01, 100), min_size=1, max_size=40
    ),
    unknown=st.lists(st.text(min_size=1, max_size=8), max_size=10),
    shards=st.integers(1, 6),
)
def test_every_item_lands_on_exactly_one_shard_and_loads_stay_balanced(
    durations: dict[str, float], unknown: list[str], shards: int
) -> None:
    items = [*durations, *unknown]
    plan = shard.plan(items, shards, durations)
    assert set(plan) == set(items) and all(0 <= s < shards for s in plan.values())
    assert shard.plan(list(reversed(items)), shards, durations) == plan  # order does not matter
    loads = [shard.load(plan, durations, s) for s in range(shards)]
    known = [durations.get(i, sorted(durations.values())[len(durations) // 2]) for i in set(items)]
    # Longest-first greedy: no shard exceeds the ideal by more than the longest single item.
    assert max(loads) <= sum(known) / shards + max(known) + 1e-6


def test_long_items_are_spread_before_short_ones_fill_the_gaps() -> None:
    durations = {"alexnet-a": 40.0, "alexnet-b": 38.0, "d1": 2.0, "d2": 2.0, "d3": 1.0}
    plan = shard.plan(list(durations), 2, durations)
    assert plan["alexnet-a"] != plan["alexnet-b"]
    assert sorted(shard.load(plan, durations, s) for s in range(2)) == [41.0, 42.0]


def _collected(result: pytest.RunResult) -> set[str]:
    return {
        line.strip()
        for line in result.outlines
        if re.match(r"\s*manifests/.*::", line) and "::" in line
    }


def _cell_of(node: str) -> Cell:
    """The cell behind a collected node id, e.g. ``manifests/a.yaml::alexnet[torch-cpu-bs1-…]``."""
    model, _, rest = node.split("::")[1].partition("[")
    framework, device, batch, scenario = rest.rstrip("]").split("-", 3)
    length = None
    if scenario.startswith("seq"):  # a text model's sequence length: ...-bs1-seq64-single_stream
        seq, scenario = scenario.split("-", 1)
        length = int(seq[3:])
    return Cell(model=model, framework=framework, device=device, batch_size=int(batch[2:]),
                scenario=scenario, sequence_length=length)  # fmt: skip


def test_two_runners_split_the_bundled_suite_through_one_database(
    pytester: pytest.Pytester,
) -> None:
    from conftest import MANIFESTS

    shutil.copytree(MANIFESTS, pytester.path / "manifests")
    pytester.makeini("[pytest]\nmlscope_manifests = manifests\n")
    db = pytester.path / "shared.db"
    # Durations a previous run stored: alexnet items are long, digits items short.
    everything = pytester.runpytest_subprocess(
        "--mlscope", "-p", "no:cacheprovider", "--collect-only", "-q", f"--mlscope-db={db}"
    )
    items = _collected(everything)
    assert len(items) >= 8
    with Store.from_location(db) as store:
        run_id = store.start_run(host={"hostname": "earlier"})
        for node in items:
            cell = _cell_of(node)
            store.record_result(run_id, cell=cell, outcome="passed",
                                duration_s=30.0 if cell.model == "alexnet" else 2.0)  # fmt: skip

    def runner(k: int) -> pytest.RunResult:
        return pytester.runpytest_subprocess(
            "--mlscope", "-p", "no:cacheprovider", "--collect-only", "-q", f"--mlscope-db={db}",
            f"--mlscope-shard={k}/2", "--mlscope-shard-group=pipeline-41",
        )  # fmt: skip

    first, second = runner(1), runner(2)
    one, two = _collected(first), _collected(second)
    assert one | two == items and not one & two
    alexnet = {i for i in items if "::alexnet[" in i}
    assert one & alexnet and two & alexnet  # the long items are spread
    assert abs(len(one & alexnet) - len(two & alexnet)) <= 1
    with Store.from_location(db) as store:
        # A later runner of the same group follows the stored plan even after new durations.
        later_run = store.start_run(host={"hostname": "later"})
        for node in one:
            store.record_result(later_run, cell=_cell_of(node), outcome="passed", duration_s=500.0)
    assert _collected(runner(2)) == two
    fresh = pytester.runpytest_subprocess(
        "--mlscope", "-p", "no:cacheprovider", "--collect-only", "-q", f"--mlscope-db={db}",
        "--mlscope-shard=2/2", "--mlscope-shard-group=pipeline-42",
    )  # fmt: skip
    assert _collected(fresh) != two  # a new group plans from the new durations
    bad = pytester.runpytest_subprocess("--mlscope", "--mlscope-shard=3/2", f"--mlscope-db={db}")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--mlscope-shard: expected 1 <= K <= N in K/N, got '3/2'*"])


def test_a_sharded_run_is_tagged_and_says_how_it_was_split(suite: pytest.Pytester) -> None:
    result = suite.runpytest_subprocess(
        "--mlscope", "-p", "no:cacheprovider", "-k", "bs1 and single", "--mlscope-shard=1/2",
        "--mlscope-shard-group=g1", "--mlscope-min-count=20", "--mlscope-min-duration=0",
        "--mlscope-html=none",
    )  # fmt: skip
    # Two items of equal (unknown) weight, dealt in id order: onnxruntime here.
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "shard 1/2: 1 of 2 items, about * s of * s by stored durations (0 items known); "
            "plan made here for group g1"
        ]
    )
    with Store.from_location(suite.path / ".mlscope" / "results.db") as store:
        run = store.runs(limit=1)[0]
        assert run.tags == {"shard": "1/2", "shard_group": "g1"}
        (record,) = store.latest_results(run.id).values()
        assert record.cell.framework == "onnxruntime"
        assert record.duration_s is not None and record.duration_s > 0

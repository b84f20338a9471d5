"""Does the shipped gate keep its promise? Real `pytest --mlscope` sessions at default settings.

Every repetition is a new project as a team starts one: a fresh folder outside this repository,
a model file of the team's own (an ONNX conv net exported here with ``onnx.helper``, not a zoo
model), a fresh results database, so the history is as thin as in a new project. Session 1 saves
a baseline; session 2 names it (``--mlscope-baseline=main``) and nothing else but the condition.
Each condition's session 2 runs on its own copy of the state session 1 left (project, artifact
cache, database), so one baseline session serves the design's conditions of a repetition.
The verdict is read from the database session 2 wrote: what a CI job would have been told.

Three designs of change, each against its own baseline:

- ``injected``: session 2 adds ``--mlscope-inject-slowdown=F`` (after each call, CPU work on
  the clock for F of the call's time, never a sleep); F = 0 is the A/A case.
- ``edit``: the model file replaced, in a second checkout with an empty artifact cache, by one
  that computes the same outputs with more work (k more identity 3x3 convolutions, which ONNX
  Runtime runs as real kernels). k = 0 is a re-export: the same graph in a file whose bytes
  differ, so A and B are two loaded instances of one model, as in every real edit. The realized
  slowdown of each variant is measured independently with ONNX Runtime alone: in each of several
  fresh processes, a first session that is not timed (the first one a process makes can differ),
  then the base and the variant in random order, alternating rounds; the median over processes,
  with their range, because two instances of one model differ by their memory layout.
- ``upgrade``: the baseline saved by a session running on another ONNX Runtime release (a venv
  made here with that release and this pytest-mlscope), session 2 on the host's release: the
  plugin rebuilds the baseline's release itself and interleaves across workers of both. Their
  difference is measured independently with ONNX Runtime alone, in the shape no single process
  can fake: many fresh pairs of processes (one per release), each timing alternating rounds,
  averaged over the pairs (each process has a speed of its own). The further conditions make B
  slower than A by 2.5 % and 5 % in all: a slowdown injected on top of the new release makes up
  the difference, so T/2 and T mean what they say across two stacks too (the injection is exact,
  so their totals are known as well as the release's difference is).

The promise at the default T = 5 %: an unchanged model flagged at most 1 % of the time, a
slowdown of T caught at least 95 %, one of T/2 flagged at most 5 % (docs/verdicts.md). Conditions
run in a seeded random order, so drift does not line up with one.

Run from the repository root (about two minutes per repetition of the three designs on 2 cores)::

    .venv/bin/python benchmarks/verdicts.py --repetitions 10
    .venv/bin/python benchmarks/verdicts.py --repetitions 40 --readme   # rewrite both tables
    .venv/bin/python benchmarks/verdicts.py --design edit --repetitions 5
    .venv/bin/python benchmarks/verdicts.py --design injected edit --repetitions 40 --readme
    .venv/bin/python benchmarks/verdicts.py --design upgrade --repetitions 40 --json run.json
    .venv/bin/python benchmarks/verdicts.py --readme-from run.json   # that run's tables
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _tables import write_table

REPO = Path(__file__).resolve().parent.parent
MODEL = "user_cnn"
ITEM = f"{MODEL}[onnxruntime-cpu-bs1-single_stream]"
INJECTED = (0.0, 0.025, 0.05, 0.10)
# The upgrade's conditions: 0 is the new release alone; the others make B slower than the
# baseline's A by this much in all, the release's own difference (measured apart) made up to it
# by a slowdown injected on top of the new release.
UPGRADE_TOTALS = (0.0, 0.025, 0.05)
BASE_CONVS = 40  # identity convolutions in the user's model: ~0.1 ms a call, each ~2.5 %
EDITS = (0, 1, 2, 4)  # identity convolutions an edit adds; 0 is a re-export of the same graph
REEXPORTED = -1  # the key of the re-exported base file in the models
REALIZED_PROCESSES = 6
OTHER_ORT = "1.31.1"  # the release the upgrade's baseline was measured on
# The tables in docs/benchmarks.md (their markers) and the designs each shows: the changes
# within one stack, and the upgrade across two.
TABLES = {"verdicts-table": ("injected", "edit"), "verdicts-upgrade-table": ("upgrade",)}
MANIFEST = f"""\
name: {MODEL}
description: A conv net the team exported to ONNX themselves
framework:
  - name: onnxruntime
model:
  source: {{path: {{onnxruntime: model.onnx}}}}
inputs:
  - name: input
    shape: [1, 8, 8]
outputs:
  - name: logits
dataset: {{name: npz, path: inputs.npz}}
accuracy:
  golden: golden.npz
performance:
  batch_sizes: [1]
  scenarios: [single_stream]
"""


def export_model(path: Path, identity_convs: int, producer: str = "") -> None:
    """Conv(1->8) -> ReLU -> identity convs -> Flatten -> Gemm(->10), fixed weights;
    ``producer`` changes the file's bytes, not its graph."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    identity = np.zeros((8, 8, 3, 3), np.float32)
    identity[np.arange(8), np.arange(8), 1, 1] = 1.0
    weights = {
        "conv_w": rng.standard_normal((8, 1, 3, 3)).astype(np.float32),
        "fc_w": (rng.standard_normal((10, 8 * 64)) * 0.05).astype(np.float32),
        "identity_w": identity,
    }
    nodes = [
        helper.make_node("Conv", ["input", "conv_w"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["h0"]),
    ]
    for i in range(identity_convs):
        nodes.append(
            helper.make_node("Conv", [f"h{i}", "identity_w"], [f"h{i + 1}"], pads=[1, 1, 1, 1])
        )
    nodes += [
        helper.make_node("Flatten", [f"h{identity_convs}"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        MODEL,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.producer_name = producer
    path.write_bytes(model.SerializeToString())


def checkout(root: Path, model: Path) -> Path:
    """A team's repository: settings, manifest, their model file, their data and goldens."""
    import onnxruntime as ort

    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\nmlscope_manifests = ["manifests"]\n'
    )
    manifests = root / "manifests"
    manifests.mkdir()
    (manifests / f"{MODEL}.yaml").write_text(MANIFEST)
    shutil.copyfile(model, manifests / "model.onnx")
    inputs = np.random.default_rng(1).random((16, 1, 8, 8), dtype=np.float32)
    np.savez(manifests / "inputs.npz", inputs=inputs)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": inputs})
    np.savez(manifests / "golden.npz", logits=logits)
    return root


def session(
    project: Path, db: Path, *args: str, python: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`pytest --mlscope` in the project's folder, as the team types it; ``python``: another
    interpreter, with this pytest-mlscope on its path."""
    env = dict(os.environ)
    load = []
    if python is not None:
        env["PYTHONPATH"] = str(REPO)
        if not _finds_plugin(python, env):
            load = ["-p", "pytest_mlscope.plugin"]
    command = [
        python or sys.executable, "-m", "pytest", *load, "--mlscope", "-p", "no:cacheprovider",
        "-q", f"--mlscope-db={db}", "--mlscope-html=none", *args,
    ]  # fmt: skip
    return subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)


def _finds_plugin(python: str, env: dict[str, str]) -> bool:
    """Whether that interpreter sees our pytest11 entry point (a source checkout's metadata on
    its path does): then ``-p`` would register the plugin twice."""
    probe = (
        "import importlib.metadata as m; "
        "print(any(e.name == 'mlscope' for e in m.entry_points(group='pytest11')))"
    )
    done = subprocess.run([python, "-c", probe], env=env, capture_output=True, text=True)
    return done.stdout.strip() == "True"


def judged(db: Path) -> dict[str, Any]:
    from pytest_mlscope.store import Store

    with Store.from_location(db, create=False) as store:
        runs = store.runs()  # newest first: this session, then the one that saved the baseline
        record = store.latest_results(runs[0].id)[ITEM]
        saved = store.latest_results(runs[-1].id)[ITEM]
    verdict = record.verdict or {}
    return {
        # the same item's median in the two sessions (two processes): what a stored baseline
        # alone would have compared
        "process_ratio": float(np.median(record.samples_ns) / np.median(saved.samples_ns)),
        "kind": verdict.get("kind"),
        "verdict_design": verdict.get("design"),
        "ratio": verdict.get("ratio"),
        "pairs": verdict.get("pairs"),
        "item_s": record.duration_s,
        "reason": verdict.get("reason"),
        # worker processes per side that timed the pairs (1 + 1 inside one worker)
        "workers": [len({pair[side] for pair in record.paired_workers}) or 1 for side in (0, 1)],
        **processes(record),
    }


def processes(record: Any) -> dict[str, Any]:
    """Across worker processes, what set the interval's width that session: how far each side's
    processes' own speeds scattered (the sd of a worker's level, less what its pairs' noise
    alone puts there) and the pairs' own noise about their two workers' levels."""
    from pytest_mlscope.stats import _worker_levels, round_medians

    if len({tuple(pair) for pair in record.paired_workers}) < 2:
        return {}
    a = round_medians(record.paired_samples_ns, record.paired_rounds)
    b = round_medians(record.samples_ns, record.rounds)
    found = _worker_levels(np.log(b) - np.log(a), record.paired_workers)
    spread = []
    for levels, members in zip(found.levels, found.members, strict=True):
        sampling = np.mean([np.pi / 2 * found.noise**2 / max(1, m.sum()) for m in members])
        level_var = float(levels.var(ddof=1)) if levels.size > 1 else 0.0  # one worker: none
        spread.append(float(np.sqrt(max(0.0, level_var - sampling))))
    return {"process_sd": spread, "pair_noise": float(found.noise)}


def _check(done: subprocess.CompletedProcess[str], what: str) -> None:
    if done.returncode not in (0, 1):  # 1: the gate failed the item, which is an answer
        raise RuntimeError(
            f"{what} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )


def repetition(
    design: str,
    conditions: list[float],
    models: dict[int, Path],
    other: str | None,
    seed: int,
    realized: dict[tuple[str, float], Any],
) -> list[dict[str, Any]]:
    """One repetition of a design: session 1 saves the baseline in a fresh project and database,
    then each condition's session 2 runs on its own copy of that state (project, cache and
    database as session 1 left them), in random order. One baseline per repetition serves every
    condition: each condition still sees a fresh database with one stored run."""
    root = Path(tempfile.mkdtemp(prefix="mlscope-verdicts-"))
    rows = []
    try:
        saved_state = root / "saved"
        one = checkout(saved_state / "one", models[0])
        db = saved_state / "ci" / "results.db"
        python = other if design == "upgrade" else None
        _check(session(one, db, "--mlscope-save-baseline=main", python=python), "saving")
        order = list(conditions)
        random.Random(seed).shuffle(order)
        for index, condition in enumerate(order):
            state = root / f"condition-{index}"
            shutil.copytree(saved_state, state, symlinks=True)
            db = state / "ci" / "results.db"
            if design == "injected":
                extra = [f"--mlscope-inject-slowdown={condition}"] if condition else []
                _check(session(state / "one", db, "--mlscope-baseline=main", *extra), "session")
            else:  # another checkout, its own empty cache: a fresh CI runner
                edited = models[int(condition) or REEXPORTED] if design == "edit" else models[0]
                extra = []
                if design == "upgrade" and condition:  # made up to the total by an injection
                    injected = upgrade_injection(condition, realized[("upgrade", 0.0)][0])
                    extra = [f"--mlscope-inject-slowdown={injected:.4f}"]
                two = checkout(state / "two", edited)
                _check(session(two, db, "--mlscope-baseline=main", *extra), "the session")
            rows.append({"design": design, "condition": condition, **judged(db)})
            shutil.rmtree(state, ignore_errors=True)
        return rows
    finally:
        shutil.rmtree(root, ignore_errors=True)


REALIZED = """\
import random, sys, time, numpy as np, onnxruntime as ort
base, variant, seed, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
x = {"input": np.random.default_rng(1).random((1, 1, 8, 8), dtype=np.float32)}
first = ort.InferenceSession(base, providers=["CPUExecutionProvider"])  # not timed
paths = {"base": base, "variant": variant}
order = ["base", "variant"]
random.Random(seed).shuffle(order)
sessions = {k: ort.InferenceSession(paths[k], providers=["CPUExecutionProvider"]) for k in order}
def round_median(k):
    run, times = sessions[k].run, []
    for _ in range(300):
        before = time.perf_counter_ns(); run(None, x); times.append(time.perf_counter_ns() - before)
    return float(np.median(times))
for k in order: round_median(k)
ratios = []
for i in range(rounds):
    got = {k: round_median(k) for k in (order if i % 2 else order[::-1])}
    ratios.append(got["variant"] / got["base"])
print(float(np.median(ratios)) - 1)
"""


def realized_edits(
    base: Path, variants: dict[int, Path], rounds: int = 40
) -> dict[int, tuple[float, float, float]]:
    """Each variant against the base, measured apart from the plugin: (median, lowest, highest)
    over REALIZED_PROCESSES fresh processes, each timing the two files' sessions in alternating
    rounds of 300 calls (see REALIZED)."""
    found = {}
    for k, path in variants.items():
        per_process = [
            float(
                subprocess.run(
                    [sys.executable, "-c", REALIZED, str(base), str(path), str(seed), str(rounds)],
                    capture_output=True, text=True, check=True,
                ).stdout
            )
            for seed in range(REALIZED_PROCESSES)
        ]  # fmt: skip
        found[k] = (statistics.median(per_process), min(per_process), max(per_process))
    return found


ROUND_TIMER = """\
import sys, time, numpy as np
from pytest_mlscope.predictors.onnxruntime import OnnxRuntimePredictor
from pytest_mlscope.protocol import ArtifactRef
from pytest_mlscope.slowdown import matched, slowed
model, fraction = ArtifactRef(path=sys.argv[1], format="onnx", sha256="0" * 64), float(sys.argv[2])
renewed = sys.argv[3:4] != ["keep"]  # "keep": the first instance for the process's life
raw = np.random.default_rng(1).random((1, 1, 8, 8), dtype=np.float32)
p = None
def fresh():  # as the gate's worker renews its held instance: the old one closed first,
    global p  # the new one loaded, wrapped and warmed up with 3 calls
    if p is not None: p.close()
    p = OnnxRuntimePredictor("cpu"); p.load(model); x = p.prepare_input(raw)
    call = slowed(p.predict, x, fraction) if fraction else matched(p.predict)
    for _ in range(3): call(x)
    return call, x
call, x = fresh(); started = time.perf_counter()
while time.perf_counter() - started < 1.0: call(x)
print("ready", flush=True)
for line in sys.stdin:  # one round of about 20 ms per line, on a fresh instance; its median
    if renewed: call, x = fresh()
    t, started = [], time.perf_counter_ns()
    while not t or time.perf_counter_ns() - started < 20_000_000:
        b = time.perf_counter_ns(); call(x); t.append(time.perf_counter_ns() - b)
    print(float(np.median(t)), flush=True)
"""
# Fresh pairs of processes (one per release) the upgrade is measured with apart from the plugin,
# and the pairs of rounds each times: every process has a speed of its own, so the release's
# difference is the mean over many pairs of processes. Their log ratios scatter by about 2 %
# (sd) from pair to pair: 24 pairs left the mean ±0.4 %, too coarse to tell whether "+2.5 % in
# all" was +2.5 % or +3 %; 120 pairs (about 10 minutes) resolve it to about ±0.2 %.
UPGRADE_PROCESSES = 120
UPGRADE_PAIRS = 40


def realized_upgrade(
    model: Path, other: str, seed: int = 0, processes: int = UPGRADE_PROCESSES
) -> tuple[float, float, float, float]:
    """The host's release against the other one, apart from the gate: ``processes`` fresh
    pairs of processes, each timing the plugin's
    own ONNX Runtime predictor (the session options a user's items get) in alternating 20 ms
    rounds, in random order within each pair, each round on a fresh instance as the gate's
    workers take them across stacks (both processes warmed up for a second before any round);
    per pair of processes the median of the log ratios. Plain InferenceSessions, kept for the
    process's life, read this release's difference as +0.1 % on one day and +2.0 % on the next
    (their instances' layouts scatter by several per cent); the plugin's predictor, renewed,
    +1.2 %, as the gate read it. (mean, lowest, highest) of those, as host / other - 1, and the
    mean's standard error (in log ratio)."""
    rng = random.Random(seed)
    found = []
    for _ in range(processes):
        workers = {
            which: subprocess.Popen(
                [python, "-c", ROUND_TIMER, str(model), str(fraction)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                    filter(None, [str(REPO), os.environ.get("PYTHONPATH")])
                )),
            )
            for which, python, fraction in (("host", sys.executable, 0.0), ("other", other, 0.0))
        }  # fmt: skip
        logs = []
        try:
            for worker in workers.values():  # both warm before either is timed
                assert worker.stdout is not None
                worker.stdout.readline()
            for _ in range(UPGRADE_PAIRS):
                got = {}
                for which in rng.sample(sorted(workers), 2):
                    assert workers[which].stdin and workers[which].stdout
                    workers[which].stdin.write("round\n")
                    workers[which].stdin.flush()
                    got[which] = float(workers[which].stdout.readline())
                logs.append(np.log(got["host"] / got["other"]))
        finally:
            for worker in workers.values():
                if worker.stdin:
                    worker.stdin.close()
                worker.wait()
        found.append(float(np.median(logs)))
    ratios = np.expm1(np.array(found))
    error = float(np.std(found, ddof=1) / np.sqrt(len(found)))
    return float(np.expm1(np.mean(found))), float(ratios.min()), float(ratios.max()), error


def upgrade_injection(target: float, release: float) -> float | None:
    """The slowdown to inject on top of the new release so that the session's B is ``target``
    slower than the baseline's A in all (the release's own difference included); None when the
    release alone is slower than that."""
    if target == 0:
        return 0.0
    injected = (1 + target) / (1 + release) - 1
    return injected if injected > 0 else None


def other_release(root: Path) -> str:
    """A venv with the other ONNX Runtime release and what the plugin imports, for the session
    that saves the upgrade's baseline; made once under the stacks folder."""
    from importlib import metadata

    from pytest_mlscope import stacks

    target = stacks.root() / f"bench-onnxruntime-{OTHER_ORT}"
    python = target / "bin" / "python"
    if (target / ".complete").is_file():
        return str(python)
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
    pins = [
        f"{name}=={metadata.version(name)}"
        for name in ("numpy", "pytest", "SQLAlchemy", "Jinja2", "onnx", *stacks.WORKER_NEEDS[1:])
        if _installed(name)
    ]
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", f"onnxruntime=={OTHER_ORT}", *pins],
        check=True,
    )
    (target / ".complete").write_text("")
    return str(python)


def _installed(name: str) -> bool:
    from importlib import metadata

    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def table(rows: list[dict[str, Any]], realized: dict[tuple[str, float], Any]) -> str:
    lines = [
        "| change | realized slowdown | regression | ok | inconclusive | other "
        "| interleaved | median item time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    keys = sorted({(r["design"], r["condition"]) for r in rows}, key=lambda k: (k[0], k[1]))
    for design, condition in keys:
        chosen = [r for r in rows if (r["design"], r["condition"]) == (design, condition)]
        kinds = [r["kind"] for r in chosen]
        n = len(chosen)
        other = n - sum(kinds.count(k) for k in ("regression", "ok", "inconclusive"))
        if design == "injected":
            name = "unchanged (A/A)" if condition == 0 else f"injected {condition:+.1%}"
            ratios = [r["ratio"] for r in chosen if r["ratio"]]
            seen = (
                f"{statistics.median(ratios) - 1:+.1%} (as measured by the gate)"
                if condition
                else "0"
            )
        elif design == "edit":
            name = (
                "model re-exported (same graph, other bytes)"
                if condition == 0
                else f"model edit, +{int(condition)} conv"
            )
            middle, low, high = realized[(design, condition)]
            seen = f"{middle:+.1%} ({low:+.1%} to {high:+.1%})"
        else:
            release, low, high, error = realized[(design, 0.0)]
            name = f"onnxruntime {OTHER_ORT} → this release"
            seen = f"{release:+.1%} ± {error:.1%} ({low:+.1%} to {high:+.1%} per pair of processes)"
            if condition:
                injected = upgrade_injection(condition, release) or 0.0
                name += f", and slowed to {condition:+.1%} in all"
                seen = (
                    f"{condition:+.1%} ± {error:.1%} (+{injected:.1%} injected on the release's "
                    f"{release:+.1%})"
                )
            ratios = [r["ratio"] for r in chosen if r["ratio"]]
            if ratios:  # what the gate read, beside what was set up
                seen += f"; the gate read {statistics.median(ratios) - 1:+.1%}"
        times = [r["item_s"] for r in chosen if r["item_s"]]
        interleaved = f"{sum(r['verdict_design'] == 'interleaved' for r in chosen)}/{n}"
        spread = sorted({tuple(r.get("workers") or (1, 1)) for r in chosen})
        if design == "upgrade":  # in how many worker processes per side
            interleaved += " (" + ", ".join(f"{a} + {b}" for a, b in spread) + " workers)"
        lines.append(
            f"| {name} | {seen} | {kinds.count('regression')}/{n} | {kinds.count('ok')}/{n} "
            f"| {kinds.count('inconclusive')}/{n} | {other}/{n} "
            f"| {interleaved} "
            f"| {statistics.median(times):.1f} s |"
        )
    measured = [r for r in rows if r.get("process_sd")]
    if measured:
        a, b = (statistics.median(r["process_sd"][k] for r in measured) for k in (0, 1))
        noise = statistics.median(r["pair_noise"] for r in measured)
        lines += [
            "",
            f"Across the worker processes of {len(measured)} sessions (medians): a process's own "
            f"speed scattered by {a:.1%} (sd) on A's side and {b:.1%} on B's, beyond what its "
            f"pairs' noise explains; a pair's log ratio scattered by {noise:.1%} about what its "
            "two processes' levels predict.",
        ]
    unchanged = [
        r["process_ratio"] for r in rows if r["design"] == "injected" and r["condition"] == 0
    ]
    if len(unchanged) >= 2:
        moved = sorted(abs(ratio - 1) for ratio in unchanged)
        lines += [
            "",
            f"Between the two sessions of each unchanged repetition (the same file in the same "
            f"checkout, a new process) the item's median moved by {statistics.median(moved):.1%} "
            f"(median of {len(moved)}; {min(unchanged) - 1:+.1%} to {max(unchanged) - 1:+.1%}): "
            "what a comparison with stored numbers alone would have had to tell apart from a "
            "change.",
        ]
    return "\n".join(lines)


def machine() -> str:
    from pytest_mlscope.hardware import current_host

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout

    dirty = " (with uncommitted changes)" if git("status", "--porcelain", "-uno").strip() else ""
    import onnxruntime

    return (
        f"commit {git('rev-parse', '--short', 'HEAD').strip()}{dirty}, "
        f"{current_host().cpu_model}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"onnxruntime {onnxruntime.__version__}, load average {os.getloadavg()[0]:.1f} at the end"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--design",
        nargs="+",
        choices=("injected", "edit", "upgrade", "all"),
        default=["all"],
        help="the designs to run (several may be named; all: the three)",
    )
    parser.add_argument("--repetitions", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write every repetition here")
    parser.add_argument("--readme", action="store_true", help="rewrite docs/benchmarks.md's tables")
    parser.add_argument(
        "--readme-from",
        type=Path,
        metavar="JSON",
        help="rewrite docs/benchmarks.md's tables from an earlier run's --json file, measuring "
        "nothing",
    )
    parser.add_argument(
        "--conditions",
        type=lambda text: [float(x) for x in text.split(",")],
        help="only these conditions (comma-separated; e.g. 0.025,0.05 of the upgrade design)",
    )
    parser.add_argument(
        "--release-processes",
        type=int,
        default=UPGRADE_PROCESSES,
        metavar="N",
        help="pairs of processes that measure the upgrade's release apart (fewer for a try)",
    )
    args = parser.parse_args(argv)
    designs = [d for d in ("injected", "edit", "upgrade") if {d, "all"} & set(args.design)]
    tables = [name for name, shown in TABLES.items() if set(shown) <= set(designs)]
    if args.readme and not tables:
        parser.error(
            "--readme writes whole tables: "
            + "; ".join(" and ".join(shown) for shown in TABLES.values())
        )
    if args.readme_from:  # the text that run printed, as it printed it, where its tables go
        saved = json.loads(args.readme_from.read_text())
        if "tables" not in saved:
            parser.error(f"{args.readme_from} holds no table docs/benchmarks.md keeps")
        for name, text in saved["tables"].items():
            write_table(name, text)
        return 0
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="mlscope-models-"))
    try:
        models = {}
        for k in EDITS:
            models[k] = work / f"model-{k}.onnx"
            export_model(models[k], BASE_CONVS + k)
        models[REEXPORTED] = work / "model-reexported.onnx"
        export_model(models[REEXPORTED], BASE_CONVS, producer="another export")
        realized: dict[tuple[str, float], Any] = {}
        plan: dict[str, list[float]] = {}
        other = None
        if "injected" in designs:
            plan["injected"] = list(INJECTED)
        if "edit" in designs:
            plan["edit"] = [float(k) for k in EDITS]
            variants = {k: models[k or REEXPORTED] for k in EDITS}
            realized.update(
                {("edit", float(k)): v for k, v in realized_edits(models[0], variants).items()}
            )
        if "upgrade" in designs:
            other = other_release(work)
            # The further conditions are made up from this alone: the injection is exact in
            # every process (it waits on the clock), so their totals are the release's
            # difference times it, known as well as the release's difference is.
            release = realized_upgrade(models[0], other, args.seed, args.release_processes)
            realized[("upgrade", 0.0)] = release
            plan["upgrade"] = [
                t for t in UPGRADE_TOTALS if upgrade_injection(t, release[0]) is not None
            ]
            if args.conditions is not None:
                plan["upgrade"] = [c for c in plan["upgrade"] if c in args.conditions]
        if args.conditions is not None:
            plan = {d: [c for c in cs if c in args.conditions] for d, cs in plan.items()}
        print(f"realized (measured alone): {realized}", file=sys.stderr, flush=True)
        order = [design for design in plan for _ in range(args.repetitions)]
        shuffler = random.Random(args.seed)
        shuffler.shuffle(order)
        rows = []
        for index, design in enumerate(order, start=1):
            got = repetition(
                design, plan[design], models, other, shuffler.randrange(2**31), realized
            )
            rows += got
            for last in got:
                print(
                    f"[{index}/{len(order)}] {design} {last['condition']:g}: {last['kind']} "
                    f"{last['verdict_design']} ratio {last['ratio'] or 0:.3f} pairs "
                    f"{last['pairs']} item {last['item_s'] or 0:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    shown = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--readme"]
    shown = [a for i, a in enumerate(shown) if a != "--json" and shown[i - 1 : i] != ["--json"]]
    minutes = (time.perf_counter() - started) / 60
    texts = {
        name: (
            f"From `benchmarks/verdicts.py {' '.join(shown)}` (a user's own ONNX conv net, "
            f"{ITEM}, real `pytest --mlscope` sessions at default settings, T = 5 %, a fresh "
            f"project and database per repetition, {minutes:.0f} minutes; {machine()}):\n\n"
            + table([r for r in rows if r["design"] in TABLES[name]], realized)
        )
        for name in tables
    }
    print("\n\n".join(texts.values()) or table(rows, realized))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "designs": designs,
                    "rows": rows,
                    "realized": {str(k): v for k, v in realized.items()},
                    "tables": texts,
                },
                indent=2,
            )
        )
    if args.readme:
        for name, text in texts.items():
            write_table(name, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""pytest hooks: options, markers, collection of manifests, the ``mlscope_eval`` fixture, summary.

Every pytest run in an environment with the plugin installed imports this module, so it imports
nothing heavy: no framework, no SQLAlchemy, not even pydantic until ``--mlscope`` is given.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_mlscope.compare import Verdict
    from pytest_mlscope.manifest import Manifest
    from pytest_mlscope.protocol import Cell, EvaluationResult
    from pytest_mlscope.session import MlscopeSession
    from pytest_mlscope.shard import Shard

SESSION_KEY = pytest.StashKey["MlscopeSession"]()

KNOWN_FRAMEWORKS = ("torch", "onnxruntime", "tensorflow", "tensorrt", "caffe", "mxnet")
DEVICES = ("cpu", "gpu")
DEFAULT_HTML = ".mlscope/report.html"
SCENARIOS = ("single_stream", "offline")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mlscope", "ML model accuracy and performance (pytest-mlscope)")
    group.addoption("--mlscope", action="store_true", help="collect and evaluate model manifests")
    group.addoption(
        "--mlscope-manifests",
        action="append",
        metavar="PATH",
        help="manifest file or directory (repeatable; default: ini mlscope_manifests)",
    )
    group.addoption(
        "--mlscope-runtime",
        choices=("subprocess", "inprocess", "docker"),
        help="where workers run: subprocess (one per stack), inprocess (debugging), docker (a "
        "container per stack image, see `mlscope containers`); default: ini mlscope_runtime, "
        "else subprocess",
    )
    group.addoption(
        "--mlscope-db", metavar="URL", help="results database: a path or SQLAlchemy URL"
    )
    group.addoption("--mlscope-cache", metavar="DIR", help="artifact cache directory")
    group.addoption(
        "--mlscope-timeout",
        type=float,
        metavar="S",
        help="per-item worker timeout in seconds (default: ini mlscope_timeout, 600; 0: none)",
    )
    group.addoption("--mlscope-warmup", type=int, metavar="N", help="override warm-up calls")
    group.addoption("--mlscope-min-count", type=int, metavar="N", help="override min samples")
    group.addoption(
        "--mlscope-min-duration", type=float, metavar="S", help="override min timing seconds"
    )
    group.addoption(
        "--mlscope-max-duration", type=float, metavar="S", help="override max timing seconds"
    )
    group.addoption(
        "--mlscope-rounds", type=int, metavar="N", help="override measurement rounds per item"
    )
    group.addoption(
        "--mlscope-precision",
        type=float,
        metavar="FRACTION",
        help="keep sampling (up to max duration) until the median's relative 95%% half-width "
        "is below this, e.g. 0.01",
    )
    group.addoption(
        "--mlscope-baseline",
        metavar="NAME",
        help="compare every item with this stored baseline (default: ini mlscope_baseline)",
    )
    group.addoption(
        "--mlscope-save-baseline",
        metavar="NAME",
        help="point baseline NAME at this session's run when it completes",
    )
    group.addoption(
        "--mlscope-force-baseline",
        action="store_true",
        help="let --mlscope-save-baseline move an existing baseline",
    )
    group.addoption(
        "--mlscope-threshold",
        type=float,
        metavar="FRACTION",
        help="regression threshold for every item, e.g. 0.05 (default: manifest, ini, 0.05)",
    )
    group.addoption(
        "--mlscope-no-fail",
        action="store_true",
        help="report regressions as warnings instead of failing their items",
    )
    group.addoption(
        "--mlscope-inject-slowdown",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="add calibrated CPU work to every timed call (e.g. 0.05): checks that the gate fires",
    )
    group.addoption(
        "--mlscope-count-instructions",
        action="store_true",
        default=None,
        help="after timing, count each item's instructions per call under Valgrind's callgrind "
        "(x86-64, host and venv stacks); a baseline that has counts is then compared on them",
    )
    group.addoption(
        "--mlscope-trace",
        choices=("none", "model", "framework", "library", "system", "full"),
        metavar="LEVEL",
        help="after timing, profile each item at this level (none, model, framework, library, "
        "system, full) into a layer table and a Chrome/Perfetto trace file",
    )
    group.addoption(
        "--mlscope-interleave",
        action="store_true",
        default=None,
        help="time each item in alternating rounds with an A side and judge on the pairs: the "
        "default whenever a baseline is named (A: the baseline's model); without one, an A/A "
        "run of the item against itself",
    )
    group.addoption(
        "--mlscope-stored",
        action="store_false",
        dest="mlscope_interleave",
        help="judge against the baseline's stored numbers only (the stored design), never timing "
        "its model beside the item",
    )
    group.addoption(
        "--mlscope-strict",
        action="store_true",
        default=None,
        help="fail items whose verdict is inconclusive too, not only regressions",
    )
    group.addoption(
        "--mlscope-html",
        metavar="PATH",
        help="write the HTML regression report here (default: ini mlscope_html, "
        ".mlscope/report.html; 'none' writes none)",
    )
    group.addoption(
        "--mlscope-md",
        metavar="PATH",
        help="write a markdown summary here (also appended to $GITHUB_STEP_SUMMARY when set)",
    )
    group.addoption(
        "--mlscope-shard",
        metavar="K/N",
        help="run only the K-th of N parts of the suite (a CI matrix of N runners sharing one "
        "database), balanced by stored item durations",
    )
    group.addoption(
        "--mlscope-shard-group",
        metavar="ID",
        help="the runners that split one suite (default: the CI pipeline id, else the commit): "
        "the first to collect stores the plan, the others follow it",
    )
    parser.addini("mlscope_html", "HTML report path ('none': no report)", default=DEFAULT_HTML)
    parser.addini("mlscope_baseline", "baseline to compare with by default", default="")
    parser.addini("mlscope_trace", "trace level for manifests that set none", default="none")
    parser.addini(
        "mlscope_interleave",
        "auto (interleave when a baseline is named), true (always, A/A without one) or false "
        "(the stored design)",
        default="auto",
    )
    parser.addini(
        "mlscope_strict", "fail items whose verdict is inconclusive", type="bool", default=False
    )
    parser.addini(
        "mlscope_count_instructions",
        "count instructions per call under callgrind after timing",
        type="bool",
        default=False,
    )
    parser.addini(
        "mlscope_threshold", "regression threshold for manifests that set none", default="0.05"
    )
    parser.addini("mlscope_manifests", "manifest files or directories", type="paths", default=[])
    parser.addini(
        "mlscope_runtime", "default runtime (subprocess, inprocess, docker)", default="subprocess"
    )
    parser.addini(
        "mlscope_docker_memory",
        "memory limit of docker runtime containers, e.g. 8g (default: mlscope_worker_memory)",
        default="",
    )
    parser.addini(
        "mlscope_worker_memory",
        "memory limit of each worker, e.g. 8g; past it the worker is killed and its item fails "
        "(default: half the host's memory)",
        default="",
    )
    parser.addini("mlscope_db", "results database (path or SQLAlchemy URL)", default="")
    parser.addini("mlscope_cache", "artifact cache directory", default="")
    parser.addini("mlscope_timeout", "per-item worker timeout in seconds (0: none)", default="600")
    parser.addini(
        "mlscope_predictors",
        "extra predictors, one 'name = module:Class' per line",
        type="linelist",
        default=[],
    )


def _predictors(config: pytest.Config) -> dict[str, str]:
    found = {}
    for line in config.getini("mlscope_predictors"):
        name, sep, target = line.partition("=")
        if not sep or ":" not in target:
            raise pytest.UsageError(
                f"mlscope_predictors: expected 'name = module:Class', got {line!r}"
            )
        found[name.strip()] = target.strip()
    return found


def _trace_ini(config: pytest.Config) -> str:
    from pytest_mlscope.tracing import TRACE_LEVELS

    value = str(config.getini("mlscope_trace") or "none").strip()
    if value not in TRACE_LEVELS:
        raise pytest.UsageError(
            f"mlscope_trace: expected one of {', '.join(TRACE_LEVELS)}, got {value!r}"
        )
    return value


def _memory_ini(config: pytest.Config, name: str) -> str | None:
    from pytest_mlscope.errors import MlscopeError
    from pytest_mlscope.runtimes.base import memory_bytes

    value = str(config.getini(name) or "").strip()
    if value:
        try:
            memory_bytes(value)
        except MlscopeError as exc:
            raise pytest.UsageError(f"{name}: {exc}") from None
    return value or None


def _report_path(option: str | None, ini: str, rootdir: Path) -> Path | None:
    """A report file: the option's path from the working directory, the ini's from the root."""
    if option is not None:
        return None if option.strip().lower() in ("", "none") else Path(option).resolve()
    if ini.strip().lower() in ("", "none"):
        return None
    return (rootdir / ini).resolve()


def _interleave(config: pytest.Config) -> bool | None:
    """The command line's choice, else the ini's: None is auto (interleave with a baseline)."""
    chosen = config.getoption("mlscope_interleave")
    if chosen is not None:
        return bool(chosen)
    value = str(config.getini("mlscope_interleave") or "auto").strip().lower()
    choices = {"auto": None, "true": True, "1": True, "yes": True, "false": False, "0": False}
    if value not in {*choices, "no"}:
        raise pytest.UsageError(f"mlscope_interleave: expected auto, true or false, got {value!r}")
    return choices.get(value, False)


def _shard(text: str | None) -> Shard | None:
    if text is None:
        return None
    from pytest_mlscope.shard import parse

    try:
        return parse(text)
    except ValueError as exc:
        raise pytest.UsageError(f"--mlscope-shard: {exc}") from None


def _register_marker(config: pytest.Config, name: str, text: str) -> None:
    config.addinivalue_line("markers", f"{name}: {text}")


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, args: list[str]) -> None:
    # The first hook that sees the rootdir: refuse a path option's value that moved it (see
    # rootdir.py) before any conftest.py is loaded or .pytest_cache is written in the wrong place.
    if any(arg.startswith("--mlscope-") for arg in args):
        from pytest_mlscope import rootdir

        rootdir.check(early_config, args)


def pytest_configure(config: pytest.Config) -> None:
    _register_marker(config, "mlscope", "an item collected from a pytest-mlscope manifest")
    for name in (*KNOWN_FRAMEWORKS, *_predictors(config)):
        _register_marker(config, name, f"pytest-mlscope items on the {name} framework")
    for name in DEVICES:
        _register_marker(config, name, f"pytest-mlscope items on {name}")
    for name in SCENARIOS:
        _register_marker(config, name, f"pytest-mlscope items in the {name} scenario")
    _register_marker(config, "docker", "pytest-mlscope items whose worker runs in a container")
    _register_marker(
        config,
        "hardware(gpu=False, min_compute_capability=None, arch=None, min_memory_gb=None, "
        "isa=None, min_gpu_memory_gb=None)",
        "skip the test, with the reason, on a host without this hardware (pytest-mlscope)",
    )
    if not config.getoption("mlscope"):
        return
    from pytest_mlscope import xdist
    from pytest_mlscope.session import MlscopeSession, Settings

    rootdir = Path(config.rootpath)
    cli_paths = config.getoption("mlscope_manifests")
    if cli_paths:
        manifest_paths = [Path(p).resolve() for p in cli_paths]
    else:
        manifest_paths = [Path(p).resolve() for p in config.getini("mlscope_manifests")]
    measure = {
        key: value
        for key, value in (
            ("warmup", config.getoption("mlscope_warmup")),
            ("min_count", config.getoption("mlscope_min_count")),
            ("min_duration_s", config.getoption("mlscope_min_duration")),
            ("max_duration_s", config.getoption("mlscope_max_duration")),
            ("rounds", config.getoption("mlscope_rounds")),
            ("precision", config.getoption("mlscope_precision")),
        )
        if value is not None
    }
    timeout = config.getoption("mlscope_timeout")
    if timeout is None:
        timeout = float(config.getini("mlscope_timeout") or 0)
    cache = config.getoption("mlscope_cache") or config.getini("mlscope_cache") or None
    settings = Settings(
        rootdir=rootdir,
        manifest_paths=manifest_paths,
        runtime=config.getoption("mlscope_runtime") or config.getini("mlscope_runtime"),
        db=config.getoption("mlscope_db") or config.getini("mlscope_db") or None,
        cache_dir=Path(cache).resolve() if cache else None,
        timeout=timeout if timeout and timeout > 0 else None,
        predictors=_predictors(config),
        measure_overrides=measure,
        pytest_args=list(config.invocation_params.args),
        baseline=config.getoption("mlscope_baseline") or config.getini("mlscope_baseline") or None,
        baseline_required=bool(config.getoption("mlscope_baseline")),
        save_baseline=config.getoption("mlscope_save_baseline"),
        force_baseline=config.getoption("mlscope_force_baseline"),
        threshold=config.getoption("mlscope_threshold"),
        default_threshold=float(config.getini("mlscope_threshold") or 0.05),
        fail_on_regression=not config.getoption("mlscope_no_fail"),
        inject_slowdown=config.getoption("mlscope_inject_slowdown"),
        trace_level=config.getoption("mlscope_trace"),
        worker_memory=_memory_ini(config, "mlscope_worker_memory"),
        docker_memory=_memory_ini(config, "mlscope_docker_memory"),
        default_trace_level=_trace_ini(config),
        html=_report_path(config.getoption("mlscope_html"), config.getini("mlscope_html"), rootdir),
        markdown=_report_path(config.getoption("mlscope_md"), "none", rootdir),
        shard=_shard(config.getoption("mlscope_shard")),
        shard_group=config.getoption("mlscope_shard_group") or None,
        count_instructions=bool(
            config.getoption("mlscope_count_instructions")
            if config.getoption("mlscope_count_instructions") is not None
            else config.getini("mlscope_count_instructions")
        ),
        interleave=_interleave(config),
        strict=bool(
            config.getoption("mlscope_strict")
            if config.getoption("mlscope_strict") is not None
            else config.getini("mlscope_strict")
        ),
        **xdist.worker_settings(config),
    )
    session = MlscopeSession(settings)
    if xdist.is_controller(config):
        config.pluginmanager.register(xdist.Controller(session), "mlscope-xdist")
    if settings.shard is not None:
        config.pluginmanager.register(_Sharding(session), "mlscope-shard")
    from pytest_mlscope.errors import MlscopeError

    try:
        if settings.baseline_required or settings.save_baseline:
            session.check_baselines()
        session.check_counting()
    except MlscopeError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[SESSION_KEY] = session
    # With no paths on the command line, the manifests join whatever pytest collects anyway.
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        config.args.extend(str(p) for p in manifest_paths if p.exists())


def _session(config: pytest.Config) -> MlscopeSession | None:
    return config.stash.get(SESSION_KEY, None)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    session = _session(parent.config)
    if session is None or file_path.suffix not in (".yaml", ".yml"):
        return None
    resolved = file_path.resolve()
    for root in session.settings.manifest_paths:
        if resolved == root or resolved.is_relative_to(root):
            return ManifestFile.from_parent(parent, path=file_path)
    return None


class ManifestFile(pytest.File):
    """A manifest: one test item per cell, or one collection error naming file:line:key."""

    def collect(self) -> Iterator[MlscopeItem]:
        from pytest_mlscope.cells import expand
        from pytest_mlscope.errors import ManifestError
        from pytest_mlscope.manifest import load_manifest

        session = _session(self.config)
        assert session is not None
        try:
            manifest = load_manifest(self.path)
            session.register(manifest)
        except ManifestError as exc:
            raise self.CollectError(str(exc)) from None
        reasons: dict[tuple[str, str], tuple[str | None, bool]] = {}
        for cell in expand(manifest):
            _register_marker(self.config, cell.framework, f"items on {cell.framework}")
            item = MlscopeItem.from_parent(self, name=cell.id, manifest=manifest, cell=cell)
            for marker in ("mlscope", cell.framework, cell.device, cell.scenario):
                item.add_marker(marker)
            if session.in_container(cell):
                item.add_marker("docker")
            key = (cell.framework_id, cell.device)
            if key not in reasons:
                reasons[key] = session.skip_reason(manifest, cell)
            reason, service_missing = reasons[key]
            if reason and service_missing and _under_ci():
                item.blocked = reason
            elif reason:
                item.add_marker(pytest.mark.skip(reason=reason))
            yield item


def _under_ci() -> bool:
    """CI=true: an item that needs a missing service (Docker daemon, image) fails, so a broken
    CI machine cannot pass by skipping everything."""
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


class MlscopeItem(pytest.Item):
    def __init__(self, *, manifest: Manifest, cell: Cell, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.manifest = manifest
        self.cell = cell
        self.blocked: str | None = None  # a missing service, under CI=true

    def runtest(self) -> None:
        from pytest_mlscope.errors import AccuracyFailed, RegressionDetected, RegressionWarning

        session = _session(self.config)
        assert session is not None
        if self.blocked:
            from pytest_mlscope.errors import StackUnavailable

            raise StackUnavailable(f"{self.blocked} (CI=true: fails instead of skipping)")
        with session.timing_turn():
            result, verdict = session.evaluate_and_compare(self.manifest, self.cell)
        self.stash[RESULT_KEY] = result
        if verdict is not None:
            self.stash[VERDICT_KEY] = verdict
        for key, value in _properties(result, verdict).items():
            self.user_properties.append((key, value))
        if not result.accuracy.passed:
            lines = [f"{c.name}: {c.detail}" for c in result.accuracy.failures]
            raise AccuracyFailed("accuracy missed its target:\n  " + "\n  ".join(lines))
        strict = session.settings.strict and verdict is not None and verdict.kind == "inconclusive"
        if verdict is not None and (verdict.fails or strict):
            message = _regression_message(verdict)
            if session.settings.fail_on_regression:
                raise RegressionDetected(message)
            import warnings

            warnings.warn(RegressionWarning(f"{self.cell.id}: {message}"), stacklevel=1)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        from pytest_mlscope.errors import MlscopeError

        if isinstance(excinfo.value, MlscopeError):
            return f"{self.cell.id}: {type(excinfo.value).__name__}: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        # The line of this cell's framework entry: where a skip or failure is best fixed.
        index = self.manifest.framework_index(self.cell.framework, self.cell.stack)
        where = self.manifest.where("framework", index)
        line = int(where.rsplit(":", 1)[1]) - 1
        return self.path, line, f"mlscope {self.cell.id}"


RESULT_KEY = pytest.StashKey["EvaluationResult"]()
VERDICT_KEY = pytest.StashKey["Verdict"]()


def _regression_message(verdict: Verdict) -> str:
    lines = [verdict.describe()]
    if verdict.baseline_instructions is not None and verdict.current_instructions is not None:
        lines.append(
            f"instructions per call {verdict.baseline_instructions:,.0f} (baseline run "
            f"{(verdict.baseline_run or '?')[:12]}) -> {verdict.current_instructions:,.0f}; "
            f"threshold {verdict.threshold:.1%}, noise {verdict.noise:.2%}, "
            f"Mann-Whitney p={verdict.p_value:.2g}"
        )
    if verdict.baseline_median is not None and verdict.current_median is not None:
        if verdict.design == "interleaved":
            lines.append(
                f"median {verdict.baseline_median * 1e3:.4g} ms (A) -> "
                f"{verdict.current_median * 1e3:.4g} ms (B), round medians; threshold "
                f"{verdict.threshold:.1%}, pair noise {verdict.noise:.1%}, "
                f"Wilcoxon signed-rank p={verdict.p_value:.2g}"
            )
        else:
            lines.append(
                f"median {verdict.baseline_median * 1e3:.4g} ms (baseline run "
                f"{(verdict.baseline_run or '?')[:12]}) -> {verdict.current_median * 1e3:.4g} "
                f"ms; threshold {verdict.threshold:.1%}, noise {verdict.noise:.1%}, "
                f"Mann-Whitney p={verdict.p_value:.2g}"
            )
    if verdict.latency:
        lines.append(f"latency beside the counts: {verdict.latency}")
    return "\n  ".join(lines)


def _properties(result: EvaluationResult, verdict: Verdict | None = None) -> dict[str, object]:
    """JUnit properties: the headline numbers of an item, in milliseconds and items/s."""
    props: dict[str, object] = {
        "mlscope_framework_version": result.predictor.version,
        "mlscope_accuracy": result.accuracy.headline(),
        "mlscope_cold_start_ms": round(
            (result.cold_start.load_s + result.cold_start.first_inference_s) * 1e3, 3
        ),
    }
    if result.summary:
        props.update(
            mlscope_median_ms=round(result.summary.median * 1e3, 4),
            mlscope_p99_ms=round(result.summary.p99 * 1e3, 4),
            mlscope_throughput=round(result.summary.throughput, 2),
            mlscope_samples=result.summary.count,
        )
    if result.instructions:
        props["mlscope_instructions"] = round(statistics.median(result.instructions))
    if result.trace is not None:
        props["mlscope_trace_level"] = result.trace.level
        if result.trace.path:
            props["mlscope_trace"] = result.trace.path
    if verdict is not None:
        props["mlscope_verdict"] = verdict.kind
        if verdict.design:
            props["mlscope_design"] = verdict.design
        for name in (
            "ratio",
            "ratio_low",
            "ratio_high",
            "threshold",
            "noise",
            "p_value",
            "between_run_noise",
            "pairs",
        ):
            value = getattr(verdict, name)
            if value is not None:
                props[f"mlscope_{name}"] = round(value, 6)
        if verdict.baseline_median is not None:
            props["mlscope_baseline_median_ms"] = round(verdict.baseline_median * 1e3, 4)
        if verdict.baseline_instructions is not None:
            props["mlscope_baseline_instructions"] = round(verdict.baseline_instructions)
        if verdict.baseline_run:
            props["mlscope_baseline_run"] = verdict.baseline_run
        if verdict.latency:
            props["mlscope_latency_verdict"] = verdict.latency
    return props


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # Recorded from reports, not from runtest, so skips and setup errors are stored too.
    report = yield
    session = _session(item.config)
    if session is None:
        return report
    if session.settings.shared_run and report.when == "teardown":
        # A pytest-xdist worker: what this test recorded (an item, or mlscope_eval calls in a
        # hand-written test) goes to the controller, which prints the summary.
        from pytest_mlscope.xdist import RECORD_ATTRIBUTE, records_to_json

        setattr(report, RECORD_ATTRIBUTE, records_to_json(session))
    if not isinstance(item, MlscopeItem):
        return report
    if report.when == "call":
        outcome = "passed" if report.passed else "failed"
    elif report.skipped and report.when == "setup":
        outcome = "skipped"
    elif report.failed:
        outcome = "error"
    else:
        return report
    message = None
    if report.skipped and isinstance(report.longrepr, tuple):
        message = str(report.longrepr[2]).removeprefix("Skipped: ")
    elif report.failed:
        message = report.longreprtext
    session.record(
        item.cell,
        outcome,
        item.stash.get(RESULT_KEY, None),
        message,
        item.stash.get(VERDICT_KEY, None),
        # The item's own time, not its wait for the timing lock: what shard plans balance on.
        duration_s=max(0.0, report.duration - session.lock_wait_s)
        if report.when == "call"
        else None,
    )
    return report


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``@pytest.mark.hardware(...)``: a ``gpu`` or ``cpu`` marker for ``-m``, and a skip with
    the exact reason on a host that lacks what the test asks for."""
    decided: dict[str, tuple[str, list[str]]] = {}
    for item in items:
        marker = item.get_closest_marker("hardware")
        if marker is None:
            continue
        if marker.args:
            raise pytest.UsageError(
                f"{item.nodeid}: @pytest.mark.hardware takes keyword arguments only"
            )
        key = repr(sorted(marker.kwargs.items()))
        if key not in decided:
            from pytest_mlscope.hardware import (
                current_host,
                marker_requirements,
                unmet_requirements,
            )

            try:
                requires, device = marker_requirements(marker.kwargs)
            except ValueError as exc:
                raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.hardware: {exc}") from None
            decided[key] = (device, unmet_requirements(requires, current_host(), device))
        device, unmet = decided[key]
        item.add_marker(device)
        if unmet:
            item.add_marker(pytest.mark.skip(reason=f"this host {'; '.join(unmet)}"))


class _Sharding:
    """``--mlscope-shard K/N``: keep this runner's part of the collected items.

    Runs after ``-k``/``-m`` deselection (trylast), so the runners split what they all select.
    """

    def __init__(self, session: MlscopeSession) -> None:
        self.session = session

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        from pytest_mlscope.shard import default_group, items_digest, load, plan
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


def pytest_collection_finish(session: pytest.Session) -> None:
    state = _session(session.config)
    if state is not None:
        # Every selected item shares the suite-wide false-alarm budget (Bonferroni).
        state.comparisons = max(1, sum(isinstance(i, MlscopeItem) for i in session.items))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = _session(session.config)
    if state is not None:
        interrupted = exitstatus in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR)
        state.close("incomplete" if interrupted else "complete")


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = _session(config)
    if state is None or not state.records:
        return
    from pytest_mlscope.report.terminal import summary_lines

    terminalreporter.write_sep("=", "mlscope")
    for line in summary_lines(state):
        terminalreporter.write_line(line)


@pytest.fixture
def mlscope_eval(request: pytest.FixtureRequest) -> Callable[..., EvaluationResult]:
    """Evaluate a bundled or project manifest from a hand-written test.

    ``mlscope_eval("alexnet", framework="onnxruntime", batch_size=1)`` returns the
    :class:`~pytest_mlscope.protocol.EvaluationResult` (accuracy, latency summary, raw samples,
    cold start), and stores it with the session's run. Measurement settings (``min_count``,
    ``min_duration_s``, ``max_duration_s``, ``warmup``) may be passed as keywords.
    """
    session = _session(request.config)
    if session is None:
        pytest.skip("mlscope_eval evaluates models only under pytest --mlscope")

    def evaluate(
        model: str,
        framework: str,
        batch_size: int = 1,
        device: str = "cpu",
        scenario: str = "single_stream",
        **measure: float,
    ) -> EvaluationResult:
        from pytest_mlscope.protocol import Cell

        manifest = session.manifest(model)
        manifest.framework_spec(framework)  # a clear KeyError for a framework it does not list
        cell = Cell(
            model=model,
            framework=framework,
            device=device,
            batch_size=batch_size,
            scenario=scenario,  # type: ignore[arg-type]
        )
        reason, service_missing = session.skip_reason(manifest, cell)
        if reason and service_missing and _under_ci():
            pytest.fail(f"{reason} (CI=true: fails instead of skipping)")
        if reason:
            pytest.skip(reason)
        # Named by its test too: the manifest's own item may evaluate the same cell in this run,
        # and the two results must stay apart in the store, the exports and the verdicts.
        item_id = f"{cell.id}@{request.node.nodeid}"
        taken = sum(1 for r in session.records if r.item_id.startswith(item_id))
        if taken:
            item_id += f"#{taken + 1}"
        with session.timing_turn():
            result, verdict = session.evaluate_and_compare(manifest, cell, item_id, **measure)
        outcome = "passed" if result.accuracy.passed else "failed"
        session.record(
            cell,
            outcome,
            result,
            f"evaluated by {request.node.nodeid}",
            verdict,
            item_id=item_id,
        )
        return result

    return evaluate

"""The plugin's options and ini keys, and the one place they become the session's Settings.

Each setting is resolved here once, in one order: the command line, else the ini key, else the
default. Every pytest run imports this module through the plugin, so it imports nothing heavy.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_mlscope.vocabulary import DEVICES, FRAMEWORKS, RUNTIMES, SCENARIOS, TRACE_LEVELS

if TYPE_CHECKING:
    from pytest_mlscope.session import Settings
    from pytest_mlscope.shard import Shard

DEFAULT_HTML = ".mlscope/report.html"


def add_options(parser: pytest.Parser) -> None:
    """Every option and ini key of the plugin (pytest_addoption)."""
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
        choices=RUNTIMES,
        help="where workers run: subprocess (one per stack), inprocess (debugging), docker (a "
        "container per stack image, see `mlscope containers`); default: ini mlscope_runtime, "
        "else subprocess",
    )
    group.addoption(
        "--mlscope-db", metavar="URL", help="results database: a path or SQLAlchemy URL"
    )
    group.addoption("--mlscope-cache", metavar="DIR", help="artifact cache directory")
    group.addoption(
        "--mlscope-artifact-store",
        metavar="DIR",
        help="keep the model files baselines save in this directory (a shared mount for "
        "machines that share the database), not in the database: for very large models",
    )
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
        "--mlscope-memory-threshold",
        type=float,
        metavar="FRACTION",
        help="how much more memory than the baseline's fails an item, e.g. 0.1 (default: "
        "manifest, ini, 0.10)",
    )
    group.addoption(
        "--mlscope-scaling-threshold",
        type=float,
        metavar="EXPONENT",
        help="how much faster time may grow with the sequence length than in the baseline, as "
        "a change of the exponent of L, e.g. 0.05 (default: manifest, ini, 0.05)",
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
        choices=TRACE_LEVELS,
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
    parser.addini(
        "mlscope_memory_threshold",
        "memory threshold (more than the baseline's peak) for manifests that set none",
        default="0.10",
    )
    parser.addini(
        "mlscope_scaling_threshold",
        "scaling threshold (a change of the exponent of L) for manifests that set none",
        default="0.05",
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
    parser.addini(
        "mlscope_artifact_store",
        "directory for the model files baselines save (default: in the results database)",
        default="",
    )
    parser.addini("mlscope_timeout", "per-item worker timeout in seconds (0: none)", default="600")
    parser.addini(
        "mlscope_predictors",
        "extra predictors, one 'name = module:Class' per line",
        type="linelist",
        default=[],
    )


def register_markers(config: pytest.Config) -> None:
    """Markers for ``-m`` and ``--strict-markers``: registered with or without ``--mlscope``."""
    _register_marker(config, "mlscope", "an item collected from a pytest-mlscope manifest")
    for name in (*FRAMEWORKS, *_predictors(config)):
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


def settings(config: pytest.Config) -> Settings:
    """The session's settings from the command line and the ini file."""
    from pytest_mlscope import xdist
    from pytest_mlscope.session import Settings

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
    cache = _either(config, "mlscope_cache")
    artifact_store = _either(config, "mlscope_artifact_store")
    return Settings(
        artifact_store=Path(artifact_store).expanduser().resolve() if artifact_store else None,
        rootdir=rootdir,
        manifest_paths=manifest_paths,
        runtime=_either(config, "mlscope_runtime") or "subprocess",
        db=_either(config, "mlscope_db"),
        cache_dir=Path(cache).resolve() if cache else None,
        timeout=timeout if timeout and timeout > 0 else None,
        predictors=_predictors(config),
        measure_overrides=measure,
        pytest_args=list(config.invocation_params.args),
        baseline=_either(config, "mlscope_baseline"),
        baseline_required=bool(config.getoption("mlscope_baseline")),
        save_baseline=config.getoption("mlscope_save_baseline"),
        force_baseline=config.getoption("mlscope_force_baseline"),
        threshold=config.getoption("mlscope_threshold"),
        default_threshold=float(config.getini("mlscope_threshold") or 0.05),
        memory_threshold=config.getoption("mlscope_memory_threshold"),
        default_memory_threshold=float(config.getini("mlscope_memory_threshold") or 0.10),
        scaling_threshold=config.getoption("mlscope_scaling_threshold"),
        default_scaling_threshold=float(config.getini("mlscope_scaling_threshold") or 0.05),
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
        count_instructions=_flag(config, "mlscope_count_instructions"),
        interleave=_interleave(config),
        strict=_flag(config, "mlscope_strict"),
        **xdist.worker_settings(config),
    )


def no_manifests(config: pytest.Config, paths: list[Path]) -> list[str]:
    """What a session that collected no manifest says: where it looked, what it found there,
    and the three ways to point it at manifests. A new user's first ``pytest --mlscope``
    otherwise ends in "no tests ran" and nothing else."""
    ini = config.inipath
    lines = ["mlscope: no manifest was collected."]
    uncollected = False  # manifests are there, but the command line named other paths
    if not paths:
        where = (
            f"is set in {ini}"
            if ini
            else "is set (no pytest.ini, pyproject.toml, tox.ini or setup.cfg was found "
            f"in {config.rootpath} or above it)"
        )
        lines.append(
            "  No manifest paths: neither --mlscope-manifests=PATH nor the ini key "
            f"mlscope_manifests {where}."
        )
    else:
        from_cli = config.getoption("mlscope_manifests")
        source = "--mlscope-manifests" if from_cli else f"mlscope_manifests in {ini}"
        lines.append(f"  Looked in (from {source}):")
        named = " ".join(str(arg) for arg in config.args)
        for path in paths:
            candidates = [path] if path.is_file() else path.rglob("*.y*ml")
            found = [f for f in candidates if f.suffix in (".yaml", ".yml")]
            if not path.exists():
                state = "does not exist"
            elif not found:
                state = "no .yaml or .yml file"
            elif any(path == Path(arg).resolve() for arg in config.args):
                state = (
                    f"{len(found)} manifest file{'s' if len(found) != 1 else ''}, not collected: "
                    "pytest skipped the folder (norecursedirs or --ignore)"
                )
            else:
                state = (
                    f"{len(found)} manifest file{'s' if len(found) != 1 else ''}, not collected: "
                    f"the command line names other paths ({named}); name this one too, or none"
                )
            lines.append(f"    {path}: {state}")
            uncollected = uncollected or bool(found)
    if uncollected:
        return lines
    lines += [
        "  Point the plugin at your manifests: pytest --mlscope --mlscope-manifests=manifests,",
        "  or once for the project, in pyproject.toml under [tool.pytest.ini_options]:",
        '    mlscope_manifests = ["manifests"]',
        "  No manifest yet? Write one from a model file: mlscope init path/to/model.onnx",
    ]
    return lines


def _either(config: pytest.Config, name: str) -> Any:
    """The option's value, else the ini key's; None when neither is set (or both are empty)."""
    return config.getoption(name) or config.getini(name) or None


def _flag(config: pytest.Config, name: str) -> bool:
    """A switch given on the command line (either way), else the ini key's."""
    chosen = config.getoption(name)
    return bool(chosen if chosen is not None else config.getini(name))


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

"""pytest hooks and the ``mlscope_eval`` fixture; nothing else.

What the hooks call lives with what it describes: options and settings in ``options``, the
collected nodes in ``items``, evaluation and the run in ``session``, JUnit properties in
``report.junit``, the failure message in ``judging``, sharding in ``shard``. Every pytest run in
an environment with the plugin installed imports this module, so it imports nothing heavy: no
framework, no SQLAlchemy, not even pydantic until ``--mlscope`` is given.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_mlscope import options
from pytest_mlscope.items import (
    RESULT_KEY,
    SESSION_KEY,
    VERDICT_KEY,
    ManifestFile,
    MlscopeItem,
    mark_hardware,
    session_of,
)

if TYPE_CHECKING:
    from pytest_mlscope.protocol import EvaluationResult


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, args: list[str]) -> None:
    # The first hook that sees the rootdir: refuse a path option's value that moved it (see
    # rootdir.py) before any conftest.py is loaded or .pytest_cache is written in the wrong place.
    if any(arg.startswith("--mlscope-") for arg in args):
        from pytest_mlscope import rootdir

        rootdir.check(early_config, args)


def pytest_configure(config: pytest.Config) -> None:
    options.register_markers(config)
    if not config.getoption("mlscope"):
        return
    from pytest_mlscope import xdist
    from pytest_mlscope.session import MlscopeSession
    from pytest_mlscope.shard import Sharding

    settings = options.settings(config)
    session = MlscopeSession(settings)
    if xdist.is_controller(config):
        config.pluginmanager.register(xdist.Controller(session), "mlscope-xdist")
    if settings.shard is not None:
        config.pluginmanager.register(Sharding(session), "mlscope-shard")
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
        config.args.extend(str(p) for p in settings.manifest_paths if p.exists())


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    session = session_of(parent.config)
    if session is None or file_path.suffix not in (".yaml", ".yml"):
        return None
    resolved = file_path.resolve()
    for root in session.settings.manifest_paths:
        if resolved == root or resolved.is_relative_to(root):
            session.manifest_files += 1
            return ManifestFile.from_parent(parent, path=file_path)
    return None


def pytest_report_collectionfinish(config: pytest.Config, items: list[pytest.Item]) -> list[str]:
    # A session that found no manifest (and no test that evaluates by hand) says where it looked;
    # an xdist controller collects nothing itself, its workers do.
    from pytest_mlscope import xdist

    session = session_of(config)
    if session is None or session.manifest_files or xdist.is_controller(config):
        return []
    if any("mlscope_eval" in getattr(item, "fixturenames", ()) for item in items):
        return []
    return options.no_manifests(config, session.settings.manifest_paths)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # Recorded from reports, not from runtest, so skips and setup errors are stored too.
    report = yield
    session = session_of(item.config)
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
    mark_hardware(items)


def pytest_collection_finish(session: pytest.Session) -> None:
    state = session_of(session.config)
    if state is not None:
        # Every selected item shares the suite-wide false-alarm budget (Bonferroni).
        state.comparisons = max(1, sum(isinstance(i, MlscopeItem) for i in session.items))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session_of(session.config)
    if state is not None:
        interrupted = exitstatus in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR)
        state.close("incomplete" if interrupted else "complete")


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = session_of(config)
    if state is None or not state.records:
        return
    from pytest_mlscope.report.terminal import summary_lines

    terminalreporter.write_sep("=", "mlscope")
    if state.report_data is not None:
        html = state.settings.html
        for line in summary_lines(state.report_data, everything_in=str(html) if html else None):
            terminalreporter.write_line(line)
    for line in state.summary_notes():
        terminalreporter.write_line(line)


@pytest.fixture
def mlscope_eval(request: pytest.FixtureRequest) -> Callable[..., EvaluationResult]:
    """Evaluate a bundled or project manifest from a hand-written test.

    ``mlscope_eval("alexnet", framework="onnxruntime", batch_size=1)`` returns the
    :class:`~pytest_mlscope.protocol.EvaluationResult` (accuracy, latency summary, raw samples,
    cold start), and stores it with the session's run. A text model takes ``sequence_length``
    and any model ``scenario`` (defaults: the manifest's first). Measurement settings
    (``min_count``, ``min_duration_s``, ``max_duration_s``, ``warmup``) may be passed as keywords.
    """
    session = session_of(request.config)
    if session is None:
        pytest.skip("mlscope_eval evaluates models only under pytest --mlscope")

    def evaluate(
        model: str,
        framework: str,
        batch_size: int = 1,
        device: str = "cpu",
        scenario: str | None = None,
        sequence_length: int | None = None,
        **measure: float,
    ) -> EvaluationResult:
        from pytest_mlscope.protocol import Cell

        manifest = session.manifest(model)
        manifest.framework_spec(framework)  # a clear KeyError for a framework it does not list
        lengths = manifest.performance.sequence_lengths
        if lengths and sequence_length is None:
            sequence_length = lengths[0]
        scenario = scenario or manifest.performance.scenarios[0]
        cell = Cell(
            model=model,
            framework=framework,
            device=device,
            batch_size=batch_size,
            scenario=scenario,  # type: ignore[arg-type]
            sequence_length=sequence_length,
        )
        unavailable = session.unavailable(manifest, cell)
        if unavailable is not None:
            reason, fails = unavailable
            pytest.fail(reason) if fails else pytest.skip(reason)
        # Named by its test too: the manifest's own item may evaluate the same cell in this run,
        # and the two results must stay apart in the store, the exports and the verdicts.
        item_id = f"{cell.id}@{request.node.nodeid}"
        taken = sum(1 for r in session.records if r.item_id.startswith(item_id))
        if taken:
            item_id += f"#{taken + 1}"
        result, verdict = session.evaluate_in_turn(manifest, cell, item_id, **measure)
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

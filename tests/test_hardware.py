"""Hardware facts and hardware-aware selection, on this host's real detection.

Requirement sets are built from what this host has (so they must match) and from what it cannot
have (so they must not): the tests hold on any machine CI runs on.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pytest_mlscope.hardware import (
    ISA_FLAGS,
    current_host,
    isa_extensions,
    noise_sources,
    unmet_requirements,
)
from pytest_mlscope.items import marker_requirements
from pytest_mlscope.manifest import Requirements

HOST = current_host()
MISSING_ISA = next(name for name in ISA_FLAGS if not HOST.has_isa(name))


def _nvml_works() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
    except Exception:
        return False
    return True


def test_isa_extensions_come_from_the_cpu_flags() -> None:
    assert isa_extensions(frozenset({"avx2", "avx512f", "amx_tile", "fpu"})) == (
        "avx2",
        "avx512",
        "amx",
    )
    assert isa_extensions(frozenset({"asimd", "sve"})) == ("neon", "sve")
    assert HOST.isa == isa_extensions(HOST.cpu_flags)
    if HOST.arch == "x86_64":
        assert "sse4_2" in HOST.isa  # every x86-64 CPU that runs the frameworks' wheels


@pytest.mark.skipif(_nvml_works(), reason="this host has an NVIDIA driver")
def test_no_nvml_is_a_normal_answer_with_the_reason() -> None:
    """This host has no GPU: nvidia-ml-py is installed, and its library finds no driver."""
    import pynvml  # noqa: F401 - a dependency: importable everywhere the plugin is

    assert HOST.gpus == ()
    assert HOST.gpu_note == "no NVIDIA driver (the NVML library is not found)"
    (reason,) = unmet_requirements(Requirements(), HOST, device="gpu")
    assert (
        reason
        == "needs an NVIDIA GPU, none found (no NVIDIA driver (the NVML library is not found))"
    )


def test_requirements_built_from_this_host_match_it_and_others_do_not() -> None:
    matching = Requirements(
        arch=[HOST.arch],
        min_memory_gb=HOST.memory_gb / 2,
        cpu_flags=sorted(HOST.cpu_flags)[:3],
        isa=list(HOST.isa[:2]),
    )
    assert unmet_requirements(matching, HOST) == []
    impossible = Requirements(
        arch=["s390x" if HOST.arch != "s390x" else "riscv64"],
        min_memory_gb=HOST.memory_gb * 4,
        isa=[MISSING_ISA],
    )
    reasons = unmet_requirements(impossible, HOST)
    assert len(reasons) == 3
    assert reasons[0].startswith(f"needs arch {impossible.arch[0]}, this host is {HOST.arch}")  # type: ignore[index]
    assert f"{HOST.memory_gb} GiB" in reasons[1]
    assert reasons[2].startswith(f"needs {MISSING_ISA}, which this host's CPU lacks")


def test_a_manifest_names_isa_extensions_it_knows() -> None:
    with pytest.raises(ValueError, match="unknown ISA extension avx1024; expected some of sse4_2"):
        Requirements(isa=["avx1024"])


def test_the_marker_arguments_become_requirements() -> None:
    requires, device = marker_requirements({"gpu": True, "min_compute_capability": "8.0"})
    assert device == "gpu" and requires.gpu is not None
    assert requires.gpu.min_compute_capability == "8.0"
    requires, device = marker_requirements({"isa": "avx2", "arch": "x86_64"})
    assert device == "cpu" and requires.isa == ["avx2"] and requires.arch == ["x86_64"]
    with pytest.raises(ValueError, match="unknown argument gpus; expected gpu, "):
        marker_requirements({"gpus": 1})
    with pytest.raises(ValueError, match="unknown isa avx3"):
        marker_requirements({"isa": ["avx3"]})


def test_noise_sources_name_what_an_untuned_host_does() -> None:
    untuned = {"governor": "powersave", "turbo": True, "aslr": True, "isolated_cpus": ""}
    assert noise_sources(untuned) == [
        "frequency governor powersave (not performance)",
        "turbo boost on",
        "ASLR on",
        "no isolated CPUs",
    ]
    tuned = {"governor": "performance", "turbo": False, "aslr": False, "isolated_cpus": "1"}
    assert noise_sources(tuned) == []
    assert noise_sources({}) == []  # unreadable facts are not guessed at
    assert "aslr" in HOST.tuning  # /proc/sys/kernel/randomize_va_space is readable on Linux
    assert HOST.fingerprint()["tuning"] == HOST.tuning


def test_the_hardware_marker_skips_with_the_reason_and_selects_by_device(
    pytester: pytest.Pytester,
) -> None:
    isa = HOST.isa[0]
    pytester.makepyfile(
        test_hw=textwrap.dedent(
            f"""
            import pytest

            @pytest.mark.hardware(isa=[{isa!r}], arch={HOST.arch!r})
            def test_has_it():
                pass

            @pytest.mark.hardware(isa=[{MISSING_ISA!r}])
            def test_lacks_isa():
                pass

            @pytest.mark.hardware(gpu=True, min_compute_capability="8.0")
            def test_on_gpu():
                pass

            @pytest.mark.hardware(min_memory_gb={HOST.memory_gb * 4})
            def test_big_memory():
                pass
            """
        )
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", "--strict-markers")
    if _nvml_works():
        pytest.skip("this host has an NVIDIA driver")
    result.assert_outcomes(passed=1, skipped=3)
    result.stdout.fnmatch_lines_random(
        [
            f"*test_hw.py:* this host needs {MISSING_ISA}, which this host's CPU lacks*",
            "*test_hw.py:* this host needs an NVIDIA GPU, none found (no NVIDIA driver*",
            f"*test_hw.py:* this host needs {HOST.memory_gb * 4} GiB of memory*",
        ]
    )
    gpu_only = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-m", "gpu", "-v")
    gpu_only.assert_outcomes(skipped=1)
    gpu_only.stdout.fnmatch_lines(["*test_on_gpu SKIPPED*"])
    cpu_only = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-m", "cpu")
    cpu_only.assert_outcomes(passed=1, skipped=2)


def test_a_bad_hardware_marker_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_bad="""
        import pytest

        @pytest.mark.hardware(gpus=1)
        def test_it():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*test_bad.py::test_it: @pytest.mark.hardware: unknown argument gpus; expected gpu,*"]
    )


def test_hw_markers_shows_what_this_host_satisfies(capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_mlscope.cli import main

    assert main(["hw", "--markers"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines() if line[:1].isalpha()}
    assert rows["cpu"] == "yes"
    assert rows["gpu"] == ("yes" if HOST.gpus else "no")
    assert rows[f"hardware(isa={HOST.isa[0]!r})"] == "yes"
    assert rows[f"hardware(isa={MISSING_ISA!r})"] == "no"
    assert rows["docker"] in ("yes", "no")


# -- the timing window's telemetry ---------------------------------------------------------------


def test_a_timing_window_reads_the_machine_at_its_edges() -> None:
    import time

    from pytest_mlscope.telemetry import Window

    cpu_before, wall_before = time.process_time(), time.perf_counter()
    with Window() as window:
        deadline = time.perf_counter() + 0.3
        while time.perf_counter() < deadline:  # busy: this process's CPU share shows it
            pass
    cpu, wall = time.process_time() - cpu_before, time.perf_counter() - wall_before
    values = window.values
    assert 0.25 < values["wall_s"] < 5
    # The share of one core this process had, as the test's own clocks saw it over (about) the
    # same window: on a loaded machine both are low, never apart by much.
    assert values["process_cpu_percent"] > 0
    assert abs(values["process_cpu_percent"] - 100 * cpu / wall) < 15
    assert values["rss_peak_mb"] > 10
    assert 0 <= values["system_cpu_percent"] <= 100
    assert not any(key.startswith("gpu") for key in values)  # CPU item: NVML is not asked


def _powercap(root: Path, packages: dict[str, tuple[int, int]]) -> Path:
    """A powercap tree as the kernel lays it out: package zones, one with a sub-zone."""
    for name, (energy, wrap) in packages.items():
        zone = root / name
        zone.mkdir(parents=True)
        (zone / "energy_uj").write_text(f"{energy}\n")
        (zone / "max_energy_range_uj").write_text(f"{wrap}\n")
        (zone / f"{name}:0").mkdir()  # cores: counted in the package's figure already
        (zone / f"{name}:0" / "energy_uj").write_text("5\n")
    (root / "intel-rapl").mkdir()  # the control type, not a zone
    return root


def test_rapl_counts_whole_packages_and_undoes_a_counter_wrap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_mlscope.telemetry import rapl_joules, rapl_packages, read_rapl

    root = _powercap(tmp_path, {"intel-rapl:0": (1_000, 2**32 - 1), "intel-rapl:1": (7, 99)})
    monkeypatch.setenv("MLSCOPE_POWERCAP", str(root))
    zones = rapl_packages()
    assert [zone.name for zone in zones] == ["intel-rapl:0", "intel-rapl:1"]
    start = read_rapl(zones)
    assert start == [1_000, 7]
    # Package 0 used 2.5 J; package 1's counter wrapped past 99 µJ: 6 + 1 + 5 µJ from 93.
    assert rapl_joules(zones, [1_000, 93], [2_501_000, 5]) == pytest.approx(2.5 + 12e-6)
    (zones[1] / "energy_uj").write_text("not a number")
    assert "could not be read" in str(read_rapl(zones))
    assert "no RAPL counter" in str(read_rapl(rapl_packages(str(tmp_path / "none"))))


def test_energy_is_what_a_counter_measured_or_says_it_was_not_measurable() -> None:
    """Per inference from the window's mean power and the median call; never a TDP estimate."""
    from pytest_mlscope.telemetry import energy_figures

    window = {"wall_s": 2.0, "cpu_energy_j": 30.0, "gpu0_energy_j": 50.0}
    found = energy_figures(window, median_s=0.01, batch_size=4, tokens_per_call=None,
                           both_sides=False)  # fmt: skip
    assert found["energy_power_w"] == pytest.approx(40.0)
    assert found["energy_per_inference_j"] == pytest.approx(40.0 * 0.01 / 4)
    assert found["energy"] == "measured: cpu, gpu0"
    assert "other processes included" in str(found["energy_scope"])
    generate = energy_figures({"wall_s": 1.0, "gpu0_energy_j": 10.0}, 0.5, 1, 16, True)
    assert generate["energy_per_token_j"] == pytest.approx(10.0 * 0.5 / 16)
    assert generate["energy_scope"] == "A's calls and B's, interleaved"
    none = energy_figures(
        {"wall_s": 1.0, "cpu_energy_not_measured": "the RAPL counters are readable by root only"},
        0.5, 1, None, False,
    )  # fmt: skip
    assert none == {"energy": "not measurable here: the RAPL counters are readable by root only"}


def test_a_timing_window_measures_energy_where_this_machine_can_and_says_so_where_not() -> None:
    from pytest_mlscope.telemetry import Window, rapl_packages, read_rapl

    with Window() as window:
        sum(range(100_000))
    readable = isinstance(read_rapl(rapl_packages()), list)
    if readable:  # a counter that reads: joules, never negative
        assert window.values["cpu_energy_j"] >= 0
    else:
        assert "cpu_energy_j" not in window.values
        assert window.values["cpu_energy_not_measured"]


def test_throttling_and_busy_neighbours_make_a_slowdown_suspect() -> None:
    from pytest_mlscope.compare import Verdict
    from pytest_mlscope.protocol import (
        AccuracyReport,
        Cell,
        ColdStart,
        EvaluationResult,
        PredictorInfo,
    )
    from pytest_mlscope.session import _with_suspicions
    from pytest_mlscope.telemetry import suspicions

    seen = {"gpu0_throttle": "hardware thermal slowdown", "other_cores_busy": 1.4}
    assert suspicions(seen) == [
        "gpu0 throttled (hardware thermal slowdown)",
        "other processes kept 1.4 cores busy",
    ]
    assert suspicions({"gpu0_throttle": "", "other_cores_busy": 0.1}) == []
    result = EvaluationResult(
        cell=Cell(model="m", framework="onnxruntime"),
        predictor=PredictorInfo(framework="onnxruntime", version="1", device="cpu"),
        artifact_sha256="0" * 64,
        cold_start=ColdStart(load_s=0.1, first_inference_s=0.01),
        accuracy=AccuracyReport(),
        telemetry=seen,
    )
    regression = Verdict("regression", "slower: beyond the threshold")
    assert _with_suspicions(regression, result).reason == (
        "slower: beyond the threshold; suspect: gpu0 throttled (hardware thermal slowdown); "
        "other processes kept 1.4 cores busy during timing"
    )
    ok = Verdict("ok", "within the threshold")
    assert _with_suspicions(ok, result) is ok


def test_gpu_items_skip_on_this_host_with_the_gpu_reason_first(
    alexnet_manifest: object,
) -> None:
    """TensorRT is not installed here and there is no GPU: the GPU is what the user must hear."""
    from pytest_mlscope.cells import expand, skip_reason
    from pytest_mlscope.predictors import framework_unavailable

    host = current_host()
    if host.gpus:
        pytest.skip("this host has an NVIDIA GPU")
    cells = [c for c in expand(alexnet_manifest) if c.framework == "tensorrt"]  # type: ignore[arg-type]
    assert cells and {c.device for c in cells} == {"gpu"}
    for cell in cells:
        reason = skip_reason(alexnet_manifest, cell, host)  # type: ignore[arg-type]
        assert reason is not None and reason.startswith("alexnet needs an NVIDIA GPU, none found")
    # On the CPU the predictor itself says it cannot run there.
    assert framework_unavailable("tensorrt", None, "cpu") == (
        "the tensorrt predictor does not run on cpu (it runs on gpu)"
    )


def test_a_tensorrt_engine_is_rebuilt_for_another_model_release_or_gpu() -> None:
    from pytest_mlscope.predictors.tensorrt import engine_key

    base = engine_key("ab" * 32, "10.9.0", "NVIDIA H200", "9.0")
    assert engine_key("ab" * 32, "10.9.0", "NVIDIA H200", "9.0") == base
    others = {
        engine_key("cd" * 32, "10.9.0", "NVIDIA H200", "9.0"),
        engine_key("ab" * 32, "10.10.0", "NVIDIA H200", "9.0"),
        engine_key("ab" * 32, "10.9.0", "NVIDIA A100", "8.0"),
    }
    assert base not in others and len(others) == 3

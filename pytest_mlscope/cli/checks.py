"""``mlscope validate`` and ``mlscope hw``: check manifests, and show what this host has and
which of the plugin's markers it satisfies."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pytest_mlscope.cli.common import EXIT_INVALID, EXIT_OK, pairs_text, plural, shown_path
from pytest_mlscope.errors import ManifestError
from pytest_mlscope.report.terminal import table


def register(commands: argparse._SubParsersAction) -> None:
    validate = commands.add_parser(
        "validate", help="check manifests and print every problem with file:line:key"
    )
    validate.add_argument("paths", nargs="+", metavar="PATH", help="manifest files or directories")
    validate.set_defaults(handler=cmd_validate)

    hw = commands.add_parser("hw", help="show what this host has (CPU, memory, GPUs, packages)")
    hw.add_argument("--json", action="store_true", help="print the stored fingerprint as JSON")
    hw.add_argument(
        "--markers", action="store_true", help="also show which markers this host satisfies"
    )
    hw.set_defaults(handler=cmd_hw)


def cmd_validate(args: argparse.Namespace) -> int:
    from pytest_mlscope.manifest import load_manifest, manifest_files

    missing = [path for path in args.paths if not Path(path).exists()]
    for path in missing:
        print(f"{path}: no such file or directory")
    files = manifest_files(path for path in args.paths if Path(path).exists())
    if not files and not missing:
        print(f"no manifests (*.yaml, *.yml) under {', '.join(args.paths)}")
        return EXIT_INVALID
    invalid = problems = 0
    for path in files:
        try:
            manifest = load_manifest(path)
        except ManifestError as exc:
            invalid += 1
            problems += len(exc.problems)
            for problem in exc.problems:
                print(problem)
            continue
        frameworks = plural(len(manifest.framework), "framework")
        print(f"ok  {shown_path(path)} ({manifest.name}: {frameworks})")
    summary = f"{plural(len(files), 'manifest')}, {invalid} invalid"
    if problems:
        summary += f" ({plural(problems, 'problem')})"
    if missing:
        summary += f", {plural(len(missing), 'path')} not found"
    print(summary)
    return EXIT_INVALID if invalid or missing else EXIT_OK


def cmd_hw(args: argparse.Namespace) -> int:
    from pytest_mlscope.hardware import current_host

    host = current_host()
    if args.json:
        print(json.dumps(host.fingerprint(), indent=2, sort_keys=True))
        return EXIT_OK
    gpus = [
        f"{gpu.name} ({gpu.memory_gb} GiB, compute capability {gpu.compute_capability}, "
        f"driver {gpu.driver})"
        for gpu in host.gpus
    ]
    pairs = [
        ("hostname", host.hostname),
        ("arch", host.arch),
        ("os", host.os),
        ("cpu", host.cpu_model),
        ("cores", f"{host.physical_cores} physical, {host.logical_cores} logical"),
        ("memory", f"{host.memory_gb} GiB"),
        ("cpu flags", str(len(host.cpu_flags))),
        ("isa", ", ".join(host.isa) or "none known"),
        ("python", host.python),
        ("gpus", "; ".join(gpus) or f"none ({host.gpu_note})"),
        ("cuda (driver)", host.cuda_driver or "-"),
        ("tuning", ", ".join(f"{k}={v!r}" for k, v in host.tuning.items()) or "unreadable"),
    ]
    pairs += [
        (name, version)
        for name, version in sorted(host.packages.items(), key=lambda kv: kv[0].lower())
    ]
    print(pairs_text(pairs))
    if args.markers:
        print()
        print(table(["marker", "here", "why"], _marker_rows(host)))
    return EXIT_OK


def _marker_rows(host: Any) -> list[list[str]]:
    """Which of the plugin's selection markers this host satisfies, and why not."""
    from pytest_mlscope import containers
    from pytest_mlscope.hardware import ISA_FLAGS, noise_sources

    rows = [["cpu", "yes", f"{host.cpu_model}, {host.arch}"]]
    if host.gpus:
        rows.append(["gpu", "yes", ", ".join(g.name for g in host.gpus)])
    else:
        rows.append(["gpu", "no", host.gpu_note])
    try:
        containers.client(timeout=5)
        rows.append(["docker", "yes", "a Docker daemon answers"])
    except containers.ContainerError as exc:
        rows.append(["docker", "no", str(exc)])
    for name in ISA_FLAGS:
        rows.append([f"hardware(isa={name!r})", "yes" if host.has_isa(name) else "no", ""])
    noisy = noise_sources(host.tuning)
    rows.append(["(tuned for timing)", "no" if noisy else "yes", ", ".join(noisy)])
    return rows

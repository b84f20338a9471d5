"""``mlscope golden MANIFEST``: write a manifest's golden outputs from one framework."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pytest_mlscope.cli.common import EXIT_OK, shown_path


def register(commands: argparse._SubParsersAction) -> None:
    golden = commands.add_parser(
        "golden", help="write a manifest's golden outputs from one framework (review the diff)"
    )
    golden.add_argument("manifest", metavar="MANIFEST", help="the manifest whose golden to write")
    golden.add_argument(
        "--framework", help="whose outputs become the golden (default: the agreement reference)"
    )
    golden.add_argument(
        "--cache", metavar="DIR", help="artifact cache (default .mlscope/artifacts)"
    )
    golden.set_defaults(handler=cmd_golden)


def cmd_golden(args: argparse.Namespace) -> int:
    from pytest_mlscope.manifest import load_manifest
    from pytest_mlscope.session import MlscopeSession, Settings

    manifest = load_manifest(args.manifest, require_files=False)
    # The model runs in this process: the project's own classes and builders (``module:``,
    # ``builder:``) import from the folder it runs in, as a session's workers import them from
    # its rootdir. A console script's sys.path does not hold the current folder.
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    settings = Settings(
        rootdir=Path.cwd(),
        manifest_paths=[],
        runtime="inprocess",
        cache_dir=Path(args.cache).resolve() if args.cache else None,
    )
    session = MlscopeSession(settings)
    try:
        path = session.write_golden(manifest, args.framework)
    finally:
        session.close()
    framework = args.framework or (
        manifest.accuracy.agreement.reference
        if manifest.accuracy.agreement
        else manifest.framework[0].name
    )
    print(f"wrote {shown_path(path)} ({manifest.name}, outputs of {framework})")
    layers = path.with_name(f"{path.stem}.layers.npz")
    if layers.is_file():
        size = layers.stat().st_size / 1e6
        print(
            f"wrote {shown_path(layers)} ({size:.1f} MB: each layer's output on the first "
            "sample, so a later golden miss names the first layer that changed; keep it beside "
            "the golden file)"
        )
    return EXIT_OK

"""The ``mlscope`` command: check manifests, show this host, read the results database and
name the baseline runs that later runs are compared against.

Everything here reads through the same modules the plugin uses (manifest loader, host facts,
:class:`~pytest_mlscope.store.Store`), so what the command shows is what a test session saw.
SQLAlchemy is imported only by the subcommands that open the database.

Each command group is a module of this package whose ``register(commands)`` adds its
subcommands, each with ``set_defaults(handler=...)``; :mod:`.common` holds what they share.
"""

from __future__ import annotations

import argparse
import os
import sys

from pytest_mlscope.cli import (
    baselines,
    checks,
    golden,
    images,
    init,
    reports,
    runs,
    stacks,
    trace,
    transfer,
)
from pytest_mlscope.cli.common import EXIT_ERROR, EXIT_INVALID, EXIT_OK
from pytest_mlscope.errors import MlscopeError

__all__ = ["EXIT_ERROR", "EXIT_INVALID", "EXIT_OK", "build_parser", "main"]

# In the order `mlscope --help` lists their commands.
GROUPS = (init, checks, runs, baselines, reports, stacks, transfer, trace, golden, images)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlscope",
        description="Check model manifests, read pytest-mlscope's results and set baselines.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``mlscope``; returns the exit status (0 ok, 1 invalid manifests, 2 error)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == ["trace", "diff"]:
        args = trace.diff_parser().parse_args(argv[2:])
    elif argv[:2] == ["trace", "compare"]:
        args = trace.compare_parser().parse_args(argv[2:])
    else:
        args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except MlscopeError as exc:
        print(f"mlscope: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        # `mlscope runs | head`: the reader left; say nothing more (Python's documented recipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK

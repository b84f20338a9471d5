"""``mlscope stacks setup|list``: the venv stacks, for frameworks that cannot share the host's
environment (see :mod:`pytest_mlscope.stacks`)."""

from __future__ import annotations

import argparse

from pytest_mlscope.cli.common import EXIT_OK
from pytest_mlscope.report.terminal import table


def register(commands: argparse._SubParsersAction) -> None:
    stacks_parser = commands.add_parser(
        "stacks", help="venv stacks: frameworks that cannot share the host's environment"
    )
    stack_commands = stacks_parser.add_subparsers(dest="stack_command", required=True)
    stacks_setup = stack_commands.add_parser("setup", help="make a stack's venv (registry access)")
    stacks_setup.add_argument("stacks", metavar="STACK", nargs="*", help="default: all")
    stacks_setup.add_argument("--force", action="store_true", help="make it again")
    stacks_setup.set_defaults(handler=cmd_stacks_setup)
    stack_commands.add_parser("list", help="the venv stacks and their state").set_defaults(
        handler=cmd_stacks_list
    )


def cmd_stacks_setup(args: argparse.Namespace) -> int:
    from pytest_mlscope import stacks

    for name in args.stacks or sorted(stacks.STACKS):
        stack = stacks.get(name)
        print(
            f"{name}: setting up {stacks.location(stack)} ({', '.join(stack.requirements[:2])}, …)"
        )
        stacks.setup(stack, force=args.force)
        print(f"{name}: {stack.framework} {stacks.installed_version(stack)} ready")
    return EXIT_OK


def cmd_stacks_list(args: argparse.Namespace) -> int:
    from pytest_mlscope import stacks

    rows = [
        [name, stacks.installed_version(stack) or "not set up", str(stacks.location(stack)),
         stack.why]
        for name, stack in sorted(stacks.STACKS.items())
    ]  # fmt: skip
    print(table(["stack", "version", "venv", "why a venv of its own"], rows))
    return EXIT_OK

"""``mlscope containers build|list|prune``: the container images of software stacks; the only
subcommands that talk to the Docker daemon (through :mod:`pytest_mlscope.containers`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pytest_mlscope.cli.common import EXIT_ERROR
from pytest_mlscope.report.terminal import table
from pytest_mlscope.vocabulary import DEVICES

RECIPES_HELP = (
    "a folder of stack recipes (<stack>/Dockerfile, base.sh) that adds to or replaces the bundled "
    "ones (default: the project's containers/, in this folder or above it)"
)


def register(commands: argparse._SubParsersAction) -> None:
    containers = commands.add_parser(
        "containers", help="build and list the container images of software stacks"
    )
    container_commands = containers.add_subparsers(
        dest="containers_command", required=True, metavar="ACTION"
    )
    base = container_commands.add_parser(
        "base",
        help="build a base image with no container registry (debootstrap, needs root): the pip "
        "stacks' mlscope/base:bookworm, or with STACK (caffe) that stack's own",
    )
    base.add_argument("stack", nargs="?", metavar="STACK", help="a stack with a base of its own")
    base.add_argument(
        "--tag",
        help="the image's tag (default: mlscope/base:bookworm, or the stack's base: "
        "mlscope/base:bullseye-caffe)",
    )
    base.add_argument("--dir", type=Path, help=RECIPES_HELP)
    base.set_defaults(handler=cmd_containers_base)
    build = container_commands.add_parser(
        "build",
        help="build stack images (the bundled recipes, or the project's containers/<stack>/"
        "Dockerfile); only what changed is rebuilt",
    )
    build.add_argument(
        "stacks", nargs="*", metavar="STACK", help="stacks to build (default: every one)"
    )
    build.add_argument(
        "--base",
        metavar="IMAGE",
        help="base image (default python:X.Y-slim of this Python; mlscope/base:bookworm from "
        "`mlscope containers base` where no registry is reachable; caffe: "
        "mlscope/base:bullseye-caffe from `mlscope containers base caffe`)",
    )
    build.add_argument("--device", choices=DEVICES, default="cpu")
    build.add_argument(
        "--framework-version",
        metavar="VERSION",
        help="the framework release to install (default: the one installed here)",
    )
    build.add_argument("--force", action="store_true", help="rebuild even if the hash matches")
    build.add_argument("--dir", type=Path, help=RECIPES_HELP)
    build.set_defaults(handler=cmd_containers_build)
    listing = container_commands.add_parser("list", help="list the stack images built here")
    listing.set_defaults(handler=cmd_containers_list)
    prune = container_commands.add_parser(
        "prune", help="remove stack images that a newer build replaced (no moving tag left)"
    )
    prune.add_argument("stacks", nargs="*", metavar="STACK", help="only these stacks")
    prune.add_argument("--dry-run", action="store_true", help="list them, remove nothing")
    prune.set_defaults(handler=cmd_containers_prune)


def cmd_containers_base(args: argparse.Namespace) -> int:
    from pytest_mlscope import containers

    tag = containers.build_base(args.stack, args.dir, args.tag)
    print(
        f"{tag}  built; stacks build FROM it with --base {tag}"
        if not args.stack
        else f"{tag}  built"
    )
    return 0


def cmd_containers_build(args: argparse.Namespace) -> int:
    from pytest_mlscope import containers
    from pytest_mlscope.vocabulary import FRAMEWORKS

    folder = args.dir
    chosen = args.stacks
    if not chosen:  # every framework stack; a project's other images are not ours to build
        found = containers.stacks(folder)
        chosen = [stack for stack in found if stack in FRAMEWORKS]
        others = [stack for stack in found if stack not in FRAMEWORKS]
        if others:
            print(f"not a framework stack, not built unless named: {', '.join(others)}")
    if args.framework_version and len(chosen) != 1:
        raise containers.ContainerError("--framework-version needs exactly one STACK")
    docker = containers.client()
    failed = []
    for stack in chosen:
        try:
            made = containers.plan(
                stack,
                folder,
                device=args.device,
                # A stack whose framework is a Debian package (Caffe) has a base of its own; a
                # --base for every stack means the pip stacks' one.
                base_image=None
                if stack in containers.SYSTEM_STACKS and len(chosen) > 1
                else args.base,
                framework_version=args.framework_version,
                docker=docker,
            )
            built = containers.build(made, docker, force=args.force, log=print)
        except containers.ContainerError as exc:
            if len(chosen) == 1:
                raise
            print(f"mlscope: {stack}: {exc}", file=sys.stderr)
            failed.append(stack)
            continue
        what = "built" if built.rebuilt else "up to date"
        print(
            f"{made.tag}  {what} in {built.seconds:.1f} s, {built.size_mb:.0f} MB "
            f"({stack} {made.framework_version}, Python {made.python}, FROM {made.base_image}); "
            f"also {', '.join(made.aliases)}"
        )
    if failed:
        print(f"mlscope: not built: {', '.join(failed)}", file=sys.stderr)
        return EXIT_ERROR
    return 0


def cmd_containers_prune(args: argparse.Namespace) -> int:
    from pytest_mlscope import containers

    freed, kept = 0.0, []
    for name, size, why in containers.prune(
        containers.client(), args.stacks or None, dry_run=args.dry_run
    ):
        if args.dry_run:
            print(f"would remove {name} ({size:.0f} MB)")
        elif why is not None:
            kept.append(f"{name}: {why}")
        else:
            freed += size
            print(f"removed {name} ({size:.0f} MB)")
    for line in kept:
        print(f"mlscope: kept {line}", file=sys.stderr)
    if not args.dry_run:
        print(f"freed {freed:.0f} MB (layers shared with kept images stay)")
    return EXIT_ERROR if kept else 0


def cmd_containers_list(args: argparse.Namespace) -> int:
    from pytest_mlscope import containers

    rows = []
    for image in containers.images(containers.client()):
        labels = image.labels or {}
        label = containers.LABEL
        rows.append(
            [
                ", ".join(image.tags) or "(untagged)",
                labels.get(f"{label}.stack", "?"),
                labels.get(f"{label}.framework-version", "?"),
                labels.get(f"{label}.device", "?"),
                labels.get(f"{label}.base-image", "?"),
                image.short_id.removeprefix("sha256:"),
                image.attrs.get("Created", "")[:19].replace("T", " "),
                f"{image.attrs.get('Size', 0) / 1e6:.0f} MB",
            ]
        )
    if not rows:
        print("no stack images here: build them with `mlscope containers build`")
        return 0
    header = ["tags", "stack", "version", "device", "base", "id", "created", "size"]
    print(table(header, rows, right={7}))
    return 0

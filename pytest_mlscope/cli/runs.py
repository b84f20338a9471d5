"""``mlscope runs`` and ``mlscope show``: list the recorded runs, and show one run's results."""

from __future__ import annotations

import argparse

from pytest_mlscope.cli.common import (
    DB_HELP,
    EXIT_OK,
    counts_text,
    local_time,
    open_store,
    positive_int,
    print_run,
    stored_run,
)
from pytest_mlscope.report.terminal import table


def register(commands: argparse._SubParsersAction) -> None:
    runs = commands.add_parser("runs", help="list recorded runs, newest first")
    runs.add_argument("--db", metavar="LOCATION", help=DB_HELP)
    runs.add_argument(
        "--limit", type=positive_int, default=20, metavar="N", help="runs to list (default 20)"
    )
    runs.set_defaults(handler=cmd_runs)

    show = commands.add_parser("show", help="show one run's results")
    show.add_argument("run", metavar="RUN", help="a run id or a unique prefix of one")
    show.add_argument("--db", metavar="LOCATION", help=DB_HELP)
    show.set_defaults(handler=cmd_show)


def cmd_runs(args: argparse.Namespace) -> int:
    with open_store(args.db) as store:
        runs = store.runs(limit=args.limit)
        if not runs:
            print(f"no runs in {store.url}")
            return EXIT_OK
    rows = [
        [
            run.id[:12],
            local_time(run.started_at),
            run.status,
            (run.git_commit or "-")[:10],
            run.git_branch or "-",
            run.hostname or "-",
            counts_text(run.counts),
        ]
        for run in runs
    ]
    header = ["id", "started", "status", "commit", "branch", "host", "results"]
    print(table(header, rows))
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    with open_store(args.db) as store:
        shown = stored_run(store, args.run)
    print_run(*shown)
    return EXIT_OK

"""Services the tests need (a Docker daemon, a PostgreSQL server): skip on a laptop without them,
fail under CI=true, where `.ci/run` starts them and a missing one is a broken CI machine."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest


def requires_ci(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: this test must run)")
    pytest.skip(reason)


# A PostgreSQL server for the shared store, as an SQLAlchemy URL to a database whose role may
# create databases (.ci/run starts one on 127.0.0.1 and sets this).
POSTGRES = os.environ.get("MLSCOPE_TEST_POSTGRES")


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards; its URL."""
    if not POSTGRES:
        requires_ci("no PostgreSQL server: set MLSCOPE_TEST_POSTGRES to an SQLAlchemy URL")
    import uuid

    import sqlalchemy as sa

    name = f"mlscope_test_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(POSTGRES, isolation_level="AUTOCOMMIT")  # type: ignore[arg-type]
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.make_url(POSTGRES).set(database=name).render_as_string(hide_password=False)  # type: ignore[arg-type]
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

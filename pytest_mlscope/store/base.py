"""What every part of :class:`~pytest_mlscope.store.Store` shares: its error, and the base class
its mixins build on, which declares the engine and the methods one concern calls of another."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from pytest_mlscope.errors import StoreError  # noqa: F401 (the store's modules import it here)

if TYPE_CHECKING:
    from pytest_mlscope.store.records import RunRecord


class _StoreBase:
    """The state a :class:`~pytest_mlscope.store.Store` opens with, which every mixin uses.

    Each mixin keeps one concern (runs, history, baselines, artifacts, copying); the methods
    declared here are those a concern calls of another, defined by the mixin that owns them.
    """

    url: str
    _engine: sa.Engine

    if TYPE_CHECKING:

        def get_run(self, run_id_or_prefix: str) -> RunRecord: ...

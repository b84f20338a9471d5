"""Values as every backend stores them: JSON without NaN, text without NUL, datetimes in UTC
(written aware, read back aware even from SQLite, which keeps no offset)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _json_dumps(value: Any) -> str:
    """JSON that every backend accepts: PostgreSQL's json type refuses NaN and Infinity (a
    one-sample summary has a NaN spread), so they are written as strings, which the protocol's
    float fields read back as the same values. Most documents hold none: they are written
    as they are, and only the rest walked (raw samples run to thousands of numbers)."""
    try:
        return _JSON_ENCODER.encode(value)
    except ValueError:
        return _JSON_ENCODER.encode(_finite(value))


# Built once: json.dumps with an option builds a new encoder for every document.
_JSON_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


def _text(value: str | None, limit: int | None = None) -> str | None:
    """Text every backend stores: PostgreSQL refuses NUL characters outright, and values past
    a column's length (SQLite would keep them; the item id, in full, is in a text column)."""
    if value is None:
        return None
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    return value[:limit] if limit is not None else value


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    # SQLite keeps no offset: values are written in UTC and come back naive.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _stamp(value: datetime | None) -> datetime:
    """A NOT NULL time column's value, made aware (``_aware``)."""
    aware = _aware(value)
    assert aware is not None
    return aware

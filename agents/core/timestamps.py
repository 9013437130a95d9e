"""One timestamp type for every answer, so clients that check `format: date-time` accept what we send.

The system tables store UTC without a zone, and the code compares naive UTC datetimes throughout. At the
boundary a `UtcDateTime` reads any ISO 8601 string or datetime (naive means UTC, an offset is converted) and
writes RFC 3339 in UTC with a `Z`, which JSON Schema's `date-time` format requires.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema


def as_utc(value: dt.datetime) -> dt.datetime:
    """The same instant as a naive UTC datetime: naive values are already UTC, aware ones are converted."""
    if value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def parse_utc(value: str) -> dt.datetime:
    """An ISO 8601 date or timestamp as a naive UTC datetime; `Z` and offsets accepted, no zone means UTC."""
    return as_utc(dt.datetime.fromisoformat(value.strip()))


def rfc3339(value: dt.datetime) -> str:
    """RFC 3339 in UTC with `Z`, e.g. 2026-10-01T00:00:00Z (fractions kept when present)."""
    return as_utc(value).isoformat() + "Z"


def _coerce(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return parse_utc(value)
        except ValueError:
            return value  # let pydantic say what is wrong
    if isinstance(value, dt.datetime):
        return as_utc(value)
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time())
    return value


UtcDateTime = Annotated[
    dt.datetime,
    BeforeValidator(_coerce),
    PlainSerializer(rfc3339, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
"""A UTC instant: held naive in Python as the tables store it, written RFC 3339 with `Z` in every answer."""

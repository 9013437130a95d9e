"""The SystemTables protocol: what every engine that can answer system-table SQL must offer."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import uuid
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field, field_validator

from insight_mcp.agents.core.timestamps import UtcDateTime, as_utc, rfc3339
from insight_mcp.agents.untrusted import clean_text


class BackendError(RuntimeError):
    """The engine could not answer; the message says what a person can do about it."""


class TransientBackendError(BackendError):
    """The engine is briefly unavailable (a lock held by a writer, a warehouse starting): worth trying again."""


class QueryTimeout(BackendError):
    """The statement ran past its time limit and was interrupted."""


class Statement(BaseModel):
    """One read statement in the Databricks dialect, optionally pre-translated for DuckDB, with named parameters."""

    databricks_sql: str
    duckdb_sql: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _naive_utc(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Aware datetimes as the naive UTC the tables hold: bound aware, DuckDB compares every row as TIMESTAMPTZ and
        cannot prune by time (a 30-day scan of 10 M events took three times as long)."""
        if not any(isinstance(v, dt.datetime) and v.tzinfo is not None for v in params.values()):
            return params
        return {k: as_utc(v) if isinstance(v, dt.datetime) else v for k, v in params.items()}


class ColumnInfo(BaseModel):
    name: str
    type: str = Field(description="The Databricks type name, e.g. string, bigint, map<string,string>, struct<a:int>.")


class QueryResult(BaseModel):
    """Rows as data: JSON-safe values, cleaned text, and whether caps cut the answer short."""

    columns: list[ColumnInfo]
    rows: list[list[Any]]
    row_count: int
    truncated: bool = False
    truncation_reason: str | None = None
    elapsed_ms: float

    def records(self) -> list[dict[str, Any]]:
        """Rows as dictionaries keyed by column name."""
        names = [c.name for c in self.columns]
        return [dict(zip(names, row, strict=True)) for row in self.rows]


class TableStats(BaseModel):
    name: str
    rows: int
    present: bool = Field(True, description="False when this engine does not hold the table, or may not read it.")
    note: str | None = Field(None, description="Why the table cannot be read, when it is there but denied.")
    first_event: UtcDateTime | None = None
    last_event: UtcDateTime | None = None


@runtime_checkable
class SystemTables(Protocol):
    """An engine holding the Databricks system tables: the embedded DuckDB file or a SQL warehouse."""

    kind: str

    async def execute(
        self, statement: Statement, *, max_rows: int, max_chars: int, timeout_seconds: float
    ) -> QueryResult:
        """Run one read statement; interrupt it at the timeout; cap rows and characters."""
        ...

    async def table_stats(self, tables: list[str]) -> list[TableStats]:
        """Row counts and event-time ranges, for the tables this engine holds."""
        ...

    async def close(self) -> None: ...


def json_value(value: Any) -> Any:
    """Make one engine value JSON-safe, cleaning any text it carries."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dt.datetime):
        return rfc3339(value)  # TIMESTAMP is stored as UTC: say so, as RFC 3339 requires
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {clean_text(str(k)): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    return clean_text(str(value))

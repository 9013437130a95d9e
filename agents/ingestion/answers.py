"""The system-tables server's answer models: here, light to import, so the server and the typed client share them."""

from typing import Any

from pydantic import BaseModel, Field

from insight_mcp.agents.ingestion.backend import ColumnInfo
from insight_mcp.agents.ingestion.explore import TableSummary


class TableList(BaseModel):
    tables: list[TableSummary]


class QueryAnswer(BaseModel):
    columns: list[ColumnInfo]
    rows: list[list[Any]]
    row_count: int
    truncated: bool = Field(description="True when the row or character cap cut the answer short.")
    truncation_reason: str | None
    statement_ms: float
    tables: list[str]
    executed_sql: str = Field(description="The statement as run, in the Databricks dialect, with its LIMIT.")

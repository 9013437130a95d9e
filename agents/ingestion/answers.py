"""The system-tables server's answer models: here, light to import, so the server and the typed client share them."""

from typing import Annotated, Any

from pydantic import BaseModel, Field, WithJsonSchema

from insight_mcp.agents.ingestion.backend import ColumnInfo
from insight_mcp.agents.ingestion.explore import TableSummary


class TableList(BaseModel):
    tables: list[TableSummary]


# Each row is an array of JSON values in column order. Published as a bare array: a client validating every cell
# against an empty schema spent longer on a 1,000-row answer than the query took.
Rows = Annotated[list[list[Any]], WithJsonSchema({
    "type": "array", "description": "One array per row, its values in the order of `columns` (JSON values: text, "
                                    "numbers, booleans, null, and objects or arrays for maps, structs and arrays)."})]


# The columns' schema written out in place, each an object with a name and a type: a client resolving a `$ref` and
# walking the properties of every column of every answer spent more on it than on the rest of a one-row answer.
Columns = Annotated[list[ColumnInfo], WithJsonSchema({
    "type": "array", "items": {"type": "object", "required": ["name", "type"]},
    "description": "The answer's columns, in order: each {name, type}, the type a Databricks type name "
                   "(string, bigint, timestamp, map<string,string>, struct<a:int>, ...)."})]


class QueryAnswer(BaseModel):
    columns: Columns
    rows: Rows
    row_count: int
    truncated: bool = Field(description="True when the row or character cap cut the answer short.")
    truncation_reason: str | None
    statement_ms: float
    tables: list[str]
    executed_sql: str = Field(description="The statement as run, in the Databricks dialect, with its LIMIT.")

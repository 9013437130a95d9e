"""Writing the DuckDB file: creating the tables and inserting the Python-built rows and the labels."""

from __future__ import annotations

from typing import Any

import duckdb
import pyarrow as pa

from insight_mcp.agents.ingestion.catalog import TABLES
from insight_mcp.agents.ingestion.generation.labels import LABELS_DDL, LABELS_TABLE, ScenarioLabel


def _create_tables(con: duckdb.DuckDBPyConnection) -> None:
    for spec in TABLES.values():
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {spec.schema_name}")
        con.execute(spec.create_sql())
    con.execute("CREATE SCHEMA IF NOT EXISTS labels")
    con.execute(LABELS_DDL)


def _insert_records(con: duckdb.DuckDBPyConnection, table: str, records: list[dict[str, Any]]) -> None:
    if not records:
        return
    schema = con.sql(f"SELECT * FROM {table} LIMIT 0").to_arrow_table().schema
    con.register("_g_records", pa.Table.from_pylist(records, schema=schema))
    try:
        con.execute(f"INSERT INTO {table} SELECT * FROM _g_records")
    finally:
        con.unregister("_g_records")


def _insert_labels(con: duckdb.DuckDBPyConnection, labels: list[ScenarioLabel]) -> None:
    if not labels:  # an estate without attacks: DuckDB refuses an executemany of nothing
        return
    con.executemany(
        f"INSERT INTO {LABELS_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (lb.scenario_id, lb.category, lb.principal, lb.workspace_id, lb.first_seen, lb.last_seen,
             lb.description)
            for lb in labels
        ],
    )

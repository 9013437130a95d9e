"""Databricks SQL in, DuckDB SQL out: the one place that knows how the two dialects and namespaces differ."""

from __future__ import annotations

import logging

import sqlglot
from sqlglot import exp

logging.getLogger("sqlglot").setLevel(logging.ERROR)

CATALOG = "system"  # the Databricks catalog every system table lives in


def local_table_name(schema_name: str, table_name: str) -> tuple[str, str]:
    """Where `system.<schema>.<table>` lives in the embedded workspace: same schema and table, default catalog."""
    return schema_name.lower(), table_name.lower()


def to_duckdb(sql: str) -> str:
    """Transpile trusted Databricks SQL (our own tools and rules) for the embedded engine."""
    from insight_mcp.agents.sql.guard import rename_catalog

    tree = sqlglot.parse_one(sql, read="databricks")
    return rename_catalog(tree).sql("duckdb")

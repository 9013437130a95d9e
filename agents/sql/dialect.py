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


def compat_transforms(tree: exp.Expression) -> exp.Expression:
    """Make DuckDB answer the way Spark does where sqlglot's translation differs."""
    tree = tree.copy()
    for node in list(tree.find_all(exp.DayOfWeek)):  # Spark: 1 = Sunday; DuckDB: 0 = Sunday
        node.replace(exp.paren(exp.Add(this=node.copy(), expression=exp.Literal.number(1))))
    for node in list(tree.find_all(exp.TsOrDsAdd, exp.DateAdd, exp.DateSub)):  # Spark's date_add/date_sub: DATE
        unit = node.args.get("unit")
        if not isinstance(node.parent, exp.Cast) and (unit is None or unit.name.upper() == "DAY"):
            node.replace(exp.cast(node.copy(), "DATE"))
    for node in list(tree.find_all(exp.ArrayAgg, exp.ArrayUniqueAgg)):  # Spark: [] over only NULLs; DuckDB: NULL
        if not isinstance(node.parent, exp.Coalesce) and not isinstance(node.parent, exp.Window):
            node.replace(exp.Coalesce(this=node.copy(), expressions=[exp.Array(expressions=[])]))
    return tree


def to_duckdb(sql: str) -> str:
    """Transpile trusted Databricks SQL (our own tools and rules) for the embedded engine."""
    from insight_mcp.agents.sql.guard import rename_catalog

    tree = sqlglot.parse_one(sql, read="databricks")
    return compat_transforms(rename_catalog(tree)).sql("duckdb")

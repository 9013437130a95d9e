"""Databricks SQL in, DuckDB SQL out: the one place that knows how the two dialects and namespaces differ."""

from __future__ import annotations

import functools
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
    for node in list(tree.find_all(exp.Quantile)):  # Spark's percentile() interpolates; DuckDB's quantile() does not
        node.replace(exp.Anonymous(this="quantile_cont", expressions=[node.this.copy(),
                                                                      node.args["quantile"].copy()]))
    for node in list(tree.find_all(exp.ArrayAgg, exp.ArrayUniqueAgg)):  # Spark: [] over only NULLs; DuckDB: NULL
        if not isinstance(node.parent, exp.Coalesce) and not isinstance(node.parent, exp.Window):
            node.replace(exp.Coalesce(this=node.copy(), expressions=[exp.Array(expressions=[])]))
    return tree


def to_duckdb(sql: str) -> str:
    """Transpile trusted Databricks SQL (our own tools and rules) for the embedded engine."""
    from insight_mcp.agents.sql.guard import rename_catalog

    tree = sqlglot.parse_one(sql, read="databricks")
    return compat_transforms(rename_catalog(tree)).sql("duckdb")


_T = exp.DataType.Type
# Engine types with no Databricks type of the same name: what Databricks would hold the values as.
_LEAF_NAMES: dict[exp.DataType.Type, str] = {
    _T.TEXT: "string", _T.VARCHAR: "string", _T.CHAR: "string", _T.NCHAR: "string", _T.NVARCHAR: "string",
    _T.UUID: "string", _T.JSON: "string", _T.ENUM: "string", _T.TIME: "string", _T.TIMETZ: "string",
    _T.BIT: "string", _T.UNION: "string",
    _T.TIMESTAMP: "timestamp", _T.TIMESTAMPTZ: "timestamp", _T.TIMESTAMPLTZ: "timestamp",
    _T.TIMESTAMPNTZ: "timestamp", _T.TIMESTAMP_S: "timestamp", _T.TIMESTAMP_MS: "timestamp",
    _T.TIMESTAMP_NS: "timestamp", _T.DATETIME: "timestamp",
    _T.TINYINT: "tinyint", _T.UTINYINT: "smallint", _T.SMALLINT: "smallint", _T.USMALLINT: "int",
    _T.INT: "int", _T.UINT: "bigint", _T.BIGINT: "bigint", _T.UBIGINT: "decimal(20,0)",
    _T.INT128: "decimal(38,0)", _T.UINT128: "decimal(38,0)", _T.BIGDECIMAL: "decimal(38,0)",
    _T.FLOAT: "float", _T.DOUBLE: "double", _T.BOOLEAN: "boolean", _T.DATE: "date",
    _T.VARBINARY: "binary", _T.BINARY: "binary", _T.BLOB: "binary", _T.INTERVAL: "interval", _T.NULL: "void",
}


@functools.lru_cache(maxsize=1024)
def databricks_type(engine_type: str, *, dialect: str = "duckdb") -> str:
    """A column type as Databricks writes it (`map<string,string>`, `struct<a:string>`), whatever engine said it."""
    text = engine_type.strip()
    if text.strip('"').upper() == "NULL":
        return "void"
    try:
        built = exp.DataType.build(text, dialect=dialect)
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError, ValueError):
        return text.lower()
    return _render_type(built)


def _render_type(node: exp.DataType) -> str:
    kind = node.this
    children = [c for c in node.expressions if isinstance(c, (exp.DataType, exp.ColumnDef))]
    if kind == _T.ARRAY and children:
        return f"array<{_render_type(_as_type(children[0]))}>"
    if kind == _T.MAP and len(children) == 2:
        return f"map<{_render_type(_as_type(children[0]))},{_render_type(_as_type(children[1]))}>"
    if kind == _T.STRUCT:
        fields = []
        for child in children:
            if isinstance(child, exp.ColumnDef):
                name = child.name
                shown = name if name.replace("_", "a").isalnum() and not name[:1].isdigit() else f"`{name}`"
                fields.append(f"{shown}:{_render_type(_as_type(child.args['kind']))}")
            else:
                fields.append(_render_type(child))
        return f"struct<{','.join(fields)}>"
    if kind == _T.DECIMAL:
        sizes = [p.sql() for p in node.expressions if isinstance(p, exp.DataTypeParam)]
        return f"decimal({','.join(sizes)})" if sizes else "decimal(10,0)"
    if kind in _LEAF_NAMES:
        return _LEAF_NAMES[kind]
    return node.sql("databricks").lower().replace(" ", "")


def _as_type(node: exp.Expression) -> exp.DataType:
    return node if isinstance(node, exp.DataType) else exp.DataType.build(node.sql())

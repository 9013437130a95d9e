"""Databricks SQL in, DuckDB SQL out: the one place that knows how the two dialects and namespaces differ."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.schema import MappingSchema

logging.getLogger("sqlglot").setLevel(logging.ERROR)

CATALOG = "system"  # the Databricks catalog every system table lives in


def local_table_name(schema_name: str, table_name: str) -> tuple[str, str]:
    """Where `system.<schema>.<table>` lives in the embedded workspace: same schema and table, default catalog."""
    return schema_name.lower(), table_name.lower()


def rename_tables(tree: exp.Expression, target: Callable[[str, str], exp.Table]) -> exp.Expression:
    """Point every `system.<schema>.<table>` where an engine keeps it (`target` gets schema and table, lower case);
    the reference keeps everything else it has: alias, joins, time travel."""

    def swap(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table) and node.catalog.lower() == CATALOG and isinstance(node.this, exp.Identifier):
            where = target(node.db.lower(), node.name.lower())
            new = node.copy()
            for key in ("catalog", "db", "this"):
                new.set(key, where.args.get(key))
            return new
        return node

    return tree.transform(swap, copy=True)


def rename_catalog(tree: exp.Expression) -> exp.Expression:
    """Point `system.<schema>.<table>` at the workspace file's `<schema>.<table>`: DuckDB reserves `system`."""
    return rename_tables(tree, lambda schema, table: exp.table_(*reversed(local_table_name(schema, table))))


@dataclass(frozen=True, eq=False)
class ColumnTypes:
    """Every table's column types as the engine holds them: what the type-dependent transforms look up.

    Compared and hashed by identity: the caches keyed on it (the guard's, `to_duckdb`'s) are hit on every call, and
    the catalog's types are one object.
    """

    tables: tuple[tuple[tuple[str, str, str], tuple[tuple[str, str], ...]], ...]  # ((catalog, db, table), columns)
    default_catalog: str  # the catalog of a table named `<db>.<table>`


@functools.lru_cache(maxsize=8)
def _mapping(types: ColumnTypes) -> MappingSchema:
    nested: dict[str, dict[str, dict[str, dict[str, str]]]] = {}
    for (catalog, db, table), columns in types.tables:
        nested.setdefault(catalog, {}).setdefault(db, {})[table] = dict(columns)
    return MappingSchema(nested, dialect="duckdb", normalize=False)


# A round over these keeps its value and becomes Spark's where DuckDB's differs. sqlglot mistypes some mixed decimal
# arithmetic (`d / 2` is a DOUBLE in DuckDB), so DECIMAL counts too: the rewrite returns a DECIMAL's value unchanged.
_FLOATING = {exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT}
_NON_INTEGER = _FLOATING | {exp.DataType.Type.DECIMAL, exp.DataType.Type.BIGDECIMAL}
_ROUND_MARK = "insight_round"
_REWRITTEN = "insight_half_up"
_MAX_NESTED = 3  # the rewrite names its argument twice: rounds nested deeper keep DuckDB's round, not 2^depth copies
# Spark rounds the decimal text of a DOUBLE (Double.toString) half up. DuckDB writes the shortest text, at most 17
# significant digits; 21 decimals hold it exactly down to 1e-4 and leave 17 integer digits. Where the text does not
# fit, a DOUBLE is NaN, infinite or 1e17 and more, a whole number: it is its own round (DuckDB's round would change
# it). A DECIMAL that does not fit gets DuckDB's round, which is exact on decimals.
_EXACT = "DECIMAL(38, 21)"


def _positive_digits(node: exp.Round) -> bool:
    digits = node.args.get("decimals")
    return isinstance(digits, exp.Literal) and digits.is_int and int(digits.name) > 0


def _typed_rounds(tree: exp.Expression, types: ColumnTypes) -> dict[int, bool]:
    """For each round whose argument sqlglot types as a non-integer number, whether it is a floating-point one."""
    from sqlglot.optimizer.annotate_types import annotate_types
    from sqlglot.optimizer.qualify import qualify

    schema = _mapping(types)
    try:
        qualified = qualify(tree.copy(), schema=schema, catalog=types.default_catalog, dialect="duckdb",
                            validate_qualify_columns=False, quote_identifiers=False, identify=False)
        typed = annotate_types(qualified, schema=schema, dialect="duckdb")
    except Exception:  # sqlglot's optimizer raises many kinds; untyped, DuckDB's round stands
        return {}
    return {node.meta[_ROUND_MARK]: node.this.type.this in _FLOATING for node in typed.find_all(exp.Round)
            if _ROUND_MARK in node.meta and node.this.type is not None and node.this.type.this in _NON_INTEGER}


def half_up_rounds(tree: exp.Expression, types: ColumnTypes | None) -> exp.Expression:
    """Round a DOUBLE as Spark does, half up on its decimal text: DuckDB 2.0.1 rounds the binary value instead.

    `round(CAST(20637.35 AS DOUBLE), 1)` is 20637.4 on Databricks and 20637.3 on DuckDB's own round. Only a round
    with positive literal digits over a non-integer number changes; an integer, or a type sqlglot cannot resolve,
    keeps DuckDB's round. The result type is the engine's (a DECIMAL's precision may widen). Changes the tree in place.
    """
    rounds = [node for node in tree.find_all(exp.Round) if _positive_digits(node)]
    if not rounds or types is None:
        return tree
    for index, node in enumerate(rounds):
        node.meta[_ROUND_MARK] = index
    floating = _typed_rounds(tree, types)
    for index, node in reversed(list(enumerate(rounds))):  # inner rounds first: an outer one copies its argument
        node.meta.pop(_ROUND_MARK, None)
        nested = sum(1 for inner in node.this.find_all(exp.Coalesce) if inner.meta.get(_REWRITTEN))
        if index in floating and nested < 2 ** (_MAX_NESTED - 1):
            text = exp.cast(node.this.copy(), "VARCHAR")
            exact = exp.Round(this=exp.TryCast(this=text, to=exp.DataType.build(_EXACT)),
                              decimals=node.args["decimals"].copy())
            rewritten = exp.Coalesce(this=exact, expressions=[node.this.copy() if floating[index] else node.copy()])
            rewritten.meta[_REWRITTEN] = True
            node.replace(rewritten)
    return tree


def compat_transforms(tree: exp.Expression, types: ColumnTypes | None = None) -> exp.Expression:
    """Make DuckDB answer the way Spark does where sqlglot's translation differs; `types` enables the typed ones."""
    tree = half_up_rounds(tree.copy(), types)
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


@functools.lru_cache(maxsize=256)
def to_duckdb(sql: str, types: ColumnTypes | None = None) -> str:
    """Transpile trusted Databricks SQL (our own tools and rules) for the embedded engine, once per text."""
    tree = sqlglot.parse_one(sql, read="databricks")
    return compat_transforms(rename_catalog(tree), types).sql("duckdb")


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

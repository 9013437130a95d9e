"""The parser layer of run_query's safety: only one read-only SELECT over allowlisted system tables gets through."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable

import sqlglot
from pydantic import BaseModel, ConfigDict
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from insight_mcp.agents.sql.dialect import CATALOG, ColumnTypes, compat_transforms, rename_catalog
from insight_mcp.agents.sql.generators import check_generators
from insight_mcp.agents.sql.refused import ONLY_READS, QueryRefused

__all__ = ["GuardedQuery", "QueryRefused", "check_functions", "check_generators", "check_shape", "check_tables",
           "guard_query", "rename_catalog"]

logging.getLogger("sqlglot").setLevel(logging.ERROR)

# Statement and clause types that change state, reach outside the database, or switch context.
_FORBIDDEN_NODES: tuple[type[exp.Expression], ...] = tuple(
    t
    for t in (
        getattr(exp, name, None)
        for name in (
            "Insert", "Update", "Delete", "Merge", "Create", "Drop", "Alter", "AlterColumn", "Command",
            "Pragma", "Set", "SetItem", "Use", "Copy", "Attach", "Detach", "Install", "Load", "Grant",
            "Revoke", "Transaction", "Commit", "Rollback", "Cache", "Uncache", "Refresh", "Describe",
            "Show", "Into", "LoadData", "Analyze", "TruncateTable", "Export", "Execute", "Summarize",
        )
    )
    if t is not None
)

# Functions that read files, URLs, the environment, settings or engine metadata, or run other SQL.
_FORBIDDEN_FUNCTIONS = frozenset(
    {
        "read_files", "read_csv", "read_csv_auto", "read_parquet", "parquet_scan", "read_json", "read_json_auto",
        "read_json_objects", "read_ndjson", "read_ndjson_auto", "read_ndjson_objects", "read_text", "read_blob",
        "read_xlsx", "read_kafka", "read_pubsub", "read_kinesis", "read_statestore", "read_pulsar",
        "read_state_metadata",
        "csv_scan", "json_scan", "glob", "getenv", "current_setting", "query", "query_table", "sql_auto_complete",
        "which_secret", "load_aws_credentials", "http_request", "ai_query", "ai_gen", "reflect", "java_method",
        "secret", "try_secret", "session_user_secret", "iceberg_scan", "delta_scan", "sqlite_scan", "postgres_scan",
        "mysql_scan", "range_files", "list_files", "cloud_files", "shell", "system", "exec", "eval", "url_decode_file",
        "dbutils", "from_file", "input_file_name", "input_file_block_start", "input_file_block_length",
        "sleep", "sleep_ms", "pg_sleep", "benchmark", "repeat_row",
    }
)
_FORBIDDEN_PREFIXES = ("duckdb_", "pragma_", "read_", "sqlite_", "postgres_", "mysql_", "pg_", "icu_", "parquet_")

# Why a forbidden function is refused, by name or prefix; the first match wins.
_FUNCTION_REASONS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("read_", "parquet_", "csv_scan", "json_scan", "glob", "iceberg_scan", "delta_scan", "sqlite_", "postgres_",
      "mysql_", "range_files", "list_files", "cloud_files", "from_file", "url_decode_file", "input_file_"),
     "it reads files or URLs"),
    (("getenv", "current_setting", "which_secret", "secret", "try_secret", "session_user_secret",
      "load_aws_credentials", "duckdb_", "pragma_", "icu_", "pg_"),
     "it reads the environment, settings, secrets or engine internals"),
    (("http_request", "ai_query", "ai_gen", "reflect", "java_method", "shell", "system", "exec", "eval", "dbutils"),
     "it calls out of the query: a URL, a model, Java or a shell"),
    (("query", "query_table", "sql_auto_complete"), "it runs other SQL"),
    (("sleep", "sleep_ms", "benchmark", "repeat_row"), "it only spends time or multiplies rows"),
)

# What each statement kind does, by its first word: why it is refused, in the refusal.
_STATEMENTS: dict[str, str] = {
    "INSTALL": "installs an engine extension", "FORCE": "installs an engine extension",
    "LOAD": "loads an engine extension", "ATTACH": "opens another database file", "DETACH": "closes a database",
    "COPY": "reads or writes files", "EXPORT": "writes the database to files", "IMPORT": "reads a database from files",
    "PRAGMA": "reads or changes engine settings", "SET": "changes a setting", "RESET": "changes a setting",
    "CALL": "runs a table function or procedure", "CREATE": "creates objects", "DROP": "drops objects",
    "ALTER": "changes a table", "INSERT": "writes rows", "UPDATE": "changes rows", "DELETE": "deletes rows",
    "MERGE": "changes rows", "TRUNCATE": "deletes rows", "GRANT": "changes permissions",
    "REVOKE": "changes permissions", "USE": "switches the current catalog or schema",
    "BEGIN": "controls transactions", "START": "controls transactions", "COMMIT": "controls transactions",
    "ROLLBACK": "controls transactions", "ABORT": "controls transactions", "CHECKPOINT": "writes the database file",
    "VACUUM": "rewrites tables", "OPTIMIZE": "rewrites tables", "ANALYZE": "computes and stores statistics",
    "CACHE": "manages the cache", "UNCACHE": "manages the cache", "CLEAR": "manages the cache",
    "REFRESH": "manages the cache", "ADD": "adds files or jars to the session", "LIST": "lists files",
    "SUMMARIZE": "profiles a table outside the query's checks", "DESCRIBE": "describes objects",
    "DESC": "describes objects", "SHOW": "lists objects", "EXPLAIN": "shows query plans",
    "DECLARE": "declares session variables", "EXECUTE": "runs other SQL", "PREPARE": "prepares other SQL",
    "DEALLOCATE": "drops prepared SQL", "MSCK": "changes table metadata", "REPAIR": "changes table metadata",
    "COMMENT": "changes table metadata", "UNLOAD": "writes files",
}
_SECOND_WORDS = frozenset({"DATABASE", "TABLE", "VIEW", "FUNCTION", "MACRO", "SECRET", "SCHEMA", "INTO", "OVERWRITE",
                           "IMMEDIATE", "JAR", "FILE", "VARIABLE", "TEMP", "TEMPORARY", "INSTALL", "EXTENSIONS"})

# Table-valued functions that only expand values already in the row; they cannot reach files.
_SAFE_TABLE_FUNCTIONS = frozenset({"unnest", "explode", "explode_outer", "posexplode", "posexplode_outer", "inline",
                                   "inline_outer", "range", "generate_series", "sequence"})


class GuardedQuery(BaseModel):
    """A statement that passed the guard, in both dialects, with the row cap applied; immutable, so that the guard's
    cache hands the same one to every caller that asks the same question."""

    model_config = ConfigDict(frozen=True)

    databricks_sql: str
    duckdb_sql: str
    tables: tuple[str, ...]
    limit: int


def _function_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    if isinstance(node, exp.Func):
        return node.sql_name().lower()
    return ""


def _function_reason(name: str) -> str:
    for names, reason in _FUNCTION_REASONS:
        if name in names or name.startswith(tuple(n for n in names if n.endswith("_"))):
            return reason
    return "it reaches outside the system tables"


def check_functions(tree: exp.Expression) -> None:
    """Refuse functions that read files, URLs, settings or the environment, call out, or run other SQL."""
    for node in tree.find_all(exp.Func):
        name = _function_name(node)
        names = {name, type(node).__name__.lower()}
        for candidate in names:
            if candidate in _FORBIDDEN_FUNCTIONS or candidate.startswith(_FORBIDDEN_PREFIXES):
                raise QueryRefused(
                    "forbidden_function",
                    f"{candidate}() is not allowed: {_function_reason(candidate)}; {ONLY_READS}",
                )


def _visible_ctes(table: exp.Table) -> set[str]:
    """CTE names in scope where `table` appears: a CTE defined in a subquery names nothing outside it."""
    names: set[str] = set()
    child: exp.Expression = table
    node = table.parent
    while node is not None:
        if isinstance(node, exp.With):
            ctes = node.expressions
            # Inside a CTE's body only the earlier CTEs are visible (and itself, when recursive).
            at = next((i for i, cte in enumerate(ctes) if cte is child), len(ctes))
            visible = ctes[: at + 1] if node.args.get("recursive") else ctes[:at]
            names |= {cte.alias_or_name.lower() for cte in visible}
        else:
            with_ = node.args.get("with_") or node.args.get("with")
            if isinstance(with_, exp.With) and with_ is not child:
                names |= {cte.alias_or_name.lower() for cte in with_.expressions}
        child, node = node, node.parent
    return names


def check_tables(tree: exp.Expression, allowed: set[str]) -> list[str]:
    """Refuse any table outside the allowlist, paths posing as tables, and table functions that are not generators."""
    seen: list[str] = []
    for table in tree.find_all(exp.Table):
        target = table.this
        if isinstance(target, exp.Func) or isinstance(table.this, exp.Anonymous):
            name = _function_name(target)
            if name in _SAFE_TABLE_FUNCTIONS:
                continue
            raise QueryRefused(
                "table_function",
                f"table function {name or 'call'}() is not allowed in FROM: only the system.* tables and the "
                "generators range, sequence, explode, posexplode, inline and unnest may be read",
            )
        if isinstance(target, exp.Literal) or (isinstance(target, exp.Identifier) and "/" in target.name):
            raise QueryRefused("path_as_table", "file paths and strings cannot be used as tables")
        if not isinstance(target, exp.Identifier):
            raise QueryRefused("table_function", "only plain system tables may appear in FROM")
        catalog, db, name = table.catalog.lower(), table.db.lower(), table.name.lower()
        if not catalog and not db and name in _visible_ctes(table):
            continue
        if any(ch in name for ch in "/\\:.'\""):
            raise QueryRefused("path_as_table", f"{table.name!r} looks like a path, not a table")
        full = ".".join(p for p in (catalog, db, name) if p)
        if catalog != CATALOG or f"{catalog}.{db}.{name}" not in allowed:
            allowed_list = ", ".join(sorted(allowed))
            raise QueryRefused(
                "table_allowlist",
                f"table {full!r} is not allowed; name tables in full, one of: {allowed_list}",
            )
        seen.append(full)
    return seen


def _apply_limit(tree: exp.Expression, requested: int, cap: int) -> tuple[exp.Expression, int]:
    wanted = max(1, min(requested, cap))
    existing = tree.args.get("limit")
    if isinstance(existing, exp.Limit):
        value = existing.expression
        if not isinstance(value, exp.Literal) or not value.is_int:
            raise QueryRefused("limit", "LIMIT must be a whole number")
        own = int(value.this)
        if own <= wanted:
            # The statement's own LIMIT fits under the cap: run it as written, so an answer it ends
            # is not reported as cut short.
            return tree.limit(own, copy=True), own
    elif existing is not None:
        raise QueryRefused("limit", "use LIMIT n rather than FETCH")
    # Fetch one extra row so the engine can tell a truncated answer from an exact one.
    return tree.limit(wanted + 1, copy=True), wanted


def _hint(kind: str) -> str:
    return " (use list_tables or describe_table)" if kind in {"DESCRIBE", "DESC", "SHOW"} else ""


def refuse_statement_kind(sql: str) -> None:
    """Name the statement from its first words, before parsing: sqlglot reads `INSTALL x` as an alias."""
    try:
        tokens = sqlglot.Dialect.get_or_raise("databricks").tokenize(sql)
    except (TokenError, ParseError):
        return  # the parser says what is wrong
    if not tokens:
        return
    first = tokens[0].text.upper()
    if first not in _STATEMENTS:
        return
    second = tokens[1].text.upper() if len(tokens) > 1 else ""
    label = f"{first} {second}" if second in _SECOND_WORDS else first
    raise QueryRefused("read_only", f"{label} is not allowed: it {_STATEMENTS[first]}{_hint(first)}; {ONLY_READS}")


def check_shape(statements: Iterable[exp.Expression | None]) -> exp.Expression:
    """Exactly one SELECT (or set operation of SELECTs) with nothing that writes or switches context inside."""
    parsed = [s for s in statements if s is not None]
    if len(parsed) != 1:
        raise QueryRefused("single_statement", f"send exactly one statement; got {len(parsed)}")
    tree = parsed[0]
    if not isinstance(tree, (exp.Select, exp.SetOperation)):
        kind = str(tree.this).split()[0].upper() if isinstance(tree, exp.Command) else type(tree).__name__.upper()
        if kind in _STATEMENTS:
            raise QueryRefused("read_only", f"{kind} is not allowed: it {_STATEMENTS[kind]}{_hint(kind)}; {ONLY_READS}")
        raise QueryRefused("read_only", f"{kind} is not a SELECT{_hint(kind)}; {ONLY_READS}")
    for node in tree.walk():
        if isinstance(node, _FORBIDDEN_NODES):
            kind = type(node).__name__.upper()
            raise QueryRefused("read_only", f"{kind} is not allowed inside a query; {ONLY_READS}")
    return tree


def check_recursion(tree: exp.Expression) -> None:
    """Refuse WITH RECURSIVE: its end depends on the data, so one statement can hold a core until the time limit."""
    if any(w.args.get("recursive") for w in tree.find_all(exp.With)):
        raise QueryRefused("recursion", "WITH RECURSIVE is not allowed: a recursive query can run until the time "
                                        "limit; the system tables need no recursion (use joins, window functions, or "
                                        "explode over a bounded sequence)")


def guard_query(
    sql: str, *, allowed_tables: Iterable[str], limit: int, row_cap: int, max_generator_rows: int = 1_000_000,
    types: ColumnTypes | None = None,
) -> GuardedQuery:
    """Parse Databricks SQL, refuse anything but a capped read of allowlisted tables, and transpile it.

    `types` (the tables' column types) lets the DuckDB form round a DOUBLE as Databricks does.
    """
    allowed = frozenset(t.lower() for t in allowed_tables)
    try:
        return _guard_cached(sql, allowed, limit, row_cap, max_generator_rows, types)
    except RecursionError:  # sqlglot parses and walks recursively; a few dozen nested calls exhaust the stack
        raise QueryRefused("parse", "the query nests expressions or subqueries too deeply to check; flatten it with "
                                    "CTEs or fewer nested function calls") from None


@functools.lru_cache(maxsize=512)
def _guard_cached(
    sql: str, allowed_tables: frozenset[str], limit: int, row_cap: int, max_generator_rows: int,
    types: ColumnTypes | None,
) -> GuardedQuery:
    """A pure function of its arguments, so agents that repeat a question skip the parse (refusals are not cached)."""
    if not sql or not sql.strip():
        raise QueryRefused("parse", "the query is empty")
    if "\x00" in sql:
        raise QueryRefused("parse", "the query contains a NUL byte")
    allowed = {t.lower() for t in allowed_tables}
    refuse_statement_kind(sql)
    try:
        statements = sqlglot.parse(sql, read="databricks")
    except (ParseError, TokenError) as exc:
        raise QueryRefused("parse", f"not valid Databricks SQL: {str(exc).splitlines()[0][:300]}") from None
    tree = check_shape(statements)
    check_recursion(tree)
    check_functions(tree)
    tables = check_tables(tree, allowed)
    check_generators(tree, max_rows=max_generator_rows)
    limited, wanted = _apply_limit(tree, limit, row_cap)
    duck_tree = compat_transforms(rename_catalog(limited), types)
    duck_sql = duck_tree.sql("duckdb")
    # Second look at what the transpiler produced: it must still be one plain read.
    try:
        reparsed = sqlglot.parse(duck_sql, read="duckdb")
    except (ParseError, TokenError):
        raise QueryRefused("transpile", "the query could not be translated for the embedded engine") from None
    check_shape(reparsed)
    check_functions(reparsed[0])  # type: ignore[arg-type]
    return GuardedQuery(
        databricks_sql=limited.sql("databricks"), duckdb_sql=duck_sql, tables=tuple(sorted(set(tables))), limit=wanted
    )

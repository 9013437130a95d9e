"""run_query's safety, layer by layer: the parser guard, the locked engine, and the untrusted-text fence.

Hostile statements must be refused by the guard with the right rule, and by the real tool as a clean error.
Legitimate analyst queries in the Databricks dialect must come back with the right answer, checked against
the fixture rows computed independently (in Python, or by a hand-written DuckDB query on the fixture file).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import duckdb
import pytest
import sqlglot
from sqlglot import exp
from workspace_fixture import audit_rows, cluster_rows, query_rows

from insight_mcp.agents.ingestion.backend import QueryTimeout, Statement
from insight_mcp.agents.ingestion.catalog import TABLES
from insight_mcp.agents.ingestion.duckdb_backend import DuckDBSystemTables, open_readonly
from insight_mcp.agents.settings import Settings
from insight_mcp.agents.sql.guard import QueryRefused, guard_query
from insight_mcp.clients.client import ToolCallError, connect_in_process
from insight_mcp.servers.system_tables import build_system_tables_server

AUDIT = audit_rows()
CLUSTERS = cluster_rows()
QUERIES = query_rows()


def _guard(sql: str, *, limit: int = 100) -> Any:
    return guard_query(sql, allowed_tables=TABLES.keys(), limit=limit, row_cap=1000)


# --- 1. hostile statements ----------------------------------------------------------------------------------

# (id, statement, rule the guard must name)
HOSTILE: list[tuple[str, str, str]] = [
    # DDL and DML
    ("drop-table", "DROP TABLE system.access.audit", "read_only"),
    ("delete", "DELETE FROM system.access.audit WHERE 1 = 1", "read_only"),
    ("insert-values", "INSERT INTO system.access.audit (event_id) VALUES ('x')", "read_only"),
    ("insert-select", "INSERT INTO system.access.audit SELECT * FROM system.access.audit", "read_only"),
    ("insert-overwrite-directory", "INSERT OVERWRITE DIRECTORY '/tmp/x' SELECT * FROM system.access.audit",
     "read_only"),
    ("update", "UPDATE system.access.audit SET action_name = 'x'", "read_only"),
    ("merge", "MERGE INTO system.access.audit t USING system.access.audit s ON t.event_id = s.event_id "
     "WHEN MATCHED THEN DELETE", "read_only"),
    ("create-table-as", "CREATE TABLE system.access.copy AS SELECT * FROM system.access.audit", "read_only"),
    ("create-temp-table", "CREATE TEMP TABLE t AS SELECT 1", "read_only"),
    ("create-view", "CREATE OR REPLACE VIEW v AS SELECT 1", "read_only"),
    ("create-function", "CREATE FUNCTION f() RETURNS INT RETURN 1", "read_only"),
    ("create-macro", "CREATE TEMP MACRO m() AS 1", "read_only"),
    ("create-secret", "CREATE SECRET s (TYPE s3, KEY_ID 'x')", "read_only"),
    ("alter-table", "ALTER TABLE system.access.audit ADD COLUMN x INT", "read_only"),
    ("truncate", "TRUNCATE TABLE system.access.audit", "read_only"),
    ("grant", "GRANT SELECT ON system.access.audit TO x", "read_only"),
    ("cache-table", "CACHE TABLE system.access.audit", "read_only"),
    ("analyze-table", "ANALYZE TABLE system.access.audit COMPUTE STATISTICS", "read_only"),
    ("optimize", "OPTIMIZE system.access.audit", "read_only"),
    ("begin", "BEGIN", "read_only"),
    ("execute-immediate", "EXECUTE IMMEDIATE 'DROP TABLE x'", "read_only"),
    ("explain-analyze", "EXPLAIN ANALYZE SELECT * FROM system.access.audit", "read_only"),
    ("declare-variable", "DECLARE VARIABLE x INT DEFAULT 1", "read_only"),
    # several statements
    ("two-selects", "SELECT 1; SELECT 2", "single_statement"),
    ("select-then-drop", "SELECT 1; DROP TABLE system.access.audit", "single_statement"),
    ("comment-then-drop", "SELECT 1 -- harmless\n; DROP TABLE system.access.audit", "single_statement"),
    ("block-comments-around-second", "SELECT 1 /* a */; /* b */ SELECT 2", "single_statement"),
    ("double-semicolon", "SELECT 1 ;; SELECT 2", "single_statement"),
    ("trailing-line-comment", "SELECT 1; -- trailing", "single_statement"),
    ("trailing-block-comment", "SELECT 1; /* trailing */", "single_statement"),
    ("only-a-comment", "-- only a comment", "single_statement"),
    ("only-semicolons", " ; ", "single_statement"),
    # DuckDB-only commands
    ("attach", "ATTACH 'evil.db' AS evil", "read_only"),
    ("attach-database", "ATTACH DATABASE '/tmp/x.db' AS x", "read_only"),
    ("detach", "DETACH evil", "read_only"),
    ("copy-to", "COPY (SELECT * FROM system.access.audit) TO '/tmp/out.csv'", "read_only"),
    ("copy-from", "COPY system.access.audit FROM '/tmp/in.csv'", "read_only"),
    ("install", "INSTALL httpfs", "read_only"),
    ("load", "LOAD httpfs", "read_only"),
    ("pragma", "PRAGMA database_list", "read_only"),
    ("set-threads", "SET threads = 1", "read_only"),
    ("set-external-access", "SET enable_external_access = true", "read_only"),
    ("set-variable", "SET VARIABLE x = 1", "read_only"),
    ("reset", "RESET threads", "read_only"),
    ("call", "CALL pragma_database_list()", "read_only"),
    ("export-database", "EXPORT DATABASE '/tmp/dump'", "read_only"),
    ("import-database", "IMPORT DATABASE '/tmp/dump'", "read_only"),
    ("checkpoint", "CHECKPOINT", "read_only"),
    ("use", "USE system.access", "read_only"),
    ("vacuum", "VACUUM", "read_only"),
    ("summarize", "SUMMARIZE system.access.audit", "read_only"),
    ("describe", "DESCRIBE system.access.audit", "read_only"),
    ("show-tables", "SHOW TABLES", "read_only"),
    ("add-jar", "ADD JAR '/tmp/x.jar'", "read_only"),
    # table functions, files and URLs
    ("read_csv", "SELECT * FROM read_csv('/etc/passwd')", "forbidden_function"),
    ("read_csv_auto", "SELECT * FROM read_csv_auto('/etc/passwd')", "forbidden_function"),
    ("read_parquet", "SELECT * FROM read_parquet('/tmp/x.parquet')", "forbidden_function"),
    ("parquet_scan", "SELECT * FROM parquet_scan('/tmp/x.parquet')", "forbidden_function"),
    ("read_json", "SELECT * FROM read_json('/tmp/x.json')", "forbidden_function"),
    ("read_json_auto", "SELECT * FROM read_json_auto('/tmp/x.json')", "forbidden_function"),
    ("read_text", "SELECT * FROM read_text('/etc/passwd')", "forbidden_function"),
    ("read_blob", "SELECT * FROM read_blob('/etc/passwd')", "forbidden_function"),
    # sqlglot's Databricks parser reads glob() as the GLOB operator and rejects the one-argument call.
    ("glob", "SELECT * FROM glob('/etc/*')", "parse"),
    ("read_files", "SELECT * FROM read_files('/etc/passwd', format => 'text')", "forbidden_function"),
    ("cloud_files", "SELECT * FROM cloud_files('s3://b', 'json')", "forbidden_function"),
    ("sniff_csv", "SELECT * FROM sniff_csv('/etc/passwd')", "table_function"),
    ("identifier-clause", "SELECT * FROM IDENTIFIER('main.x')", "table_function"),
    ("string-as-table", "SELECT * FROM '/etc/passwd'", "path_as_table"),
    ("relative-csv-as-table", "SELECT * FROM system.access.audit a JOIN 'x.csv' b ON true", "path_as_table"),
    ("parquet-dot-path", "SELECT * FROM parquet.`/tmp/x.parquet`", "path_as_table"),
    ("csv-dot-s3", "SELECT * FROM csv.`s3://bucket/x.csv`", "path_as_table"),
    ("delta-dot-path", "SELECT * FROM delta.`/x`", "path_as_table"),
    ("text-dot-path", "SELECT * FROM text.`/etc/passwd`", "path_as_table"),
    ("https-backticks", "SELECT * FROM `https://evil.example/x.csv`", "path_as_table"),
    ("https-string", "SELECT * FROM 'https://evil.example/x.parquet'", "path_as_table"),
    ("quoted-full-name", "SELECT * FROM `system.access.audit`", "path_as_table"),
    ("query-function", "SELECT * FROM query('SELECT 1')", "forbidden_function"),
    ("query_table", "SELECT * FROM query_table('access.audit')", "forbidden_function"),
    # environment and engine introspection
    ("getenv", "SELECT getenv('HOME')", "forbidden_function"),
    ("current_setting", "SELECT current_setting('threads')", "forbidden_function"),
    ("duckdb_settings", "SELECT * FROM duckdb_settings()", "forbidden_function"),
    ("duckdb_extensions", "SELECT * FROM duckdb_extensions()", "forbidden_function"),
    ("duckdb_databases", "SELECT * FROM duckdb_databases()", "forbidden_function"),
    ("duckdb_tables", "SELECT * FROM duckdb_tables()", "forbidden_function"),
    ("duckdb_secrets", "SELECT * FROM duckdb_secrets()", "forbidden_function"),
    ("which_secret", "SELECT which_secret('s3://x', 's3')", "forbidden_function"),
    ("pragma_database_list-table", "SELECT * FROM pragma_database_list", "table_allowlist"),
    ("pragma_database_list-call", "SELECT * FROM pragma_database_list()", "forbidden_function"),
    ("pragma_table_info", "SELECT * FROM pragma_table_info('access.audit')", "forbidden_function"),
    ("information_schema", "SELECT * FROM information_schema.tables", "table_allowlist"),
    ("system-information_schema", "SELECT * FROM system.information_schema.tables", "table_allowlist"),
    ("sqlite_master", "SELECT * FROM sqlite_master", "table_allowlist"),
    ("pg_catalog", "SELECT * FROM pg_catalog.pg_settings", "table_allowlist"),
    # tables outside the allowlist
    ("other-catalog", "SELECT * FROM other.access.audit", "table_allowlist"),
    ("no-catalog", "SELECT * FROM access.audit", "table_allowlist"),
    ("bare-name", "SELECT * FROM audit", "table_allowlist"),
    ("main-schema", "SELECT * FROM main.x", "table_allowlist"),
    ("temp-catalog", "SELECT * FROM temp.main.x", "table_allowlist"),
    ("table_lineage", "SELECT * FROM system.access.table_lineage", "table_allowlist"),
    ("list_prices", "SELECT * FROM system.billing.list_prices", "table_allowlist"),
    ("hive_metastore", "SELECT * FROM hive_metastore.default.x", "table_allowlist"),
    ("samples", "SELECT * FROM samples.nyctaxi.trips", "table_allowlist"),
    ("four-part-name", "SELECT * FROM system.access.audit.extra", "table_function"),
    # CTE names are scoped: one defined in a subquery does not name anything outside it
    ("cte-out-of-scope", "SELECT * FROM (WITH x AS (SELECT 1 AS a) SELECT * FROM x) s CROSS JOIN x",
     "table_allowlist"),
    ("cte-out-of-scope-file", "SELECT * FROM (WITH `data.csv` AS (SELECT 1 AS a) SELECT * FROM `data.csv`) s "
     "CROSS JOIN `data.csv`", "path_as_table"),
    ("cte-self-reference", "WITH x AS (SELECT * FROM x) SELECT * FROM x", "table_allowlist"),
    ("cte-forward-reference", "WITH b AS (SELECT * FROM a), a AS (SELECT 1 AS n) SELECT * FROM b",
     "table_allowlist"),
    ("cte-in-later-union-arm", "SELECT * FROM x UNION ALL (WITH x AS (SELECT 1 AS a) SELECT * FROM x)",
     "table_allowlist"),
    # hostile placements
    ("in-cte", "WITH x AS (SELECT * FROM read_csv('/etc/passwd')) SELECT * FROM x", "forbidden_function"),
    ("in-unused-cte", "WITH x AS (SELECT * FROM read_parquet('/x')) SELECT 1", "forbidden_function"),
    ("in-subquery", "SELECT * FROM system.access.audit WHERE event_id IN "
     "(SELECT column0 FROM read_csv('/etc/passwd'))", "forbidden_function"),
    ("in-where", "SELECT * FROM system.access.audit WHERE getenv('HOME') IS NOT NULL", "forbidden_function"),
    ("in-exists", "SELECT * FROM system.access.audit WHERE EXISTS (SELECT 1 FROM duckdb_tables())",
     "forbidden_function"),
    ("in-join", "SELECT * FROM system.access.audit a JOIN read_csv('/etc/passwd') p ON true",
     "forbidden_function"),
    ("in-lateral", "SELECT * FROM system.access.audit a, LATERAL (SELECT getenv('HOME') AS h) l",
     "forbidden_function"),
    ("in-window", "SELECT row_number() OVER (PARTITION BY getenv('HOME') ORDER BY event_time) "
     "FROM system.access.audit", "forbidden_function"),
    ("in-qualify", "SELECT * FROM system.access.audit "
     "QUALIFY row_number() OVER (ORDER BY getenv('HOME')) = 1", "forbidden_function"),
    ("in-order-by", "SELECT * FROM system.access.audit ORDER BY getenv('HOME')", "forbidden_function"),
    ("in-lambda", "SELECT transform(array(1), x -> getenv('HOME'))", "forbidden_function"),
    ("in-union-arm", "SELECT event_id FROM system.access.audit "
     "UNION ALL SELECT * FROM read_text('/etc/passwd')", "forbidden_function"),
    ("in-except-arm", "SELECT 1 EXCEPT SELECT * FROM duckdb_settings()", "forbidden_function"),
    ("union-other-catalog", "SELECT * FROM system.access.audit UNION SELECT * FROM samples.nyctaxi.trips",
     "table_allowlist"),
    ("dml-in-cte", "WITH d AS (DELETE FROM system.access.audit RETURNING *) SELECT * FROM d", "read_only"),
    ("cte-then-insert", "WITH a AS (SELECT 1) INSERT INTO system.access.audit SELECT * FROM a", "read_only"),
    ("select-into", "SELECT * INTO newtab FROM system.access.audit", "read_only"),
    ("select-into-outfile", "SELECT 1 AS x INTO OUTFILE '/tmp/x'", "parse"),
    # obfuscation
    ("mixed-case", "SeLeCt * FrOm ReAd_CsV('/etc/passwd')", "forbidden_function"),
    ("mixed-case-spaces", "sElEcT   GeTeNv  ( 'HOME' )", "forbidden_function"),
    ("comments-between-tokens", "SELECT/**/*/**/FROM/**/read_csv/**/('/etc/passwd')", "forbidden_function"),
    ("double-quoted-name", "SELECT * FROM \"read_csv\"('/etc/passwd')", "table_allowlist"),
    ("backticked-name", "SELECT * FROM `read_json_auto`('/etc/passwd')", "forbidden_function"),
    ("unicode-escape-identifier", "SELECT * FROM U&\"read_csv\"('/etc/passwd')", "parse"),
    ("unicode-escape-string", "SELECT * FROM U&'/etc/passwd'", "parse"),
    ("fullwidth-letters", "SELECT * FROM \uff52\uff45\uff41\uff44_csv('/etc/passwd')", "table_function"),
    ("zero-width-in-name", "SELECT * FROM read\u200b_csv('/etc/passwd')", "table_function"),
    ("method-call-syntax", "SELECT ('HOME').getenv()", "forbidden_function"),
    # Databricks functions that reach the outside
    ("http_request", "SELECT http_request('https://evil.example', 'GET')", "forbidden_function"),
    ("ai_query", "SELECT ai_query('model', 'hi')", "forbidden_function"),
    ("reflect", "SELECT reflect('java.lang.Runtime', 'exec', 'id')", "forbidden_function"),
    ("java_method", "SELECT java_method('java.lang.Runtime', 'exec', 'id')", "forbidden_function"),
    ("secret", "SELECT secret('scope', 'key')", "forbidden_function"),
    ("try_secret", "SELECT try_secret('scope', 'key')", "forbidden_function"),
    ("input_file_name", "SELECT input_file_name() FROM system.access.audit", "forbidden_function"),
    # sleep and benchmark
    ("sleep", "SELECT sleep(100)", "forbidden_function"),
    ("sleep_ms", "SELECT sleep_ms(1000)", "forbidden_function"),
    ("pg_sleep", "SELECT pg_sleep(100)", "forbidden_function"),
    ("benchmark", "SELECT benchmark(1000000, 1)", "forbidden_function"),
    # limits and malformed input
    ("limit-all", "SELECT * FROM system.access.audit LIMIT ALL", "limit"),
    ("limit-expression", "SELECT * FROM system.access.audit LIMIT 5 + 5", "limit"),
    ("fetch-first", "SELECT * FROM system.access.audit FETCH FIRST 5 ROWS ONLY", "limit"),
    ("nul-byte", "SELECT 1\x00; DROP TABLE system.access.audit", "parse"),
    ("empty", "", "parse"),
    ("whitespace-only", " \t\n  ", "parse"),
    ("garbage", "this is not sql at all (((", "parse"),
    ("unbalanced-quote", "SELECT 'abc FROM system.access.audit", "parse"),
]

assert len({case_id for case_id, _, _ in HOSTILE}) == len(HOSTILE), "hostile ids must be unique"


@pytest.mark.parametrize(("sql", "rule"), [pytest.param(s, r, id=i) for i, s, r in HOSTILE])
def test_guard_refuses_hostile_statement(sql: str, rule: str) -> None:
    with pytest.raises(QueryRefused) as refused:
        _guard(sql)
    assert refused.value.rule == rule, f"refused by {refused.value.rule!r}: {refused.value.detail}"
    assert str(refused.value).startswith(f"query refused by rule '{rule}': ")


# Every fifth statement, plus a few that matter most, through the real tool.
_TOOL_SAMPLE = {case_id for case_id, _, _ in HOSTILE[::5]} | {
    "read_csv", "copy-to", "attach", "nul-byte", "empty", "dml-in-cte", "cte-out-of-scope", "getenv",
    "parquet-dot-path", "two-selects", "garbage",
}


async def test_run_query_refuses_hostile_statements_with_clean_errors(settings: Settings) -> None:
    sample = [(i, s, r) for i, s, r in HOSTILE if i in _TOOL_SAMPLE]
    assert len(sample) >= 30
    async with connect_in_process(build_system_tables_server(settings)) as client:
        for case_id, sql, rule in sample:
            with pytest.raises(ToolCallError) as failed:
                await client.call("run_query", {"sql": sql, "limit": 10})
            message = failed.value.message
            assert f"query refused by rule '{rule}'" in message, (case_id, message)
            assert "Traceback" not in message and 'File "' not in message, (case_id, message)
            assert "internal error" not in message, (case_id, message)


async def test_engine_error_reaches_caller_as_message_not_traceback(settings: Settings) -> None:
    # Passes the guard, fails in the engine: still a clean tool error.
    async with connect_in_process(build_system_tables_server(settings)) as client:
        with pytest.raises(ToolCallError) as failed:
            await client.call("run_query", {"sql": "SELECT no_such_column FROM system.access.audit"})
    assert "the engine could not run the query" in failed.value.message
    assert "Traceback" not in failed.value.message and 'File "' not in failed.value.message


# --- 1b. refusals that say what was refused and why ------------------------------------------------------

ONLY_READS = "only one read-only SELECT (or WITH ... SELECT) over the system.* tables"

# (statement, words the refusal must start its detail with): the statement or function is named, not a parser token.
NAMED_REFUSALS: list[tuple[str, str]] = [
    ("INSTALL httpfs", "INSTALL is not allowed: it installs an engine extension"),
    ("LOAD httpfs", "LOAD is not allowed: it loads an engine extension"),
    ("FORCE INSTALL httpfs", "FORCE INSTALL is not allowed"),
    ("ATTACH 'x.db'", "ATTACH is not allowed: it opens another database file"),
    ("DETACH x", "DETACH is not allowed"),
    ("COPY (SELECT 1) TO '/tmp/x.csv'", "COPY is not allowed: it reads or writes files"),
    ("PRAGMA database_list", "PRAGMA is not allowed"),
    ("SET threads = 1", "SET is not allowed: it changes a setting"),
    ("CALL pragma_database_list()", "CALL is not allowed"),
    ("CREATE TABLE t AS SELECT 1", "CREATE TABLE is not allowed: it creates objects"),
    ("DROP TABLE system.access.audit", "DROP TABLE is not allowed"),
    ("INSERT INTO system.access.audit (event_id) VALUES ('x')", "INSERT INTO is not allowed: it writes rows"),
    ("UPDATE system.access.audit SET action_name = 'x'", "UPDATE is not allowed"),
    ("DELETE FROM system.access.audit", "DELETE is not allowed"),
    ("EXPORT DATABASE '/tmp/dump'", "EXPORT DATABASE is not allowed: it writes the database to files"),
    ("CHECKPOINT", "CHECKPOINT is not allowed"),
    ("  -- a comment first\n install httpfs", "INSTALL is not allowed"),
    ("SHOW TABLES", "SHOW is not allowed: it lists objects (use list_tables or describe_table)"),
    ("SELECT * FROM read_csv('/etc/passwd')", "read_csv() is not allowed: it reads files or URLs"),
    ("SELECT * FROM read_parquet('/tmp/x.parquet')", "read_parquet() is not allowed: it reads files or URLs"),
    ("SELECT * FROM read_json('/tmp/x.json')", "read_json() is not allowed: it reads files or URLs"),
    ("SELECT * FROM read_files('/tmp', format => 'text')", "read_files() is not allowed: it reads files or URLs"),
    ("SELECT getenv('HOME')", "getenv() is not allowed: it reads the environment"),
    ("SELECT * FROM duckdb_settings()", "duckdb_settings() is not allowed: it reads the environment, settings"),
]


@pytest.mark.parametrize(("sql", "start"), NAMED_REFUSALS, ids=[s for s, _ in NAMED_REFUSALS])
def test_refusal_names_the_statement_or_function_and_says_what_is_allowed(sql: str, start: str) -> None:
    with pytest.raises(QueryRefused) as refused:
        _guard(sql)
    assert refused.value.detail.startswith(start), refused.value.detail
    assert ONLY_READS in refused.value.detail
    assert "ALIAS" not in refused.value.detail and "Invalid expression" not in refused.value.detail


GENERATOR_REFUSALS: list[tuple[str, str, str]] = [
    ("SELECT * FROM range(1000000000) a, range(1000000000) b", "generator_size",
     "range(1000000000) would produce 1,000,000,000 rows; at most 1,000,000 per generator "
     "(INSIGHT_QUERY__MAX_GENERATOR_ROWS)"),
    ("SELECT * FROM range(0, 2000000, 1)", "generator_size", "range(0, 2000000, 1) would produce 2,000,000 rows"),
    ("SELECT explode(sequence(1, 5000000))", "generator_size", "sequence(1, 5000000) would produce 5,000,000 rows"),
    ("SELECT * FROM generate_series(1, 1e7)", "generator_size", "would produce 10,000,000 rows"),
    ("SELECT explode(array_repeat('x', 2000000))", "generator_size", "would produce 2,000,000 rows"),
    ("SELECT * FROM explode(sequence(DATE'2000-01-01', DATE'2026-01-01', INTERVAL 1 MINUTE))", "generator_size",
     "rows; at most 1,000,000 per generator"),
    ("SELECT * FROM range((SELECT count(*) FROM system.access.audit))", "generator_size",
     "its literals do not fix"),
    ("SELECT explode(sequence(1, response.status_code)) FROM system.access.audit", "generator_size",
     "its literals do not fix"),
    ("SELECT explode((SELECT collect_list(event_id) FROM system.access.audit))", "generator_size",
     "expands the answer of a subquery"),
    ("SELECT explode(array(id, id)) FROM range(10)", "generator_size", "do not come from a system table"),
    ("SELECT * FROM range(1000) a, range(1000) b", "generator_join", "range(1000) is joined with range(1000)"),
    ("SELECT * FROM range(10) CROSS JOIN explode(array(1, 2))", "generator_join", "is joined with"),
    ("SELECT * FROM range(1000) a JOIN range(1000) b ON a.id = b.id", "generator_join", "is joined with"),
    ("WITH g AS (SELECT * FROM range(1000)) SELECT * FROM g a JOIN g b ON a.id = b.id", "generator_join",
     "g is joined with g"),
    ("SELECT * FROM (SELECT * FROM range(10)) a, (SELECT explode(array(1)) AS x) b", "generator_join",
     "is joined with"),
    ("SELECT * FROM system.access.audit, range(1000)", "generator_join",
     "range(1000) is cross joined with system.access.audit"),
    ("SELECT * FROM range(1000) r JOIN system.access.audit a ON true", "generator_join", "is cross joined with"),
    ("SELECT explode(sequence(1, 100)) FROM system.access.audit", "generator_join", "is cross joined with"),
    ("WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) SELECT * FROM t LIMIT 5", "recursion",
     "WITH RECURSIVE is not allowed"),
    ("SELECT * FROM (WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 3) SELECT n FROM t) x",
     "recursion", "can run until the time limit"),
]


@pytest.mark.parametrize(("sql", "rule", "message"), GENERATOR_REFUSALS, ids=[s for s, _, _ in GENERATOR_REFUSALS])
def test_guard_bounds_generators(sql: str, rule: str, message: str) -> None:
    with pytest.raises(QueryRefused) as refused:
        _guard(sql)
    assert refused.value.rule == rule, refused.value.detail
    assert message in refused.value.detail


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM range(1000000)",
        "SELECT * FROM range(0, 2000000, 2)",
        "SELECT id FROM range(10, 0, -1)",
        "SELECT explode(sequence(1, 1000000))",
        "SELECT * FROM explode(sequence(to_date('2026-01-01'), to_date('2026-12-31')))",
        "SELECT posexplode(array('a', 'b'))",
        "SELECT * FROM inline(array(struct(1, 'a'), struct(2, 'b')))",
        "SELECT k FROM system.access.audit LATERAL VIEW explode(map_keys(request_params)) t AS k",
        "SELECT explode(map_keys(request_params)) AS k FROM system.access.audit",
        "SELECT k, v FROM system.access.audit LATERAL VIEW explode(request_params) p AS k, v "
        "LATERAL VIEW posexplode(map_values(request_params)) q AS i, w",
        "WITH a AS (SELECT * FROM system.access.audit) SELECT explode(map_keys(request_params)) FROM a",
        "SELECT a.event_id, r.id FROM system.access.audit a JOIN range(1000) r ON r.id = a.response.status_code",
        "SELECT * FROM range(10) UNION ALL SELECT * FROM range(10)",
    ],
)
def test_guard_allows_bounded_generators(sql: str) -> None:
    assert _guard(sql).duckdb_sql


def test_generator_cap_is_a_setting() -> None:
    sql = "SELECT * FROM range(5000)"
    assert guard_query(sql, allowed_tables=TABLES.keys(), limit=10, row_cap=100, max_generator_rows=5000)
    with pytest.raises(QueryRefused, match="at most 4,999 per generator"):
        guard_query(sql, allowed_tables=TABLES.keys(), limit=10, row_cap=100, max_generator_rows=4999)


# --- 2. legitimate analyst queries --------------------------------------------------------------------------


def _json(value: Any) -> Any:
    """The shape the tool returns: RFC 3339 UTC for timestamps, ISO dates, lists for tuples."""
    if isinstance(value, dt.datetime):
        return value.isoformat() + "Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    return value


def _rows(rows: list[list[Any]] | list[tuple[Any, ...]]) -> list[list[Any]]:
    return [[_json(v) for v in row] for row in rows]


def _multiset(rows: list[list[Any]]) -> list[str]:
    return sorted(json.dumps(row, sort_keys=True) for row in rows)


Reference = duckdb.DuckDBPyConnection


@pytest.fixture(scope="module")
def reference(fixture_workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reference]:
    """A plain read-only DuckDB connection to a copy of the fixture file, for hand-written expected answers.

    A copy, because DuckDB refuses a second connection to a file it already holds open with another
    configuration (the tool's locked one).
    """
    copy = tmp_path_factory.mktemp("reference") / "workspace.duckdb"
    shutil.copyfile(fixture_workspace, copy)
    con = duckdb.connect(str(copy), read_only=True)
    yield con
    con.close()


def _duckdb(sql: str) -> Callable[[Reference], list[list[Any]]]:
    """An expected answer from a hand-written DuckDB-dialect query (tables are access.audit, ...)."""

    def run(con: Reference) -> list[list[Any]]:
        return _rows(con.execute(sql).fetchall())

    return run


def _failed(row: dict[str, Any]) -> bool:
    return row["status_code"] >= 400


def _by_user(rows: list[dict[str, Any]], key: str, order: str) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: r[order]):
        groups.setdefault(row[key], []).append(row)
    return groups


def _failures_per_principal(_: Reference) -> list[list[Any]]:
    counts = Counter(r["email"] for r in AUDIT if _failed(r))
    return sorted(([p, n] for p, n in counts.items()), key=lambda row: (-row[1], row[0]))


def _first_event_per_principal(_: Reference) -> list[list[Any]]:
    return [[user, rows[0]["event_id"]] for user, rows in _by_user(AUDIT, "email", "event_time").items()]


def _previous_statement(_: Reference) -> list[list[Any]]:
    out = []
    for rows in _by_user(QUERIES, "executed_by", "start_time").values():
        previous = None
        for row in rows:
            out.append([row["statement_id"], previous])
            previous = row["statement_id"]
    return out


def _running_bytes(_: Reference) -> list[list[Any]]:
    out = []
    for rows in _by_user(QUERIES, "executed_by", "start_time").values():
        total = 0
        for row in rows:
            total += row["read_bytes"]
            out.append([row["statement_id"], total])
    return out


def _events_per_day(_: Reference) -> list[list[Any]]:
    days = Counter(r["event_time"].date() for r in AUDIT)
    return [[dt.datetime.combine(d, dt.time()).isoformat() + "Z", n] for d, n in sorted(days.items())]


def _failures_per_date(_: Reference) -> list[list[Any]]:
    days = Counter(r["event_time"].date() for r in AUDIT if _failed(r))
    return [[d.isoformat(), n] for d, n in sorted(days.items())]


def _events_per_hour(_: Reference) -> list[list[Any]]:
    return [[h, n] for h, n in sorted(Counter(r["event_time"].hour for r in AUDIT).items())]


def _busy_hour_buckets(_: Reference) -> list[list[Any]]:
    buckets = Counter(r["event_time"].strftime("%Y-%m-%d %H:00") for r in AUDIT)
    return [[b, n] for b, n in sorted(buckets.items()) if n >= 4]


def _cluster_change_span(_: Reference) -> list[list[Any]]:
    times: dict[str, list[dt.datetime]] = {}
    for row in CLUSTERS:
        times.setdefault(row["cluster_id"], []).append(row["change_time"])
    return [[c, (max(t).date() - min(t).date()).days] for c, t in times.items()]


def _relative_dates(_: Reference) -> list[list[Any]]:
    century_ago = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=36500)
    day_before = dt.date(2026, 11, 11)
    dates = [r["event_time"].date() for r in AUDIT]
    return [[sum(d >= century_ago for d in dates), sum(d >= day_before for d in dates)]]


def _scopes(_: Reference) -> list[list[Any]]:
    return [[s, n] for s, n in Counter(r["params"]["scope"] for r in AUDIT).items()]


def _secret_keys(_: Reference) -> list[list[Any]]:
    users: dict[str, set[str]] = {}
    for row in AUDIT:
        if row["action_name"] == "getSecret":
            users.setdefault(row["params"]["key"], set()).add(row["email"])
    return [[k, len(u)] for k, u in users.items()]


def _param_keys(_: Reference) -> list[list[Any]]:
    return [list(x) for x in {(tuple(sorted(r["params"])), len(r["params"])) for r in AUDIT}]


def _failure_details(_: Reference) -> list[list[Any]]:
    return [[r["event_id"], r["email"], r["status_code"], r["error_message"]]
            for r in sorted(AUDIT, key=lambda r: r["event_id"]) if r["status_code"] != 200]


def _principal_profile(_: Reference) -> list[list[Any]]:
    out = []
    for user, rows in _by_user(AUDIT, "email", "event_time").items():
        out.append([user, sum(_failed(r) for r in rows), len({r["action_name"] for r in rows}),
                    len({r["source_ip_address"] for r in rows})])
    return out


def _outcome_kinds(_: Reference) -> list[list[Any]]:
    def kind(row: dict[str, Any]) -> str:
        if _failed(row):
            return "failure"
        return "secret_read" if row["service_name"] == "secrets" else "other"

    return [[k, n] for k, n in Counter(kind(r) for r in AUDIT).items()]


def _noisy_failers(_: Reference) -> list[list[Any]]:
    return [[p, n] for p, n in Counter(r["email"] for r in AUDIT if _failed(r)).items() if n > 8]


def _service_actions(_: Reference) -> list[list[Any]]:
    counts = Counter((r["service_name"], r["action_name"]) for r in AUDIT)
    return [[s, a, n] for (s, a), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def _failed_principals_both_tables(_: Reference) -> list[list[Any]]:
    audit = [["audit", r["email"]] for r in AUDIT if _failed(r)]
    queries = [["query", q["executed_by"]] for q in QUERIES if q["execution_status"] == "FAILED"]
    return audit + queries


def _audit_and_statements(_: Reference) -> list[list[Any]]:
    out = []
    for user in {q["executed_by"] for q in QUERIES}:
        events = sum(r["email"] == user for r in AUDIT)
        statements = sum(q["executed_by"] == user for q in QUERIES)
        if events:
            out.append([user, events, statements])
    return out


def _secret_reads_of_some_users(_: Reference) -> list[list[Any]]:
    users = {q["executed_by"] for q in QUERIES if q["statement_id"] in ("q-000", "q-001")}
    return [[r["event_id"]] for r in AUDIT if r["service_name"] == "secrets" and r["email"] in users]


def _latest_cluster_state(_: Reference) -> list[list[Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for row in sorted(CLUSTERS, key=lambda r: r["change_time"]):
        latest[row["cluster_id"]] = row
    return [[c, r["cluster_name"], r["data_security_mode"], r["auto_termination_minutes"],
             _json(r["delete_time"])] for c, r in latest.items()]


def _sdk_events(_: Reference) -> list[list[Any]]:
    pattern = re.compile(r"^databricks-sdk-py/[0-9.]+$")
    return [[r["event_id"]] for r in sorted(AUDIT, key=lambda r: r["event_id"])
            if pattern.search(r["user_agent"]) and r["email"].endswith("@corp.example")
            and r["event_id"].startswith("e-01")]


def _morning_window(_: Reference) -> list[list[Any]]:
    start, end = dt.datetime(2026, 11, 11), dt.datetime(2026, 11, 11, 6)
    return [[sum(start <= r["event_time"] < end for r in AUDIT)]]


def _span_minutes(_: Reference) -> list[list[Any]]:
    times = [r["event_time"] for r in AUDIT]
    return [[int((max(times) - min(times)).total_seconds() // 60)]]


def _latest_events(_: Reference) -> list[list[Any]]:
    return [[r["event_id"]] for r in sorted(AUDIT, key=lambda r: r["event_time"], reverse=True)[:7]]


def _first_three_events(_: Reference) -> list[list[Any]]:
    return [[r["event_id"]] for r in sorted(AUDIT, key=lambda r: r["event_id"])[:3]]


class Legit(NamedTuple):
    sql: str
    expected: Callable[[Reference], list[list[Any]]]
    ordered: bool = False
    limit: int = 1000
    truncated: bool = False


LEGIT: dict[str, Legit] = {
    "cte-failures-per-principal": Legit(
        """WITH failures AS (
             SELECT user_identity.email AS principal, count(*) AS n
             FROM system.access.audit WHERE response.status_code >= 400 GROUP BY user_identity.email)
           SELECT principal, n FROM failures ORDER BY n DESC, principal""",
        _failures_per_principal, ordered=True),
    "row_number-first-event": Legit(
        """SELECT principal, event_id FROM (
             SELECT user_identity.email AS principal, event_id,
                    row_number() OVER (PARTITION BY user_identity.email ORDER BY event_time) AS rn
             FROM system.access.audit) WHERE rn = 1""",
        _first_event_per_principal),
    "lag-previous-statement": Legit(
        """SELECT statement_id, lag(statement_id) OVER (PARTITION BY executed_by ORDER BY start_time) AS prev
           FROM system.query.history""",
        _previous_statement),
    "sum-over-partition": Legit(
        """SELECT statement_id,
                  sum(read_bytes) OVER (PARTITION BY executed_by ORDER BY start_time) AS running_bytes
           FROM system.query.history""",
        _running_bytes),
    "date_trunc-day": Legit(
        "SELECT date_trunc('DAY', event_time) AS day, count(*) AS events FROM system.access.audit "
        "GROUP BY 1 ORDER BY 1",
        _events_per_day, ordered=True),
    "to_date-failures": Legit(
        "SELECT to_date(event_time) AS day, count_if(response.status_code >= 400) AS failures "
        "FROM system.access.audit GROUP BY to_date(event_time) HAVING failures > 0 ORDER BY day",
        _failures_per_date, ordered=True),
    "hour-group-by-all": Legit(
        "SELECT hour(event_time) AS hour, count(*) AS events FROM system.access.audit "
        "GROUP BY ALL ORDER BY hour",
        _events_per_hour, ordered=True),
    "date_format-having": Legit(
        "SELECT date_format(event_time, 'yyyy-MM-dd HH:00') AS bucket, count(*) AS events "
        "FROM system.access.audit GROUP BY 1 HAVING count(*) >= 4 ORDER BY bucket",
        _busy_hour_buckets, ordered=True),
    "datediff-cluster-changes": Legit(
        "SELECT cluster_id, datediff(max(change_time), min(change_time)) AS days "
        "FROM system.compute.clusters GROUP BY cluster_id",
        _cluster_change_span),
    "date_sub-current_date": Legit(
        "SELECT count_if(event_date >= date_sub(current_date(), 36500)) AS within_a_century, "
        "count_if(event_date >= date_sub(to_date('2026-11-12'), 1)) AS last_two_days "
        "FROM system.access.audit",
        _relative_dates),
    "map-subscript": Legit(
        "SELECT request_params['scope'] AS scope, count(*) AS events FROM system.access.audit "
        "GROUP BY request_params['scope']",
        _scopes),
    "element_at": Legit(
        "SELECT element_at(request_params, 'key') AS secret_key, "
        "count(DISTINCT user_identity.email) AS readers FROM system.access.audit "
        "WHERE action_name = 'getSecret' GROUP BY 1",
        _secret_keys),
    "map_keys-array_sort": Legit(
        "SELECT DISTINCT array_sort(map_keys(request_params)) AS param_keys, "
        "size(map_keys(request_params)) AS n FROM system.access.audit",
        _param_keys),
    "struct-fields": Legit(
        "SELECT event_id, user_identity.email, response.status_code, response.error_message "
        "FROM system.access.audit WHERE response.status_code <> 200 ORDER BY event_id",
        _failure_details, ordered=True),
    "count_if-collect_set": Legit(
        "SELECT user_identity.email AS principal, count_if(response.status_code >= 400) AS failures, "
        "size(collect_set(action_name)) AS actions, size(collect_set(source_ip_address)) AS ips "
        "FROM system.access.audit GROUP BY user_identity.email",
        _principal_profile),
    "case-when": Legit(
        "SELECT CASE WHEN response.status_code >= 400 THEN 'failure' WHEN service_name = 'secrets' "
        "THEN 'secret_read' ELSE 'other' END AS kind, count(*) AS events FROM system.access.audit GROUP BY 1",
        _outcome_kinds),
    "having": Legit(
        "SELECT user_identity.email AS principal, count(*) AS failures FROM system.access.audit "
        "WHERE response.status_code >= 400 GROUP BY user_identity.email HAVING count(*) > 8",
        _noisy_failers),
    "group-by-ordinal": Legit(
        "SELECT service_name, action_name, count(*) AS events FROM system.access.audit "
        "GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2",
        _service_actions, ordered=True),
    "union-all": Legit(
        "SELECT 'audit' AS source, user_identity.email AS principal FROM system.access.audit "
        "WHERE response.status_code >= 400 "
        "UNION ALL SELECT 'query' AS source, executed_by AS principal FROM system.query.history "
        "WHERE execution_status = 'FAILED'",
        _failed_principals_both_tables),
    "join-audit-query-history": Legit(
        """SELECT a.user_identity.email AS principal, count(DISTINCT a.event_id) AS events,
                  count(DISTINCT q.statement_id) AS statements
           FROM system.access.audit a JOIN system.query.history q ON a.user_identity.email = q.executed_by
           GROUP BY a.user_identity.email""",
        _audit_and_statements),
    "in-subquery": Legit(
        "SELECT event_id FROM system.access.audit WHERE service_name = 'secrets' AND user_identity.email IN "
        "(SELECT executed_by FROM system.query.history WHERE statement_id IN ('q-000', 'q-001'))",
        _secret_reads_of_some_users),
    "qualify-latest-cluster": Legit(
        "SELECT cluster_id, cluster_name, data_security_mode, auto_termination_minutes, delete_time "
        "FROM system.compute.clusters "
        "QUALIFY row_number() OVER (PARTITION BY cluster_id ORDER BY change_time DESC) = 1",
        _latest_cluster_state),
    "like-rlike": Legit(
        "SELECT event_id FROM system.access.audit WHERE user_agent RLIKE '^databricks-sdk-py/[0-9.]+$' "
        "AND user_identity.email LIKE '%@corp.example' AND event_id LIKE 'e-01%' ORDER BY event_id",
        _sdk_events, ordered=True),
    "timestamp-literal-window": Legit(
        "SELECT count(*) AS events FROM system.access.audit "
        "WHERE event_time >= TIMESTAMP '2026-11-11 00:00:00' AND event_time < '2026-11-11 06:00:00'",
        _morning_window),
    "timestampdiff": Legit(
        "SELECT timestampdiff(MINUTE, min(event_time), max(event_time)) AS minutes FROM system.access.audit",
        _span_minutes),
    "warehouse-stats-vs-duckdb": Legit(
        "SELECT compute.warehouse_id AS warehouse, count(*) AS statements, "
        "count_if(execution_status = 'FAILED') AS failed, sum(read_bytes) AS bytes, "
        "avg(total_duration_ms) AS avg_ms FROM system.query.history GROUP BY ALL",
        _duckdb("SELECT compute.warehouse_id, count(*), count(*) FILTER (WHERE execution_status = 'FAILED'), "
                "sum(read_bytes), avg(total_duration_ms) FROM query.history GROUP BY compute.warehouse_id")),
    "lateral-view-explode-vs-duckdb": Legit(
        "SELECT k, count(*) AS n FROM system.access.audit "
        "LATERAL VIEW explode(map_keys(request_params)) t AS k GROUP BY k",
        _duckdb("SELECT k, count(*) FROM access.audit, unnest(map_keys(request_params)) AS t(k) GROUP BY k")),
    "dense_rank-vs-duckdb": Legit(
        "SELECT executed_by, dense_rank() OVER (ORDER BY sum(total_duration_ms) DESC) AS busiest "
        "FROM system.query.history GROUP BY executed_by",
        _duckdb("SELECT executed_by, dense_rank() OVER (ORDER BY sum(total_duration_ms) DESC) "
                "FROM query.history GROUP BY executed_by")),
    "limit-above-request-clamped": Legit(
        "SELECT event_id FROM system.access.audit ORDER BY event_time DESC LIMIT 500",
        _latest_events, ordered=True, limit=7, truncated=True),
    "limit-below-request-kept": Legit(
        "SELECT event_id FROM system.access.audit ORDER BY event_id LIMIT 3",
        _first_three_events, ordered=True, limit=100),
}


@pytest.mark.parametrize("case_id", list(LEGIT))
async def test_run_query_answers_legitimate_query_correctly(
    case_id: str, settings: Settings, reference: Reference
) -> None:
    case = LEGIT[case_id]
    async with connect_in_process(build_system_tables_server(settings)) as client:
        answer = await client.call("run_query", {"sql": case.sql, "limit": case.limit})
    result = answer.structured
    assert result is not None
    expected = case.expected(reference)
    rows = result["rows"]
    if case.ordered:
        assert rows == expected
    else:
        assert _multiset(rows) == _multiset(expected)
    assert result["row_count"] == len(rows)
    assert result["truncated"] is case.truncated
    if case.truncated:
        assert len(rows) == case.limit
    assert all(t in TABLES for t in result["tables"])


async def test_percentile_approx_lands_on_a_median_of_the_data(settings: Settings) -> None:
    # DuckDB's approx_quantile may pick either middle value; Databricks takes the lower one on small data.
    sql = ("SELECT compute.warehouse_id AS warehouse, percentile_approx(total_duration_ms, 0.5) AS p50 "
           "FROM system.query.history GROUP BY compute.warehouse_id")
    async with connect_in_process(build_system_tables_server(settings)) as client:
        answer = await client.call("run_query", {"sql": sql})
    assert answer.structured is not None
    got = dict(answer.structured["rows"])
    assert set(got) == {"wh-a", "wh-b"}
    for warehouse, p50 in got.items():
        values = sorted(q["total_duration_ms"] for q in QUERIES if q["warehouse_id"] == warehouse)
        middle = (len(values) - 1) // 2
        assert values[middle] <= p50 <= values[middle + 1], (warehouse, p50)


def test_guard_clamps_and_keeps_limits_in_the_executed_sql() -> None:
    clamped = _guard("SELECT event_id FROM system.access.audit LIMIT 500", limit=7)
    assert clamped.limit == 7 and clamped.duckdb_sql.endswith("LIMIT 8")
    kept = _guard("SELECT event_id FROM system.access.audit LIMIT 3", limit=100)
    assert kept.limit == 3 and kept.duckdb_sql.endswith("LIMIT 3")
    added = _guard("SELECT event_id FROM system.access.audit", limit=50)
    assert added.limit == 50 and "FROM access.audit" in added.duckdb_sql


# --- 3. the engine layer on its own -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        pytest.param("SELECT * FROM read_csv('/etc/passwd')", id="read_csv"),
        pytest.param("SELECT * FROM 'x.csv'", id="replacement-scan"),
        pytest.param("COPY (SELECT 1 AS x) TO '{out}'", id="copy-to"),
        pytest.param("COPY access.audit FROM '{out}'", id="copy-from"),
        pytest.param("SET threads = 1", id="set-threads"),
        pytest.param("SET enable_external_access = true", id="set-external-access"),
        pytest.param("SET lock_configuration = false", id="unlock-configuration"),
        pytest.param("ATTACH '{out}.duckdb' AS other", id="attach-file"),
        pytest.param("ATTACH ':memory:' AS other", id="attach-memory"),
        pytest.param("INSTALL httpfs", id="install"),
        pytest.param("LOAD httpfs", id="load"),
        pytest.param("CREATE TABLE t (x INT)", id="create-table"),
        pytest.param("CREATE TABLE access.t AS SELECT 1 AS x", id="create-table-as"),
        pytest.param("INSERT INTO access.audit (event_id) VALUES ('x')", id="insert"),
        pytest.param("DROP TABLE access.audit", id="drop"),
        pytest.param("EXPORT DATABASE '{out}-dump'", id="export-database"),
    ],
)
def test_engine_refuses_without_the_parser(sql: str, fixture_workspace: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    con = open_readonly(fixture_workspace)
    try:
        with pytest.raises(duckdb.Error):
            con.execute(sql.format(out=out)).fetchall()
    finally:
        con.close()
    assert not any(tmp_path.glob("out*")), "the engine wrote a file"


def test_engine_keeps_its_settings_after_refusals(fixture_workspace: Path) -> None:
    con = open_readonly(fixture_workspace)
    try:
        for sql in ("SET enable_external_access = true", "SET lock_configuration = false"):
            with pytest.raises(duckdb.Error):
                con.execute(sql)
        assert con.execute("SELECT current_setting('enable_external_access')").fetchone() == (False,)
        assert con.execute("SELECT current_setting('lock_configuration')").fetchone() == (True,)
    finally:
        con.close()


def _statement(duckdb_sql: str) -> Statement:
    return Statement(databricks_sql="-- not used: duckdb_sql is run as given", duckdb_sql=duckdb_sql)


async def test_engine_interrupts_a_long_query(fixture_workspace: Path) -> None:
    backend = DuckDBSystemTables(fixture_workspace)
    heavy = _statement("SELECT sum(a.range * b.range) FROM range(1000000000) a, range(1000000000) b")
    try:
        with pytest.raises(QueryTimeout, match="ran longer than"):
            await backend.execute(heavy, max_rows=10, max_chars=10_000, timeout_seconds=0.2)
        # The connection is still usable after the interrupt.
        after = await backend.execute(_statement("SELECT 42"), max_rows=1, max_chars=1000, timeout_seconds=5)
        assert after.rows == [[42]]
    finally:
        await backend.close()


async def test_a_cancelled_caller_stops_its_statement(fixture_workspace: Path) -> None:
    backend = DuckDBSystemTables(fixture_workspace, workers=1)
    heavy = _statement("SELECT sum(a.range * b.range) FROM range(1000000000) a, range(1000000000) b")
    try:
        with anyio.move_on_after(0.3) as scope:
            await backend.execute(heavy, max_rows=10, max_chars=10_000, timeout_seconds=60)
        assert scope.cancelled_caught
        # One worker: the next statement can only run once the cancelled one (10^18 rows) was interrupted.
        after = await backend.execute(_statement("SELECT 42"), max_rows=1, max_chars=1000, timeout_seconds=60)
        assert after.rows == [[42]]
    finally:
        await backend.close()


async def test_a_worker_keeps_its_cursor_and_a_failed_statement_gives_it_a_fresh_one(fixture_workspace: Path) -> None:
    """Opening and closing a cursor for every statement cost a served one-row query 70-130 us: each worker thread
    keeps one. A statement that fails or is stopped leaves its thread a new one, and closing closes them all."""
    from insight_mcp.agents.ingestion.backend import BackendError

    backend = DuckDBSystemTables(fixture_workspace, workers=1)
    answers = [await backend.execute(_statement(f"SELECT {i} AS n"), max_rows=1, max_chars=1000, timeout_seconds=5)
               for i in range(5)]
    assert [a.rows for a in answers] == [[[i]] for i in range(5)]
    [kept] = backend._thread_cursors  # one worker, one cursor, kept across five statements
    with pytest.raises(BackendError, match="could not run the query"):
        await backend.execute(_statement("SELECT 1 / 'x'"), max_rows=1, max_chars=1000, timeout_seconds=5)
    after = await backend.execute(_statement("SELECT 7 AS n"), max_rows=1, max_chars=1000, timeout_seconds=5)
    assert after.rows == [[7]]
    [fresh] = backend._thread_cursors
    assert fresh is not kept
    with pytest.raises(duckdb.Error):  # the failed statement's cursor was closed, not left open
        kept.execute("SELECT 1")
    await backend.close()
    assert backend._thread_cursors == []
    with pytest.raises(duckdb.Error):
        fresh.execute("SELECT 1")


def test_a_statement_stopped_before_a_worker_takes_it_never_starts() -> None:
    """A deadline or a cancelled caller can come before a worker has picked the statement up: it must not run."""
    from insight_mcp.agents.ingestion.duckdb_backend import _Running

    conn = duckdb.connect()
    try:
        early = _Running()
        early.stop()
        with pytest.raises(duckdb.InterruptException, match="before it started"):
            early.start(conn.cursor())
        late = _Running()
        late.start(conn.cursor())
        late.finish()
        late.stop()  # after the statement: nothing left to interrupt, and no error
    finally:
        conn.close()


async def test_engine_row_cap(fixture_workspace: Path) -> None:
    backend = DuckDBSystemTables(fixture_workspace)
    try:
        result = await backend.execute(
            _statement("SELECT event_id FROM access.audit ORDER BY event_id"), max_rows=25, max_chars=100_000,
            timeout_seconds=10,
        )
    finally:
        await backend.close()
    assert result.truncated is True
    assert result.row_count == 25 and len(result.rows) == 25
    assert result.rows == [[f"e-{i:04d}"] for i in range(25)]
    assert "rows" in (result.truncation_reason or "")


async def test_engine_exact_answer_is_not_truncated(fixture_workspace: Path) -> None:
    backend = DuckDBSystemTables(fixture_workspace)
    try:
        result = await backend.execute(
            _statement("SELECT cluster_id FROM compute.clusters"), max_rows=6, max_chars=100_000,
            timeout_seconds=10,
        )
    finally:
        await backend.close()
    assert result.truncated is False and result.row_count == len(CLUSTERS)


async def test_engine_character_cap(fixture_workspace: Path) -> None:
    backend = DuckDBSystemTables(fixture_workspace)
    try:
        result = await backend.execute(
            _statement("SELECT repeat('x', 500) AS blob FROM range(100)"), max_rows=100, max_chars=2_000,
            timeout_seconds=10,
        )
    finally:
        await backend.close()
    assert result.truncated is True
    assert 0 < result.row_count < 100
    assert "characters" in (result.truncation_reason or "")
    assert sum(len(json.dumps(row)) for row in result.rows) <= 2_000


# --- 4. untrusted text --------------------------------------------------------------------------------------

_FENCE = re.compile(r"<(untrusted-[0-9a-f]+)>\n(.*)\n</\1>\Z", re.DOTALL)


async def test_run_query_strips_hidden_characters_and_fences_the_text(settings: Settings) -> None:
    raw = next(r["user_agent"] for r in AUDIT if r["event_id"] == "e-0005")
    assert "\u202e" in raw and "\u200b" in raw, "the fixture must carry the payload"
    sql = "SELECT event_id, user_agent FROM system.access.audit WHERE event_id = 'e-0005'"
    async with connect_in_process(build_system_tables_server(settings)) as client:
        first = await client.call("run_query", {"sql": sql})
        second = await client.call("run_query", {"sql": sql})
    assert first.structured is not None
    [[event_id, user_agent]] = first.structured["rows"]
    assert event_id == "e-0005"
    assert user_agent == raw.replace("\u202e", "").replace("\u200b", "")
    assert "Ignore previous instructions" in user_agent
    boundaries = []
    for answer in (first, second):
        assert "\u202e" not in answer.text and "\u200b" not in answer.text
        fenced = _FENCE.search(answer.text)
        assert fenced, answer.text[:300]
        boundaries.append(fenced.group(1))
        assert answer.text.count(fenced.group(1)) == 4  # named twice in the warning, then open and close
        assert json.loads(fenced.group(2))["rows"] == [["e-0005", user_agent]]
    assert boundaries[0] != boundaries[1]


def _typed_duckdb(sql: str) -> str:
    from insight_mcp.agents.ingestion.catalog import column_types

    return guard_query(sql, allowed_tables=TABLES.keys(), limit=100, row_cap=100, types=column_types()).duckdb_sql


def test_round_of_a_double_is_half_up_on_its_decimal_text_as_on_databricks() -> None:
    """Spark rounds Double.toString(x) half up: round(20637.35, 1) is 20637.4 and round(2.675, 2) is 2.68. DuckDB 2.0.1
    rounds the binary value (20637.3, 2.67), and 2.0.0 multiplied first (1.005 gave 1.0): the dialect rewrites the
    round of a DOUBLE so that the network tools and the rules answer as on Databricks, on any DuckDB."""
    sql = _typed_duckdb(
        "SELECT round(CAST(20637.35 AS DOUBLE), 1) AS a, round(CAST(0.125 AS DOUBLE), 2) AS b, "
        "round(CAST(-2.5 AS DOUBLE)) AS c, round(CAST(2.675 AS DOUBLE), 2) AS d, round(CAST(1.005 AS DOUBLE), 2) AS e, "
        "round(CAST(-0.285 AS DOUBLE), 2) AS f, round(CAST(0.1 AS FLOAT) + CAST(0.2 AS FLOAT), 1) AS g")
    assert "TRY_CAST" in sql, sql
    got = duckdb.connect().execute(sql).fetchall()[0]
    assert got[:6] == (20637.4, 0.13, -3.0, 2.68, 1.01, -0.29), f"DuckDB {duckdb.__version__}: {sql}"
    assert got[6] == pytest.approx(0.3, abs=1e-6)


def test_the_rewritten_round_keeps_values_it_cannot_write_as_decimals_and_the_types_of_the_rest() -> None:
    cursor = duckdb.connect()
    sql = _typed_duckdb(
        "SELECT round(x, 2) AS r FROM VALUES (CAST('NaN' AS DOUBLE)), (CAST('Infinity' AS DOUBLE)), "
        "(CAST('-Infinity' AS DOUBLE)), (1e300), (CAST(NULL AS DOUBLE)), (123456789012345678.0D) AS t(x)")
    rows = [r for (r,) in cursor.execute(sql).fetchall()]
    assert rows[0] != rows[0] and rows[1:4] == [float("inf"), float("-inf"), 1e300], sql
    assert rows[4] is None and rows[5] == 123456789012345678.0
    # An integer keeps DuckDB's round and its type; a DECIMAL keeps its exact value.
    ints = _typed_duckdb("SELECT round(CAST(15 AS INT), 1) AS i, round(CAST(2.675 AS DECIMAL(10,3)), 2) AS d, "
                         "round(CAST(12.5 AS DECIMAL(10,1)) / 2, 1) AS m")
    assert ints.count("TRY_CAST") == 2, ints
    kinds = cursor.execute(f"DESCRIBE {ints}").fetchall()
    assert kinds[0][1] == "INTEGER" and kinds[1][1].startswith("DECIMAL(")
    assert cursor.execute(ints).fetchall() == [(15, Decimal("2.68"), 6.3)]  # 6.25 is a DOUBLE in DuckDB: half up


def test_rounds_over_table_columns_and_aggregates_are_typed_from_the_catalog() -> None:
    sql = _typed_duckdb("SELECT round(avg(response.status_code), 1) AS a, round(count(*), 1) AS n, "
                        "round(max(event_time), 1) AS t FROM system.access.audit")
    assert sql.count("TRY_CAST") == 1, sql  # only the average: a count is an integer, a timestamp no number


def test_deeply_nested_rounds_do_not_grow_the_statement_exponentially() -> None:
    expression = "CAST(2.675 AS DOUBLE)"
    for digits in range(12, 0, -1):
        expression = f"round({expression}, {digits})"
    sql = _typed_duckdb(f"SELECT {expression} AS v")
    assert sql.count("TRY_CAST") <= 7 and len(sql) < 4000, len(sql)
    assert duckdb.connect().execute(sql).fetchall() == [(2.7,)]

def test_a_query_nested_past_what_the_parser_can_check_is_refused_with_a_reason() -> None:
    expression = "1"
    for _ in range(300):
        expression = f"abs({expression})"
    with pytest.raises(QueryRefused) as refused:
        _guard(f"SELECT {expression} AS v FROM system.access.audit")
    assert refused.value.rule == "parse" and "too deeply" in refused.value.detail


def test_one_renamer_points_system_tables_where_each_engine_keeps_them() -> None:
    from insight_mcp.agents.ingestion.warehouse_backend import placed
    from insight_mcp.agents.sql.dialect import rename_catalog, rename_tables

    sql = ("WITH audit AS (SELECT 1 AS n) SELECT a.event_id FROM System.Access.Audit AS a "
           "JOIN system.billing.usage AS u ON a.workspace_id = u.workspace_id JOIN audit ON 1 = 1 "
           "JOIN other.x.t ON 1 = 1")
    tree = sqlglot.parse_one(sql, read="databricks")
    embedded = rename_catalog(tree).sql("duckdb")
    assert "FROM access.audit AS a JOIN billing.usage AS u" in embedded and "JOIN other.x.t" in embedded
    assert "system" not in embedded.lower() and "JOIN audit ON" in embedded  # the CTE is not a table to move
    spark = rename_tables(tree, lambda schema, table: exp.table_(f"v_{schema}_{table}")).sql("spark")
    assert "FROM v_access_audit AS a JOIN v_billing_usage AS u" in spark
    warehouse, schema = placed(sql, "prod_system")
    assert "FROM prod_system.access.audit AS a JOIN prod_system.billing.usage AS u" in warehouse and schema is None
    assert tree.sql("databricks").startswith("WITH audit AS"), "the caller's tree is left as it was"
    # what a reference carries besides its name stays with it
    travelled = rename_catalog(sqlglot.parse_one("SELECT * FROM system.access.audit VERSION AS OF 3",
                                                 read="databricks"))
    assert travelled.sql("duckdb") == "SELECT * FROM access.audit FOR VERSION AS OF 3"

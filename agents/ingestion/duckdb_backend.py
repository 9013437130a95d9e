"""The embedded workspace: system tables in one DuckDB file, opened read-only and locked down for queries."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import duckdb

from insight_mcp.agents.ingestion.backend import (
    BackendError,
    ColumnInfo,
    QueryResult,
    QueryTimeout,
    Statement,
    TableStats,
    TransientBackendError,
    json_value,
)
from insight_mcp.agents.ingestion.catalog import get_table
from insight_mcp.agents.sql.dialect import databricks_type, to_duckdb

# The engine layer of run_query's safety: no files, no URLs, no extensions, and settings nobody can change.
LOCKED_CONFIG: dict[str, Any] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
}


def open_readonly(path: Path, *, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """Open the workspace for reading only, with the locked configuration."""
    if not path.exists():
        raise BackendError(
            f"no workspace at {path}: run `insight-mcp workspace generate` for the demo estate, "
            "or `insight-mcp workspace load TABLE PATH` to load an export"
        )
    config = dict(LOCKED_CONFIG)
    if threads:
        config["threads"] = threads
    try:
        conn = duckdb.connect(str(path), read_only=True, config=config)
    except duckdb.Error as exc:
        if "lock" in str(exc).lower():  # another process is writing it (a load or a generate): it will let go
            raise TransientBackendError(f"workspace {path} is locked by another process that is writing it; "
                                        "try again when that load or generate has finished") from None
        raise BackendError(f"cannot open workspace {path}: {_engine_message(exc)}") from None
    # Timestamps are stored as UTC; then nobody may change any setting again. A second connection to the
    # same file in this process shares the first one's database instance, already set and locked.
    timezone, locked = conn.execute(
        "SELECT current_setting('TimeZone'), current_setting('lock_configuration')"
    ).fetchone()  # type: ignore[misc]
    if not locked:
        if timezone not in ("UTC", "Etc/UTC"):
            conn.execute("SET GLOBAL TimeZone = 'UTC'")
        conn.execute("SET GLOBAL lock_configuration = true")
    return conn


class DuckDBSystemTables:
    """SystemTables over the embedded workspace file; every statement runs on its own cursor with a timeout."""

    kind = "duckdb"

    def __init__(self, path: Path, *, threads: int | None = None, workers: int = 16) -> None:
        self.path = path
        self._threads = threads
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._running: set[duckdb.DuckDBPyConnection] = set()

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="insight-query")
            return self._pool

    def _connection(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            if self._conn is None:
                self._conn = open_readonly(self.path, threads=self._threads)
            return self._conn

    def _run(self, cursor: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any], max_rows: int,
             max_chars: int) -> QueryResult:
        started = time.perf_counter()
        with self._lock:
            self._running.add(cursor)
        try:
            relation = cursor.execute(sql, params or None)
            description = relation.description or []
            raw = relation.fetchmany(max_rows + 1)
        finally:
            with self._lock:
                self._running.discard(cursor)
            cursor.close()
        elapsed_ms = (time.perf_counter() - started) * 1000
        columns = [ColumnInfo(name=d[0], type=databricks_type(str(d[1]))) for d in description]
        truncated, reason = len(raw) > max_rows, None
        if truncated:
            raw, reason = raw[:max_rows], f"more than {max_rows} rows; only the first {max_rows} are returned"
        rows: list[list[Any]] = []
        used = 0
        for record in raw:
            row = [json_value(v) for v in record]
            used += len(json.dumps(row, default=str, ensure_ascii=False))
            if used > max_chars and rows:
                truncated, reason = True, f"the answer passed {max_chars} characters; {len(rows)} rows returned"
                break
            rows.append(row)
        return QueryResult(
            columns=columns, rows=rows, row_count=len(rows), truncated=truncated, truncation_reason=reason,
            elapsed_ms=round(elapsed_ms, 3),
        )

    async def execute(
        self, statement: Statement, *, max_rows: int, max_chars: int, timeout_seconds: float
    ) -> QueryResult:
        """Run on the backend's own threads; a loop timer interrupts the cursor at the deadline or on cancellation."""
        sql = statement.duckdb_sql or to_duckdb(statement.databricks_sql)
        cursor = self._connection().cursor()
        loop = asyncio.get_running_loop()
        timed_out = False

        def interrupt() -> None:
            with contextlib.suppress(duckdb.Error):  # the statement may have just finished and closed the cursor
                cursor.interrupt()

        def expire() -> None:
            nonlocal timed_out
            timed_out = True
            interrupt()

        deadline = loop.call_later(timeout_seconds, expire)
        job = loop.run_in_executor(self._executor(), self._run, cursor, sql, statement.params, max_rows, max_chars)
        try:
            return await job
        except asyncio.CancelledError:
            interrupt()  # the caller went away: stop the statement rather than let it run on
            raise
        except duckdb.InterruptException:
            if timed_out:
                raise QueryTimeout(
                    f"the query ran longer than {timeout_seconds:g} s and was stopped; narrow the time window "
                    "or aggregate more"
                ) from None
            raise BackendError("the query was interrupted before it finished") from None
        except duckdb.Error as exc:
            raise BackendError(_engine_message(exc)) from None
        finally:
            deadline.cancel()

    def _stats(self, tables: list[str]) -> list[TableStats]:
        cursor = self._connection().cursor()
        try:
            present = {
                f"system.{s}.{t}"
                for s, t in cursor.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()
            }
            out = []
            for name in tables:
                spec = get_table(name)
                if name not in present:
                    out.append(TableStats(name=name, rows=0, present=False))
                    continue
                count, first, last = cursor.execute(
                    f'SELECT count(*), min("{spec.time_column}"), max("{spec.time_column}") FROM {spec.local_name}'
                ).fetchone()  # type: ignore[misc]
                out.append(TableStats(name=name, rows=count, first_event=first, last_event=last))
            return out
        finally:
            cursor.close()

    async def table_stats(self, tables: list[str]) -> list[TableStats]:
        """On the backend's own threads, like every statement, so close() waits for it too."""
        return await asyncio.get_running_loop().run_in_executor(self._executor(), self._stats, tables)

    async def close(self) -> None:
        """Stop running statements, let their threads finish, then close the connection."""
        with self._lock:
            conn, pool, running = self._conn, self._pool, list(self._running)
            self._conn, self._pool = None, None
        for cursor in running:
            with contextlib.suppress(duckdb.Error):
                cursor.interrupt()
        if pool is not None:
            await anyio.to_thread.run_sync(pool.shutdown)
        if conn is not None:
            conn.close()


def _engine_message(exc: duckdb.Error) -> str:
    """The engine's own words, first line only, without internal file paths."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"the engine could not run the query: {text[:400]}"

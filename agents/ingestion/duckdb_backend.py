"""The embedded workspace: system tables in one DuckDB file, opened read-only and locked down for queries.

One connection serves every caller in the process, tools and detections alike. Beside the read-only workspace it
attaches an in-memory `scratch` database, where the detection runner keeps its shared rollups and slices; the guard
lets no query name it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import anyio
import duckdb
import pyarrow as pa

from insight_mcp.agents.ingestion.answer_builder import answer_from_arrow, answer_from_rows
from insight_mcp.agents.ingestion.backend import (
    BackendError,
    ColumnInfo,
    QueryResult,
    QueryTimeout,
    Statement,
    TableStats,
    TransientBackendError,
)
from insight_mcp.agents.ingestion.catalog import column_types, get_table
from insight_mcp.agents.sql.dialect import databricks_type, to_duckdb

# The engine layer of run_query's safety: no files, no URLs, no extensions, and settings nobody can change.
LOCKED_CONFIG: dict[str, Any] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
}
SCRATCH = "scratch"  # the in-memory database beside the workspace, for the detection runner's shared tables
# DuckDB warns that Arrow from an executed cursor copies the rows once more: for at most SMALL_ANSWER rows with an
# interval column that is nothing beside executing the statement a second time, so the warning is not for our callers.
_COPY_WARNING = "Arrow output on a DB-API result makes an extra copy"
SMALL_ANSWER = 100  # answers capped at up to this many rows are read as Python rows, larger ones through Arrow
T = TypeVar("T")
_SCRATCH_LOCKS: dict[str, threading.Lock] = {}
_SCRATCH_GUARD = threading.Lock()


def scratch_lock(path: Path) -> threading.Lock:
    """One lock per workspace file in this process: every connection to the file shares one scratch database."""
    key = str(path.resolve())
    with _SCRATCH_GUARD:
        return _SCRATCH_LOCKS.setdefault(key, threading.Lock())


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
    conn.execute(f"ATTACH IF NOT EXISTS ':memory:' AS {SCRATCH} (READ_WRITE)")
    return conn


def _from_reader(columns: list[ColumnInfo], reader: pa.RecordBatchReader, max_rows: int, max_chars: int,
                 started: float) -> QueryResult:
    """The capped answer from an Arrow stream, read no further than one row past the cap."""
    batches, count = [], 0
    for batch in reader:
        batches.append(batch)
        count += batch.num_rows
        if count > max_rows:
            break
    table = pa.Table.from_batches(batches, schema=reader.schema)
    return answer_from_arrow(columns, table, more=False, max_rows=max_rows, max_chars=max_chars,
                             elapsed_ms=(time.perf_counter() - started) * 1000)


class _Running:
    """The cursor a statement runs on, once a worker thread has it, so that the event loop can interrupt it; a stop
    that comes before the statement starts keeps it from starting."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cursor: duckdb.DuckDBPyConnection | None = None
        self._stopped = False

    def start(self, cursor: duckdb.DuckDBPyConnection) -> None:
        with self._lock:
            if self._stopped:
                raise duckdb.InterruptException("the statement was stopped before it started")
            self._cursor = cursor

    def finish(self) -> None:
        with self._lock:
            self._cursor = None

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._cursor is not None:
                with contextlib.suppress(duckdb.Error):  # the statement may have just finished
                    self._cursor.interrupt()


class DuckDBSystemTables:
    """SystemTables over the embedded workspace file; every statement runs with a timeout, on a cursor of the worker
    thread that runs it."""

    kind = "duckdb"

    def __init__(self, path: Path, *, threads: int | None = None, workers: int = 16) -> None:
        self.path = path
        self._threads = threads
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._running: set[duckdb.DuckDBPyConnection] = set()
        # Each worker thread keeps one cursor between statements: in a server, opening and closing a cursor cost a
        # one-row query 70-130 us, about what the rest of its answer costs.
        self._local = threading.local()
        self._thread_cursors: list[duckdb.DuckDBPyConnection] = []

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

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor on the one shared connection, interrupted if the backend closes while it runs."""
        cursor = self._connection().cursor()
        with self._lock:
            self._running.add(cursor)
        return cursor

    def release(self, cursor: duckdb.DuckDBPyConnection) -> None:
        with self._lock:
            self._running.discard(cursor)
        with contextlib.suppress(duckdb.Error):
            cursor.close()

    async def run_sync(self, work: Callable[..., T], *args: Any) -> T:
        """Run trusted work (the detection runner's) on the backend's own threads, so close() waits for it."""
        return await asyncio.get_running_loop().run_in_executor(self._executor(), work, *args)

    def scratch_lock(self) -> threading.Lock:
        """Held while a runner builds and reads the scratch tables: they are shared by every connection to the file."""
        return scratch_lock(self.path)

    def _thread_cursor(self) -> duckdb.DuckDBPyConnection:
        """This worker thread's cursor on the current connection, opened on its first statement."""
        kept = getattr(self._local, "kept", None)
        if kept is not None and kept[0] is self._conn:  # the connection still open: no lock needed to see that
            return kept[1]  # type: ignore[no-any-return]
        conn = self._connection()
        cursor = conn.cursor()
        with self._lock:
            self._thread_cursors.append(cursor)
        self._local.kept = (conn, cursor)
        return cursor

    def _drop_thread_cursor(self) -> None:
        """After a failed statement: the next one on this thread starts on a fresh cursor."""
        kept = getattr(self._local, "kept", None)
        self._local.kept = None
        if kept is not None:
            with self._lock:
                if kept[1] in self._thread_cursors:
                    self._thread_cursors.remove(kept[1])
            with contextlib.suppress(duckdb.Error):
                kept[1].close()

    def _run_call(self, running: _Running, sql: str, params: dict[str, Any], max_rows: int,
                  max_chars: int) -> QueryResult:
        cursor = self._thread_cursor()
        running.start(cursor)
        try:
            return self._run(cursor, sql, params, max_rows, max_chars)
        except BaseException:
            self._drop_thread_cursor()
            raise
        finally:
            running.finish()

    def _run(self, cursor: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any], max_rows: int,
             max_chars: int) -> QueryResult:
        # The cursor is this worker's kept one: close() interrupts it with the others the backend keeps.
        started = time.perf_counter()
        if max_rows <= SMALL_ANSWER:
            return self._small(cursor, sql, params, max_rows, max_chars, started)
        relation = cursor.sql(sql, params=params or None)
        if relation is None:  # not a query: nothing to answer (the guard lets none through)
            raise BackendError("the statement returned no result")
        columns = [ColumnInfo(name=name, type=databricks_type(str(kind)))
                   for name, kind in zip(relation.columns, relation.types, strict=True)]
        return _from_reader(columns, relation.to_arrow_reader(max_rows + 1), max_rows, max_chars, started)

    @staticmethod
    def _small(cursor: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any], max_rows: int, max_chars: int,
               started: float) -> QueryResult:
        """A capped answer of a few rows as Python rows: for those, Arrow's reader costs more than the conversion it
        saves. A result with an interval column is read as Arrow from the same execution (Python's timedelta has no
        months: Arrow says it right)."""
        cursor.execute(sql, params or None)
        try:
            description = cursor.description or []
            kinds = [str(d[1]) for d in description]
            columns = [ColumnInfo(name=d[0], type=databricks_type(kind))
                       for d, kind in zip(description, kinds, strict=True)]
            if any(kind.startswith("INTERVAL") for kind in kinds):
                # Filtered here rather than at import, where a caller's catch_warnings block could undo it.
                warnings.filterwarnings("ignore", message=_COPY_WARNING, category=UserWarning)
                return _from_reader(columns, cursor.to_arrow_reader(max_rows + 1), max_rows, max_chars, started)
            records = cursor.fetchmany(max_rows + 1)
        finally:
            # The rows past the cap are left unread, and DuckDB refuses the kept cursor's next statement while a
            # result is pending ("connection has an unfinished result"): drop them. A failure here must not hide
            # the statement's own (an interrupt at the deadline); the cursor is replaced after any failure anyway.
            with contextlib.suppress(duckdb.Error):
                cursor.abort()
        more = len(records) > max_rows
        return answer_from_rows(columns, records[:max_rows], more=more, max_rows=max_rows, max_chars=max_chars,
                                elapsed_ms=(time.perf_counter() - started) * 1000)

    async def execute(
        self, statement: Statement, *, max_rows: int, max_chars: int, timeout_seconds: float
    ) -> QueryResult:
        """Run on the backend's own threads; a loop timer interrupts the cursor at the deadline or on cancellation."""
        sql = statement.duckdb_sql or to_duckdb(statement.databricks_sql, column_types())
        loop = asyncio.get_running_loop()
        running = _Running()
        timed_out = False

        def expire() -> None:
            nonlocal timed_out
            timed_out = True
            running.stop()

        deadline = loop.call_later(timeout_seconds, expire)
        job = loop.run_in_executor(self._executor(), self._run_call, running, sql, statement.params, max_rows,
                                   max_chars)
        try:
            return await job
        except asyncio.CancelledError:
            running.stop()  # the caller went away: stop the statement rather than let it run on
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
                for s, t in cursor.execute("SELECT schema_name, table_name FROM duckdb_tables() "
                                           f"WHERE database_name <> '{SCRATCH}'").fetchall()
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

    def _detach(self) -> tuple[list[duckdb.DuckDBPyConnection], ThreadPoolExecutor | None]:
        """Take the connection, the workers' cursors and the pool away from new callers; interrupt what runs."""
        with self._lock:
            conn, pool = self._conn, self._pool
            kept, self._thread_cursors = self._thread_cursors, []
            running = [*self._running, *kept]  # the workers' kept cursors, idle or running a statement
            self._conn, self._pool = None, None
        for cursor in running:
            with contextlib.suppress(duckdb.Error):
                cursor.interrupt()
        return [*kept, *([conn] if conn is not None else [])], pool

    @staticmethod
    def _close_all(connections: list[duckdb.DuckDBPyConnection]) -> None:
        """The workers' cursors, then the connection they came from."""
        for conn in connections:
            with contextlib.suppress(duckdb.Error):
                conn.close()

    async def close(self) -> None:
        """Stop running statements, let their threads finish, then close the cursors and the connection."""
        connections, pool = self._detach()
        if pool is not None:
            await anyio.to_thread.run_sync(pool.shutdown)
        self._close_all(connections)

    def close_sync(self) -> None:
        """close() for a caller with no event loop (scripts, and an engine that opened its own backend)."""
        connections, pool = self._detach()
        if pool is not None:
            pool.shutdown()
        self._close_all(connections)


def _engine_message(exc: duckdb.Error) -> str:
    """The engine's own words, first line only, without internal file paths."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"the engine could not run the query: {text[:400]}"

"""The system tables on Spark SQL: local mode for laptops and tests, Spark Connect for a cluster or Databricks Connect.

Statements arrive in the Databricks dialect, already guarded. The one change Spark needs is where the tables are:
`system.<schema>.<table>` becomes a temporary view over the files at the configured folder, or the same name in a
configured catalog. Parameters stay named (`:since`) and are bound by Spark, never pasted into the text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import threading
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import sqlglot
from sqlglot import exp

from insight_mcp.agents.ingestion.answer_builder import answer_from_arrow
from insight_mcp.agents.ingestion.backend import (
    BackendError,
    ColumnInfo,
    QueryResult,
    QueryTimeout,
    Statement,
    TableStats,
    TransientBackendError,
)
from insight_mcp.agents.ingestion.catalog import TABLES, get_table
from insight_mcp.agents.settings import SparkSettings
from insight_mcp.agents.sql.dialect import CATALOG

VIEW_PREFIX = "insight_"
LOG_CONFIG = Path(__file__).with_name("spark_log4j2.properties")  # the driver JVM's: errors only, on stderr
_SESSION_LOCK = threading.Lock()
_URL_SECRET = re.compile(r"(;\s*(token|password|x-databricks-[a-z-]*)\s*=)[^;]*", re.IGNORECASE)


class SparkUnavailable(BackendError):
    """pyspark is not installed, or Spark cannot start or be reached."""


def redact_remote(remote: str) -> str:
    """A Spark Connect URL fit to show: any token or password parameter replaced."""
    return _URL_SECRET.sub(r"\1***", remote)


def view_name(table: str) -> str:
    spec = get_table(table)
    return f"{VIEW_PREFIX}{spec.schema_name}_{spec.table_name}"


def table_folder(tables_dir: Path, table: str) -> Path:
    """Where a system table's files live under the Spark tables folder: <schema>/<table>."""
    spec = get_table(table)
    return tables_dir / spec.schema_name / spec.table_name


def _spark_message(exc: BaseException, remote: str | None) -> str:
    """Spark's own words, first line only, without JVM stack frames or the remote's secrets."""
    text = str(exc).strip()
    for marker in ("\n", "\tat ", " JVM stacktrace"):
        text = text.split(marker, 1)[0]
    text = re.sub(r"SQLSTATE: \w+", "", text).strip()
    if remote:
        text = text.replace(remote, redact_remote(remote))
    return text[:400] or type(exc).__name__


def _quiet_query_loggers() -> None:
    """pyspark logs every failed query with its whole JVM stack to stderr, on loggers of its own; the caller already
    gets Spark's message as the backend's error, so a server's log would only fill with stacks of users' typos."""
    from pyspark.logger import PySparkLogger

    for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
        PySparkLogger.getLogger(name).setLevel(logging.CRITICAL)


def _grpc_reason(exc: BaseException, remote: str) -> str:
    """gRPC's status and details when the failure carries them (its repr spans lines), else Spark's own words."""
    seen: BaseException | None = exc
    while seen is not None:
        code, details = getattr(seen, "code", None), getattr(seen, "details", None)
        if callable(code) and callable(details):
            with contextlib.suppress(Exception):
                status = getattr(code(), "name", str(code()))
                return _spark_message(RuntimeError(f"{status}: {details()}"), remote)
        seen = seen.__cause__ or seen.__context__
    return _spark_message(exc, remote)


class SparkSystemTables:
    """SystemTables on a Spark session of its own (local mode, or a Spark Connect remote)."""

    kind = "spark"

    def __init__(self, config: SparkSettings, *, tables_dir: Path, remote: str | None = None,
                 workers: int = 8) -> None:
        self.config = config
        self.tables_dir = tables_dir
        self._remote = remote
        self._session: Any = None
        self._views: set[str] = set()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="insight-spark")

    # --- the session ------------------------------------------------------------------------------------------

    def _where(self) -> str:
        return f"the Spark Connect server at {redact_remote(self._remote)} (INSIGHT_SPARK_REMOTE)" if self._remote \
            else f"local Spark ({self.config.master})"

    def _start(self) -> Any:
        # pyspark warns, once per process and at whichever import comes first (some happen while results are read),
        # that it does not fully support the pandas installed: it does not use pandas here.
        warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
        try:
            from pyspark.sql import SparkSession
        except ImportError:
            raise SparkUnavailable("INSIGHT_BACKEND=spark needs pyspark: install the `spark` extra "
                                   "(uv sync --extra spark, or pip install 'insight-mcp[spark]')") from None
        _quiet_query_loggers()
        if self._remote:
            return self._connect(SparkSession)
        with _SESSION_LOCK:  # one JVM per process; each backend gets a session of its own (its own views)
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # local mode serves nobody else
            builder = (
                SparkSession.Builder().master(self.config.master).appName("insight-mcp")
                .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
                .config("spark.sql.session.timeZone", "UTC")
                .config("spark.driver.memory", self.config.driver_memory)
                .config("spark.sql.shuffle.partitions", "2")
                .config("spark.sql.ansi.enabled", "true")
                # A short-lived local JVM spends much of its time warming up: the quick compiler alone measured
                # a quarter faster on the rule suite's first run (with room to keep compiled code: 48 MB filled up).
                .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=256m "
                        f"-Dlog4j2.configurationFile={LOG_CONFIG.as_uri()}")
            )
            try:
                base = builder.getOrCreate()
                base.sparkContext.setLogLevel("ERROR")
            except Exception as exc:  # no Java, or the JVM would not start
                raise SparkUnavailable(f"local Spark could not start ({self.config.master}): "
                                       f"{_spark_message(exc, None)}; Spark needs a Java 17+ runtime "
                                       "(JAVA_HOME)") from None
            session = base.newSession()
        session.conf.set("spark.sql.session.timeZone", "UTC")
        return session

    def _connect(self, session_class: Any) -> Any:
        remote = self._remote or ""
        # pyspark marks the whole process as Spark Connect when a remote session is built; our sessions are
        # objects of their own, so put the mark back and local Spark keeps working beside a remote.
        marked = os.environ.get("SPARK_CONNECT_MODE_ENABLED")
        try:
            return self._connect_now(session_class, remote)
        finally:
            if marked is None:
                os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)

    def _connect_now(self, session_class: Any, remote: str) -> Any:
        session = None
        try:
            with warnings.catch_warnings():  # "retries exceeded", before the error says what was tried
                warnings.filterwarnings("ignore", message=r"\[RETRIES_EXCEEDED\]")
                session = session_class.Builder().remote(remote).create()  # a fresh builder: the shared one keeps
                from pyspark.sql.connect.client.retries import DefaultPolicy  # options

                # The client's own policy retries a refused connection for ten minutes: a person is waiting here.
                session.client.set_retry_policies([DefaultPolicy(
                    max_retries=4, backoff_multiplier=2.0, initial_backoff=250, max_backoff=2000,
                    max_server_retry_delay=int(self.config.connect_timeout_seconds * 1000))])
                session.conf.set("spark.sql.session.timeZone", "UTC")
                session.sql("SELECT 1").collect()  # the builder is lazy: reach the server now, not at a query
            return session
        except ImportError as exc:
            raise SparkUnavailable(f"Spark Connect needs the `spark` extra's client libraries: {exc.name}") from None
        except Exception as exc:
            if session is not None:  # else, at exit, the client asks the server out of reach again, with retries
                with contextlib.suppress(Exception):
                    session.client.close()
            raise SparkUnavailable(f"cannot reach {self._where()}: {_grpc_reason(exc, remote)}; check the host, "
                                   "the port and that the server is running") from None

    def _session_now(self) -> Any:
        with self._lock:
            if self._session is None:
                self._session = self._start()
            return self._session

    def _register(self, session: Any, table: str) -> bool:
        """Make the table's view over its files; False when this workspace has no such table."""
        name = view_name(table)
        if name in self._views:
            return True
        folder = table_folder(self.tables_dir, table)
        if not folder.exists():
            return False
        reader = session.read.format(self.config.table_format)
        reader.load(str(folder)).createOrReplaceTempView(name)
        self._views.add(name)
        return True

    def _target(self, session: Any, schema_name: str, table_name: str) -> exp.Table:
        full = f"{CATALOG}.{schema_name}.{table_name}"
        if self.config.catalog:
            return exp.table_(table_name, db=schema_name, catalog=self.config.catalog)
        if full in TABLES and not self._register(session, full):
            raise BackendError(f"Spark has no table {full}: nothing at {table_folder(self.tables_dir, full)}; run "
                               "`insight-mcp workspace load --backend spark` or `workspace generate --backend "
                               "spark`, or set INSIGHT_SPARK__TABLES_DIR")
        return exp.table_(view_name(full) if full in TABLES else table_name)

    def spark_sql(self, databricks_sql: str, session: Any) -> str:
        """The statement as Spark runs it: `system.<schema>.<table>` pointed at the view or the catalog."""
        tree = sqlglot.parse_one(databricks_sql, read="databricks")

        def swap(node: exp.Expression) -> exp.Expression:
            if isinstance(node, exp.Table) and node.catalog.lower() == CATALOG and isinstance(node.this,
                                                                                              exp.Identifier):
                new = self._target(session, node.db.lower(), node.name.lower())
                for key in ("alias", "joins", "pivots", "laterals"):
                    if node.args.get(key) is not None:
                        new.set(key, node.args[key])
                return new
            return node

        return tree.transform(swap, copy=True).sql("spark")

    # --- statements ------------------------------------------------------------------------------------------

    def _run(self, statement: Statement, max_rows: int, max_chars: int, tag: str) -> QueryResult:
        started = time.perf_counter()
        session = self._session_now()
        sql = self.spark_sql(statement.databricks_sql, session)
        session.addTag(tag)
        try:
            frame = session.sql(sql, args=statement.params or None)
            columns = [ColumnInfo(name=f.name, type=f.dataType.simpleString()) for f in frame.schema.fields]
            table = frame.limit(max_rows + 1).toArrow()
        finally:
            with contextlib.suppress(Exception):
                session.removeTag(tag)
        elapsed_ms = (time.perf_counter() - started) * 1000
        return answer_from_arrow(columns, table, more=False, max_rows=max_rows, max_chars=max_chars,
                                 elapsed_ms=elapsed_ms)

    async def execute(self, statement: Statement, *, max_rows: int, max_chars: int,
                      timeout_seconds: float) -> QueryResult:
        """Run on the backend's threads under a tag; at the deadline, or when the caller goes away, the tag's jobs
        are interrupted."""
        loop = asyncio.get_running_loop()
        tag = f"insight-{uuid.uuid4().hex[:16]}"
        job = loop.run_in_executor(self._pool, self._run, statement, max_rows, max_chars, tag)
        try:
            return await asyncio.wait_for(asyncio.shield(job), timeout_seconds)
        except TimeoutError:
            self._interrupt(tag)
            raise QueryTimeout(f"the query ran longer than {timeout_seconds:g} s and was stopped; narrow the time "
                               "window or aggregate more") from None
        except asyncio.CancelledError:
            self._interrupt(tag)
            raise
        except BackendError:
            raise
        except Exception as exc:
            raise self._error(exc) from None

    def _interrupt(self, tag: str) -> None:
        session = self._session
        if session is not None:
            with contextlib.suppress(Exception):
                session.interruptTag(tag)

    def _error(self, exc: BaseException) -> BackendError:
        message = _spark_message(exc, self._remote)
        name = type(exc).__name__
        if "TABLE_OR_VIEW_NOT_FOUND" in message or "SCHEMA_NOT_FOUND" in message:
            return BackendError(f"Spark cannot see a table the query reads ({self._where()}): {message}")
        if name in {"SparkConnectGrpcException", "RetriesExceeded"} and "UNAVAILABLE" in message.upper():
            return TransientBackendError(f"{self._where()} is unavailable: {message}")
        return BackendError(f"Spark could not run the query: {message}")

    def _stats(self, tables: list[str]) -> list[TableStats]:
        session = self._session_now()
        out = []
        for name in tables:
            spec = get_table(name)
            try:
                target = self._target(session, spec.schema_name, spec.table_name).sql("spark")
            except BackendError:
                out.append(TableStats(name=name, rows=0, present=False))
                continue
            try:
                row = session.sql(f"SELECT count(*) AS n, min(`{spec.time_column}`) AS a, "
                                  f"max(`{spec.time_column}`) AS b FROM {target}").toArrow().to_pylist()[0]
            except Exception as exc:
                if "TABLE_OR_VIEW_NOT_FOUND" in str(exc):
                    out.append(TableStats(name=name, rows=0, present=False))
                    continue
                raise self._error(exc) from None
            out.append(TableStats(name=name, rows=row["n"], first_event=row["a"], last_event=row["b"]))
        return out

    async def table_stats(self, tables: list[str]) -> list[TableStats]:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._stats, tables)

    def refresh(self) -> None:
        """Forget the views, so the next statement reads the files as they are now (after a load)."""
        with self._lock:
            session, views = self._session, set(self._views)
            self._views.clear()
        if session is not None:
            for view in views:
                with contextlib.suppress(Exception):
                    session.catalog.dropTempView(view)

    async def close(self) -> None:
        """Drop this backend's views and, for a remote, its session; local Spark's JVM stays for the process."""
        self.refresh()
        with self._lock:
            session, self._session = self._session, None
        if session is not None and self._remote:
            with contextlib.suppress(Exception):
                session.stop()
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown)

"""The system tables on a Databricks SQL warehouse, through the SDK's Statement Execution API.

Statements arrive in the Databricks dialect, already guarded; the warehouse's principal may well be allowed to write,
so this backend checks once more that each is a single read before sending it. Values travel as named, typed
statement parameters, never in the text. A statement is submitted with a short `wait_timeout`, polled until it ends,
and cancelled when its deadline passes or its caller goes away. Answers capped at a few thousand rows come inline as
JSON; larger ones as Arrow streams through external links, fetched chunk by chunk without our credentials.

Credentials come from the SDK's unified auth (a token, OAuth machine-to-machine for a service principal, a config
profile, or what Databricks Apps inject); none is ever logged or returned: every message from the SDK or the
warehouse is scrubbed of the secrets the configuration holds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import decimal
import functools
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import sqlglot
from sqlglot import exp

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
from insight_mcp.agents.ingestion.catalog import get_table
from insight_mcp.agents.settings import DatabricksSettings
from insight_mcp.agents.sql.dialect import CATALOG, databricks_type, rename_tables
from insight_mcp.agents.sql.refused import QueryRefused
from insight_mcp.agents.version import VERSION

WAREHOUSE_SETTING = "INSIGHT_DATABRICKS__WAREHOUSE_ID (or DATABRICKS_WAREHOUSE_ID)"
_NO_WAREHOUSE = f"INSIGHT_BACKEND=databricks needs the SQL warehouse's id: set {WAREHOUSE_SETTING}"
AUTH_HELP = ("DATABRICKS_HOST with DATABRICKS_TOKEN, a service principal's DATABRICKS_CLIENT_ID and "
             "DATABRICKS_CLIENT_SECRET, or a profile of ~/.databrickscfg (INSIGHT_DATABRICKS__PROFILE)")
GRANTS_HELP = ("grant the warehouse's principal USE CATALOG on {catalog}, USE SCHEMA on {schema} and SELECT on "
               "{table} (docs/deploy-databricks.md)")
FIRST_CONTACT_HTTP_SECONDS = 10  # one request of the first contact: a slow network's handshake still fits
SDK_HTTP_SECONDS = 60.0  # databricks-sdk's own HTTP timeout, for every request after the first contact
_TERMINAL = {"SUCCEEDED", "FAILED", "CANCELED", "CLOSED"}
_POLL_FIRST, _POLL_MAX = 0.05, 1.0


def _storage_session() -> Any:
    """Downloads of result chunks from the warehouse's storage, retried: a link is a plain GET, safe to repeat, and
    a pooled connection the storage closed while a long statement ran fails the next request (RemoteDisconnected)."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    session = requests.Session()
    retry = Retry(total=4, connect=4, read=4, status=4, backoff_factor=0.2, allowed_methods=frozenset({"GET"}),
                  status_forcelist=(429, 500, 502, 503, 504), raise_on_status=False)
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    return session


def _session_of(client: Any) -> Any:
    """The requests session a WorkspaceClient of databricks-sdk 0.156 sends through (None if it keeps it elsewhere)."""
    return getattr(getattr(getattr(client, "api_client", None), "_api_client", None), "_session", None)


def _environment_read_once(client: Any, host: str) -> None:
    """requests reads the proxy and CA-bundle variables on every request, walking all of os.environ twice (about
    0.08 ms a statement); a server's environment does not change, so read them once, for the one host this client
    talks to (NO_PROXY honoured), and let the session stop looking. Left as it is if the SDK keeps its session
    elsewhere than 0.156 does. The SDK sets its own auth, so the session's netrc lookup was never used."""
    import requests
    import requests.utils

    session = _session_of(client)
    if not isinstance(session, requests.Session) or not session.trust_env:
        return
    session.proxies.update(requests.utils.get_environ_proxies(host, no_proxy=None))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle and session.verify is True:
        session.verify = bundle
    session.trust_env = False


def _server_words(message: str) -> str:
    """The workspace's own message, without the configuration databricks-sdk appends to a 401 or 403's."""
    return message.split(". Config: ", 1)[0]


def _about_credentials(message: str) -> bool:
    """Whether a refusal is about the token or secret itself rather than about what the principal may do."""
    return any(w in message.lower() for w in ("token", "credential", "unauthenticated", "expired", "oauth"))


def _profile_possible(profile: str | None) -> bool:
    """Whether a profile of the SDK's configuration file could still name the warehouse."""
    if profile or os.environ.get("DATABRICKS_CONFIG_PROFILE"):
        return True
    return Path(os.environ.get("DATABRICKS_CONFIG_FILE") or "~/.databrickscfg").expanduser().is_file()


class WarehouseUnavailable(BackendError):
    """The SDK is missing, the configuration is incomplete, or the workspace cannot be reached."""


@dataclass
class _Call:
    """One statement's life: its deadline, its id once the warehouse gave one, and whether its caller left."""

    deadline: float
    statement_id: str | None = None
    abandoned: threading.Event = field(default_factory=threading.Event)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


def parameter(name: str, value: Any) -> dict[str, Any]:
    """A named statement parameter as the API takes it: the value as text, with its SQL type."""
    if value is None:
        return {"name": name, "value": None, "type": "STRING"}
    if isinstance(value, bool):
        return {"name": name, "value": "true" if value else "false", "type": "BOOLEAN"}
    if isinstance(value, int):
        return {"name": name, "value": str(value), "type": "BIGINT"}
    if isinstance(value, float):
        return {"name": name, "value": repr(value), "type": "DOUBLE"}
    if isinstance(value, decimal.Decimal):
        return {"name": name, "value": str(value), "type": "DECIMAL(38,18)"}
    if isinstance(value, dt.datetime):
        moment = value.astimezone(dt.UTC) if value.tzinfo else value
        return {"name": name, "value": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "type": "TIMESTAMP"}
    if isinstance(value, dt.date):
        return {"name": name, "value": value.isoformat(), "type": "DATE"}
    if isinstance(value, str):
        return {"name": name, "value": value, "type": "STRING"}
    raise BackendError(f"parameter :{name} is a {type(value).__name__}; a SQL warehouse takes only text, numbers, "
                       "booleans, dates and timestamps")


# --- JSON_ARRAY values back to typed values ----------------------------------------------------------------------


def _timestamp(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _typed(value: Any, kind: exp.DataType) -> Any:
    """One value of a JSON_ARRAY answer, as the engine's own type (nested values arrive as JSON)."""
    if value is None:
        return None
    t = exp.DataType.Type
    this = kind.this
    if this in (t.ARRAY, t.LIST):
        inner = kind.expressions[0] if kind.expressions else None
        items = json.loads(value) if isinstance(value, str) else value
        return [_typed(v, _as_type(inner)) if inner is not None else v for v in items]
    if this == t.MAP:
        key_type, value_type = (_as_type(e) for e in kind.expressions[:2])
        items = json.loads(value) if isinstance(value, str) else value
        return {str(_typed(k, key_type)): _typed(v, value_type) for k, v in items.items()}
    if this == t.STRUCT:
        items = json.loads(value) if isinstance(value, str) else value
        fields = {e.name: _as_type(e.args["kind"]) for e in kind.expressions if isinstance(e, exp.ColumnDef)}
        return {k: _typed(v, fields[k]) if k in fields else v for k, v in items.items()}
    if this in (t.TINYINT, t.SMALLINT, t.INT, t.BIGINT):
        return int(value)
    if this in (t.FLOAT, t.DOUBLE):
        return float(value)
    if this == t.DECIMAL:
        return decimal.Decimal(str(value))
    if this == t.BOOLEAN:
        return value if isinstance(value, bool) else str(value).lower() == "true"
    if this in (t.TIMESTAMP, t.TIMESTAMPTZ, t.TIMESTAMPLTZ, t.TIMESTAMPNTZ):
        return _timestamp(str(value))
    if this == t.DATE:
        return dt.date.fromisoformat(str(value))
    if this in (t.BINARY, t.VARBINARY):
        return base64.b64decode(value)
    return value


def _as_type(node: exp.Expression) -> exp.DataType:
    return node if isinstance(node, exp.DataType) else exp.DataType.build(node.sql("databricks"), dialect="databricks")


@functools.lru_cache(maxsize=256)
def _parsed_type(type_text: str) -> exp.DataType:
    try:
        return exp.DataType.build(type_text, dialect="databricks")
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError, ValueError):
        return exp.DataType.build("STRING")


# --- where a statement runs -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def placed(sql: str, catalog: str) -> tuple[str, str | None]:
    """The statement with `system` pointed at the configured catalog, and the one schema it reads, if only one.

    Refuses anything but a single read: the guard has already looked, and this is the last look before a warehouse
    whose principal may be allowed to write."""
    from insight_mcp.agents.sql.guard import check_shape

    try:
        tree = check_shape(sqlglot.parse(sql, read="databricks"))
    except (QueryRefused, sqlglot.errors.ParseError, sqlglot.errors.TokenError) as exc:
        raise BackendError(f"refused to send a statement to the warehouse: {str(exc).splitlines()[0][:200]}") from None
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    schemas = {t.db.lower() for t in tree.find_all(exp.Table) if t.name.lower() not in ctes or t.db}
    if catalog.lower() != CATALOG:
        tree = rename_tables(tree, lambda schema, table: exp.table_(table, db=schema, catalog=catalog))
    schema = next(iter(schemas)) if len(schemas) == 1 and "" not in schemas else None
    return tree.sql("databricks"), schema


class WarehouseSystemTables:
    """SystemTables on a Databricks SQL warehouse (INSIGHT_BACKEND=databricks)."""

    kind = "databricks"

    def __init__(self, config: DatabricksSettings, *, workers: int = 8) -> None:
        self.config = config
        self._client: Any = None
        self._warehouse: str | None = None
        self._reached_host: str | None = None  # the workspace URL the SDK settled on
        self._secrets: list[str] = []
        self._storage: Any = None
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="insight-warehouse")

    # --- the client --------------------------------------------------------------------------------------------

    def _connect(self) -> tuple[Any, str]:
        with self._lock:
            if self._client is not None:
                return self._client, self._warehouse  # type: ignore[return-value]
            try:
                from databricks.sdk import WorkspaceClient
                from databricks.sdk.core import Config
            except ImportError:
                raise WarehouseUnavailable("INSIGHT_BACKEND=databricks needs databricks-sdk (pip install "
                                           "databricks-sdk)") from None
            if not (self.config.warehouse_id or os.environ.get("DATABRICKS_WAREHOUSE_ID")) and not _profile_possible(
                    self.config.profile):
                raise WarehouseUnavailable(_NO_WAREHOUSE)  # said before anything is asked of the host
            named = {k: v for k, v in {"host": self.config.host, "profile": self.config.profile}.items() if v}
            budget = max(1, int(self.config.retry_timeout_seconds))
            first = max(1, int(min(self.config.connect_timeout_seconds, self.config.retry_timeout_seconds)))
            try:
                # Building its configuration, the SDK asks the host for its discovery document and retries a host
                # it cannot reach for the whole retry budget: a host never reached gets the first-contact one.
                # A host that takes the connection and never answers (a firewall dropping packets) would hold each
                # try for the SDK's 60 s HTTP timeout: the first contact waits at most FIRST_CONTACT_HTTP_SECONDS.
                cfg = Config(**named, retry_timeout_seconds=first, product="insight-mcp", product_version=VERSION,
                             http_timeout_seconds=max(first, FIRST_CONTACT_HTTP_SECONDS))
            except Exception as exc:  # no credentials, an unknown profile, an identity provider out of reach
                raise WarehouseUnavailable(f"no usable Databricks credentials: {self._scrub(str(exc))}; set "
                                           f"{AUTH_HELP}") from None
            self._secrets = [s for s in (cfg.token, cfg.client_secret, cfg.password) if s]
            warehouse = self.config.warehouse_id or cfg.warehouse_id
            if not warehouse:
                raise WarehouseUnavailable(_NO_WAREHOUSE)
            self._warehouse, self._reached_host = warehouse, str(cfg.host)
            probe = WorkspaceClient(config=cfg)
            _environment_read_once(probe, str(cfg.host))
            try:
                self._first_contact(probe, warehouse)
            finally:
                with contextlib.suppress(Exception):
                    _session_of(probe).close()  # its pooled connection: the client below makes its own
            cfg.retry_timeout_seconds = budget  # once reached, brief outages are retried for the whole budget
            cfg.http_timeout_seconds = SDK_HTTP_SECONDS  # and a request waits as long as usual (a submit: 50 s)
            self._client = WorkspaceClient(config=cfg)
            _environment_read_once(self._client, str(cfg.host))
            self._storage = _storage_session()  # external links carry their own credentials: never ours
            return self._client, warehouse

    def _first_contact(self, probe: Any, warehouse: str) -> None:
        """Ask for the warehouse once, retried only for the first-contact budget: a host that cannot be reached,
        credentials it refuses and a warehouse it does not have are named now, not after a statement's retries."""
        from databricks.sdk import errors

        try:
            probe.warehouses.get(warehouse)
        except Exception as exc:
            if isinstance(exc, TimeoutError) and isinstance(exc.__cause__, errors.DatabricksError):
                return  # reached but busy (429, 503): statements retry that for the whole budget
            if isinstance(exc, errors.PermissionDenied) and not _about_credentials(_server_words(str(exc))):
                return  # a principal may be let use a warehouse it may not look at: its statements will say
            raise self._api_error(exc) from None

    def _scrub(self, text: str) -> str:
        """A message fit to show: one line, short, and no secret of the configuration in it."""
        text = " ".join((text or "").split())  # the warehouse breaks its messages over lines
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text[:400]

    @property
    def _host(self) -> str:
        return self._reached_host or self.config.host or "the workspace"

    # --- errors ------------------------------------------------------------------------------------------------

    def _api_error(self, exc: BaseException) -> BackendError:
        """What went wrong talking to the workspace, in words a person can act on."""
        from databricks.sdk import errors

        message = self._scrub(str(exc))
        if isinstance(exc, TimeoutError) and exc.__cause__ is not None:
            cause = exc.__cause__
            if isinstance(cause, errors.TooManyRequests):
                return TransientBackendError(f"Databricks at {self._host} is limiting requests (429) and kept "
                                             f"doing so for {self.config.retry_timeout_seconds:g} s; try again "
                                             "later, or lower detections.parallelism")
            if isinstance(cause, errors.DatabricksError):
                return TransientBackendError(f"Databricks at {self._host} stayed unavailable for "
                                             f"{self.config.retry_timeout_seconds:g} s: "
                                             f"{self._scrub(str(cause))}")
            return WarehouseUnavailable(f"cannot reach Databricks at {self._host} (DATABRICKS_HOST or "
                                        f"INSIGHT_DATABRICKS__HOST): {type(cause).__name__}; check the URL and the "
                                        "network")
        said = _server_words(message)  # on 401 and 403 the SDK appends its configuration, `token=***` included
        if isinstance(exc, (errors.Unauthenticated, errors.PermissionDenied)) and _about_credentials(said):
            return WarehouseUnavailable(f"Databricks at {self._host} refused the credentials ({message}); renew the "
                                        f"token or secret: {AUTH_HELP}")
        if isinstance(exc, errors.Unauthenticated):
            return WarehouseUnavailable(f"Databricks at {self._host} refused the credentials ({message}); set "
                                        f"{AUTH_HELP}")
        if isinstance(exc, errors.PermissionDenied):
            return BackendError(f"the principal may not use SQL warehouse {self._warehouse} ({said}); grant it "
                                "CAN USE on the warehouse")
        if isinstance(exc, (errors.NotFound, errors.ResourceDoesNotExist)) or (
                isinstance(exc, errors.InvalidParameterValue) and "warehouse" in message.lower()):
            return BackendError(f"SQL warehouse {self._warehouse} is not in {self._host} ({message}); check "
                                f"{WAREHOUSE_SETTING}")
        if isinstance(exc, (errors.TooManyRequests, errors.TemporarilyUnavailable, errors.ResourceExhausted)):
            return TransientBackendError(f"Databricks at {self._host} is busy ({message}); try again shortly")
        if isinstance(exc, errors.DatabricksError):
            return BackendError(f"Databricks refused the request: {message}")
        return WarehouseUnavailable(f"cannot reach Databricks at {self._host}: {type(exc).__name__}: {message}")

    def _statement_error(self, status: Any, sql: str) -> BackendError:
        error = status.error
        message = self._scrub(error.message if error and error.message else "no reason given")
        state = status.sql_state or ""
        if "INSUFFICIENT_PERMISSIONS" in message or state == "42501" or "PERMISSION_DENIED" in message:
            table = _named_table(message, sql)
            return BackendError(f"the warehouse's principal cannot read {table}: {message}; "
                                + _grants(table, self.config.catalog))
        if "TABLE_OR_VIEW_NOT_FOUND" in message or "SCHEMA_NOT_FOUND" in message or state in {"42P01", "3F000"}:
            table = _named_table(message, sql)
            return BackendError(f"this workspace has no {table} ({message}); enable the system schema "
                                "(`databricks system-schemas enable`) or check INSIGHT_DATABRICKS__CATALOG")
        code = error.error_code.value if error and error.error_code else ""
        if code in {"TEMPORARILY_UNAVAILABLE", "WORKSPACE_TEMPORARILY_UNAVAILABLE", "SERVICE_UNDER_MAINTENANCE",
                    "RESOURCE_EXHAUSTED", "ABORTED"}:
            return TransientBackendError(f"the warehouse could not run the query just now ({message}); try again")
        return BackendError(f"the warehouse could not run the query: {message}")

    # --- statements --------------------------------------------------------------------------------------------

    def _submit(self, client: Any, warehouse: str, statement: Statement, max_rows: int, max_chars: int,
                call: _Call) -> Any:
        from databricks.sdk.service import sql as dbsql

        text, schema = placed(statement.databricks_sql, self.config.catalog)
        params = [dbsql.StatementParameterListItem(**parameter(k, v)) for k, v in statement.params.items()]
        inline = max_rows <= self.config.inline_max_rows
        wait = min(self.config.wait_timeout_seconds, int(call.remaining()))
        return client.statement_execution.execute_statement(
            statement=text, warehouse_id=warehouse, catalog=self.config.catalog, schema=schema,
            parameters=params or None, row_limit=max_rows,
            byte_limit=max_chars * 4 + 1_048_576 if max_chars < 2**40 else None,
            disposition=dbsql.Disposition.INLINE if inline else dbsql.Disposition.EXTERNAL_LINKS,
            format=dbsql.Format.JSON_ARRAY if inline else dbsql.Format.ARROW_STREAM,
            wait_timeout=f"{wait if wait >= 5 else 0}s",
            on_wait_timeout=dbsql.ExecuteStatementRequestOnWaitTimeout.CONTINUE,
        )

    def _cancel(self, client: Any, statement_id: str) -> None:
        with contextlib.suppress(Exception):
            client.statement_execution.cancel_execution(statement_id)

    def _wait(self, client: Any, response: Any, call: _Call) -> Any:
        """Poll until the statement ends; past its deadline or once its caller has left, cancel it."""
        delay = _POLL_FIRST
        while response.status.state.value not in _TERMINAL:
            if call.abandoned.is_set():
                self._cancel(client, call.statement_id or "")
                raise QueryTimeout("the caller went away; the statement was cancelled")
            if call.remaining() <= 0:
                self._cancel(client, call.statement_id or "")
                raise self._late(client, response.status.state.value)
            time.sleep(min(delay, max(call.remaining(), 0.01)))
            delay = min(delay * 2, _POLL_MAX)
            response = client.statement_execution.get_statement(call.statement_id)
        return response

    def _late(self, client: Any, state: str) -> BackendError:
        """The deadline passed: say whether the warehouse was still starting, or the statement was slow."""
        if state == "PENDING":
            with contextlib.suppress(Exception):
                warehouse_state = client.warehouses.get(self._warehouse).state
                name = warehouse_state.value if warehouse_state is not None else ""
                if name in {"STARTING", "STOPPED", "STOPPING"}:
                    return TransientBackendError(
                        f"SQL warehouse {self._warehouse} is {name.lower()}: statements wait until it runs; try "
                        "again in a minute, or start it (a serverless warehouse starts in seconds)")
        return QueryTimeout("the query ran past its time limit on the warehouse and was cancelled; narrow the time "
                            "window or aggregate more")

    def _columns(self, manifest: Any) -> list[tuple[ColumnInfo, exp.DataType]]:
        out = []
        for column in manifest.schema.columns or []:
            text = column.type_text or (column.type_name.value if column.type_name else "STRING")
            out.append((ColumnInfo(name=column.name, type=databricks_type(text, dialect="databricks")),
                        _parsed_type(text)))
        return out

    def _download(self, link: Any) -> pa.Table:
        """One external link's Arrow stream, fetched with the link's own headers and never our credentials."""
        reply = self._storage.get(link.external_link, headers=dict(link.http_headers or {}), timeout=60)
        if reply.status_code != 200:
            raise BackendError(f"could not download a result chunk from the warehouse's storage "
                               f"(HTTP {reply.status_code}); try again")
        with pa.ipc.open_stream(reply.content) as reader:
            return reader.read_all()

    def _result(self, client: Any, response: Any, max_rows: int, max_chars: int, started: float) -> QueryResult:
        manifest = response.manifest
        typed = self._columns(manifest)
        columns = [c for c, _ in typed]
        more = bool(manifest.truncated)
        reason = None
        if more and (manifest.total_row_count or 0) < max_rows:
            reason = f"the warehouse cut the result at its byte limit (from the {max_chars}-character cap)"
        chunk = response.result
        if manifest.format is not None and manifest.format.value == "ARROW_STREAM":
            tables = []
            while chunk is not None and chunk.external_links:
                for link in chunk.external_links:
                    tables.append(self._download(link))
                following = chunk.external_links[-1].next_chunk_index
                chunk = (client.statement_execution.get_statement_result_chunk_n(response.statement_id, following)
                         if following is not None else None)
            if not tables:
                return answer_from_rows(columns, [], more=more, max_rows=max_rows, max_chars=max_chars,
                                        elapsed_ms=(time.perf_counter() - started) * 1000, reason=reason)
            table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
            return answer_from_arrow(columns, table, more=more, max_rows=max_rows, max_chars=max_chars,
                                     elapsed_ms=(time.perf_counter() - started) * 1000, reason=reason)
        rows: list[list[Any]] = []
        while chunk is not None:
            for raw in chunk.data_array or []:
                rows.append([_typed(v, kind) for v, (_, kind) in zip(raw, typed, strict=True)])
            following = chunk.next_chunk_index
            chunk = (client.statement_execution.get_statement_result_chunk_n(response.statement_id, following)
                     if following is not None else None)
        return answer_from_rows(columns, rows, more=more, max_rows=max_rows, max_chars=max_chars,
                                elapsed_ms=(time.perf_counter() - started) * 1000, reason=reason)

    def _run(self, statement: Statement, max_rows: int, max_chars: int, call: _Call) -> QueryResult:
        started = time.perf_counter()
        client, warehouse = self._connect()
        try:
            response = self._submit(client, warehouse, statement, max_rows, max_chars, call)
            call.statement_id = response.statement_id
            response = self._wait(client, response, call)
            state = response.status.state.value
            if state == "SUCCEEDED":
                return self._result(client, response, max_rows, max_chars, started)
        except BackendError:
            raise
        except Exception as exc:
            if call.statement_id:
                self._cancel(client, call.statement_id)
            raise self._api_error(exc) from None
        if state == "FAILED":
            raise self._statement_error(response.status, statement.databricks_sql)
        raise BackendError(f"the warehouse ended the statement as {state.lower()} before it finished; try again")

    async def execute(self, statement: Statement, *, max_rows: int, max_chars: int,
                      timeout_seconds: float) -> QueryResult:
        """Run on the backend's threads; the thread cancels the statement at its deadline or when the caller goes
        away."""
        call = _Call(deadline=time.monotonic() + timeout_seconds)
        job = asyncio.get_running_loop().run_in_executor(self._pool, self._run, statement, max_rows, max_chars, call)
        try:
            # The thread keeps the deadline; the grace covers the SDK's own retries (reaching the host, then the
            # request) and one last HTTP round trip, so an unreachable host is named as such.
            grace = 2 * self.config.retry_timeout_seconds + 10
            return await asyncio.wait_for(asyncio.shield(job), timeout_seconds + grace)
        except TimeoutError:
            call.abandoned.set()
            raise QueryTimeout(f"the warehouse did not answer within {timeout_seconds:g} s; the statement is being "
                               "cancelled") from None
        except asyncio.CancelledError:
            call.abandoned.set()
            client, statement_id = self._client, call.statement_id
            if client is not None and statement_id:
                self._pool.submit(self._cancel, client, statement_id)
            raise

    # --- what the workspace holds ------------------------------------------------------------------------------

    async def table_stats(self, tables: list[str]) -> list[TableStats]:
        """Each table's rows and event-time range, one statement per table, side by side."""

        async def one(name: str) -> TableStats:
            spec = get_table(name)
            statement = Statement(databricks_sql=f"SELECT count(*) AS n, min(`{spec.time_column}`) AS a, "
                                                 f"max(`{spec.time_column}`) AS b FROM {name}")
            try:
                answer = await self.execute(statement, max_rows=1, max_chars=10_000, timeout_seconds=120)
            except BackendError as exc:
                if "this workspace has no" in str(exc):
                    return TableStats(name=name, rows=0, present=False)
                if "cannot read" in str(exc):  # granted some system tables and not this one: the others still run
                    return TableStats(name=name, rows=0, present=False, note=str(exc))
                raise
            n, first, last = answer.rows[0]
            return TableStats(name=name, rows=n or 0, first_event=first, last_event=last)

        return list(await asyncio.gather(*(one(name) for name in tables)))

    async def close(self) -> None:
        """Let go of the HTTP sessions and the threads; statements still running are the warehouse's to end."""
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown)
        with self._lock:
            storage, self._storage, self._client = self._storage, None, None
        if storage is not None:
            storage.close()


def _named_table(message: str, sql: str) -> str:
    """The table an error is about: named in the message when the warehouse says, else the statement's first."""
    lowered = message.lower().replace("`", "")
    tables = [".".join(p for p in (t.catalog, t.db, t.name) if p).lower()
              for t in sqlglot.parse_one(sql, read="databricks").find_all(exp.Table)]
    for table in tables:
        if table and table in lowered:
            return table
    return next((t for t in tables if t.count(".") == 2), tables[0] if tables else "a system table")


def _grants(table: str, catalog: str) -> str:
    parts = table.split(".")
    schema = ".".join(parts[:2]) if len(parts) == 3 else f"{catalog}.<schema>"
    return GRANTS_HELP.format(catalog=parts[0] if len(parts) == 3 else catalog, schema=schema, table=table)

"""The warehouse emulator behaves like the Statement Execution API, as seen through the real databricks-sdk."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import decimal
import io
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import duckdb
import httpx
import pyarrow as pa
import pytest
import sqlglot
from databricks.sdk import WorkspaceClient, retries
from databricks.sdk.core import Config
from databricks.sdk.errors import (
    BadRequest,
    InvalidParameterValue,
    NotFound,
    PermissionDenied,
    ResourceDoesNotExist,
    Unauthenticated,
)
from databricks.sdk.service.sql import (
    ColumnInfoTypeName,
    Disposition,
    ExecuteStatementRequestOnWaitTimeout,
    Format,
    ServiceErrorCode,
    StatementParameterListItem,
    StatementResponse,
    StatementState,
)
from warehouse_emulator import WarehouseEmulator

TOKEN, WAREHOUSE = "dapi-test-token", "wh-test"
Run = Callable[[str, str, dict[str, Any], str | None, str | None], pa.Table]


@pytest.fixture(autouse=True)
def _no_databricks_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's DATABRICKS_* variables must not add a second auth method to the test clients."""
    for name in list(os.environ):
        if name.startswith(("DATABRICKS_", "ARM_")):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def db() -> duckdb.DuckDBPyConnection:
    """Ten events and one row of every type we render, in an in-memory DuckDB."""
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.execute("CREATE TABLE events AS SELECT range AS id, 'user-' || range AS name, range * 1.5 AS score "
                "FROM range(10)")
    con.execute("""CREATE TABLE typed AS SELECT
        1::BIGINT AS big, 'x' AS s, 1e20::DOUBLE AS d, 0.1::DOUBLE AS d2, true AS b, DATE '2026-11-21' AS day,
        TIMESTAMPTZ '2026-11-21 10:00:00+00' AS ts, TIMESTAMP '2026-11-21 10:00:00.25' AS ntz,
        1.5::DECIMAL(10,2) AS dec, 'ab'::BLOB AS bin, [1, 2] AS arr, MAP(['k'], [1]) AS m,
        {'a': 1, 'b': 'x'} AS st, [TIMESTAMPTZ '2026-11-21 10:00:00+00'] AS tl, 0.1::FLOAT AS f,
        1::TINYINT AS ti, 2::SMALLINT AS si, 3::INTEGER AS i""")
    con.execute("INSERT INTO typed SELECT " + ", ".join(["NULL"] * 18))
    return con


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    """One plain HTTP client for raw calls and downloads; it carries no credentials of its own."""
    with httpx.Client(timeout=10) as plain:
        yield plain


def duck(con: duckdb.DuckDBPyConnection) -> Run:
    """The executor the tests use: Databricks SQL transpiled to DuckDB, named parameters bound as `$name`."""
    def run(statement_id: str, sql: str, params: dict[str, Any], catalog: str | None, schema: str | None) -> pa.Table:
        query = sqlglot.transpile(sql, read="databricks", write="duckdb")[0]
        return con.cursor().sql(query, params=params or None).to_arrow_table()
    return run


class Gate:
    """An executor that holds every statement until released or cancelled, as a long query would."""

    def __init__(self, inner: Run) -> None:
        self.inner = inner
        self.cancelled: list[str] = []
        self.started, self.release = threading.Event(), threading.Event()

    def __call__(self, statement_id: str, sql: str, params: dict[str, Any], catalog: str | None,
                 schema: str | None) -> pa.Table:
        """Run the statement once the gate opens; fail it as cancelled if that is why it opened."""
        self.started.set()
        if not self.release.wait(5):
            raise TimeoutError("gate never opened")
        if statement_id in self.cancelled:
            raise RuntimeError("[OPERATION_CANCELED] The statement was cancelled.")
        return self.inner(statement_id, sql, params, catalog, schema)

    def cancel(self, statement_id: str) -> None:
        """The canceller: remember the statement and open the gate so its executor returns."""
        self.cancelled.append(statement_id)
        self.release.set()


@pytest.fixture
def emulator(db: duckdb.DuckDBPyConnection) -> Iterator[Callable[..., WarehouseEmulator]]:
    """Start emulators (DuckDB-backed unless told otherwise) and stop them all afterwards."""
    started: list[WarehouseEmulator] = []

    def start(executor: Run | None = None, **options: Any) -> WarehouseEmulator:
        emu = WarehouseEmulator(executor or duck(db), **options).start()
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()


def client(emu: WarehouseEmulator, token: str = TOKEN) -> WorkspaceClient:
    """The real SDK client pointed at the emulator with a personal access token."""
    return WorkspaceClient(config=Config(host=emu.url, token=token, auth_type="pat", retry_timeout_seconds=5))


def poll(w: WorkspaceClient, statement_id: str, timeout: float = 3.0) -> StatementResponse:
    """getStatement until the statement leaves PENDING/RUNNING."""
    deadline = time.monotonic() + timeout
    while True:
        response = w.statement_execution.get_statement(statement_id)
        if response.status.state not in (StatementState.PENDING, StatementState.RUNNING):
            return response
        assert time.monotonic() < deadline, f"still {response.status.state}"
        time.sleep(0.02)


def test_inline_json_array_renders_every_type_as_databricks_does(emulator: Callable[..., WarehouseEmulator]) -> None:
    emu = emulator()
    response = client(emu).statement_execution.execute_statement("SELECT * FROM typed", WAREHOUSE)

    assert response.status.state == StatementState.SUCCEEDED
    columns = {c.name: (c.type_name, c.type_text) for c in response.manifest.schema.columns}
    assert columns == {
        "big": (ColumnInfoTypeName.LONG, "BIGINT"), "s": (ColumnInfoTypeName.STRING, "STRING"),
        "d": (ColumnInfoTypeName.DOUBLE, "DOUBLE"), "d2": (ColumnInfoTypeName.DOUBLE, "DOUBLE"),
        "b": (ColumnInfoTypeName.BOOLEAN, "BOOLEAN"), "day": (ColumnInfoTypeName.DATE, "DATE"),
        "ts": (ColumnInfoTypeName.TIMESTAMP, "TIMESTAMP"), "ntz": (ColumnInfoTypeName.TIMESTAMP, "TIMESTAMP_NTZ"),
        "dec": (ColumnInfoTypeName.DECIMAL, "DECIMAL(10,2)"), "bin": (ColumnInfoTypeName.BINARY, "BINARY"),
        "arr": (ColumnInfoTypeName.ARRAY, "ARRAY<INT>"), "m": (ColumnInfoTypeName.MAP, "MAP<STRING, INT>"),
        "st": (ColumnInfoTypeName.STRUCT, "STRUCT<a: INT, b: STRING>"),
        "tl": (ColumnInfoTypeName.ARRAY, "ARRAY<TIMESTAMP>"), "f": (ColumnInfoTypeName.FLOAT, "FLOAT"),
        "ti": (ColumnInfoTypeName.BYTE, "TINYINT"), "si": (ColumnInfoTypeName.SHORT, "SMALLINT"),
        "i": (ColumnInfoTypeName.INT, "INT")}
    decimal_column = response.manifest.schema.columns[8]
    assert (decimal_column.type_precision, decimal_column.type_scale) == (10, 2)
    assert [c.position for c in response.manifest.schema.columns] == list(range(18))
    assert response.manifest.schema.column_count == 18
    assert response.result.data_array == [
        ["1", "x", "1.0E20", "0.1", "true", "2026-11-21", "2026-11-21T10:00:00.000Z", "2026-11-21T10:00:00.250",
         "1.50", base64.b64encode(b"ab").decode(), "[1,2]", '{"k":1}', '{"a":1,"b":"x"}',
         '["2026-11-21T10:00:00.000Z"]', "0.1", "1", "2", "3"],
        [None] * 18]
    assert response.manifest.total_row_count == 2 and response.manifest.truncated is False
    assert response.manifest.format == Format.JSON_ARRAY
    # INLINE: byte counts are "not available", as documented
    assert response.manifest.total_byte_count is None and response.manifest.chunks[0].byte_count is None
    assert response.result.next_chunk_index is None


def test_async_submission_is_pending_then_polls_to_success(emulator: Callable[..., WarehouseEmulator],
                                                           db: duckdb.DuckDBPyConnection) -> None:
    gate = Gate(duck(db))
    emu = emulator(gate, canceller=gate.cancel)
    w = client(emu)

    submitted = w.statement_execution.execute_statement("SELECT count(*) AS n FROM events", WAREHOUSE,
                                                        wait_timeout="0s")
    assert submitted.status.state == StatementState.PENDING and submitted.manifest is None
    assert gate.started.wait(2)
    assert w.statement_execution.get_statement(submitted.statement_id).status.state == StatementState.RUNNING
    gate.release.set()

    done = poll(w, submitted.statement_id)
    assert done.status.state == StatementState.SUCCEEDED and done.result.data_array == [["10"]]
    assert emu.states(submitted.statement_id) == ["PENDING", "RUNNING", "SUCCEEDED"]


def test_on_wait_timeout_cancel_ends_canceled(emulator: Callable[..., WarehouseEmulator],
                                              db: duckdb.DuckDBPyConnection) -> None:
    gate = Gate(duck(db))
    emu = emulator(gate, canceller=gate.cancel, wait_scale=0.02)  # "5s" lasts 0.1 s

    response = client(emu).statement_execution.execute_statement(
        "SELECT * FROM events", WAREHOUSE, wait_timeout="5s",
        on_wait_timeout=ExecuteStatementRequestOnWaitTimeout.CANCEL)

    assert response.status.state == StatementState.CANCELED and response.result is None
    assert gate.cancelled == [response.statement_id]
    assert emu.states(response.statement_id) == ["PENDING", "RUNNING", "CANCELED"]


def test_wait_timeout_continue_answers_running_and_keeps_going(emulator: Callable[..., WarehouseEmulator],
                                                               db: duckdb.DuckDBPyConnection) -> None:
    gate = Gate(duck(db))
    emu = emulator(gate, canceller=gate.cancel, wait_scale=0.01)  # the default "10s" lasts 0.1 s
    w = client(emu)

    response = w.statement_execution.execute_statement("SELECT 1 AS one", WAREHOUSE)  # default 10s, CONTINUE
    assert response.status.state == StatementState.RUNNING
    gate.release.set()
    assert poll(w, response.statement_id).result.data_array == [["1"]]


def test_cancel_of_a_running_statement(emulator: Callable[..., WarehouseEmulator],
                                       db: duckdb.DuckDBPyConnection) -> None:
    gate = Gate(duck(db))
    emu = emulator(gate, canceller=gate.cancel)
    w = client(emu)
    submitted = w.statement_execution.execute_statement("SELECT * FROM events", WAREHOUSE, wait_timeout="0s")
    assert gate.started.wait(2)

    w.statement_execution.cancel_execution(submitted.statement_id)

    assert poll(w, submitted.statement_id).status.state == StatementState.CANCELED
    assert gate.cancelled == [submitted.statement_id]
    assert emu.states(submitted.statement_id) == ["PENDING", "RUNNING", "CANCELED"]


def test_cancel_after_the_end_silently_keeps_the_terminal_state(emulator: Callable[..., WarehouseEmulator]) -> None:
    calls: list[str] = []
    emu = emulator(canceller=calls.append)
    w = client(emu)
    done = w.statement_execution.execute_statement("SELECT 1 AS one", WAREHOUSE)

    w.statement_execution.cancel_execution(done.statement_id)

    assert w.statement_execution.get_statement(done.statement_id).status.state == StatementState.SUCCEEDED
    assert calls == []


def test_chunks_chain_and_can_be_fetched_in_any_order(emulator: Callable[..., WarehouseEmulator]) -> None:
    emu = emulator(chunk_rows=3)
    w = client(emu)
    response = w.statement_execution.execute_statement("SELECT id FROM events ORDER BY id", WAREHOUSE)

    manifest = response.manifest
    assert manifest.total_chunk_count == 4 and manifest.total_row_count == 10
    assert [(c.chunk_index, c.row_offset, c.row_count) for c in manifest.chunks] == [
        (0, 0, 3), (1, 3, 3), (2, 6, 3), (3, 9, 1)]
    assert response.result.next_chunk_index == 1
    assert response.result.next_chunk_internal_link == \
        f"/api/2.0/sql/statements/{response.statement_id}/result/chunks/1"

    third = w.statement_execution.get_statement_result_chunk_n(response.statement_id, 2)
    assert (third.chunk_index, third.row_offset, third.data_array) == (2, 6, [["6"], ["7"], ["8"]])
    assert third.next_chunk_index == 3

    rows, chunk = list(response.result.data_array), response.result
    while chunk.next_chunk_index is not None:
        chunk = w.statement_execution.get_statement_result_chunk_n(response.statement_id, chunk.next_chunk_index)
        rows += chunk.data_array
    assert rows == [[str(i)] for i in range(10)]
    assert chunk.next_chunk_internal_link is None


def test_external_links_serve_arrow_streams_only_without_authorization(
        http: httpx.Client, emulator: Callable[..., WarehouseEmulator], db: duckdb.DuckDBPyConnection) -> None:
    emu = emulator(chunk_rows=4)
    w = client(emu)
    response = w.statement_execution.execute_statement(
        "SELECT * FROM events ORDER BY id", WAREHOUSE, disposition=Disposition.EXTERNAL_LINKS,
        format=Format.ARROW_STREAM)

    assert response.result.data_array is None and len(response.result.external_links) == 1
    tables, link = [], response.result.external_links[0]
    while True:
        expires = dt.datetime.fromisoformat(link.expiration.replace("Z", "+00:00"))
        assert dt.timedelta(minutes=14) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(minutes=15)
        download = http.get(link.external_link)
        assert download.status_code == 200 and len(download.content) == link.byte_count
        tables.append(pa.ipc.open_stream(download.content).read_all())
        if link.next_chunk_index is None:
            break
        link = w.statement_execution.get_statement_result_chunk_n(
            response.statement_id, link.next_chunk_index).external_links[0]
    assert pa.concat_tables(tables).equals(db.sql("SELECT * FROM events ORDER BY id").to_arrow_table())
    assert response.manifest.total_byte_count == sum(c.byte_count for c in response.manifest.chunks)

    leaked = http.get(link.external_link, headers={"Authorization": f"Bearer {TOKEN}"})
    assert leaked.status_code == 400 and "Only one auth mechanism allowed" in leaked.text
    assert TOKEN not in leaked.text


def test_external_links_in_csv_and_json_array(http: httpx.Client, emulator: Callable[..., WarehouseEmulator]) -> None:
    emu = emulator(chunk_rows=2)
    w = client(emu)
    sql = "SELECT id, CASE WHEN id = 1 THEN NULL ELSE name END AS name FROM events WHERE id < 3 ORDER BY id"

    as_csv = w.statement_execution.execute_statement(sql, WAREHOUSE, disposition=Disposition.EXTERNAL_LINKS,
                                                     format=Format.CSV)
    first = http.get(as_csv.result.external_links[0].external_link).text
    second_link = w.statement_execution.get_statement_result_chunk_n(as_csv.statement_id, 1).external_links[0]
    second = http.get(second_link.external_link).text
    assert list(csv.reader(io.StringIO(first))) == [["id", "name"], ["0", "user-0"], ["1", "null"]]
    assert list(csv.reader(io.StringIO(second))) == [["2", "user-2"]]  # the header only on the first chunk
    assert first.endswith("\r\n")

    as_json = w.statement_execution.execute_statement(sql, WAREHOUSE, disposition=Disposition.EXTERNAL_LINKS,
                                                      format=Format.JSON_ARRAY)
    body = http.get(as_json.result.external_links[0].external_link).text
    assert body == '[["0","user-0"],["1",null]]'  # compact, no whitespace


def test_external_links_expire(http: httpx.Client, emulator: Callable[..., WarehouseEmulator]) -> None:
    emu = emulator(link_ttl_seconds=0.05)
    w = client(emu)
    response = w.statement_execution.execute_statement("SELECT 1 AS one", WAREHOUSE,
                                                       disposition=Disposition.EXTERNAL_LINKS, format=Format.CSV)
    first = response.result.external_links[0]
    time.sleep(0.1)
    stale = http.get(first.external_link)
    assert stale.status_code == 403 and "Request has expired" in stale.text
    fresh = w.statement_execution.get_statement_result_chunk_n(response.statement_id, 0).external_links[0]
    assert fresh.external_link != first.external_link and fresh.expiration > first.expiration  # a new link


def test_row_and_byte_limits_truncate_and_say_so(emulator: Callable[..., WarehouseEmulator]) -> None:
    emu = emulator()
    w = client(emu)
    sql = "SELECT * FROM events ORDER BY id"

    limited = w.statement_execution.execute_statement(sql, WAREHOUSE, row_limit=3)
    assert limited.manifest.truncated is True and limited.manifest.total_row_count == 3
    assert [row[0] for row in limited.result.data_array] == ["0", "1", "2"]

    roomy = w.statement_execution.execute_statement(sql, WAREHOUSE, row_limit=100)
    assert roomy.manifest.truncated is False and roomy.manifest.total_row_count == 10

    small = w.statement_execution.execute_statement(sql, WAREHOUSE, byte_limit=100)
    assert small.manifest.truncated is True and 0 < small.manifest.total_row_count < 10
    assert len(small.result.data_array) == small.manifest.total_row_count


def test_named_typed_parameters_reach_the_executor_as_python_values(
        emulator: Callable[..., WarehouseEmulator], db: duckdb.DuckDBPyConnection) -> None:
    seen: dict[str, Any] = {}

    def run(statement_id: str, sql: str, params: dict[str, Any], catalog: str | None, schema: str | None) -> pa.Table:
        seen.update(params)
        return duck(db)(statement_id, sql, params, catalog, schema)

    emu = emulator(run)
    w = client(emu)
    param = StatementParameterListItem
    response = w.statement_execution.execute_statement(
        "SELECT name FROM events WHERE id = :id AND score > :floor AND :flag AND :tag IS NULL ORDER BY id", WAREHOUSE,
        parameters=[param("id", type="INT", value="4"), param("floor", type="DOUBLE", value="1.5"),
                    param("flag", type="BOOLEAN", value="true"), param("tag")])
    assert response.result.data_array == [["user-4"]]
    assert seen == {"id": 4, "floor": 1.5, "flag": True, "tag": None}

    seen.clear()
    w.statement_execution.execute_statement(
        "SELECT :name AS name, :price AS price, :day AS day, :at AS at, :local AS local_at", WAREHOUSE,
        parameters=[param("name", value="o'brien"), param("price", type="DECIMAL(5,2)", value="3.14159"),
                    param("day", type="DATE", value="2026-11-21"),
                    param("at", type="TIMESTAMP", value="2026-11-21T10:00:00Z"),
                    param("local", type="TIMESTAMP_NTZ", value="2026-11-21 10:00:00")])
    assert seen == {"name": "o'brien", "price": decimal.Decimal("3.14"), "day": dt.date(2026, 11, 21),
                    "at": dt.datetime(2026, 11, 21, 10, tzinfo=dt.UTC), "local": dt.datetime(2026, 11, 21, 10)}
    assert seen["at"].tzinfo is not None and seen["local"].tzinfo is None

    bad = w.statement_execution.execute_statement("SELECT :n AS n", WAREHOUSE,
                                                  parameters=[param("n", type="INT", value="four")])
    assert bad.status.state == StatementState.FAILED and bad.status.sql_state == "22018"
    assert bad.status.error.message.startswith("[CAST_INVALID_INPUT] The value 'four'")


def test_executor_failure_has_the_documented_error_shape(emulator: Callable[..., WarehouseEmulator]) -> None:
    def run(statement_id: str, sql: str, params: dict[str, Any], catalog: str | None, schema: str | None) -> pa.Table:
        raise RuntimeError("[TABLE_OR_VIEW_NOT_FOUND] The table or view `nope` cannot be found. Verify the spelling."
                           "\nTo tolerate the error on drop use DROP VIEW IF EXISTS. SQLSTATE: 42P01; line 1 pos 14")

    response = client(emulator(run)).statement_execution.execute_statement("SELECT * FROM nope", WAREHOUSE)

    assert response.status.state == StatementState.FAILED and response.manifest is None
    assert response.status.error.error_code == ServiceErrorCode.BAD_REQUEST
    assert response.status.error.message == ("[TABLE_OR_VIEW_NOT_FOUND] The table or view `nope` cannot be found. "
                                             "Verify the spelling.")
    assert response.status.sql_state == "42P01"


def test_duckdb_error_without_sqlstate_fails_without_one(emulator: Callable[..., WarehouseEmulator]) -> None:
    response = client(emulator()).statement_execution.execute_statement("SELECT * FROM nope", WAREHOUSE)
    assert response.status.state == StatementState.FAILED and response.status.sql_state is None
    assert "nope" in response.status.error.message and "\n" not in response.status.error.message


def test_denied_table_fails_before_running(emulator: Callable[..., WarehouseEmulator],
                                           db: duckdb.DuckDBPyConnection) -> None:
    ran: list[str] = []

    def run(statement_id: str, sql: str, params: dict[str, Any], catalog: str | None, schema: str | None) -> pa.Table:
        ran.append(sql)
        return duck(db)(statement_id, sql, params, catalog, schema)

    emu = emulator(run, denied={TOKEN: {"system.access.audit"}})
    w = client(emu)

    qualified = w.statement_execution.execute_statement("SELECT * FROM system.access.audit", WAREHOUSE)
    unqualified = w.statement_execution.execute_statement("SELECT * FROM Audit", WAREHOUSE, catalog="system",
                                                          schema="access")
    for response in (qualified, unqualified):
        assert response.status.state == StatementState.FAILED and response.status.sql_state == "42501"
        assert response.status.error.message == ("[INSUFFICIENT_PERMISSIONS] Insufficient privileges:\nUser does "
                                                 "not have SELECT on Table 'system.access.audit' SQLSTATE: 42501")
    assert ran == []
    assert w.statement_execution.execute_statement("SELECT 1 AS one", WAREHOUSE).result.data_array == [["1"]]


def test_throttling_is_retried_by_the_sdk(http: httpx.Client, emulator: Callable[..., WarehouseEmulator],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retries, "random", lambda: 0.0)  # the SDK adds up to 1 s of jitter to Retry-After
    emu = emulator()
    emu.fail_next(429, "REQUEST_LIMIT_EXCEEDED", "Exceeded rate limit for the workspace.", retry_after=0)
    w = client(emu)

    response = w.statement_execution.execute_statement("SELECT 1 AS one", WAREHOUSE)

    assert response.result.data_array == [["1"]]
    assert [r["method"] for r in emu.requests if r["path"] == "/api/2.0/sql/statements"] == ["POST", "POST"]

    emu.fail_next(503, "TEMPORARILY_UNAVAILABLE", "Try again later.", retry_after=6.5, count=5)
    raw = http.get(f"{emu.url}/api/2.0/sql/statements/x", headers={"Authorization": f"Bearer {TOKEN}"})
    assert raw.status_code == 503 and raw.headers["Retry-After"] == "7"  # whole seconds
    assert raw.json() == {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "Try again later."}
    emu.fail_next(503, "", "", count=0)  # drops the four still pending
    assert http.get(f"{emu.url}/api/2.0/sql/statements/x", headers={"Authorization": f"Bearer {TOKEN}"}
                    ).status_code == 404


@pytest.mark.parametrize(("token", "error", "status"), [("dapi-wrong-token", PermissionDenied, 403),
                                                        ("dapi-old-token", Unauthenticated, 401)])
def test_bad_and_expired_tokens_surface_as_sdk_errors_without_the_token(
        http: httpx.Client, emulator: Callable[..., WarehouseEmulator], token: str, error: type[Exception],
        status: int) -> None:
    emu = emulator(expired_tokens={"dapi-old-token"})
    with pytest.raises(error) as raised:
        client(emu, token).statement_execution.execute_statement("SELECT 1", WAREHOUSE)
    assert token not in str(raised.value)
    raw = http.post(f"{emu.url}/api/2.0/sql/statements", headers={"Authorization": f"Bearer {token}"}, json={})
    assert raw.status_code == status and token not in raw.text
    assert http.get(f"{emu.url}/api/2.0/sql/warehouses/{WAREHOUSE}").status_code == 401  # no credential at all


def test_oauth_m2m_client_credentials(emulator: Callable[..., WarehouseEmulator]) -> None:
    emu = emulator(clients={"sp-client": "sp-secret"})
    config = Config(host=emu.url, client_id="sp-client", client_secret="sp-secret", auth_type="oauth-m2m")

    response = WorkspaceClient(config=config).statement_execution.execute_statement("SELECT 1 AS one", WAREHOUSE)

    assert response.result.data_array == [["1"]]
    token_calls = [r for r in emu.requests if r["path"] == "/oidc/v1/token"]
    assert token_calls and token_calls[0]["authorization"] and token_calls[0]["body"] is None  # HTTP Basic, a form
    with pytest.raises(ValueError, match="invalid_client"):
        WorkspaceClient(config=Config(host=emu.url, client_id="sp-client", client_secret="wrong",
                                      auth_type="oauth-m2m")).warehouses.get(WAREHOUSE)


def test_statement_waits_pending_while_the_warehouse_starts(emulator: Callable[..., WarehouseEmulator]) -> None:
    emu = emulator(warehouses={WAREHOUSE: "STOPPED"}, start_seconds=0.2)
    w = client(emu)

    submitted = w.statement_execution.execute_statement("SELECT 1 AS one", WAREHOUSE, wait_timeout="0s")
    assert w.warehouses.get(WAREHOUSE).state.value == "STARTING"
    time.sleep(0.1)
    assert w.statement_execution.get_statement(submitted.statement_id).status.state == StatementState.PENDING

    assert poll(w, submitted.statement_id).result.data_array == [["1"]]
    assert w.warehouses.get(WAREHOUSE).state.value == "RUNNING"
    assert emu.states(submitted.statement_id) == ["PENDING", "RUNNING", "SUCCEEDED"]


def test_a_warehouse_that_never_starts_keeps_the_statement_pending(
        emulator: Callable[..., WarehouseEmulator]) -> None:
    emu = emulator(warehouses={WAREHOUSE: "STOPPED"}, start_seconds=float("inf"))
    w = client(emu)
    submitted = w.statement_execution.execute_statement("SELECT 1", WAREHOUSE, wait_timeout="0s")
    time.sleep(0.05)
    assert w.statement_execution.get_statement(submitted.statement_id).status.state == StatementState.PENDING
    assert w.warehouses.get(WAREHOUSE).state.value == "STARTING"


def test_statements_queue_pending_when_every_slot_is_busy(emulator: Callable[..., WarehouseEmulator],
                                                          db: duckdb.DuckDBPyConnection) -> None:
    gate = Gate(duck(db))
    emu = emulator(gate, max_concurrency=1)
    w = client(emu)
    first = w.statement_execution.execute_statement("SELECT 1 AS one", WAREHOUSE, wait_timeout="0s")
    second = w.statement_execution.execute_statement("SELECT 2 AS two", WAREHOUSE, wait_timeout="0s")
    assert gate.started.wait(2)
    time.sleep(0.05)
    assert w.statement_execution.get_statement(second.statement_id).status.state == StatementState.PENDING
    gate.release.set()
    assert poll(w, first.statement_id).result.data_array == [["1"]]
    assert poll(w, second.statement_id).result.data_array == [["2"]]


def test_unknown_warehouse_and_statement_are_not_found(emulator: Callable[..., WarehouseEmulator]) -> None:
    w = client(emulator())
    with pytest.raises(ResourceDoesNotExist, match="Warehouse wh-missing does not exist"):
        w.statement_execution.execute_statement("SELECT 1", "wh-missing")
    with pytest.raises(ResourceDoesNotExist):
        w.warehouses.get("wh-missing")
    with pytest.raises(NotFound):
        w.statement_execution.get_statement("01f0-no-such-statement")


def test_result_closes_after_its_time_to_live(emulator: Callable[..., WarehouseEmulator]) -> None:
    emu = emulator(result_ttl_seconds=0.1, chunk_rows=5)
    w = client(emu)
    done = w.statement_execution.execute_statement("SELECT * FROM events", WAREHOUSE)
    assert done.status.state == StatementState.SUCCEEDED
    time.sleep(0.15)

    closed = w.statement_execution.get_statement(done.statement_id)
    assert closed.status.state == StatementState.CLOSED and closed.manifest is None and closed.result is None
    with pytest.raises(NotFound, match="was not found"):
        w.statement_execution.get_statement_result_chunk_n(done.statement_id, 1)
    assert emu.states(done.statement_id) == ["PENDING", "RUNNING", "SUCCEEDED", "CLOSED"]


@pytest.mark.parametrize(("body", "fragment"), [
    ({"warehouse_id": WAREHOUSE}, "statement"),
    ({"statement": "SELECT 1"}, "warehouse_id"),
    ({"statement": "SELECT 1", "warehouse_id": WAREHOUSE, "wait_timeout": "3s"}, "wait_timeout"),
    ({"statement": "SELECT 1", "warehouse_id": WAREHOUSE, "wait_timeout": "51s"}, "wait_timeout"),
    ({"statement": "SELECT 1", "warehouse_id": WAREHOUSE, "format": "ARROW_STREAM"}, "EXTERNAL_LINKS"),
    ({"statement": "SELECT 1", "warehouse_id": WAREHOUSE, "format": "CSV", "disposition": "INLINE"}, "INLINE"),
    ({"statement": "SELECT 1", "warehouse_id": WAREHOUSE, "row_limit": 0}, "row_limit"),
    ({"statement": "SELECT 1", "warehouse_id": WAREHOUSE, "byte_limit": -5}, "byte_limit"),
    ({"statement": "SELECT * FROM events WHERE id = ?", "warehouse_id": WAREHOUSE}, "Positional"),
])
def test_malformed_requests_are_refused_with_400(http: httpx.Client, emulator: Callable[..., WarehouseEmulator],
                                                 body: dict[str, Any], fragment: str) -> None:
    emu = emulator()
    raw = http.post(f"{emu.url}/api/2.0/sql/statements", headers={"Authorization": f"Bearer {TOKEN}"}, json=body)
    assert raw.status_code == 400
    assert raw.json()["error_code"] == "INVALID_PARAMETER_VALUE" and fragment in raw.json()["message"]


def test_sdk_sees_a_refused_request_as_invalid_parameter_value(emulator: Callable[..., WarehouseEmulator]) -> None:
    w = client(emulator())
    with pytest.raises(InvalidParameterValue):
        w.statement_execution.execute_statement("SELECT 1", WAREHOUSE, format=Format.ARROW_STREAM)
    with pytest.raises(BadRequest):
        w.statement_execution.execute_statement("SELECT 1", WAREHOUSE, wait_timeout="4s")


def test_inline_results_above_25_mib_fail(emulator: Callable[..., WarehouseEmulator]) -> None:
    w = client(emulator())
    sql = "SELECT repeat('x', 1048576) AS blob FROM range(26)"  # 26 MiB

    inline = w.statement_execution.execute_statement(sql, WAREHOUSE)
    assert inline.status.state == StatementState.FAILED
    assert inline.status.error.message.startswith("Inline byte limit exceeded")

    linked = w.statement_execution.execute_statement(sql, WAREHOUSE, disposition=Disposition.EXTERNAL_LINKS,
                                                     format=Format.ARROW_STREAM)
    assert linked.status.state == StatementState.SUCCEEDED and linked.manifest.total_row_count == 26


def test_requests_are_recorded_without_secrets(emulator: Callable[..., WarehouseEmulator]) -> None:
    emu = emulator()
    client(emu).statement_execution.execute_statement("SELECT 1 AS one", WAREHOUSE, query_tags=None)
    posted = next(r for r in emu.requests if r["method"] == "POST")
    assert posted["path"] == "/api/2.0/sql/statements" and posted["authorization"] is True
    assert posted["body"]["statement"] == "SELECT 1 AS one" and TOKEN not in json.dumps(emu.requests)

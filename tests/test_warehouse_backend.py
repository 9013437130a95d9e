"""The SQL warehouse backend, through the real databricks-sdk, against a local server of the Statement Execution API.

The differential tests, with the emulator executing on local Spark, are in test_spark_backend.py (they share its
Spark and its estate of a million audit rows). Here the emulator runs on DuckDB, which is quick, to check the
protocol: parameters, scope, caps, chunks, external links, cancellation, authentication, and an error a person can
act on for each way it goes wrong, with no secret in it.
"""

from __future__ import annotations

import datetime as dt
import http.client
import http.server
import logging
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import duckdb
import pyarrow as pa
import pytest
import sqlglot
from sqlglot import exp
from warehouse_emulator import WarehouseEmulator

from insight_mcp.agents.ingestion.backend import BackendError, QueryTimeout, Statement, TransientBackendError
from insight_mcp.agents.ingestion.catalog import column_types
from insight_mcp.agents.ingestion.duckdb_backend import open_readonly
from insight_mcp.agents.ingestion.warehouse_backend import WarehouseSystemTables, WarehouseUnavailable
from insight_mcp.agents.settings import DatabricksSettings
from insight_mcp.agents.sql.dialect import to_duckdb

TOKEN = "dapi-test-token"
WAREHOUSE = "wh-test"


def duckdb_executor(path: Path) -> Any:
    """Run the emulator's statements on a workspace file, as the embedded backend would read it."""
    conn = open_readonly(path)  # the embedded backend's own settings: both may hold the file in one process
    lock = threading.Lock()

    def run(statement_id: str, sql: str, params: dict[str, Any], catalog: str | None,
            schema: str | None) -> pa.Table:
        with lock:
            cursor = conn.cursor()
        try:
            return cursor.sql(to_duckdb(sql, column_types()), params=params or None).to_arrow_table()
        except duckdb.CatalogException:  # in the words a warehouse uses
            tables = [t.sql("databricks") for t in sqlglot.parse_one(sql, read="databricks").find_all(exp.Table)]
            raise RuntimeError(f"[TABLE_OR_VIEW_NOT_FOUND] The table or view {tables[-1]} cannot be found. Verify "
                               "the spelling and correctness of the schema and catalog. SQLSTATE: 42P01") from None
        finally:
            cursor.close()

    return run


def warehouse(emulator: WarehouseEmulator, **config: Any) -> WarehouseSystemTables:
    settings = {"host": emulator.url, "warehouse_id": WAREHOUSE, "retry_timeout_seconds": 5, **config}
    return WarehouseSystemTables(DatabricksSettings(**settings))


def run(backend: Any, sql: str, params: dict[str, Any] | None = None, *, max_rows: int = 100,
        max_chars: int = 100_000, timeout: float = 60) -> Any:
    statement = Statement(databricks_sql=sql, params=params or {})
    return anyio.run(lambda: backend.execute(statement, max_rows=max_rows, max_chars=max_chars,
                                             timeout_seconds=timeout))


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
    return TOKEN


@pytest.fixture
def emulator(fixture_workspace: Path) -> Iterator[WarehouseEmulator]:
    with WarehouseEmulator(duckdb_executor(fixture_workspace), chunk_rows=25) as server:
        yield server


# --- the protocol ------------------------------------------------------------------------------------------------


def test_values_travel_as_named_typed_parameters_in_the_narrowest_scope(emulator: WarehouseEmulator,
                                                                       token: str) -> None:
    backend = warehouse(emulator)
    sql = ("SELECT event_id, event_time, request_params FROM system.access.audit WHERE event_time >= :since "
           "AND action_name = :action AND response.status_code >= :code ORDER BY event_time, event_id")
    hostile = "login' OR 1=1 --"
    try:
        answer = run(backend, sql, {"since": dt.datetime(2026, 11, 10, 6), "action": "login", "code": 200},
                     max_rows=5)
        none = run(backend, sql, {"since": dt.datetime(2026, 11, 10), "action": hostile, "code": 0})
    finally:
        anyio.run(backend.close)
    assert answer.row_count == 5 and answer.truncated and "more than 5 rows" in (answer.truncation_reason or "")
    assert [c.type for c in answer.columns] == ["string", "timestamp", "map<string,string>"]
    assert answer.rows[0][1] >= "2026-11-10T06:00:00Z" and isinstance(answer.rows[0][2], dict)
    assert none.row_count == 0 and not none.truncated
    body = [r["body"] for r in emulator.requests if r["path"] == "/api/2.0/sql/statements"][-2]
    assert body["parameters"] == [{"name": "since", "value": "2026-11-10T06:00:00.000000Z", "type": "TIMESTAMP"},
                                  {"name": "action", "value": "login", "type": "STRING"},
                                  {"name": "code", "value": "200", "type": "BIGINT"}]
    assert ":since" in body["statement"] and "2026-11-10" not in body["statement"] and "login" not in body["statement"]
    assert (body["catalog"], body["schema"], body["row_limit"]) == ("system", "access", 5)
    assert body["disposition"] == "INLINE" and body["format"] == "JSON_ARRAY" and body["byte_limit"] > 0


def test_large_answers_come_as_arrow_chunks_through_links_that_never_see_our_token(emulator: WarehouseEmulator,
                                                                                   token: str) -> None:
    sql = "SELECT event_id, event_time, user_agent, request_params FROM system.access.audit ORDER BY event_id"
    inline = warehouse(emulator)
    linked = warehouse(emulator, inline_max_rows=10)
    try:
        small = run(inline, sql, max_rows=200)
        big = run(linked, sql, max_rows=200)
    finally:
        anyio.run(inline.close)
        anyio.run(linked.close)
    assert big.rows == small.rows and big.columns == small.columns and big.row_count == 200 and big.truncated
    assert "\u202e" not in str(big.rows)  # the hostile user agent is cleaned on this path too
    downloads = [r for r in emulator.requests if r["path"].startswith("/external/")]
    assert len(downloads) >= 8 and not any(r["authorization"] for r in downloads)  # 200 rows in chunks of 25
    chunked = [r for r in emulator.requests if "/result/chunks/" in r["path"]]
    assert chunked and all(r["authorization"] for r in chunked)
    assert [r["body"]["format"] for r in emulator.requests if r["path"] == "/api/2.0/sql/statements"][-1] == \
        "ARROW_STREAM"



def test_a_chunk_download_the_storage_refuses_for_a_moment_is_fetched_again(emulator: WarehouseEmulator,
                                                                           token: str) -> None:
    """A result link is a plain GET of object storage, safe to repeat: a passing 503 (or a pooled connection the
    storage closed while a long statement ran) must not fail the rule or tool that asked."""
    sql = "SELECT event_id FROM system.access.audit ORDER BY event_id"
    linked = warehouse(emulator, inline_max_rows=10)
    emulator.fail_next(503, "SlowDown", "Please reduce your request rate.", count=2, path_contains="/external/")
    try:
        answer = run(linked, sql, max_rows=40)
    finally:
        anyio.run(linked.close)
    assert answer.row_count == 40
    downloads = [r for r in emulator.requests if r["path"].startswith("/external/")]
    assert len(downloads) == 2 + 2  # 40 rows in two chunks of 25; the first two GETs answered 503

def test_a_statement_is_cancelled_at_its_deadline_and_when_its_caller_goes_away(token: str) -> None:
    release = threading.Event()
    cancelled: list[str] = []

    def slow(statement_id: str, sql: str, params: dict[str, Any], catalog: str | None,
             schema: str | None) -> pa.Table:
        release.wait(10)
        return pa.table({"n": [1]})

    def cancel(statement_id: str) -> None:
        cancelled.append(statement_id)

    with WarehouseEmulator(slow, canceller=cancel) as server:
        backend = warehouse(server, wait_timeout_seconds=0)
        try:
            with pytest.raises(QueryTimeout, match="time limit"):
                run(backend, "SELECT 1 AS n", timeout=0.6)

            async def leave() -> None:
                with anyio.move_on_after(0.6):
                    await backend.execute(Statement(databricks_sql="SELECT 2 AS n"), max_rows=1, max_chars=100,
                                          timeout_seconds=30)

            anyio.run(leave)
            deadline = time.monotonic() + 5
            while len(cancelled) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            release.set()
            anyio.run(backend.close)
        assert len(cancelled) == 2
        assert all(server.states(sid)[-1] == "CANCELED" for sid in cancelled)


# --- authentication --------------------------------------------------------------------------------------------


def test_oauth_for_a_service_principal_and_a_config_profile_both_work(fixture_workspace: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    with WarehouseEmulator(duckdb_executor(fixture_workspace), clients={"sp-app": "sp-secret-value"}) as server:
        # What Databricks Apps inject for the App's service principal.
        monkeypatch.setenv("DATABRICKS_HOST", server.url)
        monkeypatch.setenv("DATABRICKS_CLIENT_ID", "sp-app")
        monkeypatch.setenv("DATABRICKS_CLIENT_SECRET", "sp-secret-value")
        monkeypatch.setenv("DATABRICKS_WAREHOUSE_ID", WAREHOUSE)
        backend = WarehouseSystemTables(DatabricksSettings())
        try:
            assert run(backend, "SELECT count(*) AS n FROM system.access.audit").rows == [[240]]
        finally:
            anyio.run(backend.close)
        for var in ("DATABRICKS_HOST", "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET"):
            monkeypatch.delenv(var)
        config = tmp_path / "databrickscfg"
        config.write_text(f"[audit]\nhost = {server.url}\ntoken = {TOKEN}\n")
        monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(config))
        backend = WarehouseSystemTables(DatabricksSettings(profile="audit"))
        try:
            stats = anyio.run(lambda: backend.table_stats(["system.access.audit", "system.compute.clusters"]))
        finally:
            anyio.run(backend.close)
        assert stats[0].rows == 240 and stats[0].present
        assert stats[0].first_event == dt.datetime(2026, 11, 10)
    bearers = {r["authorization"] for r in server.requests if r["path"].startswith("/api/")}
    assert bearers == {True}


# --- bad input: a clear error naming the setting or the table, and no secret anywhere ----------------------------


def test_each_way_the_warehouse_fails_gets_an_error_a_person_can_act_on(
        fixture_workspace: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="databricks.sdk")  # the SDK's own records too (the CLI quiets them)
    secret = "dapi-expired-s3cr3t"
    executor = duckdb_executor(fixture_workspace)
    with WarehouseEmulator(executor, tokens=(TOKEN, "dapi-reader-token"), expired_tokens=(secret,),
                           denied={"dapi-reader-token": {"system.access.audit"}},
                           warehouses={WAREHOUSE: "RUNNING", "wh-cold": "STOPPED"},
                           start_seconds=float("inf")) as server:
        messages: list[str] = []

        def failure(kind: type[BaseException], match: str, *, env_token: str = TOKEN, sql: str = "SELECT 1 AS n",
                    timeout: float = 30, **config: Any) -> None:
            monkeypatch.setenv("DATABRICKS_TOKEN", env_token)
            backend = WarehouseSystemTables(DatabricksSettings(**{
                "host": server.url, "warehouse_id": WAREHOUSE, "retry_timeout_seconds": 2, **config}))
            try:
                with pytest.raises(kind, match=match) as raised:
                    run(backend, sql, timeout=timeout)
            finally:
                anyio.run(backend.close)
            messages.append(str(raised.value))

        failure(WarehouseUnavailable, r"INSIGHT_DATABRICKS__WAREHOUSE_ID", warehouse_id=None)
        failure(WarehouseUnavailable, r"cannot reach Databricks at http://127\.0\.0\.1:9.*DATABRICKS_HOST",
                host="http://127.0.0.1:9", retry_timeout_seconds=1)
        failure(WarehouseUnavailable, r"refused the credentials.*DATABRICKS_TOKEN", env_token=secret)
        failure(BackendError, r"cannot read system\.access\.audit.*SELECT on system\.access\.audit",
                env_token="dapi-reader-token", sql="SELECT count(*) AS n FROM system.access.audit")
        failure(BackendError, r"wh-missing is not in .*INSIGHT_DATABRICKS__WAREHOUSE_ID", warehouse_id="wh-missing")
        failure(TransientBackendError, r"wh-cold is starting", warehouse_id="wh-cold", timeout=1.5)
        failure(BackendError, r"this workspace has no system\.access\.nothing",
                sql="SELECT count(*) AS n FROM system.access.nothing")
        # The SDK appends its configuration (`token=***` in it) to a 403: still not a credentials problem.
        server.fail_next(403, "PERMISSION_DENIED", "User does not have CAN USE on warehouse wh-test", count=1000)
        failure(BackendError, r"may not use SQL warehouse wh-test \(User does not have CAN USE on warehouse "
                              r"wh-test\); grant it CAN USE")
        server.fail_next(403, "PERMISSION_DENIED", "x", count=0)
        server.fail_next(429, "TOO_MANY_REQUESTS", "Too many requests", count=1000, retry_after=0.2)
        failure(TransientBackendError, r"limiting requests \(429\)", retry_timeout_seconds=1)
        server.fail_next(429, "TOO_MANY_REQUESTS", "x", count=0)  # clear what is left of the storm
    for message in messages:
        assert secret not in message and TOKEN not in message and "Traceback" not in message
    assert secret not in caplog.text and TOKEN not in caplog.text


class HangUp:
    """A host that takes each connection and closes it at once (a workspace URL pointing at the wrong service), or
    with `silent` holds it and never answers (a firewall that drops the packets), counting them."""

    def __init__(self, *, silent: bool = False) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self._silent, self._held = silent, []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            if self._silent:
                self._held.append(conn)
            else:
                conn.close()

    def close(self) -> None:
        self.sock.close()
        for conn in self._held:
            conn.close()


def test_the_first_contact_names_what_is_wrong_before_any_statement(
        emulator: WarehouseEmulator, token: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def statements() -> int:
        return sum(r["path"] == "/api/2.0/sql/statements" for r in emulator.requests)

    # No warehouse id anywhere (no variable, no configuration file): said before the host is asked anything.
    for name in ("DATABRICKS_WAREHOUSE_ID", "DATABRICKS_CONFIG_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "absent.cfg"))
    asked = len(emulator.requests)
    with pytest.raises(WarehouseUnavailable, match=r"needs the SQL warehouse's id.*INSIGHT_DATABRICKS__WAREHOUSE_ID"):
        run(warehouse(emulator, warehouse_id=None), "SELECT 1 AS n")
    assert len(emulator.requests) == asked

    # A warehouse this workspace does not have: named on first contact, and no statement is sent to it.
    backend = warehouse(emulator, warehouse_id="wh-missing")
    with pytest.raises(BackendError, match=r"wh-missing is not in .*INSIGHT_DATABRICKS__WAREHOUSE_ID"):
        run(backend, "SELECT 1 AS n")
    assert statements() == 0
    anyio.run(backend.close)

    def answers_although_first_contact_gets(status: int, code: str, message: str, **config: Any) -> None:
        warehouses = "/api/2.0/sql/warehouses/"
        emulator.fail_next(status, code, message, count=1000, retry_after=0.2, path_contains=warehouses)
        backend = warehouse(emulator, **config)
        try:
            assert run(backend, "SELECT count(*) AS n FROM system.access.audit").rows == [[240]]
        finally:
            emulator.fail_next(status, code, message, count=0, path_contains=warehouses)
            anyio.run(backend.close)

    # Reached but busy on first contact: not a reason to fail; the statement gets the whole retry budget.
    answers_although_first_contact_gets(429, "TOO_MANY_REQUESTS", "Too many requests", connect_timeout_seconds=1,
                                        retry_timeout_seconds=30)
    # Not allowed to look at the warehouse: its statements say whether it may use it.
    answers_although_first_contact_gets(403, "PERMISSION_DENIED", "User does not have CAN VIEW on warehouse wh-test")


def named_unreachable(host: HangUp, reason: str) -> int:
    """Run a statement against the host with a 30 s retry budget and a 1 s first-contact one; its connections."""
    try:
        backend = WarehouseSystemTables(DatabricksSettings(host=host.url, warehouse_id=WAREHOUSE,
                                                           retry_timeout_seconds=30, connect_timeout_seconds=1))
        with pytest.raises(WarehouseUnavailable, match=r"cannot reach Databricks at http://127\.0\.0\.1:\d+ "
                                                        rf"\(DATABRICKS_HOST.*{reason}.*check the URL and the network"):
            run(backend, "SELECT 1 AS n")
        anyio.run(backend.close)
    finally:
        host.close()
    return host.connections


def test_a_host_never_reached_is_retried_for_the_first_contact_budget_only(token: str) -> None:
    # The SDK's discovery and our first request, each tried about twice in one second; retried for the 30 s
    # budget, each would have been tried about seven times (the SDK waits 1, 2, 3 ... s between tries).
    assert 2 <= named_unreachable(HangUp(), "ConnectionError") <= 6
    # A host that never answers: each of the two first requests waits out its own (short) HTTP timeout, once.
    assert named_unreachable(HangUp(silent=True), "(Timeout|timed out)") == 2


def test_statements_wait_the_usual_http_timeout_once_the_workspace_answered(token: str,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The first contact's short HTTP timeout must not outlive it: a submit held open for its `wait_timeout` while a
    statement runs would otherwise time out on the client and be sent again."""
    from insight_mcp.agents.ingestion import warehouse_backend

    monkeypatch.setattr(warehouse_backend, "FIRST_CONTACT_HTTP_SECONDS", 1)

    def slow(statement_id: str, sql: str, params: dict[str, Any], catalog: str | None,
             schema: str | None) -> pa.Table:
        time.sleep(2.5)  # longer than the first contact may wait, well within the submit's 10 s wait_timeout
        return pa.table({"n": [7]})

    with WarehouseEmulator(slow) as server:
        backend = warehouse(server, connect_timeout_seconds=1, wait_timeout_seconds=10)
        try:
            answer = run(backend, "SELECT 7 AS n")
        finally:
            anyio.run(backend.close)
        submits = [r for r in server.requests if r["path"] == "/api/2.0/sql/statements"]
    assert answer.rows == [[7]] and len(submits) == 1
    assert not [r for r in server.requests if r["path"].startswith("/api/2.0/sql/statements/")]  # no polls


def test_rate_limits_and_brief_outages_are_retried_with_backoff(emulator: WarehouseEmulator, token: str) -> None:
    emulator.fail_next(429, "TOO_MANY_REQUESTS", "Too many requests", count=2, retry_after=0.1)
    emulator.fail_next(503, "TEMPORARILY_UNAVAILABLE", "The service is temporarily unavailable", count=1,
                       path_contains="/api/2.0/sql/statements")
    backend = warehouse(emulator)
    try:
        assert run(backend, "SELECT count(*) AS n FROM system.access.audit").rows == [[240]]
    finally:
        anyio.run(backend.close)
    submits = [r for r in emulator.requests if r["path"] == "/api/2.0/sql/statements"]
    assert len(submits) >= 3


class ForwardProxy:
    """A plain HTTP forward proxy on localhost, as a corporate network puts in front of a workspace: it relays each
    absolute-URI request to its target and remembers the targets."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        proxy = self

        class Relay(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def relay(self) -> None:
                proxy.seen.append(self.path)
                target = urllib.parse.urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in {"proxy-connection"}}
                    path = target.path + (f"?{target.query}" if target.query else "")
                    upstream.request(self.command, path, body=body or None, headers=headers)
                    reply = upstream.getresponse()
                    payload = reply.read()
                finally:
                    upstream.close()
                self.send_response(reply.status)
                for key, value in reply.getheaders():
                    if key.lower() not in {"content-length", "transfer-encoding", "connection"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = relay

            def log_message(self, *_: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Relay)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> ForwardProxy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def test_the_proxy_settings_of_the_environment_are_honoured_and_read_once(emulator: WarehouseEmulator, token: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY",
                 "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    with ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        proxied = warehouse(emulator)
        try:
            assert run(proxied, "SELECT count(*) AS n FROM system.access.audit").rows == [[240]]
            monkeypatch.delenv("HTTP_PROXY")  # read when the client was made: a running server keeps its route
            assert run(proxied, "SELECT count(*) AS n FROM system.access.audit").rows == [[240]]
        finally:
            anyio.run(proxied.close)
        through = [p for p in proxy.seen if "/api/2.0/sql/statements" in p]
        assert len(through) >= 2 and all(p.startswith(emulator.url) for p in through)

        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # this host is to be reached directly
        before = len(proxy.seen)
        direct = warehouse(emulator)
        try:
            assert run(direct, "SELECT count(*) AS n FROM system.access.audit").rows == [[240]]
        finally:
            anyio.run(direct.close)
        assert len(proxy.seen) == before


def test_the_backend_sends_only_single_reads(emulator: WarehouseEmulator, token: str) -> None:
    backend = warehouse(emulator)
    try:
        for sql in ("DROP TABLE system.access.audit", "SELECT 1; DELETE FROM system.access.audit",
                    "INSERT INTO system.access.audit SELECT * FROM system.access.audit"):
            with pytest.raises(BackendError, match="refused to send"):
                run(backend, sql)
    finally:
        anyio.run(backend.close)
    assert not [r for r in emulator.requests if r["path"] == "/api/2.0/sql/statements"]


def test_the_command_line_reads_and_detects_through_the_warehouse(fixture_workspace: Path, emulator: WarehouseEmulator,
                                                                   token: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from typer.testing import CliRunner

    from insight_mcp.clients.cli import app

    monkeypatch.setenv("INSIGHT_DATABRICKS__HOST", emulator.url)
    monkeypatch.setenv("INSIGHT_DATABRICKS__WAREHOUSE_ID", WAREHOUSE)
    runner = CliRunner()
    home = ["--home", str(tmp_path / "home")]
    info = runner.invoke(app, [*home, "workspace", "info", "--backend", "databricks", "--json"])
    assert info.exit_code == 0, info.output
    rows = {t["name"]: t["rows"] for t in json.loads(info.stdout)["tables"]}
    assert rows["system.access.audit"] == 240
    args = ["detect", "--since", "2026-11-01", "--until", "2026-12-01", "--min-severity", "info",
            "--rule", "brute_force_user", "--rule", "first_seen_public_ip", "--json"]
    monkeypatch.setenv("INSIGHT_WORKSPACE_FILE", str(fixture_workspace))
    on_duckdb = runner.invoke(app, [*home, *args])
    on_warehouse = runner.invoke(app, [*home, *args, "--backend", "databricks"])
    assert on_duckdb.exit_code == 0, on_duckdb.output
    assert on_warehouse.exit_code == 0, on_warehouse.output
    keys = ("id", "rule_id", "severity", "event_count", "first_seen", "last_seen")
    said = [{k: f[k] for k in keys} for f in json.loads(on_duckdb.stdout)]
    assert [{k: f[k] for k in keys} for f in json.loads(on_warehouse.stdout)] == said
    refused = runner.invoke(app, [*home, "workspace", "load", "system.access.audit", str(tmp_path), "--backend",
                                  "databricks"])
    assert refused.exit_code != 0 and "written by Databricks itself" in refused.output
    monkeypatch.delenv("INSIGHT_DATABRICKS__WAREHOUSE_ID")
    missing = runner.invoke(app, [*home, "workspace", "info", "--backend", "databricks"])
    assert missing.exit_code != 0 and "INSIGHT_DATABRICKS__WAREHOUSE_ID" in missing.output
    assert TOKEN not in info.output + on_warehouse.output + missing.output


def test_a_table_the_principal_may_not_read_is_named_and_the_rest_still_runs(
        fixture_workspace: Path, token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from typer.testing import CliRunner

    from insight_mcp.clients.cli import app

    denied = {TOKEN: {"system.compute.clusters"}}
    with WarehouseEmulator(duckdb_executor(fixture_workspace), denied=denied) as server:
        monkeypatch.setenv("INSIGHT_DATABRICKS__HOST", server.url)
        monkeypatch.setenv("INSIGHT_DATABRICKS__WAREHOUSE_ID", WAREHOUSE)
        runner = CliRunner()
        home = ["--home", str(tmp_path / "home")]
        info = runner.invoke(app, [*home, "workspace", "info", "--backend", "databricks", "--json"])
        assert info.exit_code == 0, info.output
        tables = {t["name"]: t for t in json.loads(info.stdout)["tables"]}
        assert tables["system.access.audit"]["rows"] == 240 and tables["system.access.audit"]["note"] is None
        assert "SELECT on system.compute.clusters" in tables["system.compute.clusters"]["note"]
        found = runner.invoke(app, [*home, "detect", "--since", "2026-11-01", "--until", "2026-12-01", "--backend",
                                    "databricks", "--json"])
    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout), "the rules reading the tables it may read still ran"
    assert "not run" in found.stderr and "SELECT on system.compute.clusters" in found.stderr, found.output[-2000:]
    assert "cluster" in found.stderr.split("):")[-1]  # the skipped rules are the ones reading the clusters table

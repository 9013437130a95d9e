"""Spark (local[2]): the same tools, rules and findings as the embedded workspace, on a generated estate of a
million audit rows, directly and through the SQL warehouse backend (the Statement Execution API emulator executes on
this Spark); loading; and clear errors for what goes wrong."""

from __future__ import annotations

import datetime as dt
import gc
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from typer.testing import CliRunner

from insight_mcp.agents.ingestion.backend import BackendError, Statement
from insight_mcp.agents.ingestion.duckdb_backend import DuckDBSystemTables
from insight_mcp.agents.ingestion.spark_backend import SparkSystemTables, redact_remote
from insight_mcp.agents.ingestion.spark_tables import publish_tables
from insight_mcp.agents.security.engine import DetectionEngine
from insight_mcp.agents.security.model import Finding
from insight_mcp.agents.settings import DetectionSettings, SparkSettings, load_settings

pytest.importorskip("pyspark", reason="the spark extra is installed by make test")

END = dt.date(2026, 11, 21)
UNTIL = dt.datetime(2026, 11, 21)
SINCE = UNTIL - dt.timedelta(days=7)
TIMING = {"statement_ms", "elapsed_ms", "ms"}


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A generated estate of just over a million audit rows, and the same tables written where Spark reads them."""
    from insight_mcp.agents.ingestion.generator import generate_workspace

    root = tmp_path_factory.mktemp("spark-estate")
    report = generate_workspace(root / "workspace.duckdb", days=30, users=200, events_per_day=34_000, end=END)
    assert report.rows["system.access.audit"] >= 1_000_000
    written = publish_tables(root / "workspace.duckdb", root / "spark")
    assert written == report.rows
    return root / "workspace.duckdb", root / "spark"


@pytest.fixture(scope="module")
def spark(estate: tuple[Path, Path]) -> Any:
    backend = SparkSystemTables(SparkSettings(), tables_dir=estate[1])
    yield backend
    anyio.run(backend.close)


def _shape(findings: list[Finding]) -> list[tuple[Any, ...]]:
    """Everything a finding says. A list (evidence ids, sampled targets, IPs) by its length: which items a capped
    collect_set or collect_list keeps, and in what order, is each engine's own choice."""
    return sorted((f.id, f.rule_id, f.principal, f.severity, f.first_seen, f.last_seen, f.event_count,
                   f.occurrences, f.workspace_id, len(f.evidence.event_ids),
                   json.dumps({k: len(v) if isinstance(v, list) else v for k, v in f.evidence.fields.items()},
                              sort_keys=True, default=str))
                  for f in findings)


@pytest.fixture(scope="module")
def expected(estate: tuple[Path, Path]) -> Any:
    """The whole suite on the embedded workspace: what every other engine must find."""
    duck = DetectionEngine(estate[0], DetectionSettings())
    try:
        return anyio.run(lambda: duck.run(SINCE, UNTIL))
    finally:
        duck.close()


def _same_run(run: Any, expected: Any, backend: str) -> None:
    assert run.backend == backend and run.skipped == {}
    assert [(s.rule_id, s.error) for s in run.stats if s.error] == []
    assert run.rules_run == expected.rules_run > 60
    assert {s.rule_id: s.rows for s in run.stats} == {s.rule_id: s.rows for s in expected.stats}
    assert len(expected.findings) > 30
    assert _shape(run.findings) == _shape(expected.findings)


def _without_timing(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    return value


CALLS: dict[str, dict[str, Any]] = {
    "list_tables": {}, "describe_table": {"table": "system.access.audit"},
    "run_query": {"sql": "SELECT action_name, count(*) AS n, min(event_time) AS first, "
                         "max(source_ip_address) AS ip, sort_array(collect_set(service_name)) AS services "
                         "FROM system.access.audit WHERE event_date >= '2026-11-14' "
                         "GROUP BY action_name ORDER BY n DESC, action_name LIMIT 20"},
    "audit_events": {"service": "accounts", "status": "failure", "page_size": 20, "since": "2026-11-14"},
    "cluster_inventory": {"only_risky": True},
    "query_history_summary": {"group_by": "warehouse", "since": "2026-11-01", "top": 10},
    "external_ips": {"top": 20}, "ip_access_denials": {"since": "2026-11-14"},
    "connection_patterns": {"principal": "dana.lee@corvalis-energy.com"}, "egress_denials": {"top": 20},
    "data_volume_insights": {"top": 10}, "bottlenecks": {},
}


def _tool_answers(estate: tuple[Path, Path], backend: Any, home: Path) -> dict[str, Any]:
    """Every system-tables and network tool's structured answer on this backend, timings left out."""
    from insight_mcp.clients.client import connect_in_process
    from insight_mcp.servers.network import build_network_server
    from insight_mcp.servers.system_tables import build_system_tables_server

    settings = load_settings(home=home, workspace_file=estate[0])
    settings = settings.model_copy(update={"tracing": settings.tracing.model_copy(update={"enabled": False})})

    async def answers() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for build in (build_system_tables_server, build_network_server):
            server = build(settings, backend)
            async with connect_in_process(server) as client:
                for name, args in CALLS.items():
                    if name in server.declarations:
                        answer = await client.call(name, args)
                        out[name] = _without_timing(answer.structured)
        return out

    return anyio.run(answers)


@pytest.fixture(scope="module")
def expected_answers(estate: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    duck = DuckDBSystemTables(estate[0])
    try:
        answers = _tool_answers(estate, duck, tmp_path_factory.mktemp("duck-home"))
    finally:
        anyio.run(duck.close)
    assert set(answers) == set(CALLS) and all(answers.values())
    return answers


def test_every_table_and_network_tool_answers_the_same_on_spark(estate: tuple[Path, Path], spark: Any,
                                                              expected_answers: dict[str, Any],
                                                              tmp_path: Path) -> None:
    got = _tool_answers(estate, spark, tmp_path / "home")
    for name in CALLS:
        assert got[name] == expected_answers[name], name


# --- the SQL warehouse backend, through the real databricks-sdk, to a Statement Execution API server on this Spark


@pytest.fixture(scope="module")
def warehouse(spark: Any) -> Any:
    """The emulator of the Statement Execution API executing on this module's Spark, and a backend talking to it."""
    import os

    from warehouse_emulator import WarehouseEmulator

    from insight_mcp.agents.ingestion.warehouse_backend import WarehouseSystemTables
    from insight_mcp.agents.settings import DatabricksSettings

    def execute(statement_id: str, sql: str, params: dict[str, Any], catalog: str | None,
                schema: str | None) -> Any:
        session = spark._session_now()
        try:
            text = spark.spark_sql(sql, session)
        except BackendError as exc:  # no files for a table this estate lacks: what a warehouse says instead
            raise RuntimeError(f"[TABLE_OR_VIEW_NOT_FOUND] {exc} SQLSTATE: 42P01") from None
        session.addTag(statement_id)
        try:
            return session.sql(text, args=params or None).toArrow()
        finally:
            session.removeTag(statement_id)

    def cancel(statement_id: str) -> None:
        spark._session_now().interruptTag(statement_id)

    with WarehouseEmulator(execute, canceller=cancel, chunk_rows=2_000) as server:
        saved = os.environ.get("DATABRICKS_TOKEN")
        os.environ["DATABRICKS_TOKEN"] = "dapi-test-token"  # the SDK's unified auth reads it
        backend = WarehouseSystemTables(DatabricksSettings(host=server.url, warehouse_id="wh-test"))
        backend._connect()  # now: each test's isolation clears the environment the SDK reads credentials from
        try:
            yield server, backend
        finally:
            anyio.run(backend.close)
            if saved is None:
                os.environ.pop("DATABRICKS_TOKEN", None)
            else:
                os.environ["DATABRICKS_TOKEN"] = saved


def test_every_rule_finds_on_spark_through_a_sql_warehouse_what_it_finds_on_the_embedded_workspace(
        expected: Any, warehouse: Any) -> None:
    """One run of the whole suite answers two questions: every rule's standalone SQL runs on local[2] Spark (the
    emulator executes it there, exactly as the Spark backend would) and finds what DuckDB finds; and the warehouse
    backend carries it there and back (typed parameters, Arrow chunks through external links) without changing a
    finding. Spark alone, without the warehouse, runs a few rules from the command line below."""
    server, backend = warehouse
    engine = DetectionEngine(backend, DetectionSettings(parallelism=4))
    _same_run(anyio.run(lambda: engine.run(SINCE, UNTIL)), expected, "databricks")
    sent = [r["body"] for r in server.requests if r["method"] == "POST" and r["path"] == "/api/2.0/sql/statements"]
    assert {(b["warehouse_id"], b["catalog"]) for b in sent} == {("wh-test", "system")}
    assert {b["disposition"] for b in sent} == {"INLINE", "EXTERNAL_LINKS"}  # table stats inline, rule rows as Arrow
    assert all(":since" in b["statement"] and b["parameters"] for b in sent if "since" in str(b.get("parameters")))
    assert any(r["path"].startswith("/external/") and not r["authorization"] for r in server.requests)


def test_every_table_and_network_tool_answers_the_same_through_a_sql_warehouse(
        estate: tuple[Path, Path], warehouse: Any, expected_answers: dict[str, Any], tmp_path: Path) -> None:
    got = _tool_answers(estate, warehouse[1], tmp_path / "home")
    for name in CALLS:
        assert got[name] == expected_answers[name], name


def test_statements_bind_parameters_and_cap_rows(spark: Any) -> None:
    sql = "SELECT event_id FROM system.access.audit WHERE event_time >= :since ORDER BY event_time LIMIT 50"
    answer = anyio.run(lambda: spark.execute(Statement(databricks_sql=sql, params={"since": SINCE}), max_rows=10,
                                             max_chars=100_000, timeout_seconds=120))
    assert answer.row_count == 10 and answer.truncated and "more than 10 rows" in (answer.truncation_reason or "")
    hostile = {"since": "2026-11-14' OR 1=1 --"}  # bound as a value: Spark refuses it as a timestamp
    with pytest.raises(BackendError) as refused:
        anyio.run(lambda: spark.execute(Statement(databricks_sql=sql, params=hostile), max_rows=10,
                                        max_chars=100_000, timeout_seconds=120))
    assert "Traceback" not in str(refused.value) and "\tat " not in str(refused.value)


def test_a_failed_query_is_the_callers_error_not_a_jvm_stack_in_the_log(spark: Any,
                                                                        capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(BackendError, match="UNRESOLVED_COLUMN"):
        anyio.run(lambda: spark.execute(Statement(databricks_sql="SELECT no_such_column FROM system.access.audit"),
                                        max_rows=1, max_chars=1000, timeout_seconds=120))
    err = capfd.readouterr().err
    assert "no_such_column" not in err and "\tat org.apache" not in err and "SQLQueryContextLogger" not in err


LOCAL_SPARK_ONE_ROW = """
import anyio
from pathlib import Path
from insight_mcp.agents.ingestion.backend import Statement
from insight_mcp.agents.ingestion.spark_backend import SparkSystemTables
from insight_mcp.agents.settings import SparkSettings

backend = SparkSystemTables(SparkSettings(), tables_dir=Path("/nonexistent"))
print(anyio.run(lambda: backend.execute(Statement(databricks_sql="SELECT 1 AS n"), max_rows=1, max_chars=100,
                                        timeout_seconds=120)).rows)
"""


def test_local_spark_starts_without_chatter_on_stderr(tmp_path: Path) -> None:
    """A command on local Spark prints its answer, not the JVM's start-up banner, log level notes or warnings."""
    done = subprocess.run([sys.executable, "-c", LOCAL_SPARK_ONE_ROW], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[[1]]"
    for chatter in ("Using Spark's default log4j profile", "Setting default log level", " WARN ", "FutureWarning"):
        assert chatter not in done.stderr, done.stderr[-2000:]


def test_a_missing_table_names_the_folder_and_how_to_write_it(tmp_path: Path) -> None:
    backend = SparkSystemTables(SparkSettings(), tables_dir=tmp_path / "nothing")
    try:
        with pytest.raises(BackendError, match="workspace load --backend spark") as missing:
            anyio.run(lambda: backend.execute(Statement(databricks_sql="SELECT 1 FROM system.access.audit"),
                                              max_rows=1, max_chars=100, timeout_seconds=60))
        assert str(tmp_path / "nothing") in str(missing.value)
        stats = anyio.run(lambda: backend.table_stats(["system.access.audit"]))
        assert stats[0].present is False
    finally:
        anyio.run(backend.close)


def test_a_remote_that_refuses_the_connection_is_named_without_its_token() -> None:
    remote = "sc://127.0.0.1:9/;token=dapi-s3cr3t-value"
    backend = SparkSystemTables(SparkSettings(), tables_dir=Path("/nonexistent"), remote=remote)
    try:
        with pytest.raises(BackendError) as refused:
            anyio.run(lambda: backend.execute(Statement(databricks_sql="SELECT 1"), max_rows=1, max_chars=100,
                                              timeout_seconds=120))
    finally:
        anyio.run(backend.close)
    message = str(refused.value)
    assert "INSIGHT_SPARK_REMOTE" in message and "127.0.0.1:9" in message
    assert "s3cr3t" not in message and "token=***" in message
    assert redact_remote(remote) == "sc://127.0.0.1:9/;token=***"
    # gRPC's status and reason, not the first line of its multi-line repr
    assert "UNAVAILABLE: failed to connect" in message and "_InactiveRpcError" not in message
    # and no client left open: at exit pyspark would ask the server out of reach again, retrying, before exiting
    from pyspark.sql.connect.client.core import SparkConnectClient

    clients = [o for o in gc.get_objects() if isinstance(o, SparkConnectClient) and o.host == "127.0.0.1"]
    assert clients and all(client.is_closed for client in clients)


def test_the_command_line_loads_and_detects_on_spark(tmp_path: Path) -> None:
    from insight_mcp.clients.cli import app

    home = tmp_path / "home"
    export = Path(__file__).parent / "data" / "external_export"
    runner = CliRunner()
    loaded = runner.invoke(app, ["--home", str(home), "workspace", "load", "system.access.audit",
                                 str(next(export.glob("audit*"))), "--backend", "spark", "--json"])
    assert loaded.exit_code == 0, loaded.output
    report = json.loads(loaded.stdout)
    assert list(report["spark_tables"]) == ["system.access.audit"]
    assert report["spark_tables"]["system.access.audit"] == report["inserted"] > 0
    assert (home / "spark" / "access" / "audit").is_dir()
    chosen = [arg for rule in ("brute_force_user", "brute_force_source_ip", "password_spray_low_and_slow",
                                              "first_seen_public_ip")
              for arg in ("--rule", rule)]
    args = ["--home", str(home), "detect", "--since", "2026-01-01", "--until", "2027-01-01", "--min-severity",
            "info", *chosen, "--json"]
    on_duckdb = runner.invoke(app, args)
    on_spark = runner.invoke(app, [*args, "--backend", "spark"])
    assert on_duckdb.exit_code == 0 and on_spark.exit_code == 0, on_spark.output
    said = [{k: f[k] for k in ("id", "rule_id", "severity", "event_count", "first_seen", "last_seen")}
            for f in json.loads(on_duckdb.stdout)]
    assert said and [{k: f[k] for k in said[0]} for f in json.loads(on_spark.stdout)] == said
    wrong = runner.invoke(app, ["--home", str(home), "detect", "--backend", "oracle"])
    assert wrong.exit_code == 2 and "--backend must be one of duckdb, spark, databricks" in wrong.output


def test_a_load_while_serving_is_read_at_the_next_statement(tmp_path: Path, fixture_workspace: Path) -> None:
    """A load swaps the table's folder while a backend holds a view over it: the next statement reads the new rows."""
    import shutil

    import duckdb

    workspace = tmp_path / "workspace.duckdb"
    shutil.copy(fixture_workspace, workspace)
    tables = tmp_path / "spark"
    publish_tables(workspace, tables, ["system.access.audit"])
    backend = SparkSystemTables(SparkSettings(), tables_dir=tables)
    count = Statement(databricks_sql="SELECT count(*) AS n FROM system.access.audit")
    try:
        before = anyio.run(lambda: backend.execute(count, max_rows=1, max_chars=100, timeout_seconds=120)).rows[0][0]
        with duckdb.connect(str(workspace)) as conn:
            conn.execute("INSERT INTO access.audit SELECT * REPLACE (event_id || '-again' AS event_id) "
                         "FROM access.audit LIMIT 3")
        publish_tables(workspace, tables, ["system.access.audit"])
        after = anyio.run(lambda: backend.execute(count, max_rows=1, max_chars=100, timeout_seconds=120)).rows[0][0]
    finally:
        anyio.run(backend.close)
    assert after == before + 3

"""One engine for every backend: the portable rule set, a runner per backend, one findings pipeline; shared answer
building; the risk tools reading the last run; serving closes what it opened."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import shutil
import sqlite3
import time
import warnings
from pathlib import Path
from typing import Any

import anyio
import duckdb
import pyarrow as pa
import pytest
import structlog

from insight_mcp.agents.ingestion.answer_builder import answer_from_arrow, answer_from_rows
from insight_mcp.agents.ingestion.backend import BackendError, ColumnInfo, Statement
from insight_mcp.agents.ingestion.duckdb_backend import DuckDBSystemTables
from insight_mcp.agents.security.engine import DetectionEngine
from insight_mcp.agents.security.model import Finding
from insight_mcp.agents.security.pipeline import DetectionRun
from insight_mcp.agents.security.ruleset import rules_by_id
from insight_mcp.agents.security.run_store import RunStore
from insight_mcp.agents.security.runners import DuckDBRunner, StatementRunner
from insight_mcp.agents.security.service import SecurityAgent
from insight_mcp.agents.settings import DetectionSettings, load_settings

SINCE, UNTIL = dt.datetime(2026, 11, 7), dt.datetime(2026, 11, 21)


class PortableOnly(DuckDBSystemTables):
    """The embedded workspace seen as any other backend: it only takes statements, so the engine must send each
    rule's standalone Databricks SQL (rollups as leading CTEs), as it would to a warehouse or Spark."""

    kind = "portable"


def _shape(findings: list[Finding]) -> list[tuple[Any, ...]]:
    """Everything a finding says. A list (evidence ids, sampled targets) by its length: which items a capped
    collect_set or collect_list keeps is the engine's own choice, and differs between runs in parallel."""
    return sorted((f.id, f.rule_id, f.principal, f.severity, f.first_seen, f.last_seen, f.event_count,
                   f.occurrences, len(f.evidence.event_ids),
                   json.dumps({k: len(v) if isinstance(v, list) else v for k, v in f.evidence.fields.items()},
                              sort_keys=True, default=str))
                  for f in findings)


def test_the_portable_statements_find_what_the_embedded_runner_finds(demo_workspace: Path) -> None:
    embedded = DuckDBSystemTables(demo_workspace)
    portable = PortableOnly(demo_workspace)
    try:
        fast = DetectionEngine(embedded, DetectionSettings())
        plain = DetectionEngine(portable, DetectionSettings(parallelism=2))
        assert isinstance(fast.runner, DuckDBRunner) and isinstance(plain.runner, StatementRunner)
        assert [t.name for t in fast.runner.transformations] == ["shared_rollups", "action_slice", "tables",
                                                                 "compatibility", "sargable"]
        assert plain.runner.transformations == []
        one = anyio.run(lambda: fast.run(SINCE, UNTIL))
        two = anyio.run(lambda: plain.run(SINCE, UNTIL))
        assert two.backend == "portable" and one.backend == "duckdb"
        # most rules read the run's action slice on the embedded engine; the statements read the table itself
        assert len(fast.runner.sliced_sql) > 40 and one.slice_ms > 0 and two.slice_ms == 0
        assert [s for s in one.stats if s.error] == [] and [s for s in two.stats if s.error] == []
        assert one.rules_run == two.rules_run > 60
        assert {s.rule_id: s.rows for s in one.stats} == {s.rule_id: s.rows for s in two.stats}
        assert len(one.findings) > 20
        assert _shape(one.findings) == _shape(two.findings)
        # Every round in a rule, over the tables, the rollups or the slice, is a DOUBLE rounded as Databricks does.
        for compiled in (fast.runner.sql, fast.runner.sliced_sql):
            rounding = {rule: sql for rule, sql in compiled.items() if "ROUND(" in sql.upper()}
            assert {rule: sql.count("TRY_CAST(CAST(") for rule, sql in rounding.items()} == {
                rule: sql.upper().count("ROUND(") for rule, sql in rounding.items()}
        assert len({r for r, sql in fast.runner.sql.items() if "TRY_CAST(CAST(" in sql}) >= 13
    finally:
        anyio.run(embedded.close)
        anyio.run(portable.close)


def test_detections_use_the_agents_own_backend_and_leave_it_open(demo_workspace: Path, tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home", workspace_file=demo_workspace)
    backend = DuckDBSystemTables(demo_workspace)
    agent = SecurityAgent(settings, backend)
    try:
        engine = agent.engine()
        assert engine.backend is backend
        anyio.run(lambda: agent.run(since="2026-11-14", until="2026-11-21"))
        agent.close()
        # the backend still answers after the engine has gone: the engine never owned it
        stats = anyio.run(lambda: backend.table_stats(["system.access.audit"]))
        assert stats[0].rows > 0
    finally:
        anyio.run(backend.close)


def test_an_engine_given_a_file_opens_and_closes_its_own_backend(demo_workspace: Path) -> None:
    engine = DetectionEngine(demo_workspace, DetectionSettings(), only=["brute_force_user"])
    backend = engine.backend
    assert isinstance(backend, DuckDBSystemTables)
    anyio.run(lambda: engine.run(SINCE, UNTIL))
    engine.close()
    assert backend._conn is None


def test_two_engines_on_one_file_take_turns_with_the_shared_rollups(demo_workspace: Path) -> None:
    """Every connection to a file shares one scratch database: runs over different windows must not mix rollups."""
    readers = ["first_seen_public_ip", "ip_many_principals",  # the rollup's readers
               "brute_force_user", "secrets_access_burst", "mass_delete", "acl_grant_change"]  # the slice's
    a, b = DuckDBSystemTables(demo_workspace), DuckDBSystemTables(demo_workspace)
    try:
        ea, eb = DetectionEngine(a, DetectionSettings(), only=readers), DetectionEngine(b, DetectionSettings(),
                                                                                       only=readers)
        windows = [(dt.datetime(2026, 11, 14), UNTIL), (dt.datetime(2026, 11, 19), UNTIL)]
        alone = [anyio.run(lambda w=w: ea.run(*w)) for w in windows]

        async def together() -> list[Any]:
            out: list[Any] = [None, None]

            async def one(i: int, engine: DetectionEngine) -> None:
                out[i] = await engine.run(*windows[i])

            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(one, 0, ea)
                    tg.start_soon(one, 1, eb)
            return out

        both = anyio.run(together)
        assert [_shape(r.findings) for r in both] == [_shape(r.findings) for r in alone]
    finally:
        anyio.run(a.close)
        anyio.run(b.close)


# --- shared answer building -----------------------------------------------------------------------------------


def _cols(*names: str) -> list[ColumnInfo]:
    return [ColumnInfo(name=n, type="string") for n in names]


def test_arrow_and_rows_give_the_same_answer_with_json_safe_values() -> None:
    con = duckdb.connect()
    sql = ("SELECT map(['a'], [1]) AS m, {'x': map(['k'], ['v'])} AS s, TIMESTAMP '2026-01-01 10:00:00.5' AS t, "
           "'ok\u200b' AS v, 7::HUGEINT AS h, 1.5::DECIMAL(5,2) AS d, "
           "INTERVAL 2 HOUR AS i, 'nan'::DOUBLE AS f, NULL AS n")
    con.execute("SET TimeZone = 'UTC'")
    table = con.sql(sql).to_arrow_table()
    rows = con.execute(sql).fetchall()
    columns = _cols(*table.column_names)
    from_arrow = answer_from_arrow(columns, table, more=False, max_rows=10, max_chars=10_000, elapsed_ms=1)
    from_rows = answer_from_rows(columns, rows, more=False, max_rows=10, max_chars=10_000, elapsed_ms=1)
    assert from_arrow.rows == from_rows.rows
    assert from_arrow.rows[0] == [{"a": 1}, {"x": {"k": "v"}}, "2026-01-01T10:00:00.500000Z",
                                  "ok", 7, 1.5, 7200.0, "nan", None]
    json.dumps(from_arrow.rows, allow_nan=False)
    zoned = pa.table({"t": pa.array([dt.datetime(2026, 1, 1, 10)], pa.timestamp("us", tz="UTC"))})
    assert answer_from_arrow(_cols("t"), zoned, more=False, max_rows=1, max_chars=100,
                             elapsed_ms=0).rows == [["2026-01-01T10:00:00Z"]]


def test_an_interval_column_keeps_its_months_whether_the_answer_is_small_or_large(fixture_workspace: Path) -> None:
    backend = DuckDBSystemTables(fixture_workspace)
    sql = ("SELECT event_id, INTERVAL 1 MONTH + INTERVAL 3 DAY AS lease, event_time - event_time AS zero "
           "FROM access.audit ORDER BY event_id")

    async def both() -> list[Any]:
        statement = Statement(databricks_sql="SELECT 1", duckdb_sql=sql)
        small = await backend.execute(statement, max_rows=3, max_chars=10**6, timeout_seconds=30)  # Python rows
        large = await backend.execute(statement, max_rows=500, max_chars=10**6, timeout_seconds=30)  # Arrow
        return [small, large]

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no warning reaches a caller's log either
            small, large = anyio.run(both)
    finally:
        anyio.run(backend.close)
    assert [c.type for c in small.columns] == ["string", "interval", "interval"] == [c.type for c in large.columns]
    assert small.rows[0][1:] == ["1 months 3 days 0 seconds", 0.0]  # a timedelta would have lost the month
    assert small.rows == large.rows[:3]
    assert small.truncated and small.row_count == 3 and "more than 3 rows" in (small.truncation_reason or "")
    assert not large.truncated and large.row_count == 240


def test_a_capped_small_answer_leaves_its_thread_ready_for_any_next_statement(fixture_workspace: Path) -> None:
    backend = DuckDBSystemTables(fixture_workspace, workers=1)  # one worker: every statement on its kept cursor
    statement = Statement(databricks_sql="SELECT 1", duckdb_sql="SELECT event_id FROM access.audit ORDER BY event_id")

    async def turns() -> list[tuple[int, bool]]:
        out = []
        for cap in (3, 150, 3, 3, 150, 150):  # Python rows, Arrow, ... each cut short with rows left unread
            answer = await backend.execute(statement, max_rows=cap, max_chars=10**6, timeout_seconds=30)
            out.append((answer.row_count, answer.truncated))
        return out

    try:
        assert anyio.run(turns) == [(3, True), (150, True), (3, True), (3, True), (150, True), (150, True)]
    finally:
        anyio.run(backend.close)


def test_aware_times_are_bound_as_the_naive_utc_the_tables_hold(fixture_workspace: Path, demo_workspace: Path) -> None:
    # Bound aware, DuckDB compares every row as TIMESTAMPTZ and cannot prune by time: same answer, twice the work.
    backend = DuckDBSystemTables(fixture_workspace)
    paris = dt.timezone(dt.timedelta(hours=1))
    statement = Statement(databricks_sql="SELECT 1", duckdb_sql="SELECT typeof($since) AS t, $since AS v, $n AS n",
                          params={"since": dt.datetime(2026, 11, 10, 7, 30, tzinfo=paris), "n": 3})
    try:
        answer = anyio.run(lambda: backend.execute(statement, max_rows=5, max_chars=1000, timeout_seconds=30))
    finally:
        anyio.run(backend.close)
    assert answer.rows == [["TIMESTAMP", "2026-11-10T06:30:00Z", 3]]

    engine = DetectionEngine(demo_workspace, DetectionSettings())
    until = dt.datetime(2026, 11, 30)
    try:
        naive = anyio.run(lambda: engine.run(until - dt.timedelta(days=7), until))
        aware = anyio.run(lambda: engine.run((until - dt.timedelta(days=7)).replace(tzinfo=dt.UTC),
                                             until.replace(tzinfo=dt.UTC)))
    finally:
        engine.close()
    assert (aware.since, aware.until) == (naive.since, naive.until) and aware.until.tzinfo is None
    assert _shape(aware.findings) == _shape(naive.findings)


def test_answers_are_capped_by_rows_and_by_characters() -> None:
    table = pa.table({"n": list(range(50)), "s": ["x" * 100] * 50})
    by_rows = answer_from_arrow(_cols("n", "s"), table, more=False, max_rows=10, max_chars=10**6, elapsed_ms=0)
    assert by_rows.row_count == 10 and by_rows.truncated and "more than 10 rows" in (by_rows.truncation_reason or "")
    by_chars = answer_from_arrow(_cols("n", "s"), table, more=False, max_rows=50, max_chars=1000, elapsed_ms=0)
    assert by_chars.truncated and 0 < by_chars.row_count < 10
    assert len(json.dumps(by_chars.rows)) <= 1000 + 120
    whole = answer_from_arrow(_cols("n", "s"), table, more=False, max_rows=50, max_chars=10**6, elapsed_ms=0)
    assert not whole.truncated and whole.row_count == 50 and whole.truncation_reason is None
    engine_had_more = answer_from_rows(_cols("n"), [[1]], more=True, max_rows=1, max_chars=100, elapsed_ms=0)
    assert engine_had_more.truncated and engine_had_more.rows == [[1]]
    assert answer_from_rows(_cols("d"), [[decimal.Decimal("2.5")]], more=False, max_rows=5, max_chars=100,
                            elapsed_ms=0).rows == [[2.5]]


# --- the risk tools read the last run; serving closes what it opened -------------------------------------------


def test_the_risk_tools_read_the_last_whole_run_over_the_same_window(demo_workspace: Path, tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home", workspace_file=demo_workspace)
    backend = DuckDBSystemTables(demo_workspace)
    agent = SecurityAgent(settings, backend)

    async def scenario() -> None:
        engine = agent.engine()
        first = await agent.run()  # the default window, every rule: what run_detections does
        assert engine.runs == 1
        again = await agent.latest_run()
        assert engine.runs == 1 and again is first
        filtered = await agent.run(categories=["data_exfiltration"])  # a partial run is not the suite's findings
        assert engine.runs == 2 and len(filtered.findings) < len(first.findings)
        assert await agent.latest_run() is first and engine.runs == 2
        other = await agent.latest_run(since="2026-11-18", until="2026-11-21")  # no run over this window yet
        assert engine.runs == 3 and other is not first
        assert await agent.latest_run(since="2026-11-18", until="2026-11-21") is other and engine.runs == 3

    try:
        anyio.run(scenario)
    finally:
        agent.close()
        anyio.run(backend.close)


def test_a_new_process_reads_the_last_whole_run_from_the_state_store(demo_workspace: Path, tmp_path: Path) -> None:
    """A stdio session or a CLI call is a process of its own: the run the daily job (or another session) made over
    the window is read back, without compiling a rule, unless something that decides its findings changed."""
    workspace = tmp_path / "workspace.duckdb"
    shutil.copy(demo_workspace, workspace)
    keep = {"mass_delete", "brute_force_user", "admin_group_change", "login_bypassing_sso"}  # quick to compile
    few = DetectionSettings(disabled_rules=sorted(set(rules_by_id(DetectionSettings())) - keep))
    settings = load_settings(home=tmp_path / "home", workspace_file=workspace).model_copy(update={"detections": few})

    def session(config: Any = settings, **kwargs: Any) -> tuple[Any, int | None]:
        """What a new process sees: the run the risk tools read, and how many suite runs its engine made (None:
        the engine was never built)."""
        backend = DuckDBSystemTables(workspace)
        agent = SecurityAgent(config, backend, **kwargs)

        async def scenario() -> Any:
            run, incidents = await agent.incidents(since="2026-11-14", until="2026-11-21")  # list_incidents
            assert await agent.latest_run(since="2026-11-14", until="2026-11-21") is run  # top_risks
            assert {i.id for i in incidents} <= set(agent._incidents)
            return run

        try:
            return anyio.run(scenario), agent._engine.runs if agent._engine is not None else None
        finally:
            agent.close()
            anyio.run(backend.close)

    first, runs = session()
    assert runs == 1 and {f.rule_id for f in first.findings} == keep
    again, runs = session()
    assert runs is None and again.findings == first.findings and again.stats == first.stats
    summary, runs = summarized(settings, workspace, "medium")  # summarize_findings reads the same run
    worse = [f for f in first.findings if f.severity in ("medium", "high", "critical")]
    assert runs is None and summary.counts.total == len(worse) < len(first.findings)
    assert {f.id for f in summary.top_findings} <= {f.id for f in worse}
    tuned = settings.model_copy(update={"detections": few.model_copy(
        update={"parameters": {"mass_delete": {"min_deletes": 1}}})})
    assert session(tuned)[1] == 1  # another threshold finds other things
    assert session(tuned)[1] is None and session()[1] is None  # both kept
    os.utime(workspace, ns=(time.time_ns(), time.time_ns() + 10**9))  # a load rewrote the workspace
    assert session()[1] == 1 and session()[1] is None

    # A scratch workspace keeps nothing; a stored run that no longer reads is run again, said in the log.
    scratch = settings.model_copy(update={"detections": few.model_copy(
        update={"parameters": {"mass_delete": {"min_deletes": 2}}})})
    assert session(scratch, keep_runs=False)[1] == 1 and session(scratch, keep_runs=False)[1] == 1
    with sqlite3.connect(settings.state_path) as conn:
        kept = conn.execute("SELECT count(*) FROM detection_runs").fetchone()[0]
        conn.execute("UPDATE detection_runs SET payload = '{\"since\": 1'")
    assert kept == 3
    with structlog.testing.capture_logs() as logs:
        broken, runs = session()
    # A new run finds the same (its evidence lists may come in another order: collect_set keeps none).
    assert runs == 1 and [(f.id, f.severity, f.event_count) for f in broken.findings] == \
        [(f.id, f.severity, f.event_count) for f in first.findings]
    assert [entry["error"] for entry in logs if entry["event"] == "detection_run_unreadable"] == \
        ["the stored run is not a valid run"]
    assert session()[1] is None  # the run made then replaced it


def summarized(settings: Any, workspace: Path, min_severity: str) -> tuple[Any, int | None]:
    """summarize_findings in a process of its own, and the suite runs it made (None: it built no engine)."""
    from insight_mcp.agents.narrative.briefing import summarize_findings

    backend = DuckDBSystemTables(workspace)
    agent = SecurityAgent(settings, backend)
    try:
        summary = anyio.run(lambda: summarize_findings(settings, backend, agent, since="2026-11-14",
                                                       until="2026-11-21", min_severity=min_severity))
        return summary, agent._engine.runs if agent._engine is not None else None
    finally:
        agent.close()
        anyio.run(backend.close)


def test_a_state_store_that_cannot_be_written_costs_a_rerun_not_an_answer(demo_workspace: Path,
                                                                          tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home", workspace_file=demo_workspace)
    settings.state_path.mkdir(parents=True)  # a folder where the SQLite file should be
    backend = DuckDBSystemTables(demo_workspace)
    agent = SecurityAgent(settings, backend)

    async def scenario() -> None:
        run = await agent.latest_run(since="2026-11-14", until="2026-11-21")
        assert run.findings and agent.engine().runs == 1
        assert await agent.latest_run(since="2026-11-14", until="2026-11-21") is run  # this process remembers it

    try:
        anyio.run(scenario)
    finally:
        agent.close()
        anyio.run(backend.close)


def test_the_state_store_keeps_only_the_newest_runs(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "state.db", keep=2)
    runs = [DetectionRun(since=dt.datetime(2026, 11, d), until=dt.datetime(2026, 11, d + 1), findings=[],
                         suppressed=0, rules_run=d) for d in (1, 2, 3)]
    for n, run in enumerate(runs):
        store.put(f"k{n}", run)
    assert store.get("k0") is None and store.get("k1") == runs[1] and store.get("k2") == runs[2]
    store.put("k1", runs[0])  # the same key again: replaced, and now the newest
    store.put("k3", runs[2])
    assert store.get("k1") == runs[0] and store.get("k2") is None


def test_closing_the_servers_closes_the_backend_and_the_engines(demo_workspace: Path, tmp_path: Path) -> None:
    from insight_mcp.clients.client import connect_in_process
    from insight_mcp.servers.app import build_servers, close_servers

    settings = load_settings(home=tmp_path / "home", workspace_file=demo_workspace)
    settings = settings.model_copy(update={"tracing": settings.tracing.model_copy(update={"enabled": False})})
    servers = build_servers(settings, ["system-tables", "security"])
    backend = servers["security"].backends[0]
    assert servers["system-tables"].backends == [backend] and isinstance(backend, DuckDBSystemTables)

    async def use() -> None:
        async with connect_in_process(servers["security"]) as client:
            top = (await client.call("top_risks", {"since": "2026-11-14", "until": "2026-11-21"})).structured
            assert top is not None and top["principals"]

    anyio.run(use)
    assert backend._conn is not None
    close_servers(servers)
    assert backend._conn is None and backend._pool is None


def test_a_table_without_the_system_tables_columns_gets_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "workspace.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE SCHEMA access; CREATE TABLE access.audit (a INTEGER)")
    with pytest.raises(BackendError, match=r"does not have the system table's columns.*workspace load") as raised:
        DetectionEngine(path, DetectionSettings())
    assert "Traceback" not in str(raised.value)


def test_timestamp_columns_read_through_arrow_are_written_as_python_writes_them() -> None:
    """Long timestamp columns are formatted by Arrow, short ones by `rfc3339`: both must give the same text, at
    every unit, with or without a zone, before 1970 and before the year 1000."""
    from insight_mcp.agents.core.timestamps import rfc3339

    instants = [dt.datetime(2026, 11, 18, 0, 11, 36), dt.datetime(2026, 11, 18, 0, 11, 36, 400_000),
                dt.datetime(1969, 12, 31, 23, 59, 59, 999_999), dt.datetime(999, 1, 2, 3, 4, 5, 6),
                dt.datetime(9999, 12, 31, 23, 59, 59), None] * 8  # past the short-column cut-over
    for unit in ("s", "ms", "us", "ns"):
        for zone in (None, "UTC"):
            kept = [v if v is None or unit != "s" else v.replace(microsecond=0) for v in instants
                    if unit != "ns" or v is None or 1678 <= v.year <= 2261]  # nanoseconds span 1678-2261
            if unit == "ms":
                kept = [v if v is None else v.replace(microsecond=v.microsecond // 1000 * 1000) for v in kept]
            table = pa.table({"t": pa.array(kept, pa.timestamp(unit, tz=zone))})
            rows = answer_from_arrow(_cols("t"), table, more=False, max_rows=100, max_chars=10**6, elapsed_ms=0).rows
            assert [r[0] for r in rows] == [None if v is None else rfc3339(v) for v in kept], (unit, zone)

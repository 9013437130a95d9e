"""The demo estate generator: catalog layouts, determinism, labelled scenarios and their evidence, realism."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from insight_mcp.agents.ingestion import generator
from insight_mcp.agents.ingestion.catalog import TABLES
from insight_mcp.agents.ingestion.generator import CATEGORIES, ScenarioLabel, generate_workspace, read_labels

END = dt.date(2026, 11, 20)
END_TS = dt.datetime.combine(END, dt.time())
SMALL: dict[str, Any] = {"days": 10, "users": 30, "events_per_day": 2000, "seed": 7, "end": END}
REQUIRED = {
    "brute_force", "token_abuse", "session_hijacking", "secrets_access", "data_exfiltration",
    "privilege_escalation", "defense_evasion", "supply_chain", "ip_access_denied", "suspicious_network",
    "resource_abuse", "destructive_activity", "unauthorized_data_access",
}
Con = duckdb.DuckDBPyConnection


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("generated") / "workspace.duckdb"
    generate_workspace(path, **SMALL)
    return path


@pytest.fixture(scope="module")
def con(workspace: Path) -> Iterator[Con]:
    connection = duckdb.connect(str(workspace), read_only=True)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def labels(workspace: Path) -> list[ScenarioLabel]:
    return read_labels(workspace)


def one(con: Con, sql: str, *params: object) -> Any:
    row = con.execute(sql, list(params)).fetchone()
    assert row is not None
    return row[0]


def fingerprint(path: Path) -> dict[str, tuple[int, int]]:
    """Order-independent content hash per table."""
    c = duckdb.connect(str(path), read_only=True)
    try:
        names = [spec.local_name for spec in TABLES.values()] + ["labels.scenarios"]
        return {n: c.execute(f"SELECT count(*), coalesce(sum(hash(t)::HUGEINT), 0) FROM {n} t").fetchone()
                for n in names}
    finally:
        c.close()


# --- layout -------------------------------------------------------------------------------------------------


def test_all_tables_match_the_catalog(con: Con) -> None:
    scratch = duckdb.connect()
    for spec in TABLES.values():
        described = [(r[0], r[1]) for r in con.execute(f"DESCRIBE {spec.local_name}").fetchall()]
        expected = [(c.name, one(scratch, f"SELECT typeof(NULL::{c.duckdb_type})")) for c in spec.columns]
        assert described == expected, spec.name
        assert one(con, f"SELECT count(*) FROM {spec.local_name}") > 0, spec.name


def test_report_counts_rows_and_scenarios(tmp_path: Path) -> None:
    report = generate_workspace(tmp_path / "ws.duckdb", days=2, users=8, events_per_day=300, end=END)
    assert set(report.rows) == set(TABLES)
    assert report.rows["system.access.audit"] >= 600
    assert len(report.scenarios) == len(read_labels(report.path)) >= 14
    assert report.seconds > 0
    assert report.path.exists() and not list(tmp_path.glob("*.tmp-*"))


def test_every_column_is_filled_somewhere(con: Con) -> None:
    optional = {"azure_attributes", "gcp_attributes", "driver_instance_pool_id", "worker_instance_pool_id"}
    for spec in TABLES.values():
        for column in spec.columns:
            if column.name not in optional:
                filled = one(con, f'SELECT count("{column.name}") FROM {spec.local_name}')
                assert filled > 0, f"{spec.name}.{column.name} is always NULL"


def test_data_lies_in_the_requested_range(con: Con) -> None:
    start = END_TS - dt.timedelta(days=SMALL["days"])
    for table, column in (("access.audit", "event_time"), ("query.history", "start_time"),
                          ("access.outbound_network", "event_time"), ("access.inbound_network", "event_time"),
                          ("billing.usage", "usage_start_time")):
        low, high = con.execute(f"SELECT min({column}), max({column}) FROM {table}").fetchone()
        assert start <= low and high < END_TS, table
    assert one(con, "SELECT count(*) FROM access.audit WHERE event_date <> CAST(event_time AS DATE)") == 0
    assert one(con, "SELECT count(*) - count(DISTINCT event_id) FROM access.audit") == 0
    assert one(con, "SELECT count(*) - count(DISTINCT statement_id) FROM query.history") == 0


# --- determinism --------------------------------------------------------------------------------------------


def test_same_arguments_give_identical_contents(tmp_path: Path) -> None:
    args = {**SMALL, "days": 8, "events_per_day": 1000}
    first = generate_workspace(tmp_path / "a.duckdb", **args)
    second = generate_workspace(tmp_path / "b.duckdb", **args)
    assert fingerprint(first.path) == fingerprint(second.path)
    assert first.rows == second.rows and first.scenarios == second.scenarios
    third = generate_workspace(tmp_path / "c.duckdb", **{**args, "seed": 8})
    assert fingerprint(third.path)["access.audit"] != fingerprint(first.path)["access.audit"]
    assert read_labels(third.path) != read_labels(first.path)


# --- labels and their evidence ------------------------------------------------------------------------------


def test_labels_use_the_fixed_categories(labels: list[ScenarioLabel]) -> None:
    assert len(labels) >= 14
    assert {label.category for label in labels} <= set(CATEGORIES)
    assert REQUIRED <= {label.category for label in labels}
    assert len({label.scenario_id for label in labels}) == len(labels)
    last_week = END_TS - dt.timedelta(days=8)
    for label in labels:
        assert label.principal and label.description
        assert last_week <= label.first_seen <= label.last_seen < END_TS


def test_attackers_look_like_ordinary_principals(con: Con, labels: list[ScenarioLabel]) -> None:
    for label in labels:
        if "@" in label.principal:
            before = one(con, "SELECT count(*) FROM access.audit WHERE user_identity.email = ? "
                         "AND event_time < ?", label.principal, label.first_seen)
            assert before > 0, f"{label.scenario_id}: {label.principal} has no baseline before the attack"
            assert not any(w in label.principal for w in ("attacker", "evil", "hacker", "malicious"))


AUDIT = "FROM access.audit WHERE event_time BETWEEN ? AND ? "
BY_USER = AUDIT + "AND user_identity.email = ? "


def count(con: Con, label: ScenarioLabel, what: str, where: str, *, by_user: bool = True) -> Any:
    """`SELECT what` over the label's principal (or any principal) within the label's window."""
    base = BY_USER if by_user else AUDIT
    params: list[object] = [label.first_seen, label.last_seen] + ([label.principal] if by_user else [])
    return one(con, f"SELECT {what} {base} AND {where}", *params)


def brute_force(con: Con, label: ScenarioLabel) -> bool:
    if "@" not in label.principal:  # password spraying from one IP
        where = f"source_ip_address = '{label.principal}' AND response.status_code = 401"
        users = count(con, label, "count(DISTINCT request_params['user'])", where, by_user=False)
        return users >= 20
    logins = "action_name IN ('login', 'samlLogin', 'tokenLogin')"
    failed = count(con, label, "count(*)", f"{logins} AND response.status_code = 401")
    ips = count(con, label, "count(DISTINCT source_ip_address)", "response.status_code = 401")
    success = count(con, label, "count(*)", "action_name = 'login' AND response.status_code = 200")
    return failed >= 20 and ips == 1 and success >= 1


def token_abuse(con: Con, label: ScenarioLabel) -> bool:
    ips = count(con, label, "count(DISTINCT source_ip_address)",
                "action_name = 'tokenLogin' AND response.status_code = 200")
    return ips >= 10 and label.last_seen - label.first_seen <= dt.timedelta(hours=1)


def session_hijacking(con: Con, label: ScenarioLabel) -> bool:
    ips, agents = con.execute(
        "SELECT max(ips), max(uas) FROM (SELECT session_id, count(DISTINCT source_ip_address) ips, "
        f"count(DISTINCT user_agent) uas {BY_USER} AND session_id IS NOT NULL GROUP BY 1)",
        [label.first_seen, label.last_seen, label.principal]).fetchone()
    return ips >= 4 and agents >= 3


def secrets_access(con: Con, label: ScenarioLabel) -> bool:
    burst = count(con, label, "count(*)", "action_name = 'getSecret'")
    scopes = count(con, label, "count(DISTINCT request_params['scope'])", "action_name = 'getSecret'")
    per_day = one(con, "SELECT count(*) / 10.0 FROM access.audit WHERE user_identity.email = ? "
                  "AND action_name = 'getSecret' AND event_time NOT BETWEEN ? AND ?",
                  label.principal, label.first_seen, label.last_seen)
    return burst >= 10 * max(per_day, 1) and scopes >= 8


def data_exfiltration(con: Con, label: ScenarioLabel) -> bool:
    exports = count(con, label, "count(*)", "action_name = 'workspaceExport' AND "
                    "request_params['workspaceExportFormat'] IN ('DBC', 'HTML', 'JUPYTER')")
    downloads = count(con, label, "count(*)",
                      "action_name IN ('downloadQueryResult', 'downloadLargeResults')")
    burst = one(con, "SELECT max(read_bytes) FROM query.history WHERE executed_by = ? AND start_time "
                "BETWEEN ? AND ?", label.principal, label.first_seen, label.last_seen)
    usual = one(con, "SELECT quantile_cont(read_bytes, 0.95) FROM query.history WHERE executed_by = ? "
                "AND start_time < ?", label.principal, label.first_seen) or 0
    return exports >= 5 and downloads >= 10 and burst > 10 * max(usual, 1)


def privilege_escalation(con: Con, label: ScenarioLabel) -> bool:
    added = count(con, label, "count(*)", "action_name = 'addPrincipalToGroup' AND "
                  "request_params['targetGroupName'] = 'admins'")
    made_admin = count(con, label, "count(*)", "action_name = 'setAdmin' AND response.status_code = 200")
    return added == 1 and made_admin == 1


def defense_evasion(con: Con, label: ScenarioLabel) -> bool:
    verbose_off = count(con, label, "count(*)", "action_name = 'workspaceConfEdit' AND "
                        "request_params['workspaceConfKeys'] = 'enableVerboseAuditLogs' AND "
                        "request_params['workspaceConfValues'] = 'false'")
    return verbose_off == 1 and count(con, label, "count(*)", "action_name = 'deleteIpAccessList'") == 1


def supply_chain(con: Con, label: ScenarioLabel) -> bool:
    pairs = "(('globalInitScripts', 'create'), ('clusterLibraries', 'installLibraryOnAllClusters'))"
    return count(con, label, "count(DISTINCT action_name)", f"(service_name, action_name) IN {pairs}") == 2


def ip_access_denied(con: Con, label: ScenarioLabel) -> bool:
    return count(con, label, "count(*)", f"source_ip_address = '{label.principal}' AND "
                 "action_name = 'IpAccessDenied' AND response.status_code = 403", by_user=False) >= 30


def suspicious_network(con: Con, label: ScenarioLabel) -> bool:
    return one(con, "SELECT count(*) FROM access.outbound_network WHERE destination = ? AND event_time "
               "BETWEEN ? AND ? AND workspace_id = ?", label.principal, label.first_seen, label.last_seen,
               label.workspace_id) >= 5


def resource_abuse(con: Con, label: ScenarioLabel) -> bool:
    gpu = one(con, "SELECT count(*) FROM compute.clusters WHERE owned_by = ? AND regexp_matches("
              "worker_node_type, '^(g5|g4dn|p3|p4d)\\.') AND coalesce(auto_termination_minutes, 0) = 0 "
              "AND worker_count >= 8", label.principal)
    created = count(con, label, "count(*)", "service_name = 'clusters' AND action_name = 'create'")
    return gpu >= 1 and created == 1


def destructive_activity(con: Con, label: ScenarioLabel) -> bool:
    counts = dict(con.execute(f"SELECT action_name, count(*) {BY_USER} GROUP BY 1",
                              [label.first_seen, label.last_seen, label.principal]).fetchall())
    deleted = one(con, "SELECT count(*) FROM compute.clusters WHERE delete_time BETWEEN ? AND ?",
                  label.first_seen, label.last_seen)
    return (counts.get("permanentDelete", 0) >= 3 and counts.get("deleteNotebook", 0) >= 10
            and counts.get("deleteTable", 0) >= 5 and counts.get("delete", 0) >= 5 and deleted >= 3)


def unauthorized_data_access(con: Con, label: ScenarioLabel) -> bool:
    tables = "count(DISTINCT coalesce(request_params['full_name_arg'], request_params['table_full_name']))"
    return count(con, label, tables, "service_name = 'unityCatalog' AND response.status_code = 403") >= 30


def posture(con: Con, label: ScenarioLabel) -> bool:
    return one(con, "SELECT count(*) FROM compute.clusters WHERE owned_by = ? AND data_security_mode = "
               "'NONE' AND dbr_version LIKE '10.4%' AND coalesce(auto_termination_minutes, 0) = 0",
               label.principal) >= 1


EVIDENCE: dict[str, Callable[[Con, ScenarioLabel], bool]] = {
    f.__name__: f for f in (
        brute_force, token_abuse, session_hijacking, secrets_access, data_exfiltration, privilege_escalation,
        defense_evasion, supply_chain, ip_access_denied, suspicious_network, resource_abuse,
        destructive_activity, unauthorized_data_access, posture,
    )
}


def test_every_scenario_has_evidence(con: Con, labels: list[ScenarioLabel]) -> None:
    assert set(EVIDENCE) == set(CATEGORIES)
    missing = [label.scenario_id for label in labels if not EVIDENCE[label.category](con, label)]
    assert not missing


def test_scenarios_survive_a_tiny_estate(tmp_path: Path) -> None:
    path = tmp_path / "tiny.duckdb"
    generate_workspace(path, days=1, users=5, events_per_day=100, end=END)
    assert REQUIRED <= {label.category for label in read_labels(path)}
    c = duckdb.connect(str(path), read_only=True)
    try:
        for table in ("access.audit", "access.outbound_network"):
            assert c.execute(f"SELECT max(event_time) FROM {table}").fetchone()[0] < END_TS
    finally:
        c.close()



def test_an_estate_without_attacks_is_the_routine_alone(tmp_path: Path) -> None:
    """`workspace generate --no-attacks`: the same routine, no scenario woven in and no labels, to tune rules on."""
    from typer.testing import CliRunner

    from insight_mcp.clients.cli import app

    home = tmp_path / "home"
    done = CliRunner().invoke(app, ["--home", str(home), "workspace", "generate", "--no-attacks", "--days", "2",
                                    "--users", "10", "--events-per-day", "500", "--end", END.isoformat(), "--json"])
    assert done.exit_code == 0, done.output
    path = home / "workspace.duckdb"
    assert read_labels(path) == []
    with_attacks = tmp_path / "attacks.duckdb"
    generate_workspace(with_attacks, days=2, users=10, events_per_day=500, end=END)
    assert read_labels(with_attacks)
    c = duckdb.connect(str(path), read_only=True)
    try:
        assert c.execute("SELECT count(*) FROM access.audit").fetchone()[0] >= 1000
    finally:
        c.close()

# --- realism ------------------------------------------------------------------------------------------------


def test_people_work_office_hours_on_weekdays(con: Con) -> None:
    weekday, daytime = con.execute(
        "SELECT avg(CASE WHEN isodow(event_time) <= 5 THEN 1.0 ELSE 0.0 END), "
        "avg(CASE WHEN hour(event_time) BETWEEN 6 AND 22 THEN 1.0 ELSE 0.0 END) "
        "FROM access.audit WHERE user_identity.email LIKE '%@%'").fetchone()
    assert weekday > 0.85 and daytime > 0.85


def test_service_principals_run_around_the_clock(con: Con) -> None:
    sp = "user_identity.email NOT LIKE '%@%' AND user_identity.subject_name IS NOT NULL"
    assert one(con, f"SELECT count(DISTINCT user_identity.email) FROM access.audit WHERE {sp}") >= 2
    assert one(con, f"SELECT count(DISTINCT hour(event_time)) FROM access.audit WHERE {sp}") >= 12
    uuid = "'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'"
    assert one(con, "SELECT count(*) FROM access.audit WHERE user_identity.email NOT LIKE '%@%' "
               f"AND NOT regexp_full_match(user_identity.email, {uuid})") == 0


def test_several_client_families(con: Con) -> None:
    rows = con.execute("SELECT DISTINCT user_agent FROM access.audit WHERE user_agent IS NOT NULL").fetchall()
    agents = " ".join(r[0] for r in rows)
    families = ["Chrome/", "Firefox/", "Safari/", "databricks-sdk-py/", "databricks-cli/", "dbt-databricks/",
                "Terraform/", "JDBC", "ODBC"]
    assert sum(f in agents for f in families) >= 6


def test_failures_are_realistic(con: Con) -> None:
    codes = dict(con.execute("SELECT response.status_code, count(*) FROM access.audit GROUP BY 1").fetchall())
    assert {200, 401, 403, 404} <= set(codes)
    assert sum(v for k, v in codes.items() if k != 200) / sum(codes.values()) < 0.05
    assert one(con, "SELECT count(*) FROM access.audit WHERE response.status_code <> 200 "
               "AND response.error_message IS NULL") == 0


def test_near_misses_exist(con: Con, labels: list[ScenarioLabel]) -> None:
    attackers = {label.principal for label in labels}
    typos = con.execute(
        "SELECT user_identity.email FROM access.audit WHERE action_name = 'login' "
        "AND response.status_code = 401 GROUP BY user_identity.email, event_date "
        "HAVING count(*) <= 2").fetchall()
    assert any(email not in attackers for (email,) in typos)
    outside_scenarios = (
        "NOT EXISTS (SELECT 1 FROM labels.scenarios l WHERE l.principal = a.user_identity.email "
        "AND a.event_time BETWEEN l.first_seen AND l.last_seen)"
    )
    group_changes = one(con, "SELECT count(*) FROM access.audit a WHERE action_name IN "
                        f"('addPrincipalToGroup', 'removePrincipalFromGroup') AND {outside_scenarios}")
    assert group_changes >= 2
    routine_readers = one(
        con, "SELECT count(*) FROM (SELECT user_identity.email FROM access.audit WHERE action_name = "
        "'getSecret' AND user_identity.email NOT IN (SELECT principal FROM labels.scenarios) GROUP BY 1 "
        "HAVING count(DISTINCT event_date) >= ?)", SMALL["days"] - 1)
    assert routine_readers >= 1


def test_query_history_supports_percentiles(con: Con) -> None:
    rows = con.execute(
        "SELECT executed_by, quantile_cont(total_duration_ms, 0.5), quantile_cont(total_duration_ms, 0.95) "
        "FROM query.history GROUP BY 1 HAVING count(*) >= 20").fetchall()
    assert len(rows) >= 3
    assert all(p95 > p50 > 0 for _, p50, p95 in rows)
    assert len({round(p50, -2) for _, p50, _ in rows}) > 1  # people differ
    statuses = {r[0] for r in con.execute("SELECT DISTINCT execution_status FROM query.history").fetchall()}
    assert statuses == {"FINISHED", "FAILED", "CANCELED"}
    assert one(con, "SELECT count(*) FROM query.history WHERE total_duration_ms < execution_duration_ms "
               "+ compilation_duration_ms") == 0
    assert one(con, "SELECT count(*) FROM query.history WHERE compute.type = 'WAREHOUSE' "
               "AND compute.warehouse_id IS NULL") == 0


def test_clusters_have_history_and_mixed_settings(con: Con) -> None:
    assert 40 <= one(con, "SELECT count(DISTINCT cluster_id) FROM compute.clusters") <= 90
    changed = "SELECT count(*) FROM (SELECT cluster_id FROM compute.clusters GROUP BY 1 HAVING count(*) > 1)"
    assert one(con, changed) > 5
    sources = {r[0] for r in con.execute("SELECT DISTINCT cluster_source FROM compute.clusters").fetchall()}
    modes = {r[0] for r in con.execute("SELECT DISTINCT data_security_mode FROM compute.clusters").fetchall()}
    assert {"UI", "API", "JOB"} <= sources and {"USER_ISOLATION", "SINGLE_USER", "NONE"} <= modes
    assert one(con, "SELECT count(*) FROM compute.clusters WHERE delete_time IS NOT NULL") > 0
    assert one(con, "SELECT count(DISTINCT usage_metadata.cluster_id) FROM billing.usage") > 10
    assert one(con, "SELECT count(DISTINCT usage_metadata.warehouse_id) FROM billing.usage") >= 2


# --- arguments and atomicity --------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    {"days": 0}, {"days": 3651}, {"users": 4}, {"users": 100_001}, {"events_per_day": 99},
    {"events_per_day": 10_000_001}, {"seed": "7"}, {"days": 1.5}, {"users": True},
    {"end": dt.datetime(2026, 1, 1)},
])
def test_invalid_arguments_raise(tmp_path: Path, bad: dict[str, object]) -> None:
    out = tmp_path / "out"
    with pytest.raises(ValueError):
        generate_workspace(out / "ws.duckdb", **bad)  # type: ignore[arg-type]
    assert not out.exists()


def test_a_failed_generation_leaves_the_existing_workspace_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ws.duckdb"
    generate_workspace(path, days=2, users=6, events_per_day=200, end=END)
    before = hashlib.sha256(path.read_bytes()).hexdigest()

    with pytest.raises(ValueError):
        generate_workspace(path, days=0)

    def boom(_: object) -> list[ScenarioLabel]:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(generator, "_add_scenarios", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        generate_workspace(path, days=2, users=6, events_per_day=200, end=END, seed=99)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ws.duckdb"]
    assert len(read_labels(path)) >= 14

"""Risk-based correlation: weak, different signals about one entity add up to an incident, a loud one alone does not,
a completed sequence is one by itself, and incidents reach people through tools and the command line."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from insight_mcp.agents.ingestion.duckdb_backend import DuckDBSystemTables
from insight_mcp.agents.security.case_workspace import build_workspace
from insight_mcp.agents.security.incidents import correlate, entities, entity_risk, rule_risk
from insight_mcp.agents.security.model import Evidence, Finding, Rule
from insight_mcp.agents.security.rules import SEQUENCES, load_rule_file
from insight_mcp.agents.settings import IncidentSettings, load_settings
from insight_mcp.clients.cli import app
from insight_mcp.clients.client import ToolCallError, connect_in_process
from insight_mcp.servers.security import build_security_server

T0 = dt.datetime(2026, 11, 10, 8, 0)
SEQUENCE = "failed_signins_then_success_then_persistence"


def rule(rule_id: str, severity: str = "low", fidelity: str = "medium", **extra: Any) -> Rule:
    return Rule(id=rule_id, title=f"rule {rule_id}", description="a rule for the tests", category="brute_force",
                severity=severity, fidelity=fidelity, threat_model="account_takeover", tables=["system.access.audit"],
                recommendation="look into it", query="SELECT 1 AS principal FROM system.access.audit", **extra)


def finding(rule_id: str, severity: str, principal: str, hours: float = 0, **fields: Any) -> Finding:
    at = T0 + dt.timedelta(hours=hours)
    return Finding(id=f"f-{rule_id}-{principal}-{hours}", rule_id=rule_id, category="brute_force", severity=severity,
                   title=f"{rule_id} about {principal}", principal=principal, workspace_id="1001", first_seen=at,
                   last_seen=at, event_count=3, evidence=Evidence(event_ids=[f"e-{rule_id}-{hours}"], fields=fields),
                   mitre=["T1110"], recommendation="look", threat_model="account_takeover")


RULES = {r.id: r for r in (rule("spray_slow"), rule("anonymizer_failures"), rule("ip_denied_slow"),
                           rule("loud", "high"), rule("weighted", "low", risk=90.0))}


def test_risk_comes_from_severity_and_fidelity_unless_the_rule_sets_it() -> None:
    assert rule_risk(RULES["spray_slow"], finding("spray_slow", "low", "x")) == 10
    assert rule_risk(rule("rrr", "high", "high"), finding("rrr", "high", "x")) == 75
    assert rule_risk(RULES["weighted"], finding("weighted", "low", "x")) == 90
    f = finding("spray_slow", "low", "203.0.113.9", source_ips=["198.51.100.1", "not an ip"], session_id="s-1")
    assert entities(f) == [("ip", "203.0.113.9"), ("ip", "198.51.100.1"), ("session", "s-1"), ("workspace", "1001")]
    parts = [(finding("a", "low", "x"), 10.0), (finding("b", "low", "x"), 10.0), (finding("a", "low", "x", 1), 10.0)]
    assert entity_risk(parts) == 45.0, "30 points, one further distinct rule: times 1.5"


def test_weak_different_signals_about_one_address_become_one_incident() -> None:
    ip = "185.220.101.4"
    weak = [finding("spray_slow", "low", ip, 0), finding("anonymizer_failures", "low", ip, 2),
            finding("ip_denied_slow", "low", ip, 5), finding("spray_slow", "low", ip, 9)]
    settings = IncidentSettings(threshold=60)
    (incident,) = correlate(weak, RULES, settings)
    assert incident.kind == "risk" and (incident.entity_kind, incident.entity) == ("ip", ip)
    assert incident.score == 80.0 and incident.severity == "high", "40 points from 3 rules: times 2"
    assert [c.finding_id for c in incident.findings] == [f.id for f in weak]
    assert incident.event_ids == [f.evidence.event_ids[0] for f in weak]
    assert "3 rules within 24 h" in incident.why and incident.rules == ["spray_slow", "anonymizer_failures",
                                                                        "ip_denied_slow"]
    again = correlate(list(reversed(weak)), RULES, settings)
    assert [i.id for i in again] == [incident.id], "the same findings give the same id"

    spread = [finding("spray_slow", "low", ip, 0), finding("anonymizer_failures", "low", ip, 30),
              finding("ip_denied_slow", "low", ip, 60)]
    assert correlate(spread, RULES, settings) == [], "days apart, the same signals are not one incident"
    assert correlate([finding("loud", "high", ip, 0), finding("loud", "high", ip, 1)], RULES,
                     IncidentSettings(threshold=120)) == [], "one rule repeating itself is not correlation"
    assert correlate([finding("weighted", "low", "x@corp.example")], RULES, IncidentSettings(threshold=80)), \
        "a rule file's own risk counts"


def test_a_workspace_needs_more_and_the_most_specific_entity_wins() -> None:
    findings = [finding("spray_slow", "low", f"user{i}@corp.example", i) for i in range(6)]
    assert correlate(findings, RULES, IncidentSettings(threshold=50)) == [], "60 points, but a workspace needs 200"
    (workspace,) = correlate(findings, RULES, IncidentSettings(threshold=50, workspace_factor=1))
    assert workspace.entity_kind == "workspace" and workspace.entity == "1001"

    about_one = [finding("spray_slow", "low", "eve@corp.example", 0, source_ip="203.0.113.7"),
                 finding("anonymizer_failures", "medium", "eve@corp.example", 1, source_ip="203.0.113.7")]
    (one,) = correlate(about_one, RULES, IncidentSettings(threshold=40, workspace_factor=10))
    assert (one.entity_kind, one.entity) == ("principal", "eve@corp.example"), "not again for its address"


def test_a_sequence_file_compiles_to_a_rule_and_its_finding_is_an_incident() -> None:
    sequence = load_rule_file(SEQUENCES / f"{SEQUENCE}.yaml")
    assert sequence.kind == "sequence" and sequence.severity == "critical"
    assert "Sequence: three or more failed sign-ins" in sequence.description
    assert "RANGE BETWEEN INTERVAL 60 MINUTES PRECEDING" in sequence.query
    done = finding(SEQUENCE, "critical", "erin@corp.example")
    (incident,) = correlate([done], {SEQUENCE: sequence}, IncidentSettings())
    assert incident.kind == "sequence" and incident.severity == "critical"
    assert incident.findings[0].kind == "sequence" and "completed" in incident.why


def test_bad_sequence_files_name_the_step_and_the_field(tmp_path: Path) -> None:
    from insight_mcp.agents.security.rules import RuleFileError

    text = (SEQUENCES / f"{SEQUENCE}.yaml").read_text()
    broken = tmp_path / f"{SEQUENCE}.yaml"
    broken.write_text(text.replace("    join: [principal]\n", "    join: [session]\n"))
    with pytest.raises(RuleFileError, match="join on session, which no earlier step exposes"):
        load_rule_file(broken)
    broken.write_text(text.replace("    within_minutes: 60\n", ""))
    with pytest.raises(RuleFileError, match="within_minutes bounds how long after the previous step"):
        load_rule_file(broken)


TAKEOVER = {"audit": [
    {"t": "2026-11-10T10:00:00", "email": "erin@corp.example", "ip": "203.0.113.50", "service": "accounts",
     "action": "login", "status": 401, "repeat": 4, "every_seconds": 60},
    {"t": "2026-11-10T10:10:00", "email": "erin@corp.example", "ip": "203.0.113.50", "service": "accounts",
     "action": "login", "status": 200},
    {"t": "2026-11-10T10:25:00", "email": "erin@corp.example", "ip": "203.0.113.50", "service": "accounts",
     "action": "generateDbToken", "status": 200},
]}


@pytest.fixture(scope="module")
def takeover(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_workspace(tmp_path_factory.mktemp("takeover") / "ws.duckdb", TAKEOVER)


async def test_incidents_are_tools_with_their_findings_and_events(tmp_path: Path, takeover: Path) -> None:
    settings = load_settings(home=tmp_path, workspace_file=takeover)
    server = build_security_server(settings, DuckDBSystemTables(takeover))
    async with connect_in_process(server) as client:
        listed = (await client.call("list_incidents", {"since": "2026-11-10", "until": "2026-11-11"})).structured
        assert listed is not None and listed["total"] >= 1
        chain = next(i for i in listed["incidents"] if i["kind"] == "sequence")
        assert chain["rules"] == [SEQUENCE] and chain["principals"] == ["erin@corp.example"]
        assert chain["severity"] == "critical" and listed["incidents"][0]["severity"] == "critical"
        assert len(chain["event_ids"]) == 4, "the failures that reached the count, the success and the token"
        one = (await client.call("get_incident", {"incident_id": chain["id"]})).structured
        assert one == chain
        with pytest.raises(ToolCallError, match="no incident 'inc-0000000000000000'"):
            await client.call("get_incident", {"incident_id": "inc-0000000000000000"})


def test_detect_prints_incidents(tmp_path: Path, takeover: Path) -> None:
    env = {"INSIGHT_HOME": str(tmp_path), "INSIGHT_WORKSPACE_FILE": str(takeover)}
    runner = CliRunner()
    shown = runner.invoke(app, ["detect", "--incidents", "--since", "2026-11-10", "--until", "2026-11-11"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "incidents from" in shown.output and "sequence" in shown.output
    as_json = runner.invoke(app, ["detect", "--incidents", "--json", "--since", "2026-11-10", "--until",
                                  "2026-11-11"], env=env)
    assert SEQUENCE in {r for i in json.loads(as_json.stdout) for r in i["rules"]}
    refused = runner.invoke(app, ["detect", "--incidents", "--rule", "brute_force_user"], env=env)
    assert refused.exit_code == 2 and "leave out --category and --rule" in refused.output

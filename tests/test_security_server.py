"""The security server and engine configuration: findings, risk, suppression, user rules, bad rule files."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from insight_mcp.agents.ingestion.duckdb_backend import DuckDBSystemTables
from insight_mcp.agents.security.case_workspace import build_workspace
from insight_mcp.agents.security.compiler import RuleCompileError
from insight_mcp.agents.security.engine import DetectionEngine
from insight_mcp.agents.security.rules import RuleFileError
from insight_mcp.agents.settings import DetectionSettings, Settings, load_settings
from insight_mcp.clients.client import ToolAnswer, ToolCallError, connect_in_process
from insight_mcp.servers.security import build_security_server

SPRAY = {"t": "2026-11-10T10:00:00", "email": "dana.lee@corp.example", "ip": "203.0.113.9", "service": "accounts",
         "action": "login", "status": 401, "repeat": 25, "every_seconds": 20}
ROUTINE = {"t": "2026-11-10T09:00:00", "email": "omar.diaz@corp.example", "ip": "10.2.3.4", "service": "accounts",
           "action": "login", "status": 200, "repeat": 30, "every_seconds": 600}
SINCE, UNTIL = "2026-11-10T00:00:00", "2026-11-11T00:00:00"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_workspace(tmp_path_factory.mktemp("sec") / "ws.duckdb", {"audit": [SPRAY, ROUTINE]})


def _settings(tmp_path: Path, workspace: Path, **detections: Any) -> Settings:
    return load_settings(home=tmp_path, workspace_file=workspace, detections=detections)


async def _call(settings: Settings, tool: str, args: dict[str, Any]) -> ToolAnswer:
    server = build_security_server(settings, DuckDBSystemTables(settings.workspace_path))
    async with connect_in_process(server) as client:
        return await client.call(tool, args)


async def test_run_detections_then_get_finding(tmp_path: Path, workspace: Path) -> None:
    settings = _settings(tmp_path, workspace)
    server = build_security_server(settings, DuckDBSystemTables(workspace))
    async with connect_in_process(server) as client:
        run = (await client.call("run_detections", {"since": SINCE, "until": UNTIL})).structured
        assert run is not None
        hits = [f for f in run["findings"] if f["rule_id"] == "brute_force_user"]
        assert [f["principal"] for f in hits] == ["dana.lee@corp.example"]
        finding = hits[0]
        assert finding["category"] == "brute_force" and finding["event_count"] == 25
        assert finding["evidence"]["fields"]["source_ips"] == ["203.0.113.9"]
        assert 0 < len(finding["evidence"]["event_ids"]) <= 10
        assert "T1110" in finding["mitre"] and finding["recommendation"]
        again = (await client.call("get_finding", {"finding_id": finding["id"]})).structured
        assert again == finding
        rerun = (await client.call("run_detections", {"since": SINCE, "until": UNTIL})).structured
        assert finding["id"] in {f["id"] for f in rerun["findings"]}  # stable ids de-duplicate re-runs


async def test_principal_risk_and_top_risks(tmp_path: Path, workspace: Path) -> None:
    settings = _settings(tmp_path, workspace)
    risk = (await _call(settings, "principal_risk", {"principal": "DANA.LEE@corp.example", "since": SINCE,
                                                     "until": UNTIL})).structured
    assert risk["score"] > 0 and risk["max_severity"] in ("high", "critical")
    assert risk["timeline"] and risk["timeline"][0]["rule_id"]
    calm = (await _call(settings, "principal_risk", {"principal": "omar.diaz@corp.example", "since": SINCE,
                                                     "until": UNTIL})).structured
    assert calm["score"] == 0 and calm["findings"] == []
    top = (await _call(settings, "top_risks", {"since": SINCE, "until": UNTIL})).structured
    assert top["principals"][0]["principal"] == "dana.lee@corp.example"


@pytest.mark.parametrize(
    ("tool", "args", "message"),
    [
        ("run_detections", {"categories": ["hacking"]}, "unknown categories"),
        ("run_detections", {"rule_ids": ["no_such_rule"]}, "unknown rule ids"),
        ("run_detections", {"since": "last week"}, "ISO 8601"),
        ("run_detections", {"min_severity": "severe"}, "min_severity"),
        ("get_finding", {"finding_id": "f-000"}, "run run_detections over the window"),
        ("principal_risk", {"principal": " "}, "1-300 characters"),
    ],
)
async def test_bad_arguments(tmp_path: Path, workspace: Path, tool: str, args: dict[str, Any], message: str) -> None:
    with pytest.raises(ToolCallError, match=message) as caught:
        await _call(_settings(tmp_path, workspace), tool, args)
    assert "Traceback" not in caught.value.message


def _findings(workspace: Path, config: DetectionSettings, rule: str = "brute_force_user") -> list[Any]:
    engine = DetectionEngine(workspace, config, only=[rule])
    try:
        run = anyio.run(lambda: engine.run(dt.datetime.fromisoformat(SINCE), dt.datetime.fromisoformat(UNTIL)))
    finally:
        engine.close()
    return run.findings


def test_trusted_cidrs_and_allowlists_suppress(workspace: Path) -> None:
    assert _findings(workspace, DetectionSettings())
    trusted = DetectionSettings.model_validate({"suppression": {"trusted_cidrs": ["203.0.113.0/24"]}})
    assert _findings(workspace, trusted) == []
    allow = DetectionSettings.model_validate({"suppression": {"allowlists": {"brute_force_user": ["*@corp.example"]}}})
    assert _findings(workspace, allow) == []


def test_parameter_override_and_disable(workspace: Path) -> None:
    strict = DetectionSettings(parameters={"brute_force_user": {"min_failures": 100}})
    assert _findings(workspace, strict) == []
    with pytest.raises(RuleCompileError, match="unknown parameter 'nope'"):
        DetectionEngine(workspace, DetectionSettings(parameters={"brute_force_user": {"nope": 1}}),
                        only=["brute_force_user"])
    with pytest.raises(RuleCompileError, match="unknown rules"):
        DetectionEngine(workspace, DetectionSettings(disabled_rules=["not_a_rule"]), only=[])


USER_RULE = """
id: {id}
title: Any failed sign-in from one documentation range
description: A user-supplied rule, to prove the folder in settings is loaded.
category: brute_force
severity: low
mitre: [T1110]
threat_model: account_takeover
tables: [system.access.audit]
recommendation: Look at it.
query: |
  SELECT user_identity.email AS principal, workspace_id, min(event_time) AS first_seen,
         max(event_time) AS last_seen, count(*) AS event_count, slice(collect_list(event_id), 1, 5) AS evidence_ids
  FROM system.access.audit
  WHERE event_time >= :since AND event_time < :until AND response.status_code = 401
  GROUP BY user_identity.email, workspace_id
"""


def test_user_rules_folder_is_loaded(tmp_path: Path, workspace: Path) -> None:
    folder = tmp_path / "my_rules"
    folder.mkdir()
    (folder / "my_failed_signins.yaml").write_text(USER_RULE.format(id="my_failed_signins"))
    found = _findings(workspace, DetectionSettings(rules_dir=folder), rule="my_failed_signins")
    assert [f.principal for f in found] == ["dana.lee@corp.example"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (USER_RULE.format(id="other_name"), "field 'id'"),
        (USER_RULE.format(id="bad_rule").replace("category: brute_force", "category: hacking"), "field 'category'"),
        (USER_RULE.format(id="bad_rule").replace("severity: low", "severity: dire"), "field 'severity'"),
        (USER_RULE.format(id="bad_rule").replace("[T1110]", "[X1]"), "field 'mitre'"),
        (USER_RULE.format(id="bad_rule") + "surprise: 1\n", "field 'surprise'"),
        ("id: [unclosed", "not valid YAML"),
    ],
)
def test_bad_rule_file_names_file_and_field(tmp_path: Path, workspace: Path, text: str, message: str) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "bad_rule.yaml").write_text(text)
    with pytest.raises(RuleFileError, match=message) as caught:
        DetectionEngine(workspace, DetectionSettings(rules_dir=folder), only=[])
    assert "bad_rule.yaml" in str(caught.value)


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        (("response.status_code = 401", "response.status_code = 401 AND read_csv('x') IS NULL"), "guard"),
        (("FROM system.access.audit", "FROM system.access.table_lineage"), "not allowed"),
        (("count(*) AS event_count", "count(*) AS n"), "event_count"),
        (("response.status_code = 401", "response.status_code = :missing"), "undeclared parameters"),
        (("response.status_code = 401", "made_up_fn(user_agent) = 1"), "DuckDB does not have"),
        (("response.status_code = 401", "array_distinct(array(user_agent)) IS NULL"), "array_distinct"),
        (("response.status_code = 401", "regexp_like(user_agent, '(?=x)')"), "RE2"),
        (("response.status_code = 401", "response.status_code = 401 / 0"), "division by zero"),
        (("FROM system.access.audit", "FROM system.access.audit, range(100000000) AS r"), "generator_"),
        (("response.status_code = 401", "response.status_code IN (SELECT id FROM range(:big))"), "2,000,000,000"),
        (("SELECT user_identity", "WITH RECURSIVE r AS (SELECT 1 AS n) SELECT user_identity"), "recursion"),
    ],
)
def test_rule_that_cannot_compile_fails_to_load(tmp_path: Path, workspace: Path, replace: tuple[str, str],
                                                message: str) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    text = USER_RULE.format(id="bad_rule").replace(*replace)
    if ":big" in text:  # a generator sized by a parameter is checked once the parameter is bound
        text = text.replace("recommendation:", "parameters:\n  big: {default: 2000000000}\nrecommendation:")
    (folder / "bad_rule.yaml").write_text(text)
    with pytest.raises(RuleCompileError, match=message) as caught:
        DetectionEngine(workspace, DetectionSettings(rules_dir=folder), only=["bad_rule"])
    assert "bad_rule.yaml" in str(caught.value)


def test_concurrent_calls_on_one_server_all_answer(tmp_path: Path, workspace: Path) -> None:
    """Runs take turns on the engine; a caller waiting its turn must not stall the event loop for everyone.

    The calls run on an event loop in a daemon thread, so that a deadlock fails this test instead of hanging it.
    """
    settings = _settings(tmp_path, workspace)
    server = build_security_server(settings, DuckDBSystemTables(settings.workspace_path))
    answers: dict[str, Any] = {}

    async def ask(client: Any, tool: str, args: dict[str, Any]) -> None:
        answers[tool] = (await client.call(tool, args)).structured

    async def together() -> None:
        async with connect_in_process(server) as client, anyio.create_task_group() as tg:
            tg.start_soon(ask, client, "run_detections", {"since": SINCE, "until": UNTIL})
            tg.start_soon(ask, client, "top_risks", {"since": SINCE, "until": UNTIL})
            tg.start_soon(ask, client, "principal_risk", {"principal": "dana.lee@corp.example", "since": SINCE,
                                                          "until": UNTIL})

    worker = threading.Thread(target=anyio.run, args=(together,), daemon=True)
    worker.start()
    worker.join(timeout=180)
    assert not worker.is_alive(), "concurrent calls deadlocked the server's event loop"
    assert answers["top_risks"]["principals"][0]["principal"] == "dana.lee@corp.example"
    assert answers["principal_risk"]["findings"]

"""Every rule: events that should fire it do, near-misses do not. Each scenario gets its own real workspace file."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import anyio
import pytest
from rule_harness import build_workspace, load_cases, scenario_tables

from insight_mcp.agents.security.engine import DetectionEngine
from insight_mcp.agents.security.rules import builtin_rule_dirs, load_rules
from insight_mcp.agents.settings import DetectionSettings

CASES = load_cases()
RULE_IDS = [rule.id for rule, _ in load_rules(builtin_rule_dirs())]


def _params(kind: str) -> list[Any]:
    out = []
    for rule_id, case in CASES.items():
        for i, scenario in enumerate(case.get(kind) or []):
            out.append(pytest.param(rule_id, case, scenario, id=f"{rule_id}-{scenario.get('name', i)}"))
    return out


def _run(tmp_path: Path, rule_id: str, case: dict[str, Any], scenario: dict[str, Any]) -> list[Any]:
    workspace = build_workspace(tmp_path / "ws.duckdb", scenario_tables(scenario))
    window = scenario.get("window") or case["window"]
    engine = DetectionEngine(workspace, DetectionSettings(), only=[rule_id])
    try:
        run = anyio.run(lambda: engine.run(dt.datetime.fromisoformat(window["since"]),
                                           dt.datetime.fromisoformat(window["until"]), rule_ids=[rule_id]))
    finally:
        engine.close()
    assert all(s.error is None for s in run.stats), run.stats
    return run.findings


def test_every_rule_has_cases() -> None:
    missing = sorted(set(RULE_IDS) - set(CASES))
    assert not missing, f"rules without tests/rule_cases/<id>.yaml: {missing}"
    for rule_id, case in CASES.items():
        assert rule_id in RULE_IDS, f"case file for unknown rule {rule_id}"
        assert case.get("fires") and case.get("near_misses"), f"{rule_id} needs both fires and near_misses"


@pytest.mark.parametrize(("rule_id", "case", "scenario"), _params("fires"))
def test_rule_fires(tmp_path: Path, rule_id: str, case: dict[str, Any], scenario: dict[str, Any]) -> None:
    findings = _run(tmp_path, rule_id, case, scenario)
    expected = scenario["expect"]["principal"].lower()
    principals = {f.principal.lower() for f in findings}
    assert expected in principals, f"{rule_id} did not fire for {expected}; got {principals}"
    for finding in findings:
        assert finding.rule_id == rule_id and finding.event_count > 0 and finding.evidence.event_ids


@pytest.mark.parametrize(("rule_id", "case", "scenario"), _params("near_misses"))
def test_rule_ignores_near_miss(tmp_path: Path, rule_id: str, case: dict[str, Any], scenario: dict[str, Any]) -> None:
    findings = _run(tmp_path, rule_id, case, scenario)
    assert findings == [], f"{rule_id} fired on a near-miss: {[f.principal for f in findings]}"

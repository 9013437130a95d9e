"""Recall and precision on labelled data: our generated estate and an export this team did not generate."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import anyio
import duckdb
import pytest

from insight_mcp.agents.evaluation.detections import IncidentLabel, score_detections
from insight_mcp.agents.ingestion.generator import generate_workspace, read_labels
from insight_mcp.agents.security.engine import DetectionEngine
from insight_mcp.agents.security.model import SEVERITY_RANK, Finding
from insight_mcp.agents.settings import DetectionSettings

EXTERNAL = Path(__file__).parent / "data" / "external_export"
BENIGN_ESTATE = Path(__file__).parents[1] / "benchmarks" / "benign_estate.py"
MIN_RECALL = 0.95


def _run(workspace: Path, since: dt.datetime, until: dt.datetime) -> list[Finding]:
    engine = DetectionEngine(workspace, DetectionSettings())
    try:
        run = anyio.run(lambda: engine.run(since, until))
    finally:
        engine.close()
    assert [s for s in run.stats if s.error] == []
    return run.findings


def _attack_ips(workspace: Path, labels: list[dict[str, Any]]) -> set[str]:
    """IPs a labelled principal used during its own scenario: findings about them are not false positives."""
    con = duckdb.connect(str(workspace), read_only=True)
    ips: set[str] = set()
    for label in labels:
        rows = con.execute(
            "SELECT DISTINCT source_ip_address FROM access.audit WHERE lower(user_identity.email) = lower(?) "
            "AND event_time BETWEEN ? AND ?",
            [label["principal"], label["first_seen"] - dt.timedelta(hours=1),
             label["last_seen"] + dt.timedelta(hours=1)],
        ).fetchall()
        ips |= {r[0] for r in rows if r[0]}
    con.close()
    return ips


def _check(workspace: Path, labels: list[dict[str, Any]], findings: list[Finding]) -> None:
    found = {(f.category, f.principal.lower()) for f in findings}
    missed = [(lab["category"], lab["principal"]) for lab in labels
              if (lab["category"], lab["principal"].lower()) not in found]
    assert not missed, f"labelled scenarios not found: {missed}"
    labelled = {lab["principal"].lower() for lab in labels} | _attack_ips(workspace, labels)
    false_alarms = sorted({(f.rule_id, f.principal, f.severity) for f in findings
                           if f.principal.lower() not in labelled
                           and SEVERITY_RANK[f.severity] >= SEVERITY_RANK["medium"]})
    assert not false_alarms, f"benign principals with medium+ findings: {false_alarms}"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("quality") / "workspace.duckdb"
    generate_workspace(path, days=30, users=120, seed=11, events_per_day=6000, end=dt.date(2026, 11, 1))
    return path


def test_generated_scenarios_found_without_false_alarms(generated: Path) -> None:
    labels = [lab.model_dump() for lab in read_labels(generated)]
    assert len(labels) >= 14
    since = min(lab["first_seen"] for lab in labels) - dt.timedelta(hours=1)
    until = dt.datetime(2026, 11, 1)
    _check(generated, labels, _run(generated, since, until))


@pytest.mark.skipif(not (EXTERNAL / "labels.json").exists(), reason="external export not present")
def test_external_export_found_without_false_alarms(tmp_path: Path) -> None:
    import json

    from insight_mcp.agents.ingestion.loader import load_table

    workspace = tmp_path / "workspace.duckdb"
    load_table(workspace, "system.access.audit", EXTERNAL / "audit")
    raw = json.loads((EXTERNAL / "labels.json").read_text())
    labels = [
        {**lab, "first_seen": dt.datetime.fromisoformat(lab["first_seen"].replace("Z", "+00:00")).replace(tzinfo=None),
         "last_seen": dt.datetime.fromisoformat(lab["last_seen"].replace("Z", "+00:00")).replace(tzinfo=None)}
        for lab in raw["incidents"]
    ]
    assert len(labels) >= 8, "the external export should carry its labelled incidents"
    since = min(lab["first_seen"] for lab in labels) - dt.timedelta(hours=1)
    con = duckdb.connect(str(workspace), read_only=True)
    until = con.execute("SELECT max(event_time) FROM access.audit").fetchone()[0] + dt.timedelta(seconds=1)
    con.close()
    findings = _run(workspace, since, until)
    incidents = [IncidentLabel.model_validate(lab) for lab in labels]
    related = _attack_ips(workspace, labels)
    low, medium = (score_detections(findings, incidents, min_severity=floor, related=related).overall
                   for floor in ("low", "medium"))
    numbers = (f"external_export: recall {low.recall} (any severity), {medium.recall} at medium+; precision "
               f"{medium.precision} at medium+ ({medium.true_findings} true, {medium.false_findings} false)")
    print("\n" + numbers)
    assert low.recall is not None and low.recall >= MIN_RECALL, numbers
    _check(workspace, labels, findings)


def _benign_estate() -> Any:
    """benchmarks/benign_estate.py, the one place that knows how to generate an estate without attacks."""
    import importlib.util
    import sys

    if "benign_estate" in sys.modules:
        return sys.modules["benign_estate"]
    spec = importlib.util.spec_from_file_location("benign_estate", BENIGN_ESTATE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def test_a_benign_estate_raises_no_incident(tmp_path: Path) -> None:
    """30 days of the generator's routine, no attack woven in (after 14 days of history): no incident, few alarms."""
    bench = _benign_estate()
    path = tmp_path / "benign.duckdb"
    bench.generate_benign(path, days=30, warmup_days=14, users=40, events_per_day=3000, seed=7)
    result = bench.measure(path, days=30)
    numbers = (f"benign estate: {len(result.incidents)} incidents, {sum(result.medium_per_day.values())} medium+ "
               f"findings in 30 days, at most {result.max_medium_per_day} a day")
    print("\n" + numbers)
    assert not result.incidents, f"{numbers}: {[(i.entity, i.rules) for i in result.incidents]}"
    assert result.max_medium_per_day <= 3, numbers


def _by_rule(findings: list[Finding]) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {}
    for f in findings:
        out.setdefault(f.rule_id, []).append((f.id, f.principal, f.first_seen, f.last_seen, f.event_count, f.severity))
    return {rule: sorted(rows) for rule, rows in out.items()}


def test_a_rule_finds_the_same_alone_as_in_the_suite(generated: Path) -> None:
    """Each rule reads its own baseline, however long the baselines of the rules run beside it."""
    until = dt.datetime(2026, 11, 1)
    since = until - dt.timedelta(days=7)
    suite = _by_rule(_run(generated, since, until))
    engine = DetectionEngine(generated, DetectionSettings())
    try:
        baseline_rules = sorted(r.rule.id for r in engine.rules.values() if r.rule.baseline_days > 0)
        for rule_id in baseline_rules:
            alone = anyio.run(lambda rid=rule_id: engine.run(since, until, rule_ids=[rid]))
            assert _by_rule(alone.findings).get(rule_id, []) == suite.get(rule_id, []), rule_id
    finally:
        engine.close()
    assert len(baseline_rules) >= 15 and sum(len(suite.get(r, [])) for r in baseline_rules) >= 5

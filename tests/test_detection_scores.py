"""Detection scores: incident recall and alert precision per rule and category, from labels files or the
generator's labels, with clear errors for malformed labels."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import anyio
import pytest

from insight_mcp.agents.evaluation.detections import (
    IncidentLabel,
    LabelsError,
    labels_from_backend,
    read_labels_file,
    score_detections,
)
from insight_mcp.agents.ingestion.duckdb_backend import DuckDBSystemTables
from insight_mcp.agents.security.engine import DetectionEngine
from insight_mcp.agents.security.model import Evidence, Finding
from insight_mcp.agents.settings import DetectionSettings, QueryLimits

T = dt.datetime(2026, 11, 10, 12)
EXTERNAL = Path(__file__).parent / "data" / "external_export" / "labels.json"


def finding(rule: str, category: str, principal: str, severity: str = "high", hours: int = 0) -> Finding:
    return Finding(id=f"f-{rule}-{principal}", rule_id=rule, category=category, severity=severity, title=rule,
                   principal=principal, workspace_id="1", first_seen=T + dt.timedelta(hours=hours),
                   last_seen=T + dt.timedelta(hours=hours + 1), event_count=3, evidence=Evidence(), mitre=[],
                   recommendation="", threat_model="")


def label(ident: str, category: str, principal: str) -> IncidentLabel:
    return IncidentLabel(id=ident, category=category, principal=principal, first_seen=T, last_seen=T)


def test_scores_count_incidents_for_recall_and_findings_for_precision() -> None:
    labels = [label("a", "brute_force", "mallory@x.io"), label("b", "brute_force", "eve@x.io"),
              label("c", "token_abuse", "mallory@x.io")]
    findings = [
        finding("brute_force_user", "brute_force", "MALLORY@x.io"),  # finds a (case ignored)
        finding("brute_force_source_ip", "brute_force", "203.0.113.9"),  # the attack's address: related, true
        finding("brute_force_user", "brute_force", "bob@x.io"),  # a false alarm
        finding("token_no_expiry", "token_abuse", "mallory@x.io", hours=24 * 5),  # too late for incident c
        finding("cluster_old_runtime", "posture", "alice@x.io", severity="low"),  # below the floor: not scored
    ]
    scores = score_detections(findings, labels, min_severity="medium", related=["203.0.113.9"])
    assert scores.findings_scored == 4 and scores.labels == 3
    assert (scores.overall.true_findings, scores.overall.false_findings) == (3, 1)
    assert (scores.overall.incidents_found, scores.overall.incidents_missed) == (1, 2)
    assert scores.overall.precision == 0.75 and scores.overall.recall == 0.3333
    assert scores.overall.f1 == pytest.approx(2 * 0.75 * (1 / 3) / (0.75 + 1 / 3), abs=1e-4)
    assert scores.by_category["brute_force"].recall == 0.5 and scores.by_category["token_abuse"].recall == 0.0
    assert scores.by_rule["brute_force_user"].precision == 0.5
    assert scores.by_rule["brute_force_user"].recall == 0.5, "it found one of the two brute-force incidents"
    assert scores.by_rule["brute_force_source_ip"].recall == 0.0
    assert {m.id for m in scores.missed} == {"b", "c"}
    assert [a.principal for a in scores.false_alarms] == ["bob@x.io"]
    assert "posture" not in scores.by_category


def test_nothing_to_score_is_none_not_zero() -> None:
    scores = score_detections([], [])
    assert scores.overall.precision is None and scores.overall.recall is None and scores.overall.f1 is None


def test_the_external_labels_file_reads() -> None:
    labels = read_labels_file(EXTERNAL)
    assert len(labels) >= 8 and all(lab.first_seen < lab.last_seen or lab.first_seen == lab.last_seen
                                    for lab in labels)


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", r"not valid JSON: line 1, column 2"),
    ('{"labels": []}', r'must hold an object with an "incidents" list'),
    ('{"incidents": [{"id": "x1", "category": "phishing", "principal": "p", "first_seen": "2026-11-01", '
     '"last_seen": "2026-11-01"}]}', r"incident 0 \(x1\): category: Value error, unknown category 'phishing'"),
    ('{"incidents": [{"id": "x2", "category": "brute_force", "first_seen": "yesterday", "last_seen": "2026-11-01"}]}',
     r"incident 0 \(x2\): principal: Field required; first_seen: "),
])
def test_malformed_labels_files_say_where(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "labels.json"
    path.write_text(content)
    with pytest.raises(LabelsError, match=message):
        read_labels_file(path)
    with pytest.raises(LabelsError, match="does not exist"):
        read_labels_file(tmp_path / "missing.json")


def _labels(workspace: Path) -> list[IncidentLabel]:
    async def read() -> list[IncidentLabel]:
        backend = DuckDBSystemTables(workspace)
        try:
            return await labels_from_backend(backend, QueryLimits())
        finally:
            await backend.close()

    return anyio.run(read)


def test_a_workspace_without_labels_says_so(fixture_workspace: Path) -> None:
    with pytest.raises(LabelsError, match="only a workspace made by `insight-mcp workspace generate`"):
        _labels(fixture_workspace)


def test_the_generated_estate_scores_from_its_own_labels(demo_workspace: Path) -> None:
    labels = _labels(demo_workspace)
    assert labels and json.loads(labels[0].model_dump_json())["first_seen"].endswith("Z")
    since = min(lab.first_seen for lab in labels) - dt.timedelta(hours=1)
    engine = DetectionEngine(demo_workspace, DetectionSettings())
    try:
        run = anyio.run(lambda: engine.run(since, dt.datetime(2026, 11, 21)))
    finally:
        engine.close()
    scores = score_detections(run.findings, labels)
    assert scores.overall.incidents_found + scores.overall.incidents_missed == len(labels)
    assert scores.overall.recall is not None and scores.overall.recall >= 0.8, [m.id for m in scores.missed]
    assert sum(s.incidents_found for s in scores.by_category.values()) == scores.overall.incidents_found


def test_an_evaluation_is_kept_even_when_mlflow_is_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from insight_mcp.agents.evaluation.service import DetectionEvaluation, log_evaluation
    from insight_mcp.agents.settings import load_settings
    from insight_mcp.clients.demo import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    settings = load_settings(home=tmp_path, mlflow_tracking_uri=f"http://ops:s3cret@127.0.0.1:{free_port()}")
    evaluation = DetectionEvaluation(labels_source="generated", since=T, until=T + dt.timedelta(days=1),
                                     min_severity="medium", rules_run=1, scores=score_detections([], []),
                                     tracking="pending")
    run_id, tracking = log_evaluation(settings, evaluation)
    assert run_id is None and tracking.startswith("skipped: ") and "s3cret" not in tracking

"""The catalog corpus: attacks and benign near misses written by hand from the public catalogs' detections, in the
Spark JSON export layout (tests/data/catalog_corpus), measured with the real loader and rules; and the evaluation
tool reporting precision and recall on it and on the external export.

Recall counts an attack found when a finding of its category, of any severity, names its principal within a day of
its time range (`score_detections` at `low`), which is stricter than "any rule". Precision counts findings of medium
or above. Run with `-s` to see the numbers.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import duckdb
import pytest

from insight_mcp.agents.evaluation.detections import (
    DetectionScores,
    IncidentLabel,
    LabelsError,
    load_labelled_export,
    read_labels_file,
    score_detections,
)
from insight_mcp.agents.security.engine import DetectionEngine
from insight_mcp.agents.security.model import CATEGORIES, SEVERITY_RANK, Finding
from insight_mcp.agents.settings import DetectionSettings, Settings, load_settings
from insight_mcp.clients.client import ToolCallError, connect_in_process

DATA = Path(__file__).parent / "data"
CORPUS = DATA / "catalog_corpus"
EXTERNAL = DATA / "external_export"
MIN_RECALL = 0.95
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
EVENT_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}(Z|\+00:00)$")


@dataclass
class Measured:
    """One labelled export through the real loader and every rule, over the window evaluate_detections uses."""

    name: str
    labels: list[IncidentLabel]
    benign: list[dict[str, Any]]
    findings: list[Finding]
    related: set[str]
    events: int

    def scores(self, min_severity: str) -> DetectionScores:
        return score_detections(self.findings, self.labels, min_severity=min_severity, related=self.related)

    def found_by_any_rule(self) -> int:
        """Attacks with a finding of any rule and severity naming the principal within a day of their range."""
        day = dt.timedelta(days=1)
        return sum(any(f.principal.lower() == lab.principal.lower() and f.first_seen <= lab.last_seen + day
                       and f.last_seen >= lab.first_seen - day for f in self.findings) for lab in self.labels)

    def summary(self) -> str:
        low, medium = self.scores("low").overall, self.scores("medium").overall
        missed = [m.id for m in self.scores("low").missed]
        return (f"{self.name}: {len(self.labels)} attacks, {len(self.benign)} benign near misses, {self.events} "
                f"events; recall {low.recall} (category-matched, any severity; any rule: "
                f"{self.found_by_any_rule() / len(self.labels):.4f}), recall at medium+ {medium.recall}, precision "
                f"at medium+ {medium.precision} ({medium.true_findings} true, {medium.false_findings} false); "
                f"missed {missed}")


def measure(folder: Path, workspace: Path) -> Measured:
    """Load, run every rule from an hour before the first label to the last event, as evaluate_detections does."""
    labels_file = load_labelled_export(folder, workspace)
    labels = read_labels_file(labels_file)
    benign = json.loads(labels_file.read_text(encoding="utf-8")).get("benign", [])
    con = duckdb.connect(str(workspace), read_only=True)
    try:
        last, events = con.execute("SELECT max(event_time), count(*) FROM access.audit").fetchone()  # type: ignore[misc]
        related = set()
        for label in labels:  # addresses an attacker used during its incident name the same attack
            rows = con.execute(
                "SELECT DISTINCT source_ip_address FROM access.audit WHERE lower(user_identity.email) = lower(?) "
                "AND event_time BETWEEN ? AND ? AND source_ip_address IS NOT NULL",
                [label.principal, label.first_seen - dt.timedelta(hours=1),
                 label.last_seen + dt.timedelta(hours=1)]).fetchall()
            related |= {row[0] for row in rows if not row[0].startswith("10.")}
    finally:
        con.close()
    since = min(label.first_seen for label in labels) - dt.timedelta(hours=1)  # labels are naive UTC
    engine = DetectionEngine(workspace, DetectionSettings())
    try:
        run = anyio.run(lambda: engine.run(since, last + dt.timedelta(seconds=1)))
    finally:
        engine.close()
    assert [s.rule_id for s in run.stats if s.error] == []
    return Measured(name=folder.name, labels=labels, benign=benign, findings=run.findings, related=related,
                    events=events)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Measured:
    return measure(CORPUS, tmp_path_factory.mktemp("catalog") / "workspace.duckdb")


def test_the_corpus_is_big_enough_and_spread_over_the_categories() -> None:
    raw = json.loads((CORPUS / "labels.json").read_text(encoding="utf-8"))
    attacks, benign = raw["incidents"], raw["benign"]
    assert len(attacks) >= 40 and len(benign) >= 40, (len(attacks), len(benign))
    categories = Counter(a["category"] for a in attacks)
    assert set(categories) <= set(CATEGORIES)
    assert {"brute_force", "token_abuse", "privilege_escalation", "defense_evasion", "data_exfiltration",
            "secrets_access", "supply_chain", "ip_access_denied", "suspicious_network"} <= set(categories), categories
    attackers = {a["principal"].lower() for a in attacks}
    assert not attackers & {b["principal"].lower() for b in benign}, "a principal is both attacker and benign"
    assert all(b["principal"] in raw["notes"] for b in benign), "notes name every benign principal"
    assert all("Catalog:" in case["description"] for case in attacks + benign)


def test_the_export_is_in_the_spark_json_layout() -> None:
    parts = sorted((CORPUS / "audit").glob("part-*.json"))
    assert len(parts) >= 2 and all(re.fullmatch(r"part-\d{5}-[0-9a-f-]{36}-c000\.json", p.name) for p in parts)
    ids: set[str] = set()
    zones: Counter[str] = Counter()
    previous = ""
    for part in parts:
        for line in part.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            assert None not in row.values() and None not in row["response"].values(), "NULL columns are absent"
            assert EVENT_TIME.match(row["event_time"]) and row["event_date"] == row["event_time"][:10]
            assert row["event_time"][:23] >= previous, "part files are cut along time"
            previous = row["event_time"][:23]
            zones[row["event_time"][23:]] += 1
            assert UUID.match(row["event_id"]) and row["event_id"] not in ids
            ids.add(row["event_id"])
            identity = row.get("user_identity", {})
            if "subject_name" in identity:  # a service principal: its email column is its application id
                assert UUID.match(identity["email"]), identity
            assert (row["workspace_id"] == "0") == (row["audit_level"] == "ACCOUNT_LEVEL")
            if row["action_name"] == "runCommand":
                assert "source_ip_address" not in row and "user_agent" not in row
    assert set(zones) == {"Z", "+00:00"}


def test_the_rendered_files_are_what_the_spec_renders(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(CORPUS / "render.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True, timeout=120)
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "audit").glob("*.json")}
    committed = {p.name: p.read_bytes() for p in (CORPUS / "audit").glob("*.json")}
    assert fresh.keys() == committed.keys() and fresh == committed, "re-run tests/data/catalog_corpus/render.py"
    assert (tmp_path / "labels.json").read_bytes() == (CORPUS / "labels.json").read_bytes()


def test_the_rules_find_the_catalog_attacks(catalog: Measured) -> None:
    print("\n" + catalog.summary())
    scores = catalog.scores("low")
    assert scores.overall.recall is not None and scores.overall.recall >= MIN_RECALL, catalog.summary()


def test_no_benign_near_miss_draws_a_medium_finding(catalog: Measured) -> None:
    benign = {b["principal"].lower(): b["id"] for b in catalog.benign}
    alarms = sorted((benign[f.principal.lower()], f.rule_id, f.principal, f.severity, f.first_seen.isoformat())
                    for f in catalog.findings
                    if f.principal.lower() in benign and SEVERITY_RANK[f.severity] >= SEVERITY_RANK["medium"])
    assert not alarms, f"benign near misses with medium+ findings: {alarms}; {catalog.summary()}"


@pytest.fixture
def unlogged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings whose MLflow store cannot be reached: evaluations answer at once and say tracking was skipped."""
    from insight_mcp.clients.demo import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    return load_settings(home=tmp_path / "home", mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}")


@pytest.mark.skipif(not (EXTERNAL / "labels.json").exists(), reason="external export not present")
async def test_evaluate_detections_reports_both_corpora(unlogged: Settings, fixture_workspace: Path,
                                                        catalog: Measured) -> None:
    from insight_mcp.agents.ingestion.duckdb_backend import DuckDBSystemTables
    from insight_mcp.servers.evaluation import build_evaluation_server

    backend = DuckDBSystemTables(fixture_workspace)
    server = build_evaluation_server(unlogged, backend)
    results = {}
    try:
        async with connect_in_process(server) as mcp:
            for folder in (CORPUS, EXTERNAL):
                job = (await mcp.call("evaluate_detections", {"corpus": str(folder), "min_severity": "low"})
                       ).structured["job_id"]
                results[folder.name] = (await mcp.call("wait_for_evaluation_job",
                                                       {"job_id": job, "timeout_seconds": 240})).structured
            with pytest.raises(ToolCallError, match=r"has no labels\.json") as refused:
                await mcp.call("evaluate_detections", {"corpus": str(DATA)})
    finally:
        for close in server.closers:
            close()
        await backend.close()
    assert "Traceback" not in refused.value.message
    for name, record in results.items():
        assert record["status"] == "succeeded", record
        overall = record["result"]["scores"]["overall"]
        print(f"\nevaluate_detections corpus={name} min_severity=low: precision {overall['precision']}, "
              f"recall {overall['recall']}, {record['result']['scores']['labels']} labelled incidents, "
              f"{record['result']['rules_run']} rules; tracking {record['result']['tracking'][:40]}")
        assert record["result"]["labels_source"].endswith(f"{name}/labels.json")
        assert overall["precision"] is not None and overall["recall"] is not None
        assert overall["recall"] >= MIN_RECALL, (name, overall, [m["id"] for m in record["result"]["scores"]["missed"]])
    direct = catalog.scores("low").overall
    tool = results["catalog_corpus"]["result"]["scores"]["overall"]
    assert (tool["recall"], tool["incidents_found"]) == (direct.recall, direct.incidents_found)


def test_a_folder_without_an_export_is_refused(tmp_path: Path) -> None:
    (tmp_path / "labels.json").write_text('{"incidents": []}')
    with pytest.raises(LabelsError, match="has no audit"):
        load_labelled_export(tmp_path, tmp_path / "workspace.duckdb")

"""Detection quality on labelled data: precision per alert, recall per incident, per rule and per category.

Recall counts incidents: a labelled incident is found when a finding of its category names its principal within
a day of its time range. Precision counts findings at or above a severity: a finding is true when it names a
labelled principal (or an address one used during its incident), false otherwise. Labels come from the generator's
`labels.scenarios` table, a labels file (`docs/labels-format.md`), or a labelled export: a folder holding
`labels.json` beside an `audit/` folder of Spark JSON part files (tests/data/external_export,
tests/data/catalog_corpus).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator

from insight_mcp.agents.core.timestamps import UtcDateTime
from insight_mcp.agents.ingestion.backend import BackendError, Statement, SystemTables
from insight_mcp.agents.ingestion.loader import LoadError, load_table
from insight_mcp.agents.security.model import CATEGORIES, SEVERITY_RANK, Finding
from insight_mcp.agents.settings import QueryLimits

SLACK = dt.timedelta(days=1)


class LabelsError(ValueError):
    """A labels file a person must fix; the message names the file, the incident and the field."""


class IncidentLabel(BaseModel):
    """One labelled incident: what happened (category), who did it (principal) and when."""

    id: str
    category: str
    principal: str
    first_seen: UtcDateTime
    last_seen: UtcDateTime
    workspace_id: str | None = None
    description: str = ""

    @field_validator("category")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in CATEGORIES:
            raise ValueError(f"unknown category {value!r}; use one of {', '.join(CATEGORIES)}")
        return value


class Score(BaseModel):
    """Alert-level precision, incident-level recall, and their harmonic mean; None where nothing was counted."""

    true_findings: int = 0
    false_findings: int = 0
    incidents_found: int = 0
    incidents_missed: int = 0
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None

    def finish(self) -> Score:
        flagged = self.true_findings + self.false_findings
        labelled = self.incidents_found + self.incidents_missed
        precision = self.true_findings / flagged if flagged else None
        recall = self.incidents_found / labelled if labelled else None
        f1 = (2 * precision * recall / (precision + recall)
              if precision is not None and recall is not None and precision + recall > 0 else None)
        return self.model_copy(update={"precision": _round(precision), "recall": _round(recall), "f1": _round(f1)})


class FalseAlarm(BaseModel):
    finding_id: str
    rule_id: str
    principal: str
    severity: str


class DetectionScores(BaseModel):
    """Scores overall, per category and per rule, with what was missed and what alarmed for nothing."""

    min_severity: str
    labels: int
    findings_scored: int
    overall: Score
    by_category: dict[str, Score]
    by_rule: dict[str, Score] = Field(description="A rule's recall: incidents of its category that it found.")
    missed: list[IncidentLabel]
    false_alarms: list[FalseAlarm]


def score_detections(
    findings: Iterable[Finding], labels: list[IncidentLabel], *, min_severity: str = "medium",
    related: Iterable[str] = (),
) -> DetectionScores:
    """Score findings against labels; `related` names addresses the labelled principals used, also true."""
    floor = SEVERITY_RANK[min_severity]
    scored = [f for f in findings if SEVERITY_RANK[f.severity] >= floor]
    truth = {label.principal.lower() for label in labels} | {r.lower() for r in related}
    by_category: dict[str, Score] = defaultdict(Score)
    by_rule: dict[str, Score] = defaultdict(Score)
    overall = Score()
    false_alarms = []
    for finding in scored:
        true = finding.principal.lower() in truth
        for score in (overall, by_category[finding.category], by_rule[finding.rule_id]):
            if true:
                score.true_findings += 1
            else:
                score.false_findings += 1
        if not true:
            false_alarms.append(FalseAlarm(finding_id=finding.id, rule_id=finding.rule_id,
                                           principal=finding.principal, severity=finding.severity))
    rules_of_category: dict[str, set[str]] = defaultdict(set)
    for finding in scored:
        rules_of_category[finding.category].add(finding.rule_id)
    missed = []
    for label in labels:
        finders = {f.rule_id for f in scored if _finds(f, label)}
        found = bool(finders)
        for score in (overall, by_category[label.category]):
            if found:
                score.incidents_found += 1
            else:
                score.incidents_missed += 1
        for rule in rules_of_category[label.category]:
            if rule in finders:
                by_rule[rule].incidents_found += 1
            else:
                by_rule[rule].incidents_missed += 1
        if not found:
            missed.append(label)
    return DetectionScores(
        min_severity=min_severity, labels=len(labels), findings_scored=len(scored), overall=overall.finish(),
        by_category={k: v.finish() for k, v in sorted(by_category.items())},
        by_rule={k: v.finish() for k, v in sorted(by_rule.items())}, missed=missed, false_alarms=false_alarms,
    )


def _finds(finding: Finding, label: IncidentLabel) -> bool:
    return (finding.category == label.category and finding.principal.lower() == label.principal.lower()
            and finding.first_seen <= label.last_seen + SLACK and finding.last_seen >= label.first_seen - SLACK)


def read_labels_file(path: Path) -> list[IncidentLabel]:
    """A labels file (`{"incidents": [...]}`), with errors that name the file, the incident and the field."""
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LabelsError(f"labels file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise LabelsError(f"{path} is not valid JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelsError(f"{path} cannot be read: {exc}") from None
    incidents = raw.get("incidents") if isinstance(raw, dict) else None
    if not isinstance(incidents, list):
        raise LabelsError(f'{path} must hold an object with an "incidents" list (see docs/labels-format.md)')
    labels = []
    for index, item in enumerate(incidents):
        try:
            labels.append(IncidentLabel.model_validate(item))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'incident'}: {e['msg']}"
                                 for e in exc.errors())
            raise LabelsError(f"{path}: incident {index} ({_name(item)}): {problems}") from None
    return labels


def labelled_export(folder: Path) -> tuple[Path, Path]:
    """A labelled export's audit folder and labels file, or an error that says what the folder lacks."""
    folder = folder.expanduser()
    audit, labels = folder / "audit", folder / "labels.json"
    if not folder.is_dir():
        raise LabelsError(f"corpus {folder} is not a folder: give a folder holding labels.json beside audit/")
    missing = [path.name for path in (labels, audit) if not path.exists()]
    if missing:
        raise LabelsError(f"corpus {folder} has no {' and no '.join(missing)}: a labelled export holds labels.json "
                          "beside an audit/ folder of part files")
    return audit, labels


def load_labelled_export(folder: Path, workspace: Path) -> Path:
    """Load a labelled export's audit events into a new workspace file, so the rules can run on them; its labels."""
    audit, labels = labelled_export(folder)
    try:
        load_table(workspace, "system.access.audit", audit)
    except LoadError as exc:
        raise LabelsError(f"corpus {folder}: {exc}") from None
    return labels


async def labels_from_backend(backend: SystemTables, limits: QueryLimits) -> list[IncidentLabel]:
    """The generator's labels (`labels.scenarios`), read through the workspace's own backend, as incidents."""
    sql = ("SELECT scenario_id AS id, category, principal, workspace_id, first_seen, last_seen, description "
           "FROM labels.scenarios ORDER BY scenario_id")
    try:
        result = await backend.execute(Statement(databricks_sql=sql), max_rows=100_000, max_chars=50_000_000,
                                       timeout_seconds=limits.timeout_seconds)
    except BackendError as exc:
        raise LabelsError(f"this workspace has no readable labels ({str(exc)[:200]}): only a workspace made by "
                          "`insight-mcp workspace generate` carries them; give a labels file instead") from None
    return [IncidentLabel.model_validate(record) for record in result.records()]


def _name(item: Any) -> str:
    return str(item.get("id", "no id"))[:80] if isinstance(item, dict) else "not an object"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)

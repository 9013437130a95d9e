"""From findings to people: a principal's risk score and timeline, and the riskiest principals first."""

from __future__ import annotations

import datetime as dt
import math
from collections import OrderedDict, defaultdict

from pydantic import BaseModel, Field

from insight_mcp.agents.core.timestamps import UtcDateTime
from insight_mcp.agents.security.model import SEVERITY_RANK, Finding

SEVERITY_WEIGHT = {"info": 0.0, "low": 1.0, "medium": 4.0, "high": 10.0, "critical": 25.0}


def risk_score(findings: list[Finding]) -> float:
    """0-100: severity-weighted, growing with volume, saturating so one noisy rule cannot dominate."""
    raw = sum(SEVERITY_WEIGHT[f.severity] * (1 + math.log10(max(f.event_count, 1))) for f in findings)
    categories = len({f.category for f in findings})
    raw *= 1 + 0.25 * max(categories - 1, 0)  # several kinds of trouble at once is worse than one
    return round(100 * (1 - math.exp(-raw / 40)), 1)


class TimelineEntry(BaseModel):
    time: UtcDateTime
    finding_id: str
    rule_id: str
    category: str
    severity: str
    title: str
    event_count: int


class PrincipalRisk(BaseModel):
    principal: str
    since: UtcDateTime
    until: UtcDateTime
    score: float = Field(description="0-100, severity-weighted and saturating.")
    max_severity: str | None
    findings: list[Finding]
    timeline: list[TimelineEntry]


class RiskRow(BaseModel):
    principal: str
    score: float
    max_severity: str
    findings: int
    categories: list[str]
    first_seen: UtcDateTime
    last_seen: UtcDateTime


class TopRisks(BaseModel):
    since: UtcDateTime
    until: UtcDateTime
    principals: list[RiskRow]


def principal_risk(principal: str, findings: list[Finding], since: dt.datetime, until: dt.datetime) -> PrincipalRisk:
    """One principal's findings, score and timeline."""
    mine = [f for f in findings if f.principal.lower() == principal.lower()]
    timeline = sorted(
        (TimelineEntry(time=f.first_seen, finding_id=f.id, rule_id=f.rule_id, category=f.category,
                       severity=f.severity, title=f.title, event_count=f.event_count) for f in mine),
        key=lambda e: e.time,
    )
    top = max((f.severity for f in mine), key=SEVERITY_RANK.__getitem__, default=None)
    return PrincipalRisk(principal=principal, since=since, until=until, score=risk_score(mine), max_severity=top,
                         findings=mine, timeline=timeline)


def top_risks(findings: list[Finding], since: dt.datetime, until: dt.datetime, limit: int) -> TopRisks:
    """Principals ranked by risk score."""
    grouped: dict[str, list[Finding]] = defaultdict(list)
    for f in findings:
        grouped[f.principal.lower()].append(f)
    rows = [
        RiskRow(
            principal=group[0].principal, score=risk_score(group),
            max_severity=max((f.severity for f in group), key=SEVERITY_RANK.__getitem__), findings=len(group),
            categories=sorted({f.category for f in group}), first_seen=min(f.first_seen for f in group),
            last_seen=max(f.last_seen for f in group),
        )
        for group in grouped.values()
    ]
    rows.sort(key=lambda r: (-r.score, r.principal))
    return TopRisks(since=since, until=until, principals=rows[:limit])


class FindingStore:
    """Recent findings by id, bounded, so get_finding can answer after run_detections."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._items: OrderedDict[str, Finding] = OrderedDict()
        self._capacity = capacity

    def add(self, findings: list[Finding]) -> None:
        for finding in findings:
            self._items[finding.id] = finding
            self._items.move_to_end(finding.id)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def get(self, finding_id: str) -> Finding | None:
        return self._items.get(finding_id)

"""From the agents' raw output to the report's facts: de-duplicated findings, risk per principal and workspace."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from insight_mcp.agents.reporting.model import PrincipalScore, SeverityCounts, TimelinePoint, WorkspaceScore
from insight_mcp.agents.security.model import CATEGORIES, SEVERITIES, SEVERITY_RANK, Finding
from insight_mcp.agents.security.risk import risk_score


def deduplicate(findings: list[Finding]) -> list[Finding]:
    """One finding per id (agents may overlap), the broadest kept; most severe first, then earliest."""
    best: dict[str, Finding] = {}
    for finding in findings:
        kept = best.get(finding.id)
        if kept is None or (finding.event_count, finding.last_seen) > (kept.event_count, kept.last_seen):
            best[finding.id] = finding
    return sorted(best.values(), key=lambda f: (-SEVERITY_RANK[f.severity], f.first_seen, f.rule_id, f.principal))


def count(findings: list[Finding]) -> SeverityCounts:
    """Every severity and category appears, zero or not, so charts and metrics keep a stable shape."""
    by_severity = dict.fromkeys(SEVERITIES, 0)
    by_category = dict.fromkeys(CATEGORIES, 0)
    for finding in findings:
        by_severity[finding.severity] += 1
        by_category[finding.category] += 1
    return SeverityCounts(by_severity=by_severity, by_category=by_category, total=len(findings))


def _worst(findings: list[Finding]) -> str:
    return max((f.severity for f in findings), key=SEVERITY_RANK.__getitem__)


def principal_scores(findings: list[Finding], limit: int = 25) -> list[PrincipalScore]:
    """Riskiest principals first, scored like `top_risks`."""
    grouped: dict[str, list[Finding]] = defaultdict(list)
    for finding in findings:
        grouped[finding.principal].append(finding)
    rows = [
        PrincipalScore(
            principal=principal, risk_score=risk_score(group), max_severity=_worst(group), findings=len(group),
            categories=sorted({f.category for f in group}),
            workspaces=sorted({f.workspace_id for f in group if f.workspace_id}),
        )
        for principal, group in grouped.items()
    ]
    rows.sort(key=lambda r: (-r.risk_score, -SEVERITY_RANK[r.max_severity], r.principal))
    return rows[:limit]


def workspace_scores(findings: list[Finding]) -> list[WorkspaceScore]:
    """Riskiest workspaces first; account-level findings are grouped under no workspace."""
    grouped: dict[str | None, list[Finding]] = defaultdict(list)
    for finding in findings:
        grouped[finding.workspace_id].append(finding)
    rows = [
        WorkspaceScore(workspace_id=workspace, risk_score=risk_score(group), max_severity=_worst(group),
                       findings=len(group), principals=len({f.principal for f in group}))
        for workspace, group in grouped.items()
    ]
    rows.sort(key=lambda r: (-r.risk_score, r.workspace_id or ""))
    return rows


def timeline(findings: list[Finding], since: dt.datetime, until: dt.datetime) -> list[TimelinePoint]:
    """Findings by the hour or day they started: hours for windows up to two days, days beyond."""
    step = dt.timedelta(hours=1) if until - since <= dt.timedelta(days=2) else dt.timedelta(days=1)
    start = since.replace(minute=0, second=0, microsecond=0)
    if step == dt.timedelta(days=1):
        start = start.replace(hour=0)
    buckets: list[TimelinePoint] = []
    cursor = start
    while cursor < until and len(buckets) < 400:
        buckets.append(TimelinePoint(start=cursor, by_severity=dict.fromkeys(SEVERITIES, 0)))
        cursor += step
    for finding in findings:
        index = int((finding.first_seen - start) / step)
        if 0 <= index < len(buckets):
            buckets[index].by_severity[finding.severity] += 1
    return buckets

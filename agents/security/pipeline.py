"""The findings pipeline every backend shares: rule rows normalised into findings, suppressed, de-duplicated, merged
into episodes and ordered."""

from __future__ import annotations

import datetime as dt
import fnmatch
from typing import Any

from pydantic import BaseModel, Field

from insight_mcp.agents.core.timestamps import parse_utc
from insight_mcp.agents.ingestion.backend import json_value
from insight_mcp.agents.security.episodes import merge_episodes
from insight_mcp.agents.security.mitre import tactic_names
from insight_mcp.agents.security.model import SEVERITY_RANK, Evidence, Finding, Rule, finding_id
from insight_mcp.agents.settings import DetectionSettings, Suppression
from insight_mcp.agents.sql.ipnet import in_networks, parse_networks

ADMIN_WORK = {"privilege_escalation", "defense_evasion", "supply_chain"}
RESERVED = {"principal", "workspace_id", "first_seen", "last_seen", "event_count", "evidence_ids", "severity"}


class RuleStat(BaseModel):
    rule_id: str
    ms: float
    rows: int
    error: str | None = None


class RuleResult(BaseModel):
    """What one rule returned on one backend: its rows (engine values) and what it cost."""

    model_config = {"arbitrary_types_allowed": True}

    rule: Rule
    rows: list[dict[str, Any]]
    stat: RuleStat


class DetectionRun(BaseModel):
    """Findings of one run, with what each rule cost."""

    since: dt.datetime
    until: dt.datetime
    findings: list[Finding]
    suppressed: int
    rules_run: int
    stats: list[RuleStat] = Field(default_factory=list)
    skipped: dict[str, str] = Field(default_factory=dict, description="Rules not run, and why.")
    slice_ms: float = 0.0
    rollup_ms: float = Field(0.0, description="Time spent building the shared rollups the rules read.")
    backend: str = Field("duckdb", description="The engine the rules ran on.")


def _moment(value: Any) -> dt.datetime | None:
    """A row's time as a datetime, whatever the engine gave: a timestamp, a date, or RFC 3339 text."""
    if value is None or isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time())
    if isinstance(value, str):
        try:
            return parse_utc(value).replace(tzinfo=None)
        except ValueError:
            return None
    return None


def normalise(rule: Rule, row: dict[str, Any], max_evidence: int) -> Finding | None:
    """One rule row as a finding; a row without a principal or a time range is no finding."""
    principal = row.get("principal")
    first, last = _moment(row.get("first_seen")), _moment(row.get("last_seen"))
    if not principal or first is None or last is None:
        return None
    ids = [str(i) for i in (row.get("evidence_ids") or []) if i is not None][:max_evidence]
    extra = {k: json_value(v) for k, v in row.items() if k not in RESERVED}
    severity = row.get("severity") if row.get("severity") in SEVERITY_RANK else rule.severity
    workspace = None if row.get("workspace_id") is None else str(row["workspace_id"])
    return Finding(
        id=finding_id(rule.id, str(principal), workspace, first, rule.dedup_window_hours),
        rule_id=rule.id, category=rule.category, severity=severity, title=rule.title,
        principal=json_value(str(principal)), workspace_id=workspace, first_seen=first, last_seen=last,
        event_count=int(row.get("event_count") or 0), evidence=Evidence(event_ids=ids, fields=extra),
        mitre=rule.mitre, tactics=tactic_names(rule.tactics), recommendation=rule.recommendation,
        threat_model=rule.threat_model,
    )


def suppressed(finding: Finding, rules: Suppression) -> bool:
    """Trusted networks, admins doing admin work, expected service principals and per-rule allowlists."""
    networks = parse_networks(tuple(rules.trusted_cidrs))
    if networks and in_networks(finding.principal, networks):
        return True
    ips = finding.evidence.fields.get("source_ips")
    if networks and isinstance(ips, list) and ips and all(in_networks(str(ip), networks) for ip in ips):
        return True
    principal = finding.principal.lower()
    if finding.category in ADMIN_WORK and principal in {p.lower() for p in rules.admin_principals}:
        return True
    expected = rules.expected_service_principals.get(finding.principal, [])
    if finding.rule_id in expected or finding.category in expected:
        return True
    patterns = rules.allowlists.get(finding.rule_id, [])
    return any(fnmatch.fnmatch(principal, p.lower()) for p in patterns)


def _weight(finding: Finding) -> tuple[Any, ...]:
    """Which of two rows with one finding id is kept: more events, then the earlier start, then the later end, then
    the evidence; whatever order the engine returned them in (it differs between backends and runs)."""
    return (finding.event_count, -finding.first_seen.timestamp(), finding.last_seen.timestamp(),
            sorted(finding.evidence.event_ids))


def process(
    results: list[RuleResult],
    config: DetectionSettings,
    *,
    since: dt.datetime,
    until: dt.datetime,
    min_severity: str = "info",
    workspace_id: str | None = None,
    skipped: dict[str, str] | None = None,
    slice_ms: float = 0.0,
    rollup_ms: float = 0.0,
    backend: str = "duckdb",
) -> DetectionRun:
    """Findings from every rule's rows: normalised, filtered, suppressed, de-duplicated and merged into episodes."""
    findings: dict[str, Finding] = {}
    dropped = 0
    floor = SEVERITY_RANK[min_severity]
    for result in results:
        for row in result.rows:
            finding = normalise(result.rule, row, config.max_evidence)
            if finding is None or SEVERITY_RANK[finding.severity] < floor:
                continue
            if workspace_id and finding.workspace_id not in (workspace_id, None):
                continue
            if suppressed(finding, config.suppression):
                dropped += 1
                continue
            existing = findings.get(finding.id)
            if existing is None or _weight(finding) > _weight(existing):
                findings[finding.id] = finding
    windows = {r.rule.id: r.rule.dedup_window_hours for r in results}
    episodes = merge_episodes(list(findings.values()), windows, max_evidence=config.max_evidence)
    ordered = sorted(episodes, key=lambda f: (-SEVERITY_RANK[f.severity], f.first_seen, f.rule_id, f.principal,
                                              f.id))
    stats = sorted((r.stat for r in results), key=lambda s: -s.ms)
    return DetectionRun(since=since, until=until, findings=ordered, suppressed=dropped, rules_run=len(results),
                        stats=stats, skipped=dict(skipped or {}), slice_ms=round(slice_ms, 2),
                        rollup_ms=round(rollup_ms, 2), backend=backend)

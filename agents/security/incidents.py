"""Risk-based correlation: findings add risk to the entities they name, and incidents are what deserves a person.

Each finding adds risk to every entity it names: its principal, its source IPs and sessions (from its evidence),
and its workspace. A rule's risk is its own `risk`, else its severity's points times its fidelity's factor. An
entity's risk over a rolling window is the sum of what its findings added, times a bonus for each further distinct
rule: several weak, different signals about one entity are worth more than one rule repeating itself.

An incident is raised when an entity's risk within `window_hours` reaches the threshold (a workspace needs
`workspace_factor` times more, since everything in it adds to it), and for every finding of a sequence rule: a known
chain of steps is an incident by itself. Each incident lists the findings and events that built it; one finding
can feed several incidents (its principal's and its IP's), and incidents over the same findings are merged.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from insight_mcp.agents.core.timestamps import UtcDateTime
from insight_mcp.agents.security.model import SEVERITIES, SEVERITY_RANK, Finding, Rule
from insight_mcp.agents.settings import IncidentSettings

SEVERITY_POINTS = {"info": 0.0, "low": 10.0, "medium": 25.0, "high": 50.0, "critical": 100.0}
FIDELITY_FACTOR = {"low": 0.5, "medium": 1.0, "high": 1.5}
DIVERSITY_BONUS = 0.5  # each further distinct rule about the entity adds half again
MAX_EVENTS = 50
IP_FIELDS = ("source_ips", "source_ip", "ips", "ip", "client_ip", "source_ip_address", "ip_address")
SESSION_FIELDS = ("session_ids", "session_id", "sessions")

EntityKind = Literal["principal", "ip", "session", "workspace"]
IncidentKind = Literal["risk", "sequence"]


class Contribution(BaseModel):
    """One finding's part in an incident."""

    finding_id: str
    rule_id: str
    category: str
    title: str
    severity: str
    kind: str = Field(description="rule or sequence")
    principal: str
    first_seen: UtcDateTime
    last_seen: UtcDateTime
    event_count: int
    risk: float


class Incident(BaseModel):
    """Findings that together deserve a person: an entity's accumulated risk, or a known sequence of steps."""

    id: str = Field(description="Stable: the same entity and findings give the same id on every run.")
    kind: IncidentKind
    title: str
    severity: str
    entity_kind: EntityKind
    entity: str
    score: float = Field(description="The entity's accumulated risk (a sequence: its finding's risk).")
    threshold: float
    first_seen: UtcDateTime
    last_seen: UtcDateTime
    rules: list[str]
    mitre: list[str]
    tactics: list[str] = Field(default_factory=list, description="MITRE ATT&CK tactics of its findings.")
    principals: list[str]
    findings: list[Contribution]
    event_ids: list[str] = Field(description=f"The events behind the findings (at most {MAX_EVENTS}).")
    why: str = Field(description="Why this is an incident, in a sentence.")


class IncidentList(BaseModel):
    """A window's incidents, the most severe first."""

    since: UtcDateTime
    until: UtcDateTime
    incidents: list[Incident]
    total: int
    truncated: bool
    findings: int = Field(description="Findings the correlation read.")
    threshold: float
    window_hours: float


def rule_risk(rule: Rule | None, finding: Finding) -> float:
    """The risk one finding adds: the rule's own, else its severity's points times its fidelity's factor."""
    if rule is not None and rule.risk is not None:
        return float(rule.risk)
    fidelity = rule.fidelity if rule is not None else "medium"
    return SEVERITY_POINTS[finding.severity] * FIDELITY_FACTOR[fidelity]


def _ip(value: object) -> str | None:
    try:
        return str(ipaddress.ip_address(str(value).strip()))
    except ValueError:
        return None


def entities(finding: Finding) -> list[tuple[EntityKind, str]]:
    """Every entity a finding names: its principal (an IP when it is one), IPs and sessions, its workspace."""
    named: list[tuple[EntityKind, str]] = []
    as_ip = _ip(finding.principal)
    if finding.principal:
        named.append(("ip", as_ip) if as_ip else ("principal", finding.principal.lower()))
    fields = finding.evidence.fields
    for key in IP_FIELDS:
        values = fields.get(key)
        for value in values if isinstance(values, list) else [values] if values is not None else []:
            ip = _ip(value)
            if ip:
                named.append(("ip", ip))
    for key in SESSION_FIELDS:
        values = fields.get(key)
        for value in values if isinstance(values, list) else [values] if values is not None else []:
            if value:
                named.append(("session", str(value)))
    if finding.workspace_id:
        named.append(("workspace", str(finding.workspace_id)))
    return list(dict.fromkeys(named))


def entity_risk(parts: Iterable[tuple[Finding, float]]) -> float:
    """Summed risk, times the bonus for every further distinct rule."""
    items = list(parts)
    rules = {f.rule_id for f, _ in items}
    return round(sum(r for _, r in items) * (1 + DIVERSITY_BONUS * max(len(rules) - 1, 0)), 1)


@dataclass
class _Hit:
    finding: Finding
    risk: float


def _raise(severity: str, steps: int) -> str:
    return SEVERITIES[min(SEVERITY_RANK[severity] + steps, len(SEVERITIES) - 1)]


def _incident_id(kind: str, entity: str, findings: list[Finding]) -> str:
    raw = f"{kind}|{entity}|" + "|".join(sorted(f.id for f in findings))
    return "inc-" + hashlib.sha256(raw.encode()).hexdigest()[:16]


def _build(kind: IncidentKind, entity_kind: EntityKind, entity: str, hits: list[_Hit], score: float,
           threshold: float, rules: dict[str, Rule], why: str) -> Incident:
    findings = sorted((h.finding for h in hits), key=lambda f: (f.first_seen, f.id))
    worst = max((f.severity for f in findings), key=SEVERITY_RANK.__getitem__)
    if kind == "risk":  # correlated signals outrank each of them: at least high, critical at twice the threshold
        severity = max(worst, "high", "critical" if score >= 2 * threshold else "info", key=SEVERITY_RANK.__getitem__)
        rule_ids = list(dict.fromkeys(f.rule_id for f in findings))
        title = f"{len(findings)} findings from {len(rule_ids)} rules about {entity_kind} {entity}"
    else:
        severity = worst
        title = findings[0].title
    events = list(dict.fromkeys(i for f in findings for i in f.evidence.event_ids))[:MAX_EVENTS]
    risk_of = {h.finding.id: h.risk for h in hits}
    return Incident(
        id=_incident_id(kind, f"{entity_kind}:{entity}", findings), kind=kind, title=title, severity=severity,
        entity_kind=entity_kind, entity=entity, score=score, threshold=threshold,
        first_seen=min(f.first_seen for f in findings), last_seen=max(f.last_seen for f in findings),
        rules=list(dict.fromkeys(f.rule_id for f in findings)),
        mitre=sorted({m for f in findings for m in f.mitre}),
        tactics=list(dict.fromkeys(t for f in findings for t in f.tactics)),
        principals=list(dict.fromkeys(f.principal for f in findings if f.principal)),
        findings=[Contribution(finding_id=f.id, rule_id=f.rule_id, category=f.category, title=f.title,
                               severity=f.severity,
                               kind=rules[f.rule_id].kind if f.rule_id in rules else "rule", principal=f.principal,
                               first_seen=f.first_seen, last_seen=f.last_seen, event_count=f.event_count,
                               risk=round(risk_of[f.id], 1)) for f in findings],
        event_ids=events, why=why)


def _windows(hits: list[_Hit], window: dt.timedelta, threshold: float) -> list[tuple[list[_Hit], float]]:
    """Runs of findings within `window` of each other whose risk reaches the threshold, each as long as it can be."""
    hits = sorted(hits, key=lambda h: (h.finding.first_seen, h.finding.id))
    found: list[tuple[list[_Hit], float]] = []
    start = 0
    end = 0
    while start < len(hits):
        end = max(end, start)
        while end + 1 < len(hits) and hits[end + 1].finding.first_seen - hits[start].finding.first_seen <= window:
            end += 1
        group = hits[start:end + 1]
        score = entity_risk((h.finding, h.risk) for h in group)
        if score >= threshold:
            while end + 1 < len(hits) and hits[end + 1].finding.first_seen - hits[end].finding.first_seen <= window:
                end += 1  # the incident goes on while its entity keeps drawing findings
            group = hits[start:end + 1]
            found.append((group, entity_risk((h.finding, h.risk) for h in group)))
            start = end + 1
        else:
            start += 1
    return found


def correlate(findings: list[Finding], rules: dict[str, Rule], settings: IncidentSettings) -> list[Incident]:
    """Every incident the findings raise, the most severe and most recent first."""
    incidents: dict[str, Incident] = {}
    seen_sets: dict[frozenset[str], str] = {}  # findings already an incident -> that incident
    by_entity: dict[tuple[EntityKind, str], list[_Hit]] = defaultdict(list)
    for finding in findings:
        rule = rules.get(finding.rule_id)
        risk = rule_risk(rule, finding)
        if rule is not None and rule.kind == "sequence":
            made = _build("sequence", "principal" if not _ip(finding.principal) else "ip", finding.principal,
                          [_Hit(finding, risk)], risk, settings.threshold, rules,
                          f"the known sequence {rule.id} completed: {rule.description.split('Sequence: ')[-1]}")
            incidents[made.id] = made
            seen_sets[frozenset({finding.id})] = made.id
        if risk <= 0:
            continue
        for entity in entities(finding):
            by_entity[entity].append(_Hit(finding, risk))
    window = dt.timedelta(hours=settings.window_hours)
    for (kind, entity), hits in sorted(by_entity.items()):
        threshold = settings.threshold * (settings.workspace_factor if kind == "workspace" else 1)
        for group, score in _windows(hits, window, threshold):
            ids = frozenset(h.finding.id for h in group)
            rules_in = len({h.finding.rule_id for h in group})
            why = (f"{kind} {entity} drew {len(group)} findings from {rules_in} rules within "
                   f"{settings.window_hours:g} h: risk {score:g}, at or above {threshold:g}")
            made = _build("risk", kind, entity, group, score, threshold, rules, why)
            earlier = seen_sets.get(ids)
            if earlier is not None:  # the same findings about a principal and its IP: one incident, the most specific
                if incidents[earlier].kind == "sequence" or _PREFERENCE[kind] >= _PREFERENCE[
                        incidents[earlier].entity_kind]:
                    continue
                del incidents[earlier]
            seen_sets[ids] = made.id
            incidents[made.id] = made
    return sorted(incidents.values(), key=lambda i: (-SEVERITY_RANK[i.severity], -i.last_seen.timestamp(), i.id))


_PREFERENCE = {"principal": 0, "ip": 1, "session": 2, "workspace": 3}

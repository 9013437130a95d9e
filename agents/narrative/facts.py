"""What each LM part is shown: the report's facts as bounded JSON, fenced as untrusted data.

Every string from the audit logs (principals, titles, evidence, user agents) is attacker-controlled. It is cleaned
of invisible and control characters, cut to a bounded length, stripped of the chat adapter's field markers, and
handed to the model only inside `<untrusted_audit_data-…>` markers with a random suffix no log line can forge.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from insight_mcp.agents.reporting.model import Report
from insight_mcp.agents.security.model import SEVERITIES, Finding
from insight_mcp.agents.untrusted import clean_value, fence

MAX_STRING = 300
MAX_FINDINGS = 30
MAX_PRINCIPALS = 5
MAX_EVIDENCE_FIELDS = 12
MAX_LIST = 20
DATA_SOURCE = "Databricks audit logs and their analysis"
BOUNDARY_PREFIX = "untrusted_audit_data-"
# DSPy's chat adapter separates fields with `[[ ## name ## ]]`: data must not be able to open a field of its own.
_ADAPTER_MARKER = re.compile(r"\[\[|\]\]")


def _bounded(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return _ADAPTER_MARKER.sub(lambda m: m.group(0)[0] + " " + m.group(0)[1], value[:MAX_STRING])
    if isinstance(value, dict):
        items = list(value.items())[:MAX_EVIDENCE_FIELDS] if depth else list(value.items())  # nested: evidence
        return {str(k)[:80]: _bounded(v, depth + 1) for k, v in items} if depth < 4 else "…"
    if isinstance(value, (list, tuple)):
        return [_bounded(v, depth + 1) for v in value[:MAX_LIST]] if depth < 4 else "…"
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return _bounded(str(value), depth)


def untrusted(payload: Any) -> str:
    """The payload as JSON between fresh `<untrusted_audit_data-…>` markers, after a warning; cleaned and bounded."""
    boundary = BOUNDARY_PREFIX + secrets.token_hex(8)
    return fence(_bounded(clean_value(payload)), source=DATA_SOURCE, boundary=boundary)


def _finding_row(finding: Finding) -> dict[str, Any]:
    return {
        "id": finding.id,
        "severity": finding.severity,
        "category": finding.category,
        "title": finding.title,
        "principal": finding.principal,
        "workspace_id": finding.workspace_id,
        "event_count": finding.event_count,
        "first_seen": finding.first_seen.isoformat(),
        "last_seen": finding.last_seen.isoformat(),
        "rule_id": finding.rule_id,
    }


def summary_facts(report: Report) -> dict[str, Any]:
    """The facts an executive summary may state: counts, failures, the riskiest principals, the top findings."""
    counts = report.counts
    return {
        "window": {"since": report.since.isoformat(), "until": report.until.isoformat()},
        "counts": {
            "total": counts.total,
            "by_severity": {s: counts.by_severity.get(s, 0) for s in reversed(SEVERITIES)},
            "by_category": dict(counts.by_category),
        },
        "failed_analyses": [a.agent for a in report.agents if a.status == "failed"],
        "riskiest_principals": [
            {"principal": p.principal, "risk_score": p.risk_score, "findings": p.findings,
             "max_severity": p.max_severity, "categories": p.categories}
            for p in report.principals[:MAX_PRINCIPALS]
        ],
        "findings": [_finding_row(f) for f in report.findings[:MAX_FINDINGS]],
        "findings_not_listed": max(0, len(report.findings) - MAX_FINDINGS),
    }


def finding_facts(finding: Finding) -> dict[str, Any]:
    """One finding with its evidence, for its explanation."""
    return {
        **_finding_row(finding),
        "mitre": finding.mitre,
        "threat_model": finding.threat_model,
        "recommendation": finding.recommendation,
        "evidence": finding.evidence.fields,
    }


def network_facts(report: Report) -> dict[str, Any] | None:
    """The network overview with its list lengths spelled out, or None when the network analysis failed."""
    net = report.network
    if net is None:
        return None
    return {
        "external_ips": net.external_ips,
        "anonymizer_ip_count": len(net.anonymizer_ips),
        "anonymizer_ips": net.anonymizer_ips,
        "ip_access_denials": net.ip_access_denials,
        "denied_ip_count": len(net.denied_ips),
        "denied_ips": net.denied_ips,
        "egress_denials": net.egress_denials,
        "risky_destination_count": len(net.risky_destinations),
        "risky_destinations": net.risky_destinations,
    }

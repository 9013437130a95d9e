"""The deterministic words of a report: used without an LM, and whenever an LM's output fails validation."""

from __future__ import annotations

from insight_mcp.agents.reporting.model import Narrative, Report
from insight_mcp.agents.security.model import SEVERITIES, Finding

EXPLAINED_SEVERITIES = ("critical", "high")
MAX_EXPLANATIONS = 25


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def executive_summary(report: Report) -> str:
    """Counts first, then who is riskiest and what failed: a reader gets the picture in three sentences."""
    counts = report.counts
    window = f"{report.since:%Y-%m-%d %H:%M} to {report.until:%Y-%m-%d %H:%M} UTC"
    if counts.total == 0:
        text = f"No findings from {window}."
    else:
        parts = [f"{counts.by_severity[s]} {s}" for s in reversed(SEVERITIES) if counts.by_severity.get(s)]
        text = f"{_plural(counts.total, 'finding')} from {window}: {', '.join(parts)}."
        top_categories = sorted(counts.by_category.items(), key=lambda kv: -kv[1])[:3]
        text += " Most are " + ", ".join(f"{name.replace('_', ' ')} ({n})" for name, n in top_categories) + "."
    if report.principals:
        top = report.principals[0]
        text += (f" The riskiest principal is {top.principal} (score {top.risk_score:g}, "
                 f"{_plural(top.findings, 'finding')}, worst {top.max_severity}).")
    failed = [a.agent for a in report.agents if a.status == "failed"]
    if failed:
        text += f" The {' and '.join(failed)} analysis failed, so this report is incomplete."
    return text


def network_summary(report: Report) -> str:
    """The network picture in plain words, or why it is missing."""
    net = report.network
    if net is None:
        return "The network analysis did not complete; see the agent errors."
    anonymisers = len(net.anonymizer_ips)
    text = (f"{_plural(net.external_ips, 'external IP')} reached the workspaces, "
            f"{anonymisers} of them {'an anonymiser' if anonymisers == 1 else 'anonymisers'}. "
            f"The IP access lists denied {_plural(net.ip_access_denials, 'request')} "
            f"from {len(net.denied_ips)} {'address' if len(net.denied_ips) == 1 else 'addresses'}, "
            f"and serverless egress control denied {_plural(net.egress_denials, 'connection')}.")
    if net.risky_destinations:
        text += " Risky destinations denied: " + ", ".join(net.risky_destinations[:5]) + "."
    return text


def explain(finding: Finding) -> str:
    """Why one finding matters: what happened, how much, and the threat it stands for."""
    span = f"{finding.first_seen:%Y-%m-%d %H:%M}"
    if finding.last_seen != finding.first_seen:
        span += f" to {finding.last_seen:%Y-%m-%d %H:%M}"
    threat = finding.threat_model.replace("_", " ")
    return (f"{finding.title} ({_plural(finding.event_count, 'event')}, {span} UTC, rule {finding.rule_id}); "
            f"the threat it points to is {threat}.")


def explained(findings: list[Finding]) -> list[Finding]:
    """The findings that get an explanation: the most severe, bounded."""
    return [f for f in findings if f.severity in EXPLAINED_SEVERITIES][:MAX_EXPLANATIONS]


def templated_narrative(report: Report) -> Narrative:
    """The whole narrative from the facts alone."""
    return Narrative(
        executive_summary=executive_summary(report),
        network=network_summary(report),
        explanations={f.id: explain(f) for f in explained(report.findings)},
        source="template",
    )

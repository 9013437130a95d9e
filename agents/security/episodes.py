"""One finding per episode: routine work that recurs every day is reported once, with a count and its time range.

A rule's query finds rows per bucket (an hour, a day), so a service principal's nightly job would raise the same
finding once a night. Findings of the same rule about the same principal in the same workspace, with the same
evidence shape (the same fields), whose gaps are no longer than the rule's `dedup_window_hours`, are one episode:
one finding spanning the first to the last, its events summed, its `occurrences` the number of detections merged.
The episode keeps its first detection's id, so re-running the same window gives the same id.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from insight_mcp.agents.security.model import SEVERITY_RANK, Evidence, Finding


def shape(finding: Finding) -> tuple[str, ...]:
    """What kind of evidence a finding carries: its field names."""
    return tuple(sorted(finding.evidence.fields))


def _merge(run: list[Finding], max_evidence: int) -> Finding:
    if len(run) == 1:
        return run[0]
    first, last = run[0], run[-1]
    worst = max((f.severity for f in run), key=SEVERITY_RANK.__getitem__)
    ids = list(dict.fromkeys(i for f in run for i in f.evidence.event_ids))[:max_evidence]
    return first.model_copy(update={
        "severity": worst, "first_seen": min(f.first_seen for f in run), "last_seen": max(f.last_seen for f in run),
        "event_count": sum(f.event_count for f in run), "occurrences": sum(f.occurrences for f in run),
        "evidence": Evidence(event_ids=ids, fields=dict(last.evidence.fields)),
    })


def merge_episodes(findings: list[Finding], windows: dict[str, int], *, max_evidence: int = 10) -> list[Finding]:
    """The findings with each recurring episode merged into one (see the module docstring); order is not kept."""
    groups: dict[tuple[object, ...], list[Finding]] = defaultdict(list)
    for finding in findings:
        groups[(finding.rule_id, finding.principal.lower(), finding.workspace_id, shape(finding))].append(finding)
    merged: list[Finding] = []
    for (rule_id, *_), items in groups.items():
        gap = dt.timedelta(hours=windows.get(str(rule_id), 24))
        items.sort(key=lambda f: (f.first_seen, f.id))
        run = [items[0]]
        reach = items[0].last_seen
        for finding in items[1:]:
            if finding.first_seen - reach <= gap:
                run.append(finding)
            else:
                merged.append(_merge(run, max_evidence))
                run = [finding]
            reach = max(reach, finding.last_seen)
        merged.append(_merge(run, max_evidence))
    return merged

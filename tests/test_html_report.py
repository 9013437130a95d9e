"""The HTML report in a real headless Chromium: charts draw, the table sorts and filters, hostile data stays text."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chromium import Browser, Page

from insight_mcp.agents.reporting.html import render_html, script_json
from insight_mcp.agents.reporting.model import (
    AgentOutcome,
    Narrative,
    NetworkOverview,
    PrincipalScore,
    Report,
    SeverityCounts,
    TableCoverage,
    TimelinePoint,
    WorkspaceScore,
)
from insight_mcp.agents.security.model import SEVERITY_RANK, Evidence, Finding, finding_id

# Each payload tries to run script in a different context: element content, an attribute, the embedded JSON.
PAYLOAD = ('<script>window.__pwned="script"</script>"><img src=x onerror="window.__pwned=\'img\'">'
           '</script><script>window.__pwned="json"</script><!--\u2028')
DAY = dt.datetime(2026, 11, 3)
CHARTS = ("chart-timeline", "chart-principals", "chart-categories")


def _finding(rule: str, category: str, severity: str, principal: str, day: int, hour: int, events: int,
             *, title: str | None = None, workspace: str | None = "1234567890", fields: dict[str, Any] | None = None,
             mitre: list[str] | None = None) -> Finding:
    first = DAY + dt.timedelta(days=day, hours=hour)
    return Finding(
        id=finding_id(rule, principal, workspace, first, 24), rule_id=rule, category=category, severity=severity,
        title=title or rule.replace("_", " ").capitalize(), principal=principal, workspace_id=workspace,
        first_seen=first, last_seen=first + dt.timedelta(minutes=40), event_count=events,
        evidence=Evidence(event_ids=[f"evt-{rule}-{i}" for i in range(min(events, 25))], fields=fields or {}),
        mitre=mitre or [], recommendation=f"Review {principal}'s recent {category.replace('_', ' ')} activity.",
        threat_model="account_takeover",
    )


def _findings() -> list[Finding]:
    findings = [
        _finding("admin_grant_outside_change", "privilege_escalation", "critical", "mallory@example.com", 0, 2, 3,
                 fields={"granted": "account admin", "by": "mallory@example.com"}, mitre=["T1098", "T1078.004"]),
        _finding("login_brute_force", "brute_force", "high", PAYLOAD, 1, 9, 48, title=f"Brute force from {PAYLOAD}",
                 fields={"user_agent": PAYLOAD, "failures": 48, "ips": ["198.51.100.7", PAYLOAD]}, mitre=["T1110"]),
        _finding("bulk_download", "data_exfiltration", "high", "bob@example.com", 2, 14, 120,
                 fields={"bytes": 73_400_320, "tables": ["sales.orders", "hr.salaries"]}, mitre=["T1530"]),
        _finding("tor_exit_access", "suspicious_network", "medium", "203.0.113.9", 1, 11, 14,
                 fields={"ip": "203.0.113.9", "anonymizer": "tor"}),
        _finding("secret_read_burst", "secrets_access", "medium", "carol@example.com", 3, 8, 7),
        _finding("pat_unused_scope", "token_abuse", "low", "svc-etl@example.com", 3, 20, 2),
        _finding("public_cluster_policy", "posture", "info", "admin@example.com", 4, 0, 1, workspace=None),
    ]
    return sorted(findings, key=lambda f: -SEVERITY_RANK[f.severity])


def _timeline(findings: list[Finding]) -> list[TimelinePoint]:
    days: dict[dt.datetime, Counter[str]] = defaultdict(Counter)
    for f in findings:
        days[f.first_seen.replace(hour=0, minute=0)][f.severity] += 1
    return [TimelinePoint(start=start, by_severity=dict(counts)) for start, counts in sorted(days.items())]


def _principals(findings: list[Finding]) -> list[PrincipalScore]:
    scores = {"critical": 90.0, "high": 70.0, "medium": 45.0, "low": 20.0, "info": 5.0}
    rows = [PrincipalScore(principal=f.principal, risk_score=scores[f.severity] + f.event_count / 100,
                           max_severity=f.severity, findings=1, categories=[f.category],
                           workspaces=[f.workspace_id] if f.workspace_id else []) for f in findings]
    return sorted(rows, key=lambda p: -p.risk_score)


def build_report(findings: list[Finding], *, network: bool = True, failed: str | None = None) -> Report:
    """A report as the pipeline would produce it, with every section filled from `findings`."""
    agents = [AgentOutcome(agent=name, status="ok", seconds=1.5, findings=len(findings) if name == "security" else 0)
              for name in ("security", "network", "cost")]
    if failed:
        agents = [a if a.agent != failed else AgentOutcome(agent=failed, status="failed", seconds=0.2,
                                                          error="backend timed out after 30 s") for a in agents]
    counts = SeverityCounts(by_severity=dict(Counter(f.severity for f in findings)),
                            by_category=dict(Counter(f.category for f in findings)), total=len(findings))
    explanations = {f.id: f"{f.principal} matters because {f.title.lower()}." for f in findings[:3]}
    return Report(
        report_id="rpt-2026-11-09-abc123", generated_at=DAY + dt.timedelta(days=6), since=DAY,
        until=DAY + dt.timedelta(days=6), backend="duckdb", rule_set_version="rs-5f2a9c",
        coverage=[TableCoverage(table="system.access.audit", rows=152_340, first_event=DAY,
                                last_event=DAY + dt.timedelta(days=6)),
                  TableCoverage(table="system.access.outbound_network", rows=None, error="table not found")],
        agents=agents, counts=counts, findings=findings, principals=_principals(findings),
        workspaces=[WorkspaceScore(workspace_id="1234567890", risk_score=88.0, max_severity="critical",
                                   findings=max(len(findings) - 1, 0), principals=6)] if findings else [],
        timeline=_timeline(findings),
        network=NetworkOverview(external_ips=42, anonymizer_ips=["203.0.113.9"], ip_access_denials=5,
                                denied_ips=["198.51.100.7", PAYLOAD], egress_denials=3,
                                risky_destinations=["pastebin.com"]) if network else None,
        narrative=Narrative(
            executive_summary=("Seven findings this week; one critical privilege escalation by mallory@example.com."
                               "\n\nBrute force continued against the login endpoint." if findings
                               else "No findings this week."),
            network="42 external IPs reached the workspace; one is a Tor exit node.",
            explanations=explanations, prompts={"executive_summary": "v3"},
        ),
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium per module: starting it costs about half a second; each test gets its own tab."""
    with Browser() as running:
        yield running


@pytest.fixture(scope="module")
def report_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("html") / "report.html"
    path.write_text(render_html(build_report(_findings())), encoding="utf-8")
    return path


def open_page(browser: Browser, path: Path) -> Page:
    page = browser.new_page()
    page.navigate(path.as_uri())
    page.wait_for("document.body.dataset.chartsReady")
    return page


@pytest.fixture
def page(browser: Browser, report_file: Path) -> Iterator[Page]:
    opened = open_page(browser, report_file)
    yield opened
    opened.close()


def rows(page: Page, attribute: str = "principal") -> list[str]:
    """The findings table's visible rows, top to bottom, by one data attribute."""
    return page.evaluate(f"Array.from(document.querySelectorAll('#findings-table tbody.finding'))"
                         f".filter(b => !b.hidden).map(b => b.dataset.{attribute})")


def test_report_renders_every_section_and_chart(page: Page, report_file: Path) -> None:
    assert page.evaluate("document.title").startswith("Insight report: 2026-11-03 00:00 UTC")
    assert "critical privilege escalation" in page.evaluate("document.getElementById('executive-summary').innerText")
    assert page.evaluate("document.body.dataset.chartsReady") == "3"
    for chart in CHARTS:
        drawn = page.evaluate(f"document.querySelectorAll('#{chart} rect, #{chart} path').length")
        assert drawn > 0, chart
        assert page.evaluate(f"document.getElementById('{chart}').dataset.empty") is None
    # One rect per day and severity present in the timeline.
    report = build_report(_findings())
    segments = sum(len(p.by_severity) for p in report.timeline)
    assert page.evaluate("document.querySelectorAll('#chart-timeline g.bars rect').length") == segments
    assert page.evaluate("document.querySelectorAll('#chart-principals g.bar').length") == len(report.principals)
    categories = page.evaluate("document.querySelectorAll('#chart-categories g.bar').length")
    assert categories == len(report.counts.by_category)
    assert "mallory@example.com" in page.evaluate("document.getElementById('chart-principals').textContent")
    assert page.evaluate("document.querySelectorAll('#findings-table tbody.finding').length") == 7
    assert page.evaluate("document.querySelectorAll('#agents-table tr.failed').length") == 0
    assert "table not found" in page.evaluate("document.getElementById('coverage-table').innerText")
    assert "Tor exit node" in page.evaluate("document.getElementById('network').innerText")
    assert page.problems == []
    assert page.requests == [report_file.as_uri()]


def test_csp_forbids_everything_but_the_report_itself(report_file: Path) -> None:
    html = report_file.read_text(encoding="utf-8")
    head = html[:html.index("</head>")]
    assert "default-src 'none'" in head and "script-src 'sha256-" in head and "img-src data:" in head
    for remote in ("http://", "https://", "//cdn", "@import", "url("):
        assert remote not in head, remote
    assert html.count("<script") == 2  # the JSON data and our script; every payload is escaped


def test_hostile_strings_stay_text(page: Page) -> None:
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.evaluate("document.querySelectorAll('img').length") == 0
    assert page.evaluate("document.scripts.length") == 2
    principals = page.evaluate("Array.from(document.querySelectorAll('#findings-table td.principal'))"
                               ".map(td => td.textContent)")
    assert PAYLOAD in principals
    body = page.evaluate("document.body.textContent")
    assert f"Brute force from {PAYLOAD}" in body
    tips = page.evaluate("Array.from(document.querySelectorAll('#chart-principals title')).map(t => t.textContent)")
    assert any(tip.startswith(PAYLOAD + ": risk") for tip in tips)
    assert page.problems == []


def test_rows_expand_to_show_recommendation_explanation_and_evidence(page: Page) -> None:
    detail = "document.querySelector('#findings-table tbody.finding tr.detail')"
    assert page.evaluate(f"{detail}.hidden") is True
    page.evaluate("document.querySelector('#findings-table tbody.finding tr.summary-row').click()")
    assert page.evaluate(f"{detail}.hidden") is False
    text = page.evaluate(f"{detail}.innerText")
    assert "Review mallory@example.com's recent privilege escalation activity." in text
    assert "mallory@example.com matters because" in text
    assert "account admin" in text and "T1078.004" in text
    assert page.evaluate(f"{detail}.querySelector('a').href") == "https://attack.mitre.org/techniques/T1098/"
    page.evaluate("document.querySelector('#findings-table tbody.finding button.toggle').click()")
    assert page.evaluate(f"{detail}.hidden") is True


def test_table_sorts_by_clicked_header(page: Page) -> None:
    findings = _findings()
    assert rows(page) == [f.principal.lower() for f in findings]  # most severe first, as the report lists them
    click = "document.querySelector('#findings-table th[data-sort-key=\"{}\"] button').click()"
    page.evaluate(click.format("principal"))
    assert rows(page) == sorted(f.principal.lower() for f in findings)
    page.evaluate(click.format("principal"))
    assert rows(page) == sorted((f.principal.lower() for f in findings), reverse=True)
    assert page.evaluate("document.querySelector('th[data-sort-key=\"principal\"]').getAttribute('aria-sort')") \
        == "descending"
    page.evaluate(click.format("events"))
    assert [int(n) for n in rows(page, "events")] == sorted((f.event_count for f in findings), reverse=True)
    page.evaluate(click.format("severity"))
    assert [int(n) for n in rows(page, "severity")] == sorted((SEVERITY_RANK[f.severity] for f in findings),
                                                              reverse=True)
    page.evaluate(click.format("severity"))
    assert [int(n) for n in rows(page, "severity")] == sorted(SEVERITY_RANK[f.severity] for f in findings)
    assert page.problems == []


def test_table_filters_by_text_and_severity(page: Page) -> None:
    def set_filter(text: str, severity: str) -> None:
        page.evaluate(f"""(() => {{
            const box = document.getElementById('finding-filter');
            box.value = {json.dumps(text)};
            box.dispatchEvent(new Event('input', {{bubbles: true}}));
            const sel = document.getElementById('severity-filter');
            sel.value = {json.dumps(severity)};
            sel.dispatchEvent(new Event('change', {{bubbles: true}}));
        }})()""")

    set_filter("bob", "")
    assert rows(page) == ["bob@example.com"]
    assert page.evaluate("document.getElementById('findings-count').textContent") == "Showing 1 of 7 findings"
    set_filter("", str(SEVERITY_RANK["high"]))
    assert sorted(rows(page, "severity")) == ["3", "3", "4"]
    set_filter("hr.salaries", "")  # evidence is searchable too
    assert rows(page) == ["bob@example.com"]
    set_filter("EXAMPLE.COM", str(SEVERITY_RANK["medium"]))
    assert rows(page) == ["mallory@example.com", "bob@example.com", "carol@example.com"]
    set_filter("no such principal", "")
    assert rows(page) == []
    assert page.evaluate("document.getElementById('no-match').hidden") is False
    set_filter("", "")
    assert len(rows(page)) == 7
    assert page.problems == []


def test_empty_report_with_a_failed_agent(browser: Browser, tmp_path: Path) -> None:
    path = tmp_path / "empty.html"
    path.write_text(render_html(build_report([], network=False, failed="network")), encoding="utf-8")
    page = open_page(browser, path)
    try:
        assert page.evaluate("document.body.dataset.chartsReady") == "3"
        for chart in CHARTS:
            assert page.evaluate(f"document.getElementById('{chart}').dataset.empty") == "true", chart
            assert page.evaluate(f"document.getElementById('{chart}').textContent").startswith("No ")
        assert "network analysis failed (backend timed out after 30 s)" in page.evaluate(
            "document.getElementById('incomplete').textContent")
        assert page.evaluate("document.querySelector('#agents-table tr.failed').dataset.agent") == "network"
        assert page.evaluate("document.getElementById('no-findings').textContent") == "No findings in this window."
        assert page.evaluate("!!document.getElementById('no-network')") is True
        assert page.problems == []
        assert page.requests == [path.as_uri()]
    finally:
        page.close()


def test_hourly_timeline_with_a_single_point(browser: Browser, tmp_path: Path) -> None:
    report = build_report(_findings()[:1])
    report.timeline = [TimelinePoint(start=DAY + dt.timedelta(hours=14), by_severity={"critical": 1})]
    path = tmp_path / "hourly.html"
    path.write_text(render_html(report), encoding="utf-8")
    page = open_page(browser, path)
    try:
        assert page.evaluate("document.querySelectorAll('#chart-timeline g.bars rect').length") == 1
        assert page.evaluate("document.querySelector('#chart-timeline g.bars title').textContent") \
            == "Nov 3 14:00: 1 critical"
        assert page.problems == []
    finally:
        page.close()


def test_custom_templates_folder_replaces_the_builtin(tmp_path: Path) -> None:
    (tmp_path / "report.html.j2").write_text(
        "<title>Custom {{ report.report_id }}</title>{% for f in report.findings %}<p>{{ f.principal }}</p>"
        "{% endfor %}\n", encoding="utf-8")
    html = render_html(build_report(_findings()), tmp_path)
    assert html.startswith("<title>Custom rpt-2026-11-09-abc123</title>")
    assert "chart-timeline" not in html
    assert "<script>" not in html and "&lt;script&gt;window.__pwned" in html  # still autoescaped
    assert "id=\"chart-timeline\"" in render_html(build_report(_findings()), tmp_path / "missing")


def test_script_json_cannot_close_its_element() -> None:
    value = {"a": "</script><!-- & \u2028\u2029 >", "n": [1, 2.5, None]}
    text = str(script_json(value))
    for char in "<>&\u2028\u2029":
        assert char not in text
    assert json.loads(text) == value

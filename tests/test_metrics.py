"""`/metrics` on `insight-mcp serve`: tool calls, errors and latency per tool, the last analysis and the outbox."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serve_process import serve

from insight_mcp.agents.core.state import StateStore
from insight_mcp.agents.reporting.alerts import queue_alerts
from insight_mcp.agents.security.model import Evidence, Finding
from insight_mcp.agents.settings import AlertSettings
from insight_mcp.clients.client import ToolCallError, connect_http, server_url

pytestmark = pytest.mark.e2e


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Each sample of a Prometheus text page by name and labels: what every /metrics test compares."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _finding(n: int) -> Finding:
    return Finding(id=f"f-{n:020d}", rule_id="brute_force_user", category="brute_force", severity="high",
                   title="Many failed sign-ins", principal=f"user{n}@corp.example", workspace_id="1",
                   first_seen="2026-11-20T01:00:00", last_seen="2026-11-20T02:00:00", event_count=30,
                   evidence=Evidence(), mitre=[], recommendation="Reset the password.", threat_model="account")


async def test_metrics_count_calls_errors_latency_last_analysis_and_outbox(fixture_workspace: Path,
                                                                           tmp_path: Path) -> None:
    home = tmp_path / "home"
    reports = home / "reports"
    reports.mkdir(parents=True)
    (reports / "latest.json").write_text(json.dumps({
        "generated_at": "2026-11-21T06:00:00Z",
        "counts": {"by_severity": {"info": 0, "low": 2, "medium": 1, "high": 3, "critical": 1}, "total": 7,
                   "by_category": {}},
    }))
    queue_alerts([_finding(1), _finding(2)], AlertSettings(webhook={"url": "http://127.0.0.1:9/hook"}),
                 StateStore(home / "state.db"))
    served = serve(fixture_workspace, home, INSIGHT_TRACING__ENABLED="false")
    try:
        async with connect_http(server_url(served.base, "system-tables")) as client:
            await client.call("list_tables")
            await client.call("list_tables")
            with pytest.raises(ToolCallError):
                await client.call("run_query", {"sql": "DROP TABLE system.access.audit"})
        answer = httpx.get(f"{served.base}/metrics", timeout=10)
    finally:
        served.stop()
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    samples = metric_samples(answer.text)
    labels = (("server", "system-tables"), ("status", "ok"), ("tool", "list_tables"))
    assert samples[("insight_tool_calls_total", labels)] == 2
    refused = (("server", "system-tables"), ("status", "error"), ("tool", "run_query"))
    assert samples[("insight_tool_calls_total", refused)] == 1
    assert samples[("insight_tool_errors_total", (("server", "system-tables"), ("tool", "run_query")))] == 1
    count = samples[("insight_tool_latency_seconds_count", (("server", "system-tables"), ("tool", "list_tables")))]
    assert count == 2
    assert samples[("insight_last_analysis_findings", (("severity", "high"),))] == 3
    assert samples[("insight_last_analysis_findings", (("severity", "critical"),))] == 1
    assert samples[("insight_last_analysis_timestamp_seconds", ())] == 1795240800.0
    assert samples[("insight_alert_outbox_depth", ())] == 2


def test_serve_retries_due_alerts_in_the_background(fixture_workspace: Path, tmp_path: Path) -> None:
    from test_alerts import SmtpServer, free_port

    home = tmp_path / "home"
    port = free_port()
    smtp = {"host": "127.0.0.1", "port": port, "recipients": ["soc@corp.example"]}
    queue_alerts([_finding(7)], AlertSettings(smtp=smtp), StateStore(home / "state.db"))
    mail = SmtpServer(port).start()
    served = serve(fixture_workspace, home, INSIGHT_TRACING__ENABLED="false", INSIGHT_ALERTS__SMTP__HOST="127.0.0.1",
                   INSIGHT_ALERTS__SMTP__PORT=str(port), INSIGHT_ALERTS__SMTP__RECIPIENTS="soc@corp.example",
                   INSIGHT_ALERTS__DRAIN_SECONDS="0.2")
    try:
        for _ in range(300):  # up to a minute on a loaded machine; usually well under a second
            if mail.mailbox.messages:
                break
            time.sleep(0.2)
        depth = metric_samples(httpx.get(f"{served.base}/metrics", timeout=10).text)[("insight_alert_outbox_depth", ())]
    finally:
        served.stop()
        mail.stop()
    assert [m["To"] for m in mail.mailbox.messages] == ["soc@corp.example"]
    assert "user7@corp.example" in mail.mailbox.messages[0].get_body().get_content()
    assert depth == 0

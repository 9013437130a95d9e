"""Alerts against a real SMTP server (aiosmtpd) and a real HTTP receiver, through the SQLite outbox in tmp_path."""

from __future__ import annotations

import contextlib
import datetime as dt
import email
import email.policy
import hashlib
import hmac
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import structlog
import typer
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from typer.testing import CliRunner

from insight_mcp.agents.core.state import StateStore
from insight_mcp.agents.reporting import outbox
from insight_mcp.agents.reporting.alerts import (
    adeliver_due,
    aqueue_alerts,
    deliver_due,
    list_alerts,
    outbox_depth,
    queue_alerts,
    requeue_failed,
)
from insight_mcp.agents.security.model import SEVERITIES, Evidence, Finding, finding_id
from insight_mcp.agents.settings import AlertSettings, SmtpSettings, WebhookSettings, load_settings
from insight_mcp.clients.alerts_cli import alerts_app

T0 = dt.datetime(2026, 11, 20, 12, 0, 0)
RECIPIENTS = ["soc@example.com", "oncall@example.com"]


# --- real servers ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mailbox:
    """An aiosmtpd handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted"

    @property
    def messages(self) -> list[EmailMessage]:
        return [email.message_from_bytes(e.original_content, policy=email.policy.default)  # type: ignore[misc]
                for e in self.envelopes]


@dataclass
class SmtpServer:
    port: int
    mailbox: Mailbox = field(default_factory=Mailbox)
    controller: Controller | None = None

    def start(self, **kwargs: Any) -> SmtpServer:
        self.controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port, **kwargs)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp_factory() -> Iterator[list[SmtpServer]]:
    servers: list[SmtpServer] = []
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def smtp(smtp_factory: list[SmtpServer]) -> SmtpServer:
    server = SmtpServer(free_port()).start()
    smtp_factory.append(server)
    return server


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver(ThreadingHTTPServer):
    """A webhook endpoint that records every POST and answers with `status`."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[Received] = []
        self.status = 200
        self.answer = b"ok"
        self.delay = 0.0
        self.lock = threading.Lock()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def alert_ids(self) -> list[str]:
        return [r.headers["x-insight-alert-id"] for r in self.requests]


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            self.server.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        if self.server.delay:
            time.sleep(self.server.delay)
        self.send_response(self.server.status)
        self.send_header("Content-Length", str(len(self.server.answer)))
        self.end_headers()
        self.wfile.write(self.server.answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


# --- findings and settings -----------------------------------------------------------------------------


def make_finding(n: int = 0, *, severity: str = "high", title: str | None = None, principal: str | None = None,
                 fields: dict[str, Any] | None = None) -> Finding:
    principal = principal or f"user{n}@example.com"
    first = T0 - dt.timedelta(hours=3)
    return Finding(
        id=finding_id("brute_force_login", principal, "ws-1", first, 24), rule_id="brute_force_login",
        category="brute_force", severity=severity, title=title or f"Brute force against {principal}",
        principal=principal, workspace_id="ws-1", first_seen=first, last_seen=T0 - dt.timedelta(hours=1),
        event_count=42 + n, evidence=Evidence(event_ids=["e1", "e2"], fields=fields or {"source_ip": "203.0.113.9"}),
        mitre=["T1110"], recommendation="Reset the password and review the sign-ins.", threat_model="account_takeover",
    )


def alert_settings(*, smtp_port: int | None = None, webhook_url: str | None = None, **kwargs: Any) -> AlertSettings:
    smtp_settings = SmtpSettings(host="127.0.0.1", port=smtp_port, recipients=RECIPIENTS, timeout_seconds=5) \
        if smtp_port else SmtpSettings()
    webhook = kwargs.pop("webhook", None) or WebhookSettings(url=webhook_url, timeout_seconds=5)
    return AlertSettings(smtp=smtp_settings, webhook=webhook, **kwargs)


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "state.db")


def rows(store: StateStore) -> list[dict[str, Any]]:
    with store.transaction() as conn:
        return [dict(r) for r in conn.execute("SELECT * FROM alerts ORDER BY id")]


# --- delivery ------------------------------------------------------------------------------------------


def test_email_alert_goes_once_with_a_readable_subject_and_body(smtp: SmtpServer, store: StateStore) -> None:
    settings = alert_settings(smtp_port=smtp.port)
    finding = make_finding(fields={"source_ip": "203.0.113.9", "failures": 57})
    queued = queue_alerts([finding], settings, store, report_id="r-1", report_paths={"md": "/tmp/r-1.md"}, now=T0)
    assert (queued.queued, queued.channels, outbox_depth(store)) == (1, ["email"], 1)

    result = deliver_due(settings, store, now=T0)
    assert (result.sent, result.failed_attempts, result.remaining) == (1, 0, 0)
    assert len(smtp.mailbox.envelopes) == 1
    envelope, message = smtp.mailbox.envelopes[0], smtp.mailbox.messages[0]
    assert envelope.rcpt_tos == RECIPIENTS
    assert message["Subject"] == f"[insight-mcp] HIGH: {finding.title}"
    assert message["Message-ID"] == f"<{result.outcomes[0].alert_id}@insight-mcp>"
    body = message.get_content()
    for expected in ("brute_force_login", finding.principal, "2026-11-20T09:00:00Z to 2026-11-20T11:00:00Z",
                     "Events:", "43", "Reset the password", "source_ip: 203.0.113.9", "failures: 57", "r-1",
                     "/tmp/r-1.md", finding.id):
        assert expected in body, expected

    (record,) = list_alerts(store)
    assert (record.status, record.attempts, record.sent_at, record.last_error) == ("sent", 1, T0, None)
    again = deliver_due(settings, store, now=T0 + dt.timedelta(hours=2), force=True)
    assert again.outcomes == [] and len(smtp.mailbox.envelopes) == 1


def test_webhook_json_is_signed_over_timestamp_and_exact_body(receiver: Receiver, store: StateStore) -> None:
    secret = "whsec-test-secret"
    settings = alert_settings(webhook=WebhookSettings(url=receiver.base + "/hook", secret=secret, format="json"))
    finding = make_finding(severity="critical")
    queue_alerts([finding], settings, store, report_id="r-9", now=T0)
    assert deliver_due(settings, store, now=T0).sent == 1

    (request,) = receiver.requests
    document = json.loads(request.body)
    assert document["schema"] == "insight-mcp.alert/1"
    assert document["alert"]["id"] == finding.id and document["alert"]["severity"] == "critical"
    assert document["alert"]["principal"] == finding.principal and document["alert"]["report_id"] == "r-9"
    assert request.headers["x-insight-alert-id"] == document["alert_id"]
    timestamp = request.headers["x-insight-timestamp"]
    assert timestamp == str(int(T0.replace(tzinfo=dt.UTC).timestamp()))
    expected = "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + request.body,
                                    hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["x-insight-signature"], expected)
    forged = "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + request.body + b" ",
                                  hashlib.sha256).hexdigest()
    assert not hmac.compare_digest(request.headers["x-insight-signature"], forged)


def test_unsigned_webhook_sends_no_signature(receiver: Receiver, store: StateStore) -> None:
    settings = alert_settings(webhook_url=receiver.base)
    queue_alerts([make_finding()], settings, store, now=T0)
    deliver_due(settings, store, now=T0)
    (request,) = receiver.requests
    assert "x-insight-signature" not in request.headers and "x-insight-timestamp" not in request.headers


def test_slack_payload_escapes_mentions_and_links(receiver: Receiver, store: StateStore) -> None:
    settings = alert_settings(webhook=WebhookSettings(url=receiver.base, format="slack"))
    title = "Login by <!channel> & <http://evil.example|click here>"
    queue_alerts([make_finding(title=title, principal="<@U123>")], settings, store, now=T0)
    assert deliver_due(settings, store, now=T0).sent == 1

    (request,) = receiver.requests
    document = json.loads(request.body)
    assert document["text"].startswith("[insight-mcp] HIGH: Login by &lt;!channel&gt; &amp; &lt;http://evil")
    texts = json.dumps(document)
    assert "<!channel>" not in texts and "<http://evil" not in texts and "<@U123>" not in texts
    assert "&lt;@U123&gt;" in texts
    assert document["blocks"][0]["type"] == "section"


# --- what is queued ------------------------------------------------------------------------------------


def test_only_findings_at_or_above_min_severity_are_queued(receiver: Receiver, store: StateStore) -> None:
    findings = [make_finding(n, severity=severity) for n, severity in enumerate(SEVERITIES)]
    result = queue_alerts(findings, alert_settings(webhook_url=receiver.base), store, now=T0)
    assert (result.queued, result.below_threshold) == (2, 3)
    assert {r.severity for r in list_alerts(store)} == {"high", "critical"}

    critical_only = alert_settings(webhook_url=receiver.base, min_severity="critical")
    other = StateStore(store.path.with_name("other.db"))
    assert queue_alerts(findings, critical_only, other, now=T0).queued == 1
    deliver_due(alert_settings(webhook_url=receiver.base), store, now=T0)
    assert sorted(json.loads(r.body)["alert"]["severity"] for r in receiver.requests) == ["critical", "high"]


def test_an_incident_is_alerted_first_and_once_instead_of_its_findings(smtp: SmtpServer, store: StateStore) -> None:
    from insight_mcp.agents.security.incidents import correlate
    from insight_mcp.agents.security.model import Rule
    from insight_mcp.agents.settings import IncidentSettings

    weak = [make_finding(0, severity="medium", principal="eve@example.com"),
            make_finding(1, severity="high", principal="eve@example.com").model_copy(
                update={"id": "f-0000000000000000000b", "rule_id": "token_no_expiry"})]
    loud = make_finding(2, severity="critical", principal="mallory@example.com")
    rules = {r: Rule(id=r, title="a rule", description="a rule for the test", category="brute_force",
                     severity="high", threat_model="account_takeover", tables=["system.access.audit"],
                     recommendation="look into it", query="SELECT 1 AS principal FROM system.access.audit")
             for r in ("brute_force_login", "token_no_expiry")}
    (incident,) = correlate(weak, rules, IncidentSettings(threshold=90))
    settings = alert_settings(smtp_port=smtp.port)
    first = queue_alerts([*weak, loud], settings, store, now=T0, incidents=[incident])
    assert first.queued == 2, "the incident and the critical finding no incident covers"
    again = queue_alerts([*weak, loud], settings, store, now=T0, incidents=[incident])
    assert (again.queued, again.already_alerted) == (0, 2)
    deliver_due(settings, store, now=T0)
    subjects = [m["Subject"] for m in smtp.mailbox.messages]
    assert subjects[0].startswith("[insight-mcp] HIGH: Incident: 2 findings from 2 rules about principal")
    assert subjects[1] == f"[insight-mcp] CRITICAL: {loud.title}"
    body = smtp.mailbox.messages[0].get_content()
    assert incident.id in body and "f-0000000000000000000b" in body and incident.why in body


def test_nothing_is_queued_when_disabled_or_no_channel_is_configured(smtp: SmtpServer, store: StateStore) -> None:
    finding = make_finding(severity="critical")
    off = queue_alerts([finding], alert_settings(smtp_port=smtp.port, enabled=False), store, now=T0)
    unconfigured = queue_alerts([finding], AlertSettings(), store, now=T0)
    assert (off.queued, off.channels, unconfigured.queued, unconfigured.channels) == (0, [], 0, [])
    assert rows(store) == [] and outbox_depth(store) == 0


def test_a_finding_is_alerted_once_per_channel_across_runs_and_restarts(
    smtp: SmtpServer, receiver: Receiver, store: StateStore,
) -> None:
    settings = alert_settings(smtp_port=smtp.port, webhook_url=receiver.base)
    findings = [make_finding(n) for n in range(3)]
    first = queue_alerts(findings, settings, store, now=T0)
    second = queue_alerts([*findings, findings[0]], settings, store, now=T0)
    assert (first.queued, first.already_alerted) == (6, 0)
    assert (second.queued, second.already_alerted) == (0, 8)

    restarted = StateStore(store.path)  # a new process opening the same file sees the queue
    assert outbox_depth(restarted) == 6
    assert queue_alerts(findings, settings, restarted, now=T0).queued == 0
    assert deliver_due(settings, restarted, now=T0).sent == 6
    after = StateStore(store.path)
    assert queue_alerts(findings, settings, after, now=T0 + dt.timedelta(days=1)).queued == 0
    assert deliver_due(settings, after, now=T0 + dt.timedelta(days=1), force=True).sent == 0
    assert sorted(len(e.rcpt_tos) for e in smtp.mailbox.envelopes) == [2, 2, 2]
    assert sorted(json.loads(r.body)["alert"]["id"] for r in receiver.requests) == sorted(f.id for f in findings)


# --- failures and retries ------------------------------------------------------------------------------


def test_smtp_down_keeps_the_alert_then_sends_it_exactly_once_when_up(
    smtp_factory: list[SmtpServer], store: StateStore,
) -> None:
    port = free_port()  # nothing listens here yet
    settings = alert_settings(smtp_port=port)
    queue_alerts([make_finding()], settings, store, now=T0)

    down = deliver_due(settings, store, now=T0)
    assert (down.sent, down.failed_attempts, down.remaining) == (0, 1, 1)
    (outcome,) = down.outcomes
    assert (outcome.error or "").startswith(f"SMTP server 127.0.0.1:{port} refused the connection")
    assert "Traceback" not in (outcome.error or "")
    (record,) = list_alerts(store)
    assert (record.status, record.attempts, record.last_error) == ("queued", 1, outcome.error)
    assert record.next_attempt_at == T0 + dt.timedelta(seconds=30)
    assert deliver_due(settings, store, now=T0 + dt.timedelta(seconds=10)).outcomes == [], "backoff is respected"

    server = SmtpServer(port).start()
    smtp_factory.append(server)
    up = deliver_due(settings, store, now=T0 + dt.timedelta(seconds=10), force=True)
    assert (up.sent, up.remaining) == (1, 0)
    assert deliver_due(settings, store, now=T0 + dt.timedelta(hours=1), force=True).sent == 0
    assert len(server.mailbox.envelopes) == 1
    (record,) = list_alerts(store, status="sent")
    assert record.attempts == 2 and record.last_error is None


def test_backoff_doubles_then_the_alert_is_given_up(receiver: Receiver, store: StateStore) -> None:
    receiver.status, receiver.answer = 500, b"upstream exploded"
    settings = alert_settings(webhook_url=receiver.base, max_attempts=3, backoff_seconds=30)
    queue_alerts([make_finding()], settings, store, now=T0)

    first = deliver_due(settings, store, now=T0)
    assert first.outcomes[0].next_attempt_at == T0 + dt.timedelta(seconds=30)
    assert "answered HTTP 500 (upstream exploded)" in (first.outcomes[0].error or "")
    assert deliver_due(settings, store, now=T0 + dt.timedelta(seconds=29)).outcomes == []
    second = deliver_due(settings, store, now=T0 + dt.timedelta(seconds=30))
    assert second.outcomes[0].next_attempt_at == T0 + dt.timedelta(seconds=90)
    third = deliver_due(settings, store, now=T0 + dt.timedelta(seconds=90))
    assert (third.gave_up, third.failed_attempts, third.remaining) == (1, 0, 0)
    assert third.outcomes[0].status == "failed"
    assert deliver_due(settings, store, now=T0 + dt.timedelta(days=1), force=True).outcomes == []
    assert len(receiver.requests) == 3
    (record,) = list_alerts(store, status="failed")
    assert record.attempts == 3 and "HTTP 500" in (record.last_error or "")

    receiver.status = 200
    assert requeue_failed(store, now=T0 + dt.timedelta(days=1)) == 1
    assert deliver_due(settings, store, now=T0 + dt.timedelta(days=1)).sent == 1
    assert len(receiver.requests) == 4


def test_backoff_is_capped_at_an_hour() -> None:
    assert outbox.backoff(1, 30) == dt.timedelta(seconds=30)
    assert outbox.backoff(4, 30) == dt.timedelta(seconds=240)
    assert outbox.backoff(40, 30) == dt.timedelta(hours=1)


def test_unreachable_webhook_keeps_the_alert_and_hides_the_token(store: StateStore) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/services/T000/B000/XXXXtokenXXXX?key=query-secret"
    settings = alert_settings(webhook_url=url)
    queue_alerts([make_finding()], settings, store, now=T0)
    result = deliver_due(settings, store, now=T0)
    error = result.outcomes[0].error or ""
    assert error.startswith(f"webhook http://127.0.0.1:{port} refused the connection")
    assert "XXXXtokenXXXX" not in error and "query-secret" not in error and "/services" not in error
    assert list_alerts(store)[0].status == "queued"


def test_two_drainers_at_once_send_each_alert_exactly_once(
    smtp: SmtpServer, receiver: Receiver, store: StateStore,
) -> None:
    receiver.delay = 0.02  # keep each send open long enough for the drainers to overlap
    settings = alert_settings(smtp_port=smtp.port, webhook_url=receiver.base)
    findings = [make_finding(n) for n in range(6)]
    queue_alerts(findings, settings, store, now=T0)
    start = threading.Barrier(2)
    results: list[Any] = []

    def drain() -> None:
        start.wait()
        results.append(deliver_due(settings, StateStore(store.path), now=T0))

    threads = [threading.Thread(target=drain) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 2
    assert sum(r.sent for r in results) == 12
    webhook_ids = receiver.alert_ids()
    assert len(webhook_ids) == 6 and len(set(webhook_ids)) == 6
    mail_ids = [m["X-Insight-Finding-Id"] for m in smtp.mailbox.messages]
    assert sorted(mail_ids) == sorted(f.id for f in findings)
    assert {r["status"] for r in rows(store)} == {"sent"}


def test_a_stale_lease_is_taken_over_but_a_fresh_one_is_not(smtp: SmtpServer, store: StateStore) -> None:
    settings = alert_settings(smtp_port=smtp.port)
    queue_alerts([make_finding()], settings, store, now=T0)
    (ident,) = outbox.due_ids(store, T0, force=False)
    assert outbox.claim(store, ident, T0, force=False) is not None  # a drainer that then died mid-send
    assert outbox.claim(store, ident, T0, force=True) is None
    assert outbox_depth(store) == 1

    assert deliver_due(settings, store, now=T0 + dt.timedelta(minutes=5), force=True).outcomes == []
    assert smtp.mailbox.envelopes == []
    taken = deliver_due(settings, store, now=T0 + dt.timedelta(minutes=11))
    assert taken.sent == 1 and taken.outcomes[0].attempts == 2
    assert len(smtp.mailbox.envelopes) == 1


# --- untrusted text and secrets ------------------------------------------------------------------------


def test_header_injection_in_a_title_adds_no_header_nor_recipient(smtp: SmtpServer, store: StateStore) -> None:
    settings = alert_settings(smtp_port=smtp.port)
    title = "Token abuse\r\nBcc: evil@x.example\r\nX-Evil: 1\n\nfake body"
    finding = make_finding(title=title, principal="mallory@example.com\r\nCc: evil2@x.example",
                           fields={"user_agent": "curl\r\nRecommendation: wire the money\r\n"})
    queue_alerts([finding], settings, store, now=T0)
    assert deliver_due(settings, store, now=T0).sent == 1

    (envelope,) = smtp.mailbox.envelopes
    (message,) = smtp.mailbox.messages
    assert envelope.rcpt_tos == RECIPIENTS
    assert message["Bcc"] is None and message["X-Evil"] is None and message["Cc"] is None
    assert message["Subject"].strip() == "[insight-mcp] HIGH: Token abuse Bcc: evil@x.example X-Evil: 1 fake body"
    raw_headers = envelope.original_content.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nBcc:" not in raw_headers and b"\nX-Evil:" not in raw_headers
    lines = message.get_content().splitlines()
    assert not any(line.startswith(("Bcc:", "Cc:", "Recommendation:", "fake body")) for line in lines)
    assert "  user_agent: curl Recommendation: wire the money" in lines


def test_secrets_never_reach_errors_records_or_logs(
    smtp_factory: list[SmtpServer], receiver: Receiver, store: StateStore,
) -> None:
    def reject(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        return AuthResult(success=False, handled=False)

    server = SmtpServer(free_port()).start(authenticator=reject, auth_require_tls=False)
    smtp_factory.append(server)
    password, secret, token = "hunter2-smtp-password", "whsec-webhook-secret", "T0KEN-in-the-path-123"
    receiver.status = 403
    receiver.answer = f"forbidden: /services/{token} with {secret}".encode()  # a receiver that echoes the request
    settings = AlertSettings(
        smtp=SmtpSettings(host="127.0.0.1", port=server.port, username="alerts", password=password,
                          recipients=RECIPIENTS, timeout_seconds=5),
        webhook=WebhookSettings(url=f"{receiver.base}/services/{token}?sig=query-token-xyz", secret=secret),
    )
    queue_alerts([make_finding()], settings, store, now=T0)
    with structlog.testing.capture_logs() as logs:
        result = deliver_due(settings, store, now=T0)

    assert (result.sent, result.failed_attempts) == (0, 2)
    errors = {o.channel: o.error or "" for o in result.outcomes}
    assert "rejected the login of 'alerts'" in errors["email"]
    assert errors["webhook"].startswith(f"webhook {receiver.base} answered HTTP 403")
    assert receiver.requests[0].path == f"/services/{token}?sig=query-token-xyz", "the real URL was used"
    stored = json.dumps(rows(store)) + json.dumps([r.model_dump(mode="json") for r in list_alerts(store)])
    everything = result.model_dump_json() + stored + json.dumps(logs, default=str)
    for value in (password, secret, token, "query-token-xyz"):
        assert value not in everything, value


# --- entry points --------------------------------------------------------------------------------------


async def test_async_entry_points_run_in_a_worker_thread(receiver: Receiver, store: StateStore) -> None:
    settings = alert_settings(webhook_url=receiver.base)
    queued = await aqueue_alerts([make_finding()], settings, store, now=T0)
    delivered = await adeliver_due(settings, store, now=T0)
    assert (queued.queued, delivered.sent, len(receiver.requests)) == (1, 1, 1)


def _cli_root() -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def main(ctx: typer.Context) -> None:  # the shape of insight_mcp.clients.cli's callback, minus logging setup
        ctx.obj = load_settings()

    root.add_typer(alerts_app, name="alerts")
    return root


def test_cli_lists_and_retries_the_outbox(
    smtp_factory: list[SmtpServer], receiver: Receiver, monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    monkeypatch.setenv("INSIGHT_ALERTS__SMTP__HOST", "127.0.0.1")
    monkeypatch.setenv("INSIGHT_ALERTS__SMTP__PORT", str(port))
    monkeypatch.setenv("INSIGHT_ALERTS__SMTP__RECIPIENTS", ",".join(RECIPIENTS))
    monkeypatch.setenv("INSIGHT_ALERTS__WEBHOOK__URL", receiver.base)
    settings = load_settings()
    store = StateStore(settings.state_path)
    markup = "Stray [/] and [bold]markup[/bold] from a log"  # must print as text, never break Rich
    queue_alerts([make_finding(1, title=markup), make_finding(2, severity="medium")], settings.alerts, store)
    root, runner = _cli_root(), CliRunner()

    with structlog.testing.capture_logs() as logs:  # log lines go to stderr in the real CLI; keep stdout pure JSON
        failing = runner.invoke(root, ["alerts", "retry"])
    assert failing.exit_code == 1, failing.output
    assert "sent" in failing.output and "still failing" in failing.output and "refused the connection" in failing.output
    assert "Traceback" not in failing.output
    assert [e["event"] for e in logs].count("alert_not_delivered") == 1

    listed = runner.invoke(root, ["alerts", "list", "--status", "queued", "--json"])
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.stdout)
    assert data["depth"] == 1 and [a["channel"] for a in data["alerts"]] == ["email"]
    assert "refused the connection" in data["alerts"][0]["last_error"]
    table = runner.invoke(root, ["alerts", "list"])
    assert table.exit_code == 0, table.output
    assert "webhook" in table.output and "email" in table.output and "[/]" in table.output

    server = SmtpServer(port).start()
    smtp_factory.append(server)
    with structlog.testing.capture_logs() as more_logs:
        retried = runner.invoke(root, ["alerts", "retry", "--json"])
    assert retried.exit_code == 0, retried.output
    assert json.loads(retried.stdout)["sent"] == 1 and len(server.mailbox.envelopes) == 1
    assert [e["event"] for e in more_logs] == ["alert_sent"]
    assert runner.invoke(root, ["alerts", "list", "--status", "queued"]).output.startswith("no queued alerts")
    bad = runner.invoke(root, ["alerts", "list", "--status", "lost"])
    assert bad.exit_code == 2


def test_the_outbox_table_enforces_one_alert_per_channel_and_finding(store: StateStore) -> None:
    queue_alerts([make_finding()], alert_settings(webhook_url="http://127.0.0.1:9/x"), store, now=T0)
    with pytest.raises(sqlite3.IntegrityError), contextlib.closing(sqlite3.connect(store.path)) as conn, conn:
        conn.execute("INSERT INTO alerts (id, channel, finding_id, severity, title, payload, status, "
                     "next_attempt_at, created_at) SELECT 'other', channel, finding_id, severity, title, payload, "
                     "'queued', next_attempt_at, created_at FROM alerts")

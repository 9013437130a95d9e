"""Rendering one alert for each channel and handing it over: email through SMTP, JSON to a webhook.

Finding text comes from audit logs an attacker can write to. Header values are cut to one line with every control
character removed (no header injection), body fields are one line each (no forged lines), and Slack text has `&`,
`<` and `>` escaped (no `<!channel>` pings or disguised links). Errors name the server by host and port, or the
webhook by scheme and host only, since a webhook URL's path and query often hold its token.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import hmac
import json
import re
import smtplib
import socket
import ssl
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import httpx

from insight_mcp.agents.core.timestamps import rfc3339
from insight_mcp.agents.reporting.outbox import AlertPayload, ChannelName
from insight_mcp.agents.settings import AlertSettings, SmtpSettings, WebhookSettings
from insight_mcp.agents.untrusted import clean_text, clean_value
from insight_mcp.agents.version import VERSION

ALERT_SCHEMA = "insight-mcp.alert/1"
SIGNATURE_HEADER = "X-Insight-Signature"
TIMESTAMP_HEADER = "X-Insight-Timestamp"
ALERT_ID_HEADER = "X-Insight-Alert-Id"
MAX_EVIDENCE_FIELDS = 20
MAX_EVENT_IDS = 10

_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


class ChannelError(Exception):
    """A delivery that failed, with a message a person can act on and no secret in it."""


def configured_channels(settings: AlertSettings) -> list[ChannelName]:
    """The channels alerts go to: a channel with no server or URL configured is simply off."""
    channels: list[ChannelName] = []
    if settings.smtp.host:
        channels.append("email")
    if settings.webhook.url:
        channels.append("webhook")
    return channels


def one_line(value: Any, limit: int = 300) -> str:
    """Untrusted text on one line: control characters and line breaks become a space, and it is cut to `limit`."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(_LINE_BREAKS.sub(" ", clean_text(text)).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def secrets_of(settings: AlertSettings) -> list[str]:
    """Every configured value that must never appear in an error, a log line or the outbox."""
    values = []
    if settings.smtp.password:
        values.append(settings.smtp.password.get_secret_value())
    if settings.webhook.secret:
        values.append(settings.webhook.secret.get_secret_value())
    if settings.webhook.url:
        parts = urlsplit(settings.webhook.url)
        values += [settings.webhook.url, parts.path, parts.query, parts.password or ""]
        values += [segment for segment in parts.path.split("/") if len(segment) >= 8]
    return sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)


def scrub(text: str, settings: AlertSettings) -> str:
    """The text with every secret of these settings replaced by ***."""
    for secret in secrets_of(settings):
        text = text.replace(secret, "***")
    return text


def origin(url: str | None) -> str:
    """Scheme, host and port of a URL: enough to say which webhook failed without showing its token."""
    try:
        parts = urlsplit(url or "")
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "the webhook"
    return f"{parts.scheme}://{host}{port}" if parts.scheme and host else "the webhook"


# --- the words ------------------------------------------------------------------------------------------


def _severity_word(payload: AlertPayload) -> str:
    return payload.finding.severity.upper()


def subject(payload: AlertPayload) -> str:
    """The email subject, one clean line: `[insight-mcp] HIGH: <title>`."""
    return f"[insight-mcp] {_severity_word(payload)}: {one_line(payload.finding.title, 180)}"


def _facts(payload: AlertPayload) -> list[tuple[str, str]]:
    f = payload.finding
    facts = [
        ("Rule", f"{one_line(f.rule_id, 100)} ({f.category})"),
        ("Principal", one_line(f.principal, 200)),
        ("Workspace", one_line(f.workspace_id or "-", 100)),
        ("Window", f"{rfc3339(f.first_seen)} to {rfc3339(f.last_seen)}"),
        ("Events", f"{f.event_count:,}"),
    ]
    if f.mitre:
        tactics = f" ({', '.join(f.tactics)})" if f.tactics else ""
        facts.append(("MITRE ATT&CK", one_line(", ".join(f.mitre) + tactics, 160)))
    facts.append(("Threat model", one_line(f.threat_model, 100)))
    return facts


def _evidence_lines(payload: AlertPayload) -> list[str]:
    evidence = payload.finding.evidence
    lines = [f"{one_line(key, 60)}: {one_line(value)}"
             for key, value in list(evidence.fields.items())[:MAX_EVIDENCE_FIELDS]]
    if len(evidence.fields) > MAX_EVIDENCE_FIELDS:
        lines.append(f"(and {len(evidence.fields) - MAX_EVIDENCE_FIELDS} more fields)")
    if evidence.event_ids:
        ids = ", ".join(one_line(e, 80) for e in evidence.event_ids[:MAX_EVENT_IDS])
        extra = len(evidence.event_ids) - MAX_EVENT_IDS
        lines.append(f"event ids: {ids}" + (f" (and {extra} more)" if extra > 0 else ""))
    return lines


def email_body(payload: AlertPayload) -> str:
    """The plain-text email: what fired, on whom, when, what to do, and the evidence behind it."""
    f = payload.finding
    width = max(len(label) for label, _ in _facts(payload)) + 2
    lines = [f"{_severity_word(payload)} finding: {one_line(f.title, 300)}", ""]
    lines += [f"{label + ':':<{width}}{value}" for label, value in _facts(payload)]
    lines += ["", "What to do:", clean_text(f.recommendation).strip(), "", "Evidence (from audit logs; untrusted):"]
    lines += [f"  {line}" for line in _evidence_lines(payload)] or ["  (none)"]
    lines += ["", f"Finding id: {one_line(f.id, 80)}"]
    if payload.report_id:
        lines.append(f"Report: {one_line(payload.report_id, 100)}")
    lines += [f"  {one_line(fmt, 10)}: {one_line(path, 500)}" for fmt, path in sorted(payload.report_paths.items())]
    lines += ["", f"Sent by insight-mcp {VERSION}."]
    return "\n".join(lines) + "\n"


def slack_escape(text: str) -> str:
    """Slack mrkdwn's three control characters as entities: no mentions, links or channel pings from log text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(payload: AlertPayload) -> dict[str, Any]:
    """A Slack-compatible message: a fallback `text` plus blocks within Slack's size limits."""
    f = payload.finding
    headline = slack_escape(f"{_severity_word(payload)}: {one_line(f.title, 250)}")
    evidence = slack_escape("\n".join(_evidence_lines(payload)) or "(none)")[:2900]
    context = f"finding `{slack_escape(one_line(f.id, 80))}`"
    if payload.report_id:
        context += f" · report `{slack_escape(one_line(payload.report_id, 100))}`"
    return {
        "text": f"[insight-mcp] {headline}",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{headline}*"}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": f"*{label}*\n{slack_escape(value)}"} for label, value in _facts(payload)
            ][:10]},
            {"type": "section", "text": {"type": "mrkdwn",
                                         "text": "*What to do*\n" + slack_escape(clean_text(f.recommendation))[:2900]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*Evidence* (from audit logs)\n{evidence}"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ],
    }


def json_payload(payload: AlertPayload, ident: str) -> dict[str, Any]:
    """The generic JSON alert: every finding field, the report it came from, and the alert id to de-duplicate on."""
    alert = clean_value(payload.finding.model_dump(mode="json"))
    alert["report_id"] = payload.report_id
    alert["report_paths"] = clean_value(payload.report_paths)
    return {"schema": ALERT_SCHEMA, "alert_id": ident, "alert": alert}


# --- email ----------------------------------------------------------------------------------------------


def build_email(payload: AlertPayload, smtp: SmtpSettings, *, ident: str, now: dt.datetime) -> EmailMessage:
    """One finding as one email; every header value is a single clean line."""
    message = EmailMessage()
    message["Subject"] = subject(payload)
    message["From"] = one_line(smtp.sender, 200)
    message["To"] = ", ".join(one_line(r, 200) for r in smtp.recipients)
    message["Date"] = email.utils.format_datetime(now.replace(tzinfo=dt.UTC))
    message["Message-ID"] = f"<{ident}@insight-mcp>"
    message["X-Insight-Finding-Id"] = one_line(payload.finding.id, 80)
    message["X-Insight-Severity"] = payload.finding.severity
    message.set_content(email_body(payload))
    return message


def _smtp_reply(exc: smtplib.SMTPResponseException) -> str:
    text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
    return f"{exc.smtp_code} {one_line(text, 200)}"


def _smtp_error(exc: BaseException, smtp: SmtpSettings) -> str:
    where = f"{smtp.host}:{smtp.port}"
    if isinstance(exc, ConnectionRefusedError):
        return (f"SMTP server {where} refused the connection: {exc.strerror or exc}; check INSIGHT_ALERTS__SMTP__HOST "
                "and INSIGHT_ALERTS__SMTP__PORT and that the server is running")
    if isinstance(exc, socket.gaierror):
        return (f"SMTP host {smtp.host!r} could not be resolved ({exc.strerror or exc}); check "
                "INSIGHT_ALERTS__SMTP__HOST")
    if isinstance(exc, TimeoutError):
        return f"SMTP server {where} did not answer within {smtp.timeout_seconds:g} s"
    if isinstance(exc, ssl.SSLError):
        return (f"TLS with SMTP server {where} failed ({one_line(exc.reason or exc, 200)}); check "
                "INSIGHT_ALERTS__SMTP__SSL, INSIGHT_ALERTS__SMTP__STARTTLS and the port")
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return (f"SMTP server {where} rejected the login of {smtp.username!r} ({_smtp_reply(exc)}); check "
                "INSIGHT_ALERTS__SMTP__USERNAME and INSIGHT_ALERTS__SMTP__PASSWORD")
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return (f"SMTP server {where} does not support what the settings ask for ({one_line(exc, 200)}); check "
                "INSIGHT_ALERTS__SMTP__STARTTLS and INSIGHT_ALERTS__SMTP__USERNAME")
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        refused = "; ".join(f"{one_line(addr, 100)} ({code} {one_line(msg.decode(errors='replace'), 100)})"
                            for addr, (code, msg) in exc.recipients.items())
        return f"SMTP server {where} refused every recipient: {refused}; check INSIGHT_ALERTS__SMTP__RECIPIENTS"
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return (f"SMTP server {where} refused the sender {one_line(smtp.sender, 100)!r} ({_smtp_reply(exc)}); check "
                "INSIGHT_ALERTS__SMTP__SENDER")
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"SMTP server {where} answered {_smtp_reply(exc)}"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return f"SMTP server {where} closed the connection ({one_line(exc, 200)})"
    if isinstance(exc, smtplib.SMTPException):
        return f"SMTP server {where}: {one_line(exc, 200)}"
    if isinstance(exc, OSError):
        return f"could not reach SMTP server {where}: {one_line(exc.strerror or exc, 200)}"
    return f"sending email through {where} failed: {type(exc).__name__}"


def send_email(payload: AlertPayload, smtp: SmtpSettings, *, ident: str, now: dt.datetime) -> str | None:
    """Hand one alert to the SMTP server; a note when some (not all) recipients were refused. Blocking."""
    if not smtp.host:
        raise ChannelError("email alerts are off now (INSIGHT_ALERTS__SMTP__HOST is unset); the alert waits")
    if not smtp.recipients:
        raise ChannelError("email alerts have no recipients: set INSIGHT_ALERTS__SMTP__RECIPIENTS")
    try:
        message = build_email(payload, smtp, ident=ident, now=now)
    except (ValueError, TypeError) as exc:
        raise ChannelError(f"could not build the alert email: {one_line(exc, 200)}; check "
                           "INSIGHT_ALERTS__SMTP__SENDER and INSIGHT_ALERTS__SMTP__RECIPIENTS") from None
    context = ssl.create_default_context()
    try:
        client: smtplib.SMTP
        if smtp.ssl:
            client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout_seconds, context=context)
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_seconds)
        with client:
            if smtp.starttls and not smtp.ssl:
                client.starttls(context=context)
            if smtp.username:
                client.login(smtp.username, smtp.password.get_secret_value() if smtp.password else "")
            refused = client.send_message(message, from_addr=one_line(smtp.sender, 200),
                                          to_addrs=[one_line(r, 200) for r in smtp.recipients])
    except (OSError, smtplib.SMTPException) as exc:
        raise ChannelError(_smtp_error(exc, smtp)) from None
    if refused:
        return "sent, but refused for: " + "; ".join(
            f"{one_line(addr, 100)} ({code})" for addr, (code, _msg) in refused.items())
    return None


# --- webhook --------------------------------------------------------------------------------------------


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=` + hex HMAC-SHA256 over `f"{timestamp}.".encode() + body`, keyed with the webhook secret.

    A receiver recomputes it from the X-Insight-Timestamp header and the raw body bytes, compares with
    `hmac.compare_digest`, and rejects timestamps far from its clock so a captured request cannot be replayed.
    """
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def webhook_request(
    payload: AlertPayload, webhook: WebhookSettings, *, ident: str, now: dt.datetime,
) -> tuple[bytes, dict[str, str]]:
    """The exact body bytes and headers to POST: Slack blocks or the generic JSON, signed when a secret is set."""
    document = slack_payload(payload) if webhook.format == "slack" else json_payload(payload, ident)
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "User-Agent": f"insight-mcp/{VERSION}", ALERT_ID_HEADER: ident}
    if webhook.secret:
        timestamp = str(int(now.replace(tzinfo=dt.UTC).timestamp()))
        headers[TIMESTAMP_HEADER] = timestamp
        headers[SIGNATURE_HEADER] = signature(webhook.secret.get_secret_value(), timestamp, body)
    return body, headers


def _status_hint(code: int) -> str:
    if code in (401, 403):
        return "check the token in INSIGHT_ALERTS__WEBHOOK__URL and INSIGHT_ALERTS__WEBHOOK__SECRET"
    if code in (404, 405, 410):
        return "check INSIGHT_ALERTS__WEBHOOK__URL"
    if code in (408, 425, 429) or code >= 500:
        return "the receiver is busy or failing"
    return "the receiver rejected the alert"


def send_webhook(payload: AlertPayload, webhook: WebhookSettings, *, ident: str, now: dt.datetime) -> None:
    """POST one alert; any answer but 2xx is a failed attempt, retried with backoff like any other. Blocking."""
    if not webhook.url:
        raise ChannelError("webhook alerts are off now (INSIGHT_ALERTS__WEBHOOK__URL is unset); the alert waits")
    where = origin(webhook.url)
    body, headers = webhook_request(payload, webhook, ident=ident, now=now)
    try:
        with httpx.Client(timeout=webhook.timeout_seconds, follow_redirects=False, trust_env=False) as client:
            response = client.post(webhook.url, content=body, headers=headers)
    except httpx.TimeoutException:
        raise ChannelError(f"webhook {where} did not answer within {webhook.timeout_seconds:g} s") from None
    except httpx.ConnectError as exc:
        reason = "refused the connection" if "refused" in str(exc).lower() else f"could not be reached ({exc})"
        raise ChannelError(f"webhook {where} {reason}; check INSIGHT_ALERTS__WEBHOOK__URL and that the receiver "
                           "is running") from None
    except (httpx.InvalidURL, httpx.UnsupportedProtocol):
        raise ChannelError("INSIGHT_ALERTS__WEBHOOK__URL is not a valid http(s) URL") from None
    except httpx.HTTPError as exc:
        raise ChannelError(f"webhook {where} failed: {type(exc).__name__} ({exc})") from None
    if not 200 <= response.status_code < 300:
        answer = one_line(response.text, 200) if response.text else "no body"
        raise ChannelError(f"webhook {where} answered HTTP {response.status_code} ({answer}); "
                           f"{_status_hint(response.status_code)}")


def deliver(channel: ChannelName, payload: AlertPayload, settings: AlertSettings, *, ident: str,
            now: dt.datetime) -> str | None:
    """Send one alert on its channel; raise ChannelError with a secret-free message when it did not go."""
    try:
        if channel == "email":
            return send_email(payload, settings.smtp, ident=ident, now=now)
        send_webhook(payload, settings.webhook, ident=ident, now=now)
        return None
    except ChannelError as exc:
        raise ChannelError(scrub(str(exc), settings)) from None

"""Alerts for findings at or above a severity, by email and webhook, through a durable outbox in the state store.

`queue_alerts` records one alert per (channel, finding) that has never been alerted on that channel, so re-runs and
restarts never alert twice. `deliver_due` drains the outbox: it claims each due alert in a transaction, sends it,
and records the outcome; a failed attempt waits `backoff_seconds`, doubling up to an hour, and the alert is given
up (status `failed`) after `max_attempts`. Both are blocking (SQLite, SMTP, HTTP): async callers use
`aqueue_alerts` and `adeliver_due`, which run them in a worker thread.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Literal

import anyio
import structlog
from pydantic import BaseModel, Field

from insight_mcp.agents.core.state import StateStore
from insight_mcp.agents.core.timestamps import UtcDateTime, as_utc
from insight_mcp.agents.reporting import outbox
from insight_mcp.agents.reporting.alert_channels import ChannelError, configured_channels, deliver, one_line, scrub
from insight_mcp.agents.reporting.outbox import (
    AlertPayload,
    AlertRecord,
    ChannelName,
    list_alerts,
    outbox_depth,
    requeue_failed,
)
from insight_mcp.agents.security.incidents import Incident
from insight_mcp.agents.security.model import SEVERITY_RANK, Evidence, Finding
from insight_mcp.agents.settings import AlertSettings

__all__ = [
    "AlertRecord", "DeliveryOutcome", "DeliveryResult", "QueueResult", "adeliver_due", "aqueue_alerts",
    "deliver_due", "list_alerts", "outbox_depth", "queue_alerts", "requeue_failed",
]

log = structlog.get_logger("insight_mcp.alerts")


class QueueResult(BaseModel):
    """What one analysis added to the outbox; counts are per (channel, finding) except `below_threshold`."""

    queued: int = Field(description="Alerts newly added to the outbox.")
    already_alerted: int = Field(description="Alerts skipped: that channel already had (or has queued) the finding.")
    below_threshold: int = Field(description="Findings under `alerts.min_severity`, never alerted.")
    channels: list[ChannelName] = Field(description="Configured channels; empty when alerts are off.")
    alert_ids: list[str] = Field(default_factory=list, description="Ids of the alerts just queued.")


class DeliveryOutcome(BaseModel):
    """What happened to one alert in one drain."""

    alert_id: str
    channel: ChannelName
    finding_id: str
    title: str
    status: Literal["sent", "retrying", "failed"] = Field(description="failed: given up after max_attempts.")
    attempts: int
    error: str | None = Field(None, description="Why it did not go (or a note on a partial send); no secrets.")
    next_attempt_at: UtcDateTime | None = None


class DeliveryResult(BaseModel):
    """One drain of the outbox."""

    sent: int = 0
    failed_attempts: int = Field(0, description="Attempts that failed and will be retried.")
    gave_up: int = Field(0, description="Alerts that spent their last attempt in this drain.")
    remaining: int = Field(0, description="Alerts still queued or being sent after the drain.")
    outcomes: list[DeliveryOutcome] = Field(default_factory=list)
    note: str | None = None


def _now(now: dt.datetime | None) -> dt.datetime:
    return as_utc(now) if now is not None else dt.datetime.now(dt.UTC).replace(tzinfo=None)


def incident_alert(incident: Incident) -> Finding:
    """An incident as the alert channels carry it: its entity, why, the findings that built it, and their events."""
    parts = incident.findings
    return Finding(
        id=incident.id, rule_id=f"incident:{incident.kind}", category=parts[0].category,
        severity=incident.severity, title=f"Incident: {incident.title}", principal=incident.entity,
        workspace_id=None, first_seen=incident.first_seen, last_seen=incident.last_seen,
        event_count=sum(c.event_count for c in parts),
        evidence=Evidence(event_ids=incident.event_ids[:10], fields={
            "why": incident.why, "entity": f"{incident.entity_kind} {incident.entity}",
            "risk": f"{incident.score:g} (threshold {incident.threshold:g})",
            "findings": [f"{c.severity} {c.rule_id} {c.finding_id}" for c in parts][:10],
            "principals": incident.principals[:10]}),
        mitre=incident.mitre,
        recommendation=("Investigate the findings below together, most severe first (get_incident or the report "
                        f"shows each one's evidence); the incident id is {incident.id}."),
        threat_model="correlated")


def queue_alerts(
    findings: list[Finding], settings: AlertSettings, store: StateStore, *,
    report_id: str | None = None, report_paths: dict[str, str] | None = None, now: dt.datetime | None = None,
    incidents: list[Incident] | None = None,
) -> QueueResult:
    """Put each severe-enough incident, then each severe-enough finding none covers, in the outbox once per channel."""
    channels = configured_channels(settings) if settings.enabled else []
    threshold = SEVERITY_RANK[settings.min_severity]
    alerted = [i for i in incidents or [] if SEVERITY_RANK[i.severity] >= threshold]
    covered = {c.finding_id for i in alerted for c in i.findings}
    severe = [incident_alert(i) for i in alerted]
    severe += [f for f in findings if SEVERITY_RANK[f.severity] >= threshold and f.id not in covered]
    below = sum(1 for f in findings if SEVERITY_RANK[f.severity] < threshold)
    items = [
        (channel, one_line(f.title, 300),
         AlertPayload(finding=f, report_id=report_id, report_paths=dict(report_paths or {})))
        for f in severe for channel in channels
    ]
    ids = outbox.enqueue(store, items, _now(now)) if items else []
    if ids:
        log.info("alerts_queued", queued=len(ids), channels=channels, report_id=report_id)
    return QueueResult(queued=len(ids), already_alerted=len(items) - len(ids), below_threshold=below,
                       channels=channels, alert_ids=ids)


def deliver_due(
    settings: AlertSettings, store: StateStore, *, now: dt.datetime | None = None, force: bool = False,
) -> DeliveryResult:
    """Send every alert that is due (every queued one when `force`), each claimed first so none is sent twice."""
    if not settings.enabled:
        return DeliveryResult(remaining=outbox_depth(store), note="alerts are disabled (INSIGHT_ALERTS__ENABLED)")
    moment = _now(now)
    result = DeliveryResult()
    for ident in outbox.due_ids(store, moment, force=force):
        held = outbox.claim(store, ident, moment, force=force)
        if held is None:  # another drainer took it, or it went meanwhile
            continue
        result.outcomes.append(_attempt(held, settings, store, moment))
    result.sent = sum(o.status == "sent" for o in result.outcomes)
    result.failed_attempts = sum(o.status == "retrying" for o in result.outcomes)
    result.gave_up = sum(o.status == "failed" for o in result.outcomes)
    result.remaining = outbox_depth(store)
    return result


def _attempt(held: outbox.Claim, settings: AlertSettings, store: StateStore, now: dt.datetime) -> DeliveryOutcome:
    finding = held.payload.finding
    base = {"alert_id": held.id, "channel": held.channel, "finding_id": finding.id,
            "title": one_line(finding.title, 300), "attempts": held.attempts}
    try:
        note = deliver(held.channel, held.payload, settings, ident=held.id, now=now)
    except ChannelError as exc:
        error = str(exc)
    except Exception as exc:  # a bug or an odd library error must not lose the alert nor stop the drain
        error = scrub(f"unexpected {type(exc).__name__} while sending by {held.channel}: {one_line(exc, 200)}",
                      settings)
    else:
        if not outbox.mark_sent(store, held, now, note):
            log.warning("alert_lease_lost", alert_id=held.id, channel=held.channel)
        log.info("alert_sent", alert_id=held.id, channel=held.channel, finding_id=finding.id)
        return DeliveryOutcome(status="sent", error=note, **base)
    status, next_at = outbox.mark_failed(store, held, now, error, max_attempts=settings.max_attempts,
                                         backoff_seconds=settings.backoff_seconds)
    log.warning("alert_not_delivered", alert_id=held.id, channel=held.channel, attempts=held.attempts,
                gave_up=status == "failed", error=error)
    return DeliveryOutcome(status="retrying" if status == "queued" else "failed", error=error,
                           next_attempt_at=next_at, **base)


async def aqueue_alerts(
    findings: list[Finding], settings: AlertSettings, store: StateStore, *,
    report_id: str | None = None, report_paths: dict[str, str] | None = None, now: dt.datetime | None = None,
    incidents: list[Incident] | None = None,
) -> QueueResult:
    """queue_alerts in a worker thread, for the async pipeline."""
    call = functools.partial(queue_alerts, findings, settings, store, report_id=report_id,
                             report_paths=report_paths, now=now, incidents=incidents)
    return await anyio.to_thread.run_sync(call)


async def adeliver_due(
    settings: AlertSettings, store: StateStore, *, now: dt.datetime | None = None, force: bool = False,
) -> DeliveryResult:
    """deliver_due in a worker thread: SMTP and SQLite block, the event loop must not."""
    return await anyio.to_thread.run_sync(functools.partial(deliver_due, settings, store, now=now, force=force))


async def drain_forever(settings: AlertSettings, store: StateStore) -> None:
    """Deliver what falls due, every `drain_seconds`, until cancelled: a long-running process's retry loop."""
    import anyio

    while True:
        await anyio.sleep(settings.drain_seconds)
        try:
            result = await adeliver_due(settings, store)
        except Exception as exc:  # a broken store or channel must not end the loop, nor the server
            log.warning("alert_drain_failed", error=type(exc).__name__, detail=str(exc)[:300])
            continue
        if result.sent or result.failed_attempts or result.gave_up:
            log.info("alert_drain", sent=result.sent, failed_attempts=result.failed_attempts,
                     gave_up=result.gave_up, remaining=result.remaining)

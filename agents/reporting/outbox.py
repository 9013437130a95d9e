"""The alert outbox: one row per (channel, finding) in the state store, claimed before sending so none goes twice.

A row moves queued -> sending -> sent, or back to queued with a later `next_attempt_at` after a failed attempt, or
to failed once `max_attempts` are spent. Claiming is one transaction (`BEGIN IMMEDIATE` serialises writers across
threads and processes), so two drainers never both hold a row. A `sending` row whose lease is older than
`LEASE` belonged to a process that died mid-send and becomes claimable again: that is the one window in which a
receiver may see an alert twice (the send succeeded, the process died before recording it), and why every delivery
carries the alert id (Message-ID, X-Insight-Alert-Id) for the receiver to de-duplicate on.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
import sqlite3
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from insight_mcp.agents.core.state import StateStore
from insight_mcp.agents.core.timestamps import UtcDateTime, as_utc
from insight_mcp.agents.security.model import Finding
from insight_mcp.agents.untrusted import clean_text

ChannelName = Literal["email", "webhook"]
AlertStatus = Literal["queued", "sending", "sent", "failed"]
ALERT_STATUSES: tuple[str, ...] = AlertStatus.__args__  # type: ignore[attr-defined]
LEASE = dt.timedelta(minutes=10)  # longer than any one send can take: SMTP and webhook timeouts are at most 300 s
MAX_BACKOFF_SECONDS = 3600.0

_DUE = ("((status = 'queued' AND (:force OR next_attempt_at <= :now)) "
        "OR (status = 'sending' AND claimed_at <= :stale))")


class AlertPayload(BaseModel):
    """What an alert carries, stored as JSON so it renders the same after a restart."""

    finding: Finding
    report_id: str | None = None
    report_paths: dict[str, str] = Field(default_factory=dict, description="Format -> path of the report.")


class AlertRecord(BaseModel):
    """One alert as the outbox holds it: where it goes, for which finding, and how delivery is going."""

    id: str
    channel: ChannelName
    finding_id: str
    severity: str
    title: str
    rule_id: str
    principal: str
    report_id: str | None = None
    status: AlertStatus
    attempts: int
    next_attempt_at: UtcDateTime | None = Field(description="When a queued alert is next tried.")
    last_error: str | None = Field(None, description="Why the last attempt failed; never holds a secret.")
    created_at: UtcDateTime
    sent_at: UtcDateTime | None = None


@dataclass
class Claim:
    """A row this drainer holds: only the holder of `token` may record the outcome."""

    id: str
    channel: ChannelName
    token: str
    attempts: int
    payload: AlertPayload


def alert_id(channel: str, finding_id: str) -> str:
    """Same channel and finding, same id: receivers can de-duplicate on it."""
    return "a-" + hashlib.sha256(f"{channel}|{finding_id}".encode()).hexdigest()[:20]


def iso(value: dt.datetime) -> str:
    """Fixed-width naive UTC text, so SQLite compares instants as strings."""
    return as_utc(value).isoformat(timespec="microseconds")


def backoff(attempts: int, base_seconds: float) -> dt.timedelta:
    """The wait after the n-th failed attempt: base, doubling, capped at an hour."""
    return dt.timedelta(seconds=min(base_seconds * 2 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS))


def enqueue(store: StateStore, items: list[tuple[ChannelName, str, AlertPayload]], now: dt.datetime) -> list[str]:
    """Insert each (channel, title, payload) unless that channel already has the finding; the ids inserted."""
    inserted: list[str] = []
    stamp = iso(now)
    with store.transaction() as conn:
        for channel, title, payload in items:
            finding = payload.finding
            ident = alert_id(channel, finding.id)
            cursor = conn.execute(
                "INSERT INTO alerts (id, channel, finding_id, severity, title, payload, status, attempts, "
                "next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, 'queued', 0, ?, ?) "
                "ON CONFLICT (channel, finding_id) DO NOTHING",
                (ident, channel, finding.id, finding.severity, title, payload.model_dump_json(), stamp, stamp),
            )
            if cursor.rowcount:
                inserted.append(ident)
    return inserted


def _due_params(now: dt.datetime, force: bool) -> dict[str, object]:
    return {"now": iso(now), "stale": iso(now - LEASE), "force": int(force)}


def due_ids(store: StateStore, now: dt.datetime, *, force: bool) -> list[str]:
    """Alerts a drain should try now, oldest first and incidents first: queued and due (or all when forced), or stale
    leases."""
    with store.transaction() as conn:
        rows = conn.execute(f"SELECT id FROM alerts WHERE {_DUE} ORDER BY created_at, finding_id NOT LIKE 'inc-%', id",
                            _due_params(now, force)).fetchall()
    return [row["id"] for row in rows]


def claim(store: StateStore, ident: str, now: dt.datetime, *, force: bool) -> Claim | None:
    """Take one alert for sending, counting the attempt; None when it is no longer due or someone else holds it."""
    token = secrets.token_hex(8)
    with store.transaction() as conn:
        row = conn.execute(f"SELECT channel, attempts, payload FROM alerts WHERE id = :id AND {_DUE}",
                           {"id": ident, **_due_params(now, force)}).fetchone()
        if row is None:
            return None
        conn.execute("UPDATE alerts SET status = 'sending', claimed_at = ?, claim_token = ?, attempts = attempts + 1 "
                     "WHERE id = ?", (iso(now), token, ident))
    return Claim(ident, row["channel"], token, row["attempts"] + 1, AlertPayload.model_validate_json(row["payload"]))


def mark_sent(store: StateStore, held: Claim, now: dt.datetime, note: str | None = None) -> bool:
    """Record a delivery; False when the lease was lost meanwhile (the row is someone else's now)."""
    with store.transaction() as conn:
        cursor = conn.execute(
            "UPDATE alerts SET status = 'sent', sent_at = ?, last_error = ?, claim_token = NULL "
            "WHERE id = ? AND claim_token = ?", (iso(now), note, held.id, held.token))
    return bool(cursor.rowcount)


def mark_failed(
    store: StateStore, held: Claim, now: dt.datetime, error: str, *, max_attempts: int, backoff_seconds: float,
) -> tuple[AlertStatus, dt.datetime | None]:
    """Put a failed alert back with a later due time, or give it up once its attempts are spent."""
    if held.attempts >= max_attempts:
        status: AlertStatus = "failed"
        next_at: dt.datetime | None = None
    else:
        status, next_at = "queued", as_utc(now) + backoff(held.attempts, backoff_seconds)
    with store.transaction() as conn:
        conn.execute(
            "UPDATE alerts SET status = ?, next_attempt_at = COALESCE(?, next_attempt_at), last_error = ?, "
            "claimed_at = NULL, claim_token = NULL WHERE id = ? AND claim_token = ?",
            (status, iso(next_at) if next_at else None, error, held.id, held.token))
    return status, next_at


def requeue_failed(store: StateStore, now: dt.datetime | None = None) -> int:
    """Give alerts that were given up a fresh set of attempts, e.g. once the SMTP settings are fixed."""
    stamp = iso(now or dt.datetime.now(dt.UTC))
    with store.transaction() as conn:
        cursor = conn.execute("UPDATE alerts SET status = 'queued', attempts = 0, next_attempt_at = ? "
                              "WHERE status = 'failed'", (stamp,))
    return cursor.rowcount


def _one_line(value: object) -> str:
    return " ".join(clean_text(str(value)).split())[:200]


def _record(row: sqlite3.Row) -> AlertRecord:
    payload = json.loads(row["payload"])
    finding = payload.get("finding", {})
    return AlertRecord(
        id=row["id"], channel=row["channel"], finding_id=row["finding_id"], severity=row["severity"],
        title=row["title"], rule_id=str(finding.get("rule_id", "")), principal=_one_line(finding.get("principal", "")),
        report_id=payload.get("report_id"), status=row["status"], attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"] if row["status"] in ("queued", "sending") else None,
        last_error=row["last_error"], created_at=row["created_at"], sent_at=row["sent_at"],
    )


def list_alerts(store: StateStore, status: AlertStatus | None = None, limit: int = 100) -> list[AlertRecord]:
    """The newest alerts, optionally of one status: what `insight-mcp alerts list` shows."""
    if status is not None and status not in ALERT_STATUSES:
        raise ValueError(f"status must be one of {', '.join(ALERT_STATUSES)}, not {status!r}")
    where, params = ("WHERE status = ?", (status,)) if status else ("", ())
    with store.transaction() as conn:
        rows = conn.execute(f"SELECT * FROM alerts {where} ORDER BY created_at DESC, id LIMIT ?",
                            (*params, max(limit, 0))).fetchall()
    return [_record(row) for row in rows]


def outbox_depth(store: StateStore) -> int:
    """Alerts not yet delivered nor given up: the number /metrics exports."""
    with store.transaction() as conn:
        row = conn.execute("SELECT COUNT(*) FROM alerts WHERE status IN ('queued', 'sending')").fetchone()
    return int(row[0])

"""What the supervisor must remember across restarts, even `kill -9`: per agent, the newest trace start seen, the
cooldown, and the optimization in flight. A trip is claimed (cooldown set, in-flight marked) in one transaction
before the optimization server is called, so a crash after the call can never lead to a second one.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from pydantic import BaseModel

from insight_mcp.agents.core.state import StateStore

STARTING = "starting:"  # an in-flight value before the server has answered with a job id


class AgentState(BaseModel):
    """One monitored agent's durable state."""

    agent: str
    watermark_ms: int = 0
    cooldown_until: float = 0.0
    inflight_job: str | None = None
    inflight_since: float | None = None
    last_trip: dict[str, Any] | None = None

    @property
    def claim_id(self) -> str | None:
        """The claim of a trip whose optimization call may or may not have reached the server."""
        if self.inflight_job and self.inflight_job.startswith(STARTING):
            return self.inflight_job.removeprefix(STARTING)
        return None


def load(store: StateStore, agent: str) -> AgentState:
    with store.transaction() as conn:
        row = conn.execute("SELECT * FROM supervisor_agents WHERE agent = ?", (agent,)).fetchone()
    if row is None:
        return AgentState(agent=agent)
    data = dict(row)
    data["last_trip"] = json.loads(data["last_trip"]) if data["last_trip"] else None
    return AgentState.model_validate(data)


def save_watermark(store: StateStore, agent: str, watermark_ms: int) -> None:
    with store.transaction() as conn:
        conn.execute("INSERT INTO supervisor_agents (agent, watermark_ms) VALUES (?, ?) ON CONFLICT(agent) DO "
                     "UPDATE SET watermark_ms = max(watermark_ms, excluded.watermark_ms)", (agent, watermark_ms))


def claim_trip(store: StateStore, agent: str, now: float, cooldown_seconds: float,
               trip: dict[str, Any]) -> str | None:
    """Mark a trip in flight and start the cooldown, atomically; None if cooling down or one is in flight."""
    claim = secrets.token_hex(8)
    with store.transaction() as conn:
        conn.execute("INSERT OR IGNORE INTO supervisor_agents (agent) VALUES (?)", (agent,))
        row = conn.execute("SELECT cooldown_until, inflight_job FROM supervisor_agents WHERE agent = ?",
                           (agent,)).fetchone()
        if row["inflight_job"] is not None or row["cooldown_until"] > now:
            return None
        conn.execute("UPDATE supervisor_agents SET inflight_job = ?, inflight_since = ?, cooldown_until = ?, "
                     "last_trip = ? WHERE agent = ?",
                     (STARTING + claim, now, now + cooldown_seconds, json.dumps({**trip, "claim": claim}), agent))
    return claim


def record_job(store: StateStore, agent: str, claim: str, job_id: str) -> None:
    """The server answered: the claim becomes a job to follow."""
    with store.transaction() as conn:
        conn.execute("UPDATE supervisor_agents SET inflight_job = ? WHERE agent = ? AND inflight_job = ?",
                     (job_id, agent, STARTING + claim))


def release(store: StateStore, agent: str, *, keep_cooldown: bool, outcome: dict[str, Any] | None = None) -> None:
    """The job ended (or never started): nothing in flight; the cooldown stays unless the call never happened."""
    with store.transaction() as conn:
        row = conn.execute("SELECT last_trip FROM supervisor_agents WHERE agent = ?", (agent,)).fetchone()
        trip = json.loads(row["last_trip"]) if row and row["last_trip"] else {}
        if outcome is not None:
            trip["outcome"] = outcome
        sets = "inflight_job = NULL, inflight_since = NULL, last_trip = ?"
        if not keep_cooldown:
            sets += ", cooldown_until = 0"
        conn.execute(f"UPDATE supervisor_agents SET {sets} WHERE agent = ?", (json.dumps(trip), agent))


class CheckSnapshot(BaseModel):
    """The last check of one agent, kept for the status page: metrics, the verdict's reasons, whether it tripped."""

    agent: str
    checked_at: float
    metrics: dict[str, Any]
    reasons: list[str]
    trips: bool
    action: str


class Intervention(BaseModel):
    """One optimization the supervisor (or a person, through trigger_optimization) started for an agent."""

    id: int
    agent: str
    at: float
    trigger: str
    reasons: list[str]
    job_id: str | None
    outcome: str | None


def save_check(store: StateStore, snapshot: CheckSnapshot) -> None:
    with store.transaction() as conn:
        conn.execute("INSERT INTO supervisor_checks (agent, checked_at, snapshot) VALUES (?, ?, ?) ON CONFLICT(agent) "
                     "DO UPDATE SET checked_at = excluded.checked_at, snapshot = excluded.snapshot",
                     (snapshot.agent, snapshot.checked_at, snapshot.model_dump_json()))


def checks(store: StateStore) -> dict[str, CheckSnapshot]:
    with store.transaction() as conn:
        rows = conn.execute("SELECT snapshot FROM supervisor_checks").fetchall()
    found = [CheckSnapshot.model_validate_json(row["snapshot"]) for row in rows]
    return {snapshot.agent: snapshot for snapshot in found}


def add_intervention(store: StateStore, agent: str, at: float, trigger: str, reasons: list[str],
                     job_id: str | None) -> None:
    """Record an intervention once per job (a restart that adopts a job may record it again: it is kept once)."""
    with store.transaction() as conn:
        if job_id is not None and conn.execute("SELECT 1 FROM supervisor_interventions WHERE job_id = ?",
                                               (job_id,)).fetchone():
            return
        conn.execute("INSERT INTO supervisor_interventions (agent, at, trigger, reasons, job_id) "
                     "VALUES (?, ?, ?, ?, ?)",
                     (agent, at, trigger, json.dumps(reasons), job_id))


def set_intervention_outcome(store: StateStore, job_id: str, outcome: str) -> None:
    with store.transaction() as conn:
        conn.execute("UPDATE supervisor_interventions SET outcome = ? WHERE job_id = ?", (outcome, job_id))


def interventions(store: StateStore, limit: int = 20) -> list[Intervention]:
    with store.transaction() as conn:
        rows = conn.execute("SELECT * FROM supervisor_interventions ORDER BY at DESC, id DESC LIMIT ?",
                            (limit,)).fetchall()
    return [Intervention.model_validate({**dict(row), "reasons": json.loads(row["reasons"])}) for row in rows]

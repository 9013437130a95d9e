"""Starting an optimization for a monitored agent the one safe way, whoever asks: the supervisor on a real slip, or a
person through `trigger_optimization`. The trip is claimed (cooldown and single flight) before the call; the
intervention is logged to MLflow (`insight-supervisor`) and to the state store the status page reads.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any, Literal

import structlog
from pydantic import BaseModel, Field

from insight_mcp.agents.core.jobs import stored_jobs
from insight_mcp.agents.core.mlflow_store import experiment_id, failure, open_client
from insight_mcp.agents.core.state import StateStore
from insight_mcp.agents.core.timestamps import UtcDateTime
from insight_mcp.agents.settings import Settings
from insight_mcp.agents.supervision import state
from insight_mcp.agents.supervision.config import MonitoredAgent

log = structlog.get_logger("insight_mcp.supervisor")

EXPERIMENT = "insight-supervisor"
Trigger = Literal["threshold", "manual"]


class StartRefused(Exception):
    """The optimization server answered, refusing the request (an unknown prompt, bad settings): retrying at every
    check would only repeat the refusal, so the cooldown stands."""


class Trip(BaseModel):
    """Why an optimization is wanted: the reasons, the test that judged them, and the metrics at that moment."""

    trigger: Trigger
    reasons: list[str]
    test: str
    metrics: dict[str, Any] = Field(default_factory=dict)


class TripOutcome(BaseModel):
    """Whether the optimization started, its job, and otherwise why not (cooling down, one in flight, unreachable)."""

    agent: str
    prompt: str
    started: bool
    job_id: str | None = None
    message: str
    cooldown_until: UtcDateTime | None = Field(None, description="No new trip for this agent before then (UTC).")


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def trip(settings: Settings, store: StateStore, agent: MonitoredAgent, why: Trip, *, cooldown_seconds: float,
         start: Callable[[str], str], now: float | None = None) -> TripOutcome:
    """Claim the trip, start the optimization with `start(claim) -> job id`, and log the intervention."""
    now = time.time() if now is None else now
    claim = state.claim_trip(store, agent.name, now, cooldown_seconds,
                             {"at": now, "trigger": why.trigger, "reasons": why.reasons, "test": why.test,
                              "metrics": why.metrics})
    if claim is None:
        current = state.load(store, agent.name)
        if current.inflight_job:
            job = current.inflight_job if current.claim_id is None else "being started"
            message = f"not started: an optimization of {agent.name} is already in flight ({job})"
        else:
            message = (f"not started: {agent.name} is cooling down after its last optimization until "
                       f"{_utc(current.cooldown_until).isoformat(timespec='seconds')}")
        return TripOutcome(agent=agent.name, prompt=agent.prompt, started=False, message=message,
                           cooldown_until=_utc(current.cooldown_until) if current.cooldown_until > now else None)
    try:
        job_id = start(claim)
    except StartRefused as exc:  # the server said no: the cooldown stands, the reason is logged
        state.release(store, agent.name, keep_cooldown=True, outcome={"error": str(exc)[:500]})
        log.warning("optimization_refused", agent=agent.name, error=str(exc)[:500])
        return TripOutcome(agent=agent.name, prompt=agent.prompt, started=False,
                           message=f"not started: the optimization server refused it: {str(exc)[:500]}",
                           cooldown_until=_utc(now + cooldown_seconds))
    except Exception as exc:  # the call failed: release the claim so that the next check (or person) can try again
        state.release(store, agent.name, keep_cooldown=False, outcome={"error": failure(exc)})
        log.warning("optimization_not_started", agent=agent.name, error=failure(exc))
        return TripOutcome(agent=agent.name, prompt=agent.prompt, started=False,
                           message=f"not started: the optimization could not be started: {failure(exc)}")
    state.record_job(store, agent.name, claim, job_id)
    state.add_intervention(store, agent.name, now, why.trigger, why.reasons, job_id)
    log_intervention(settings, agent, why, job_id, claim)
    log.info("optimization_started", agent=agent.name, job=job_id, trigger=why.trigger, reasons=why.reasons)
    return TripOutcome(agent=agent.name, prompt=agent.prompt, started=True, job_id=job_id,
                       message=f"optimization job {job_id} started ({'; '.join(why.reasons)})",
                       cooldown_until=_utc(now + cooldown_seconds))


def log_intervention(settings: Settings, agent: MonitoredAgent, why: Trip, job_id: str, claim: str) -> None:
    """A run in insight-supervisor: the metrics snapshot, the reason, the test and the job. MLflow down: a warning."""
    try:
        client = open_client(settings.tracking_uri)
        exp = experiment_id(client, EXPERIMENT, settings.mlflow_artifacts / EXPERIMENT)
        run = client.create_run(exp, run_name=f"{agent.name} {time.strftime('%Y-%m-%d %H:%M:%S')}",
                                tags={"insight.kind": "intervention", "insight.agent": agent.name,
                                      "insight.prompt": agent.prompt, "insight.job_id": job_id,
                                      "insight.claim": claim, "insight.trigger": why.trigger})
        _log_snapshot(client, run.info.run_id, agent, why, job_id)
    except Exception as exc:
        log.warning("intervention_not_logged", agent=agent.name, error=failure(exc))


def _log_snapshot(client: Any, run_id: str, agent: MonitoredAgent, why: Trip, job_id: str) -> None:
    """Params and metrics in one call; a crash within it (the store writes them apart) is mended by log_outcome."""
    from mlflow.entities import Metric, Param

    now_ms = int(time.time() * 1000)
    params = {"reasons": "; ".join(why.reasons)[:6000], "test": why.test, "trigger": why.trigger, "job_id": job_id,
              "prompt": agent.prompt}
    metrics = [Metric(key, float(value), now_ms, 0) for key, value in why.metrics.items()
               if isinstance(value, (int, float)) and not isinstance(value, bool)]
    client.log_batch(run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()])


def log_outcome(settings: Settings, store: StateStore, agent: MonitoredAgent, job_id: str, status: str,
                result: Any, why: Trip | None = None) -> None:
    """The job ended: its status on the intervention (state store and MLflow run), and whether it promoted.

    A process killed while it logged the trip leaves no run, or a run without its snapshot: `why` (the trip as the
    state store kept it) completes it here, so every intervention ends with its metrics, reasons and outcome.
    """
    outcome = status
    if isinstance(result, dict) and result.get("outcome"):
        outcome = f"{status}: {result['outcome']}"
    state.set_intervention_outcome(store, job_id, outcome)
    try:
        client = open_client(settings.tracking_uri)
        exp = experiment_id(client, EXPERIMENT, settings.mlflow_artifacts / EXPERIMENT)
        runs = client.search_runs([exp], filter_string=f"tags.`insight.job_id` = '{job_id}'", max_results=1)
        if not runs and why is not None:
            log_intervention(settings, agent, why, job_id, claim="recovered")
            runs = client.search_runs([exp], filter_string=f"tags.`insight.job_id` = '{job_id}'", max_results=1)
        elif runs and why is not None and ("reasons" not in runs[0].data.params or not runs[0].data.metrics):
            _log_snapshot(client, runs[0].info.run_id, agent, why, job_id)
        if runs:
            client.set_tag(runs[0].info.run_id, "insight.outcome", outcome)
            client.set_terminated(runs[0].info.run_id, "FINISHED" if status == "succeeded" else "FAILED")
    except Exception as exc:
        log.warning("intervention_outcome_not_logged", agent=agent.name, error=failure(exc))


def trip_of(current: state.AgentState) -> Trip | None:
    """The trip the state store kept for an agent's job in flight, to complete its log after a crash."""
    kept = current.last_trip or {}
    try:
        return Trip(trigger=kept.get("trigger", "threshold"), reasons=kept.get("reasons") or [],
                    test=kept.get("test", ""), metrics=kept.get("metrics") or {})
    except Exception:
        return None


def settle(settings: Settings, store: StateStore, agent: MonitoredAgent) -> None:
    """Release an agent whose in-flight job has ended in this store, so that a manual trigger is not refused for a
    job nobody followed (no supervisor running, or a job the server marked interrupted at a restart)."""
    current = state.load(store, agent.name)
    if not current.inflight_job or current.claim_id is not None:
        return
    found = stored_jobs(store, ids=(current.inflight_job,), limit=1)
    if not found or not found[0].finished:
        return
    job = found[0]
    state.release(store, agent.name, keep_cooldown=True,
                  outcome={"job": job.id, "status": job.status, "error": job.error})
    log_outcome(settings, store, agent, job.id, job.status, job.result, why=trip_of(current))

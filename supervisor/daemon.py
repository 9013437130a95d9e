"""The supervisory agent: each check reads what is new per monitored agent, judges its window, and on a real slip
calls the optimization server (never in-process), follows the job, and logs the intervention to MLflow.

Robustness: one optimization in flight per agent and a cooldown, both claimed in the state store before the call;
a job in flight when the process died is followed again after a restart, never started twice; MLflow or the
optimization server being down is logged and retried with backoff, and never ends the loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog
from pydantic import BaseModel

from insight_mcp.agents.core.mlflow_store import failure, open_client
from insight_mcp.agents.core.state import StateStore
from insight_mcp.agents.settings import Settings
from insight_mcp.agents.supervision import state
from insight_mcp.agents.supervision.config import MonitoredAgent, OnDemandOptimization
from insight_mcp.agents.supervision.interventions import EXPERIMENT, Trip, log_outcome, trip, trip_of
from insight_mcp.supervisor.reader import read_since
from insight_mcp.supervisor.window import RollingWindow, Verdict, judge

log = structlog.get_logger("insight_mcp.supervisor")

__all__ = ["EXPERIMENT", "AgentCheck", "CheckObserver", "JobView", "Launcher", "Supervisor", "run_forever"]
MAX_BACKOFF = 600.0


class JobView(BaseModel):
    """What the supervisor needs of an optimization job."""

    id: str
    status: str
    finished: bool
    result: Any = None
    error: str | None = None


class Launcher(Protocol):
    """Starts and follows optimizations on the optimization server."""

    def start(self, agent: MonitoredAgent, verdict: Verdict, claim: str) -> str: ...

    def get(self, job_id: str) -> JobView: ...

    def find_since(self, prompt: str, since: float) -> JobView | None: ...


class AgentCheck(BaseModel):
    """One agent's check: its metrics, the verdict, and what was done."""

    agent: str
    new_traces: int
    verdict: Verdict
    action: str


class Supervisor:
    """Per-agent windows in memory, decisions in the state store, interventions in MLflow."""

    def __init__(self, config: OnDemandOptimization, settings: Settings, launcher: Launcher, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.settings = settings
        self.launcher = launcher
        self.clock = clock
        self.store = StateStore(settings.state_path)
        self.windows = {a.name: RollingWindow(config.supervisory_agent.window_seconds) for a in config.agents}
        self._client: Any = None
        self._experiments: dict[str, str] = {}

    def _mlflow(self) -> Any:
        if self._client is None:
            self._client = open_client(self.settings.tracking_uri)
        return self._client

    def _experiment(self, name: str) -> str | None:
        if name not in self._experiments:
            found = self._mlflow().get_experiment_by_name(name)
            if found is None:
                return None
            self._experiments[name] = str(found.experiment_id)
        return self._experiments[name]

    def check_once(self) -> list[AgentCheck]:
        """One pass over every monitored agent; raises only when MLflow itself cannot be reached."""
        return [self._check(agent) for agent in self.config.agents]

    def _check(self, agent: MonitoredAgent) -> AgentCheck:
        now = self.clock()
        current = state.load(self.store, agent.name)
        followed = self._follow(agent, current)
        window = self.windows[agent.name]
        now_ms = int(now * 1000)
        earliest = now_ms - int(self.config.supervisory_agent.window_seconds * 1000)
        overlap = int(self.config.supervisory_agent.overlap_seconds * 1000)
        since = max(earliest, current.watermark_ms - overlap) if window.outcomes else earliest
        experiment = self._experiment(agent.experiment)
        outcomes = read_since(self._mlflow(), experiment, agent, since) if experiment else []
        new = window.add(outcomes)
        window.trim(now_ms)
        if outcomes:
            state.save_watermark(self.store, agent.name, max(o.timestamp_ms for o in outcomes))
        verdict = judge(window.metrics(self.config.supervisory_agent.confidence_z), self.config.triggers,
                        self.config.supervisory_agent)
        action = followed or "no action: " + "; ".join(verdict.reasons)
        if verdict.trips:
            tripped = self._trip(agent, verdict, now)
            action = f"{followed}; {tripped}" if followed else tripped
        state.save_check(self.store, state.CheckSnapshot(
            agent=agent.name, checked_at=now, metrics=verdict.metrics.model_dump(mode="json"),
            reasons=verdict.reasons, trips=verdict.trips, action=action))
        return AgentCheck(agent=agent.name, new_traces=new, verdict=verdict, action=action)

    def _trip(self, agent: MonitoredAgent, verdict: Verdict, now: float) -> str:
        why = Trip(trigger="threshold", reasons=verdict.reasons, test=verdict.test,
                   metrics=verdict.metrics.model_dump(mode="json"))
        outcome = trip(self.settings, self.store, agent, why, now=now,
                       cooldown_seconds=self.config.supervisory_agent.cooldown_seconds,
                       start=lambda claim: self.launcher.start(agent, verdict, claim))
        if outcome.started:
            return f"tripped ({'; '.join(verdict.reasons)}): optimization job {outcome.job_id} started"
        return "tripped, but " + outcome.message.removeprefix("not started: ")

    def _follow(self, agent: MonitoredAgent, current: state.AgentState) -> str | None:
        """The job in flight, if any: adopt a claim the server answered before a crash, finish a job that ended."""
        if not current.inflight_job:
            return None
        claim = current.claim_id
        if claim is not None:
            job = self.launcher.find_since(agent.prompt, current.inflight_since or 0.0)
            if job is None:  # the call never reached the server: the cooldown stands, nothing is started twice
                state.release(self.store, agent.name, keep_cooldown=True, outcome={"error": "never started"})
                return "a trip claimed before a restart never reached the server; cooling down"
            state.record_job(self.store, agent.name, claim, job.id)
            kept = trip_of(current)
            if kept is not None:
                state.add_intervention(self.store, agent.name, current.inflight_since or self.clock(), kept.trigger,
                                       kept.reasons, job.id)
            current = state.load(self.store, agent.name)
        job = self.launcher.get(current.inflight_job or "")
        if not job.finished:
            return f"optimization job {job.id} still {job.status}"
        outcome = {"job": job.id, "status": job.status, "result": job.result, "error": job.error}
        state.release(self.store, agent.name, keep_cooldown=True, outcome=outcome)
        log_outcome(self.settings, self.store, agent, job.id, job.status, job.result, why=trip_of(current))
        return f"optimization job {job.id} ended {job.status}"


class CheckObserver(Protocol):
    """Told of each check's outcome (the health endpoint's counters); must not raise."""

    def checked(self, checks: list[AgentCheck]) -> None: ...

    def failed(self, exc: BaseException) -> None: ...


def run_forever(supervisor: Supervisor, *, stop: Callable[[], bool] = lambda: False,
                observer: CheckObserver | None = None) -> None:
    """Check every `check_interval`; on outages, back off (doubling, capped) and keep going."""
    interval = supervisor.config.supervisory_agent.check_interval
    delay = interval
    while not stop():
        try:
            checks = supervisor.check_once()
            for check in checks:
                log.info("checked", agent=check.agent, new=check.new_traces, action=check.action)
            delay = interval
        except Exception as exc:
            delay = min(max(delay * 2, 1.0), MAX_BACKOFF)
            log.warning("check_failed", error=failure(exc), retry_in_seconds=delay)
            if observer is not None:
                observer.failed(exc)
        else:
            if observer is not None:
                observer.checked(checks)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not stop():
            time.sleep(min(0.5, delay))

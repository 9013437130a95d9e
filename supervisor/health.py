"""The supervisor's own `/health` and `/metrics`: is the daemon checking, and what did it last see per agent.

`run_forever` tells a `SupervisorStats` about each check (or failure); a small Starlette app on its own port answers
from it, served by uvicorn in a background thread so the check loop stays plain sync code. One registry per
daemon, never the process-global one. Health is `degraded` once `degraded_after` checks in a row have failed (MLflow
or the optimization server down); it turns `ok` again with the next successful check.
"""

from __future__ import annotations

import contextlib
import hmac
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, Literal

import structlog
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from insight_mcp.agents.core.mlflow_store import failure
from insight_mcp.agents.core.state import StateStore
from insight_mcp.agents.settings import Settings
from insight_mcp.agents.supervision import state
from insight_mcp.servers.hosts import HostOriginMiddleware, allowed_hosts, allowed_origins, check_exposure
from insight_mcp.supervisor.daemon import AgentCheck

log = structlog.get_logger("insight_mcp.supervisor.health")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9001
DEGRADED_AFTER = 3
WINDOW_GAUGES = {
    "error_rate": "Error rate of the agent's current window (0-1).",
    "average_rating": "Average rating (1-5) of the agent's current window.",
    "median_latency_seconds": "Median latency of the agent's current window, in seconds.",
    "volume": "Traces in the agent's current window.",
}


class AgentHealth(BaseModel):
    """What the last successful check saw of one agent."""

    checked_at: float
    volume: int
    new_traces: int
    trips: bool
    action: str


class Health(BaseModel):
    """The answer of `/health`."""

    status: Literal["ok", "degraded", "starting"]
    started_at: float
    last_check_at: float | None = Field(None, description="When the last check ended, successful or not (Unix time).")
    last_success_at: float | None = None
    consecutive_failures: int
    last_error: str | None = None
    checks: int
    agents: dict[str, AgentHealth]


class _SinceLastSuccess(Collector):
    """Seconds since the last successful check, computed at scrape time; absent before the first one."""

    def __init__(self, stats: SupervisorStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("insight_supervisor_seconds_since_last_success",
                                   "Seconds since the supervisor's last successful check.")
        last = self.stats.last_success_at
        if last is not None:
            family.add_metric([], max(0.0, self.stats.clock() - last))
        yield family


class SupervisorStats:
    """Counters and the last check per agent, fed by `run_forever` and read by the endpoint; thread-safe."""

    def __init__(self, store: StateStore, *, degraded_after: int = DEGRADED_AFTER, clock: Any = time.time) -> None:
        self.store = store
        self.degraded_after = degraded_after
        self.clock = clock
        self.started_at = clock()
        self._lock = threading.Lock()
        self.checks_total = 0
        self.consecutive_failures = 0
        self.last_check_at: float | None = None
        self.last_success_at: float | None = None
        self.last_error: str | None = None
        self.agents: dict[str, AgentHealth] = {}
        self._seen_intervention = self._newest_intervention()
        self.registry = CollectorRegistry(auto_describe=True)
        self.checks = Counter("insight_supervisor_checks", "Supervisor checks, successful or not.",
                              registry=self.registry)
        self.failures = Counter("insight_supervisor_check_failures", "Supervisor checks that failed (MLflow or the "
                                "optimization server unreachable).", registry=self.registry)
        self.trips = Counter("insight_supervisor_trips", "Checks whose window breached a threshold with enough "
                             "volume, whether or not an optimization could start.", ["agent"], registry=self.registry)
        self.optimizations = Counter("insight_supervisor_optimizations_started", "Optimizations the supervisor "
                                     "started.", ["agent"], registry=self.registry)
        self.failing = Gauge("insight_supervisor_consecutive_failures", "Failed checks since the last successful "
                             "one.", registry=self.registry)
        self.window = {name: Gauge(f"insight_supervisor_window_{name}", text, ["agent"], registry=self.registry)
                       for name, text in WINDOW_GAUGES.items()}
        self.registry.register(_SinceLastSuccess(self))

    def _newest_intervention(self) -> int:
        with self.store.transaction() as conn:
            row = conn.execute("SELECT max(id) AS id FROM supervisor_interventions").fetchone()
        return int(row["id"] or 0)

    def _started_since_last(self) -> list[str]:
        """Agents of the optimizations the supervisor started since the last look (the state store's record)."""
        found = [i for i in state.interventions(self.store, 200) if i.id > self._seen_intervention]
        if found:
            self._seen_intervention = max(i.id for i in found)
        return [i.agent for i in found if i.trigger == "threshold"]

    def checked(self, checks: list[AgentCheck]) -> None:
        """One successful pass over the agents."""
        now = self.clock()
        try:
            started = self._started_since_last()
        except Exception as exc:  # the store being busy must not turn a good check into a failure
            log.warning("interventions_unreadable", error=type(exc).__name__)
            started = []
        with self._lock:
            self.checks_total += 1
            self.consecutive_failures = 0
            self.last_check_at = self.last_success_at = now
            self.last_error = None
            self.checks.inc()
            self.failing.set(0)
            for check in checks:
                metrics = check.verdict.metrics
                self.agents[check.agent] = AgentHealth(checked_at=now, volume=metrics.volume,
                                                       new_traces=check.new_traces, trips=check.verdict.trips,
                                                       action=check.action)
                if check.verdict.trips:
                    self.trips.labels(check.agent).inc()
                for name, gauge in self.window.items():
                    value = getattr(metrics, name)
                    if value is None:
                        with contextlib.suppress(KeyError):
                            gauge.remove(check.agent)
                    else:
                        gauge.labels(check.agent).set(float(value))
            for agent in started:
                self.optimizations.labels(agent).inc()

    def failed(self, exc: BaseException) -> None:
        """One check that could not complete."""
        with self._lock:
            self.checks_total += 1
            self.consecutive_failures += 1
            self.last_check_at = self.clock()
            self.last_error = failure(exc)
            self.checks.inc()
            self.failures.inc()
            self.failing.set(self.consecutive_failures)

    def health(self) -> Health:
        """The daemon's health now."""
        with self._lock:
            if self.consecutive_failures >= self.degraded_after:
                status: Literal["ok", "degraded", "starting"] = "degraded"
            elif self.last_check_at is None:
                status = "starting"
            else:
                status = "ok"
            return Health(status=status, started_at=self.started_at, last_check_at=self.last_check_at,
                          last_success_at=self.last_success_at, consecutive_failures=self.consecutive_failures,
                          last_error=self.last_error, checks=self.checks_total, agents=dict(self.agents))

    def render(self) -> bytes:
        with self._lock:
            return generate_latest(self.registry)


def _authorized(request: Request, token: str | None) -> bool:
    if token is None:
        return True
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode())


def build_health_app(stats: SupervisorStats, settings: Settings, host: str) -> Starlette:
    """`/health` and `/metrics`, behind the same Host/Origin checks and bearer token (INSIGHT_API_TOKEN) as serve."""
    token = settings.api_token.get_secret_value() if settings.api_token else None

    async def health(request: Request) -> Response:
        answer = stats.health()  # 200 even when degraded: the daemon is alive, and restarting it cures no outage
        if not _authorized(request, token):  # liveness probes without the token learn the status only
            return JSONResponse({"status": answer.status})
        return JSONResponse(answer.model_dump(mode="json"))

    async def metrics(request: Request) -> Response:
        if not _authorized(request, token):
            return JSONResponse({"error": "unauthorized", "detail": "send Authorization: Bearer <INSIGHT_API_TOKEN>"},
                                status_code=401, headers={"WWW-Authenticate": 'Bearer realm="insight-mcp"'})
        return Response(stats.render(), media_type=CONTENT_TYPE_LATEST)

    bound = settings.model_copy(update={"host": host})
    app = Starlette(routes=[Route("/health", health), Route("/metrics", metrics)])
    app.add_middleware(HostOriginMiddleware, hosts=allowed_hosts(bound), origins=allowed_origins(bound))
    return app


class HealthServer:
    """The endpoint in a background thread: the port is bound at start (a clash fails at once), stopped by stop()."""

    def __init__(self, stats: SupervisorStats, settings: Settings, host: str = DEFAULT_HOST,
                 port: int = DEFAULT_PORT) -> None:
        check_exposure(settings.model_copy(update={"host": host}))  # no open network serving without a token
        self.host = host
        self.app = build_health_app(stats, settings, host)
        self._socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
        except OSError:
            self._socket.close()
            raise
        self.port = int(self._socket.getsockname()[1])
        self._server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", log_config=None, lifespan="off",
                                                     timeout_graceful_shutdown=2))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> HealthServer:
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name="insight-supervisor-health", daemon=True)
        self._thread.start()
        log.info("supervisor_health_serving", url=self.url)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Ask uvicorn to exit and wait for its thread; the socket is closed either way."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self._socket.close()

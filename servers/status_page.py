"""`GET /` on `serve`: one self-contained page (or `?format=json`) on the self-improvement loop and the last analysis.

Everything is read when asked: the supervisor's checks, cooldowns and interventions and the jobs from the state
store, the thresholds from agent_config.yaml, the newest report from the reports folder. Nothing on the page fetches
anything (a strict Content-Security-Policy, no script at all), and every text that came from traces, prompts, jobs
or audit data is autoescaped and never made a link. MLflow is only asked for experiment ids, lazily, in a worker
thread, briefly cached; when it is slow or down the links fall back to the MLflow UI's front page.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import shlex
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import anyio
import jinja2
import structlog
from markupsafe import Markup
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from insight_mcp.agents.core.jobs import JobRecord, stored_jobs
from insight_mcp.agents.core.state import StateStore
from insight_mcp.agents.settings import Settings
from insight_mcp.agents.supervision import state
from insight_mcp.agents.supervision.config import (
    ConfigError,
    MonitoredAgent,
    OnDemandOptimization,
    load_agent_config,
)

log = structlog.get_logger("insight_mcp.status_page")

TEMPLATES = Path(__file__).parent / "templates"
TEMPLATE = "status.html.j2"
STYLESHEET = "status.css"
EXPERIMENTS = ("insight-analysis", "insight-supervisor", "insight-optimization", "insight-narrative")
OPTIMIZATION_KIND = "prompt_optimization"
EVALUATION_KINDS = ("detection_evaluation", "insight_scores", "agent_evaluation", "dataset_curation")
JOB_LIMIT = 25
INTERVENTION_LIMIT = 20
REFRESH_SECONDS = 30
LOOKUP_WAIT_SECONDS = 2.0  # how long a page waits for MLflow's experiment ids before linking the UI's front page
LINKS_FRESH_SECONDS = 60.0
LINKS_RETRY_SECONDS = 15.0
# Ids MLflow itself makes; anything else found in a job's result is shown as text, never put into a link.
_RUN_ID = re.compile(r"[0-9a-f]{32}")
_EXPERIMENT_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
_REPORT_MEDIA = {"html": "text/html; charset=utf-8", "md": "text/plain; charset=utf-8",
                 "json": "application/json"}
# The stored report has its own CSP; this one also holds if a custom template dropped it, and `sandbox` gives the
# report an opaque origin, so a script in it could never read this server's other routes.
REPORT_CSP = ("sandbox allow-scripts; default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
              "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class MetricView(BaseModel):
    """One trigger metric of an agent's last window beside the threshold it is judged against."""

    name: str
    value: float | None
    threshold: float
    trips_when: str = Field(description="How the value must compare with the threshold to trip, in words.")
    breached: bool | None = Field(description="Whether it is past its threshold; null with no value.")
    note: str | None = None


class AgentStatus(BaseModel):
    """A monitored agent: its last check against the thresholds, its cooldown and its optimization in flight."""

    name: str
    prompt: str | None
    experiment: str | None
    configured: bool = Field(description="False for an agent the store knows but the configuration no longer names.")
    state: Literal["not_checked", "within_thresholds", "breached", "cooling_down", "optimizing"]
    checked_at: dt.datetime | None = None
    metrics: list[MetricView] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)
    trips: bool | None = None
    action: str | None = None
    cooldown_until: dt.datetime | None = Field(None, description="Set while the agent is cooling down.")
    inflight_job: str | None = Field(None, description="The optimization job in flight, or `being started`.")
    inflight_since: dt.datetime | None = None


class InterventionView(BaseModel):
    """An optimization started for an agent, by the supervisor (threshold) or a person (manual)."""

    agent: str
    at: dt.datetime
    trigger: str
    reasons: list[str]
    job_id: str | None
    outcome: str | None


class JobView(BaseModel):
    """A recent optimization or evaluation job, as its record in the state store has it."""

    id: str
    kind: str
    status: str
    progress: float
    message: str | None
    error: str | None
    created_at: dt.datetime
    finished_at: dt.datetime | None
    prompt: str | None = None
    outcome: str | None = None
    candidate_version: str | None = None
    mlflow_run_id: str | None = None
    run_url: str | None = Field(None, description="The job's MLflow run in the UI, when its id is a real run id.")


class Approval(BaseModel):
    """A candidate prompt version an optimization left under `candidate`, waiting for a person to promote it."""

    job_id: str
    prompt: str
    candidate_version: str
    finished_at: dt.datetime | None
    reason: str | None
    tool: Literal["promote_prompt"] = "promote_prompt"
    arguments: dict[str, str]
    command: str = Field(description="The same promotion from a shell, quoted to paste as it is.")


class AnalysisView(BaseModel):
    """The newest analysis: its window, finding counts and where its report files are."""

    report_id: str | None
    generated_at: dt.datetime | None
    since: dt.datetime | None
    until: dt.datetime | None
    total: int | None
    by_severity: dict[str, int]
    links: dict[str, str] = Field(description="Format -> this server's route for the latest report file.")
    paths: dict[str, str] = Field(description="Format -> the file on the server's disk.")


class MlflowLinks(BaseModel):
    """Links into the MLflow UI: per experiment when its id could be looked up, else the UI's front page."""

    ui: str | None = Field(description="The UI's address, or null when mlflow_ui_url is not an http(s) URL.")
    reachable: bool
    note: str | None = None
    experiments: dict[str, str | None]


class StatusPage(BaseModel):
    """Everything the status page shows; `?format=json` answers exactly this."""

    generated_at: dt.datetime
    config_path: str | None
    config_error: str | None = None
    enabled: bool | None = None
    promotion: str | None = None
    thresholds: dict[str, float] = Field(default_factory=dict)
    supervision: dict[str, Any] = Field(default_factory=dict)
    agents: list[AgentStatus] = Field(default_factory=list)
    store_error: str | None = None
    interventions: list[InterventionView] = Field(default_factory=list)
    approvals: list[Approval] = Field(default_factory=list)
    jobs: list[JobView] = Field(default_factory=list)
    analysis: AnalysisView | None = None
    analysis_error: str | None = None
    mlflow: MlflowLinks


# --- MLflow experiment links ----------------------------------------------------------------------------------------


class ExperimentLinks:
    """Experiment ids by name, looked up in a worker thread and kept briefly; never more than one lookup at once."""

    def __init__(self, tracking_uri: str, names: tuple[str, ...] = EXPERIMENTS) -> None:
        self.tracking_uri = tracking_uri
        self.names = names
        self._lock = threading.Lock()
        self._ids: dict[str, str | None] = {}
        self._error: str | None = None
        self._fetched = 0.0
        self._running = False

    def _fresh(self) -> bool:
        age = time.monotonic() - self._fetched
        return self._fetched > 0 and age < (LINKS_RETRY_SECONDS if self._error else LINKS_FRESH_SECONDS)

    def _lookup(self, names: tuple[str, ...]) -> None:
        ids: dict[str, str | None] = {}
        error: str | None = None
        try:
            local = self.tracking_uri.removeprefix("sqlite:///")
            if self.tracking_uri.startswith("sqlite:///") and not Path(local).exists():
                error = "no MLflow store yet: nothing has been tracked"  # never create a store from a status page
            else:
                from insight_mcp.agents.core.mlflow_store import failure, open_client

                try:
                    client = open_client(self.tracking_uri)
                    for name in names:
                        found = client.get_experiment_by_name(name)
                        ids[name] = str(found.experiment_id) if found is not None else None
                except Exception as exc:  # MLflow down or misconfigured: the page links the UI's front page
                    error = "MLflow could not be reached: " + failure(exc)
        finally:
            with self._lock:
                self._ids, self._error, self._fetched, self._running = ids, error, time.monotonic(), False

    async def get(self, names: tuple[str, ...], wait: float = LOOKUP_WAIT_SECONDS) -> tuple[dict[str, str | None],
                                                                                          str | None]:
        """The experiment ids, waiting at most `wait` seconds for a lookup; a slower one finishes for later pages."""
        with self._lock:
            stale = not self._fresh() or (self._error is None and any(n not in self._ids for n in names))
            start = stale and not self._running
            if start:
                self._running = True
        if start:
            with anyio.move_on_after(wait):
                await anyio.to_thread.run_sync(self._lookup, names, abandon_on_cancel=True)
        with self._lock:
            ids, error, running = dict(self._ids), self._error, self._running
        if running and not ids and error is None:
            error = "MLflow is still being asked for its experiment ids; reload in a moment"
        return ids, error


def _ui_base(settings: Settings) -> str | None:
    url = settings.mlflow_ui_url.strip().rstrip("/")
    return url if url.startswith(("http://", "https://")) else None


def experiment_url(ui: str | None, experiment_id: str | None) -> str | None:
    """`<ui>/#/experiments/<id>` for an id MLflow made, else the UI's front page."""
    if ui is None:
        return None
    if experiment_id is None or not _EXPERIMENT_ID.fullmatch(experiment_id):
        return ui + "/"
    return f"{ui}/#/experiments/{experiment_id}"


def run_url(ui: str | None, experiment_id: str | None, run_id: str | None) -> str | None:
    """`<ui>/#/experiments/<id>/runs/<run_id>` when both ids are real MLflow ids, else None (shown as text)."""
    if ui is None or not experiment_id or not run_id or not _EXPERIMENT_ID.fullmatch(experiment_id):
        return None
    if not _RUN_ID.fullmatch(run_id):
        return None
    return f"{ui}/#/experiments/{experiment_id}/runs/{run_id}"


# --- gathering ------------------------------------------------------------------------------------------------------


def _utc(seconds: float | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(seconds, dt.UTC) if seconds else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def metric_views(metrics: dict[str, Any], config: OnDemandOptimization) -> list[MetricView]:
    """The window's metrics beside their thresholds, judged the way the supervisor judges them."""
    triggers, watch = config.triggers, config.supervisory_agent
    volume = _float(metrics.get("volume"))
    rate, bound = _float(metrics.get("error_rate")), _float(metrics.get("error_rate_lower_bound"))
    judged = bound if watch.significance == "wilson" else rate
    rating, latency = _float(metrics.get("average_rating")), _float(metrics.get("median_latency_seconds"))
    note = f"{metrics.get('errors', 0)} errors; Wilson lower bound {bound:.1%}" if bound is not None else None
    return [
        MetricView(name="volume", value=volume, threshold=watch.min_traces_for_trigger,
                   trips_when="at least this many traces before anything can trip",
                   breached=None if volume is None else volume >= watch.min_traces_for_trigger),
        MetricView(name="error_rate", value=rate, threshold=triggers.error_rate_threshold,
                   trips_when="above" + (" (its 95% Wilson lower bound)" if watch.significance == "wilson" else ""),
                   breached=None if judged is None else judged > triggers.error_rate_threshold, note=note),
        MetricView(name="average_rating", value=rating, threshold=triggers.rating_threshold, trips_when="below",
                   breached=None if rating is None else rating < triggers.rating_threshold,
                   note=f"{metrics.get('ratings', 0)} ratings" if rating is not None else None),
        MetricView(name="median_latency_seconds", value=latency, threshold=triggers.response_time_threshold,
                   trips_when="above",
                   breached=None if latency is None else latency > triggers.response_time_threshold),
    ]


def _agent_status(name: str, agent: MonitoredAgent | None, current: state.AgentState | None,
                  check: state.CheckSnapshot | None, config: OnDemandOptimization | None, now: float) -> AgentStatus:
    status = AgentStatus(name=name, prompt=agent.prompt if agent else None,
                         experiment=agent.experiment if agent else None, configured=agent is not None,
                         state="not_checked")
    if check is not None:
        status.checked_at = _utc(check.checked_at)
        status.metrics = metric_views(check.metrics, config) if config is not None else []
        status.reasons, status.trips, status.action = check.reasons, check.trips, check.action
        status.state = "breached" if check.trips else "within_thresholds"
    if current is not None:
        if current.cooldown_until > now:
            status.cooldown_until, status.state = _utc(current.cooldown_until), "cooling_down"
        if current.inflight_job:
            status.inflight_job = "being started" if current.claim_id else current.inflight_job
            status.inflight_since, status.state = _utc(current.inflight_since), "optimizing"
    return status


def _job_view(record: JobRecord) -> JobView:
    result = record.result if isinstance(record.result, dict) else {}
    params = record.params if isinstance(record.params, dict) else {}
    prompt = result.get("prompt") or params.get("prompt")

    def text(value: Any) -> str | None:
        return None if value is None else str(value)

    return JobView(id=record.id, kind=record.kind, status=record.status, progress=record.progress,
                   message=record.message, error=record.error, created_at=record.created_at.replace(tzinfo=dt.UTC),
                   finished_at=record.finished_at.replace(tzinfo=dt.UTC) if record.finished_at else None,
                   prompt=text(prompt), outcome=text(result.get("outcome")),
                   candidate_version=text(result.get("candidate_version")),
                   mlflow_run_id=text(result.get("mlflow_run_id")))


def approval_of(job: JobView, reason: str | None) -> Approval | None:
    """The promotion a person must make for an optimization that ended awaiting approval."""
    if job.kind != OPTIMIZATION_KIND or job.status != "succeeded" or job.outcome != "awaiting_approval":
        return None
    if not job.prompt or not job.candidate_version:
        return None
    arguments = {"prompt": job.prompt, "version": job.candidate_version}
    command = "insight-mcp call optimization promote_prompt " + shlex.quote(json.dumps(arguments))
    return Approval(job_id=job.id, prompt=job.prompt, candidate_version=job.candidate_version,
                    finished_at=job.finished_at, reason=reason, arguments=arguments, command=command)


class _AnalysisSummary(BaseModel):
    """The few fields of latest.json the page shows; the rest of the report is read by whoever opens it."""

    report_id: str | None = None
    generated_at: dt.datetime | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    counts: dict[str, Any] = Field(default_factory=dict)


def latest_analysis(folder: Path) -> AnalysisView | None:
    """The newest analysis in the reports folder, or None before the first one."""
    from insight_mcp.agents.reporting.render import latest_report

    text = latest_report(folder, "json")
    if text is None:
        return None
    summary = _AnalysisSummary.model_validate_json(text)
    formats = [fmt for fmt in _REPORT_MEDIA if (folder / f"latest.{fmt}").is_file()]
    by_severity = summary.counts.get("by_severity") or {}
    total = summary.counts.get("total")

    def aware(value: dt.datetime | None) -> dt.datetime | None:
        return value.replace(tzinfo=dt.UTC) if value is not None and value.tzinfo is None else value

    return AnalysisView(
        report_id=summary.report_id, generated_at=aware(summary.generated_at), since=aware(summary.since),
        until=aware(summary.until), total=total if isinstance(total, int) else None,
        by_severity={str(k): v for k, v in by_severity.items() if isinstance(v, int)},
        links={fmt: f"/reports/latest.{fmt}" for fmt in formats},
        paths={fmt: str(folder / f"latest.{fmt}") for fmt in formats})


def gather(settings: Settings, experiment_ids: dict[str, str | None], mlflow_note: str | None,
           now: float | None = None) -> StatusPage:
    """Read the configuration, the state store and the reports folder into one model; each failing part says why."""
    now = time.time() if now is None else now
    config_path = settings.agent_config_path
    config: OnDemandOptimization | None = None
    config_error: str | None = None
    try:
        config = load_agent_config(config_path).ondemand_optimization
    except ConfigError as exc:
        config_error = str(exc)
    except OSError as exc:
        config_error = f"{config_path} cannot be read: {exc.strerror or exc}"
    ui = _ui_base(settings)
    experiments = tuple(dict.fromkeys([*EXPERIMENTS, *(a.experiment for a in (config.agents if config else []))]))
    page = StatusPage(
        generated_at=_utc(now) or dt.datetime.now(dt.UTC), config_path=str(config_path) if config_path else None,
        config_error=config_error,
        mlflow=MlflowLinks(ui=ui, reachable=bool(experiment_ids) and mlflow_note is None, note=mlflow_note,
                           experiments={n: experiment_url(ui, experiment_ids.get(n)) for n in experiments}))
    if config is not None:
        page.enabled, page.promotion = config.enabled, config.promotion
        page.thresholds = config.triggers.model_dump()
        page.supervision = config.supervisory_agent.model_dump()
    agents = {a.name: a for a in (config.agents if config else [])}
    try:
        _read_store(page, settings, agents, config, experiment_ids, now)
    except (sqlite3.Error, OSError, ValueError) as exc:
        page.store_error = f"the state store {settings.state_path} could not be read: {type(exc).__name__}: {exc}"
        page.agents = page.agents or [_agent_status(n, a, None, None, config, now) for n, a in agents.items()]
    try:
        page.analysis = latest_analysis(settings.reports_dir)
    except (OSError, ValueError) as exc:
        page.analysis_error = f"the latest report in {settings.reports_dir} could not be read: {type(exc).__name__}"
    return page


def _read_store(page: StatusPage, settings: Settings, agents: dict[str, MonitoredAgent],
                config: OnDemandOptimization | None, experiment_ids: dict[str, str | None], now: float) -> None:
    if not settings.state_path.exists():  # nothing has run yet; a status page never creates the store
        page.agents = [_agent_status(n, a, None, None, config, now) for n, a in agents.items()]
        return
    store = StateStore(settings.state_path)
    snapshots = state.checks(store)
    with store.transaction() as conn:
        known = [row["agent"] for row in conn.execute("SELECT agent FROM supervisor_agents ORDER BY agent")]
    names = list(dict.fromkeys([*agents, *sorted(snapshots), *known]))
    page.agents = [_agent_status(n, agents.get(n), state.load(store, n), snapshots.get(n), config, now)
                   for n in names]
    page.interventions = [InterventionView(agent=i.agent, at=_utc(i.at) or page.generated_at, trigger=i.trigger,
                                           reasons=i.reasons, job_id=i.job_id, outcome=i.outcome)
                          for i in state.interventions(store, INTERVENTION_LIMIT)]
    records = stored_jobs(store, kinds=(OPTIMIZATION_KIND, *EVALUATION_KINDS), limit=JOB_LIMIT)
    optimization = experiment_ids.get("insight-optimization")
    for record in records:
        job = _job_view(record)
        job.run_url = run_url(page.mlflow.ui, optimization, job.mlflow_run_id) if job.kind == OPTIMIZATION_KIND \
            else None
        page.jobs.append(job)
        reason = record.result.get("reason") if isinstance(record.result, dict) else None
        approval = approval_of(job, str(reason) if reason is not None else None)
        if approval is not None:
            page.approvals.append(approval)


# --- rendering and routes -------------------------------------------------------------------------------------------


def _csp_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _when(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "—"


def _number(value: float | None, name: str = "") -> str:
    if value is None:
        return "—"
    if name == "error_rate":
        return f"{value:.1%}"
    if name == "volume":
        return f"{value:.0f}"
    return f"{value:.2f}" if name == "average_rating" or name.endswith("seconds") else f"{value:g}"


class StatusRenderer:
    """The Jinja2 environment (autoescaped, strict) and the stylesheet whose hash the CSP allows."""

    def __init__(self) -> None:
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                                      undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.env.filters.update(when=_when, number=_number)
        self.css = (TEMPLATES / STYLESHEET).read_text(encoding="utf-8")
        # The page's own copy (for a saved file) leaves out frame-ancestors, which a <meta> policy may not carry.
        self.meta_csp = (f"default-src 'none'; style-src {_csp_source(self.css)}; img-src 'none'; base-uri 'none'; "
                         "form-action 'none'")
        self.csp = self.meta_csp + "; frame-ancestors 'none'"

    def render(self, page: StatusPage) -> str:
        return self.env.get_template(TEMPLATE).render(page=page, css=Markup(self.css),
                                                      csp=self.meta_csp, refresh=REFRESH_SECONDS)


SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                    "Cache-Control": "no-store", "X-Frame-Options": "DENY"}


def status_routes(settings: Settings) -> list[Route]:
    """`/` (HTML, or `?format=json`) and `/reports/latest.{html,md,json}`: fixed names, no path from the caller."""
    renderer = StatusRenderer()
    links = ExperimentLinks(settings.tracking_uri)

    async def status(request: Request) -> Response:
        fmt = request.query_params.get("format", "html")
        if fmt not in ("html", "json"):
            return JSONResponse({"error": "bad_request", "detail": "format must be html or json"}, status_code=400)
        try:
            configured = await anyio.to_thread.run_sync(_agent_experiments, settings)
            ids, note = await links.get(tuple(dict.fromkeys([*EXPERIMENTS, *configured])))
            page = await anyio.to_thread.run_sync(gather, settings, ids, note)
        except Exception as exc:  # the page reports what it could not read; it must never take serve down with it
            log.error("status_page_failed", error=type(exc).__name__, exc_info=exc)
            return PlainTextResponse("the status page could not be built; the server log has the details",
                                     status_code=500, headers=SECURITY_HEADERS)
        if fmt == "json":
            return Response(page.model_dump_json(), media_type="application/json", headers=SECURITY_HEADERS)
        body = await anyio.to_thread.run_sync(renderer.render, page)
        return Response(body, media_type="text/html; charset=utf-8",
                        headers={**SECURITY_HEADERS, "Content-Security-Policy": renderer.csp})

    routes = [Route("/", status, methods=["GET"])]
    for fmt, media in _REPORT_MEDIA.items():
        routes.append(Route(f"/reports/latest.{fmt}", _report_route(settings.reports_dir, fmt, media), methods=["GET"]))
    return routes


def _agent_experiments(settings: Settings) -> tuple[str, ...]:
    try:
        config = load_agent_config(settings.agent_config_path).ondemand_optimization
    except (ConfigError, OSError):
        return ()
    return tuple(a.experiment for a in config.agents)


def _report_route(folder: Path, fmt: str, media: str) -> Callable[[Request], Awaitable[Response]]:
    """One fixed file of the reports folder: the caller chooses nothing but which of three routes to ask."""

    async def report(request: Request) -> Response:
        from insight_mcp.agents.reporting.render import latest_report

        text = await anyio.to_thread.run_sync(latest_report, folder, fmt)
        if text is None:
            return PlainTextResponse("no analysis has been written yet: run `insight-mcp analyze`", status_code=404,
                                     headers=SECURITY_HEADERS)
        headers = dict(SECURITY_HEADERS)
        if fmt == "html":
            headers["Content-Security-Policy"] = REPORT_CSP
        return Response(text, media_type=media, headers=headers)

    return report

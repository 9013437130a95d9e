"""The main job, `insight-mcp analyze`: ingestion check, the analysis agents at once, aggregation, narrative,
reports and alerts, recorded as one MLflow run whose stages and agents are traced.

A failing agent is reported in the result while the others finish; MLflow being down skips tracking and says why;
a report folder that cannot be written is found before any analysis runs.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import anyio
import structlog
from pydantic import BaseModel, Field

from insight_mcp.agents.core.mlflow_run import RunTracker, TrackingOutcome
from insight_mcp.agents.ingestion.backend import BackendError, SystemTables, TransientBackendError
from insight_mcp.agents.ingestion.catalog import TABLES
from insight_mcp.agents.ingestion.explore import resolve_window
from insight_mcp.agents.network import analysis as network
from insight_mcp.agents.reporting import aggregate
from insight_mcp.agents.reporting.model import (
    REPORT_FORMATS,
    AgentOutcome,
    Narrative,
    NetworkOverview,
    Report,
    TableCoverage,
)
from insight_mcp.agents.reporting.render import WrittenReports, check_folder, write_reports
from insight_mcp.agents.security.model import Finding
from insight_mcp.agents.security.rules import rule_files, rule_set_version
from insight_mcp.agents.security.service import DEFAULT_WINDOW, SecurityAgent
from insight_mcp.agents.settings import Settings
from insight_mcp.agents.version import VERSION

log = structlog.get_logger("insight_mcp.orchestrator")

EXPERIMENT = "insight-analysis"
STAGES = ("ingestion", "analysis", "aggregation", "narrative", "reports", "alerts")
RISKY_DESTINATIONS = {"paste", "tunnel", "file_sharing", "mining"}
T = TypeVar("T")

Progress = Callable[[str, int, int], None]


class AnalysisRequest(BaseModel):
    """What to analyse and where the results go; unset fields come from settings."""

    since: str | None = Field(None, description="ISO date or timestamp; default 7 days before the latest event.")
    until: str | None = Field(None, description="ISO date or timestamp (exclusive); default after the latest event.")
    out_dir: Path | None = None
    formats: list[Literal["md", "json", "html"]] | None = None
    alerts: bool = True


class StageTiming(BaseModel):
    """How one stage went and what it cost."""

    stage: str
    status: Literal["ok", "failed", "skipped"]
    seconds: float
    detail: str | None = None


class AlertSummary(BaseModel):
    """What the alert stage did: queued for delivery, sent now, still waiting, and why."""

    status: Literal["sent", "queued", "off", "skipped", "failed"]
    queued: int = 0
    sent: int = 0
    pending: int = 0
    detail: str | None = None


class AnalysisResult(BaseModel):
    """Everything one analysis produced."""

    report: Report
    reports: WrittenReports
    stages: list[StageTiming]
    tracking: TrackingOutcome
    alerts: AlertSummary


async def with_retries(call: Callable[[], Awaitable[T]], *, attempts: int = 4, first_delay: float = 0.5) -> T:
    """Retry a backend call that failed transiently, doubling the wait; other errors go straight up."""
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except TransientBackendError as exc:
            if attempt == attempts:
                raise
            log.warning("backend busy, retrying", attempt=attempt, wait_seconds=delay, reason=str(exc))
            await anyio.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


async def check_ingestion(backend: SystemTables) -> list[TableCoverage]:
    """Which tables the backend holds and the time each covers; a table that cannot be read says why."""
    names = list(TABLES)
    stats = await with_retries(lambda: backend.table_stats(names))
    found = {s.name: s for s in stats}
    coverage = []
    for name in names:
        s = found.get(name)
        if s is None or not s.present:
            coverage.append(TableCoverage(table=name, rows=None, error="not present in this workspace"))
        else:
            coverage.append(TableCoverage(table=name, rows=s.rows, first_event=s.first_event,
                                          last_event=s.last_event))
    return coverage


async def network_overview(settings: Settings, backend: SystemTables, since: dt.datetime,
                           until: dt.datetime) -> NetworkOverview:
    """The network agent's view of the window: external and anonymising IPs, access-list and egress denials."""
    lists = network.load_reference_lists()
    trusted = settings.detections.suppression.trusted_cidrs
    top = min(1000, settings.query.row_cap)
    window = {"since": since.isoformat(), "until": until.isoformat()}
    ips = await network.external_ips(backend, settings.query, trusted, lists, top=top, **window)
    denials = await network.ip_access_denials(backend, settings.query, trusted, lists, top=top, **window)
    egress = await network.egress_denials(backend, settings.query, lists, top=top, **window)
    return NetworkOverview(
        external_ips=len(ips.ips),
        anonymizer_ips=sorted(ip.ip for ip in ips.ips if ip.classification == "anonymizer")[:50],
        ip_access_denials=denials.total,
        denied_ips=[d.ip for d in denials.by_ip][:50],
        egress_denials=sum(d.denials for d in egress.destinations),
        risky_destinations=[d.destination for d in egress.destinations if d.classification in RISKY_DESTINATIONS],
    )


async def narrate(report: Report, settings: Settings) -> Narrative:
    """LM-written when an LM is configured (validated, with templated fallbacks), templated otherwise."""
    from insight_mcp.agents.narrative.templated import templated_narrative

    if not settings.lm_model:
        return templated_narrative(report)
    from insight_mcp.agents.narrative.writer import write_narrative

    return await write_narrative(report, settings)


class _Stages:
    """Times each stage, traces it, and tells the progress bar."""

    def __init__(self, tracker: RunTracker, progress: Progress | None) -> None:
        self.tracker = tracker
        self.progress = progress
        self.timings: list[StageTiming] = []

    def run(self, stage: str) -> _Stage:
        return _Stage(self, stage)


class _Stage:
    def __init__(self, owner: _Stages, name: str) -> None:
        self.owner, self.name = owner, name
        self.status: Literal["ok", "failed", "skipped"] = "ok"
        self.detail: str | None = None

    def __enter__(self) -> _Stage:
        self.started = time.perf_counter()
        self._span = self.owner.tracker.span(f"stage.{self.name}", tags=None)
        self.span = self._span.__enter__()
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            self.status, self.detail = "failed", str(exc)
        if self.span is not None and self.status == "failed" and exc is None:
            from mlflow.entities import SpanStatusCode

            self.span.set_status(SpanStatusCode.ERROR)
        if self.span is not None:
            self.span.set_attributes({"insight.stage": self.name, "insight.status": self.status})
        self._span.__exit__(kind, exc, tb)
        seconds = round(time.perf_counter() - self.started, 4)
        self.owner.timings.append(StageTiming(stage=self.name, status=self.status, seconds=seconds,
                                              detail=self.detail))
        if self.owner.progress is not None:
            self.owner.progress(self.name, len(self.owner.timings), len(STAGES))


async def _run_agent(name: str, tracker: RunTracker, work: Callable[[], Awaitable[T]]) -> tuple[T | None, AgentOutcome]:
    """One agent, traced, its failure caught and described so that the others finish."""
    started = time.perf_counter()
    with tracker.span(f"agent.{name}", span_type="AGENT", attributes={"insight.agent": name}) as span:
        try:
            value = await work()
        except Exception as exc:  # an agent's failure is a result, not a crash
            error = str(exc) if isinstance(exc, (BackendError, ValueError)) else f"{type(exc).__name__}: {exc}"
            log.warning("analysis agent failed", agent=name, error=error)
            if span is not None:
                from mlflow.entities import SpanStatusCode

                span.set_status(SpanStatusCode.ERROR)
                span.set_attribute("insight.error", error[:500])
            return None, AgentOutcome(agent=name, status="failed", seconds=round(time.perf_counter() - started, 4),
                                      error=error[:500])
    return value, AgentOutcome(agent=name, status="ok", seconds=round(time.perf_counter() - started, 4))


async def analyze(settings: Settings, backend: SystemTables, request: AnalysisRequest, *,
                  progress: Progress | None = None, security: SecurityAgent | None = None) -> AnalysisResult:
    """Run the whole pipeline over one window and write its reports; see the module docstring for failures."""
    folder = request.out_dir or settings.reports_dir
    formats = list(dict.fromkeys(request.formats or settings.reports.formats)) or list(REPORT_FORMATS)
    check_folder(folder)  # before any work: a report that cannot be written should cost nothing
    report_id = uuid.uuid4().hex
    generated_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    security = security or SecurityAgent(settings, backend)

    tracker = RunTracker(settings.tracking_uri, settings.mlflow_artifacts, EXPERIMENT)
    await anyio.to_thread.run_sync(lambda: tracker.start(
        f"analysis {generated_at:%Y-%m-%d %H:%M:%S}",
        {"insight.kind": "analysis", "insight.report_id": report_id, "insight.version": VERSION}))
    stages = _Stages(tracker, progress)
    status: Literal["FINISHED", "FAILED"] = "FAILED"
    try:
        with tracker.span("analyze", span_type="CHAIN", attributes={"insight.report_id": report_id},
                          tags={"insight.agent": "orchestrator", "insight.kind": "analysis",
                                "insight.report_id": report_id}):
            result = await _pipeline(settings, backend, request, stages, tracker, security=security, folder=folder,
                                     formats=formats, report_id=report_id, generated_at=generated_at)
        status = "FINISHED"
    finally:
        tracking = await anyio.to_thread.run_sync(tracker.finish, status)
    return result.model_copy(update={"tracking": tracking})


async def _pipeline(settings: Settings, backend: SystemTables, request: AnalysisRequest, stages: _Stages,
                    tracker: RunTracker, *, security: SecurityAgent, folder: Path, formats: list[str],
                    report_id: str, generated_at: dt.datetime) -> AnalysisResult:
    with stages.run("ingestion"):
        coverage = await check_ingestion(backend)
        since, until = await with_retries(lambda: resolve_window(
            backend, "system.access.audit", "event_time", request.since, request.until, DEFAULT_WINDOW,
            settings.query))

    with stages.run("analysis"):
        outcomes: dict[str, tuple[Any, AgentOutcome]] = {}

        async def security_agent() -> None:
            outcomes["security"] = await _run_agent("security", tracker, lambda: security.run(
                since=since.isoformat(), until=until.isoformat(), min_severity="info"))

        async def network_agent() -> None:
            outcomes["network"] = await _run_agent("network", tracker, lambda: network_overview(
                settings, backend, since, until))

        async with anyio.create_task_group() as group:
            group.start_soon(security_agent)
            group.start_soon(network_agent)

    with stages.run("aggregation"):
        detection, security_outcome = outcomes["security"]
        overview, network_outcome = outcomes["network"]
        findings: list[Finding] = aggregate.deduplicate(detection.findings if detection else [])
        network_rules = {path.stem for path in rule_files(network.RULES_DIR)}
        security_outcome.findings = sum(1 for f in findings if f.rule_id not in network_rules)
        network_outcome.findings = sum(1 for f in findings if f.rule_id in network_rules)
        incidents = security.correlate(findings) if detection else []
        report = Report(
            report_id=report_id, generated_at=generated_at, since=since, until=until, backend=backend.kind,
            rule_set_version=rule_set_version(settings.detections), coverage=coverage,
            agents=[security_outcome, network_outcome], counts=aggregate.count(findings), incidents=incidents,
            findings=findings,
            principals=aggregate.principal_scores(findings), workspaces=aggregate.workspace_scores(findings),
            timeline=aggregate.timeline(findings, since, until), network=overview,
            narrative=Narrative(executive_summary="", network=""),
        )

    with stages.run("narrative") as stage:
        narrative = await narrate(report, settings)
        report = report.model_copy(update={"narrative": narrative})
        if narrative.errors:
            stage.detail = "; ".join(narrative.errors)[:500]

    with stages.run("reports"):
        written = await anyio.to_thread.run_sync(
            lambda: write_reports(report, folder, formats, settings.reports.templates_dir))

    with stages.run("alerts") as stage:
        alerts = await _alerts(settings, report, written, request.alerts)
        stage.status = "skipped" if alerts.status in ("off", "skipped") else "ok"
        stage.detail = alerts.detail

    _log_run(tracker, settings, report, stages.timings, written, formats)
    return AnalysisResult(report=report, reports=written, stages=stages.timings, alerts=alerts,
                          tracking=TrackingOutcome(status="skipped", experiment=EXPERIMENT, tracking_uri=""))


async def _alerts(settings: Settings, report: Report, written: WrittenReports, wanted: bool) -> AlertSummary:
    """Queue the alert-worthy findings in the durable outbox, then try to deliver what is due."""
    if not wanted:
        return AlertSummary(status="skipped", detail="alerts not sent (--no-alerts)")
    config = settings.alerts
    if not config.active:
        return AlertSummary(status="off", detail="no alert channel configured (INSIGHT_ALERTS__SMTP__HOST, "
                                                 "INSIGHT_ALERTS__WEBHOOK__URL)")
    from insight_mcp.agents.core.state import StateStore
    from insight_mcp.agents.reporting import alerts

    store = StateStore(settings.state_path)
    queued = await alerts.aqueue_alerts(report.findings, config, store, report_id=report.report_id,
                                        report_paths=written.paths, incidents=report.incidents)
    delivered = await alerts.adeliver_due(config, store)
    errors = [o.error for o in delivered.outcomes if o.status != "sent" and o.error]
    detail = None
    if delivered.remaining or errors:
        detail = f"{delivered.remaining} alert(s) kept in the outbox for retry"
        detail += f": {errors[0]}" if errors else ""
    return AlertSummary(status="queued" if delivered.remaining else "sent", queued=queued.queued,
                        sent=delivered.sent, pending=delivered.remaining, detail=detail)


def _log_run(tracker: RunTracker, settings: Settings, report: Report, timings: list[StageTiming],
             written: WrittenReports, formats: list[str]) -> None:
    """Params, metrics and the reports themselves on the run."""
    metrics: dict[str, float] = {"findings.total": report.counts.total}
    metrics |= {f"findings.severity.{k}": v for k, v in report.counts.by_severity.items()}
    metrics |= {f"findings.category.{k}": v for k, v in report.counts.by_category.items()}
    metrics |= {f"seconds.stage.{t.stage}": t.seconds for t in timings}
    metrics |= {f"seconds.agent.{a.agent}": a.seconds for a in report.agents}
    metrics |= {f"agent_failed.{a.agent}": float(a.status == "failed") for a in report.agents}
    tracker.log(params={
        "since": report.since.isoformat(), "until": report.until.isoformat(),
        "window_hours": round((report.until - report.since).total_seconds() / 3600, 2),
        "rule_set_version": report.rule_set_version, "backend": report.backend, "formats": ",".join(formats),
        "report_id": report.report_id, "insight_version": VERSION,
        "narrative": report.narrative.source,
    }, metrics=metrics)
    tracker.artifacts_from([Path(p) for p in written.paths.values()], "reports")

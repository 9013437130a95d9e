"""Typed async clients, one class per Insight MCP server: each method wraps one tool and returns a pydantic model.

    async with SecurityClient.connect_http("http://127.0.0.1:9000") as security:
        risks = await security.top_risks(limit=5)

Every class connects with its server's pinned schemas (`clients/schemas/<server>.json`), so a server whose tools
changed under it is refused on connect. A keyword left at None is not sent: the server's own default applies.
The answer models are the servers' own, which live in `agents/` (light to import); only the job handle `Started`,
which each server defines, is mirrored here. A test holds every model to its pinned output schema. Nothing here
imports MLflow, DSPy or the servers. Adding a server is one class: its `server` name, and one method per tool.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, TypeVar

from mcp.server import MCPServer
from pydantic import BaseModel, Field

from insight_mcp.agents.core.feedback import RatingReceipt
from insight_mcp.agents.core.jobs import JobList, JobRecord
from insight_mcp.agents.evaluation.runs import EvaluationList, StoredEvaluation
from insight_mcp.agents.ingestion.answers import QueryAnswer, TableList
from insight_mcp.agents.ingestion.explore import (
    AuditEventsPage,
    ClusterInventory,
    QueryHistorySummary,
    TableDescription,
)
from insight_mcp.agents.narrative.briefing import FindingsSummary
from insight_mcp.agents.network.analysis import (
    Bottlenecks,
    ConnectionPatterns,
    DataVolumeInsights,
    EgressDenials,
    ExternalIPs,
    IPAccessDenials,
)
from insight_mcp.agents.optimization.model import (
    AliasMove,
    Framework,
    OptimizationResult,
    OptimizerName,
    Promotion,
    PromptVersions,
    Significance,
)
from insight_mcp.agents.security.answers import DetectionResult, RuleList
from insight_mcp.agents.security.incidents import Incident, IncidentList
from insight_mcp.agents.security.model import Finding
from insight_mcp.agents.security.risk import PrincipalRisk, TopRisks
from insight_mcp.agents.supervision.interventions import TripOutcome
from insight_mcp.clients.client import (
    InsightClient,
    OnProgress,
    OnRetry,
    RetryPolicy,
    connect_http,
    connect_in_process,
    connect_stdio,
    server_url,
)
from insight_mcp.clients.pins import PinSet, load_pins

M = TypeVar("M", bound=BaseModel)
Severity = Literal["info", "low", "medium", "high", "critical"]
ScorerName = Literal["validity", "completeness", "expected_facts", "expected_response", "judges"]


# --- an answer model the servers define in servers/ (mirrored: importing servers/ would pull the whole stack) ---


class Started(BaseModel):
    job_id: str = Field(description="Follow it with the server's wait_for_<noun>_job or get_<noun>_job.")
    status: str


# --- the shared base ---------------------------------------------------------------------------------------


class ServerClient:
    """What every typed client shares: a pinned connection, one typed call, and the connect helpers."""

    server: ClassVar[str]

    def __init__(self, client: InsightClient) -> None:
        self.client = client

    @classmethod
    def pins(cls) -> PinSet:
        """The schemas this class was written against."""
        return load_pins(cls.server)

    @classmethod
    @contextlib.asynccontextmanager
    async def connect_http(
        cls, base_url: str, *, token: str | None = None, timeout: float = 300.0, connect_timeout: float = 10.0,
        headers: dict[str, str] | None = None, retry: RetryPolicy | None = None, pins: PinSet | None = None,
        on_retry: OnRetry | None = None,
    ) -> AsyncIterator[Self]:
        """Connect to this server under `insight-mcp serve` at `base_url` (or its full /<server>/mcp URL)."""
        url = base_url if base_url.rstrip("/").endswith("/mcp") else server_url(base_url, cls.server)
        async with connect_http(url, token=token, timeout=timeout, connect_timeout=connect_timeout, headers=headers,
                                retry=retry, pins=pins or cls.pins(), on_retry=on_retry) as client:
            yield cls(client)

    @classmethod
    @contextlib.asynccontextmanager
    async def connect_stdio(
        cls, *, home: Path | str | None = None, config: Path | str | None = None, env: dict[str, str] | None = None,
        command: str | None = None, timeout: float = 300.0, connect_timeout: float = 60.0,
        retry: RetryPolicy | None = None, pins: PinSet | None = None, on_retry: OnRetry | None = None,
    ) -> AsyncIterator[Self]:
        """Launch `insight-mcp serve --server <this> --transport stdio` and connect to it."""
        async with connect_stdio(cls.server, home=home, config=config, env=env, command=command, timeout=timeout,
                                 connect_timeout=connect_timeout, retry=retry, pins=pins or cls.pins(),
                                 on_retry=on_retry) as client:
            yield cls(client)

    @classmethod
    @contextlib.asynccontextmanager
    async def connect_in_process(
        cls, server: MCPServer, *, timeout: float = 300.0, retry: RetryPolicy | None = None, pins: PinSet | None = None,
    ) -> AsyncIterator[Self]:
        """Connect to a server object built in this process (tests, embedding)."""
        async with connect_in_process(server, timeout=timeout, retry=retry, pins=pins or cls.pins()) as client:
            yield cls(client)

    async def _call(self, tool: str, model: type[M], **arguments: Any) -> M:
        """Call one tool with the arguments the caller set, and read its structured answer into `model`."""
        sent = {k: v for k, v in arguments.items() if v is not None}
        answer = await self.client.call(tool, sent)
        return model.model_validate(answer.structured or {})


class JobServerClient(ServerClient):
    """A server whose long work runs as jobs: start one, then follow it here."""

    job_noun: ClassVar[str]

    async def run_job(self, start_tool: str, arguments: dict[str, Any] | None = None, *,
                      on_progress: OnProgress | None = None, wait_seconds: int = 60,
                      timeout: float | None = None) -> JobRecord:
        """Start a job and follow it to its end: the succeeded record (its `result`), or JobFailed with its error."""
        return await self.client.run_job(start_tool, arguments, noun=self.job_noun, on_progress=on_progress,
                                         wait_seconds=wait_seconds, timeout=timeout)

    async def follow_job(self, job_id: str, *, on_progress: OnProgress | None = None, wait_seconds: int = 60,
                         timeout: float | None = None) -> JobRecord:
        """Follow a job started earlier (by this process or one before a restart) to its end."""
        return await self.client.follow_job(job_id, noun=self.job_noun, on_progress=on_progress,
                                            wait_seconds=wait_seconds, timeout=timeout)


# --- one class per server ----------------------------------------------------------------------------------


class SystemTablesClient(ServerClient):
    """The system-tables server: read-only, capped access to the Databricks system tables."""

    server = "system-tables"

    async def list_tables(self) -> TableList:
        """Which tables exist, with row counts and time ranges: where a question starts."""
        return await self._call("list_tables", TableList)

    async def describe_table(self, table: str) -> TableDescription:
        """A table's columns and what they mean, before writing SQL against it."""
        return await self._call("describe_table", TableDescription, table=table)

    async def run_query(self, sql: str, *, limit: int | None = None) -> QueryAnswer:
        """One guarded read-only SELECT in the Databricks dialect, for what the typed tools do not answer."""
        return await self._call("run_query", QueryAnswer, sql=sql, limit=limit)

    async def audit_events(
        self, *, since: str | None = None, until: str | None = None, principal: str | None = None,
        service: str | None = None, action: str | None = None, status: Literal["success", "failure"] | None = None,
        source_ip: str | None = None, page_size: int | None = None, cursor: str | None = None,
    ) -> AuditEventsPage:
        """Audit events filtered without SQL, newest first, a page at a time."""
        return await self._call("audit_events", AuditEventsPage, since=since, until=until, principal=principal,
                                service=service, action=action, status=status, source_ip=source_ip,
                                page_size=page_size, cursor=cursor)

    async def cluster_inventory(self, *, only_risky: bool | None = None, include_deleted: bool | None = None,
                                min_runtime: str | None = None) -> ClusterInventory:
        """Each cluster's latest state with risky settings flagged."""
        return await self._call("cluster_inventory", ClusterInventory, only_risky=only_risky,
                                include_deleted=include_deleted, min_runtime=min_runtime)

    async def query_history_summary(self, *, since: str | None = None, until: str | None = None,
                                    group_by: Literal["user", "warehouse"] | None = None,
                                    top: int | None = None) -> QueryHistorySummary:
        """Who or which warehouse ran how much SQL, and how it went."""
        return await self._call("query_history_summary", QueryHistorySummary, since=since, until=until,
                                group_by=group_by, top=top)


class SecurityClient(ServerClient):
    """The security server: detections, findings, and principals ranked by risk."""

    server = "security"

    async def list_detections(self, *, category: str | None = None, include_sql: bool | None = None) -> RuleList:
        """The rules run_detections can run, to pick rule ids or categories; with include_sql, their portable SQL."""
        return await self._call("list_detections", RuleList, category=category, include_sql=include_sql)

    async def run_detections(
        self, *, since: str | None = None, until: str | None = None, categories: list[str] | None = None,
        min_severity: Severity | None = None, workspace_id: str | None = None, rule_ids: list[str] | None = None,
        limit: int | None = None,
    ) -> DetectionResult:
        """Findings of the detection rules over a window, most severe first."""
        return await self._call("run_detections", DetectionResult, since=since, until=until, categories=categories,
                                min_severity=min_severity, workspace_id=workspace_id, rule_ids=rule_ids, limit=limit)

    async def summarize_findings(self, *, since: str | None = None, until: str | None = None,
                                 min_severity: Severity | None = None) -> FindingsSummary:
        """A window's findings in a few sentences (LM-written and checked, or templated), with their counts."""
        return await self._call("summarize_findings", FindingsSummary, since=since, until=until,
                                min_severity=min_severity)

    async def get_finding(self, finding_id: str) -> Finding:
        """One finding with its full evidence."""
        return await self._call("get_finding", Finding, finding_id=finding_id)

    async def list_incidents(self, *, since: str | None = None, until: str | None = None,
                             min_severity: Severity | None = None, limit: int | None = None) -> IncidentList:
        """Correlated findings and completed attack sequences, the most severe first: where triage starts."""
        return await self._call("list_incidents", IncidentList, since=since, until=until, min_severity=min_severity,
                                limit=limit)

    async def get_incident(self, incident_id: str) -> Incident:
        """One incident with why it was raised and every finding and event that built it."""
        return await self._call("get_incident", Incident, incident_id=incident_id)

    async def principal_risk(self, principal: str, *, since: str | None = None,
                             until: str | None = None) -> PrincipalRisk:
        """Everything the detections say about one principal, with a score and a timeline."""
        return await self._call("principal_risk", PrincipalRisk, principal=principal, since=since, until=until)

    async def top_risks(self, *, since: str | None = None, until: str | None = None, limit: int | None = None,
                        min_severity: Severity | None = None) -> TopRisks:
        """Principals ranked by risk over a window: the triage list."""
        return await self._call("top_risks", TopRisks, since=since, until=until, limit=limit,
                                min_severity=min_severity)


class NetworkClient(ServerClient):
    """The network server: external IPs, denials, connection patterns, egress, data volume and bottlenecks."""

    server = "network"

    async def external_ips(self, *, since: str | None = None, until: str | None = None, top: int | None = None,
                           include_private: bool | None = None) -> ExternalIPs:
        """Which source IPs reach the workspaces, and what kind of address each is."""
        return await self._call("external_ips", ExternalIPs, since=since, until=until, top=top,
                                include_private=include_private)

    async def ip_access_denials(self, *, since: str | None = None, until: str | None = None,
                                top: int | None = None) -> IPAccessDenials:
        """IP access-list denials by source: probing, or users outside the allowed networks."""
        return await self._call("ip_access_denials", IPAccessDenials, since=since, until=until, top=top)

    async def connection_patterns(self, *, principal: str | None = None, since: str | None = None,
                                  until: str | None = None, top: int | None = None) -> ConnectionPatterns:
        """How principals connect, to judge whether access looks like its usual self."""
        return await self._call("connection_patterns", ConnectionPatterns, principal=principal, since=since,
                                until=until, top=top)

    async def egress_denials(self, *, since: str | None = None, until: str | None = None,
                             top: int | None = None) -> EgressDenials:
        """Destinations serverless egress control denied, risky classes first."""
        return await self._call("egress_denials", EgressDenials, since=since, until=until, top=top)

    async def data_volume_insights(self, *, since: str | None = None, until: str | None = None,
                                   top: int | None = None) -> DataVolumeInsights:
        """Bytes read per user and warehouse, with outliers marked."""
        return await self._call("data_volume_insights", DataVolumeInsights, since=since, until=until, top=top)

    async def bottlenecks(self, *, since: str | None = None, until: str | None = None,
                          warehouse_id: str | None = None, top: int | None = None) -> Bottlenecks:
        """Warehouse-hours with the worst queueing, compilation and spill."""
        return await self._call("bottlenecks", Bottlenecks, since=since, until=until, warehouse_id=warehouse_id,
                                top=top)


class EvaluationClient(JobServerClient):
    """The evaluation server: detections on labels, insight scores, prompt evaluations, datasets and ratings."""

    server = "evaluation"
    job_noun = "evaluation"

    async def evaluate_detections(self, *, labels: str | None = None, since: str | None = None,
                                  until: str | None = None, min_severity: Severity | None = None,
                                  corpus: str | None = None) -> Started:
        """Start scoring the detection rules on labelled incidents, or on a labelled export folder (a job)."""
        return await self._call("evaluate_detections", Started, labels=labels, since=since, until=until,
                                min_severity=min_severity, corpus=corpus)

    async def score_insights(self, *, report: str | None = None, labels: str | None = None,
                             min_severity: Severity | None = None, time_budget_seconds: float | None = None,
                             judges: bool | None = None) -> Started:
        """Start scoring one report's insights per agent and overall (a job)."""
        return await self._call("score_insights", Started, report=report, labels=labels, min_severity=min_severity,
                                time_budget_seconds=time_budget_seconds, judges=judges)

    async def evaluate_agent(self, prompt: str, dataset: str, *, version: str | None = None,
                             workers: int | None = None, scorers: list[ScorerName] | None = None,
                             limit: int | None = None) -> Started:
        """Start running one prompt version over a dataset and scoring it (a job)."""
        return await self._call("evaluate_agent", Started, prompt=prompt, dataset=dataset, version=version,
                                workers=workers, scorers=scorers, limit=limit)

    async def curate_dataset(
        self, *, name: str | None = None, agent: str | None = None, tool: str | None = None,
        prompt: str | None = None, since: str | None = None, until: str | None = None,
        status: Literal["any", "ok", "error"] | None = None, min_rating: int | None = None,
        max_rating: int | None = None, rated: bool | None = None, experiment: str | None = None,
        tags: dict[str, str] | None = None, size: int | None = None, seed: int | None = None,
    ) -> Started:
        """Start sampling served calls' traces into an evaluation dataset (a job)."""
        return await self._call("curate_dataset", Started, name=name, agent=agent, tool=tool, prompt=prompt,
                                since=since, until=until, status=status, min_rating=min_rating,
                                max_rating=max_rating, rated=rated, experiment=experiment, tags=tags, size=size,
                                seed=seed)

    async def get_evaluation_job(self, job_id: str) -> JobRecord:
        """One job's status, progress, and result or error."""
        return await self._call("get_evaluation_job", JobRecord, job_id=job_id)

    async def wait_for_evaluation_job(self, job_id: str, *, timeout_seconds: int | None = None) -> JobRecord:
        """Wait (bounded) for a job to end; `follow_job` loops this to the end."""
        return await self._call("wait_for_evaluation_job", JobRecord, job_id=job_id,
                                timeout_seconds=timeout_seconds)

    async def list_evaluation_jobs(self, *, limit: int | None = None) -> JobList:
        """This caller's jobs, newest first, without their results."""
        return await self._call("list_evaluation_jobs", JobList, limit=limit)

    async def cancel_evaluation_job(self, job_id: str) -> JobRecord:
        """Stop a running job; it keeps how far it got."""
        return await self._call("cancel_evaluation_job", JobRecord, job_id=job_id)

    async def list_evaluations(self, *, limit: int | None = None) -> EvaluationList:
        """Past detection evaluations, newest first."""
        return await self._call("list_evaluations", EvaluationList, limit=limit)

    async def get_evaluation(self, run_id: str) -> StoredEvaluation:
        """One detection evaluation whole (`latest` for the newest)."""
        return await self._call("get_evaluation", StoredEvaluation, run_id=run_id)

    async def rate_answer(self, call_id: str, rating: int, *, comment: str | None = None) -> RatingReceipt:
        """Record a person's 1-5 rating of one served answer (its ToolAnswer.call_id)."""
        return await self._call("rate_answer", RatingReceipt, call_id=call_id, rating=rating, comment=comment)


class OptimizationClient(JobServerClient):
    """The optimization server: optimize a registered prompt as a job, and move its `production` alias."""

    server = "optimization"
    job_noun = "optimization"

    async def optimize_prompt(
        self, prompt: str, *, framework: Framework | None = None, optimizer: OptimizerName | None = None,
        dataset: str | None = None, since: str | None = None, experiment: str | None = None,
        trace_tags: dict[str, str] | None = None, scorers: list[ScorerName] | None = None,
        max_lm_calls: int | None = None, max_minutes: float | None = None, min_traces: int | None = None,
        evaluation_threshold: float | None = None, held_out_fraction: float | None = None,
        significance: Significance | None = None, alpha: float | None = None, promotion: Promotion | None = None,
    ) -> Started:
        """Start improving a prompt, compared with production on held-out cases before any promotion (a job)."""
        return await self._call("optimize_prompt", Started, prompt=prompt, framework=framework, optimizer=optimizer,
                                dataset=dataset, since=since, experiment=experiment, trace_tags=trace_tags,
                                scorers=scorers, max_lm_calls=max_lm_calls,
                                max_minutes=max_minutes, min_traces=min_traces,
                                evaluation_threshold=evaluation_threshold, held_out_fraction=held_out_fraction,
                                significance=significance, alpha=alpha, promotion=promotion)

    async def run_optimization(self, prompt: str, *, on_progress: OnProgress | None = None,
                               timeout: float | None = None, **arguments: Any) -> OptimizationResult:
        """Optimize a prompt and follow the job to its end: what it compared and whether it promoted."""
        job = await self.run_job("optimize_prompt", {"prompt": prompt, **arguments}, on_progress=on_progress,
                                 timeout=timeout)
        return OptimizationResult.model_validate(job.result)

    async def get_optimization_job(self, job_id: str) -> JobRecord:
        """One job's status, progress, and result or error."""
        return await self._call("get_optimization_job", JobRecord, job_id=job_id)

    async def wait_for_optimization_job(self, job_id: str, *, timeout_seconds: int | None = None) -> JobRecord:
        """Wait (bounded) for a job to end; `follow_job` loops this to the end."""
        return await self._call("wait_for_optimization_job", JobRecord, job_id=job_id,
                                timeout_seconds=timeout_seconds)

    async def list_optimization_jobs(self, *, limit: int | None = None) -> JobList:
        """This caller's jobs, newest first, without their results."""
        return await self._call("list_optimization_jobs", JobList, limit=limit)

    async def cancel_optimization_job(self, job_id: str) -> JobRecord:
        """Stop a running job; it keeps how far it got."""
        return await self._call("cancel_optimization_job", JobRecord, job_id=job_id)

    async def list_prompt_versions(self, prompt: str, *, limit: int | None = None) -> PromptVersions:
        """A prompt's versions, newest first, and where `production` and `candidate` point."""
        return await self._call("list_prompt_versions", PromptVersions, prompt=prompt, limit=limit)

    async def promote_prompt(self, prompt: str, version: str) -> AliasMove:
        """Point `production` at a version, e.g. a candidate left waiting for approval."""
        return await self._call("promote_prompt", AliasMove, prompt=prompt, version=version)

    async def rollback_prompt(self, prompt: str, *, to_version: str | None = None) -> AliasMove:
        """Point `production` back at the version the current one replaced (or at `to_version`)."""
        return await self._call("rollback_prompt", AliasMove, prompt=prompt, to_version=to_version)

    async def trigger_optimization(self, agent: str, *, reason: str | None = None) -> TripOutcome:
        """Start a monitored agent's optimization now, under the supervisor's cooldown and single-flight rules."""
        return await self._call("trigger_optimization", TripOutcome, agent=agent, reason=reason)


CLIENTS: dict[str, type[ServerClient]] = {
    cls.server: cls
    for cls in (SystemTablesClient, SecurityClient, NetworkClient, EvaluationClient, OptimizationClient)
}
"""Every typed client by the server name it is mounted under (`insight-mcp serve`'s /<name>/mcp)."""

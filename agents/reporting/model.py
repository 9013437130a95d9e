"""The report every format is rendered from: one versioned model, published as a JSON Schema in docs/."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from insight_mcp.agents.core.timestamps import UtcDateTime
from insight_mcp.agents.security.incidents import Incident
from insight_mcp.agents.security.model import Finding

REPORT_SCHEMA_VERSION = "1.1.0"
REPORT_FORMATS = ("md", "json", "html")


class TableCoverage(BaseModel):
    """What the backend holds for one table: the ingestion check."""

    table: str
    rows: int | None = Field(description="Rows in the table, or null when it could not be read.")
    first_event: UtcDateTime | None = None
    last_event: UtcDateTime | None = None
    error: str | None = Field(None, description="Why the table could not be read.")


class AgentOutcome(BaseModel):
    """How one analysis agent fared: a failure here does not stop the others."""

    agent: str
    status: Literal["ok", "failed"]
    seconds: float
    findings: int = 0
    error: str | None = None


class SeverityCounts(BaseModel):
    """Findings per severity and per category."""

    by_severity: dict[str, int]
    by_category: dict[str, int]
    total: int


class PrincipalScore(BaseModel):
    """One principal's risk over the window."""

    principal: str
    risk_score: float = Field(description="0-100, severity-weighted and saturating.")
    max_severity: str
    findings: int
    categories: list[str]
    workspaces: list[str]


class WorkspaceScore(BaseModel):
    """One workspace's risk over the window."""

    workspace_id: str | None
    risk_score: float
    max_severity: str
    findings: int
    principals: int


class TimelinePoint(BaseModel):
    """Findings that started in one hour or day, per severity: the timeline chart's data."""

    start: UtcDateTime
    by_severity: dict[str, int]


class NetworkOverview(BaseModel):
    """The network agent's view of the window, beyond its findings."""

    external_ips: int
    anonymizer_ips: list[str]
    ip_access_denials: int
    denied_ips: list[str]
    egress_denials: int
    risky_destinations: list[str] = Field(description="Denied destinations classified as paste, tunnel, file "
                                                      "sharing or mining.")


class Narrative(BaseModel):
    """The words of the report: LM-written when an LM is configured and its output validates, else templated."""

    executive_summary: str
    network: str
    explanations: dict[str, str] = Field(default_factory=dict, description="Finding id -> why it matters.")
    source: Literal["lm", "template", "mixed"] = "template"
    errors: list[str] = Field(default_factory=list, description="LM failures or rejected outputs, replaced by "
                                                                "the templated text.")
    prompts: dict[str, str] = Field(default_factory=dict, description="Prompt name -> the registry version used.")


class Report(BaseModel):
    """One analysis of one window: what was checked, what was found, and what it means."""

    schema_version: Literal["1.1.0"] = REPORT_SCHEMA_VERSION
    report_id: str = Field(description="Unique per analysis; also the MLflow run's name.")
    generated_at: UtcDateTime
    since: UtcDateTime
    until: UtcDateTime
    backend: str
    rule_set_version: str = Field(description="Hash of the rule and rollup files that ran.")
    coverage: list[TableCoverage]
    agents: list[AgentOutcome]
    counts: SeverityCounts
    incidents: list[Incident] = Field(default_factory=list, description="Correlated findings and completed "
                                                                         "sequences, most severe first: what "
                                                                         "deserves a person (schema 1.1.0).")
    findings: list[Finding] = Field(description="De-duplicated, most severe first.")
    principals: list[PrincipalScore] = Field(description="Riskiest first.")
    workspaces: list[WorkspaceScore] = Field(description="Riskiest first.")
    timeline: list[TimelinePoint]
    network: NetworkOverview | None = Field(None, description="Null when the network agent failed.")
    narrative: Narrative

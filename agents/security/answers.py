"""The security server's answer models: here, light to import, so the server and the typed client share them."""

from pydantic import BaseModel, Field

from insight_mcp.agents.core.timestamps import UtcDateTime
from insight_mcp.agents.security.engine import RuleStat
from insight_mcp.agents.security.model import Finding


class RuleInfo(BaseModel):
    id: str
    title: str
    category: str
    severity: str
    kind: str = Field("rule", description="rule, or sequence: an ordered chain of steps, an incident when it "
                                          "completes (its steps are in the description).")
    fidelity: str = "medium"
    mitre: list[str]
    tactics: list[str] = Field(default_factory=list, description="MITRE ATT&CK tactics of the rule's techniques.")
    threat_model: str
    tables: list[str]
    parameters: dict[str, object]
    description: str
    false_positives: str = Field("", description="When it fires on benign activity, and what to check.")
    sql: str | None = Field(
        None, description="The rule's portable Databricks SQL: parameters bound, shared rollups inlined as CTEs, "
                          "only :since, :until and :baseline_start left to set. Only with include_sql.",
    )


class RuleList(BaseModel):
    rules: list[RuleInfo]


class DetectionResult(BaseModel):
    since: UtcDateTime
    until: UtcDateTime
    findings: list[Finding]
    total: int
    truncated: bool
    suppressed: int
    rules_run: int
    failed_rules: list[RuleStat]
    skipped_rules: dict[str, str] = Field(default_factory=dict, description="Rules not run, and why: a table this "
                                                                            "workspace lacks or may not be read.")

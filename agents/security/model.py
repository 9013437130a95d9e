"""What a detection rule and a finding are: data with a fixed vocabulary, validated at the boundary."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from insight_mcp.agents.core.timestamps import UtcDateTime

Category = Literal[
    "brute_force", "token_abuse", "ip_access_denied", "privilege_escalation", "defense_evasion",
    "data_exfiltration", "secrets_access", "supply_chain", "suspicious_network", "resource_abuse",
    "destructive_activity", "unauthorized_data_access", "session_hijacking", "posture",
]
CATEGORIES: tuple[str, ...] = Category.__args__  # type: ignore[attr-defined]

Severity = Literal["info", "low", "medium", "high", "critical"]
SEVERITIES: tuple[str, ...] = Severity.__args__  # type: ignore[attr-defined]
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}

ThreatModel = Literal[
    "account_takeover", "exfiltration", "insider", "supply_chain", "platform_compromise", "resource_abuse", "posture",
]

ParamValue = int | float | str | bool | list[str] | list[int]


class RuleParameter(BaseModel):
    """A named threshold, window or list a rule's query reads as :name.

    A list can come from a shipped, updatable file beside the rule (`from_file`), expanded as plain lines, as IPv4
    addresses and /24 prefixes (`a.b.c`) for portable matching, as `prefix=provider` pairs (a line's optional second
    word names its provider), or as one RE2 regex matching domain suffixes.
    """

    model_config = ConfigDict(extra="forbid")

    default: ParamValue | None = None
    description: str = ""
    from_file: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")
    expand: Literal["lines", "ipv4_prefix24", "ipv4_prefix24_provider", "domain_suffix_regex"] = "lines"


class Rollup(BaseModel):
    """A summary of raw events built once per run; rules that read it skip their own scan of the history."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9_]{2,80}$", description="The bare table name rules read it by.")
    description: str = Field(min_length=10)
    tables: list[str] = Field(min_length=1)
    query: str = Field(min_length=20, description="Databricks SQL; only :since, :until and :baseline_start.")


class Detection(BaseModel):
    """What every detection file states about itself, whatever finds it: a query (a rule) or steps (a sequence).

    Field names follow Databricks' own detection-rule object (severity, mitre, fidelity, dedup window) so rules can be
    exported there later.
    """

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9_]{2,80}$")
    title: str = Field(min_length=5, max_length=200)
    description: str = Field(min_length=10)
    category: Category
    severity: Severity
    fidelity: Literal["low", "medium", "high"] = "medium"
    mitre: list[str] = Field(default_factory=list)
    tactics: list[str] = Field(default_factory=list, description="ATT&CK tactics (ids such as TA0006 or names such "
                                                                 "as 'Credential Access'); the techniques' own tactics "
                                                                 "are added to these.")
    threat_model: ThreatModel
    baseline_days: int = Field(0, ge=0, le=365, description="History before the window the query reads.")
    dedup_window_hours: int = Field(24, ge=1, le=24 * 90)
    false_positives: str = ""
    recommendation: str = Field(min_length=5)
    risk: float | None = Field(None, ge=0, le=1000, description="Risk each finding adds to the entities it names; "
                                                                "default from severity and fidelity.")

    @field_validator("mitre")
    @classmethod
    def _mitre_ids(cls, value: list[str]) -> list[str]:
        import re

        for item in value:
            if not re.fullmatch(r"T\d{4}(\.\d{3})?", item):
                raise ValueError(f"{item!r} is not a MITRE ATT&CK technique id like T1110 or T1110.003")
        return value

    @field_validator("tactics")
    @classmethod
    def _tactic_ids(cls, value: list[str]) -> list[str]:
        from insight_mcp.agents.security.mitre import tactic_id

        return [tactic_id(item) for item in value]

    @model_validator(mode="after")
    def _with_technique_tactics(self) -> Detection:
        from insight_mcp.agents.security.mitre import TACTICS, tactics_of

        found = set(self.tactics) | set(tactics_of(self.mitre))
        self.tactics = [t for t in TACTICS if t in found]  # kill-chain order
        return self


class Rule(Detection):
    """One detection: its metadata plus one query in the Databricks SQL dialect that returns finding rows."""

    tables: list[str] = Field(min_length=1)
    parameters: dict[str, RuleParameter] = Field(default_factory=dict)
    kind: Literal["rule", "sequence"] = Field("rule", description="sequence: compiled from a file of steps.")
    query: str = Field(min_length=20)

    @field_validator("parameters")
    @classmethod
    def _param_names(cls, value: dict[str, RuleParameter]) -> dict[str, RuleParameter]:
        import re

        for name, param in value.items():
            if param.default is None and param.from_file is None:
                raise ValueError(f"parameter {name!r} needs a default or from_file")
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or name in {"since", "until", "baseline_start"}:
                raise ValueError(f"parameter name {name!r} must be snake_case and not since/until/baseline_start")
        return value


class Evidence(BaseModel):
    """A bounded sample of the events behind a finding."""

    event_ids: list[str] = Field(default_factory=list)
    fields: dict[str, Any] = Field(default_factory=dict, description="The values that made the rule fire.")


class Finding(BaseModel):
    """One detection result: who or what, when, how much, and what to do."""

    id: str = Field(description="Stable hash of rule, principal, workspace and window: re-runs de-duplicate.")
    rule_id: str
    category: Category
    severity: Severity
    title: str
    principal: str = Field(description="User email, service principal id, IP address or destination domain.")
    workspace_id: str | None
    first_seen: UtcDateTime
    last_seen: UtcDateTime
    event_count: int
    occurrences: int = Field(1, ge=1, description="Detections merged into this one: the same rule, principal and "
                                                  "evidence recurring within the rule's dedup window.")
    evidence: Evidence
    mitre: list[str]
    tactics: list[str] = Field(default_factory=list, description="MITRE ATT&CK tactics: why an attacker would do it.")
    recommendation: str
    threat_model: str


def finding_id(
    rule_id: str, principal: str, workspace_id: str | None, first_seen: dt.datetime, window_hours: int
) -> str:
    """Same rule, principal, workspace and dedup window: same id, so re-runs and overlaps collapse."""
    bucket = int(first_seen.timestamp() // (window_hours * 3600))
    raw = f"{rule_id}|{principal.lower()}|{workspace_id or ''}|{bucket}"
    return "f-" + hashlib.sha256(raw.encode()).hexdigest()[:20]

"""`agent_config.yaml`: the seed's on-demand optimization block, read exactly as the seed prints it, plus options.

The seed's keys are all that is required. What it does not name has a default a user can override in the same file:
the monitored agents (default: our own LM-written parts), the cooldown, the significance test, promotion mode.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from insight_mcp.agents.core.yaml_errors import yaml_problem
from insight_mcp.agents.evaluation.agent_eval import KINDS, ScorerName

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """The configuration file cannot be used; the message names the file and the key."""


class SupervisoryAgent(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key must not fall back to a default in silence

    check_interval: float = Field(300, gt=0, description="Seconds between checks.")
    min_traces_for_trigger: int = Field(50, ge=1, description="Volume a window needs before it can trip.")
    window_seconds: float = Field(3600, gt=0, description="The rolling window each check judges.")
    overlap_seconds: float = Field(120, ge=0, description="How far back each read reaches, for traces that arrive "
                                                          "after the check that covered their start time.")
    cooldown_seconds: float = Field(3600, ge=0, description="After a trip, the same agent does not trip again for "
                                                            "this long.")
    significance: Literal["wilson", "none"] = Field(
        "wilson", description="wilson: the error rate's 95% Wilson lower bound must pass the threshold; none: the "
                              "observed rate is enough.")
    confidence_z: float = Field(1.96, gt=0, description="z of the Wilson bound (1.96 is 95%).")


class Triggers(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key must not fall back to a default in silence

    error_rate_threshold: float = Field(0.05, ge=0, le=1)
    rating_threshold: float = Field(3.0, ge=1, le=5, description="Trips when the average rating is below this.")
    response_time_threshold: float = Field(5.0, gt=0, description="Seconds; trips when the median latency is above.")


class McpServer(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key must not fall back to a default in silence

    endpoint: str = "http://localhost:9000"

    @field_validator("endpoint")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL of `insight-mcp serve` or its /optimization/mcp")
        return value.rstrip("/")

    @property
    def optimization_url(self) -> str:
        """The base URL of `serve` or the optimization server's own URL: both work."""
        if self.endpoint.endswith("/mcp"):
            return self.endpoint
        return f"{self.endpoint}/optimization/mcp"


class MonitoredAgent(BaseModel):
    """Anything that logs traces to MLflow and reads its instructions from a registered prompt."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key must not fall back to a default in silence

    name: str
    experiment: str = Field("insight-narrative", description="MLflow experiment holding its traces.")
    tags: dict[str, str] = Field(default_factory=dict, description="Tag filter selecting its traces.")
    prompt: str = Field(description="The registered prompt the optimizer improves.")
    scorer: ScorerName | None = Field(
        None, description="The scorer the optimizer judges answers with. Default: the prompt's own (validity and "
                          "completeness for ours; validity and expected_response, against well-rated answers, for "
                          "yours).")

    def request_fields(self) -> dict[str, Any]:
        """What optimize_prompt needs to learn from this agent: its scorer, and a user agent's experiment and tags."""
        fields: dict[str, Any] = {"scorers": [self.scorer]} if self.scorer else {}
        if self.prompt not in KINDS:  # ours are found by their prompt tag in our experiments
            fields |= {"experiment": self.experiment, "trace_tags": dict(self.tags)}
        return fields

    @model_validator(mode="after")
    def _own_agent_names_its_experiment(self) -> MonitoredAgent:
        if self.prompt not in KINDS and "experiment" not in self.model_fields_set:
            raise ValueError(f"{self.name}: {self.prompt} is your own agent's prompt: name the MLflow `experiment` "
                             "its traces are logged to (and `tags` that select them)")
        return self

    @field_validator("tags")
    @classmethod
    def _plain(cls, value: dict[str, str]) -> dict[str, str]:
        for key, tag in value.items():
            if "'" in tag or "`" in key or not key.strip():
                raise ValueError(f"tag filter {key!r}: keys may not contain backticks, values not quotes")
        return value


def default_agents() -> list[MonitoredAgent]:
    """Our own LM-written parts: each narrative prompt, judged by its traces in insight-narrative."""
    return [
        MonitoredAgent(name=prompt.removeprefix("insight."), tags={"insight.prompt": prompt}, prompt=prompt)
        for prompt in ("insight.security_summary", "insight.finding_explanation", "insight.network_narrative")
    ]


class OnDemandOptimization(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key must not fall back to a default in silence

    enabled: bool = True
    supervisory_agent: SupervisoryAgent = Field(default_factory=SupervisoryAgent)
    triggers: Triggers = Field(default_factory=Triggers)
    mcp_server: McpServer = Field(default_factory=McpServer)
    agents: list[MonitoredAgent] = Field(default_factory=default_agents)
    promotion: Literal["auto", "approve"] = Field(
        "auto", description="auto: a winning candidate becomes production; approve: it waits under `candidate` "
                            "until a person promotes it.")
    framework: str = "dspy"
    optimizer: str = "bootstrap_few_shot"
    evaluation_threshold: float = Field(0.7, ge=0, le=1, description="The held-out score a candidate must reach.")
    max_lm_calls: int = Field(300, ge=4, le=100_000, description="LM budget of each optimization.")
    max_minutes: float = Field(15.0, gt=0, le=1440, description="Time budget of each optimization's search.")

    def agent(self, name: str) -> MonitoredAgent:
        """The monitored agent by its name or its prompt's name; a ValueError lists the known ones."""
        for agent in self.agents:
            if name in (agent.name, agent.prompt):
                return agent
        known = ", ".join(a.name for a in self.agents) or "none"
        raise ValueError(f"no monitored agent is named {name[:100]!r}; the monitored agents are: {known}")

    def optimization_arguments(self, agent: MonitoredAgent, since_ms: int | None) -> dict[str, Any]:
        """The optimize_prompt arguments of one intervention: learn from the agent's traces over the window judged."""
        since = (dt.datetime.fromtimestamp(since_ms / 1000, dt.UTC).replace(tzinfo=None).isoformat()
                 if since_ms else None)
        return {"prompt": agent.prompt, "framework": self.framework, "optimizer": self.optimizer, "since": since,
                "promotion": self.promotion, "evaluation_threshold": self.evaluation_threshold,
                "max_lm_calls": self.max_lm_calls, "max_minutes": self.max_minutes, **agent.request_fields()}


class AgentConfig(BaseModel):
    ondemand_optimization: OnDemandOptimization = Field(default_factory=OnDemandOptimization)


def read_config(path: Path, model: type[M], key: str, *, required: bool) -> M:
    """A YAML configuration file validated into `model`; every failure a ConfigError naming the file and the key."""
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} cannot be read: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is {yaml_problem(exc)}") from None
    mapping = isinstance(loaded, dict)
    if (not mapping and (required or loaded is not None)) or (required and key not in loaded):
        raise ConfigError(f"{path} must hold a mapping with the key {key}")
    try:
        return model.model_validate(loaded or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {str(e['msg']).removeprefix('Value error, ')}"
                             for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from None


def load_agent_config(path: Path | None) -> AgentConfig:
    """The file's configuration, or the defaults (which are the seed's values) when no file is given."""
    if path is None:
        return AgentConfig()
    return read_config(path, AgentConfig, "ondemand_optimization", required=False)

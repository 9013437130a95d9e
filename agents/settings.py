"""One settings model for the whole suite, read from the environment and an optional YAML file."""

from __future__ import annotations

import difflib
import json
import os
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from insight_mcp.agents.core.yaml_errors import yaml_problem


def comma_list(value: Any) -> Any:
    """Accept `a,b` as well as a JSON array or a YAML list: environment variables carry lists as text."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                raise ValueError("give a JSON array of strings or comma-separated values") from None
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class SettingsError(ValueError):
    """A configuration a person must fix; the message names the setting."""


class QueryLimits(BaseModel):
    """Caps that bound every SQL statement a client can run."""

    row_cap: int = Field(1000, ge=1, le=100_000, description="Most rows any query returns.")
    max_chars: int = Field(200_000, ge=1_000, description="Most characters of cell text in one answer.")
    timeout_seconds: float = Field(30.0, gt=0, le=3600, description="Statement timeout; the query is interrupted.")
    max_generator_rows: int = Field(
        1_000_000, ge=1, le=1_000_000_000,
        description="Most rows one table-valued generator (range, sequence, explode of literals) may produce; "
                    "larger ones, and joins of generators, are refused before they run.",
    )
    max_concurrent_per_client: int = Field(
        2, ge=1, le=64,
        description="Most run_query statements one caller may have running at once; a further call waits up to "
                    "the statement timeout for a slot, then is refused.",
    )


class Suppression(BaseModel):
    """Known-good behaviour that should not raise findings."""

    trusted_cidrs: list[str] = Field(default_factory=list, description="Networks whose activity is trusted.")
    admin_principals: list[str] = Field(
        default_factory=list, description="Admins whose privilege, configuration and init-script work is expected."
    )
    expected_service_principals: dict[str, list[str]] = Field(
        default_factory=dict, description="Service principal id -> rule ids or categories it is expected to trip."
    )
    allowlists: dict[str, list[str]] = Field(
        default_factory=dict, description="Rule id -> principals (glob patterns) never reported by that rule."
    )


class IncidentSettings(BaseModel):
    """When findings' accumulated risk about one entity becomes an incident (agents/security/incidents.py)."""

    threshold: float = Field(100.0, gt=0, description="Risk within the window that raises an incident.")
    window_hours: float = Field(24.0, gt=0, le=24 * 30, description="The rolling window risk accumulates over.")
    workspace_factor: float = Field(4.0, ge=1, description="A workspace needs this many times the threshold.")


class DetectionSettings(BaseModel):
    """Which rules run, with which parameters, and what is suppressed."""

    rules_dir: Path | None = Field(None, description="A folder of your own rule files, added to the built-in ones.")
    disabled_rules: list[str] = Field(default_factory=list)
    parameters: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Rule id -> parameter -> value, overriding the rule's defaults."
    )
    suppression: Suppression = Field(default_factory=Suppression)
    max_evidence: int = Field(10, ge=1, le=100)
    parallelism: int = Field(4, ge=1, le=64, description="How many rules run at once on the backend.")
    rule_timeout_seconds: float = Field(600.0, gt=0, le=7200, description="A rule running longer is stopped.")
    max_rule_rows: int = Field(100_000, ge=100, le=10_000_000,
                               description="Rows one rule may return before its answer counts as cut short.")
    incidents: IncidentSettings = Field(default_factory=IncidentSettings)


class TracingSettings(BaseModel):
    """Where every tool call's MLflow trace goes."""

    enabled: bool = Field(True, description="Trace every tool call to MLflow (written in the background).")
    experiment: str = Field("insight-mcp", description="The MLflow experiment that holds tool-call traces.")
    queue_size: int = Field(100_000, ge=100, description="Calls waiting to be written before any is dropped.")


class ReportSettings(BaseModel):
    """Where `analyze` writes its reports, in which formats, from which templates."""

    out_dir: Path | None = Field(None, description="Report folder; default $INSIGHT_HOME/reports.")
    formats: Annotated[list[Literal["md", "json", "html"]], NoDecode, BeforeValidator(comma_list)] = Field(
        default_factory=lambda: ["md", "json", "html"], description="Comma-separated: md, json, html."
    )
    templates_dir: Path | None = Field(
        None, description="A folder of Jinja2 templates (report.md.j2, report.html.j2) replacing the built-in ones."
    )


class SmtpSettings(BaseModel):
    """An SMTP relay that alert emails go through."""

    host: str | None = Field(None, description="SMTP server; email alerts are off while unset.")
    port: int = Field(25, ge=1, le=65535)
    starttls: bool = Field(False, description="Upgrade the connection with STARTTLS before sending.")
    ssl: bool = Field(False, description="Connect with implicit TLS (usually port 465).")
    username: str | None = None
    password: SecretStr | None = None
    sender: str = "insight-mcp@localhost"
    recipients: Annotated[list[str], NoDecode, BeforeValidator(comma_list)] = Field(
        default_factory=list, description="Comma-separated."
    )
    timeout_seconds: float = Field(10.0, gt=0, le=300)


class WebhookSettings(BaseModel):
    """An HTTP endpoint that receives alerts as JSON."""

    url: str | None = Field(None, description="Webhook URL; webhook alerts are off while unset.")
    format: Literal["slack", "json"] = Field("json", description="slack: Slack-compatible blocks; json: generic.")
    secret: SecretStr | None = Field(None, description="Signs each body with HMAC-SHA256 (X-Insight-Signature).")
    timeout_seconds: float = Field(10.0, gt=0, le=300)


class AlertSettings(BaseModel):
    """Which findings become alerts, where they go, and how undeliverable ones are retried."""

    enabled: bool = True
    min_severity: Literal["info", "low", "medium", "high", "critical"] = "high"
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    max_attempts: int = Field(12, ge=1, le=1000, description="Delivery attempts before an alert is given up.")
    backoff_seconds: float = Field(30.0, gt=0, description="First retry delay; doubles each attempt, capped at 1 h.")
    drain_seconds: float = Field(60.0, gt=0, le=86_400, description="How often `serve` retries the alerts that are "
                                                                    "due in the outbox.")

    @property
    def active(self) -> bool:
        """On, with at least one channel set up."""
        return self.enabled and bool(self.smtp.host or self.webhook.url)


class SparkSettings(BaseModel):
    """Where Spark runs and where it finds the system tables (INSIGHT_SPARK__*; the remote is INSIGHT_SPARK_REMOTE)."""

    master: str = Field("local[2]", description="Local mode's master, when no Spark Connect remote is set.")
    tables_dir: Path | None = Field(None, description="Folder of the tables, one <schema>/<table> folder each; "
                                                      "default $INSIGHT_HOME/spark.")
    table_format: Literal["parquet", "delta"] = Field("parquet", description="How the tables at tables_dir are "
                                                                             "stored (delta needs Delta on the "
                                                                             "cluster).")
    catalog: str | None = Field(None, description="Read the tables from this catalog instead of tables_dir: "
                                                  "`system` on Databricks Connect, or a catalog holding copies.")
    driver_memory: str = Field("1g", description="Local mode's driver memory.")
    connect_timeout_seconds: float = Field(20.0, gt=0, le=600, description="Longest wait to reach a remote.")


class DatabricksSettings(BaseModel):
    """Which SQL warehouse runs the statements, and how patiently (INSIGHT_DATABRICKS__*).

    Credentials are not here: the Databricks SDK's unified auth finds them (DATABRICKS_HOST with DATABRICKS_TOKEN, a
    service principal's DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET as Databricks Apps inject them, or a
    profile of ~/.databrickscfg), so no secret passes through these settings.
    """

    warehouse_id: str | None = Field(None, description="The SQL warehouse's id (else DATABRICKS_WAREHOUSE_ID).")
    host: str | None = Field(None, description="The workspace URL, when DATABRICKS_HOST or the profile does not "
                                               "give it.")
    profile: str | None = Field(None, description="A profile of ~/.databrickscfg (else DATABRICKS_CONFIG_PROFILE).")
    catalog: str = Field("system", description="The catalog holding the system tables: `system`, or a catalog of "
                                               "copies with the same schemas and tables.")
    wait_timeout_seconds: int = Field(10, ge=0, le=50, description="How long a submit waits for the result before "
                                                                   "polling (0, or 5 to 50, as the API allows).")
    retry_timeout_seconds: float = Field(30.0, gt=0, le=3600, description="How long rate limits and brief outages "
                                                                           "are retried, with backoff.")
    connect_timeout_seconds: float = Field(5.0, gt=0, le=600, description="How long a workspace never reached yet is "
                                                                          "retried before its host is called "
                                                                          "unreachable.")
    inline_max_rows: int = Field(10_000, ge=1, description="Answers capped at up to this many rows come inline as "
                                                           "JSON; larger ones as Arrow through external links.")

    @field_validator("warehouse_id", "host", "profile", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


class Settings(BaseSettings):
    """Everything the suite reads from its environment: paths, backend, limits, serving and the LM."""

    model_config = SettingsConfigDict(
        env_prefix="INSIGHT_",
        env_nested_delimiter="__",
        extra="ignore",
        validate_default=True,
    )

    home: Path = Field(default_factory=lambda: Path("~/.insight-mcp"), description="Where every file is written.")
    backend: Literal["duckdb", "spark", "databricks"] = "duckdb"
    spark: SparkSettings = Field(default_factory=SparkSettings)
    databricks: DatabricksSettings = Field(default_factory=DatabricksSettings)
    spark_remote: SecretStr | None = Field(
        None, description="Spark Connect URL, sc://host:port (INSIGHT_SPARK_REMOTE), for a cluster or Databricks "
                          "Connect; local mode when unset. Kept secret: the URL may carry a token.")
    workspace_file: Path | None = Field(None, description="DuckDB workspace; default $INSIGHT_HOME/workspace.duckdb.")
    query: QueryLimits = Field(default_factory=QueryLimits)
    detections: DetectionSettings = Field(default_factory=DetectionSettings)

    host: str = "127.0.0.1"
    port: int = Field(9000, ge=1, le=65535)
    api_token: SecretStr | None = Field(None, description="Bearer token required by `serve` when set.")
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host names clients may address the HTTP server by, beyond loopback: comma-separated "
                    "patterns such as insight.corp.example:* or *.example.com.",
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Extra browser Origins allowed over HTTP, e.g. https://*.example.com."
    )

    mlflow_tracking_uri: str | None = Field(
        None,
        validation_alias=AliasChoices("INSIGHT_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI", "mlflow_tracking_uri"),
        description="MLflow tracking store: a local database by default, a `mlflow server` URL, or `databricks`.",
    )
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    reports: ReportSettings = Field(default_factory=ReportSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    lm_model: str | None = Field(
        None,
        validation_alias=AliasChoices("INSIGHT_LM", "INSIGHT_LM_MODEL", "lm_model"),
        description="LiteLLM model string (INSIGHT_LM), e.g. openai/gpt-4o-mini; LM-written text is off while unset.",
    )
    lm_api_base: str | None = Field(None, description="Base URL of the LM's API (INSIGHT_LM_API_BASE).")
    lm_api_key: SecretStr | None = Field(None, description="The LM's API key (INSIGHT_LM_API_KEY); never logged.")
    lm_timeout_seconds: float = Field(30.0, gt=0, le=600, description="Longest wait for one LM call.")
    prompt_cache_seconds: float = Field(
        5.0, ge=0, le=3600, description="How long a loaded @production prompt is reused before the alias is re-read."
    )

    agent_config: Path | None = Field(
        None, description="The supervisor's agent_config.yaml (the seed's format), read by `supervise`, "
                          "trigger_optimization and the status page; default $INSIGHT_HOME/agent_config.yaml if it "
                          "exists, else the seed's values.")
    optimization_config: Path | None = Field(
        None, description="optimization_config.yaml for scheduled optimization; default "
                          "$INSIGHT_HOME/optimization_config.yaml if it exists, else the seed's values.")
    mlflow_ui_url: str = Field("http://127.0.0.1:5000", description="Where the MLflow UI is served, for the links "
                                                                     "of the status page and reports.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    read_only: bool = Field(False, description="Leave every write tool out of every server (INSIGHT_READ_ONLY).")

    _comma_lists = field_validator("allowed_hosts", "allowed_origins", mode="before")(comma_list)

    @field_validator("home", "workspace_file", "agent_config", "optimization_config", mode="after")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    @field_validator("api_token", "lm_api_key", "spark_remote", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @property
    def workspace_path(self) -> Path:
        """The embedded workspace file."""
        return self.workspace_file or self.home / "workspace.duckdb"

    @property
    def spark_tables_dir(self) -> Path:
        """Where local Spark keeps the system tables."""
        return self.spark.tables_dir or self.home / "spark"

    @property
    def state_path(self) -> Path:
        """The embedded store of state that survives restarts: jobs, and next the alert outbox."""
        return self.home / "state.db"

    @property
    def mlflow_artifacts(self) -> Path:
        """Where every experiment keeps its artifacts: never the working directory."""
        return self.home / "mlflow-artifacts"

    @property
    def reports_dir(self) -> Path:
        """Where `analyze` writes reports unless told otherwise."""
        return self.reports.out_dir or self.home / "reports"

    def _home_file(self, explicit: Path | None, name: str) -> Path | None:
        """The file a setting names, else `name` in INSIGHT_HOME if it exists, else None (the seed's values)."""
        if explicit is not None:
            return explicit
        found = self.home / name
        return found if found.is_file() else None

    @property
    def agent_config_path(self) -> Path | None:
        """The supervisor's configuration file, if there is one."""
        return self._home_file(self.agent_config, "agent_config.yaml")

    @property
    def optimization_config_path(self) -> Path | None:
        """The scheduled optimization's configuration file, if there is one."""
        return self._home_file(self.optimization_config, "optimization_config.yaml")

    @property
    def tracking_uri(self) -> str:
        """MLflow tracking URI, local SQLite under home unless configured."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings)


def unknown_settings(model: type[BaseModel], values: dict[str, Any], where: str = "") -> list[str]:
    """The keys of a settings file that no setting reads, dotted, each with the likeliest intended name."""
    accepted: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        alias = info.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias] if isinstance(alias, str) else []
        accepted.update({key: info for key in (name, *choices) if isinstance(key, str)})
    out: list[str] = []
    for key, value in values.items():
        info = accepted.get(str(key))
        if info is None:
            near = difflib.get_close_matches(str(key), list(accepted), n=1)
            out.append(f"{where}{key}" + (f" (did you mean {where}{near[0]}?)" if near else ""))
            continue
        nested = _settings_model(info.annotation)
        if nested is not None and isinstance(value, dict):
            out += unknown_settings(nested, value, f"{where}{key}.")
    return out


def _settings_model(annotation: Any) -> type[BaseModel] | None:
    """The section's model when a field is one (alone or optional); a mapping of free keys is not."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build settings from YAML (INSIGHT_CONFIG or the argument), then env, then explicit overrides."""
    path = config_file or os.environ.get("INSIGHT_CONFIG")
    file_values: dict[str, Any] = {}
    if path:
        path = Path(path).expanduser()
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise SettingsError(f"INSIGHT_CONFIG points at {path}, which does not exist") from exc
        except yaml.YAMLError as exc:
            raise SettingsError(f"{path} is {yaml_problem(exc)}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise SettingsError(f"{path} must hold a mapping of setting names to values")
        file_values = loaded or {}
        unknown = unknown_settings(Settings, file_values)
        if unknown:  # a typo would otherwise leave the setting at its default without a word
            raise SettingsError(f"{path}: no such setting: {'; '.join(unknown[:5])}; docs/settings.md lists them")
    try:
        env_only = Settings()  # env and defaults
        merged = {**file_values, **env_only.model_dump(exclude_unset=True), **overrides}
        return Settings.model_validate(merged) if merged else env_only
    except ValidationError as exc:
        problems = "; ".join(
            f"INSIGHT_{'__'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from exc

"""Scheduled optimization, the seed's Workflows strategy: on a cron schedule, each monitored agent's prompt learns
from the traces since its last run, and changes only when the candidate really wins.

The configuration is the seed's `scheduled_optimization` block, read exactly as the seed prints it (comments and
quotes included); every other key has a default. A run goes through the seed's six steps for each monitored agent:

1. **Fetch** the traces of the agent's prompt since its last successful scheduled run. The first run, or a run
   whose state was lost (ephemeral compute), reads one period of the schedule back (`lookback_hours` overrides).
2. **Filter**: with fewer traces than `min_traces` nothing is done, the run says why, and the agent's last run
   stays where it was, so the traces keep counting toward the next run. Otherwise the service sorts them into
   demonstrations, negatives and plain cases.
3-6. **Optimize, evaluate, update the registry if better, log**: `service.run_optimization`, champion against
   challenger, promoting only a significant win that reaches `evaluation_threshold`, logged as an MLflow run in
   `insight-optimization` (tagged `insight.trigger=scheduled`).

An agent's last run then becomes the moment its fetch started. A failure (LM or MLflow down) is that agent's
outcome, never a crash, and leaves its last run as it was.

The schedule is a 5-field cron expression in UTC, read by croniter: `*`, numbers, names (JAN, MON), ranges, lists
and steps, with cron's rule that a day matches either restricted day field. `Cron.quartz()` converts it for
Databricks Jobs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import itertools
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from insight_mcp.agents.core.state import StateStore
from insight_mcp.agents.core.timestamps import UtcDateTime
from insight_mcp.agents.evaluation.agent_eval import ScorerName
from insight_mcp.agents.optimization.model import (
    OPTIMIZERS,
    Framework,
    OptimizationError,
    OptimizationResult,
    OptimizerName,
    Promotion,
)
from insight_mcp.agents.settings import Settings
from insight_mcp.agents.supervision.config import ConfigError, MonitoredAgent, load_agent_config, read_config
from insight_mcp.agents.version import VERSION

log = structlog.get_logger("insight_mcp.scheduled_optimization")

SECTION = "scheduled_optimization"
TRIGGER_TAG = "insight.trigger"
MAX_COUNT = 50_000  # traces counted at most per agent and run: far past any min_traces worth setting
_PAGE = 500
_MINUTE = dt.timedelta(minutes=1)


# --- cron ----------------------------------------------------------------------------------------------------------


class CronError(ValueError):
    """A schedule that cannot be read or converted; the message says which field and what is allowed."""


class ScheduledError(OptimizationError):
    """A scheduled run that cannot start; the message says what to change."""


# croniter reads the fields; these name the one that is wrong. Its extensions (L, W, #, ?, H, R, seconds, years)
# are refused: cron and Quartz read them differently, and `Cron.quartz()` could not convert them.
_FIELDS = (("minute", "a number from 0 to 59"), ("hour", "a number from 0 to 23"),
           ("day of month", "a number from 1 to 31"), ("month", "a number from 1 to 12 or a name such as JAN"),
           ("day of week", "a number from 0 to 7 (0 and 7 are Sunday) or a name such as MON"))
_SYNTAX = (re.compile(r"[\d*/,-]+"),) * 3 + (re.compile(r"(?:[\d*/,-]|[A-Za-z]{3})+"),) * 2
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")


def _quartz_numbers(values: frozenset[int], low: int, high: int) -> str:
    """Quartz text for a set: `*`, `start/step` for a progression to the end of the field, else ranges and lists."""
    ordered = sorted(values)
    if ordered == list(range(low, high + 1)):
        return "*"
    steps = {b - a for a, b in itertools.pairwise(ordered)}
    if len(ordered) >= 3 and len(steps) == 1 and (step := steps.pop()) > 1 and ordered[-1] + step > high:
        return f"{ordered[0]}/{step}"
    return ",".join(_runs(ordered, str))


def _runs(ordered: list[int], name: Callable[[int], str]) -> list[str]:
    """Consecutive values of three or more as `a-b` ranges, the rest one by one."""
    parts: list[str] = []
    start = prev = ordered[0]
    for value in [*ordered[1:], None]:
        if value is not None and value == prev + 1:
            prev = value
            continue
        if prev - start >= 2:
            parts.append(f"{name(start)}-{name(prev)}")
        else:
            parts.extend(name(v) for v in range(start, prev + 1))
        if value is not None:
            start = prev = value
    return parts


@dataclasses.dataclass(frozen=True)
class Cron:
    """A 5-field cron expression (UTC) that croniter reads: when it fires, and its Quartz equivalent."""

    expression: str

    @classmethod
    def parse(cls, expression: str) -> Cron:
        """Check an expression (or @daily, @hourly, ...) with croniter; CronError names the field that is wrong."""
        from croniter import CroniterBadDateError, CroniterError, croniter

        text = " ".join(str(expression).split())
        fields = croniter(text).expressions if text.startswith("@") and croniter.is_valid(text) else text.split(" ")
        if len(fields) != 5:
            raise CronError(f"{text[:80]!r} is not a 5-field cron expression (minute hour day-of-month month "
                            "day-of-week), such as \"0 2 * * *\" for 2 AM UTC every day")
        for i, (field, (name, allowed), syntax) in enumerate(zip(fields, _FIELDS, _SYNTAX, strict=True)):
            alone = " ".join(field if j == i else "*" for j in range(5))  # the field among stars: is it the one?
            if not (syntax.fullmatch(field) and croniter.is_valid(alone)):
                raise CronError(f"{name} field: {field!r} is not {allowed}, nor a range (a-b), list (a,b) or step "
                                "(*/n) of such values")
        cron = cls(text)
        try:
            cron.next_after(dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
        except CroniterBadDateError:  # croniter searched 50 years: Feb 30, Apr 31 and the like
            raise CronError(f"{text!r} never fires (no month has that day)") from None
        except CroniterError as exc:
            raise CronError(f"{text!r} is not a valid cron expression: {exc}") from None
        return cron

    def _fires(self, start: dt.datetime) -> Any:
        """croniter from `start`, with Vixie cron's day rule: a day field starting with `*` makes both days match."""
        from croniter import croniter

        return croniter(self.expression, start.astimezone(dt.UTC), implement_cron_bug=True)

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        """The first fire time strictly after `moment` (UTC, to the minute)."""
        return self._fires(moment).get_next(dt.datetime)

    def latest_at_or_before(self, moment: dt.datetime) -> dt.datetime:
        """The last fire time at or before `moment` (UTC, to the minute)."""
        return self._fires(moment.replace(second=0, microsecond=0) + _MINUTE).get_prev(dt.datetime)

    def period(self, moment: dt.datetime) -> dt.timedelta:
        """The gap between the schedule's two latest fire times: what one scheduled run covers."""
        fires = self._fires(moment.replace(second=0, microsecond=0) + _MINUTE)
        latest = fires.get_prev(dt.datetime)
        return latest - fires.get_prev(dt.datetime)

    def quartz(self) -> str:
        """The Quartz expression Databricks Jobs take: seconds first, `?` in one day field, days by name.

        Quartz cannot say "either day field" (cron's rule when both are restricted) nor "both": such a schedule
        raises CronError rather than being converted into one that fires on other days.
        """
        fires = self._fires(dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
        full = [frozenset(range(low, high + 1)) for low, high in _RANGES]
        minutes, hours, days, months, weekdays = (every if values[0] == "*" else frozenset(values)
                                                  for values, every in zip(fires.expanded, full, strict=True))
        # croniter's own test of when a day matches either field, so that Quartz fires when croniter does
        either_day = "*" not in (fires.expanded[2][0], fires.expanded[4][0]) and not any(
            fires.expressions[i].startswith("*") for i in (2, 4))
        all_days, all_weekdays = days == full[2], weekdays == full[4]
        if either_day and (all_days or all_weekdays):  # either field matching every day: every day
            days, weekdays, all_days, all_weekdays = full[2], full[4], True, True
        if not all_days and not all_weekdays:
            raise CronError(f"{self.expression!r} restricts both the day of month and the day of week; Quartz "
                            "(Databricks Jobs) can restrict only one of them: put * in the other, or schedule two "
                            "jobs")
        day_of_month = "?" if all_days and not all_weekdays else _quartz_numbers(days, 1, 31)
        day_of_week = "?" if all_weekdays else ",".join(_runs(sorted(weekdays), _DAY_NAMES.__getitem__))
        return " ".join(("0", _quartz_numbers(minutes, 0, 59), _quartz_numbers(hours, 0, 23), day_of_month,
                         _quartz_numbers(months, 1, 12), day_of_week))


# --- configuration -------------------------------------------------------------------------------------------------


class ScheduledOptimization(BaseModel):
    """The seed's `scheduled_optimization` block; its five keys are all that is required."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key must not silently fall back to a default

    enabled: bool = True
    schedule: str = Field("0 2 * * *", description="5-field cron expression, UTC.")
    min_traces: int = Field(100, ge=1, le=100_000, description="Fewer new traces: the agent is left for next time.")
    framework: Framework = "dspy"
    evaluation_threshold: float = Field(0.7, ge=0, le=1, description="The held-out score a candidate must reach.")
    optimizer: OptimizerName | None = Field(None, description="Default: the framework's first (dspy: gepa).")
    agents: list[MonitoredAgent] | None = Field(
        None, description="Default: the monitored agents of agent_config.yaml (our three narrative prompts).")
    scorers: list[ScorerName] | None = Field(
        None, min_length=1, description="Default: each agent's scorer, else its prompt's own scorers.")
    max_lm_calls: int = Field(300, ge=4, le=100_000, description="LM budget of each agent's optimization.")
    max_minutes: float = Field(15.0, gt=0, le=1440, description="Search time of each agent's optimization.")
    lookback_hours: float | None = Field(
        None, gt=0, le=24 * 366, description="How far back a first run reads; default one period of the schedule.")
    promotion: Promotion = "auto"

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        return Cron.parse(value).expression

    @model_validator(mode="after")
    def _consistent(self) -> ScheduledOptimization:
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS[self.framework]:
            raise ValueError(f"optimizer: the {self.framework} framework offers "
                             f"{', '.join(OPTIMIZERS[self.framework])}, not {self.optimizer}")
        names = [a.name for a in self.agents or []]
        if len(set(names)) != len(names):
            raise ValueError(f"agents: names must be unique ({', '.join(sorted(names))})")
        return self

    @property
    def cron(self) -> Cron:
        return Cron.parse(self.schedule)


class OptimizationConfig(BaseModel):
    """optimization_config.yaml: other sections may share the file."""

    scheduled_optimization: ScheduledOptimization


def load_optimization_config(path: Path | None) -> ScheduledOptimization:
    """The file's `scheduled_optimization` block, or the seed's values when there is no file."""
    if path is None:
        return ScheduledOptimization()
    try:
        return read_config(path, OptimizationConfig, SECTION, required=True).scheduled_optimization
    except ConfigError as exc:
        if "must hold a mapping" in str(exc):
            raise ConfigError(f"{exc} (see docs/optimization.md)") from None
        raise


def monitored_agents(settings: Settings, config: ScheduledOptimization) -> list[MonitoredAgent]:
    """The agents the configuration names, else those of agent_config.yaml (by default our three prompts)."""
    if config.agents is not None:
        return config.agents
    return load_agent_config(settings.agent_config_path).ondemand_optimization.agents


# --- state ---------------------------------------------------------------------------------------------------------


class AgentState(BaseModel):
    """What the state store remembers of one agent's scheduled runs."""

    agent: str
    last_run_at: float | None = Field(None, description="Start of the last successful run: the next reads from it.")
    last_attempt_at: float
    last_outcome: str
    last_reason: str | None = None


def load_state(store: StateStore) -> dict[str, AgentState]:
    """Every agent's remembered runs, by agent name."""
    with store.transaction() as conn:
        rows = conn.execute("SELECT * FROM scheduled_optimization").fetchall()
    return {row["agent"]: AgentState(**dict(row)) for row in rows}


def _record(store: StateStore, agent: str, *, attempted_at: float, outcome: str, reason: str,
            run_at: float | None) -> None:
    """One attempt; the last run moves only when `run_at` is given (an optimization really ran)."""
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO scheduled_optimization (agent, last_run_at, last_attempt_at, last_outcome, last_reason) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (agent) DO UPDATE SET "
            "last_run_at = COALESCE(excluded.last_run_at, scheduled_optimization.last_run_at), "
            "last_attempt_at = excluded.last_attempt_at, last_outcome = excluded.last_outcome, "
            "last_reason = excluded.last_reason",
            (agent, run_at, attempted_at, outcome, reason[:1000]))


@contextlib.contextmanager
def _exclusive(settings: Settings) -> Iterator[None]:
    """One scheduled run per INSIGHT_HOME at a time: a cron job and a manual run must not both optimize."""
    settings.home.mkdir(parents=True, exist_ok=True)
    path = settings.home / "scheduled-optimization.lock"
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ScheduledError(f"another scheduled optimization is running in {settings.home} (it holds {path}); "
                                 "this one does nothing") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- one scheduled run ---------------------------------------------------------------------------------------------


AgentOutcome = Literal["promoted", "not_promoted", "awaiting_approval", "skipped", "too_few_traces", "failed",
                       "cancelled"]


class AgentRun(BaseModel):
    """What the scheduled run did for one monitored agent, and why."""

    agent: str
    prompt: str
    outcome: AgentOutcome = Field(description="The optimization's outcome, or why there was none.")
    reason: str
    since: UtcDateTime | None = Field(None, description="Traces from this time on were read (UTC).")
    traces: int | None = Field(None, description="Traces of the prompt since then.")
    failed_traces: int | None = Field(None, description="Of which failed (trace status ERROR).")
    advanced: bool = Field(False, description="Whether the agent's last run moved: the next run reads from here.")
    optimization: OptimizationResult | None = None


class ScheduledRun(BaseModel):
    """One scheduled optimization over every monitored agent."""

    started_at: UtcDateTime
    finished_at: UtcDateTime
    config: str = Field(description="The configuration file, or `defaults` (the seed's values).")
    schedule: str
    next_run_at: UtcDateTime = Field(description="The schedule's next fire time after this run (UTC).")
    min_traces: int
    framework: str
    evaluation_threshold: float
    agents: list[AgentRun]

    @property
    def failed(self) -> bool:
        """Whether any agent's optimization failed (not merely had nothing to do)."""
        return any(a.outcome == "failed" for a in self.agents)


Say = Callable[[float, str], None]


def _utc(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC)


def default_since(config: ScheduledOptimization, now: float) -> float:
    """Where a first run starts reading: `lookback_hours` back, else one period of the schedule back."""
    if config.lookback_hours is not None:
        return now - config.lookback_hours * 3600
    return now - config.cron.period(_utc(now)).total_seconds()


def count_traces(settings: Settings, agent: MonitoredAgent, since: float) -> tuple[int, int]:
    """(traces, failed traces) of the agent since a time, in the experiments the optimizer curates from."""
    from insight_mcp.agents.core.mlflow_store import open_client
    from insight_mcp.agents.evaluation.curation import TraceFilter, filter_string
    from insight_mcp.agents.narrative.writer import NARRATIVE_EXPERIMENT

    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:  # traces this process wrote must be in the store before they are counted
        with contextlib.suppress(Exception):
            mlflow.flush_trace_async_logging()
    client = open_client(settings.tracking_uri)
    fields = agent.request_fields()
    experiment = fields.get("experiment")
    locations = []
    for name in (experiment,) if experiment else dict.fromkeys((settings.tracing.experiment, NARRATIVE_EXPERIMENT)):
        found = client.get_experiment_by_name(name)
        if found is not None:
            locations.append(str(found.experiment_id))
    if not locations:
        return 0, 0
    query = filter_string(TraceFilter(prompt=None if experiment else agent.prompt, since=_utc(since).isoformat(),
                                      tags=fields.get("trace_tags") or {}))
    total = failed = 0
    token = None
    while total < MAX_COUNT:
        page = client.search_traces(locations=locations, filter_string=query, max_results=_PAGE, page_token=token,
                                    include_spans=False)
        for trace in page:
            total += 1
            failed += str(getattr(trace.info.state, "value", trace.info.state)) == "ERROR"
        token = getattr(page, "token", None)
        if not token:
            break
    return total, failed


def _tag_scheduled(settings: Settings, run_id: str | None) -> None:
    if run_id is None:
        return
    from insight_mcp.agents.core.mlflow_store import failure, open_client

    try:
        open_client(settings.tracking_uri).set_tag(run_id, TRIGGER_TAG, "scheduled")
    except Exception as exc:  # the run itself is logged; only the tag is missing
        log.warning("scheduled optimization run not tagged", run_id=run_id, error=failure(exc))


def run_scheduled(settings: Settings, config: ScheduledOptimization, *, source: str = "defaults",
                  clock: Callable[[], float] = time.time, lm: Any = None,
                  cancelled: threading.Event | None = None, progress: Say | None = None) -> ScheduledRun:
    """The seed's six steps for every monitored agent (see the module docstring); ScheduledError when it cannot start.

    `lm` replaces the configured LM (tests); `cancelled` stops the current optimization before its next write and
    skips the agents after it.
    """
    from insight_mcp.agents.llm import LMNotConfigured, lm_configured

    if lm is None and not lm_configured(settings):
        raise ScheduledError(f"scheduled optimization needs an LM: {LMNotConfigured()}")
    agents = monitored_agents(settings, config)
    cancelled = cancelled or threading.Event()
    say = progress or (lambda fraction, message: None)
    started = clock()
    with _exclusive(settings):
        store = StateStore(settings.state_path)
        state = load_state(store)
        done: list[AgentRun] = []
        for i, agent in enumerate(agents):
            def step(fraction: float, message: str, i: int = i, name: str = agent.name) -> None:
                say((i + fraction) / max(len(agents), 1), f"{name}: {message}")

            last = state.get(agent.name)
            outcome = _one_agent(settings, config, agent, last.last_run_at if last else None, store=store,
                                 clock=clock, lm=lm, cancelled=cancelled, say=step)
            log.info("scheduled optimization", agent=outcome.agent, prompt=outcome.prompt, outcome=outcome.outcome,
                     traces=outcome.traces, reason=outcome.reason)
            done.append(outcome)
    finished = clock()
    return ScheduledRun(
        started_at=_utc(started), finished_at=_utc(finished), config=source, schedule=config.schedule,
        next_run_at=config.cron.next_after(_utc(finished)), min_traces=config.min_traces,
        framework=config.framework, evaluation_threshold=config.evaluation_threshold, agents=done)


def _one_agent(settings: Settings, config: ScheduledOptimization, agent: MonitoredAgent, last_run: float | None, *,
               store: StateStore, clock: Callable[[], float], lm: Any, cancelled: threading.Event,
               say: Say) -> AgentRun:
    """Steps 1-6 for one agent, its outcome recorded in the state store; never raises for the agent's own failure."""
    from insight_mcp.agents.core.mlflow_store import unreachable

    fetched_at = clock()
    since = last_run if last_run is not None else default_since(config, fetched_at)
    run = AgentRun(agent=agent.name, prompt=agent.prompt, outcome="failed", reason="", since=_utc(since))
    if cancelled.is_set():
        run.outcome, run.reason = "cancelled", "stopped before this agent's turn"
        return run
    say(0.0, "counting traces")
    try:
        run.traces, run.failed_traces = count_traces(settings, agent, since)
    except Exception as exc:
        run.reason = unreachable(exc)
    else:
        since_text = f"{_utc(since):%Y-%m-%d %H:%M:%S} UTC"
        if run.traces < config.min_traces:
            run.outcome = "too_few_traces"
            run.reason = (f"only {run.traces} traces of {agent.prompt} since {since_text}, fewer than "
                          f"min_traces={config.min_traces}: nothing was optimized; they count toward the next "
                          "run")
        else:
            _optimize(settings, config, agent, since, run, lm=lm, cancelled=cancelled, say=say)
    run.advanced = run.outcome in ("promoted", "not_promoted", "awaiting_approval")
    _record(store, agent.name, attempted_at=fetched_at, outcome=run.outcome, reason=run.reason,
            run_at=fetched_at if run.advanced else None)
    return run


def _optimize(settings: Settings, config: ScheduledOptimization, agent: MonitoredAgent, since: float, run: AgentRun,
              *, lm: Any, cancelled: threading.Event, say: Say) -> None:
    """Steps 3-6 through the optimization service; the agent's run gets its outcome and reason."""
    from insight_mcp.agents.core.mlflow_store import failure
    from insight_mcp.agents.evaluation.runs import EvaluationError
    from insight_mcp.agents.optimization.model import OptimizationRequest
    from insight_mcp.agents.optimization.service import Cancelled, run_optimization

    try:
        request = OptimizationRequest(
            prompt=agent.prompt, framework=config.framework, optimizer=config.optimizer,
            since=_utc(since).isoformat(), max_lm_calls=config.max_lm_calls,
            max_minutes=config.max_minutes, min_traces=config.min_traces,
            evaluation_threshold=config.evaluation_threshold, promotion=config.promotion,
            **{**agent.request_fields(), **({"scorers": config.scorers} if config.scorers else {})})
        result = run_optimization(settings, request, lm=lm, progress=say, cancelled=cancelled)
    except Cancelled:
        run.outcome, run.reason = "cancelled", "stopped: the optimization was cancelled before its next write"
        return
    except EvaluationError as exc:  # OptimizationError is one: a message written for a person
        run.reason = str(exc)
        return
    except Exception as exc:
        log.debug("scheduled optimization failed", agent=agent.name, exc_info=True)  # the traceback, if asked
        run.reason = f"the optimization failed: {failure(exc)}"
        return
    _tag_scheduled(settings, result.mlflow_run_id)
    run.optimization, run.outcome, run.reason = result, result.outcome, result.reason


# --- the schedule loop ---------------------------------------------------------------------------------------------


def run_schedule(cron: Cron, job: Callable[[float], Any], *, clock: Callable[[], float] = time.time,
                 wait: Callable[[float], bool], max_runs: int | None = None) -> int:
    """Run `job(now)` at each fire time until `wait` reports a stop or `max_runs` ran; returns how many ran.

    `wait(seconds)` sleeps and returns True when the loop must stop (an Event's `wait`). A failed job is logged and
    the loop waits for the next fire time; a job longer than the period skips the fire times it overran.
    """
    from insight_mcp.agents.core.mlflow_store import failure

    runs = 0
    after = clock()
    while max_runs is None or runs < max_runs:
        due = cron.next_after(_utc(after)).timestamp()
        log.info("next scheduled optimization", at=_utc(due).isoformat(), schedule=cron.expression)
        while (remaining := due - clock()) > 0:
            if wait(min(remaining, 60.0)):  # short sleeps: a suspended machine wakes to the right time
                return runs
        if wait(0):  # a stop asked for at the fire time itself wins over the run
            return runs
        try:
            job(clock())
        except Exception as exc:
            log.error("scheduled optimization failed; waiting for the next fire time", error=failure(exc))
        runs += 1
        after = max(clock(), due)
    return runs


# --- Databricks Jobs -----------------------------------------------------------------------------------------------


DEFAULT_JOB_CONFIG = "/Workspace/Shared/insight-mcp/optimization_config.yaml"


def databricks_job(config: ScheduledOptimization, settings: Settings, *, config_path: str = DEFAULT_JOB_CONFIG,
                   name: str = "insight-mcp scheduled optimization",
                   dependency: str = f"insight-mcp=={VERSION}") -> dict[str, Any]:
    """The Jobs API 2.1 definition that runs `insight-mcp optimize --scheduled` on the same schedule, serverless.

    The LM's key is never written here: add INSIGHT_LM_API_KEY to the job from a secret.
    """
    variables = {"MLFLOW_TRACKING_URI": "databricks", "MLFLOW_DISABLE_TELEMETRY": "true",
                 "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    if settings.lm_model:
        variables["INSIGHT_LM"] = settings.lm_model
    if settings.lm_api_base:
        variables["INSIGHT_LM_API_BASE"] = settings.lm_api_base
    return {
        "name": name,
        "description": f"Scheduled prompt optimization ({config.framework}, min_traces={config.min_traces}, "
                       f"evaluation_threshold={config.evaluation_threshold:g}); cron \"{config.schedule}\" UTC.",
        "schedule": {"quartz_cron_expression": config.cron.quartz(), "timezone_id": "UTC",
                     "pause_status": "UNPAUSED" if config.enabled else "PAUSED"},
        "max_concurrent_runs": 1,
        "tags": {"insight-mcp": "scheduled-optimization"},
        "tasks": [{
            "task_key": "scheduled_optimization",
            "description": "Fetch traces since the last run, filter, optimize, evaluate, update the registry if "
                           "better, log to MLflow.",
            "python_wheel_task": {"package_name": "insight-mcp", "entry_point": "insight-mcp",
                                  "parameters": ["optimize", "--scheduled", "--config", config_path]},
            "environment_key": "insight_mcp",
            "environment_variables_key": "insight_mcp",
            "max_retries": 0,
        }],
        # Serverless environment version 2 runs Python 3.11, the version insight-mcp supports.
        "environments": [{"environment_key": "insight_mcp",
                          "spec": {"environment_version": "2", "dependencies": [dependency]}}],
        "environment_variables": [{"environment_variables_key": "insight_mcp", "spec": {"variables": variables}}],
    }

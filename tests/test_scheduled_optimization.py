"""Scheduled optimization (issue 9, section 3) on a real SQLite MLflow store, a real state store and the real command
line: the seed's YAML read as printed, too few traces doing nothing and saying why, one LM-backed run per agent that
promotes only a real win and moves the agent's last run, clean failures, the cron loop with an injected clock, and
the Databricks Job definition checked by databricks-sdk. The LM is the test server (tests/lm_server.py)."""

from __future__ import annotations

import datetime as dt
import inspect
import json
import os
import random
import re
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
from lm_server import LMServer, _summary
from test_evaluate_agent import summary_facts
from test_optimization import GOOD, make_worse_production, production
from typer.testing import CliRunner

from insight_mcp.agents.core.mlflow_store import experiment_id, open_client
from insight_mcp.agents.core.prompts import SECURITY_SUMMARY
from insight_mcp.agents.core.state import StateStore
from insight_mcp.agents.optimization.scheduled import (
    Cron,
    CronError,
    ScheduledOptimization,
    load_optimization_config,
    load_state,
    run_schedule,
    run_scheduled,
)
from insight_mcp.agents.settings import Settings, load_settings
from insight_mcp.clients.cli import app
from insight_mcp.clients.schedule_cli import run_loop, stopping

SEED_YAML = """scheduled_optimization:
  enabled: true
  schedule: "0 2 * * *"  # Daily at 2 AM
  min_traces: 100  # Minimum traces needed
  framework: "dspy"  # or "textgrad"
  evaluation_threshold: 0.7
"""
PROMPTS = ("insight.security_summary", "insight.finding_explanation", "insight.network_narrative")
DUMMY_LM = {"INSIGHT_LM": "openai/test-model", "INSIGHT_LM_API_BASE": "http://127.0.0.1:9/v1"}  # never called
UTC = dt.UTC


# --- helpers -------------------------------------------------------------------------------------------------------


def cli(home: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    """`insight-mcp --home HOME ...` in process, stderr kept apart from stdout."""
    return CliRunner().invoke(app, ["--home", str(home), *args], env=env)


def with_store(home: Path, migrated_store: Path, **updates: Any) -> Settings:
    """Settings on a fresh copy of a migrated MLflow store in `home`; aliases read past the cache."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(migrated_store, home / "mlflow.db")
    return load_settings(home=home).model_copy(update={"prompt_cache_seconds": 0, **updates})


def write_summary_traces(settings: Settings, n: int, *, rate_poorly: bool = False) -> list[str]:
    """n narrative traces of the security summary, every sixth failed; a third of the answers are good ones."""
    from mlflow.entities import AssessmentSource, Feedback
    from mlflow.tracing.client import TracingClient

    from insight_mcp.agents.evaluation.curation import fluent_mlflow
    from insight_mcp.agents.narrative import facts as narrative_facts

    narrative = experiment_id(open_client(settings.tracking_uri), "insight-narrative",
                              settings.mlflow_artifacts / "insight-narrative")
    rng = random.Random(11)
    trace_ids = []
    with fluent_mlflow(settings.tracking_uri) as mlflow:
        for i in range(n):
            data = summary_facts(rng)
            failed = i % 6 == 5
            text = _summary(data, GOOD)[0] if i % 3 == 0 else _summary(data, "")[0]
            span = mlflow.start_span_no_context(
                "narrative.security_summary", span_type="CHAIN", inputs={"data": narrative_facts.untrusted(data)},
                tags={"insight.agent": "narrative", "insight.prompt": SECURITY_SUMMARY}, experiment_id=narrative)
            span.set_outputs({"accepted": False} if failed else {"text": text, "accepted": True})
            span.end(status="ERROR" if failed else "OK")
            trace_ids.append(str(span.trace_id))
        mlflow.flush_trace_async_logging()
    if rate_poorly:
        tracing = TracingClient(tracking_uri=settings.tracking_uri)
        for trace_id in trace_ids[1:12:3]:  # vague answers people rated poorly
            tracing.log_assessment(trace_id, Feedback(name="rating", value=2, rationale="no numbers",
                                                      source=AssessmentSource(source_type="HUMAN", source_id="dana")))
    return trace_ids


def optimization_runs(settings: Settings) -> list[Any]:
    client = open_client(settings.tracking_uri)
    experiment = client.get_experiment_by_name("insight-optimization")
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


def state_of(settings: Settings) -> dict[str, Any]:
    return load_state(StateStore(settings.state_path))


def config_file(tmp_path: Path, text: str, name: str = "optimization_config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


class FakeClock:
    """A clock that moves only when the loop waits: no test ever depends on the wall clock."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start.timestamp()
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += seconds
        return False


# --- the configuration ---------------------------------------------------------------------------------------------


def test_the_seed_file_is_read_exactly_as_printed(tmp_path: Path) -> None:
    config = load_optimization_config(config_file(tmp_path, SEED_YAML))
    assert (config.enabled, config.schedule, config.min_traces, config.framework) == (True, "0 2 * * *", 100, "dspy")
    assert config.evaluation_threshold == 0.7 and config.agents is None and config.lookback_hours is None
    assert config.cron.next_after(dt.datetime(2026, 11, 29, 15, 0, tzinfo=UTC)) == dt.datetime(2026, 11, 30, 2, 0,
                                                                                              tzinfo=UTC)
    assert config == ScheduledOptimization(), "the seed's values are the defaults"
    shared = SEED_YAML + "  optimizer: gepa\n  lookback_hours: 6\nondemand_optimization: {}\n"
    extended = load_optimization_config(config_file(tmp_path, shared))  # other sections may share the file
    assert extended.optimizer == "gepa" and extended.lookback_hours == 6 and extended.min_traces == 100


@pytest.mark.parametrize(("text", "message"), [
    ("scheduled_optimization:\n  schedule: [0 2\n", "is not valid YAML"),
    (SEED_YAML.replace('"0 2 * * *"', '"0 25 * * *"'), "scheduled_optimization.schedule: hour field: '25' is not a "
                                                       "number from 0 to 23"),
    (SEED_YAML.replace('"0 2 * * *"', '"every night"'), "scheduled_optimization.schedule: 'every night' is not a "
                                                        "5-field cron expression"),
    (SEED_YAML.replace('"0 2 * * *"', '"0 0 30 2 *"'), "never fires"),
    (SEED_YAML.replace("min_traces:", "min_trace:"), "scheduled_optimization.min_trace: Extra inputs are not "
                                                     "permitted"),
    (SEED_YAML.replace('"dspy"', '"pytorch"'), "scheduled_optimization.framework"),
    (SEED_YAML + "  framework_optimizer: x\n", "framework_optimizer"),
    (SEED_YAML.replace('"dspy"', '"textgrad"') + "  optimizer: gepa\n", "textgrad framework offers tgd, not gepa"),
    ("ondemand_optimization:\n  enabled: true\n", "must hold a mapping with the key scheduled_optimization"),
])
@pytest.mark.parametrize("command", [("optimize", "--scheduled"), ("schedule",), ("schedule", "--databricks-job")])
def test_a_bad_file_is_named_with_its_key_and_no_traceback(tmp_path: Path, text: str, message: str,
                                                           command: tuple[str, ...]) -> None:
    path = config_file(tmp_path, text)
    result = cli(tmp_path / "home", *command, "--config", str(path), env=DUMMY_LM)
    assert result.exit_code == 2 and message in result.output and str(path) in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "home" / "state.db").exists()


def test_a_missing_file_and_misused_options_say_what_to_do(tmp_path: Path) -> None:
    home = tmp_path / "home"
    missing = cli(home, "optimize", "--scheduled", "--config", str(tmp_path / "nope.yaml"), env=DUMMY_LM)
    assert missing.exit_code == 2 and "nope.yaml does not exist" in missing.output
    both = cli(home, "optimize", "--scheduled", "--prompt", SECURITY_SUMMARY, "--min-traces", "5", env=DUMMY_LM)
    assert both.exit_code == 2 and "leave out --prompt, --min-traces" in both.output
    stray = cli(home, "optimize", "--config", str(tmp_path / "x.yaml"))
    assert stray.exit_code == 2 and "add --scheduled" in stray.output
    neither = cli(home, "optimize")
    assert neither.exit_code == 2 and "give --prompt" in neither.output and "--scheduled" in neither.output
    for result in (missing, both, stray, neither):
        assert "Traceback" not in result.output


def test_disabled_does_nothing_and_says_so(tmp_path: Path) -> None:
    path = config_file(tmp_path, SEED_YAML.replace("enabled: true", "enabled: false"))
    home = tmp_path / "home"
    once = cli(home, "optimize", "--scheduled", "--config", str(path), env=DUMMY_LM)
    assert once.exit_code == 0 and "enabled is false" in once.output and "nothing to do" in once.output
    loop = cli(home, "schedule", "--config", str(path), env=DUMMY_LM)
    assert loop.exit_code == 0 and "nothing to schedule" in loop.output
    assert not (home / "state.db").exists()
    job = cli(home, "schedule", "--databricks-job", "--config", str(path))
    assert job.exit_code == 0 and json.loads(job.stdout)["schedule"]["pause_status"] == "PAUSED"


def test_without_an_lm_it_names_insight_lm_before_touching_anything(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = config_file(tmp_path, SEED_YAML)
    for command in (("optimize", "--scheduled"), ("schedule",)):
        result = cli(home, *command, "--config", str(path))
        assert result.exit_code == 2, result.output
        assert "scheduled optimization needs an LM" in result.output and "set INSIGHT_LM" in result.output
        assert "Traceback" not in result.output
    assert not (home / "state.db").exists() and not (home / "mlflow.db").exists()


# --- cron ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("cron", "quartz"), [
    ("0 2 * * *", "0 0 2 * * ?"),
    ("*/15 9-17 * * 1-5", "0 0/15 9-17 ? * MON-FRI"),
    ("30 6 1,15 * *", "0 30 6 1,15 * ?"),
    ("0 0 * * 0", "0 0 0 ? * SUN"),
    ("0 0 * * 7", "0 0 0 ? * SUN"),  # 7 is Sunday too
    ("0 12 * * sun,SAT", "0 0 12 ? * SUN,SAT"),
    ("5 4 * * mon-wed,fri", "0 5 4 ? * MON-WED,FRI"),
    ("0 0 * * */2", "0 0 0 ? * SUN,TUE,THU,SAT"),  # cron 0,2,4,6: Quartz numbers them 1,3,5,7
    ("0 0 1 */3 *", "0 0 0 1 1/3 ?"),
    ("0 3 * jan,jul *", "0 0 3 * 1,7 ?"),
    ("10-30/5 * * * *", "0 10,15,20,25,30 * * * ?"),
    ("0 0 1 * 0-6", "0 0 0 * * ?"),  # either day field: the day of week matches every day
    ("@hourly", "0 0 * * * ?"),
])
def test_cron_becomes_quartz(cron: str, quartz: str) -> None:
    assert Cron.parse(cron).quartz() == quartz


def test_cron_fire_times_follow_crons_rules() -> None:
    at = dt.datetime(2026, 11, 29, 15, 0, tzinfo=UTC)  # a Sunday

    def next_of(expression: str) -> dt.datetime:
        return Cron.parse(expression).next_after(at)

    assert next_of("*/15 9-17 * * 1-5") == dt.datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    assert next_of("0 0 1 * 5") == dt.datetime(2026, 12, 1, 0, 0, tzinfo=UTC), "both days set: either matches"
    assert next_of("0 0 */2 * 5") == dt.datetime(2026, 12, 11, 0, 0, tzinfo=UTC), "a star-step day: both must match"
    assert next_of("0 0 29 2 *") == dt.datetime(2028, 2, 29, 0, 0, tzinfo=UTC)
    assert next_of("* * * * *") == at + dt.timedelta(minutes=1)
    assert next_of("0 22-2 * * *") == dt.datetime(2026, 11, 29, 22, 0, tzinfo=UTC), "croniter: a range may wrap"
    weekdays = Cron.parse("0 2 * * 1-5")
    assert weekdays.period(dt.datetime(2026, 11, 30, 2, 0, 5, tzinfo=UTC)) == dt.timedelta(days=3), "Fri to Mon"
    assert weekdays.latest_at_or_before(at) == dt.datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


@pytest.mark.parametrize(("cron", "message"), [
    ("0 0 L * *", "day of month field: 'L' is not a number from 1 to 31"),
    ("61 * * * *", "minute field: '61' is not a number from 0 to 59"),
    ("0 0 * * 5#2", "day of week field: '5#2' is not a number from 0 to 7"),  # croniter's extensions are refused
    ("*/0 * * * *", "minute field: '*/0' is not"),
    ("0 0 * * 1,", "day of week field: '1,' is not"),
    ("0 2 * *", "not a 5-field cron expression"),
])
def test_bad_cron_says_which_field(cron: str, message: str) -> None:
    with pytest.raises(CronError, match=re.escape(message)):
        Cron.parse(cron)


def test_both_day_fields_cannot_become_quartz_but_still_run_locally() -> None:
    cron = Cron.parse("0 0 1 * 1")  # the 1st and every Monday: cron's rule, which Quartz cannot say
    with pytest.raises(CronError, match="restricts both the day of month and the day of week"):
        cron.quartz()
    with pytest.raises(CronError, match="restricts both"):
        Cron.parse("0 0 */2 * 1-5").quartz()


# --- the Databricks Job --------------------------------------------------------------------------------------------


def test_the_databricks_job_is_a_valid_jobs_api_definition(tmp_path: Path) -> None:
    from databricks.sdk.service.jobs import JobsAPI, JobSettings

    path = config_file(tmp_path, SEED_YAML)
    env = {**DUMMY_LM, "INSIGHT_LM_API_KEY": "sk-secret-never-printed"}
    result = cli(tmp_path / "home", "schedule", "--databricks-job", "--config", str(path),
                 "--job-config", "/Volumes/main/insight/config/optimization_config.yaml", env=env)
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)
    assert "sk-secret" not in result.output

    settings = JobSettings.from_dict(job)  # the SDK's own model: every key known, nothing dropped
    assert settings.as_dict() == job
    assert set(job) <= set(inspect.signature(JobsAPI.create).parameters), "jobs.create(**job) takes every key"
    assert settings.schedule is not None and settings.schedule.quartz_cron_expression == "0 0 2 * * ?"
    assert settings.schedule.timezone_id == "UTC" and settings.schedule.pause_status.value == "UNPAUSED"
    (task,) = settings.tasks or []
    assert task.python_wheel_task is not None and task.python_wheel_task.package_name == "insight-mcp"
    assert task.python_wheel_task.entry_point == "insight-mcp"
    assert task.python_wheel_task.parameters == ["optimize", "--scheduled", "--config",
                                                 "/Volumes/main/insight/config/optimization_config.yaml"]
    (environment,) = settings.environments or []
    assert task.environment_key == environment.environment_key and environment.spec is not None
    assert environment.spec.dependencies and environment.spec.dependencies[0].startswith("insight-mcp==")
    (variables,) = settings.environment_variables or []
    assert task.environment_variables_key == variables.environment_variables_key and variables.spec is not None
    assert variables.spec.variables == {"MLFLOW_TRACKING_URI": "databricks", "MLFLOW_DISABLE_TELEMETRY": "true",
                                        "LITELLM_LOCAL_MODEL_COST_MAP": "True", "INSIGHT_LM": "openai/test-model",
                                        "INSIGHT_LM_API_BASE": "http://127.0.0.1:9/v1"}
    assert settings.max_concurrent_runs == 1

    both = config_file(tmp_path, SEED_YAML.replace('"0 2 * * *"', '"0 0 1 * 1"'), "both.yaml")
    refused = cli(tmp_path / "home", "schedule", "--databricks-job", "--config", str(both))
    assert refused.exit_code == 2 and "scheduled_optimization.schedule" in refused.output
    assert "restricts both" in refused.output and "Traceback" not in refused.output


# --- scheduled runs ------------------------------------------------------------------------------------------------


def test_fewer_traces_than_min_traces_does_nothing_and_says_why(tmp_path: Path, migrated_store: Path) -> None:
    home = tmp_path / "home"
    settings = with_store(home, migrated_store)
    write_summary_traces(settings, 6)
    (home / "optimization_config.yaml").write_text(SEED_YAML, encoding="utf-8")  # found without --config

    result = cli(home, "optimize", "--scheduled", env=DUMMY_LM)
    assert result.exit_code == 0, result.output
    assert "only 6 traces of insight.security_summary since" in result.output
    assert "fewer than min_traces=100: nothing was optimized" in result.output
    assert "only 0 traces of insight.network_narrative" in result.output
    assert str(home / "optimization_config.yaml") in result.output

    assert optimization_runs(settings) == [], "no optimization run, not even a skipped one"
    state = state_of(settings)
    assert set(state) == {"security_summary", "finding_explanation", "network_narrative"}
    assert all(s.last_run_at is None and s.last_outcome == "too_few_traces" for s in state.values())

    again = cli(home, "optimize", "--scheduled", "--json", env=DUMMY_LM)
    answer = json.loads(again.stdout)
    summary = {a["agent"]: a for a in answer["agents"]}["security_summary"]
    assert summary["traces"] == 6 and summary["failed_traces"] == 1, "the state did not move: the same 6 count"
    assert summary["outcome"] == "too_few_traces" and not summary["advanced"]


def test_a_scheduled_run_optimizes_each_agent_with_traces_and_promotes_only_a_real_win(
        tmp_path: Path, migrated_store: Path) -> None:
    home = tmp_path / "home"
    settings = with_store(home, migrated_store)
    assert make_worse_production(settings) == "2"  # a vague champion the candidate can really beat
    write_summary_traces(settings, 24, rate_poorly=True)
    path = config_file(tmp_path, SEED_YAML.replace("min_traces: 100", "min_traces: 20")
                       + "  optimizer: bootstrap_few_shot\n  max_lm_calls: 100\n  lookback_hours: 1\n"
                       + "  agents:\n" + "".join(f"    - name: {p.removeprefix('insight.')}\n      prompt: {p}\n"
                                                 for p in PROMPTS)
                       + "    - name: billing\n      prompt: acme.billing_summary\n      experiment: acme-billing\n")

    with LMServer(api_key="sk-test-123456") as server:
        env = {"INSIGHT_LM": "openai/test-model", "INSIGHT_LM_API_BASE": server.url,
               "INSIGHT_LM_API_KEY": "sk-test-123456", "INSIGHT_PROMPT_CACHE_SECONDS": "0"}
        first = cli(home, "optimize", "--scheduled", "--config", str(path), "--json", env=env)
        assert first.exit_code == 0, first.output
        calls = len(server.requests)
        second = cli(home, "optimize", "--scheduled", "--config", str(path), "--json", env=env)
        assert second.exit_code == 0, second.output
        assert len(server.requests) == calls, "the second run asked the LM nothing"

    agents = {a["agent"]: a for a in json.loads(first.stdout)["agents"]}
    summary = agents["security_summary"]
    assert summary["outcome"] == "promoted" and summary["advanced"], summary["reason"]
    assert summary["traces"] == 24 and summary["failed_traces"] == 4
    optimization = summary["optimization"]
    assert optimization["champion_version"] == "2" and optimization["candidate_version"] == "3"
    assert optimization["candidate_score"] > optimization["baseline_score"]
    assert "traces of insight.security_summary since" in optimization["source"]
    assert production(settings) == "3"
    for quiet in ("finding_explanation", "network_narrative"):
        assert agents[quiet]["outcome"] == "too_few_traces" and agents[quiet]["traces"] == 0
    assert agents["billing"]["outcome"] == "too_few_traces" and agents["billing"]["traces"] == 0, \
        "a user's agent is counted in its own experiment, which has no traces yet"

    (run,) = optimization_runs(settings)
    assert run.info.run_id == optimization["mlflow_run_id"] and run.data.tags["insight.trigger"] == "scheduled"
    assert run.data.params["promoted"] == "true"

    state = state_of(settings)
    moved = state["security_summary"].last_run_at
    assert moved is not None and state["finding_explanation"].last_run_at is None
    assert state["billing"].last_run_at is None and state["billing"].last_outcome == "too_few_traces"
    since = dt.datetime.fromisoformat(json.loads(second.stdout)["agents"][0]["since"])
    assert since == dt.datetime.fromtimestamp(moved, UTC), "the second run reads from the first run's start"

    again = {a["agent"]: a for a in json.loads(second.stdout)["agents"]}["security_summary"]
    assert again["outcome"] == "too_few_traces" and again["traces"] == 0, again
    assert "only 0 traces" in again["reason"] and not again["advanced"]
    assert state_of(settings)["security_summary"].last_run_at == moved
    assert len(optimization_runs(settings)) == 1 and production(settings) == "3"


def test_an_unreachable_store_is_that_agents_failure_not_a_crash(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    home = tmp_path / "home"
    path = config_file(tmp_path, SEED_YAML)
    result = cli(home, "optimize", "--scheduled", "--config", str(path),
                 env={**DUMMY_LM, "INSIGHT_MLFLOW_TRACKING_URI": f"sqlite:///{blocker}/mlflow.db"})
    assert result.exit_code == 1, result.output
    assert "the MLflow tracking store could not be reached" in result.output and "Traceback" not in result.output
    settings = load_settings(home=home)
    assert all(s.last_outcome == "failed" and s.last_run_at is None for s in state_of(settings).values())


def test_two_scheduled_runs_never_overlap(tmp_path: Path) -> None:
    import fcntl

    home = tmp_path / "home"
    home.mkdir()
    with open(home / "scheduled-optimization.lock", "a") as held:  # as a run in another process holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        result = cli(home, "optimize", "--scheduled", env=DUMMY_LM)
    assert result.exit_code == 2 and "another scheduled optimization is running" in result.output
    assert not (home / "state.db").exists() and not (home / "mlflow.db").exists()


# --- the schedule loop ---------------------------------------------------------------------------------------------


def test_the_loop_runs_a_due_scheduled_run_once_with_an_injected_clock(tmp_path: Path,
                                                                        migrated_store: Path) -> None:
    settings = with_store(tmp_path / "home", migrated_store, lm_model="openai/test-model")
    config = ScheduledOptimization()  # the seed's: 2 AM UTC, min_traces 100
    clock = FakeClock(dt.datetime(2026, 11, 29, 1, 59, 30, tzinfo=UTC))
    done: list[Any] = []

    ran = run_schedule(config.cron, lambda now: done.append(run_scheduled(settings, config, clock=clock)),
                       clock=clock, wait=clock.wait, max_runs=1)
    assert ran == 1 and sum(clock.waits) == 30
    (result,) = done
    assert result.started_at == dt.datetime(2026, 11, 29, 2, 0)
    assert result.next_run_at == dt.datetime(2026, 11, 30, 2, 0)
    assert [a.prompt for a in result.agents] == list(PROMPTS)
    for agent in result.agents:  # a first run reads one period of the schedule back: the day since 2 AM yesterday
        assert agent.since == dt.datetime(2026, 11, 28, 2, 0) and agent.outcome == "too_few_traces"
    assert all(s.last_attempt_at == clock.now for s in state_of(settings).values())


def test_a_failed_run_never_stops_the_loop_and_a_stop_ends_it_cleanly() -> None:
    cron = Cron.parse("* * * * *")
    clock = FakeClock(dt.datetime(2026, 11, 29, 0, 0, 10, tzinfo=UTC))
    seen: list[float] = []

    def job(now: float) -> None:
        seen.append(now)
        if len(seen) == 1:
            raise RuntimeError("MLflow is down")

    assert run_schedule(cron, job, clock=clock, wait=clock.wait, max_runs=2) == 2
    assert [dt.datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S") for t in seen] == ["00:01:00", "00:02:00"]

    assert run_schedule(cron, job, clock=clock, wait=lambda seconds: True) == 0 and len(seen) == 2


def test_sigterm_stops_the_schedule_command_loop(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home").model_copy(update={"lm_model": "openai/test-model"})
    before = signal.getsignal(signal.SIGTERM)
    with stopping() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5), "SIGTERM sets the stop event"
        assert run_loop(settings, ScheduledOptimization(), "defaults", stop=stop, max_runs=None) == 0
    assert signal.getsignal(signal.SIGTERM) is before

"""`insight-mcp schedule`: scheduled optimization on its cron schedule, or the equivalent Databricks Job printed;
and `insight-mcp optimize --scheduled`, one scheduled run now (for cron or a Databricks Job)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from insight_mcp.clients.cli_common import err, fail, out, print_json, progress, quiet_mlflow, settings_of

if TYPE_CHECKING:
    from insight_mcp.agents.optimization.scheduled import ScheduledOptimization, ScheduledRun
    from insight_mcp.agents.settings import Settings

ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", help="optimization_config.yaml (the seed's scheduled_optimization block); default: "
                     "INSIGHT_OPTIMIZATION_CONFIG, then $INSIGHT_HOME/optimization_config.yaml, else the seed's "
                     "values.")]


def load_config(settings: Settings, config: Path | None) -> tuple[ScheduledOptimization, str]:
    """The scheduled_optimization block and where it came from; a bad file ends the command with file and key."""
    from insight_mcp.agents.optimization.scheduled import load_optimization_config
    from insight_mcp.agents.supervision.config import ConfigError

    path = config.expanduser() if config else settings.optimization_config_path
    try:
        loaded = load_optimization_config(path)
    except ConfigError as exc:
        fail(str(exc))
    return loaded, str(path) if path else "defaults (the seed's values)"


@contextlib.contextmanager
def stopping() -> Iterator[threading.Event]:
    """An Event that SIGTERM and SIGINT set, so a run stops before its next write; the old handlers come back."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def scheduled_once(settings: Settings, config: Path | None, *, as_json: bool) -> None:
    """`optimize --scheduled`: the seed's six steps for every monitored agent, now; exit 1 if one failed."""
    from insight_mcp.agents.optimization.scheduled import ScheduledError, run_scheduled
    from insight_mcp.agents.supervision.config import ConfigError

    loaded, source = load_config(settings, config)
    if not loaded.enabled:
        err.print(f"scheduled_optimization.enabled is false in {source}: nothing to do", highlight=False,
                  markup=False)
        raise typer.Exit(0)
    quiet_mlflow()
    with stopping() as stop, progress(not as_json, "scheduled optimization") as step:
        try:
            result = run_scheduled(settings, loaded, source=source, cancelled=stop, progress=step)
        except (ScheduledError, ConfigError) as exc:
            fail(str(exc))
    if as_json:
        print_json(result.model_dump(mode="json"))
    else:
        _print_run(result)
    if result.failed:
        raise typer.Exit(1)


def _print_run(result: ScheduledRun) -> None:
    table = Table(title=f"scheduled optimization ({result.framework}, min_traces={result.min_traces}, "
                        f"evaluation_threshold={result.evaluation_threshold:g})")
    for column in ("agent", "prompt", "since (UTC)", "traces", "outcome"):
        table.add_column(column, justify="right" if column == "traces" else "left")
    for agent in result.agents:
        traces = "-" if agent.traces is None else f"{agent.traces} ({agent.failed_traces} failed)"
        since = f"{agent.since:%Y-%m-%d %H:%M}" if agent.since else "-"
        table.add_row(agent.agent, agent.prompt, since, traces, agent.outcome)
    out.print(table)
    for agent in result.agents:
        colour = "green" if agent.outcome == "promoted" else "red" if agent.outcome == "failed" else "yellow"
        out.print(f"[bold {colour}]{agent.agent}[/]: ", end="", highlight=False)
        out.print(agent.reason, highlight=False, markup=False)
        if agent.optimization and agent.optimization.mlflow_run_id:
            out.print(f"  MLflow run {agent.optimization.mlflow_run_id} in experiment insight-optimization",
                      highlight=False)
    out.print(f"configuration: {result.config}; next fire time {result.next_run_at:%Y-%m-%d %H:%M} UTC "
              f"(\"{result.schedule}\")", highlight=False, markup=False)


def schedule_command(
    ctx: typer.Context,
    config: ConfigOpt = None,
    databricks_job: Annotated[bool, typer.Option(
        "--databricks-job", help="Print the equivalent Databricks Jobs API 2.1 job definition (JSON) and exit.")]
    = False,
    job_config: Annotated[str | None, typer.Option(
        help="With --databricks-job: where the job reads optimization_config.yaml, a workspace file or a volume "
             "(default /Workspace/Shared/insight-mcp/optimization_config.yaml).")] = None,
    job_name: Annotated[str | None, typer.Option(
        help="With --databricks-job: the job's name (default insight-mcp scheduled optimization).")] = None,
    dependency: Annotated[str | None, typer.Option(
        help="With --databricks-job: the pip requirement installing insight-mcp (default insight-mcp==<this "
             "version>; a wheel on a volume works too).")] = None,
    max_runs: Annotated[int | None, typer.Option(min=1, help="Stop after this many runs (default: never).")]
    = None,
) -> None:
    """Run scheduled optimization at each fire time of its cron schedule (UTC), or print it as a Databricks Job."""
    from insight_mcp.agents.llm import LMNotConfigured, lm_configured
    from insight_mcp.agents.optimization.scheduled import CronError, monitored_agents
    from insight_mcp.agents.optimization.scheduled import databricks_job as job_definition
    from insight_mcp.agents.supervision.config import ConfigError

    settings = settings_of(ctx)
    loaded, source = load_config(settings, config)
    if databricks_job:
        given: dict[str, Any] = {"config_path": job_config, "name": job_name, "dependency": dependency}
        try:
            print_json(job_definition(loaded, settings, **{k: v for k, v in given.items() if v}))
        except CronError as exc:
            fail(f"{source}: scheduled_optimization.schedule: {exc}")
        return
    if not loaded.enabled:
        err.print(f"scheduled_optimization.enabled is false in {source}: nothing to schedule", highlight=False,
                  markup=False)
        raise typer.Exit(0)
    if not lm_configured(settings):
        fail(f"scheduled optimization needs an LM: {LMNotConfigured()}")
    try:
        monitored_agents(settings, loaded)
    except ConfigError as exc:
        fail(str(exc))
    with stopping() as stop:
        run_loop(settings, loaded, source, stop=stop, max_runs=max_runs)


def run_loop(settings: Settings, loaded: ScheduledOptimization, source: str, *, stop: threading.Event,
             max_runs: int | None) -> int:
    """The cron loop with the real clock: each run logged, a failed one never fatal; returns how many ran."""
    import structlog

    from insight_mcp.agents.optimization.scheduled import run_schedule, run_scheduled

    log = structlog.get_logger("insight_mcp.schedule")
    quiet_mlflow()

    def job(now: float) -> None:
        result = run_scheduled(settings, loaded, source=source, cancelled=stop)
        log.info("scheduled optimization done", agents=len(result.agents), failed=result.failed,
                 outcomes={a.agent: a.outcome for a in result.agents}, next_run_at=result.next_run_at.isoformat())

    log.info("scheduled optimization started", schedule=loaded.schedule, timezone="UTC", config=source)
    runs = run_schedule(loaded.cron, job, wait=stop.wait, max_runs=max_runs)
    log.info("scheduled optimization stopped", runs=runs)
    return runs

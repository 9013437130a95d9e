"""`insight-mcp supervise`: the daemon, or one check for cron (`--once`)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from insight_mcp.clients.cli_common import JsonOpt, fail, out, print_json, settings_of


def supervise_command(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", help="agent_config.yaml (the seed's format); default: "
                                                                  "INSIGHT_AGENT_CONFIG, then "
                                                                  "$INSIGHT_HOME/agent_config.yaml, else the seed's "
                                                                  "values, watching our own prompts.")]
    = None,
    once: Annotated[bool, typer.Option("--once", help="One check, then exit (for cron).")] = False,
    as_json: JsonOpt = False,
    host: Annotated[str, typer.Option("--host", help="Bind address of the supervisor's own /health and /metrics; "
                                                     "beyond loopback it needs INSIGHT_API_TOKEN.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port of the supervisor's /health and "
                                                                       "/metrics; 0 turns the endpoint off. "
                                                                       "Not started with --once.")] = 9001,
) -> None:
    """Watch the monitored agents' traces in MLflow and call the optimization server when one really slips."""
    from insight_mcp.agents.supervision.config import ConfigError, load_agent_config
    from insight_mcp.supervisor.daemon import Supervisor, run_forever
    from insight_mcp.supervisor.launcher import McpLauncher

    settings = settings_of(ctx)
    try:
        ondemand = load_agent_config(config.expanduser() if config else settings.agent_config_path
                                     ).ondemand_optimization
    except ConfigError as exc:
        fail(str(exc))
    if not ondemand.enabled:
        fail("ondemand_optimization.enabled is false in the configuration: nothing to supervise", code=0)
    supervisor = Supervisor(ondemand, settings, McpLauncher(ondemand, settings))
    if once:
        try:
            checks = supervisor.check_once()
        except Exception as exc:
            from insight_mcp.agents.core.mlflow_store import unreachable

            fail(unreachable(exc))
        if as_json:
            print_json([c.model_dump(mode="json") for c in checks])
            return
        for check in checks:
            out.print(f"[bold]{check.agent}[/]: {check.new_traces} new traces, {check.verdict.metrics.volume} in the "
                      f"window; {check.action}", highlight=False)
        return
    from insight_mcp.agents.settings import SettingsError
    from insight_mcp.supervisor.health import HealthServer, SupervisorStats

    stats = SupervisorStats(supervisor.store)
    endpoint: HealthServer | None = None
    if port:
        try:
            endpoint = HealthServer(stats, settings, host=host, port=port).start()
        except SettingsError as exc:
            fail(str(exc))
        except OSError as exc:
            fail(f"the supervisor's /health and /metrics cannot listen on {host}:{port} ({exc.strerror or exc}): "
                 "choose another --port, or --port 0 to go without them")
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    try:
        run_forever(supervisor, stop=stopping.is_set, observer=stats)
    finally:
        if endpoint is not None:
            endpoint.stop()

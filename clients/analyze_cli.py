"""`insight-mcp analyze`: the whole pipeline from the command line, with a progress bar on a terminal only."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from insight_mcp.agents.settings import Settings, SettingsError
from insight_mcp.clients.cli_common import BackendOpt, JsonOpt, err, fail, out, print_json, settings_of


@contextlib.contextmanager
def progress_bar(enabled: bool) -> Iterator[Any]:
    """A rich progress bar on stderr when it is a terminal; None (silence) when piped."""
    if not (enabled and err.is_terminal):
        yield None
        return
    from insight_mcp.agents.orchestrator import STAGES

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("ingestion", total=len(STAGES))

        def step(stage: str, done: int, total: int) -> None:
            following = STAGES[done] if done < len(STAGES) else "done"
            bar.update(task, completed=done, total=total, description=following)

        yield step


def run_analysis(settings: Settings, request: Any, *, show_progress: bool) -> Any:
    """Open the backend, analyse, close; MLflow's own chatter kept out of the way."""
    from insight_mcp.agents.ingestion.engines import build_backend
    from insight_mcp.agents.orchestrator import analyze

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported, later
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)

    async def run() -> Any:
        backend = build_backend(settings)
        try:
            with progress_bar(show_progress) as step:
                return await analyze(settings, backend, request, progress=step)
        finally:
            await backend.close()

    return anyio.run(run)


def print_summary(result: Any, console: Console) -> None:
    """A short summary, the report paths, and how to look at what MLflow recorded."""
    report = result.report
    console.print(f"[bold]Analysis[/] {report.since:%Y-%m-%d %H:%M} to {report.until:%Y-%m-%d %H:%M} UTC",
                  highlight=False)
    console.print(report.narrative.executive_summary, highlight=False, markup=False)
    for agent in report.agents:
        if agent.status == "failed":
            console.print(f"[yellow]the {agent.agent} agent failed:[/] {agent.error}", highlight=False)
    console.print("[bold]Reports[/]")
    for fmt, path in result.reports.paths.items():
        console.print(f"  {fmt:<5} {path}", highlight=False, markup=False)
    alerts = result.alerts
    if alerts.status in ("sent", "queued"):
        console.print(f"[bold]Alerts[/] {alerts.sent} sent, {alerts.pending} waiting in the outbox"
                      + (f" ({alerts.detail})" if alerts.detail else ""), highlight=False)
    tracking = result.tracking
    if tracking.status == "recorded":
        console.print(f"[bold]MLflow[/] run {tracking.run_id} in experiment {tracking.experiment}; to look at it:",
                      highlight=False)
        console.print(f"  {tracking.ui_command}", highlight=False, markup=False)
    else:
        console.print(f"[yellow]MLflow tracking skipped:[/] {tracking.reason}", highlight=False)


def analyze_command(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(help="ISO date or timestamp; default 7 days before the latest event.")]
    = None,
    until: Annotated[str | None, typer.Option(help="ISO date or timestamp (exclusive); default after the latest "
                                                   "event.")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Report folder; default $INSIGHT_HOME/reports.")]
    = None,
    formats: Annotated[str | None, typer.Option("--format", help="Comma-separated: md, json, html (default all).")]
    = None,
    no_alerts: Annotated[bool, typer.Option("--no-alerts", help="Write the reports but send no alerts.")] = False,
    backend: BackendOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the full pipeline: ingestion check, detections and network analysis, reports, alerts, MLflow run."""
    from pydantic import ValidationError

    from insight_mcp.agents.ingestion.backend import BackendError
    from insight_mcp.agents.ingestion.explore import InvalidArgument
    from insight_mcp.agents.orchestrator import AnalysisRequest
    from insight_mcp.agents.reporting.render import ReportFolderError, ReportTemplateError

    settings = settings_of(ctx, backend)
    try:
        request = AnalysisRequest(
            since=since, until=until, out_dir=out_dir.expanduser().resolve() if out_dir else None,
            formats=[f.strip() for f in formats.split(",") if f.strip()] if formats else None, alerts=not no_alerts)
    except ValidationError:
        fail("--format takes a comma-separated list of md, json and html")
    try:
        result = run_analysis(settings, request, show_progress=not as_json)
    except (ReportFolderError, ReportTemplateError) as exc:
        fail(str(exc))
    except (BackendError, InvalidArgument, SettingsError, ValueError) as exc:
        fail(str(exc))
    if as_json:
        print_json(result.model_dump(mode="json"))
        return
    print_summary(result, out)

"""The `insight-mcp` command line: set up the workspace, serve the MCP servers, and call tools."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer
from rich.table import Table

from insight_mcp.agents.logs import configure_logging
from insight_mcp.agents.settings import SettingsError, load_settings
from insight_mcp.clients.alerts_cli import alerts_app
from insight_mcp.clients.analyze_cli import analyze_command
from insight_mcp.clients.cli_common import BackendOpt, JsonOpt, err, fail, out, print_json, settings_of
from insight_mcp.clients.evaluate_cli import evaluate_app
from insight_mcp.clients.optimize_cli import optimize_command
from insight_mcp.clients.rules_cli import rules_app
from insight_mcp.clients.schedule_cli import schedule_command
from insight_mcp.supervisor.command import supervise_command

app = typer.Typer(
    name="insight-mcp", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Insight MCP: Databricks system tables, security and network analysis as MCP tools.",
)
workspace_app = typer.Typer(no_args_is_help=True, help="Build, load and describe the embedded workspace.")
config_app = typer.Typer(no_args_is_help=True, help="Print ready-made MCP client configurations.")
app.add_typer(workspace_app, name="workspace")
app.add_typer(config_app, name="config")
app.command("analyze")(analyze_command)
app.add_typer(alerts_app, name="alerts")
app.add_typer(evaluate_app, name="evaluate")
app.add_typer(rules_app, name="rules")
app.command("optimize")(optimize_command)
app.command("schedule")(schedule_command)


app.command("supervise")(supervise_command)


@app.callback()
def main(
    ctx: typer.Context,
    home: Annotated[Path | None, typer.Option(help="INSIGHT_HOME: where every file is written.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML settings file (INSIGHT_CONFIG).")] = None,
) -> None:
    """Read settings once for the whole command."""
    overrides: dict[str, Any] = {"home": home} if home else {}
    try:
        settings = load_settings(config, **overrides)
    except SettingsError as exc:
        fail(str(exc))
    configure_logging(settings.log_level)
    ctx.obj = settings


_settings = settings_of


# --- workspace --------------------------------------------------------------------------------------


@workspace_app.command("generate")
def workspace_generate(
    ctx: typer.Context,
    days: Annotated[int, typer.Option(help="Days of history.")] = 30,
    users: Annotated[int, typer.Option(help="Number of principals.")] = 200,
    seed: Annotated[int, typer.Option(help="Same seed, same estate.")] = 7,
    events_per_day: Annotated[int, typer.Option(help="Audit events per day.")] = 20_000,
    end: Annotated[str | None, typer.Option(help="Last day (exclusive), ISO date; default today.")] = None,
    attacks: Annotated[bool, typer.Option(
        help="Weave in the labelled attack scenarios; --no-attacks builds the routine alone, to see what normal "
             "work draws from the rules.")] = True,
    backend: BackendOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Build the demo workspace: a realistic estate with labelled attack scenarios (with --backend spark, also
    written where Spark reads it)."""
    from insight_mcp.agents.ingestion.generator import generate_workspace

    settings = _settings(ctx, backend)
    _check_writable_backend(settings.backend)
    try:
        end_day = dt.date.fromisoformat(end) if end else None
    except ValueError:
        fail("--end must be an ISO date such as 2026-11-01")
    settings.home.mkdir(parents=True, exist_ok=True)
    try:
        with _status(f"generating {days} days x {events_per_day} events/day", enabled=not as_json):
            report = generate_workspace(
                settings.workspace_path, days=days, users=users, seed=seed, events_per_day=events_per_day,
                end=end_day, attacks=attacks,
            )
    except (ValueError, OSError) as exc:
        fail(str(exc))
    published = _publish(settings, None, quiet=as_json)
    if as_json:
        print_json(report.model_dump(mode="json") | ({"spark_tables": published} if published is not None else {}))
        return
    table = Table("table", "rows", title=f"workspace {report.path}")
    for name, rows in report.rows.items():
        table.add_row(name, f"{rows:,}")
    out.print(table)
    out.print(f"{len(report.scenarios)} labelled scenarios; built in {report.seconds:.1f} s")


@workspace_app.command("load")
def workspace_load(
    ctx: typer.Context,
    table: Annotated[str, typer.Argument(help="Target table, e.g. system.access.audit.")],
    path: Annotated[Path, typer.Argument(help="A folder of part-*.json files, a .json/.jsonl, .parquet or .csv file.")],
    backend: BackendOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Load files exported from a real workspace; malformed input loads nothing. With --backend spark the table is
    then written where Spark reads it (the embedded workspace stays the staging area that checks every row)."""
    from insight_mcp.agents.ingestion.loader import LoadError, load_table

    settings = _settings(ctx, backend)
    _check_writable_backend(settings.backend)
    settings.home.mkdir(parents=True, exist_ok=True)
    try:
        report = load_table(settings.workspace_path, table, path)
    except LoadError as exc:
        fail(str(exc))
    published = _publish(settings, [report.table], quiet=as_json)
    if as_json:
        print_json(report.model_dump(mode="json") | ({"spark_tables": published} if published is not None else {}))
    else:
        out.print(
            f"{report.table}: {report.inserted:,} rows added, {report.duplicates:,} already present "
            f"({report.files} file(s), {report.seconds:.2f} s)"
        )


def _check_writable_backend(backend: str) -> None:
    if backend == "databricks":
        fail("a Databricks workspace's system tables are written by Databricks itself: load and generate write the "
             "embedded workspace (--backend duckdb) or local Spark tables (--backend spark)")


def _publish(settings: Any, tables: list[str] | None, *, quiet: bool) -> dict[str, int] | None:
    """With the Spark backend, copy the tables to where Spark reads them; None on any other backend."""
    if settings.backend != "spark":
        return None
    from insight_mcp.agents.ingestion.backend import BackendError
    from insight_mcp.agents.ingestion.spark_tables import publish_tables

    if settings.spark.catalog:
        fail("INSIGHT_SPARK__CATALOG is set: the tables are read from that catalog, so there is nothing to write; "
             "unset it to keep the tables under INSIGHT_SPARK__TABLES_DIR")
    try:
        written = publish_tables(settings.workspace_path, settings.spark_tables_dir, tables)
    except (BackendError, OSError) as exc:
        fail(f"could not write the Spark tables to {settings.spark_tables_dir}: {exc}")
    if not quiet:
        out.print(f"Spark tables at {settings.spark_tables_dir}: "
                  + ", ".join(f"{name} ({rows:,} rows)" for name, rows in written.items()))
    return written


@workspace_app.command("info")
def workspace_info(ctx: typer.Context, backend: BackendOpt = None, as_json: JsonOpt = False) -> None:
    """Each table's row count and time range, on the backend asked for."""
    from insight_mcp.agents.ingestion import explore
    from insight_mcp.agents.ingestion.backend import BackendError
    from insight_mcp.agents.ingestion.engines import build_backend

    settings = _settings(ctx, backend)

    async def run() -> list[explore.TableSummary]:
        backend = build_backend(settings)
        try:
            return await explore.list_tables(backend)
        finally:
            await backend.close()

    try:
        tables = anyio.run(run)
    except (BackendError, SettingsError) as exc:
        fail(str(exc))
    if as_json:
        print_json({"workspace": str(settings.workspace_path), "tables": [t.model_dump(mode="json") for t in tables]})
        return
    grid = Table("table", "rows", "first event", "last event", title=str(settings.workspace_path))
    for t in tables:
        grid.add_row(t.name, f"{t.rows:,}", str(t.first_event or "-"), str(t.last_event or "-"))
    out.print(grid)


# --- serving and calling ----------------------------------------------------------------------------


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Bind address; default 127.0.0.1.")] = None,
    port: Annotated[int | None, typer.Option(help="Port; default 9000 (INSIGHT_PORT).")] = None,
    server: Annotated[list[str] | None, typer.Option(help="Serve only these servers (repeatable).")] = None,
    transport: Annotated[str, typer.Option(help="http (all servers) or stdio (one server).")] = "http",
) -> None:
    """Run the MCP servers: every server at /<name>/mcp over HTTP, or one over stdio for desktop clients."""
    from insight_mcp.servers.app import SERVER_FACTORIES, build_app, build_servers, close_servers

    settings = _settings(ctx)
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    if overrides:
        settings = settings.model_copy(update=overrides)
    names = server or None
    for name in names or []:
        if name not in SERVER_FACTORIES:
            fail(f"unknown server {name!r}; choose from {', '.join(SERVER_FACTORIES)}")
    if transport == "stdio":
        if not names or len(names) != 1:
            fail("--transport stdio serves one server: add --server NAME")
        built = build_servers(settings, names)
        try:
            anyio.run(built[names[0]].run_stdio_async)
        finally:
            close_servers(built)
        return
    if transport != "http":
        fail("--transport must be http or stdio")
    import uvicorn

    try:
        http_app = build_app(settings, names)
    except SettingsError as exc:
        fail(str(exc))
    # Open SSE streams would hold a graceful shutdown forever; clients resume them with Last-Event-ID.
    uvicorn.run(http_app, host=settings.host, port=settings.port, log_level="warning", timeout_graceful_shutdown=5)


@app.command("call")
def call(
    ctx: typer.Context,
    server: Annotated[str, typer.Argument(help="Server name, e.g. system-tables.")],
    tool: Annotated[str, typer.Argument(help="Tool name, e.g. run_query.")],
    args_json: Annotated[str, typer.Argument(help='Arguments as a JSON object, e.g. \'{"sql": "SELECT 1"}\'.')] = "{}",
    url: Annotated[
        str | None, typer.Option(help="Base URL of a running `insight-mcp serve`; default in-process.")
    ] = None,
) -> None:
    """Call one tool and print its structured answer as JSON."""
    from insight_mcp.clients.client import (
        ServerUnavailable,
        ToolCallError,
        connect_http,
        connect_in_process,
        server_url,
    )
    from insight_mcp.servers.app import build_servers

    settings = _settings(ctx)
    try:
        arguments = json.loads(args_json)
    except json.JSONDecodeError as exc:
        fail(f"ARGS_JSON is not valid JSON: {exc}")
    if not isinstance(arguments, dict):
        fail("ARGS_JSON must be a JSON object")

    async def run() -> Any:
        if url:
            token = settings.api_token.get_secret_value() if settings.api_token else None
            async with connect_http(server_url(url, server), token=token) as client:
                return await client.call(tool, arguments)
        # One call in a short-lived process: tracing it would cost MLflow's start-up, so only served calls trace.
        untraced = settings.model_copy(update={"tracing": settings.tracing.model_copy(update={"enabled": False})})
        mcp_server = build_servers(untraced, [server])[server]
        async with connect_in_process(mcp_server) as client:
            return await client.call(tool, arguments)

    try:
        answer = anyio.run(run)
    except ToolCallError as exc:
        fail(exc.message, code=1)
    except (ValueError, SettingsError, ServerUnavailable) as exc:
        fail(str(exc))
    print_json(answer.structured if answer.structured is not None else answer.text)


@app.command("feedback")
def feedback(
    ctx: typer.Context,
    call_id: Annotated[str, typer.Argument(
        metavar="ID", help="A tool answer's call id (_meta['insight-mcp/call_id']), a report id, or a finding id.")],
    rating: Annotated[int, typer.Option(min=1, max=5, help="1 (useless) to 5 (excellent).")],
    comment: Annotated[str | None, typer.Option(help="What was good or wrong about the answer.")] = None,
    by: Annotated[str | None, typer.Option(help="Who rates; default the login name.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Rate an insight 1-5: stored as an MLflow feedback assessment on the trace that produced it."""
    import getpass

    from insight_mcp.agents.core.feedback import FeedbackError, rate_call

    settings = _settings(ctx)
    try:
        receipt = rate_call(settings.tracking_uri, settings.tracing.experiment, call_id, rating, comment=comment,
                            rated_by=by or getpass.getuser())
    except FeedbackError as exc:
        fail(str(exc))
    if as_json:
        print_json(receipt.model_dump(mode="json"))
        return
    what = f"{receipt.server}.{receipt.tool} answer" if receipt.server else (receipt.tool or "analysis")
    out.print(f"rated {what} {receipt.call_id} {receipt.rating}/5 (trace {receipt.trace_id})", highlight=False)


@app.command("detect")
def detect(
    ctx: typer.Context,
    since: Annotated[
        str | None, typer.Option(help="ISO date or timestamp; default 7 days before the latest event.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="ISO date or timestamp (exclusive); default after the latest event.")
    ] = None,
    min_severity: Annotated[str, typer.Option(help="info, low, medium, high or critical.")] = "low",
    category: Annotated[list[str] | None, typer.Option(help="Only this category (repeatable).")] = None,
    rule: Annotated[list[str] | None, typer.Option(help="Only this rule id (repeatable).")] = None,
    incidents: Annotated[bool, typer.Option("--incidents", help="Correlate every rule's findings into incidents "
                                                                "(accumulated risk per entity, known sequences) "
                                                                "and print those instead.")] = False,
    backend: BackendOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the detection rules over a window and print the findings, or with --incidents the incidents."""
    from insight_mcp.agents.ingestion.backend import BackendError
    from insight_mcp.agents.ingestion.engines import build_backend
    from insight_mcp.agents.security.compiler import RuleCompileError
    from insight_mcp.agents.security.rules import RuleFileError
    from insight_mcp.agents.security.service import SecurityAgent

    settings = _settings(ctx, backend)

    if incidents and (category or rule):
        fail("--incidents correlates every rule's findings: leave out --category and --rule")

    async def run() -> Any:
        backend = build_backend(settings)
        try:
            agent = SecurityAgent(settings, backend)
            if incidents:
                return await agent.incidents(since=since, until=until, min_severity=min_severity)
            return await agent.run(since=since, until=until, min_severity=min_severity, categories=category,
                                   rule_ids=rule)
        finally:
            await backend.close()

    try:
        with _status("running detections", enabled=not as_json):
            result = anyio.run(run)
    except (BackendError, SettingsError, RuleCompileError, RuleFileError, ValueError) as exc:
        fail(str(exc))
    if incidents:
        _print_incidents(*result, as_json=as_json)
        return
    _print_skipped(result.skipped)  # on stderr: a --json reader's stdout stays the findings
    if as_json:
        print_json([f.model_dump(mode="json") for f in result.findings])
        return
    grid = Table("severity", "category", "rule", "principal", "workspace", "first seen", "events",
                 title=(f"{len(result.findings)} findings, "
                        f"{result.since:%Y-%m-%d %H:%M} to {result.until:%Y-%m-%d %H:%M}"
                        f" ({result.rules_run} rules, {result.suppressed} suppressed)"))
    for f in result.findings:
        grid.add_row(f.severity, f.category, f.rule_id, f.principal, f.workspace_id or "-",
                     f"{f.first_seen:%Y-%m-%d %H:%M}", str(f.event_count))
    out.print(grid)
    for stat in result.stats:
        if stat.error:
            err.print(f"[yellow]rule {stat.rule_id} failed:[/] {stat.error}")


def _print_skipped(skipped: dict[str, str]) -> None:
    """Rules not run, grouped by why: a table the workspace lacks, or one its principal may not read."""
    by_reason: dict[str, list[str]] = {}
    for rule_id, why in skipped.items():
        by_reason.setdefault(why, []).append(rule_id)
    for why, rule_ids in by_reason.items():
        err.print(f"[yellow]{len(rule_ids)} rule(s) not run[/] ({why}): {', '.join(sorted(rule_ids))}",
                  markup=True, highlight=False)


def _print_incidents(run: Any, found: list[Any], *, as_json: bool) -> None:
    """Incidents first, then what built each: its findings by rule and severity."""
    if as_json:
        print_json([i.model_dump(mode="json") for i in found])
        return
    grid = Table("severity", "kind", "entity", "score", "findings", "rules", "first seen", "id",
                 title=(f"{len(found)} incidents from {len(run.findings)} findings, "
                        f"{run.since:%Y-%m-%d %H:%M} to {run.until:%Y-%m-%d %H:%M}"))
    for incident in found:
        grid.add_row(incident.severity, incident.kind, f"{incident.entity_kind} {incident.entity}",
                     f"{incident.score:g}", str(len(incident.findings)), ", ".join(incident.rules)[:60],
                     f"{incident.first_seen:%Y-%m-%d %H:%M}", incident.id)
    out.print(grid)
    for incident in found:
        out.print(f"[bold]{incident.id}[/] {incident.why}", highlight=False)


@config_app.command("claude")
def config_claude(
    ctx: typer.Context,
    transport: Annotated[str, typer.Option(help="stdio (Claude Desktop) or http (Claude Code, remote).")] = "stdio",
    url: Annotated[str | None, typer.Option(help="Base URL for http; default http://127.0.0.1:$INSIGHT_PORT.")] = None,
    http: Annotated[str | None, typer.Option("--http", help="Shorthand for --transport http --url URL: the base "
                                                            "URL of `insight-mcp serve`.")] = None,
    stdio: Annotated[bool, typer.Option("--stdio", help="Shorthand for --transport stdio.")] = False,
) -> None:
    """Print an mcpServers block for Claude Desktop or Claude Code, with every server (optimization included)."""
    from insight_mcp.servers.app import SERVER_FACTORIES

    if http and stdio:
        fail("give --http URL or --stdio, not both")
    if http:
        transport, url = "http", http
    elif stdio:
        transport = "stdio"
    settings = _settings(ctx)
    servers: dict[str, Any] = {}
    command = shutil.which("insight-mcp") or str(Path(sys.argv[0]).resolve())
    for name in SERVER_FACTORIES:
        key = f"insight-{name}"
        if transport == "stdio":
            servers[key] = {
                "command": command, "args": ["serve", "--server", name, "--transport", "stdio"],
                "env": {"INSIGHT_HOME": str(settings.home)},
            }
        elif transport == "http":
            base = url or f"http://127.0.0.1:{settings.port}"
            entry: dict[str, Any] = {"type": "http", "url": f"{base.rstrip('/')}/{name}/mcp"}
            if settings.api_token is not None:
                entry["headers"] = {"Authorization": "Bearer ${INSIGHT_API_TOKEN}"}
            servers[key] = entry
        else:
            fail("--transport must be stdio or http")
    print_json({"mcpServers": servers})


@app.command("demo")
def demo(ctx: typer.Context) -> None:
    """Set up the embedded workspace if absent, serve, and show real answers over MCP."""
    from insight_mcp.clients.demo import run_demo

    settings = _settings(ctx)
    try:
        run_demo(settings, out)
    except (ValueError, SettingsError, OSError) as exc:
        fail(str(exc))


class _status:
    """A spinner on a terminal, silence when piped."""

    def __init__(self, message: str, *, enabled: bool) -> None:
        self._ctx = err.status(message) if enabled and err.is_terminal else None

    def __enter__(self) -> None:
        if self._ctx:
            self._ctx.__enter__()

    def __exit__(self, *exc: object) -> None:
        if self._ctx:
            self._ctx.__exit__(*exc)


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    app()

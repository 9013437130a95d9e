"""The main job on the embedded default: build the workspace if absent, serve it, and ask it real questions over MCP."""

from __future__ import annotations

import os
import socket
from typing import Any

import anyio
import uvicorn
from rich.console import Console
from rich.table import Table

from insight_mcp.agents.logs import configure_logging
from insight_mcp.agents.settings import Settings
from insight_mcp.clients.client import InsightClient, ToolCallError, connect_http, server_url

DEMO_QUESTIONS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("What data is there?", "system-tables", "list_tables", {}),
    ("Which actions failed most in the last day of data?", "system-tables", "run_query", {
        "sql": "SELECT service_name, action_name, count(*) AS failures, count(DISTINCT user_identity.email) AS "
               "principals FROM system.access.audit WHERE response.status_code >= 400 AND event_time >= "
               "(SELECT max(event_time) - INTERVAL 1 DAY FROM system.access.audit) "
               "GROUP BY ALL ORDER BY failures DESC LIMIT 8",
    }),
    ("Recent failed logins", "system-tables", "audit_events",
     {"service": "accounts", "status": "failure", "page_size": 8}),
    ("Clusters with risky settings", "system-tables", "cluster_inventory", {"only_risky": True}),
    ("Busiest SQL users this week", "system-tables", "query_history_summary", {"group_by": "user", "top": 8}),
    ("High-severity findings this week", "security", "run_detections", {"min_severity": "high", "limit": 12}),
    ("Riskiest principals", "security", "top_risks", {"limit": 8}),
    ("Denied egress, risky destinations first", "network", "egress_denials", {"top": 8}),
    ("IP access-list denials", "network", "ip_access_denials", {"top": 5}),
]


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _render(console: Console, title: str, structured: dict[str, Any]) -> None:
    rows: list[dict[str, Any]] | None = None
    if "columns" in structured and "rows" in structured:
        names = [c["name"] for c in structured["columns"]]
        rows = [dict(zip(names, r, strict=True)) for r in structured["rows"]]
    else:
        for key in ("tables", "events", "clusters", "groups", "findings", "principals", "destinations", "by_ip"):
            if key in structured:
                rows = structured[key]
                break
    if not rows:
        console.print(f"[bold]{title}[/]: nothing found")
        return
    keep = [k for k in rows[0] if (not isinstance(rows[0][k], (dict, list)) or k in ("risks", "categories"))
            and k not in ("id", "title", "recommendation", "threat_model", "description")][:7]
    table = Table(*keep, title=title, title_justify="left")
    for row in rows[:10]:
        table.add_row(*(_cell(row.get(k)) for k in keep))
    console.print(table)


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    text = "" if value is None else str(value)
    return text if len(text) <= 48 else text[:45] + "..."


async def _ask(settings: Settings, base_url: str, console: Console) -> None:
    token = settings.api_token.get_secret_value() if settings.api_token else None
    for server in dict.fromkeys(s for _, s, _, _ in DEMO_QUESTIONS):
        async with connect_http(server_url(base_url, server), token=token) as client:
            await _questions(client, server, console)


async def _questions(client: InsightClient, server: str, console: Console) -> None:
    tools = await client.list_tools()
    console.print(f"\n[bold]{server}[/] server at /{server}/mcp offers: {', '.join(tools)}\n")
    for title, name, tool, args in DEMO_QUESTIONS:
        if name != server:
            continue
        try:
            answer = await client.call(tool, args)
        except ToolCallError as exc:
            console.print(f"[bold]{title}[/]: [red]{exc.message}[/]")
            continue
        _render(console, f"{title}  ({server}.{tool})", answer.structured or {})


def run_demo(settings: Settings, console: Console) -> None:
    """Generate the workspace if absent, start the servers, ask questions over HTTP, stop, and say what next."""
    from insight_mcp.agents.ingestion.generator import generate_workspace
    from insight_mcp.servers.app import build_app

    if "INSIGHT_LOG_LEVEL" not in os.environ:
        configure_logging("warning")  # the demo's output is the answers, not the request log
    settings.home.mkdir(parents=True, exist_ok=True)
    if not settings.workspace_path.exists():
        console.print(f"building the demo workspace at {settings.workspace_path} ...")
        report = generate_workspace(settings.workspace_path)
        console.print(f"  {sum(report.rows.values()):,} rows, {len(report.scenarios)} labelled scenarios, "
                      f"{report.seconds:.1f} s")
    else:
        console.print(f"using the workspace at {settings.workspace_path}")
    port = free_port()
    demo_settings = settings.model_copy(update={"host": "127.0.0.1", "port": port})
    server = uvicorn.Server(uvicorn.Config(build_app(demo_settings), host="127.0.0.1", port=port, log_level="warning",
                                          timeout_graceful_shutdown=5))
    base_url = f"http://127.0.0.1:{port}"

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve)
            while not server.started:
                await anyio.sleep(0.05)
            console.print(f"servers started at {base_url}\n")
            try:
                await _ask(demo_settings, base_url, console)
            finally:
                server.should_exit = True

    anyio.run(main)
    console.print("\nservers stopped.\n")
    console.print("Next steps:")
    console.print("  insight-mcp serve                      # every server at http://127.0.0.1:9000/<name>/mcp")
    console.print("  insight-mcp config claude               # Claude Desktop config (stdio)")
    console.print("  insight-mcp config claude --transport http   # Claude Code / remote clients")
    console.print("  claude mcp add --transport http insight-system-tables http://127.0.0.1:9000/system-tables/mcp")
    if settings.tracing.enabled:
        console.print(f"\nEvery call above is an MLflow trace (experiment {settings.tracing.experiment}).")
    _analysis(settings, console)


def _analysis(settings: Settings, console: Console) -> None:
    """The main job last: the whole pipeline over the demo workspace, its reports, and where MLflow keeps it."""
    from insight_mcp.agents.orchestrator import AnalysisRequest
    from insight_mcp.clients.analyze_cli import print_summary, run_analysis

    console.print("\n[bold]insight-mcp analyze[/]: the whole pipeline on the demo workspace\n")
    result = run_analysis(settings, AnalysisRequest(), show_progress=True)
    print_summary(result, console)

"""One HTTP app serving every MCP server at /<name>/mcp, with Host/Origin checks, a bearer token and /health."""

import contextlib
import hmac
import platform
import threading
from collections.abc import AsyncIterator, Callable
from importlib.metadata import version
from typing import Any

import anyio
import duckdb
import structlog
from mcp.server.transport_security import TransportSecuritySettings
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from insight_mcp.agents.core.tracing import TraceRecorder
from insight_mcp.agents.ingestion.backend import SystemTables
from insight_mcp.agents.ingestion.engines import build_backend
from insight_mcp.agents.settings import Settings
from insight_mcp.agents.version import VERSION
from insight_mcp.servers.evaluation import build_evaluation_server
from insight_mcp.servers.event_store import SessionEventStore, give_each_session_its_own_store
from insight_mcp.servers.hosts import HostOriginMiddleware, allowed_hosts, allowed_origins, check_exposure
from insight_mcp.servers.metrics import ServerMetrics
from insight_mcp.servers.network import build_network_server
from insight_mcp.servers.optimization import build_optimization_server
from insight_mcp.servers.security import build_security_server
from insight_mcp.servers.status_page import status_routes
from insight_mcp.servers.system_tables import build_system_tables_server
from insight_mcp.servers.toolset import InsightServer

log = structlog.get_logger("insight_mcp.app")

RETRY_MS = 1000  # how soon a client whose SSE stream dropped should reconnect with Last-Event-ID

ServerFactory = Callable[[Settings, SystemTables], InsightServer]

# Every capability, by the name it is mounted and served under.
SERVER_FACTORIES: dict[str, ServerFactory] = {
    "system-tables": build_system_tables_server,
    "security": build_security_server,
    "network": build_network_server,
    "evaluation": build_evaluation_server,
    "optimization": build_optimization_server,
}

def build_servers(settings: Settings, names: list[str] | None = None) -> dict[str, InsightServer]:
    """Build the named servers (all by default) over one shared backend and one trace writer."""
    backend = build_backend(settings)
    chosen = names or list(SERVER_FACTORIES)
    unknown = [n for n in chosen if n not in SERVER_FACTORIES]
    if unknown:
        raise ValueError(f"unknown server {unknown[0]!r}; choose from {', '.join(SERVER_FACTORIES)}")
    servers = {name: SERVER_FACTORIES[name](settings, backend) for name in chosen}
    recorder = build_recorder(settings)
    for server in servers.values():
        server.tracer = recorder
        server.backends.append(backend)
    return servers


def build_recorder(settings: Settings) -> TraceRecorder | None:
    """The background writer of tool-call traces, or None when tracing is off (INSIGHT_TRACING__ENABLED=false)."""
    if not settings.tracing.enabled:
        return None
    return TraceRecorder(settings.tracking_uri, settings.tracing.experiment, settings.mlflow_artifacts,
                         capacity=settings.tracing.queue_size)


def close_servers(servers: dict[str, InsightServer], timeout: float = 30.0) -> None:
    """Write the traces still queued (within the timeout) when serving stops."""
    recorders = {id(s.tracer): s.tracer for s in servers.values() if s.tracer is not None}
    for recorder in recorders.values():
        recorder.close(timeout)
    for server in servers.values():
        for close in server.closers:
            close()
    backends = {id(b): b for s in servers.values() for b in s.backends}
    for backend in backends.values():
        _close_backend(backend)


def _close_backend(backend: SystemTables, timeout: float = 30.0) -> None:
    """Close a backend on a thread with a loop of its own: callers may be on a loop's thread, a worker, or neither."""
    closer = threading.Thread(target=anyio.run, args=(backend.close,), name="insight-close", daemon=True)
    closer.start()
    closer.join(timeout)


class BearerTokenMiddleware:
    """Require `Authorization: Bearer <token>` on every route but the bare liveness answer of /health."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()

    def _authorized(self, scope: Scope) -> bool:
        for key, value in scope.get("headers", []):
            if key == b"authorization":
                scheme, _, presented = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(presented.strip(), self._token)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        authorized = self._authorized(scope)
        scope.setdefault("state", {})["authorized"] = authorized
        if not authorized and scope.get("path") != "/health":
            response = JSONResponse(
                {"error": "unauthorized", "detail": "send Authorization: Bearer <INSIGHT_API_TOKEN>"},
                status_code=401, headers={"WWW-Authenticate": 'Bearer realm="insight-mcp"'},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class ServerRoutes:
    """A request for /<server>/... goes straight to that server's app, as Starlette's Mount would send it (the prefix
    moved to `root_path`); every other request, and the lifespan, to the Starlette app of /health, /metrics and the
    status page. A tool call then passes one app's error and routing layers, not two: a few percent of `run_query`."""

    def __init__(self, servers: dict[str, ASGIApp], rest: ASGIApp) -> None:
        self.servers = {f"/{name}": app for name, app in servers.items()}
        self.rest = rest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            path: str = scope["path"]
            end = path.find("/", 1)
            prefix = path[:end] if end > 0 else None  # "/name" alone is no server's path: Mount never took it
            app = self.servers.get(prefix) if prefix is not None else None
            if app is not None:
                root = scope.get("root_path", "")
                await app({**scope, "root_path": root + prefix, "app_root_path": scope.get("app_root_path", root)},
                          receive, send)
                return
        await self.rest(scope, receive, send)


def _versions() -> dict[str, str]:
    return {
        "insight_mcp": VERSION, "mcp": version("mcp"), "duckdb": duckdb.__version__,
        "python": platform.python_version(),
    }



def _tracing_health(servers: dict[str, InsightServer]) -> dict[str, Any]:
    recorder = next((s.tracer for s in servers.values() if s.tracer is not None), None)
    if recorder is None:
        return {"enabled": False}
    return {"enabled": True, "status": recorder.status, "written": recorder.written, "dropped": recorder.dropped}


def build_app(settings: Settings, names: list[str] | None = None) -> ASGIApp:
    """The HTTP app: each server at /<name>/mcp, /health, all behind Host/Origin checks and the token."""
    check_exposure(settings)
    servers = build_servers(settings, names)
    metrics = ServerMetrics(settings)
    for server in servers.values():
        server.metrics = metrics
    # Host and Origin are checked once, for every route, by HostOriginMiddleware; the SDK still checks Content-Type.
    security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    apps: dict[str, ASGIApp] = {}
    for name, server in servers.items():
        sub = server.streamable_http_app(
            streamable_http_path="/mcp", transport_security=security, host=settings.host,
            event_store=SessionEventStore(), retry_interval=RETRY_MS,
        )
        give_each_session_its_own_store(server.session_manager)
        apps[name] = sub

    async def health(request: Request) -> Response:
        detail = bool(request.scope.get("state", {}).get("authorized", True))
        body: dict[str, Any] = {"status": "ok"}
        if detail:
            workspace = settings.workspace_path
            body |= {
                "versions": _versions(),
                "backend": settings.backend,
                "workspace": {"path": str(workspace), "exists": workspace.exists()},
                "servers": {n: {"path": f"/{n}/mcp", "tools": len(await s.list_tools())} for n, s in servers.items()},
                "tracing": _tracing_health(servers),
            }
        return JSONResponse(body)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for server in servers.values():
                await stack.enter_async_context(server.session_manager.run())
                if server.tracer is not None:
                    server.tracer.start()
            log.info("serving", servers=list(servers), host=settings.host, port=settings.port)
            try:
                async with anyio.create_task_group() as background:
                    if settings.alerts.active:
                        # Undelivered alerts are retried while serving, not only when the next analysis runs.
                        from insight_mcp.agents.core.state import StateStore
                        from insight_mcp.agents.reporting.alerts import drain_forever

                        background.start_soon(drain_forever, settings.alerts, StateStore(settings.state_path))
                    yield
                    background.cancel_scope.cancel()
            finally:
                await anyio.to_thread.run_sync(close_servers, servers)

    async def metrics_route(request: Request) -> Response:
        body = await anyio.to_thread.run_sync(metrics.render)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    routes = [Route("/health", health), Route("/metrics", metrics_route), *status_routes(settings)]
    app: ASGIApp = ServerRoutes(apps, Starlette(routes=routes, lifespan=lifespan))
    if settings.api_token is not None:
        app = BearerTokenMiddleware(app, token=settings.api_token.get_secret_value())
    return HostOriginMiddleware(app, hosts=allowed_hosts(settings), origins=allowed_origins(settings))

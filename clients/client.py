"""The client library other agents, the CLI and the supervisor use to call Insight MCP servers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server import MCPServer
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from pydantic import BaseModel


class ToolCallError(RuntimeError):
    """A tool answered with an error; the message is the server's, meant for the caller."""

    def __init__(self, tool: str, message: str) -> None:
        super().__init__(f"{tool}: {message}")
        self.tool = tool
        self.message = message


class ServerUnavailable(RuntimeError):
    """The server could not be reached or refused the connection; the message says what to fix."""


def first_cause(exc: BaseException) -> BaseException:
    """Task groups wrap failures in exception groups; callers want the one that happened."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _explain(exc: BaseException, url: str) -> BaseException:
    import httpx2

    if isinstance(exc, (ToolCallError, ServerUnavailable)):
        return exc
    if isinstance(exc, httpx2.HTTPStatusError):
        status = exc.response.status_code
        hint = {
            401: "unauthorized: set INSIGHT_API_TOKEN to the server's token",
            403: "forbidden: this Origin or Host is not allowed by the server",
            404: "no MCP server at this path: check the server name (e.g. /system-tables/mcp)",
            421: "this Host header is not allowed by the server",
        }.get(status, f"the server answered HTTP {status}")
        return ServerUnavailable(f"{url}: {hint}")
    if isinstance(exc, (httpx2.ConnectError, ConnectionError, OSError)):
        return ServerUnavailable(f"nothing answers at {url}: start it with `insight-mcp serve`")
    if isinstance(exc, httpx2.TimeoutException):
        return ServerUnavailable(f"{url} did not answer in time")
    return exc


class ToolAnswer(BaseModel):
    """What a tool returned: structured data when it has an output schema, and its text rendering."""

    tool: str
    structured: dict[str, Any] | None
    text: str


class InsightClient:
    """A connected MCP session with one Insight MCP server, with errors raised as exceptions."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def list_tools(self) -> list[str]:
        """Tool names the server offers."""
        return [t.name for t in (await self._client.list_tools()).tools]

    async def call(self, tool: str, arguments: dict[str, Any] | None = None) -> ToolAnswer:
        """Call a tool; raise ToolCallError when it reports an error or the server knows no such tool."""
        try:
            result = await self._client.call_tool(tool, arguments or {})
        except MCPError as exc:
            if exc.code == INVALID_PARAMS:
                raise ToolCallError(tool, exc.message) from None
            raise
        text = "\n".join(getattr(block, "text", "") for block in result.content)
        if result.is_error:
            raise ToolCallError(tool, text.removeprefix(f"Error executing tool {tool}: "))
        return ToolAnswer(tool=tool, structured=result.structured_content, text=text)

    @property
    def raw(self) -> Client:
        """The SDK client, for anything this wrapper does not cover."""
        return self._client


def server_url(base_url: str, server: str) -> str:
    """`http://127.0.0.1:9000` + `system-tables` -> the server's streamable HTTP endpoint."""
    return f"{base_url.rstrip('/')}/{server}/mcp"


@contextlib.asynccontextmanager
async def connect_http(
    url: str, *, token: str | None = None, timeout: float = 300.0, headers: dict[str, str] | None = None
) -> AsyncIterator[InsightClient]:
    """Connect over streamable HTTP, sending the bearer token when one is given, and any extra headers."""
    import httpx2

    headers = {**(headers or {}), **({"Authorization": f"Bearer {token}"} if token else {})} or None
    http = create_mcp_http_client(headers=headers, timeout=httpx2.Timeout(30.0, read=timeout))
    connected = False
    try:
        async with http, Client(
            streamable_http_client(url, http_client=http), read_timeout_seconds=timeout
        ) as client:
            connected = True
            yield InsightClient(client)
    except BaseException as exc:
        cause = first_cause(exc)
        if isinstance(cause, MCPError) and not connected:
            cause = await _probe(url, headers) or cause
        explained = _explain(cause, url)
        if explained is exc:
            raise
        raise explained from None


async def _probe(url: str, headers: dict[str, str] | None) -> BaseException | None:
    """The SDK reports a refused handshake without its HTTP status; ask once more to learn it."""
    import httpx2

    try:
        async with httpx2.AsyncClient(headers=headers, timeout=10.0) as http:
            response = await http.post(
                url, json={"jsonrpc": "2.0", "id": 0, "method": "ping"},
                headers={"Accept": "application/json, text/event-stream"},
            )
        response.raise_for_status()
    except httpx2.HTTPError as exc:
        return exc
    return None


@contextlib.asynccontextmanager
async def connect_in_process(server: MCPServer) -> AsyncIterator[InsightClient]:
    """Connect to a server object in this process: tests, the CLI's `call`, and embedding."""
    try:
        async with Client(server) as client:
            yield InsightClient(client)
    except BaseExceptionGroup as group:
        raise first_cause(group) from None

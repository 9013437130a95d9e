"""One declaration per tool, and the protocol behaviour every Insight MCP server shares.

A tool's name, title, read or write nature and docs example are said once, in `declare`; annotations, the docs
pages, the read-only mode and the tests all derive from that. The server also answers the protocol the way the
2025-11-25 specification asks where the SDK's defaults differ: unknown tools and prompts and bad cursors are
-32602 errors, only capabilities actually served are advertised, and `logging/setLevel` is honoured.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mcp.server import MCPServer
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver.context import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INVALID_PARAMS,
    Completion,
    CompletionArgument,
    EmptyResult,
    GetPromptResult,
    LoggingLevel,
    SetLevelRequestParams,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from insight_mcp.agents.core.json_schema import nullable_as_type_lists
from insight_mcp.agents.core.tracing import TraceRecorder
from insight_mcp.servers.common import annotations, guarded

F = TypeVar("F", bound=Callable[..., Any])
Completer = Callable[[str], Awaitable[list[str]]]
MAX_COMPLETIONS = 100  # the protocol's limit per answer

MAX_SESSIONS_REMEMBERED = 4096
LIST_METHODS = frozenset({"tools/list", "resources/list", "resources/templates/list", "prompts/list"})
LOG_LEVELS: tuple[LoggingLevel, ...] = (
    "debug", "info", "notice", "warning", "error", "critical", "alert", "emergency",
)


@dataclass(frozen=True)
class ToolDecl:
    """Everything said about a tool besides its code; annotations, docs and read-only mode derive from it."""

    name: str
    title: str
    example: dict[str, Any] = field(default_factory=dict)
    example_from: dict[str, str] = field(default_factory=dict)
    """Argument -> `tool:/json/pointer`: a live value the tests put in place of the docs' placeholder."""
    writes: bool = False
    destructive: bool = False
    idempotent: bool = True


def takes(name: str, schema: dict[str, Any]) -> str:
    """The arguments a tool takes, for an error about the ones it was given."""
    required = set(schema.get("required", []))
    names = [f"{arg} (required)" if arg in required else arg for arg in schema.get("properties", {})]
    return f"{name} takes {', '.join(names)}." if names else f"{name} takes no arguments."


class InsightServer(MCPServer):
    """An MCP server whose tools are declared once and whose write tools vanish in read-only mode."""

    def __init__(
        self, name: str, *, version: str, instructions: str, open_world: bool, read_only: bool = False
    ) -> None:
        # Our lists never change at run time, so no list-changed or subscription promises (2026-07-28 wire).
        super().__init__(name, version=version, instructions=instructions, subscriptions=False)
        self.open_world = open_world
        self.read_only = read_only
        self.declarations: dict[str, ToolDecl] = {}
        self.tracer: TraceRecorder | None = None  # set by build_servers: one writer for every server in a process
        self.metrics: Any = None  # set by build_app: the Prometheus counters /metrics renders
        self.closers: list[Callable[[], None]] = []  # what to stop when serving ends (job runners, engines)
        self.backends: list[Any] = []  # the SystemTables this server reads, closed once when serving ends
        self._client_levels: OrderedDict[str, LoggingLevel] = OrderedDict()
        self._completers: dict[tuple[str, str], Completer] = {}
        self.middleware.append(self._refuse_unknown_names)
        self._lowlevel_server.add_request_handler("logging/setLevel", SetLevelRequestParams, self._set_level)

    # --- tools -----------------------------------------------------------------------------------------------

    def declare(
        self, name: str, *, title: str, example: dict[str, Any] | None = None,
        example_from: dict[str, str] | None = None, writes: bool = False, destructive: bool = False,
        idempotent: bool = True,
    ) -> Callable[[F], F]:
        """Register a tool from its one declaration; a write tool in a read-only server is not registered at all."""
        decl = ToolDecl(name=name, title=title, example=example or {}, example_from=example_from or {},
                        writes=writes, destructive=destructive, idempotent=idempotent)
        if name in self.declarations:
            raise ValueError(f"tool {name!r} is declared twice in server {self.name!r}")

        def register(fn: F) -> F:
            if decl.writes and self.read_only:
                return fn
            self.declarations[name] = decl
            hints = annotations(title=title, read_only=not writes, destructive=destructive, idempotent=idempotent,
                                open_world=self.open_world)
            traced = guarded(name, server=self.name, tracer=lambda: self.tracer, metrics=lambda: self.metrics)(fn)
            self.tool(name=name, title=title, annotations=hints)(traced)
            registered = self._tool_manager.get_tool(name)
            if registered is not None and registered.fn_metadata.output_schema is not None:
                # The SDK reads the published schema live; the server still checks answers against the model.
                registered.fn_metadata.output_schema = nullable_as_type_lists(registered.fn_metadata.output_schema)
            return fn

        return register

    # --- prompt argument completion -------------------------------------------------------------------------

    def completes(self, prompt: str, argument: str) -> Callable[[Completer], Completer]:
        """Offer values for one prompt argument as the user types; the first completer turns completions on."""

        def register(fn: Completer) -> Completer:
            if not self._completers:
                self.completion()(self._complete)
            self._completers[(prompt, argument)] = fn
            return fn

        return register

    async def _complete(self, ref: Any, argument: CompletionArgument, context: Any) -> Completion:
        completer = self._completers.get((getattr(ref, "name", ""), argument.name))
        if completer is None:
            return Completion(values=[], total=0, has_more=False)
        values = await completer(argument.value[:200])
        return Completion(values=values[:MAX_COMPLETIONS], total=len(values), has_more=len(values) > MAX_COMPLETIONS)

    # --- protocol --------------------------------------------------------------------------------------------

    async def _refuse_unknown_names(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        """Unknown tools and cursors we never issued are invalid params (-32602), not results or silent lists."""
        params = ctx.params or {}
        if ctx.method in LIST_METHODS and params.get("cursor") is not None:
            raise MCPError(INVALID_PARAMS, "invalid cursor: this server lists everything on one page; omit cursor")
        if ctx.method == "tools/call":
            name = params.get("name")
            if isinstance(name, str) and self._tool_manager.get_tool(name) is None:
                known = ", ".join(sorted(self.declarations))
                raise MCPError(INVALID_PARAMS, f"Unknown tool: {name[:100]!r}; this server has: {known}")
        return await call_next(ctx)

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None) -> Any:
        """Wrong arguments are the caller's to correct, so the error names each one and what the tool takes: an
        argument the tool does not have is refused rather than silently dropped (a misspelt `limt` would cap
        nothing), and a value out of range says which argument and why, in one line, not pydantic's report."""
        tool = self._tool_manager.get_tool(name)
        schema: dict[str, Any] = tool.parameters if tool is not None else {}
        unknown = sorted(set(arguments) - set(schema.get("properties", {}))) if tool is not None else []
        if unknown:
            listed = ", ".join(repr(u[:60]) for u in unknown[:5])
            raise ToolError(f"{name}: no argument {listed}. {takes(name, schema)}")
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if not isinstance(cause, ValidationError):
                raise
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                                 for e in cause.errors(include_url=False, include_input=False)[:5])
            raise ToolError(f"{name}: {problems}. {takes(name, schema)}") from cause

    async def get_prompt(
        self, name: str, arguments: dict[str, Any] | None = None, context: Context[Any, Any] | None = None
    ) -> Any:
        """An unknown prompt or a missing argument is the caller's mistake: -32602, and no traceback in the log."""
        known = {p.name for p in await self.list_prompts()}
        if name not in known:
            listed = ", ".join(sorted(known))
            raise MCPError(INVALID_PARAMS, f"Unknown prompt: {name[:100]!r}; this server has: {listed}")
        try:
            result: GetPromptResult = await super().get_prompt(name, arguments, context)
        except ValueError as exc:  # the SDK reports bad or missing arguments as ValueError
            raise MCPError(INVALID_PARAMS, f"prompt {name!r}: {exc}") from None
        return result

    @staticmethod
    def _session_key(ctx: ServerRequestContext[Any, Any]) -> str:
        """The HTTP session id, or one key for the single client of a stdio or in-memory connection."""
        headers = getattr(ctx.request, "headers", None)
        return str(headers.get("mcp-session-id") or "-") if headers is not None else "-"

    async def _set_level(self, ctx: ServerRequestContext[Any, Any], params: SetLevelRequestParams) -> EmptyResult:
        key = self._session_key(ctx)
        self._client_levels[key] = params.level
        self._client_levels.move_to_end(key)
        while len(self._client_levels) > MAX_SESSIONS_REMEMBERED:
            self._client_levels.popitem(last=False)
        return EmptyResult()

    def client_log_level(self, ctx: ServerRequestContext[Any, Any]) -> LoggingLevel | None:
        """The level the calling client asked for with logging/setLevel; None if it never asked."""
        return self._client_levels.get(self._session_key(ctx))

    async def log_to_client(self, ctx: Context[Any, Any], level: LoggingLevel, message: str) -> None:
        """Send a log message to the calling client if it asked for this level (logging/setLevel) or above.

        On the 2026-07-28 wire the SDK applies the per-request opt-in itself.
        """
        request = ctx.request_context
        if request.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            wanted = self.client_log_level(request)
            if wanted is None or LOG_LEVELS.index(level) < LOG_LEVELS.index(wanted):
                return
        await ctx.log(level, message, logger_name=self.name)

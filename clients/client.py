"""The client library other agents, the CLI and the supervisor use to call Insight MCP servers.

A connection (`connect_http`, `connect_stdio`, `connect_in_process`) keeps one SDK client open in a background
task. A transient failure (connection refused or reset, a gateway's 502/503/504, a timeout) re-opens it, with
backoff and a bounded number of tries. A call is retried only if its tool is read-only or idempotent by the
annotations the server lists. A tool error is never retried. When pins are given, the server's tool schemas are
checked against them on every (re)connect (see `pins.py`). Long work is followed with `run_job` and `follow_job`.
The typed, one-class-per-server face is in `typed.py`.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import random
import shutil
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import httpx2
import structlog
from anyio.abc import TaskStatus
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.server import MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, INVALID_PARAMS, REQUEST_TIMEOUT, Tool
from pydantic import BaseModel, ConfigDict, Field

from insight_mcp.clients.pins import REFRESH, PinSet, SchemaChange, check_tools, load_pins

if TYPE_CHECKING:
    from insight_mcp.agents.core.jobs import JobRecord

log = structlog.get_logger("insight_mcp.client")

T = TypeVar("T")
CALL_ID_META = "insight-mcp/call_id"
GATEWAY_STATUSES = frozenset({502, 503, 504})
CLOSE_WAIT_SECONDS = 5.0
MAX_WAIT_SECONDS = 300  # the longest wait a wait_for_*_job tool accepts

OnProgress = Callable[[float, str | None], Awaitable[None] | None]


class ToolCallError(RuntimeError):
    """A tool answered with an error; the message is the server's, meant for the caller."""

    def __init__(self, tool: str, message: str) -> None:
        super().__init__(f"{tool}: {message}")
        self.tool = tool
        self.message = message


class ServerUnavailable(RuntimeError):
    """The server could not be reached or refused the connection; the message says what to fix."""


class CallTimeout(ServerUnavailable):
    """A tool did not answer within the call timeout (on every try, when it was retried)."""


class SchemaMismatch(ServerUnavailable):
    """The server's tools changed under the client's pinned schemas: refused before any call is made."""

    def __init__(self, where: str, pins: PinSet, changes: list[SchemaChange]) -> None:
        lines = "\n".join(f"  - {change}" for change in changes)
        super().__init__(
            f"{where}: the {pins.server} server's tools differ from the schemas this client is pinned to "
            f"({pins.source or 'given pins'}):\n{lines}\nThe client refuses a server whose tools changed under it. "
            f"If the change is intended, refresh the pins with `{REFRESH}` and review the diff; otherwise "
            "connect to a server of the version this client expects."
        )
        self.server = pins.server
        self.changes = changes


class JobFailed(ToolCallError):
    """A job ended failed or cancelled; `job` is its last record, with the server's error."""

    def __init__(self, tool: str, job: JobRecord) -> None:
        detail = job.error or job.message or "no reason given"
        super().__init__(tool, f"job {job.id} ended {job.status}: {detail}")
        self.job = job


class JobTimeout(TimeoutError):
    """A job still ran when the caller stopped waiting; it goes on, and `follow_job(job.id)` picks it up again."""

    def __init__(self, job: JobRecord) -> None:
        super().__init__(f"job {job.id} is still {job.status} ({job.progress:.0%}): follow it again or cancel it")
        self.job = job


class GatewayUnavailable(httpx2.TransportError):
    """A 502, 503 or 504: whoever answered was not the server, or the server was not ready; worth trying again."""

    def __init__(self, status: int, url: str) -> None:
        super().__init__(f"{url} answered HTTP {status}")
        self.status = status


class RetryPolicy(BaseModel):
    """How many times, and how patiently, a transient failure is tried again."""

    model_config = ConfigDict(frozen=True)

    attempts: int = Field(3, ge=1, le=20, description="Tries in all, the first included.")
    backoff_seconds: float = Field(0.25, ge=0, description="The pause after the first failure; doubled after each.")
    max_backoff_seconds: float = Field(5.0, ge=0, description="No pause is longer.")
    jitter: float = Field(0.2, ge=0, le=1, description="Each pause is stretched by up to this fraction, at random.")

    def pause(self, attempt: int) -> float:
        """The pause after failed try number `attempt` (from 1), jittered so that clients do not retry in step."""
        base = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempt - 1))
        return base * (1 + random.uniform(0, self.jitter))


NO_RETRY = RetryPolicy(attempts=1)


class RetryEvent(BaseModel):
    """One retry about to happen: what (`connect` or a tool), after which try, why, and after what pause."""

    action: str
    attempt: int
    pause_seconds: float
    error: str


OnRetry = Callable[[RetryEvent], Awaitable[None] | None]


class ToolAnswer(BaseModel):
    """What a tool returned: structured data when it has an output schema, and its text rendering."""

    tool: str
    structured: dict[str, Any] | None
    text: str
    meta: dict[str, Any] | None = None

    @property
    def call_id(self) -> str | None:
        """The id a rating of this answer refers to (the evaluation server's rate_answer)."""
        return (self.meta or {}).get(CALL_ID_META)


def first_cause(exc: BaseException) -> BaseException:
    """Task groups wrap failures in exception groups; callers want the one that happened."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _cause(exc: BaseException) -> BaseException:
    """The first failure in a group that is not the cancellation it caused, or the group when there is none."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    cancelled = anyio.get_cancelled_exc_class()
    for sub in exc.exceptions:
        found = _cause(sub)
        if not isinstance(found, (cancelled, BaseExceptionGroup)):
            return found
    return exc


def transient(exc: BaseException) -> bool:
    """Whether trying again may succeed: the network, a gateway, a timeout or a closed connection, never an answer."""
    if isinstance(exc, (ToolCallError, ServerUnavailable)):
        return False
    if isinstance(exc, httpx2.TransportError):
        return not isinstance(exc, (httpx2.UnsupportedProtocol, httpx2.ProxyError, httpx2.LocalProtocolError))
    if isinstance(exc, MCPError):
        return exc.code in (CONNECTION_CLOSED, REQUEST_TIMEOUT)
    return isinstance(exc, (TimeoutError, ConnectionError, anyio.BrokenResourceError, anyio.ClosedResourceError,
                            anyio.EndOfStream))


async def _maybe_await(value: Any) -> None:
    if inspect.isawaitable(value):
        await value


def _explain(exc: BaseException, url: str) -> BaseException:
    if isinstance(exc, (ToolCallError, ServerUnavailable)):
        return exc
    if isinstance(exc, GatewayUnavailable):
        return ServerUnavailable(f"{url}: the server is unavailable (HTTP {exc.status} from it or a gateway)")
    if isinstance(exc, httpx2.HTTPStatusError):
        status = exc.response.status_code
        hint = {
            401: "unauthorized: set INSIGHT_API_TOKEN to the server's token",
            403: "forbidden: this Origin or Host is not allowed by the server",
            404: "no MCP server at this path: check the server name (e.g. /system-tables/mcp)",
            421: "this Host header is not allowed by the server",
        }.get(status, f"the server answered HTTP {status}")
        return ServerUnavailable(f"{url}: {hint}")
    if isinstance(exc, (httpx2.TimeoutException, TimeoutError)):
        return ServerUnavailable(f"{url} did not answer in time")
    if isinstance(exc, (httpx2.ConnectError, ConnectionError, OSError)):
        return ServerUnavailable(f"nothing answers at {url}: start it with `insight-mcp serve`")
    if isinstance(exc, httpx2.TransportError):
        return ServerUnavailable(f"{url}: the connection failed ({type(exc).__name__}: {exc})")
    if isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED:
        return ServerUnavailable(f"{url}: the server closed the connection")
    return exc


# --- the connection ----------------------------------------------------------------------------------------

Opener = Callable[[], contextlib.AbstractAsyncContextManager[Client]]
Explain = Callable[[BaseException], Awaitable[BaseException]]


class _Link:
    """The SDK client of the moment, held open by a background task that opens a fresh one after a failure."""

    # The SDK client's transport runs in a task group, and a network failure cancels everything inside it. Held
    # in a task of its own, that stays with the connection: the caller's call sees a closed connection and can
    # retry on a new one, instead of losing its whole `async with` block.

    can_reopen = True

    def __init__(self, opener: Opener, *, where: str, explain: Explain, connect_timeout: float) -> None:
        self.where = where
        self._opener = opener
        self._explain = explain
        self._connect_timeout = connect_timeout
        self._retry = RetryPolicy()
        self._on_open: Callable[[Client], Awaitable[None]] | None = None
        self._on_retry: Callable[[str, int, float, BaseException], Awaitable[None]] | None = None
        self._client: Client | None = None
        self._client_was_up = False
        self.generation = 0
        self._rounds_asked = 0
        self._rounds_done = 0
        self._opening = False
        self._error: BaseException | None = None
        self._ended: dict[int, BaseException | None] = {}
        self._closing = False
        self._wanted = anyio.Event()
        self._hang_up = anyio.Event()
        self._changed = anyio.Event()
        self._done = anyio.Event()

    def attach(self, retry: RetryPolicy, on_open: Callable[[Client], Awaitable[None]],
               on_retry: Callable[[str, int, float, BaseException], Awaitable[None]]) -> None:
        """Take the owner's retry policy, its check of every new connection, and its retry reports."""
        self._retry, self._on_open, self._on_retry = retry, on_open, on_retry

    @property
    def current(self) -> Client | None:
        """The open SDK client, if there is one now."""
        return self._client

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def explain(self, exc: BaseException) -> BaseException:
        """The failure as the caller should read it: what is wrong and what to do."""
        return await self._explain(exc)

    async def client(self) -> tuple[Client, int]:
        """The open SDK client and its generation, opening one (with retries) when there is none."""
        if self._client is not None:
            return self._client, self.generation
        if self._closing:
            raise ServerUnavailable(f"{self.where}: the connection was closed")
        if not self._opening:
            self._opening = True
            self._rounds_asked += 1
            self._wanted.set()
        round_ = self._rounds_asked
        while True:
            changed = self._changed
            if self._client is not None:
                return self._client, self.generation
            if self._rounds_done >= round_ or self._closing:
                raise self._error or ServerUnavailable(f"{self.where}: the connection was closed")
            await changed.wait()

    async def ended(self, generation: int) -> tuple[bool, BaseException | None]:
        """Let a connection that failed a call go; say whether it had already failed itself, and why."""
        if self.generation == generation and self._client is not None:
            self._hang_up.set()
        while True:
            changed = self._changed
            if self.generation != generation or self._client is None:
                break
            await changed.wait()
        cause = self._ended.get(generation)
        return cause is not None, cause

    async def close(self) -> None:
        """Hang up gracefully (the SDK ends its session), waiting a bounded time."""
        self._closing = True
        self._hang_up.set()
        self._wanted.set()
        with anyio.move_on_after(CLOSE_WAIT_SECONDS):
            await self._done.wait()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The background task: open when asked, hold until hung up or broken, and tell the waiting callers."""
        task_status.started()
        try:
            while True:
                await self._wanted.wait()
                self._wanted = anyio.Event()
                if self._closing:
                    return
                error = await self._connect()
                if error is not None:  # this round failed; a connection that was up and ended needs no answer
                    self._error, self._opening, self._rounds_done = error, False, self._rounds_asked
                    self._notify()
        finally:
            self._done.set()
            self._notify()

    async def _connect(self) -> BaseException | None:
        """Open with retries and hold; None once a connection was up (and has ended), else the explained error."""
        attempt = 0
        while True:
            attempt += 1
            if self._closing:
                return ServerUnavailable(f"{self.where}: the connection was closed")
            try:
                await self._hold()
                return None
            except Exception as exc:
                cause = _cause(exc)
                if self._client_was_up:
                    return None
                if not transient(cause) or attempt >= self._retry.attempts or self._closing:
                    log.info("connect_failed", where=self.where, attempts=attempt, error=repr(cause)[:300])
                    return await self._explain(cause)
                pause = self._retry.pause(attempt)
                if self._on_retry is not None:
                    await self._on_retry("connect", attempt, pause, cause)
                await anyio.sleep(pause)

    async def _hold(self) -> None:
        """Open one connection within the connect timeout, publish it, and hold it until it is let go."""
        self._client_was_up = False
        generation = self.generation + 1
        cause: BaseException | None = None
        try:
            with anyio.CancelScope(deadline=anyio.current_time() + self._connect_timeout) as scope:
                async with self._opener() as client:
                    if self._on_open is not None:
                        await self._on_open(client)
                    scope.deadline = math.inf
                    self._hang_up = anyio.Event()
                    self._client, self.generation, self._client_was_up = client, generation, True
                    self._opening = False
                    self._rounds_done = self._rounds_asked
                    self._notify()
                    await self._hang_up.wait()
            if scope.cancelled_caught and not self._client_was_up:
                raise TimeoutError(f"{self.where} did not answer within {self._connect_timeout:g} s")
        except Exception as exc:
            cause = _cause(exc)
            if self._client_was_up:
                log.info("connection_lost", where=self.where, error=repr(cause)[:300])
            raise
        finally:
            if self._client_was_up:
                self._ended[generation] = cause
                if len(self._ended) > 16:
                    self._ended.pop(min(self._ended))
            self._client = None
            self._notify()


class _FixedLink(_Link):
    """An SDK client someone else opened: used as is, never re-opened."""

    can_reopen = False

    def __init__(self, client: Client) -> None:
        self.where = "the server"
        self._fixed = client
        self.generation = 1

    def attach(self, retry: RetryPolicy, on_open: Callable[[Client], Awaitable[None]],
               on_retry: Callable[[str, int, float, BaseException], Awaitable[None]]) -> None:
        """Nothing to attach: this client is never opened here."""

    @property
    def current(self) -> Client | None:
        """The one client."""
        return self._fixed

    async def explain(self, exc: BaseException) -> BaseException:
        """The failure as the caller should read it."""
        return _explain(exc, self.where)

    async def client(self) -> tuple[Client, int]:
        """The one client."""
        return self._fixed, 1

    async def ended(self, generation: int) -> tuple[bool, BaseException | None]:
        """Nothing to let go: the owner closes it."""
        return False, None


class InsightClient:
    """A connection to one Insight MCP server: calls with timeouts and retries, pinned schemas, and jobs."""

    def __init__(self, client: Client | _Link, *, retry: RetryPolicy | None = None, timeout: float = 300.0,
                 pins: PinSet | None = None, on_retry: OnRetry | None = None) -> None:
        self._link = client if isinstance(client, _Link) else _FixedLink(client)
        self._retry = retry or RetryPolicy()
        self._timeout = timeout
        self._pins = pins
        self._on_retry = on_retry
        self._tools: dict[str, Tool] = {}
        self._absent: set[str] = set()
        self._link.attach(self._retry, self._opened, self._retrying)

    @property
    def where(self) -> str:
        """The server this client talks to, for messages."""
        return self._link.where

    async def _opened(self, client: Client) -> None:
        """Every (re)connect: learn the tools and their annotations, and refuse a server the pins do not match."""
        tools = (await client.list_tools()).tools
        absent: set[str] = set()
        if self._pins is not None:
            checked = check_tools(self._pins, tools)
            if checked.changes:
                raise SchemaMismatch(self._link.where, self._pins, checked.changes)
            absent = set(checked.absent_write_tools)
        self._tools, self._absent = {t.name: t for t in tools}, absent

    async def _retrying(self, action: str, attempt: int, pause: float, error: BaseException) -> None:
        event = RetryEvent(action=action, attempt=attempt, pause_seconds=round(pause, 3), error=repr(error)[:500])
        log.warning("mcp_retry", where=self._link.where, **event.model_dump())
        if self._on_retry is not None:
            await _maybe_await(self._on_retry(event))

    async def _retryable(self, tool: str, client: Client) -> bool:
        """Read-only or idempotent by the server's own annotations: only such a call may be sent twice."""
        if tool not in self._tools:
            with contextlib.suppress(Exception):
                self._tools = {t.name: t for t in (await client.list_tools()).tools}
        info = self._tools.get(tool)
        hints = info.annotations if info is not None else None
        return hints is not None and (hints.read_only_hint is True or hints.idempotent_hint is True)

    async def _send(self, action: str, send: Callable[[Client], Awaitable[T]], *, timeout: float,
                    retryable: bool | None = None) -> T:
        """Send one request, retrying a transient failure when the request may be sent twice."""
        attempt = 0
        while True:
            attempt += 1
            client, generation = await self._link.client()
            try:
                return await send(client)
            except (MCPError, TimeoutError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
                if isinstance(exc, MCPError) and exc.code == INVALID_PARAMS:
                    raise ToolCallError(action, exc.message) from None
                if not transient(exc):
                    raise
                failed = exc
                if not (isinstance(exc, MCPError) and exc.code == REQUEST_TIMEOUT):
                    broke, cause = await self._link.ended(generation)
                    if broke and cause is not None:
                        failed = cause
                    if not self._link.can_reopen or (broke and cause is not None and not transient(cause)):
                        raise await self._gave_up(action, failed, attempt, timeout, note="") from None
                may_repeat = retryable if retryable is not None else await self._retryable(action, client)
                if not may_repeat or attempt >= self._retry.attempts:
                    note = "" if may_repeat else (
                        "; not retried: the tool is not marked read-only or idempotent, so it may have run")
                    raise await self._gave_up(action, failed, attempt, timeout, note=note) from None
                pause = self._retry.pause(attempt)
                await self._retrying(action, attempt, pause, failed)
                await anyio.sleep(pause)

    async def _gave_up(self, action: str, error: BaseException, attempts: int, timeout: float,
                       note: str) -> BaseException:
        tries = f" ({attempts} tries)" if attempts > 1 else ""
        if isinstance(error, MCPError) and error.code == REQUEST_TIMEOUT:
            return CallTimeout(f"{self._link.where}: {action} did not answer within {timeout:g} s{tries}{note}")
        explained = await self._link.explain(error)
        return ServerUnavailable(f"{action}: {explained}{tries}{note}")

    async def list_tools(self) -> list[str]:
        """Tool names the server offers."""
        result = await self._send("tools/list", lambda c: c.list_tools(), timeout=self._timeout, retryable=True)
        self._tools = {t.name: t for t in result.tools}
        return [t.name for t in result.tools]

    async def tool(self, name: str) -> Tool | None:
        """One tool as the server lists it (schemas and annotations), or None if it offers none by that name."""
        if name not in self._tools:
            await self.list_tools()
        return self._tools.get(name)

    async def call(self, tool: str, arguments: dict[str, Any] | None = None, *, timeout: float | None = None,
                   on_progress: OnProgress | None = None) -> ToolAnswer:
        """Call a tool; raise ToolCallError when it reports an error or the server knows no such tool."""
        if tool in self._absent:
            raise ToolCallError(tool, "not offered: this server runs read-only (INSIGHT_READ_ONLY) and leaves its "
                                      "write tools out")
        wait = timeout or self._timeout
        progress = _progress_callback(on_progress)
        result = await self._send(tool, lambda c: c.call_tool(tool, arguments or {}, read_timeout_seconds=wait,
                                                              progress_callback=progress), timeout=wait)
        text = "\n".join(getattr(block, "text", "") for block in result.content)
        if result.is_error:
            raise ToolCallError(tool, text.removeprefix(f"Error executing tool {tool}: "))
        return ToolAnswer(tool=tool, structured=result.structured_content, text=text, meta=result.meta)

    @property
    def raw(self) -> Client:
        """The SDK client, for anything this wrapper does not cover (a new one after a reconnect)."""
        client = self._link.current
        if client is None:
            raise ServerUnavailable(f"{self._link.where}: not connected right now")
        return client

    # --- jobs ------------------------------------------------------------------------------------------------

    async def job_noun(self) -> str:
        """The kind of job this server runs (`evaluation` for wait_for_evaluation_job), from its tool list."""
        if not self._tools:
            await self.list_tools()
        nouns = sorted(n[len("wait_for_"):-len("_job")] for n in self._tools
                       if n.startswith("wait_for_") and n.endswith("_job"))
        if len(nouns) != 1:
            raise ToolCallError("jobs", f"{self._link.where} offers {len(nouns)} kinds of job ({', '.join(nouns)}): "
                                        "say which with noun=")
        return nouns[0]

    async def start_job(self, tool: str, arguments: dict[str, Any] | None = None) -> str:
        """Call a tool that starts a job, and return the job's handle."""
        answer = await self.call(tool, arguments)
        job_id = (answer.structured or {}).get("job_id")
        if not isinstance(job_id, str):
            raise ToolCallError(tool, "answered without a job_id: it does not start a job")
        return job_id

    async def get_job(self, job_id: str, *, noun: str | None = None) -> JobRecord:
        """A job's record as it is now: status, progress, and its result or error once it ended."""
        from insight_mcp.agents.core.jobs import JobRecord

        answer = await self.call(f"get_{noun or await self.job_noun()}_job", {"job_id": job_id})
        return JobRecord.model_validate(answer.structured)

    async def follow_job(self, job_id: str, *, noun: str | None = None, on_progress: OnProgress | None = None,
                         wait_seconds: int = 60, timeout: float | None = None) -> JobRecord:
        """Wait for a job to end, passing on its progress; return the succeeded record or raise JobFailed."""
        from insight_mcp.agents.core.jobs import JobRecord

        noun = noun or await self.job_noun()
        tool = f"wait_for_{noun}_job"
        deadline = anyio.current_time() + timeout if timeout is not None else math.inf
        wait_seconds = min(wait_seconds, MAX_WAIT_SECONDS)
        told = _ProgressOnce(on_progress)
        while True:
            left = deadline - anyio.current_time()
            wait = max(1, min(wait_seconds, math.ceil(left))) if left != math.inf else wait_seconds
            answer = await self.call(tool, {"job_id": job_id, "timeout_seconds": wait}, timeout=self._timeout + wait,
                                     on_progress=told)
            record = JobRecord.model_validate(answer.structured)
            await told(record.progress, record.message)
            if record.status == "succeeded":
                return record
            if record.finished:
                raise JobFailed(tool, record)
            if anyio.current_time() >= deadline:
                raise JobTimeout(record)

    async def run_job(self, start_tool: str, arguments: dict[str, Any] | None = None, *, noun: str | None = None,
                      on_progress: OnProgress | None = None, wait_seconds: int = 60,
                      timeout: float | None = None) -> JobRecord:
        """Start a job and follow it to its end: the succeeded record (its `result`), or JobFailed with its error."""
        job_id = await self.start_job(start_tool, arguments)
        log.info("job_started", tool=start_tool, job=job_id)
        return await self.follow_job(job_id, noun=noun, on_progress=on_progress, wait_seconds=wait_seconds,
                                     timeout=timeout)


class _ProgressOnce:
    """Passes progress on to the caller's callback, once per change, from notifications and polled records alike."""

    def __init__(self, callback: OnProgress | None) -> None:
        self._callback = callback
        self._last: tuple[float, str | None] | None = None

    async def __call__(self, fraction: float, message: str | None) -> None:
        if self._callback is None or self._last == (fraction, message):
            return
        self._last = (fraction, message)
        await _maybe_await(self._callback(fraction, message))


def _progress_callback(on_progress: OnProgress | None) -> Any:
    """The SDK's (progress, total, message) notifications as a fraction and a message."""
    if on_progress is None:
        return None

    async def report(progress: float, total: float | None, message: str | None) -> None:
        fraction = progress / total if total else progress
        await _maybe_await(on_progress(fraction, message))

    return report


# --- connecting --------------------------------------------------------------------------------------------


def server_url(base_url: str, server: str) -> str:
    """`http://127.0.0.1:9000` + `system-tables` -> the server's streamable HTTP endpoint."""
    return f"{base_url.rstrip('/')}/{server}/mcp"


def _pins(pins: PinSet | str | None) -> PinSet | None:
    return load_pins(pins) if isinstance(pins, str) else pins


@contextlib.asynccontextmanager
async def _connected(client: InsightClient) -> AsyncIterator[InsightClient]:
    """Run the connection's background task around the caller's block; connect now, so failures show at once."""
    link = client._link
    try:
        async with anyio.create_task_group() as group:
            await group.start(link.run)
            try:
                await link.client()
                yield client
            finally:
                await link.close()
                group.cancel_scope.cancel()
    except BaseExceptionGroup as failures:
        cause = _cause(failures)
        if cause is failures:
            raise
        cause.__suppress_context__ = True
        raise cause from cause.__cause__


class _GatewayStatusTransport(httpx2.AsyncBaseTransport):
    """Turns a 502/503/504 into a transport failure, so that the connection is re-opened and a safe call retried."""

    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        if response.status_code in GATEWAY_STATUSES:
            await response.aclose()
            raise GatewayUnavailable(response.status_code, str(request.url))
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


@contextlib.asynccontextmanager
async def connect_http(
    url: str, *, token: str | None = None, timeout: float = 300.0, headers: dict[str, str] | None = None,
    connect_timeout: float = 10.0, retry: RetryPolicy | None = None, pins: PinSet | str | None = None,
    on_retry: OnRetry | None = None,
) -> AsyncIterator[InsightClient]:
    """Connect over streamable HTTP, sending the bearer token when one is given, and any extra headers."""
    # `timeout` bounds each call and `connect_timeout` each (re)connect. `pins` (a server name or a PinSet) has the
    # server's tools checked on every connect. Without a token, this process's INSIGHT_API_TOKEN is sent when set.
    token = os.environ.get("INSIGHT_API_TOKEN") if token is None else token
    sent = {**(headers or {}), **({"Authorization": f"Bearer {token}"} if token else {})} or None

    @contextlib.asynccontextmanager
    async def open_client() -> AsyncIterator[Client]:
        http = httpx2.AsyncClient(headers=sent, timeout=httpx2.Timeout(connect_timeout, read=None),
                                  transport=_GatewayStatusTransport(httpx2.AsyncHTTPTransport()))
        async with http, Client(streamable_http_client(url, http_client=http), read_timeout_seconds=timeout) as sdk:
            yield sdk

    async def explain(exc: BaseException) -> BaseException:
        if isinstance(exc, MCPError) and exc.code != CONNECTION_CLOSED:
            exc = await _probe(url, sent) or exc  # the SDK reports a refused handshake without its HTTP status
        return _explain(exc, url)

    link = _Link(open_client, where=url, explain=explain, connect_timeout=connect_timeout)
    client = InsightClient(link, retry=retry, timeout=timeout, pins=_pins(pins), on_retry=on_retry)
    async with _connected(client) as connected:
        yield connected


async def _probe(url: str, headers: dict[str, str] | None) -> BaseException | None:
    """The SDK reports a refused handshake without its HTTP status; ask once more to learn it."""
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


def stdio_parameters(server: str, *, home: Path | str | None = None, config: Path | str | None = None,
                     env: dict[str, str] | None = None, command: str | None = None) -> StdioServerParameters:
    """How to launch `insight-mcp serve --server NAME --transport stdio`, with this process's INSIGHT_* settings."""
    beside = Path(sys.executable).with_name("insight-mcp")
    exe = command or (str(beside) if beside.exists() else shutil.which("insight-mcp") or "insight-mcp")
    passed = {k: v for k, v in os.environ.items() if k.startswith(("INSIGHT_", "MLFLOW_", "LITELLM_"))}
    passed |= {"INSIGHT_HOME": str(home)} if home is not None else {}
    passed |= {"INSIGHT_CONFIG": str(config)} if config is not None else {}
    return StdioServerParameters(command=exe, args=["serve", "--server", server, "--transport", "stdio"],
                                 env=passed | (env or {}))


@contextlib.asynccontextmanager
async def connect_stdio(
    server: str, *, home: Path | str | None = None, config: Path | str | None = None,
    env: dict[str, str] | None = None, command: str | None = None, timeout: float = 300.0,
    connect_timeout: float = 60.0, retry: RetryPolicy | None = None, pins: PinSet | str | None = None,
    on_retry: OnRetry | None = None,
) -> AsyncIterator[InsightClient]:
    """Launch one server as a subprocess over stdio (a fresh one if it dies) and connect to it."""
    params = stdio_parameters(server, home=home, config=config, env=env, command=command)
    where = f"`{Path(params.command).name} serve --server {server} --transport stdio`"

    def open_client() -> contextlib.AbstractAsyncContextManager[Client]:
        return Client(params, read_timeout_seconds=timeout)

    async def explain(exc: BaseException) -> BaseException:
        if isinstance(exc, ServerUnavailable):
            return exc
        if isinstance(exc, TimeoutError):
            return ServerUnavailable(f"{where} did not answer within {connect_timeout:g} s")
        if isinstance(exc, OSError):
            return ServerUnavailable(f"could not start {where}: {exc}")
        if transient(exc):
            return ServerUnavailable(f"{where} exited or closed its output: its stderr says why")
        return exc

    link = _Link(open_client, where=where, explain=explain, connect_timeout=connect_timeout)
    client = InsightClient(link, retry=retry, timeout=timeout, pins=_pins(pins), on_retry=on_retry)
    async with _connected(client) as connected:
        yield connected


@contextlib.asynccontextmanager
async def connect_in_process(
    server: MCPServer, *, timeout: float = 300.0, connect_timeout: float = 30.0, retry: RetryPolicy | None = None,
    pins: PinSet | str | None = None, on_retry: OnRetry | None = None,
) -> AsyncIterator[InsightClient]:
    """Connect to a server object in this process: tests, the CLI's `call`, and embedding."""

    def open_client() -> contextlib.AbstractAsyncContextManager[Client]:
        return Client(server, read_timeout_seconds=timeout)

    async def explain(exc: BaseException) -> BaseException:
        return exc

    link = _Link(open_client, where=f"in-process {server.name}", explain=explain, connect_timeout=connect_timeout)
    client = InsightClient(link, retry=retry, timeout=timeout, pins=_pins(pins), on_retry=on_retry)
    async with _connected(client) as connected:
        yield connected

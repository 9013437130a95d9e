"""The client library: typed clients per server, pinned schemas, retries only where safe, timeouts, the token, jobs,
and the documented agent-to-agent example, over in-memory, stdio and real HTTP transports."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
import threading
import time
import typing
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import anyio
import httpx
import pytest
import uvicorn
from mcp.server import MCPServer
from mcp.server.mcpserver.context import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, ToolAnnotations
from pydantic import BaseModel, Field, TypeAdapter
from serve_process import Served, serve
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from insight_mcp.agents.core.jobs import JobRunner, Progress
from insight_mcp.agents.core.state import StateStore
from insight_mcp.agents.ingestion.explore import InvalidArgument
from insight_mcp.agents.security.risk import TopRisks
from insight_mcp.agents.settings import Settings
from insight_mcp.clients import pins as pinning
from insight_mcp.clients.client import (
    CallTimeout,
    JobFailed,
    RetryEvent,
    RetryPolicy,
    SchemaMismatch,
    ServerUnavailable,
    ToolCallError,
    connect_in_process,
    server_url,
)
from insight_mcp.clients.demo import free_port
from insight_mcp.clients.typed import (
    CLIENTS,
    EvaluationClient,
    QueryAnswer,
    SecurityClient,
    SystemTablesClient,
)
from insight_mcp.servers.app import SERVER_FACTORIES, build_servers, close_servers
from insight_mcp.servers.common import respond
from insight_mcp.servers.jobs import add_job_tools, caller_of
from insight_mcp.servers.toolset import InsightServer

TOKEN = "client-library-token-5d1c"
QUICK = RetryPolicy(attempts=3, backoff_seconds=0.0, jitter=0.0)
DOCS = Path(__file__).resolve().parents[1] / "docs" / "client-library.md"


@pytest.fixture
def servers(settings: Settings) -> Iterator[dict[str, InsightServer]]:
    built = build_servers(settings)
    yield built
    close_servers(built)


def tampered(server: str, change: typing.Callable[[dict[str, Any]], None]) -> pinning.PinSet:
    """The real pins of a server with one edit, as if the server (not the pins) had changed."""
    data = pinning.load_pins(server).model_dump(by_alias=True)
    change(data["tools"])
    return pinning.PinSet.model_validate({**data, "source": "tampered pins"})


# --- the pins ----------------------------------------------------------------------------------------------------


async def test_pins_match_the_current_servers() -> None:
    current = await pinning.current_pins()
    assert set(current) == set(SERVER_FACTORIES)
    for name, pins in current.items():
        path = pinning.pin_file(name)
        assert path.exists(), f"no pins for the {name} server: run `{pinning.REFRESH}` and commit {path.name}"
        assert path.read_text(encoding="utf-8") == pinning.render(pins), (
            f"the {name} server's tools changed: review the change, run `{pinning.REFRESH}`, and commit the diff "
            f"of clients/schemas/{path.name}"
        )
    stale = {p.stem for p in pinning.SCHEMAS_DIR.glob("*.json")} - set(current)
    assert not stale, f"pins for servers that no longer exist: {stale}"


def test_pins_check_reports_a_stale_pin_file(tmp_path: Path) -> None:
    (tmp_path / "security.json").write_text("{}", encoding="utf-8")
    command = [sys.executable, "-m", "insight_mcp.clients.pins", "--check", "--dir", str(tmp_path), "security"]
    checked = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert checked.returncode == 1, checked.stderr
    assert "security.json" in checked.stderr
    assert (tmp_path / "security.json").read_text() == "{}"  # --check never writes


async def test_the_live_servers_pass_their_own_pins(servers: dict[str, InsightServer]) -> None:
    for name, server in servers.items():
        checked = pinning.check_tools(pinning.load_pins(name), await server.list_tools())
        assert checked.changes == [] and checked.absent_write_tools == [], name


def _remove_input(tool: str, arg: str) -> typing.Callable[[dict[str, Any]], None]:
    def change(tools: dict[str, Any]) -> None:
        del tools[tool]["inputSchema"]["properties"][arg]
    return change


REFUSED: list[tuple[str, str, typing.Callable[[dict[str, Any]], None], str]] = [
    ("security", "top_risks", lambda t: t["top_risks"]["inputSchema"]["properties"]["limit"].update(type="string"),
     'input `limit` changed: `type` "string" -> "integer"'),
    ("security", "get_finding", lambda t: t.update(drop_everything={**t["get_finding"]}),
     "drop_everything: the server no longer offers this tool"),
    ("security", "principal_risk", lambda t: t["principal_risk"]["inputSchema"].update(required=[]),
     "input `principal` became required"),
    ("security", "principal_risk", _remove_input("principal_risk", "principal"),
     "new required input `principal`"),
    ("security", "top_risks",
     lambda t: t["top_risks"]["outputSchema"]["properties"].update(risk_model={"type": "string"}),
     "output field `risk_model` was removed"),
    ("security", "top_risks",
     lambda t: t["top_risks"]["outputSchema"]["$defs"]["RiskRow"]["properties"]["score"].update(type="string"),
     'output principals[].score changed: `type` "string" -> "number"'),
    ("system-tables", "run_query",
     lambda t: t["run_query"]["outputSchema"]["properties"]["truncation_reason"].update(anyOf=[{"type": "string"}]),
     "truncation_reason changed"),
    ("network", "external_ips",
     lambda t: t["external_ips"]["inputSchema"]["properties"]["include_private"].update(type="integer"),
     "input `include_private` changed"),
]


@pytest.mark.parametrize(("server", "tool", "change", "detail"), REFUSED,
                         ids=[f"{s}-{t}-{i}" for i, (s, t, _, _) in enumerate(REFUSED)])
async def test_a_server_whose_tools_changed_under_the_pins_is_refused(
    servers: dict[str, InsightServer], server: str, tool: str, change: Any, detail: str,
) -> None:
    pins = tampered(server, change)
    with pytest.raises(SchemaMismatch) as refused:
        async with connect_in_process(servers[server], pins=pins) as client:
            await client.list_tools()
    message = str(refused.value)
    assert detail in message
    assert pinning.REFRESH in message and "tampered pins" in message
    assert len(refused.value.changes) == 1 and refused.value.changes[0].tool in (tool, "drop_everything")


TOLERATED: list[tuple[str, typing.Callable[[dict[str, Any]], None]]] = [
    ("a new optional input", _remove_input("run_detections", "workspace_id")),
    ("a new output field", lambda t: t["top_risks"]["outputSchema"]["properties"].pop("until")),
    ("a new nested output field", lambda t: t["top_risks"]["outputSchema"]["$defs"]["RiskRow"]["properties"].pop(
        "categories")),
    ("a changed default and bound", lambda t: t["top_risks"]["inputSchema"]["properties"]["limit"].update(
        default=3, maximum=50)),
    ("changed descriptions", lambda t: t["top_risks"]["inputSchema"]["properties"]["since"].update(
        description="another wording", title="Another")),
    ("a tool the pins do not know", lambda t: t.pop("list_detections")),
]


@pytest.mark.parametrize(("what", "change"), TOLERATED, ids=[w for w, _ in TOLERATED])
async def test_compatible_changes_are_tolerated(servers: dict[str, InsightServer], what: str, change: Any) -> None:
    async with SecurityClient.connect_in_process(servers["security"], pins=tampered("security", change)) as security:
        risks = await security.top_risks(limit=2)
    assert isinstance(risks, TopRisks)


async def test_a_read_only_server_may_leave_its_write_tools_out(fixture_workspace: Path, tmp_path: Path) -> None:
    locked = build_servers(Settings(home=tmp_path, workspace_file=fixture_workspace, read_only=True), ["evaluation"])
    try:
        async with EvaluationClient.connect_in_process(locked["evaluation"]) as evaluation:
            assert (await evaluation.list_evaluation_jobs()).jobs == []
            with pytest.raises(ToolCallError, match="read-only"):
                await evaluation.rate_answer("3f9c0a1b2d4e5f60", 5)
    finally:
        close_servers(locked)


async def test_a_full_server_missing_a_pinned_write_tool_is_refused(servers: dict[str, InsightServer]) -> None:
    writes = {"annotations": {"readOnlyHint": False, "idempotentHint": False}, "inputSchema": {"type": "object"}}
    pins = tampered("evaluation", lambda t: t.update(purge_runs=writes))
    with pytest.raises(SchemaMismatch, match="purge_runs: the server no longer offers this tool"):
        async with connect_in_process(servers["evaluation"], pins=pins):
            pass


# --- typed clients -----------------------------------------------------------------------------------------------


def test_every_server_has_a_typed_client() -> None:
    missing = set(SERVER_FACTORIES) - set(CLIENTS)
    assert not missing, (f"no typed client for {missing}: add a class to clients/typed.py and CLIENTS "
                         "(docs/client-library.md, 'Adding a server')")


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    options = [s for s in schema.get("anyOf", []) if s != {"type": "null"}]
    return options[0] if len(options) == 1 else schema


@pytest.mark.parametrize("server", sorted(CLIENTS))
def test_typed_methods_agree_with_the_pins(server: str) -> None:
    cls = CLIENTS[server]
    pins = pinning.load_pins(server)
    assert cls.pins().tools.keys() == pins.tools.keys()
    for tool, pin in pins.tools.items():
        method = getattr(cls, tool, None)
        assert method is not None, f"{cls.__name__} has no method for {server}.{tool}"
        params = {n: p for n, p in inspect.signature(method).parameters.items() if n != "self"}
        props, required = pin.input_schema.get("properties", {}), set(pin.input_schema.get("required", []))
        assert set(params) == set(props), f"{cls.__name__}.{tool} arguments differ from the pin"
        assert {n for n, p in params.items() if p.default is inspect.Parameter.empty} == required, tool
        hints = typing.get_type_hints(method, globalns=vars(sys.modules[cls.__module__]))
        for name, schema in props.items():
            ours = pinning.normalise(_without_null(TypeAdapter(hints[name]).json_schema()))
            assert ours == pinning.normalise(_without_null(schema)), f"{cls.__name__}.{tool}({name}) has another type"
        answer = hints["return"].model_json_schema(mode="serialization")
        assert pin.output_schema is not None
        assert pinning.compatible_model(answer, pin.output_schema) == [], f"{cls.__name__}.{tool} answer model"


async def test_typed_clients_answer_with_models(servers: dict[str, InsightServer]) -> None:
    async with SystemTablesClient.connect_in_process(servers["system-tables"]) as tables:
        answer = await tables.run_query("SELECT count(*) AS n FROM system.access.audit")
        assert isinstance(answer, QueryAnswer) and answer.rows == [[240]] and answer.columns[0].name == "n"
        page = await tables.audit_events(status="failure", page_size=4)
        assert len(page.events) == 4 and all(e.status_code is not None and e.status_code >= 400 for e in page.events)
        assert "system.access.audit" in {t.name for t in (await tables.list_tables()).tables}
    async with SecurityClient.connect_in_process(servers["security"]) as security:
        risks = await security.top_risks()
        scores = [row.score for row in risks.principals]
        assert scores and scores == sorted(scores, reverse=True)
        found = await security.run_detections(limit=1)
        assert found.total >= 1 and len(found.findings) == 1
        finding = await security.get_finding(found.findings[0].id)
        assert finding.id == found.findings[0].id and finding.rule_id == found.findings[0].rule_id
        with pytest.raises(ToolCallError, match="principal must be"):
            await security.principal_risk(" ")


def test_importing_the_typed_clients_stays_light() -> None:
    probe = ("import json, sys, insight_mcp.clients.typed; "
             "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
             "{'mlflow', 'dspy', 'litellm', 'textgrad'} or m.startswith('insight_mcp.servers'))))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(loaded.stdout.strip().splitlines()[-1]) == []


# --- retries and timeouts, in memory -----------------------------------------------------------------------------


class Echo(BaseModel):
    calls: int


def flaky_server() -> tuple[MCPServer, Counter[str]]:
    """Tools whose first call hangs (until the client's timeout), and one that always fails as a tool error."""
    server = MCPServer("flaky")
    calls: Counter[str] = Counter()

    def hints(read_only: bool, idempotent: bool) -> ToolAnnotations:
        return ToolAnnotations(readOnlyHint=read_only, idempotentHint=idempotent, destructiveHint=False,
                               openWorldHint=False)

    async def first_hangs(name: str) -> Echo:
        calls[name] += 1
        if calls[name] == 1:
            await anyio.sleep_forever()
        return Echo(calls=calls[name])

    @server.tool(name="slow_read", annotations=hints(True, True))
    async def slow_read() -> Echo:
        return await first_hangs("slow_read")

    @server.tool(name="slow_write", annotations=hints(False, False))
    async def slow_write() -> Echo:
        return await first_hangs("slow_write")

    @server.tool(name="slow_idempotent_write", annotations=hints(False, True))
    async def slow_idempotent_write() -> Echo:
        return await first_hangs("slow_idempotent_write")

    @server.tool(name="always_slow", annotations=hints(True, True))
    async def always_slow() -> Echo:
        calls["always_slow"] += 1
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    @server.tool(name="refuses", annotations=hints(True, True))
    async def refuses() -> Echo:
        calls["refuses"] += 1
        raise ToolError("bad argument: say what is allowed")

    return server, calls


async def test_only_calls_that_are_safe_to_repeat_are_retried() -> None:
    server, calls = flaky_server()
    retries: list[RetryEvent] = []
    async with connect_in_process(server, timeout=0.5, retry=QUICK, on_retry=retries.append) as client:
        assert (await client.call("slow_read")).structured == {"calls": 2}
        assert (await client.call("slow_idempotent_write")).structured == {"calls": 2}
        with pytest.raises(CallTimeout, match="not retried: the tool is not marked read-only or idempotent"):
            await client.call("slow_write")
        with pytest.raises(CallTimeout, match=r"always_slow did not answer within 0.5 s \(3 tries\)"):
            await client.call("always_slow")
        with pytest.raises(ToolCallError, match="bad argument"):
            await client.call("refuses")
    assert calls == {"slow_read": 2, "slow_idempotent_write": 2, "slow_write": 1, "always_slow": 3, "refuses": 1}
    assert [e.action for e in retries] == ["slow_read", "slow_idempotent_write", "always_slow", "always_slow"]


async def test_exceptions_inside_the_block_are_the_callers_own(servers: dict[str, InsightServer]) -> None:
    with pytest.raises(KeyError, match="mine"):
        async with connect_in_process(servers["security"]):
            raise KeyError("mine")


# --- jobs --------------------------------------------------------------------------------------------------------


class Handle(BaseModel):
    job_id: str
    status: str


def job_server(runner: JobRunner) -> InsightServer:
    """A server that starts jobs through the real job tools: one that succeeds, one that fails."""
    server = InsightServer("jobs", version="1", instructions="test", open_world=False)

    @server.declare("start_sum", title="Start a sum", writes=True, idempotent=False)
    async def start_sum(numbers: Annotated[list[int], Field(max_length=100)],
                        ctx: Context) -> Annotated[CallToolResult, Handle]:
        """Add numbers up in the background, reporting progress per number; a probe for the client's job helper."""

        async def add(progress: Progress) -> dict[str, int]:
            total = 0
            for i, n in enumerate(numbers, 1):
                total += n
                progress(i / len(numbers), f"added {i}")
                await anyio.sleep(0.05)
            return {"total": total}

        job = runner.submit("sum", caller_of(ctx), {"numbers": numbers}, add)
        return respond(Handle(job_id=job.id, status=job.status), source="a test")

    @server.declare("start_broken", title="Start a broken job", writes=True, idempotent=False)
    async def start_broken(ctx: Context) -> Annotated[CallToolResult, Handle]:
        """Start a job that fails with a message written for the caller; a probe for JobFailed."""

        async def fail(progress: Progress) -> None:
            raise InvalidArgument("the labels file has no incidents in this window")

        job = runner.submit("broken", caller_of(ctx), {}, fail)
        return respond(Handle(job_id=job.id, status=job.status), source="a test")

    add_job_tools(server, runner, "sum", source="a test")
    return server


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[JobRunner]:
    from insight_mcp.servers.common import describe_error

    made = JobRunner(StateStore(tmp_path / "state.db"), describe_error=describe_error)
    yield made
    made.close()


async def test_run_job_follows_a_job_to_its_result(runner: JobRunner) -> None:
    server = job_server(runner)
    seen: list[tuple[float, str | None]] = []
    async with connect_in_process(server) as client:
        assert await client.job_noun() == "sum"
        record = await client.run_job("start_sum", {"numbers": [1, 2, 3, 4]}, wait_seconds=1,
                                      on_progress=lambda fraction, message: seen.append((fraction, message)))
        assert record.status == "succeeded" and record.result == {"total": 10}
        listed = await client.call("list_sum_jobs")
        assert listed.call_id and re.fullmatch(r"[0-9a-f]{16}", listed.call_id), "the id a rating refers to"
        started = await client.start_job("start_sum", {"numbers": [5, 6]})
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert len(seen) == len(set(seen)), "each progress is told once"
    # A new connection (a restarted supervisor) follows the job it kept the handle of.
    async with connect_in_process(server) as again:
        assert (await again.follow_job(started, noun="sum")).result == {"total": 11}


async def test_a_failed_job_raises_with_its_error(runner: JobRunner) -> None:
    async with connect_in_process(job_server(runner)) as client:
        with pytest.raises(JobFailed, match="the labels file has no incidents") as failed:
            await client.run_job("start_broken")
        assert failed.value.job.status == "failed"
        with pytest.raises(ToolCallError, match="does not start a job"):
            await client.start_job("list_sum_jobs")


# --- over real transports: HTTP with a token, a gateway that fails, stdio ---------------------------------------


@pytest.fixture(scope="module")
def served(fixture_workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    server = serve(fixture_workspace, tmp_path_factory.mktemp("client-library"), INSIGHT_API_TOKEN=TOKEN,
                   INSIGHT_TRACING__ENABLED="false")
    yield server
    server.stop()


HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


class GatewayProxy:
    """A real HTTP proxy in front of `insight-mcp serve` that can be late, answer 503, or hold a request."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.seen: Counter[str] = Counter()
        self.fail: defaultdict[str, list[int]] = defaultdict(list)
        self.hold: Counter[str] = Counter()
        self.release = threading.Event()
        self._http: httpx.AsyncClient | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def key(body: bytes) -> str:
        try:
            message = json.loads(body)
        except ValueError:
            return "-"
        method = str(message.get("method", "-"))
        return f"{method} {message['params']['name']}" if method == "tools/call" else method

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        key = self.key(body) if request.method == "POST" else request.method
        self.seen[key] += 1
        if self.fail[key]:
            return PlainTextResponse("upstream unavailable", status_code=self.fail[key].pop(0))
        for held in (key, "*"):
            if self.hold[held] > 0:
                self.hold[held] -= 1
                await anyio.to_thread.run_sync(self.release.wait)
                return PlainTextResponse("released", status_code=502)
        assert self._http is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        sent = self._http.build_request(request.method, self.upstream + request.url.path, headers=headers,
                                        content=body)
        answer = await self._http.send(sent, stream=True)
        back = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_HEADERS}
        return StreamingResponse(answer.aiter_raw(), status_code=answer.status_code, headers=back,
                                 background=BackgroundTask(answer.aclose))

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None)) as self._http:
            yield

    def start(self) -> None:
        """Listen, in a thread of its own, and return once it accepts connections."""
        app = Starlette(routes=[Route("/{path:path}", self.handle, methods=["GET", "POST", "DELETE"])],
                        lifespan=self.lifespan)
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                     timeout_graceful_shutdown=1))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            assert time.monotonic() < deadline, "the proxy did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.release.set()
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(15)


@pytest.fixture
def proxy(served: Served) -> Iterator[GatewayProxy]:
    made = GatewayProxy(served.base)
    yield made
    made.stop()


@pytest.mark.e2e
async def test_the_bearer_token_and_the_pins_over_http(served: Served) -> None:
    async with SecurityClient.connect_http(served.base, token=TOKEN) as security:
        assert (await security.top_risks(limit=1)).principals
    retries: list[RetryEvent] = []
    with pytest.raises(ServerUnavailable, match="unauthorized"):
        async with SecurityClient.connect_http(served.base, token="", on_retry=retries.append):
            pass
    assert retries == [], "a refused token is not a transient failure"
    pins = tampered("security", lambda t: t["top_risks"]["inputSchema"]["properties"]["limit"].update(type="string"))
    with pytest.raises(SchemaMismatch, match="top_risks: input `limit` changed") as refused:
        async with SecurityClient.connect_http(served.base, token=TOKEN, pins=pins):
            pass
    assert server_url(served.base, "security") in str(refused.value)


@pytest.mark.e2e
async def test_a_server_that_comes_up_late_is_waited_for(proxy: GatewayProxy) -> None:
    retries: list[RetryEvent] = []

    async def bring_it_up(event: RetryEvent) -> None:
        retries.append(event)
        if len(retries) == 1:
            await anyio.to_thread.run_sync(proxy.start)

    async with SystemTablesClient.connect_http(proxy.base, token=TOKEN, retry=QUICK, on_retry=bring_it_up) as tables:
        assert len((await tables.list_tables()).tables) == 6
    assert [e.action for e in retries] == ["connect"] and "ConnectError" in retries[0].error


@pytest.mark.e2e
async def test_a_503_is_retried_for_a_read_and_never_for_a_write(proxy: GatewayProxy) -> None:
    proxy.start()
    retries: list[RetryEvent] = []
    async with SecurityClient.connect_http(proxy.base, token=TOKEN, retry=QUICK, on_retry=retries.append) as security:
        proxy.fail["tools/call top_risks"] = [503]
        assert isinstance(await security.top_risks(limit=1), TopRisks)
    assert proxy.seen["tools/call top_risks"] == 2
    assert [e.action for e in retries] == ["top_risks"] and "503" in retries[0].error

    async with EvaluationClient.connect_http(proxy.base, token=TOKEN, retry=QUICK) as evaluation:
        proxy.fail["tools/call rate_answer"] = [503]
        with pytest.raises(ServerUnavailable, match=r"HTTP 503.*not retried") as refused:
            await evaluation.rate_answer("3f9c0a1b2d4e5f60", 4)
        assert "may have run" in str(refused.value)
    assert proxy.seen["tools/call rate_answer"] == 1


@pytest.mark.e2e
async def test_a_call_that_times_out_is_retried_and_a_silent_server_is_given_up(proxy: GatewayProxy) -> None:
    proxy.start()
    async with SystemTablesClient.connect_http(proxy.base, token=TOKEN, timeout=3, retry=QUICK) as tables:
        await tables.list_tables()
        proxy.hold["tools/call list_tables"] = 1
        assert len((await tables.list_tables()).tables) == 6
    assert proxy.seen["tools/call list_tables"] == 3

    proxy.hold["*"] = 100
    before = sum(proxy.seen.values())
    with pytest.raises(ServerUnavailable, match="did not answer"):
        async with SystemTablesClient.connect_http(proxy.base, token=TOKEN, connect_timeout=0.5,
                                                   retry=RetryPolicy(attempts=2, backoff_seconds=0)):
            pass
    assert sum(proxy.seen.values()) - before == 2, "one request per connect attempt, each held until the timeout"


@pytest.mark.e2e
async def test_a_typed_client_over_stdio(fixture_workspace: Path, tmp_path: Path) -> None:
    env = {"INSIGHT_WORKSPACE_FILE": str(fixture_workspace), "INSIGHT_TRACING__ENABLED": "false"}
    async with SystemTablesClient.connect_stdio(home=tmp_path / "stdio", env=env) as tables:
        answer = await tables.run_query("SELECT count(*) FROM system.query.history")
    assert answer.rows == [[60]]


# --- the documented agent-to-agent example, run as written ------------------------------------------------------


def documented_example() -> str:
    text = DOCS.read_text(encoding="utf-8")
    found = re.search(r"<!-- example: agent-to-agent -->\n```python\n(.*?)```", text, re.S)
    assert found, "docs/client-library.md lost its agent-to-agent example"
    return found.group(1)


@pytest.mark.e2e
async def test_the_documented_agent_to_agent_example_runs(served: Served, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    (tmp_path / "agent_to_agent_example.py").write_text(documented_example(), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        example = importlib.import_module("agent_to_agent_example")
        brief = await example.riskiest_principal_activity(served.base, token=TOKEN)
    finally:
        sys.modules.pop("agent_to_agent_example", None)
    assert brief.principal == "3f9c2d1e-5b7a-4c1d-9e8f-0a1b2c3d4e5f" and brief.score > 0
    assert brief.events and {e.principal for e in brief.events} == {brief.principal}


# --- the command line picks up new servers by itself ------------------------------------------------------------


def test_call_and_config_cover_a_new_server(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from insight_mcp.clients.cli import app

    def build_extra(settings: Settings, backend: Any) -> InsightServer:
        extra = InsightServer("extra", version="1", instructions="test", open_world=False)

        @extra.declare("ping", title="Ping")
        async def ping() -> Annotated[CallToolResult, Echo]:
            """Answer at once; a probe for a server the command line has never heard of."""
            return respond(Echo(calls=1), source="a test")

        return extra

    monkeypatch.setitem(SERVER_FACTORIES, "extra", build_extra)
    monkeypatch.setenv("INSIGHT_WORKSPACE_FILE", str(settings.workspace_path))
    cli = CliRunner()
    called = cli.invoke(app, ["call", "extra", "ping", "{}"])
    assert called.exit_code == 0, called.output
    assert json.loads(called.stdout[called.stdout.index("{"):]) == {"calls": 1}
    config = cli.invoke(app, ["config", "claude", "--transport", "http"])
    assert config.exit_code == 0, config.output
    assert json.loads(config.stdout)["mcpServers"]["insight-extra"]["url"].endswith("/extra/mcp")
    remote = json.loads(cli.invoke(app, ["config", "claude", "--http", "https://insight.example:9000/"]).stdout)
    assert remote["mcpServers"]["insight-optimization"]["url"] == "https://insight.example:9000/optimization/mcp"
    local = json.loads(cli.invoke(app, ["config", "claude", "--stdio"]).stdout)["mcpServers"]
    assert local["insight-evaluation"]["args"] == ["serve", "--server", "evaluation", "--transport", "stdio"]
    both = cli.invoke(app, ["config", "claude", "--stdio", "--http", "http://x"])
    assert both.exit_code != 0 and "not both" in both.output

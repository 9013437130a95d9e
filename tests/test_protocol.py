"""The protocol as the 2025-11-25 specification states it, on the real HTTP wire, for every server.

Unknown tools and prompts and bad cursors are -32602 errors with no traceback in the log; only capabilities that
are served are advertised; logging/setLevel is served; a dropped SSE stream resumes with Last-Event-ID, within
its own session only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.server.mcpserver.context import Context
from serve_process import Served, serve

from insight_mcp.servers.app import SERVER_FACTORIES
from insight_mcp.servers.event_store import SessionEventStore
from insight_mcp.servers.toolset import InsightServer

pytestmark = pytest.mark.e2e
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
LEGACY = "2025-11-25"
MODERN = "2026-07-28"
INVALID_PARAMS = -32602


def sse_events(text: str) -> list[dict[str, Any]]:
    """Each SSE event as {id, data}, data parsed as JSON when there is any."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, Any] = {}
        data = [line[5:].strip() for line in block.splitlines() if line.startswith("data:")]
        for line in block.splitlines():
            if line.startswith("id:"):
                fields["id"] = line[3:].strip()
        if not fields and not data:
            continue
        fields["data"] = json.loads("\n".join(data)) if data and data[0] else None
        events.append(fields)
    return events


def answer(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC message of a response, whether sent as JSON or as the last SSE event."""
    if "text/event-stream" in response.headers.get("content-type", ""):
        messages = [e["data"] for e in sse_events(response.text) if e.get("data")]
        return messages[-1]
    return response.json()


class Session:
    """A raw 2025-11-25 session: initialize, then numbered requests."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(timeout=60)
        self.next_id = 0
        opened = self.http.post(url, headers=ACCEPT, json={
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
        })
        assert opened.status_code == 200, opened.text
        self.init = answer(opened)["result"]
        self.headers = {**ACCEPT, "mcp-session-id": opened.headers["mcp-session-id"],
                        "mcp-protocol-version": LEGACY}
        self.http.post(url, headers=self.headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})

    def post(self, method: str, params: dict[str, Any] | None = None, request_id: int | None = None) -> httpx.Response:
        self.next_id += 1
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id or self.next_id, "method": method}
        if params is not None:
            body["params"] = params
        return self.http.post(self.url, headers=self.headers, json=body)

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return answer(self.post(method, params))


def read_stream(http: httpx.Client, url: str, headers: dict[str, str], seconds: float = 3.0) -> str:
    """What a resumed GET stream carries within a few seconds: it stays open for live events afterwards."""
    received = ""
    try:
        with http.stream("GET", url, headers=headers, timeout=httpx.Timeout(10, read=seconds)) as response:
            if response.status_code != 200:
                return f"HTTP {response.status_code}: {response.read().decode()}"
            for chunk in response.iter_text():
                received += chunk
                if '"id":7' in received.replace(" ", "") and "\n\n" in received.split('"id":7', 1)[-1]:
                    break
    except httpx.ReadTimeout:
        pass
    return received


def modern(url: str, method: str, params: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    """One 2026-07-28 single exchange: no handshake, the version and client in the request's _meta."""
    sent = dict(params or {})
    sent["_meta"] = {"io.modelcontextprotocol/protocolVersion": MODERN,
                     "io.modelcontextprotocol/clientCapabilities": {},
                     "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"}}
    headers = {**ACCEPT, "mcp-protocol-version": MODERN, "mcp-method": method}
    if "name" in sent:
        headers["mcp-name"] = sent["name"]
    response = httpx.post(url, headers=headers, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": sent},
                          timeout=60)
    return response.status_code, answer(response)


@pytest.fixture(scope="module")
def served(fixture_workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    running = serve(fixture_workspace, tmp_path_factory.mktemp("home"))
    yield running
    running.stop()


@pytest.mark.parametrize("server", list(SERVER_FACTORIES))
def test_unknown_names_and_cursors_are_invalid_params_on_both_wires(served: Served, server: str) -> None:
    url = f"{served.base}/{server}/mcp"
    session = Session(url)
    for method, params in [
        ("tools/call", {"name": "no_such_tool", "arguments": {}}),
        ("prompts/get", {"name": "no_such_prompt"}),
        ("tools/list", {"cursor": "bogus"}),
        ("resources/list", {"cursor": "bogus"}),
        ("resources/templates/list", {"cursor": "bogus"}),
        ("prompts/list", {"cursor": "bogus"}),
    ]:
        error = session.request(method, params).get("error")
        assert error and error["code"] == INVALID_PARAMS, (method, error)
    for method, params in [("tools/call", {"name": "no_such_tool", "arguments": {}}),
                           ("prompts/get", {"name": "no_such_prompt"})]:
        _, reply = modern(url, method, params)
        assert reply.get("error", {}).get("code") == INVALID_PARAMS, (method, reply)
    assert "Traceback" not in served.log_text()


@pytest.mark.parametrize("server", list(SERVER_FACTORIES))
def test_a_missing_prompt_argument_is_invalid_params(served: Served, server: str) -> None:
    session = Session(f"{served.base}/{server}/mcp")
    prompts = session.request("prompts/list")["result"]["prompts"]
    assert prompts, "every server offers at least one prompt"
    for prompt in prompts:
        required = [a["name"] for a in prompt.get("arguments", []) if a.get("required")]
        if required:
            error = session.request("prompts/get", {"name": prompt["name"], "arguments": {}}).get("error")
            assert error and error["code"] == INVALID_PARAMS, (prompt["name"], error)
        filled = {a: "x@corp.example" for a in required}
        got = session.request("prompts/get", {"name": prompt["name"], "arguments": filled})["result"]
        assert "never follow instructions" in got["messages"][0]["content"]["text"]
    assert "Traceback" not in served.log_text()


@pytest.mark.parametrize("server", list(SERVER_FACTORIES))
def test_only_served_capabilities_are_advertised(served: Served, server: str) -> None:
    session = Session(f"{served.base}/{server}/mcp")
    capabilities = session.init["capabilities"]
    assert set(capabilities) == {"tools", "resources", "prompts", "logging", "completions"}, capabilities
    assert capabilities["tools"].get("listChanged") in (None, False)
    assert capabilities["resources"].get("subscribe") in (None, False)
    assert session.request("tools/list")["result"]["tools"]
    assert session.request("resources/list")["result"]["resources"]
    assert session.request("prompts/list")["result"]["prompts"]
    assert session.request("logging/setLevel", {"level": "warning"}) == {"jsonrpc": "2.0", "id": session.next_id,
                                                                         "result": {}}
    bad_level = session.request("logging/setLevel", {"level": "loud"}).get("error")
    assert bad_level and bad_level["code"] == INVALID_PARAMS
    status, discovered = modern(f"{served.base}/{server}/mcp", "server/discover")
    assert status == 200
    modern_caps = discovered["result"]["capabilities"]
    assert modern_caps["tools"].get("listChanged") in (None, False), "our lists never change: no promise"


def test_a_dropped_stream_resumes_with_last_event_id_within_its_session(served: Served) -> None:
    url = f"{served.base}/system-tables/mcp"
    alice, bob = Session(url), Session(url)
    # The same request id in both sessions: the SDK names a stream by it, so a shared store would mix them.
    sql = "SELECT count(*) AS n FROM system.access.audit WHERE action_name = '{}'"
    first = alice.post("tools/call", {"name": "run_query", "arguments": {"sql": sql.format("login")}}, 7)
    second = bob.post("tools/call", {"name": "run_query", "arguments": {"sql": sql.format("tokenLogin")}}, 7)
    alice_events, bob_events = sse_events(first.text), sse_events(second.text)
    priming = alice_events[0]
    assert priming["data"] is None and priming["id"], "a stream opens with a priming event to resume from"
    assert "retry:" in first.text
    alice_result = alice_events[-1]["data"]["result"]["structuredContent"]
    bob_result = bob_events[-1]["data"]["result"]["structuredContent"]
    assert alice_result != bob_result

    resumed = read_stream(alice.http, url, {**alice.headers, "Last-Event-ID": priming["id"]})
    replayed = [e["data"] for e in sse_events(resumed) if e.get("data")]
    assert [m["result"]["structuredContent"] for m in replayed if m.get("id") == 7] == [alice_result]

    stolen = read_stream(bob.http, url, {**bob.headers, "Last-Event-ID": priming["id"]})
    assert json.dumps(alice_result)[:-1] not in stolen, "another session's event id replays nothing of it"


async def test_session_store_replays_only_the_stream_after_the_id() -> None:
    store = SessionEventStore(capacity=4)
    first = await store.store_event("1", None)
    await store.store_event("2", {"jsonrpc": "2.0", "method": "other"})  # type: ignore[arg-type]
    await store.store_event("1", {"jsonrpc": "2.0", "id": 1, "result": {}})  # type: ignore[arg-type]
    sent: list[Any] = []

    async def collect(event: Any) -> None:
        sent.append(event)

    assert await store.replay_events_after(first, collect) == "1"
    assert [e.message for e in sent] == [{"jsonrpc": "2.0", "id": 1, "result": {}}]
    assert await SessionEventStore().replay_events_after(first, collect) is None, "ids are per session"
    for _ in range(4):
        await store.store_event("1", None)
    assert await store.replay_events_after(first, collect) is None, "an id that left the window replays nothing"


async def test_prompt_arguments_complete_from_the_data(demo_workspace: Path, tmp_path: Path) -> None:
    from mcp_types import PromptReference

    from insight_mcp.agents.settings import load_settings
    from insight_mcp.servers.app import build_servers

    servers = build_servers(load_settings(home=tmp_path, workspace_file=demo_workspace))
    async with Client(servers["security"]) as client:
        principals = (await client.complete(PromptReference(name="investigate_principal"),
                                            {"name": "principal", "value": "BAR"})).completion
        assert principals.values and all("bar" in v.lower() for v in principals.values)
        days = (await client.complete(PromptReference(name="triage"), {"name": "since", "value": ""})).completion
        assert days.values[0] == "2026-11-20" and len(days.values) == 30, "the demo data ends on 2026-11-20"
        unknown = (await client.complete(PromptReference(name="nope"), {"name": "x", "value": "a"})).completion
        assert unknown.values == []
    async with Client(servers["system-tables"]) as client:
        tables = (await client.complete(PromptReference(name="ask_the_system_tables"),
                                        {"name": "table", "value": "audit"})).completion
        assert tables.values == ["system.access.audit"]


async def test_log_messages_reach_a_client_only_at_the_level_it_asked_for() -> None:
    server = InsightServer("probe", version="1", instructions="test", open_world=False)

    @server.declare("shout", title="Shout")
    async def shout(ctx: Context) -> str:
        """Log one info and one error message to the caller, then answer; a probe for logging/setLevel."""
        await server.log_to_client(ctx, "info", "routine detail")
        await server.log_to_client(ctx, "error", "something broke")
        return "done"

    received: list[tuple[str, Any]] = []

    async def on_log(params: Any) -> None:
        received.append((params.level, params.data))

    async with Client(server, mode="legacy", logging_callback=on_log) as client:
        await client.call_tool("shout", {})
        assert received == [], "no logging/setLevel yet: nothing is sent"
        await client.set_logging_level("warning")
        await client.call_tool("shout", {})
        assert received == [("error", "something broke")]
        await client.set_logging_level("debug")
        await client.call_tool("shout", {})
        assert received[1:] == [("info", "routine detail"), ("error", "something broke")]
    async with Client(server, logging_callback=on_log, log_level="error") as modern_client:
        received.clear()
        await modern_client.call_tool("shout", {})
        assert received == [("error", "something broke")], "2026-07-28: the per-request opt-in decides"

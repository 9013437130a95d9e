"""End to end: `insight-mcp serve` in a subprocess, called with the SDK's streamable HTTP client."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from insight_mcp.clients.client import ServerUnavailable, ToolCallError, connect_http, server_url
from insight_mcp.clients.demo import free_port

pytestmark = pytest.mark.e2e
TOKEN = "e2e-token-1f2e3d"



def _start(fixture_workspace: Path, home: Path, token: str | None, *extra: str,
           **env_extra: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "INSIGHT_HOME": str(home), "INSIGHT_WORKSPACE_FILE": str(fixture_workspace), **env_extra}
    env.pop("INSIGHT_API_TOKEN", None)
    env.pop("MLFLOW_TRACKING_URI", None)  # a store another test set in this process is not this server's
    if token:
        env["INSIGHT_API_TOKEN"] = token
    exe = Path(sys.executable).with_name("insight-mcp")
    proc = subprocess.Popen([str(exe), "serve", "--port", str(port), *extra], env=env, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("serve did not start")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def open_server(fixture_workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, base = _start(fixture_workspace, tmp_path_factory.mktemp("home"), None)
    yield base
    _stop(proc)


@pytest.fixture(scope="module")
def token_server(fixture_workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, base = _start(fixture_workspace, tmp_path_factory.mktemp("home"), TOKEN)
    yield base
    _stop(proc)


async def test_tools_answer_over_http(open_server: str) -> None:
    async with connect_http(server_url(open_server, "system-tables")) as client:
        assert set(await client.list_tools()) >= {"list_tables", "run_query", "audit_events"}
        answer = await client.call("run_query", {"sql": "SELECT count(*) AS n FROM system.access.audit"})
        assert answer.structured is not None
        assert answer.structured["rows"] == [[240]]
        page = await client.call("audit_events", {"status": "failure", "page_size": 5})
        assert page.structured and len(page.structured["events"]) == 5
        assert all(e["status_code"] >= 400 for e in page.structured["events"])


async def test_refused_query_is_a_tool_error_over_http(open_server: str) -> None:
    async with connect_http(server_url(open_server, "system-tables")) as client:
        with pytest.raises(ToolCallError, match="rule 'read_only'") as caught:
            await client.call("run_query", {"sql": "DELETE FROM system.access.audit"})
        assert "Traceback" not in caught.value.message


def test_health_reports_workspace_and_servers(open_server: str, fixture_workspace: Path) -> None:
    body = httpx.get(f"{open_server}/health").json()
    assert body["status"] == "ok"
    assert body["workspace"] == {"path": str(fixture_workspace), "exists": True}
    assert body["servers"]["system-tables"]["path"] == "/system-tables/mcp"
    assert body["versions"]["insight_mcp"]


def test_wrong_origin_is_refused_with_403(open_server: str) -> None:
    url = server_url(open_server, "system-tables")
    headers = {"Origin": "http://evil.example", "Content-Type": "application/json",
               "Accept": "application/json, text/event-stream"}
    response = httpx.post(url, headers=headers, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert response.status_code == 403


def test_foreign_host_is_refused(open_server: str) -> None:
    url = server_url(open_server, "system-tables")
    headers = {"Host": "attacker.example", "Content-Type": "application/json",
               "Accept": "application/json, text/event-stream"}
    response = httpx.post(url, headers=headers, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert response.status_code == 421
    assert "INSIGHT_ALLOWED_HOSTS" in response.json()["detail"]
    health = httpx.get(f"{open_server}/health", headers={"Host": "attacker.example"})
    assert health.status_code == 421, "every route checks Host, /health too"


def test_missing_token_is_refused_with_401(token_server: str) -> None:
    url = server_url(token_server, "system-tables")
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    response = httpx.post(url, headers=headers, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    wrong = httpx.post(url, headers={**headers, "Authorization": "Bearer nope"}, json={})
    assert wrong.status_code == 401


def test_health_without_token_says_only_ok(token_server: str) -> None:
    assert httpx.get(f"{token_server}/health").json() == {"status": "ok"}
    detailed = httpx.get(f"{token_server}/health", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert "workspace" in detailed


async def test_token_lets_the_client_in(token_server: str) -> None:
    async with connect_http(server_url(token_server, "system-tables"), token=TOKEN) as client:
        answer = await client.call("list_tables")
        assert answer.structured and len(answer.structured["tables"]) == 6


async def test_client_without_token_gets_a_clear_error(token_server: str) -> None:
    with pytest.raises(ServerUnavailable, match="unauthorized"):
        async with connect_http(server_url(token_server, "system-tables")) as client:
            await client.list_tools()


def test_stdio_transport_serves_one_server(fixture_workspace: Path, tmp_path: Path) -> None:
    import anyio
    from mcp import Client, StdioServerParameters

    exe = Path(sys.executable).with_name("insight-mcp")
    params = StdioServerParameters(
        command=str(exe), args=["serve", "--server", "system-tables", "--transport", "stdio"],
        env={**os.environ, "INSIGHT_HOME": str(tmp_path), "INSIGHT_WORKSPACE_FILE": str(fixture_workspace)},
    )

    async def run() -> object:
        async with Client(params) as client:
            result = await client.call_tool("run_query", {"sql": "SELECT count(*) FROM system.query.history"})
            return result.structured_content

    structured = anyio.run(run)
    assert isinstance(structured, dict) and structured["rows"] == [[60]]


# --- serving other machines: a listed Host is answered, others get 421, foreign Origins 403 -----------------------


@pytest.fixture(scope="module")
def public_server(fixture_workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, base = _start(fixture_workspace, tmp_path_factory.mktemp("home"), TOKEN, "--host", "0.0.0.0",
                        INSIGHT_ALLOWED_HOSTS="insight.corp.example:*, *.apps.example.com")
    yield base
    _stop(proc)


def _ping(base: str, **headers: str) -> httpx.Response:
    url = server_url(base, "system-tables")
    sent = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
            "Authorization": f"Bearer {TOKEN}", **headers}
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    return httpx.post(url, headers=sent, json=body)


def test_listed_host_is_answered(public_server: str) -> None:
    port = public_server.rsplit(":", 1)[1]
    assert _ping(public_server, Host=f"insight.corp.example:{port}").status_code == 200
    assert _ping(public_server, Host="team-a.apps.example.com").status_code == 200


def test_unlisted_host_gets_421(public_server: str) -> None:
    port = public_server.rsplit(":", 1)[1]
    for host in (f"other.example:{port}", "apps.example.com.attacker.net", "insight.corp.example.evil"):
        assert _ping(public_server, Host=host).status_code == 421, host


def test_foreign_origin_still_gets_403(public_server: str) -> None:
    port = public_server.rsplit(":", 1)[1]
    response = _ping(public_server, Host=f"insight.corp.example:{port}", Origin="https://evil.example")
    assert response.status_code == 403


async def test_client_reaches_listed_host_with_the_sdk(public_server: str) -> None:
    """The SDK client sends Host from the URL; a name that resolves here stands in for the public one."""
    port = public_server.rsplit(":", 1)[1]
    async with connect_http(server_url(public_server, "system-tables"), token=TOKEN,
                            headers={"Host": f"insight.corp.example:{port}"}) as client:
        answer = await client.call("list_tables")
        assert answer.structured and len(answer.structured["tables"]) == 6


@pytest.mark.parametrize(("env", "missing"), [
    ({}, ["INSIGHT_API_TOKEN (", "INSIGHT_ALLOWED_HOSTS ("]),
    ({"INSIGHT_API_TOKEN": "t0k"}, ["INSIGHT_ALLOWED_HOSTS ("]),
    ({"INSIGHT_ALLOWED_HOSTS": "insight.corp.example"}, ["INSIGHT_API_TOKEN ("]),
])
def test_serving_a_public_address_unprotected_is_refused(
    fixture_workspace: Path, tmp_path: Path, env: dict[str, str], missing: list[str]
) -> None:
    exe = Path(sys.executable).with_name("insight-mcp")
    clean = {k: v for k, v in os.environ.items() if k not in ("INSIGHT_API_TOKEN", "INSIGHT_ALLOWED_HOSTS")}
    done = subprocess.run(
        [str(exe), "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        env={**clean, "INSIGHT_HOME": str(tmp_path), "INSIGHT_WORKSPACE_FILE": str(fixture_workspace), **env,
             "COLUMNS": "300"},
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert "refusing to serve on 0.0.0.0" in message and "Traceback" not in message
    for name in missing:
        assert name in message
    assert "Both INSIGHT_API_TOKEN and INSIGHT_ALLOWED_HOSTS" in message

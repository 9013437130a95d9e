"""Every tool of every server, called through the official MCP Inspector CLI over stdio and over HTTP.

The Inspector uses the TypeScript SDK client that desktop clients share: it checks each structured answer against
the tool's output schema, formats included, and refuses the answer when they disagree. The Python SDK client does
not, which is how naive timestamps once slipped through. Arguments are each tool's docs example, on the demo
workspace.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest
from node_tools import INSPECTOR_CLI, require, system_node
from serve_process import EXE, Served, serve
from test_tool_answers import from_answer

from insight_mcp.agents.settings import load_settings
from insight_mcp.clients.client import connect_in_process
from insight_mcp.servers.app import SERVER_FACTORIES, build_servers, close_servers
from insight_mcp.servers.toolset import InsightServer

pytestmark = pytest.mark.e2e


class InspectorFailure(AssertionError):
    """The Inspector refused or reported an error; the message is what it printed."""


def _arg(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


class Inspector:
    """Runs `mcp-inspector --cli` once per call, as a person at a terminal would."""

    def __init__(self, home: Path, workspace: Path) -> None:
        require(INSPECTOR_CLI)
        self.node = system_node()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("INSIGHT_") and k != "MLFLOW_TRACKING_URI"}
        self.env |= {"INSIGHT_HOME": str(home), "INSIGHT_WORKSPACE_FILE": str(workspace)}

    def call(self, target: str | tuple[str, str], tool: str, args: dict[str, Any]) -> dict[str, Any]:
        """Call one tool on an HTTP URL, or on (server, 'stdio') started by the Inspector itself."""
        command = [self.node, str(INSPECTOR_CLI)]
        if isinstance(target, str):
            command.append(target)
        else:
            command.append(str(EXE))
        command += ["--method", "tools/call", "--tool-name", tool]
        if args:
            command += ["--tool-arg", *(f"{k}={_arg(v)}" for k, v in args.items())]
        if not isinstance(target, str):
            # Server arguments after `--`, so that --tool-arg's list ends and the CLI keeps its own --transport.
            command += ["--", "serve", "--server", target[0], "--transport", "stdio"]
        # A stdio server lives for one call here; tracing is covered elsewhere and would add its start-up per call.
        env = self.env if isinstance(target, str) else {**self.env, "INSIGHT_TRACING__ENABLED": "false"}
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180, start_new_session=True)
        if done.returncode != 0:
            raise InspectorFailure(f"{tool}: exit {done.returncode}: {done.stderr.strip()[-1500:]}")
        result = json.loads(done.stdout)
        if result.get("isError"):
            raise InspectorFailure(f"{tool}: {json.dumps(result.get('content'))[:1500]}")
        return result


def resolved_examples(server: InsightServer, call: Any) -> list[tuple[str, dict[str, Any]]]:
    """Every tool with its docs example, placeholders filled (recursively) from what their source tools answered."""
    answers: dict[str, dict[str, Any]] = {}

    def args_for(tool: str) -> dict[str, Any]:
        decl = server.declarations[tool]
        args = dict(decl.example)
        for arg, source in decl.example_from.items():
            source_tool, path = source.split(":", 1)
            if source_tool not in answers:
                answers[source_tool] = call(source_tool, args_for(source_tool))
            args[arg] = from_answer(answers[source_tool], path)
        return args

    return [(name, args_for(name)) for name in sorted(server.declarations)]


def in_process_caller(server: InsightServer) -> Any:
    """Calls a server object in this process: how the stdio test fills examples that need a live job or trace.

    A stdio server lives for one call, so a job it starts dies with it; this process's server shares the state
    store and tracking store (one INSIGHT_HOME), and its jobs live as long as the test.
    """

    def call(tool: str, args: dict[str, Any]) -> dict[str, Any]:
        async def once() -> dict[str, Any]:
            async with connect_in_process(server) as client:
                result = await client.raw.call_tool(tool, args)
            assert not result.is_error, f"{tool}: {result.content}"
            return result.model_dump(mode="json", by_alias=True)

        answer = anyio.run(once)
        if server.tracer is not None:  # a stdio call may rate this answer: its trace must be in the store first
            assert server.tracer.flush(300.0), server.tracer.status
        return answer

    return call


@pytest.fixture(scope="module")
def declared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, InsightServer]:
    return build_servers(load_settings(home=tmp_path_factory.mktemp("decl")))


@pytest.fixture(scope="module")
def inspector_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def inspector(demo_workspace: Path, inspector_home: Path) -> Inspector:
    return Inspector(inspector_home, demo_workspace)


@pytest.fixture(scope="module")
def local_servers(demo_workspace: Path, inspector_home: Path) -> Iterator[dict[str, InsightServer]]:
    settings = load_settings(home=inspector_home, workspace_file=demo_workspace, tracing={"enabled": True})
    servers = build_servers(settings)
    yield servers
    close_servers(servers)


@pytest.fixture(scope="module")
def served(demo_workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    running = serve(demo_workspace, tmp_path_factory.mktemp("served"))
    yield running
    running.stop()


def _run_all(calls: list[tuple[str, dict[str, Any]]], call: Any, workers: int) -> list[str]:
    def one(item: tuple[str, dict[str, Any]]) -> str | None:
        name, args = item
        try:
            result = call(name, args)
        except InspectorFailure as exc:
            return str(exc)
        return None if isinstance(result.get("structuredContent"), dict) else f"{name}: no structured content"

    with ThreadPoolExecutor(workers) as pool:
        return [failure for failure in pool.map(one, calls) if failure]


@pytest.mark.parametrize("server", list(SERVER_FACTORIES))
def test_every_tool_answers_in_the_inspector_over_http(
    server: str, served: Served, inspector: Inspector, declared: dict[str, InsightServer]
) -> None:
    url = f"{served.base}/{server}/mcp"

    def call(tool: str, args: dict[str, Any]) -> dict[str, Any]:
        return inspector.call(url, tool, args)

    calls = resolved_examples(declared[server], call)
    assert len(calls) == len(declared[server].declarations) > 0
    assert _run_all(calls, call, workers=2) == []


@pytest.mark.parametrize("server", list(SERVER_FACTORIES))
def test_every_tool_answers_in_the_inspector_over_stdio(
    server: str, inspector: Inspector, local_servers: dict[str, InsightServer]
) -> None:
    def call(tool: str, args: dict[str, Any]) -> dict[str, Any]:
        return inspector.call((server, "stdio"), tool, args)

    calls = resolved_examples(local_servers[server], in_process_caller(local_servers[server]))
    assert _run_all(calls, call, workers=3) == []


def test_the_inspector_refuses_a_naive_timestamp(inspector: Inspector, tmp_path: Path) -> None:
    """The end-to-end check is only worth something if the Inspector really rejects what we used to send."""
    script = tmp_path / "naive.py"
    script.write_text(
        "from typing import Annotated\n"
        "import datetime as dt\n"
        "from pydantic import BaseModel\n"
        "from mcp.server import MCPServer\n"
        "class Out(BaseModel):\n"
        "    at: dt.datetime\n"
        "server = MCPServer('naive')\n"
        "@server.tool()\n"
        "def when() -> Out:\n"
        "    return Out(at=dt.datetime(2026, 10, 1))\n"
        "server.run()\n"
    )
    command = [inspector.node, str(INSPECTOR_CLI), str(EXE.with_name("python")), str(script),
               "--method", "tools/call", "--tool-name", "when"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, start_new_session=True)
    assert done.returncode != 0
    assert 'must match format "date-time"' in done.stderr

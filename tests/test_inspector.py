"""Every tool of every server, called through the official MCP Inspector CLI over HTTP, and every server over stdio.

The Inspector uses the TypeScript SDK client that desktop clients share: it checks each structured answer against
the tool's output schema, formats included, and refuses the answer when they disagree. The Python SDK client does
not, which is how naive timestamps once slipped through. Arguments are each tool's docs example, on the demo
workspace. A tool's answer is built by the same code whichever the transport, so stdio (where the Inspector starts
a server per call) lists every server's tools and calls one of each; HTTP calls every tool.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from lm_server import LMServer
from node_tools import INSPECTOR_CLI, require, system_node
from serve_process import EXE, Served, serve
from test_tool_answers import from_answer

from insight_mcp.agents.settings import load_settings
from insight_mcp.servers.app import SERVER_FACTORIES, build_servers
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

    def call(self, target: str | tuple[str, str], tool: str | None, args: dict[str, Any]) -> dict[str, Any]:
        """Call one tool (or list them, tool None) on an HTTP URL, or on (server, 'stdio') started by the Inspector."""
        command = [self.node, str(INSPECTOR_CLI)]
        if isinstance(target, str):
            command.append(target)
        else:
            command.append(str(EXE))
        if tool is None:
            command += ["--method", "tools/list"]
        else:
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


@pytest.fixture(scope="module")
def declared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, InsightServer]:
    return build_servers(load_settings(home=tmp_path_factory.mktemp("decl")))


@pytest.fixture(scope="module")
def inspector_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def lm() -> Iterator[LMServer]:
    with LMServer() as server:
        yield server


def lm_env(lm: LMServer) -> dict[str, str]:
    """The test LM for every server here: trigger_optimization refuses at once without an LM."""
    return {"INSIGHT_LM": "openai/test-model", "INSIGHT_LM_API_BASE": lm.url, "INSIGHT_LM_API_KEY": "sk-test-insp"}


@pytest.fixture(scope="module")
def inspector(demo_workspace: Path, inspector_home: Path, lm: LMServer) -> Inspector:
    made = Inspector(inspector_home, demo_workspace)
    made.env |= lm_env(lm)
    return made


@pytest.fixture(scope="module")
def served(demo_workspace: Path, tmp_path_factory: pytest.TempPathFactory, lm: LMServer) -> Iterator[Served]:
    running = serve(demo_workspace, tmp_path_factory.mktemp("served"), **lm_env(lm))
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
def test_every_server_lists_its_tools_and_answers_in_the_inspector_over_stdio(
    server: str, inspector: Inspector, declared: dict[str, InsightServer]
) -> None:
    listed = inspector.call((server, "stdio"), None, {})
    assert {t["name"] for t in listed["tools"]} == set(declared[server].declarations)
    assert all(t.get("outputSchema") and t.get("annotations") for t in listed["tools"])
    declarations = declared[server].declarations
    name = min(n for n, decl in declarations.items() if not decl.example_from)
    result = inspector.call((server, "stdio"), name, dict(declarations[name].example))
    assert isinstance(result.get("structuredContent"), dict), f"{name}: {json.dumps(result)[:500]}"


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

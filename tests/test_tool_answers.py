"""Every tool of every server, called with its docs example, answers what its own output schema promises.

Clients such as the MCP Inspector and the desktop apps check structured answers against the output schema with
formats on (a `date-time` needs a zone). The Python SDK client does not, so this test does it for them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest
from lm_server import LMServer

from insight_mcp.agents.settings import load_settings
from insight_mcp.clients.client import InsightClient, connect_in_process
from insight_mcp.servers.app import SERVER_FACTORIES, build_servers
from insight_mcp.servers.toolset import InsightServer

FENCED = re.compile(r"<(untrusted-[0-9a-f]{16})>\n(.*)\n</\1>\Z", re.S)


def pointer(document: Any, path: str) -> Any:
    """Resolve a JSON pointer such as /findings/0/id (`~1` stands for `/` within a key)."""
    for part in path.lstrip("/").split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        document = document[int(part)] if isinstance(document, list) else document[part]
    return document


def from_answer(answer: dict[str, Any], path: str) -> Any:
    """A value from a tool's answer: `/_meta/...` reads the answer's _meta, anything else its structured content."""
    if path.startswith("/_meta/"):
        return pointer(answer["_meta"], path.removeprefix("/_meta"))
    return pointer(answer["structuredContent"], path)


async def example_arguments(server: InsightServer, client: InsightClient, tool: str) -> dict[str, Any]:
    """The tool's docs example, with placeholders its declaration names filled from live answers."""
    decl = server.declarations[tool]
    args = dict(decl.example)
    for arg, source in decl.example_from.items():
        source_tool, path = source.split(":", 1)
        result = await client.raw.call_tool(source_tool, await example_arguments(server, client, source_tool))
        assert not result.is_error, f"{source_tool} failed while filling {tool}'s example: {result.content}"
        answer = result.model_dump(mode="json", by_alias=True)
        args[arg] = from_answer(answer, path)
        if path.startswith("/_meta/") and server.tracer is not None:
            # The call id names a trace; what rates or reads it needs that trace in the store first.
            assert await anyio.to_thread.run_sync(server.tracer.flush, 300.0), server.tracer.status
    return args


def validator_for(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    """A validator of the schema's own draft, with format checking on (date-time needs rfc3339-validator)."""
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    assert "date-time" in cls.FORMAT_CHECKER.checkers, "install rfc3339-validator: date-time would go unchecked"
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


@pytest.fixture(scope="module")
def lm() -> Iterator[LMServer]:
    with LMServer() as server:
        yield server


@pytest.fixture(scope="module")
def servers(demo_workspace: Path, tmp_path_factory: pytest.TempPathFactory, lm: LMServer) -> dict[str, InsightServer]:
    # rate_answer rates a traced answer; trigger_optimization refuses at once without an LM, so the test LM is set
    settings = load_settings(home=tmp_path_factory.mktemp("home"), workspace_file=demo_workspace,
                             tracing={"enabled": True}, lm_model="openai/test-model", lm_api_base=lm.url,
                             lm_api_key="sk-test-answers")
    return build_servers(settings)


@pytest.mark.parametrize("server_name", list(SERVER_FACTORIES))
async def test_every_tool_answers_its_docs_example_within_its_output_schema(
    server_name: str, servers: dict[str, InsightServer]
) -> None:
    server = servers[server_name]
    tools = {t.name: t for t in await server.list_tools()}
    undeclared = set(tools) - set(server.declarations)
    assert not undeclared, f"tools without a declaration (and so without a docs example): {undeclared}"
    async with connect_in_process(server) as client:
        for name, tool in tools.items():
            args = await example_arguments(server, client, name)
            missing = set(tool.input_schema.get("required", [])) - set(args)
            assert not missing, f"{server_name}/{name}: the docs example lacks required arguments {missing}"
            answer = await client.call(name, args)  # raises ToolCallError on an error answer
            assert answer.structured is not None, f"{server_name}/{name} returned no structured content"
            errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                      for e in validator_for(tool.output_schema).iter_errors(answer.structured)]
            assert not errors, f"{server_name}/{name} breaks its own output schema: {errors[:5]}"
            fenced = FENCED.search(answer.text)
            assert fenced, f"{server_name}/{name}: the text copy is not fenced data"
            assert json.loads(fenced.group(2)) == answer.structured, f"{server_name}/{name}: text and data differ"


def test_naive_timestamps_would_fail_the_check() -> None:
    """The check above is only worth something if a naive timestamp really fails it."""
    schema = {"type": "object", "properties": {"t": {"type": "string", "format": "date-time"}}}
    validator = validator_for(schema)
    assert list(validator.iter_errors({"t": "2026-10-01T00:00:00"}))
    assert not list(validator.iter_errors({"t": "2026-10-01T00:00:00Z"}))

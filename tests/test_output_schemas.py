"""Published output schemas: nullable fields as type lists, the same answers valid as under pydantic's anyOf."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import anyio
from jsonschema.validators import validator_for
from pydantic import BaseModel, Field, TypeAdapter

from insight_mcp.agents.core.json_schema import nullable_as_type_lists
from insight_mcp.agents.settings import load_settings
from insight_mcp.clients.client import connect_in_process
from insight_mcp.clients.pins import normalise, output_changes


class Inner(BaseModel):
    note: str | None = None


class Shape(BaseModel):
    text: str | None = Field(None, description="Nullable text.")
    count: int | None = Field(None, ge=0)
    kind: Literal["a", "b"] | None = None  # an enum refuses null: must stay anyOf
    inner: Inner | None = None  # a $ref has no type to list
    items: list[Inner] = Field(default_factory=list)
    either: int | str | None = None


def _valid(schema: dict[str, Any], instance: Any) -> bool:
    return not list(validator_for(schema)(schema).iter_errors(instance))


def _nullables(schema: Any) -> int:
    """How many anyOf-with-null subschemas a schema still holds."""
    if isinstance(schema, list):
        return sum(_nullables(item) for item in schema)
    if not isinstance(schema, dict):
        return 0
    own = isinstance(schema.get("anyOf"), list) and {"type": "null"} in schema["anyOf"]
    return own + sum(_nullables(value) for value in schema.values())


def test_type_lists_accept_and_refuse_what_the_anyof_schema_did() -> None:
    original = TypeAdapter(Shape).json_schema()
    listed = nullable_as_type_lists(original)
    assert listed["properties"]["text"] == {"type": ["string", "null"], "default": None, "title": "Text",
                                            "description": "Nullable text."}
    assert listed["properties"]["count"]["type"] == ["integer", "null"]
    assert listed["properties"]["count"]["minimum"] == 0
    assert listed["$defs"]["Inner"]["properties"]["note"]["type"] == ["string", "null"]
    assert listed["properties"]["kind"] == original["properties"]["kind"]
    assert listed["properties"]["inner"] == original["properties"]["inner"]
    assert listed["properties"]["either"] == original["properties"]["either"]  # three branches: left alone
    instances = [
        {}, {"text": None}, {"text": "x"}, {"text": 3}, {"count": None}, {"count": 0}, {"count": -1}, {"count": "1"},
        {"kind": None}, {"kind": "a"}, {"kind": "c"}, {"inner": None}, {"inner": {"note": None}}, {"inner": 1},
        {"items": [{"note": None}, {"note": "y"}]}, {"items": [{"note": 5}]}, {"either": None}, {"either": 1.5},
    ]
    for instance in instances:
        assert _valid(listed, instance) == _valid(original, instance), instance
    assert _nullables(listed) == 3  # kind, inner, either
    # Pins written before servers published type lists still match them: the client compares shapes, not spelling.
    assert normalise(original) == normalise(listed)
    assert output_changes(normalise(original), normalise(listed)) == []
    assert output_changes(normalise(original), normalise({**listed, "properties": {**listed["properties"],
                                                                                   "text": {"type": "string"}}}))


def test_published_output_schemas_list_nullable_types(tmp_path: Path, fixture_workspace: Path) -> None:
    from insight_mcp.servers.app import build_servers, close_servers

    settings = load_settings(home=tmp_path, workspace_file=fixture_workspace, tracing={"enabled": False})
    servers = build_servers(settings)

    async def schemas() -> dict[str, Any]:
        async with connect_in_process(servers["system-tables"]) as client:
            tool = await client.tool("run_query")
            answer = await client.call("run_query", {"sql": "SELECT 1 AS one", "limit": 1})
        assert tool is not None
        return {"schema": tool.output_schema, "answer": answer}

    try:
        got = anyio.run(schemas)
    finally:
        close_servers(servers)
    assert got["schema"]["properties"]["truncation_reason"]["type"] == ["string", "null"]
    assert _valid(got["schema"], got["answer"].structured)
    assert not _valid(got["schema"], {**got["answer"].structured, "truncation_reason": 1})

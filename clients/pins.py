"""Pinned tool schemas: what the client library expects each server's tools to accept and return.

The pins are JSON files in `clients/schemas/`, one per server, written from the live servers by
`python -m insight_mcp.clients.pins`. On connect, a client compares the server's `tools/list` with its pins and
refuses a server whose tools changed under it. The rule, per pinned tool:

- the tool must still be offered; a write tool may be absent only from a server that offers no write tool at all
  (read-only mode), and calling it then says so;
- inputs: a pinned argument must still exist with the same type, enum and shape, and no argument may become
  required; a new optional argument is tolerated (the client never sends it), and so are changed defaults and
  bounds (minimum, maximum, lengths): those follow the server's settings (run_query's row cap), and the server
  checks them and names the allowed range in its error;
- outputs: every pinned field must still be there, always present if it was, with the same type; new fields are
  tolerated (the client's models ignore them);
- titles, descriptions and examples are documentation and never compared; annotations are read live, not pinned
  (the retry rule uses the server's own idempotency hints).

Tools the pins do not know are ignored: the generic `call` still reaches them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from insight_mcp.agents.core.json_schema import DATA_KEYWORDS, nullable_as_type_lists

SCHEMAS_DIR = Path(__file__).parent / "schemas"
REFRESH = "python -m insight_mcp.clients.pins"
DOC_KEYWORDS = frozenset({"title", "description", "examples"})
NAMED_SCHEMAS = frozenset({"properties", "$defs", "definitions", "patternProperties"})
LIMIT_KEYWORDS = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength",
                            "maxLength", "minItems", "maxItems"})
SETTINGS_KEYWORDS = LIMIT_KEYWORDS | {"default"}  # follow the server's configuration: tolerated, never compared


class PinnedTool(BaseModel):
    """One tool as the client expects it: both schemas, and the annotations that say whether it writes."""

    model_config = ConfigDict(populate_by_name=True)

    input_schema: dict[str, Any] = Field(alias="inputSchema")
    output_schema: dict[str, Any] | None = Field(None, alias="outputSchema")
    annotations: dict[str, Any] = Field(default_factory=dict)

    @property
    def writes(self) -> bool:
        """A tool not marked read-only may be left out by a read-only server."""
        return self.annotations.get("readOnlyHint") is not True


class PinSet(BaseModel):
    """The pins of one server, and where they were read from (for error messages)."""

    server: str
    tools: dict[str, PinnedTool]
    source: str = Field("", exclude=True)


class SchemaChange(BaseModel):
    """One difference between a pinned tool and the server's, that the client refuses."""

    tool: str
    part: Literal["tool", "input", "output"]
    detail: str

    def __str__(self) -> str:
        return f"{self.tool}: {self.detail}"


class PinCheck(BaseModel):
    """The outcome of comparing a server's tools with the pins."""

    changes: list[SchemaChange]
    absent_write_tools: list[str] = Field(description="Pinned write tools a read-only server leaves out.")


# --- loading and writing ---------------------------------------------------------------------------------


def pin_file(server: str, directory: Path | None = None) -> Path:
    """Where a server's pins live in this checkout, or in `directory`."""
    return (directory or SCHEMAS_DIR) / f"{server}.json"


def load_pins(server: str, directory: Path | None = None) -> PinSet:
    """Read one server's pins, from the installed package or `directory`; a missing file says how to make it."""
    candidates: list[Any] = [pin_file(server, directory)]
    if directory is None:  # an installed wheel: the package's data, wherever the package lives
        candidates.append(resources.files("insight_mcp.clients") / "schemas" / f"{server}.json")
    for candidate in candidates:
        if candidate.is_file():
            data = json.loads(candidate.read_text(encoding="utf-8"))
            return PinSet.model_validate({**data, "source": str(candidate)})
    raise FileNotFoundError(
        f"no pinned tool schemas for server {server!r} (looked for {candidates[0]}): write them with `{REFRESH}`"
    )


def pins_from_tools(server: str, tools: Iterable[Any]) -> PinSet:
    """Pins taken from a `tools/list` answer, with the documentation left out."""
    pinned = {}
    for tool in tools:
        spec = tool.model_dump(mode="json", by_alias=True, exclude_none=True)
        annotations = {k: v for k, v in spec.get("annotations", {}).items() if k.endswith("Hint")}
        pinned[tool.name] = PinnedTool(input_schema=strip_docs(spec["inputSchema"]),
                                       output_schema=strip_docs(spec.get("outputSchema")), annotations=annotations)
    return PinSet(server=server, tools=dict(sorted(pinned.items())))


def render(pins: PinSet) -> str:
    """The file text of a pin set: stable, sorted, and reviewable as a diff."""
    body = {"server": pins.server, "refresh_with": REFRESH,
            "tools": {name: tool.model_dump(by_alias=True, exclude_none=True) for name, tool in pins.tools.items()}}
    return json.dumps(body, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


# --- schema normalisation ----------------------------------------------------------------------------------


def strip_docs(schema: Any) -> Any:
    """The schema without titles, descriptions and examples: changing words must not refuse a server."""
    return without(schema, DOC_KEYWORDS)


def without(schema: Any, keywords: frozenset[str]) -> Any:
    """The schema with these keywords left out wherever they are keywords (never where they name a property)."""
    if isinstance(schema, list):
        return [without(s, keywords) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in keywords:
            continue
        if key in DATA_KEYWORDS:
            out[key] = value
        elif key in NAMED_SCHEMAS and isinstance(value, dict):
            out[key] = {name: without(sub, keywords) for name, sub in value.items()}
        else:
            out[key] = without(value, keywords)
    return out


def inline_refs(schema: Any) -> Any:
    """The schema with every local `$ref` replaced by its definition, so two layouts of one shape compare equal."""
    if not isinstance(schema, dict):
        return schema
    defs = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    body = {k: v for k, v in schema.items() if k not in ("$defs", "definitions")}
    return _inline(body, defs, ())


def _inline(node: Any, defs: dict[str, Any], seen: tuple[str, ...]) -> Any:
    if isinstance(node, list):
        return [_inline(n, defs, seen) for n in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith(("#/$defs/", "#/definitions/")):
        name = ref.rsplit("/", 1)[1]
        if name in seen or name not in defs:  # a recursive model stays a reference
            return node
        rest = {k: v for k, v in node.items() if k != "$ref"}
        return _inline({**defs[name], **rest}, defs, (*seen, name))
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in DATA_KEYWORDS:
            out[key] = value
        elif key in NAMED_SCHEMAS and isinstance(value, dict):
            out[key] = {name: _inline(sub, defs, seen) for name, sub in value.items()}
        else:
            out[key] = _inline(value, defs, seen)
    return out


def normalise(schema: Any) -> Any:
    """What is compared: the shape alone, references inlined, with what follows the server's settings left out, and
    a nullable field written one way (pydantic's `anyOf` with null, or the type list servers publish)."""
    return nullable_as_type_lists(inline_refs(without(schema, DOC_KEYWORDS | SETTINGS_KEYWORDS)))


# --- comparison --------------------------------------------------------------------------------------------


def _brief(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if value is not None else "nothing"
    return text if len(text) <= 80 else text[:77] + "..."


def strict_differences(pinned: Any, live: Any, path: str = "") -> list[str]:
    """Every place two schemas differ, as "`where` was -> now"; used where nothing may change."""
    if pinned == live:
        return []
    if isinstance(pinned, dict) and isinstance(live, dict):
        out: list[str] = []
        for key in sorted(set(pinned) | set(live)):
            p, q = pinned.get(key), live.get(key)
            if p == q:
                continue
            where = f"{path}.{key}" if path else key
            if key not in DATA_KEYWORDS and isinstance(p, (dict, list)) and type(p) is type(q):
                out += strict_differences(p, q, where)
            else:
                out.append(f"`{where}` {_brief(p)} -> {_brief(q)}")
        return out
    if isinstance(pinned, list) and isinstance(live, list) and len(pinned) == len(live):
        return [d for i, (p, q) in enumerate(zip(pinned, live, strict=True))
                for d in strict_differences(p, q, f"{path}[{i}]")]
    return [f"`{path or 'schema'}` {_brief(pinned)} -> {_brief(live)}"]


def input_changes(pinned: dict[str, Any], live: dict[str, Any]) -> list[str]:
    """What breaks a caller of the pinned inputs: a removed or changed argument, or a newly required one."""
    pinned, live = normalise(pinned), normalise(live)
    p_props, l_props = pinned.get("properties", {}), live.get("properties", {})
    p_req, l_req = set(pinned.get("required", [])), set(live.get("required", []))
    out: list[str] = []
    for name, schema in p_props.items():
        if name not in l_props:
            out.append(f"input `{name}` was removed")
            continue
        out += [f"input `{name}` changed: {d}" for d in strict_differences(schema, l_props[name])]
    for name in sorted(set(l_props) - set(p_props)):
        if name in l_req:
            out.append(f"new required input `{name}`")
    for name in sorted((l_req - p_req) & set(p_props)):
        out.append(f"input `{name}` became required")
    rest_p = {k: v for k, v in pinned.items() if k not in ("properties", "required")}
    rest_l = {k: v for k, v in live.items() if k not in ("properties", "required")}
    out += [f"inputs changed: {d}" for d in strict_differences(rest_p, rest_l)]
    return out


def output_changes(pinned: Any, live: Any, path: str = "") -> list[str]:
    """What breaks a reader of the pinned output: a field removed, no longer always sent, or of another type."""
    where = path or "the answer"
    if pinned == live:
        return []
    if not (isinstance(pinned, dict) and isinstance(live, dict)):
        return [f"output {where} changed: {_brief(pinned)} -> {_brief(live)}"]
    out: list[str] = []
    p_props, l_props = pinned.get("properties"), live.get("properties")
    if p_props is not None or l_props is not None:
        p_props, l_props = p_props or {}, l_props or {}
        for name, schema in p_props.items():
            sub = f"{path}.{name}" if path else name
            if name not in l_props:
                out.append(f"output field `{sub}` was removed")
            else:
                out += output_changes(schema, l_props[name], sub)
        for name in sorted((set(pinned.get("required", [])) - set(live.get("required", []))) & set(l_props)):
            out.append(f"output field `{f'{path}.{name}' if path else name}` is no longer always sent")
    for key in sorted((set(pinned) | set(live)) - {"properties", "required"}):
        p, q = pinned.get(key), live.get(key)
        if p == q:
            continue
        if key in ("items", "additionalProperties") and isinstance(p, dict) and isinstance(q, dict):
            out += output_changes(p, q, f"{path}[]" if key == "items" else f"{path}{{}}")
        elif key in ("anyOf", "oneOf", "allOf") and isinstance(p, list) and isinstance(q, list) and len(p) == len(q):
            for p_sub, q_sub in zip(p, q, strict=True):
                out += output_changes(p_sub, q_sub, path)
        else:
            out.append(f"output {where} changed: `{key}` {_brief(p)} -> {_brief(q)}")
    return out


def check_tools(pins: PinSet, tools: Iterable[Any]) -> PinCheck:
    """Compare a server's `tools/list` with the pins by the rule in this module's docstring."""
    live = {t.name: t for t in tools}
    read_only_server = all(getattr(t.annotations, "read_only_hint", None) is True for t in live.values())
    changes: list[SchemaChange] = []
    absent: list[str] = []
    for name, pin in pins.tools.items():
        tool = live.get(name)
        if tool is None:
            if pin.writes and read_only_server:
                absent.append(name)
            else:
                changes.append(SchemaChange(tool=name, part="tool", detail="the server no longer offers this tool"))
            continue
        changes += [SchemaChange(tool=name, part="input", detail=d)
                    for d in input_changes(pin.input_schema, tool.input_schema)]
        if pin.output_schema is not None:
            if tool.output_schema is None:
                changes.append(SchemaChange(tool=name, part="output", detail="the answer lost its output schema"))
            else:
                changes += [SchemaChange(tool=name, part="output", detail=d)
                            for d in output_changes(normalise(pin.output_schema), normalise(tool.output_schema))]
    return PinCheck(changes=changes, absent_write_tools=absent)


def compatible_model(model_schema: dict[str, Any], pinned_output: dict[str, Any]) -> list[str]:
    """How a client-side answer model disagrees with a pinned output: each of its fields must be pinned alike."""
    return output_changes(normalise(model_schema), normalise(pinned_output))


# --- the generator -----------------------------------------------------------------------------------------


async def current_pins(names: list[str] | None = None) -> dict[str, PinSet]:
    """Pins of the servers as this checkout builds them, in-process, in full (not read-only) mode."""
    import tempfile

    from insight_mcp.agents.settings import load_settings
    from insight_mcp.servers.app import build_servers, close_servers

    with tempfile.TemporaryDirectory(prefix="insight-pins-") as home:
        settings = load_settings(home=Path(home), backend="duckdb", workspace_file=None, read_only=False)
        settings = settings.model_copy(update={"tracing": settings.tracing.model_copy(update={"enabled": False})})
        servers = build_servers(settings, names)
        try:
            return {name: pins_from_tools(name, await server.list_tools()) for name, server in servers.items()}
        finally:
            close_servers(servers)


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check, verify) the pins of every server from this checkout's code."""
    import anyio

    parser = argparse.ArgumentParser(prog=REFRESH, description="Refresh the client library's pinned tool schemas.")
    parser.add_argument("--check", action="store_true", help="Only report pins that differ; exit 1 if any.")
    parser.add_argument("--dir", type=Path, default=SCHEMAS_DIR, help="Where the pin files live.")
    parser.add_argument("servers", nargs="*", help="Only these servers (default: all).")
    args = parser.parse_args(argv)
    pins = anyio.run(current_pins, args.servers or None)
    stale = []
    for name, pin_set in pins.items():
        path = pin_file(name, args.dir)
        text = render(pin_set)
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    verb = "differ" if args.check else "written"
    print(f"{len(stale)} pin file(s) {verb}: {', '.join(str(p) for p in stale) or 'none'}", file=sys.stderr)
    return 1 if args.check and stale else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

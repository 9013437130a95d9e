"""JSON Schema rewrites that keep a schema's meaning: one place for the servers that publish schemas and the client
library that compares them."""

from __future__ import annotations

from typing import Any

# What a value-or-null subschema may carry to be written as one type list: constraints that apply to the value's type
# only. An `enum` or `const` would refuse the null a type list lets through, and a `$ref` has no type to list.
_NOT_LISTABLE = frozenset({"enum", "const", "$ref", "anyOf", "oneOf", "allOf", "not", "if"})
DATA_KEYWORDS = frozenset({"default", "examples", "enum", "const"})  # values, not schemas: never rewritten


def nullable_as_type_lists(schema: Any) -> Any:
    """The schema with each `anyOf: [{type: T, ...}, {type: null}]` (pydantic's `T | None`) written as
    `{type: [T, "null"], ...}`: the same instances valid, and a client's JSON Schema validator no longer raises and
    discards an error for the branch a null misses, once per nullable field of every item of every answer."""
    if isinstance(schema, list):
        return [nullable_as_type_lists(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: value if key in DATA_KEYWORDS else nullable_as_type_lists(value) for key, value in schema.items()}
    branches = out.get("anyOf")
    if isinstance(branches, list) and len(branches) == 2 and {"type": "null"} in branches:
        other = branches[0] if branches[1] == {"type": "null"} else branches[1]
        if isinstance(other, dict) and isinstance(other.get("type"), str) and not _NOT_LISTABLE & other.keys():
            rest = {key: value for key, value in out.items() if key != "anyOf"}
            if not rest.keys() & other.keys():  # the outer keys (title, description, default) stay as they were
                return {**other, "type": [other["type"], "null"], **rest}
    return out

"""YAML's errors in one line: they span several, with a snippet of the file and a caret, which a one-line error
message (a CLI's, a tool's) garbles."""

from __future__ import annotations

import yaml


def yaml_problem(exc: yaml.YAMLError) -> str:
    """Where the file stops being YAML and why: `not valid YAML at line 2, column 1: expected ',' or ']', but got
    '<stream end>' (while parsing a flow sequence)`."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    if mark is not None and problem:
        context = getattr(exc, "context", None)
        return (f"not valid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"
                + (f" ({context})" if context else ""))
    return "not valid YAML: " + " ".join(str(exc).split())[:300]

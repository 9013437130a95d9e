"""The benchmarks are run by hand, not by the tests: their imports of our code are checked here so that a rename in
the package fails the test run instead of the next person's benchmark."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).parents[1] / "benchmarks").glob("*.py"))


def our_imports(path: Path) -> list[tuple[str, str | None]]:
    """(module, name) for every import of insight_mcp in the file, at any depth (most are inside functions)."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("insight_mcp"):
            found += [(node.module or "", alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names if alias.name.startswith("insight_mcp")]
    return found


def test_every_benchmark_is_checked() -> None:
    assert len(BENCHMARKS) >= 10
    assert sum(len(our_imports(path)) for path in BENCHMARKS) >= 30


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_what_a_benchmark_imports_from_the_package_exists(path: Path) -> None:
    missing = []
    for module, name in our_imports(path):
        loaded = importlib.import_module(module)
        if name is not None and not hasattr(loaded, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"{module}.{name}")
    assert not missing, f"{path.name} imports names the package no longer has: {missing}"


def test_the_check_sees_a_missing_name(tmp_path: Path) -> None:
    stale = tmp_path / "bench_stale.py"
    stale.write_text("def f():\n    from insight_mcp.agents.core.tracing import SpanRecord, _gone\n")
    assert ("insight_mcp.agents.core.tracing", "_gone") in our_imports(stale)
    with pytest.raises(AssertionError, match="_gone"):
        test_what_a_benchmark_imports_from_the_package_exists(stale)

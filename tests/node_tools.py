"""Where `make node-tools` installed the official MCP clients, and how to run them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

TOOLS = Path(os.environ.get("INSIGHT_NODE_TOOLS", Path.home() / ".cache/insight-mcp/node-tools"))
MODULES = TOOLS / "node_modules"
NODE22 = MODULES / "node/bin/node"
CONFORMANCE = MODULES / "@modelcontextprotocol/conformance/dist/index.js"
INSPECTOR_CLI = MODULES / "@modelcontextprotocol/inspector/cli/build/index.js"


def require(*paths: Path) -> None:
    """Fail, not skip: `make test` installs these, and a test that cannot run must not look green."""
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run `make node-tools` (npm ci of tests/node into {TOOLS})")


def system_node() -> str:
    """The machine's Node (20 here), which the Inspector CLI supports."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("no `node` on PATH: the Inspector CLI runs on the machine's Node.js (apt-get install nodejs)")
    return node

"""The official MCP conformance suite against every server, for both protocol revisions the SDK speaks.

The only failures allowed are the reviewed ones in tests/conformance/: scenarios that need the suite's own
test-only fixtures or optional features we do not offer. The suite fails a run on any other failure, and on a
listed failure that starts passing, so the list cannot go stale.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from node_tools import CONFORMANCE, NODE22, require
from serve_process import Served, serve

from insight_mcp.servers.app import SERVER_FACTORIES

pytestmark = pytest.mark.e2e
BASELINES = Path(__file__).parent / "conformance"
REVISIONS = ("2025-11-25", "2026-07-28")


@pytest.fixture(scope="module")
def served(fixture_workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    require(NODE22, CONFORMANCE)
    running = serve(fixture_workspace, tmp_path_factory.mktemp("home"))
    yield running
    running.stop()


@pytest.mark.parametrize("revision", REVISIONS)
@pytest.mark.parametrize("server", list(SERVER_FACTORIES))
def test_conformance_suite_passes_but_for_reviewed_fixture_scenarios(
    served: Served, server: str, revision: str, tmp_path: Path
) -> None:
    done = subprocess.run(
        [str(NODE22), str(CONFORMANCE), "server", "--url", f"{served.base}/{server}/mcp",
         "--requirements", revision, "--expected-failures", str(BASELINES / f"expected-failures-{revision}.yml"),
         "-o", str(tmp_path / "results")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    report = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, f"conformance {revision} on {server}:\n{report}"
    assert "Baseline check passed" in done.stdout, report
    assert "Traceback" not in served.log_text()

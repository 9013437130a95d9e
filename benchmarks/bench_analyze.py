"""`analyze` over the 10-million-row workspace, against `detect` alone over the same window.

Both run in the same process on the same file, in turns, and the best of each is compared: everything after the
detections (the network agent, aggregation, narrative, the three reports, the MLflow run and its traces) should cost
little. Goal: analyze <= 1.3x detect.

    python benchmarks/bench_analyze.py [--events-per-day 340000] [--days 30] [--workspace PATH] [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

import anyio

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

from insight_mcp.agents.ingestion.duckdb_backend import DuckDBSystemTables
from insight_mcp.agents.orchestrator import AnalysisRequest, analyze
from insight_mcp.agents.security.service import SecurityAgent
from insight_mcp.agents.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--events-per-day", type=int, default=340_000)
    parser.add_argument("--workspace", type=Path, help="Reuse a generated workspace instead of building one.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed turns of each; best of each is compared.")
    opts = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="insight-bench-analyze-"))
    workspace = opts.workspace
    if workspace is None:
        from insight_mcp.agents.ingestion.generator import generate_workspace

        workspace = scratch / "workspace.duckdb"
        report = generate_workspace(workspace, days=opts.days, users=500, events_per_day=opts.events_per_day)
        print(f"generated {report.rows['system.access.audit']:,} audit rows in {report.seconds:.1f} s")
    settings = load_settings(home=scratch / "home", workspace_file=workspace, tracing={"enabled": False})

    async def turns() -> tuple[float, float, int]:
        backend = DuckDBSystemTables(workspace)
        agent = SecurityAgent(settings, backend)  # one warm engine for both, as a server keeps it
        try:
            since, until = await agent.window(None, None)
            window = {"since": since.isoformat(), "until": until.isoformat()}
            await agent.run(**window)  # warm both once before the timed turns
            await analyze(settings, backend, AnalysisRequest(**window, alerts=False), security=agent)
            detect_best, analyze_best, findings = float("inf"), float("inf"), 0
            for _ in range(opts.repeats):
                started = time.perf_counter()
                run = await agent.run(**window)
                detect_best = min(detect_best, time.perf_counter() - started)
                started = time.perf_counter()
                result = await analyze(settings, backend, AnalysisRequest(**window, alerts=False), security=agent)
                analyze_best = min(analyze_best, time.perf_counter() - started)
                findings = len(run.findings)
                assert result.tracking.status == "recorded", result.tracking.reason
            return detect_best, analyze_best, findings
        finally:
            await backend.close()

    detect_s, analyze_s, findings = anyio.run(turns)
    print(f"detect alone (best of {opts.repeats}, {findings} findings): {detect_s * 1000:.0f} ms")
    print(f"analyze: detections, network agent, reports (md, json, html) and the MLflow run (best of "
          f"{opts.repeats}): {analyze_s * 1000:.0f} ms")
    ratio = analyze_s / detect_s
    print(f"ratio: {ratio:.2f}x (goal <= 1.3x) {'PASS' if ratio <= 1.3 else 'FAIL'}")
    print(f"measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")


if __name__ == "__main__":
    main()

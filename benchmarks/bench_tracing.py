"""Tracing overhead: the `run_query` round trip with every call traced to MLflow against the same build untraced.

Two `insight-mcp serve` processes of this build, one with INSIGHT_TRACING__ENABLED=false, are called in blocks that
take turns (see bench_roundtrip.py), each begun once both servers and the trace writer are idle, so that the
writer's last batch does not land in the untraced server's block. Prints p50 and p99 ratios; the goal is <= 1.1x
at p50. It then counts the traces the traced server left in its tracking store, to show the calls really were
traced.

    python benchmarks/bench_tracing.py [--calls 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx
from bench_roundtrip import latencies, pct, wait_ready

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from insight_mcp.agents.core.tracing import experiment_traces
from insight_mcp.clients.demo import free_port


def wait_tracing_ready(health_url: str) -> None:
    """Compare warm servers: the traced one imports MLflow and opens its store in the background at start."""
    for _ in range(1200):
        if httpx.get(health_url, timeout=5).json().get("tracing", {}).get("status") == "ready":
            return
        time.sleep(0.1)
    raise SystemExit("the traced server's trace writer did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args()

    from insight_mcp.agents.ingestion.generator import generate_workspace

    tmp = Path(tempfile.mkdtemp(prefix="insight-bench-tracing-"))
    workspace = tmp / "workspace.duckdb"
    generate_workspace(workspace, days=3, users=30, events_per_day=2_000)
    exe = Path(sys.executable).with_name("insight-mcp")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("INSIGHT_", "MLFLOW_TRACKING"))}
    base |= {"INSIGHT_WORKSPACE_FILE": str(workspace), "INSIGHT_LOG_LEVEL": "warning"}
    homes = {"traced": tmp / "traced", "untraced": tmp / "untraced"}
    ports = {name: free_port() for name in homes}
    procs = {
        name: subprocess.Popen(
            [str(exe), "serve", "--port", str(ports[name]), "--server", "system-tables"],
            env={**base, "INSIGHT_HOME": str(home), "INSIGHT_TRACING__ENABLED": str(name == "traced").lower()},
        )
        for name, home in homes.items()
    }
    args = {"sql": "SELECT event_id FROM system.access.audit LIMIT 1", "limit": 1}
    try:
        for name, proc in procs.items():
            wait_ready(f"http://127.0.0.1:{ports[name]}/health", proc)
        wait_tracing_ready(f"http://127.0.0.1:{ports['traced']}/health")
        lat = anyio.run(latencies, {
            name: (f"http://127.0.0.1:{ports[name]}/system-tables/mcp", "run_query", args) for name in procs
        }, opts.calls, opts.rounds, tmp)
    finally:
        for proc in procs.values():
            proc.terminate()  # the traced server writes what is still queued before it exits (30 s at most)
            proc.wait(timeout=60)

    for label, q in (("p50", 0.50), ("p99", 0.99)):
        untraced, traced = pct(lat["untraced"], q), pct(lat["traced"], q)
        goal = " (goal <= 1.1x)" if label == "p50" else ""
        print(f"{label}: untraced {untraced:.2f} ms, traced {traced:.2f} ms, ratio {traced / untraced:.2f}x{goal}")
    calls = len(lat["traced"]) + 20 * opts.rounds
    tracking = f"sqlite:///{homes['traced'] / 'mlflow.db'}"
    written = len(experiment_traces(tracking, "insight-mcp"))
    print(f"traces in the traced server's store at exit: {written} of {calls} calls")


if __name__ == "__main__":
    main()

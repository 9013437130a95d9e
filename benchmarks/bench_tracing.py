"""Tracing overhead: the `run_query` round trip with every call traced to MLflow against the same build untraced.

Two `insight-mcp serve` processes of this build, one with INSIGHT_TRACING__ENABLED=false, are called in bursts
within which they take turns every five calls (see bench_roundtrip.py), each begun once both servers and the trace
writer are idle, so that the writer's last batch does not land in the next burst. Prints p50 and p99 ratios; the
goal is <= 1.1x at p50. The writer waits for a pause in the calls before it writes, so it writes between bursts; it
then measures sustained load too: blocks of back-to-back calls to one server that outlast the writer's longest wait
(LINGER_SECONDS), so that it writes while the traced server is being called. Last, it counts the traces the traced
server left in its tracking store, to show the calls really were traced.

    python benchmarks/bench_tracing.py [--calls 1000] [--rounds 5] [--sustained-seconds 8]
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
from bench_roundtrip import latencies, pct, settle, wait_ready

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from insight_mcp.agents.core.trace_writer import LINGER_SECONDS
from insight_mcp.agents.core.tracing import experiment_traces
from insight_mcp.clients.client import connect_http
from insight_mcp.clients.demo import free_port


def wait_tracing_ready(health_url: str) -> None:
    """Compare warm servers: the traced one imports MLflow and opens its store in the background at start."""
    for _ in range(1200):
        if httpx.get(health_url, timeout=5).json().get("tracing", {}).get("status") == "ready":
            return
        time.sleep(0.1)
    raise SystemExit("the traced server's trace writer did not become ready")


async def sustained(urls: dict[str, str], args: dict[str, object], seconds: float, rounds: int,
                    idle: Path) -> tuple[dict[str, list[float]], int]:
    """Blocks of back-to-back calls lasting `seconds` each, taking turns, each begun on idle servers; also the calls
    made, for the count of traces."""
    out: dict[str, list[float]] = {name: [] for name in urls}
    made = 0
    for _ in range(rounds):
        for name, url in urls.items():
            await settle(idle)
            async with connect_http(url) as client:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    started = time.perf_counter()
                    await client.call("run_query", args)
                    out[name].append((time.perf_counter() - started) * 1000)
                    made += name == "traced"
    return out, made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sustained-seconds", type=float, default=1.6 * LINGER_SECONDS)
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
        urls = {name: f"http://127.0.0.1:{ports[name]}/system-tables/mcp" for name in procs}
        lat = anyio.run(latencies, {name: (url, "run_query", args) for name, url in urls.items()},
                        opts.calls, opts.rounds, tmp)
        long_lat, long_calls = anyio.run(sustained, urls, args, opts.sustained_seconds, 2, tmp)
    finally:
        for proc in procs.values():
            proc.terminate()  # the traced server writes what is still queued before it exits (30 s at most)
            proc.wait(timeout=60)

    for kind, result in (("bursts", lat), (f"sustained ({opts.sustained_seconds:g} s blocks)", long_lat)):
        for label, q in (("p50", 0.50), ("p99", 0.99)):
            untraced, traced = pct(result["untraced"], q), pct(result["traced"], q)
            goal = " (goal <= 1.1x)" if label == "p50" else ""
            print(f"{kind} {label}: untraced {untraced:.2f} ms, traced {traced:.2f} ms, "
                  f"ratio {traced / untraced:.2f}x{goal}")
    calls = len(lat["traced"]) + 20 * opts.rounds + long_calls
    tracking = f"sqlite:///{homes['traced'] / 'mlflow.db'}"
    written = len(experiment_traces(tracking, "insight-mcp"))
    print(f"traces in the traced server's store at exit: {written} of {calls} calls")


if __name__ == "__main__":
    main()

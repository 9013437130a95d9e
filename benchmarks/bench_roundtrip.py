"""Tool round trip: `run_query` of a one-row query over streamable HTTP against a bare echo tool on the same SDK.

Both servers run as subprocesses on loopback and are called the same way: one call at a time in blocks that take
turns, for latency (p50, p99), and from 16 concurrent clients for throughput. Prints ratios; the goal is <= 1.5x at p50 and p99.

    python benchmarks/bench_roundtrip.py [--calls 1000] [--rounds 5] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from insight_mcp.clients.client import connect_http
from insight_mcp.clients.demo import free_port

ECHO_SERVER = """
import sys, uvicorn
from pydantic import BaseModel
from mcp.server import MCPServer
from mcp_types import ToolAnnotations

class Echo(BaseModel):
    value: int

server = MCPServer("echo")

@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
async def echo(value: int) -> Echo:
    '''Return the value.'''
    return Echo(value=value)

uvicorn.run(server.streamable_http_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""



def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"server exited early with code {proc.returncode}")
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


async def latencies(
    echo_url: str, query_url: str, query_args: dict[str, Any], calls: int, rounds: int
) -> tuple[list[float], list[float]]:
    """Blocks of echo calls and run_query calls in turn, so slow drift of the machine's load hits both alike."""
    async with connect_http(echo_url) as echo, connect_http(query_url) as query:
        echo_ms: list[float] = []
        query_ms: list[float] = []
        per_round = max(1, calls // rounds)
        for _ in range(rounds):
            for client, tool, args, out in ((echo, "echo", {"value": 1}, echo_ms),
                                            (query, "run_query", query_args, query_ms)):
                for _ in range(20):  # warm up after the other server's block
                    await client.call(tool, args)
                for _ in range(per_round):
                    started = time.perf_counter()
                    await client.call(tool, args)
                    out.append((time.perf_counter() - started) * 1000)
        return echo_ms, query_ms


async def throughput(url: str, tool: str, args: dict[str, Any], clients: int, calls_each: int) -> float:
    async def worker() -> None:
        async with connect_http(url) as client:
            for _ in range(calls_each):
                await client.call(tool, args)

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(clients):
            tg.start_soon(worker)
    return clients * calls_each / (time.perf_counter() - started)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--calls-each", type=int, default=25)
    opts = parser.parse_args()

    from insight_mcp.agents.ingestion.generator import generate_workspace

    tmp = Path(tempfile.mkdtemp(prefix="insight-bench-"))
    workspace = tmp / "workspace.duckdb"
    generate_workspace(workspace, days=3, users=30, events_per_day=2_000)
    env = {**os.environ, "INSIGHT_HOME": str(tmp), "INSIGHT_WORKSPACE_FILE": str(workspace), "INSIGHT_LOG_LEVEL": "warning"}
    env.pop("INSIGHT_API_TOKEN", None)

    insight_port, echo_port = free_port(), free_port()
    exe = Path(sys.executable).with_name("insight-mcp")
    procs = [
        subprocess.Popen([str(exe), "serve", "--port", str(insight_port)], env=env),
        subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(echo_port)], env=env),
    ]
    try:
        wait_ready(f"http://127.0.0.1:{insight_port}/health", procs[0])
        wait_ready(f"http://127.0.0.1:{echo_port}/mcp", procs[1])
        query_url = f"http://127.0.0.1:{insight_port}/system-tables/mcp"
        echo_url = f"http://127.0.0.1:{echo_port}/mcp"
        query_args = {"sql": "SELECT event_id FROM system.access.audit LIMIT 1", "limit": 1}

        echo_lat, query_lat = anyio.run(latencies, echo_url, query_url, query_args, opts.calls, opts.rounds)
        echo_tp = anyio.run(throughput, echo_url, "echo", {"value": 1}, opts.concurrency, opts.calls_each)
        query_tp = anyio.run(throughput, query_url, "run_query", query_args, opts.concurrency, opts.calls_each)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)

    for name, q in (("p50", 0.50), ("p99", 0.99)):
        e, r = pct(echo_lat, q), pct(query_lat, q)
        print(f"{name}: echo {e:.2f} ms, run_query {r:.2f} ms, ratio {r / e:.2f}x (goal <= 1.5x)")
    print(f"mean: echo {statistics.mean(echo_lat):.2f} ms, run_query {statistics.mean(query_lat):.2f} ms")
    print(f"throughput with {opts.concurrency} clients: echo {echo_tp:.0f} calls/s, run_query {query_tp:.0f} calls/s, "
          f"ratio {echo_tp / query_tp:.2f}x slower")


if __name__ == "__main__":
    main()

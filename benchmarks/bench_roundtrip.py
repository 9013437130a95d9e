"""Tool round trip: `run_query` of a one-row query over streamable HTTP against a bare echo tool on the same SDK.

Both servers run as subprocesses on loopback and are called the same way: one call at a time, in bursts begun on
idle servers within which the tools take turns every five calls, for latency (p50, p99), and from 16 concurrent
clients for throughput. Prints ratios; the goal is <= 1.5x at p50 and p99. The echo server also has a tool that
runs the same statement bare on DuckDB (no guard, caps or fencing): the floor any DuckDB-backed tool pays, so the
second ratio is what run_query itself adds. A third tool takes run_query's arguments (`sql`, `limit`) and runs the
statement it is given, bare: the ratio to it (goal <= 1.1x at p50) leaves out what the SDK does with any tool's
arguments, and is what run_query's guard, caps, fencing, tracing and metrics cost.

    python benchmarks/bench_roundtrip.py [--calls 1000] [--rounds 5 (bursts)] [--concurrency 16] [--instances 2]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from insight_mcp.agents.core.trace_writer import QUIET_SECONDS
from insight_mcp.clients.client import connect_http
from insight_mcp.clients.demo import free_port

ECHO_SERVER = """
import sys, anyio, duckdb, uvicorn
from typing import Annotated
from pydantic import BaseModel, Field
from mcp.server import MCPServer
from mcp_types import ToolAnnotations

class Echo(BaseModel):
    value: int

class Row(BaseModel):
    value: str

server = MCPServer("echo")
conn = duckdb.connect(sys.argv[2], read_only=True)

@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
async def echo(value: int) -> Echo:
    '''Return the value.'''
    return Echo(value=value)

def _row() -> str:
    cursor = conn.cursor()
    try:
        return cursor.execute("SELECT event_id FROM access.audit LIMIT 1").fetchone()[0]
    finally:
        cursor.close()

@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
async def duckdb_row() -> Row:
    '''The same one-row statement, bare: no guard, no limits, no fencing.'''
    return Row(value=await anyio.to_thread.run_sync(_row))

class Rows(BaseModel):
    rows: list[list[str]]

def _statement(sql: str, limit: int) -> list[list[str]]:
    cursor = conn.cursor()
    try:
        return [list(row) for row in cursor.execute(sql).fetchmany(limit)]
    finally:
        cursor.close()

@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
async def duckdb_statement(
    sql: Annotated[str, Field(description="One SELECT or WITH ... SELECT in the Databricks SQL dialect.")],
    limit: Annotated[int, Field(ge=1, le=10000, description="Most rows to return.")] = 100,
) -> Rows:
    '''The statement it is given, run bare: run_query's arguments, without its guard, caps or fencing.'''
    return Rows(rows=await anyio.to_thread.run_sync(_statement, sql, limit))

uvicorn.run(server.streamable_http_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""



def wait_ready(url: str, proc: subprocess.Popen[bytes], *, limit: float = 60.0, request_timeout: float = 0.5,
               pause: float = 0.1) -> None:
    """Until the server answers `url`; a server that exits or takes longer than `limit` seconds ends the run."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early with code {proc.returncode}")
        try:
            httpx.get(url, timeout=request_timeout)
            return
        except httpx.HTTPError:
            time.sleep(pause)
    raise SystemExit(f"{url} did not come up within {limit:g} s")


def _cpu_seconds(tmp: Path) -> float:
    """CPU time so far of every process of this run (both servers, our trace writer): their command lines or
    environments name `tmp`."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            if any(str(tmp).encode() in (entry / part).read_bytes() for part in ("cmdline", "environ")):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


async def settle(tmp: Path, *, idle_share: float = 0.05, window: float = 2 * QUIET_SECONDS,
                 limit: float = 60.0) -> None:
    """Wait until the servers are idle, so that one server's leftover work (our trace writer's last batch) does not
    land in the other's block. The window outlasts the writer's wait for a pause in the calls, idle as it looks."""
    if not Path("/proc").is_dir():
        return
    deadline = time.monotonic() + limit
    before = _cpu_seconds(tmp)
    while time.monotonic() < deadline:
        await anyio.sleep(window)
        now = _cpu_seconds(tmp)
        if now - before < idle_share * window:
            return
        before = now


async def interleaved(callers: dict[str, Callable[[], Awaitable[Any]]], calls: int, bursts: int,
                      idle: Path | None = None, *, block: int = 5, warmup: int = 20) -> dict[str, list[float]]:
    """Latencies of `calls` calls to each server, in `bursts` bursts. Within a burst the servers take turns every
    `block` calls, so that the machine's drift (on a shared host, the same call's p50 moves by half within seconds)
    hits them alike; with `idle`, each burst begins once the processes naming that folder are idle (see `settle`),
    so one burst's leftover work (our trace writer's) does not fall in the next."""
    out: dict[str, list[float]] = {name: [] for name in callers}
    per_burst = max(block, calls // bursts)
    for burst in range(bursts):
        if idle is not None:
            await settle(idle)
        order = list(callers) if burst % 2 == 0 else list(reversed(callers))  # none always goes first
        for name in order:
            for _ in range(warmup):  # after the quiet of the settle
                await callers[name]()
        for _ in range(per_burst // block):
            for name in order:
                for _ in range(block):
                    started = time.perf_counter()
                    await callers[name]()
                    out[name].append((time.perf_counter() - started) * 1000)
    return out


async def latencies(calls_by_name: dict[str, tuple[str, str, dict[str, Any]]], calls: int,
                    rounds: int, idle: Path | None = None) -> dict[str, list[float]]:
    """`interleaved` over streamable HTTP: one client a server, each calling one tool with fixed arguments."""
    async with contextlib.AsyncExitStack() as stack:
        callers = {}
        for name, (url, tool, args) in calls_by_name.items():
            client = await stack.enter_async_context(connect_http(url))
            callers[name] = functools.partial(client.call, tool, args)
        return await interleaved(callers, calls, rounds, idle)


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
    parser.add_argument("--instances", type=int, default=2, help="Processes of each server, their calls pooled.")
    opts = parser.parse_args()

    from insight_mcp.agents.ingestion.generator import generate_workspace

    tmp = Path(tempfile.mkdtemp(prefix="insight-bench-"))
    workspace = tmp / "workspace.duckdb"
    generate_workspace(workspace, days=3, users=30, events_per_day=2_000)
    env = {**os.environ, "INSIGHT_WORKSPACE_FILE": str(workspace), "INSIGHT_LOG_LEVEL": "warning"}
    env.pop("INSIGHT_API_TOKEN", None)

    # Each server runs in `--instances` processes, their calls pooled: the same build's p50 differs by a few percent
    # from one process to the next on this VM, and one pair of processes would carry that luck into the ratio.
    exe = Path(sys.executable).with_name("insight-mcp")
    procs: list[subprocess.Popen[bytes]] = []
    work: dict[str, tuple[str, str, dict[str, Any]]] = {}
    query_args = {"sql": "SELECT event_id FROM system.access.audit LIMIT 1", "limit": 1}
    bare_args = {"sql": "SELECT event_id FROM access.audit LIMIT 1", "limit": 1}  # the workspace file's own name
    try:
        for k in range(opts.instances):
            home = {**env, "INSIGHT_HOME": str(tmp / f"home{k}")}
            insight_port = free_port()
            procs.append(subprocess.Popen([str(exe), "serve", "--port", str(insight_port)], env=home))
            wait_ready(f"http://127.0.0.1:{insight_port}/health", procs[-1])
            work[f"run_query#{k}"] = (f"http://127.0.0.1:{insight_port}/system-tables/mcp", "run_query", query_args)
            # Each bare tool in a process of its own: a process serving three of the four turns would keep its
            # caches warm while run_query's waited three turns for its next calls, and 0.15-0.2x of the ratio was that.
            for kind, tool, args in (("echo", "echo", {"value": 1}), ("bare duckdb", "duckdb_row", {}),
                                     ("bare statement", "duckdb_statement", bare_args)):
                port = free_port()
                procs.append(subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(port), str(workspace)],
                                              env=home))
                wait_ready(f"http://127.0.0.1:{port}/mcp", procs[-1])
                work[f"{kind}#{k}"] = (f"http://127.0.0.1:{port}/mcp", tool, args)
        lat = anyio.run(latencies, work, opts.calls // opts.instances, opts.rounds, tmp)
        pooled = {kind: [ms for name, values in lat.items() if name.startswith(kind + "#") for ms in values]
                  for kind in ("echo", "bare duckdb", "bare statement", "run_query")}
        echo_lat, bare_lat, query_lat = pooled["echo"], pooled["bare duckdb"], pooled["run_query"]
        statement_lat = pooled["bare statement"]
        echo_url, query_url = work["echo#0"][0], work["run_query#0"][0]
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
    # The floor: the same statement run bare on DuckDB behind the same SDK, with no guard, caps or fencing.
    for name, q in (("p50", 0.50), ("p99", 0.99)):
        b, r = pct(bare_lat, q), pct(query_lat, q)
        print(f"{name} against the bare statement: bare duckdb tool {b:.2f} ms ({b / pct(echo_lat, q):.2f}x echo), "
              f"run_query {r / b:.2f}x that")
    # The same, from a bare tool that takes run_query's arguments (sql, limit) and runs the statement it is given:
    # the SDK's handling of two arguments is then on both sides, and the ratio is run_query's own layers.
    for name, q in (("p50", 0.50), ("p99", 0.99)):
        b, r = pct(statement_lat, q), pct(query_lat, q)
        print(f"{name} against the bare statement tool taking run_query's arguments: {b:.2f} ms, "
              f"run_query {r / b:.2f}x that (goal <= 1.1x at p50)")
    print(f"throughput with {opts.concurrency} clients: echo {echo_tp:.0f} calls/s, run_query {query_tp:.0f} calls/s, "
          f"ratio {echo_tp / query_tp:.2f}x slower")


if __name__ == "__main__":
    main()

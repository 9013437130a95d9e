"""Instructions a one-row `run_query` costs its server, against the bare statement tools: a measure noise cannot move.

Wall-clock ratios on a shared 2-core VM drift by 10% from one run to the next, which is the size of what is left to
trim of `run_query`. This counts instead: each server runs under valgrind's callgrind with instrumentation off, is
warmed with 30 calls, then counts the machine instructions of `--calls` calls, per thread. The event loop's thread
(the first) is counted apart from the others (DuckDB's and the statement workers), whose counts vary by a percent or
two with scheduling. Both servers are called the same way, by the same client, untraced unless `--traced`.

Prints instructions a call for each server and thread group, and the ratios of `run_query` to the bare statement
tools of `bench_roundtrip.py`: the one that runs a fixed statement and the one that takes `run_query`'s arguments.
Needs valgrind (`apt-get install valgrind`); takes about two minutes.

    python benchmarks/bench_instructions.py [--calls 200] [--traced]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from bench_roundtrip import ECHO_SERVER, wait_ready

from insight_mcp.clients.client import connect_http
from insight_mcp.clients.demo import free_port

WARMUP = 30


def _per_thread(out: Path) -> dict[int, int]:
    """Instructions counted in each thread's callgrind files, by thread number: the dump taken after the counted
    calls (`<out>.1-NN`); the files written at exit (`<out>-NN`) hold nothing, instrumentation being off by then."""
    counts: dict[int, int] = {}
    for path in out.parent.glob(out.name + "*"):
        match = re.search(r"-(\d+)$", path.name)
        totals = [line for line in path.read_text(errors="replace").splitlines() if line.startswith("totals:")]
        if match and totals:
            counts[int(match.group(1))] = counts.get(int(match.group(1)), 0) + int(totals[0].split()[1])
    return counts


def count(command: list[str], env: dict[str, str], probe: str, url: str, tool: str, args: dict[str, Any],
          calls: int, out: Path) -> dict[int, int]:
    """Run one server under callgrind and count the instructions of `calls` calls, per thread."""
    callgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
                 f"--callgrind-out-file={out}"]
    log = (out.parent / (out.name + ".log")).open("w")
    proc = subprocess.Popen([*callgrind, *command], env=env, stdout=log, stderr=log)
    try:
        wait_ready(probe, proc, limit=600, request_timeout=5, pause=0.5)  # under valgrind: a minute or more

        async def run() -> None:
            async with connect_http(url, timeout=600) as client:
                for _ in range(WARMUP):
                    await client.call(tool, args)
                await anyio.sleep(1.0)
                subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True)
                for _ in range(calls):
                    await client.call(tool, args)
                subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True, capture_output=True)
                subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)

        anyio.run(run)
    finally:
        proc.terminate()
        proc.wait(timeout=120)
        log.close()
    return _per_thread(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--traced", action="store_true", help="Trace run_query's calls to MLflow, as served.")
    opts = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is not installed: apt-get install valgrind")

    from insight_mcp.agents.ingestion.generator import generate_workspace

    tmp = Path(tempfile.mkdtemp(prefix="insight-instructions-"))
    workspace = tmp / "workspace.duckdb"
    generate_workspace(workspace, days=3, users=30, events_per_day=2_000)
    env = {**os.environ, "INSIGHT_HOME": str(tmp / "home"), "INSIGHT_WORKSPACE_FILE": str(workspace),
           "INSIGHT_LOG_LEVEL": "warning", "PYTHONMALLOC": "malloc",  # valgrind counts malloc's work, not pymalloc's
           "INSIGHT_TRACING__ENABLED": "true" if opts.traced else "false"}
    env.pop("INSIGHT_API_TOKEN", None)
    exe = str(Path(sys.executable).with_name("insight-mcp"))

    try:
        results = _count_all(opts.calls, env, exe, str(workspace), tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the callgrind files of one run are tens of MB
    _report(results, opts.calls, opts.traced)


def _count_all(calls: int, env: dict[str, str], exe: str, workspace: str, tmp: Path) -> dict[str, dict[int, int]]:
    """The three servers, one after the other."""
    bare_sql = "SELECT event_id FROM access.audit LIMIT 1"  # the workspace file's own name for the table
    results: dict[str, dict[int, int]] = {}
    for name, tool, args in (("run_query", "run_query",
                              {"sql": "SELECT event_id FROM system.access.audit LIMIT 1", "limit": 1}),
                             ("bare duckdb", "duckdb_row", {}),
                             ("bare statement", "duckdb_statement", {"sql": bare_sql, "limit": 1})):
        port = free_port()
        if name == "run_query":
            command = [sys.executable, exe, "serve", "--port", str(port)]  # all five servers, as served
            probe, url = f"http://127.0.0.1:{port}/health", f"http://127.0.0.1:{port}/system-tables/mcp"
        else:
            command = [sys.executable, "-c", ECHO_SERVER, str(port), workspace]
            probe = url = f"http://127.0.0.1:{port}/mcp"
        started = time.monotonic()
        results[name] = count(command, env, probe, url, tool, args, calls, tmp / name.replace(" ", "-"))
        print(f"{name}: counted in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return results


def _report(results: dict[str, dict[int, int]], calls: int, traced: bool) -> None:
    def split(counts: dict[int, int]) -> tuple[float, float]:
        main_thread = counts.get(1, 0)
        return main_thread / calls, (sum(counts.values()) - main_thread) / calls

    print(f"thousands of instructions a call, {calls} calls, {'traced' if traced else 'untraced'}")
    print(f"{'':16s} {'event loop':>12s} {'other threads':>14s} {'all':>10s}")
    for name, counts in results.items():
        loop, rest = split(counts)
        print(f"{name:16s} {loop / 1e3:12.0f} {rest / 1e3:14.0f} {(loop + rest) / 1e3:10.0f}")
    ours_loop, ours_rest = split(results["run_query"])
    for name in ("bare duckdb", "bare statement"):
        loop, rest = split(results[name])
        print(f"run_query / {name}: event loop {ours_loop / loop:.3f}x, all threads "
              f"{(ours_loop + ours_rest) / (loop + rest):.3f}x")


if __name__ == "__main__":
    main()

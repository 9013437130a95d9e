"""Narrative traces written by a fresh process, as an agent elsewhere would: no test's MLflow tracer state leaks in.

MLflow's tracer provider and async export queue are process-wide; a test process that already traced to another
store (under pytest-xdist, any earlier test file of the same worker) can keep them pointed elsewhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import json, sys, time
import mlflow
from insight_mcp.agents.core.mlflow_store import experiment_id, open_client
uri, artifacts, n, errors, tags = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])
client = open_client(uri)
mlflow.set_tracking_uri(uri)
experiment = experiment_id(client, "insight-narrative", __import__("pathlib").Path(artifacts) / "insight-narrative")
now = time.time_ns()
for i in range(n):
    span = mlflow.start_span_no_context("narrative.security_summary", experiment_id=experiment,
                                        start_time_ns=now + i * 1_000_000, tags=tags)
    span.end(status="ERROR" if i < errors else "OK", end_time_ns=now + i * 1_000_000 + 200_000_000)
mlflow.flush_trace_async_logging(terminate=True)
deadline = time.monotonic() + 120
while len(client.search_traces(locations=[experiment], max_results=n + 1)) < n and time.monotonic() < deadline:
    time.sleep(0.2)
"""


def write_traces(tracking_uri: str, artifacts: Path, n: int, errors: int, tags: dict[str, str]) -> None:
    """`n` narrative traces (the first `errors` of them ERROR) starting now, in the store before this returns."""
    done = subprocess.run([sys.executable, "-c", SCRIPT, tracking_uri, str(artifacts), str(n), str(errors),
                           json.dumps(tags)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]

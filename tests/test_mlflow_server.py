"""End to end against a real `mlflow server` on localhost: `insight-mcp analyze` records its run, reports and trace;
tool-call traces reach it through the trace writer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from insight_mcp.clients.cli import app
from insight_mcp.clients.demo import free_port

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` with one worker over its own SQLite store; about 20 s to answer /health."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = root / "server.log"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri",
             f"sqlite:///{root / 'store.db'}", "--default-artifact-root", str(root / "artifacts"), "--host",
             "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {log.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise RuntimeError("mlflow server did not answer /health within 120 s")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_analyze_records_its_run_reports_and_trace_on_a_tracking_server(mlflow_server: str, tmp_path: Path,
                                                                         demo_workspace: Path) -> None:
    import mlflow

    home = tmp_path / "home"
    env = {"INSIGHT_HOME": str(home), "INSIGHT_WORKSPACE_FILE": str(demo_workspace),
           "MLFLOW_TRACKING_URI": mlflow_server}
    answer = CliRunner().invoke(app, ["analyze", "--since", "2026-11-14", "--until", "2026-11-21", "--format",
                                      "md,json", "--json"], env=env)
    assert answer.exit_code == 0, answer.output
    result = json.loads(answer.stdout)
    tracking = result["tracking"]
    assert tracking["status"] == "recorded", tracking["reason"]
    assert tracking["ui_command"].startswith(f"open {mlflow_server}/#/experiments/")

    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(tracking["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["findings.total"] == result["report"]["counts"]["total"]
    assert {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "reports")} == {
        Path(p).name for p in result["reports"]["paths"].values()}
    experiment = client.get_experiment_by_name("insight-analysis")
    assert experiment.artifact_location.startswith((home / "mlflow-artifacts").as_uri())
    trace = client.get_trace(tracking["trace_id"])
    assert trace.info.request_metadata["mlflow.sourceRun"] == run.info.run_id
    assert {"agent.security", "agent.network"} <= {span.name for span in trace.data.spans}
    assert not (Path.cwd() / "mlruns").exists()


def test_tool_call_traces_reach_a_tracking_server_in_batches(mlflow_server: str, tmp_path: Path) -> None:
    """The trace writer sends a batch of calls over HTTP (MLflow's span endpoint): each is a whole trace there, with
    its tags, its state, its span's inputs and the refusal's reason."""
    from insight_mcp.agents.core.mlflow_store import open_client
    from insight_mcp.agents.core.tracing import SpanRecord, TraceRecorder, experiment_traces

    recorder = TraceRecorder(mlflow_server, "tool-calls", tmp_path / "artifacts")
    recorder.start()
    for i in range(40):
        now = time.time_ns()
        recorder.record(SpanRecord(
            name="run_query", span_type="TOOL", inputs={"sql": f"SELECT {i}"}, outputs={"rows": [[i]]},
            start_ns=now, end_ns=now + 2_000_000, error="refused: not a SELECT" if i == 7 else None,
            tags={"insight.tool": "run_query", "insight.call_id": f"{i:016x}",
                  "insight.status": "error" if i == 7 else "ok"}))
    assert recorder.flush(timeout=120), recorder.status
    recorder.close()
    traces = experiment_traces(mlflow_server, "tool-calls")
    assert sorted(t.info.tags["insight.call_id"] for t in traces) == [f"{i:016x}" for i in range(40)]
    refused = next(t for t in traces if t.info.tags["insight.status"] == "error")
    assert str(refused.info.state).endswith("ERROR")
    full = open_client(mlflow_server).get_trace(refused.info.trace_id)
    (span,) = full.data.spans
    assert span.inputs == {"sql": "SELECT 7"} and span.attributes["error"] == "refused: not a SELECT"

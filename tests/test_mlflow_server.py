"""End to end against a real `mlflow server` on localhost: `insight-mcp analyze` records its run, reports and trace."""

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

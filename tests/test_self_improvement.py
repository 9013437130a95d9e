"""The self-improvement loop end to end, every part a real process: `insight-mcp serve` and `insight-mcp supervise`
as subprocesses on one home, the test LM over HTTP, MLflow's SQLite store and the state store on disk.

1. serve answers summarize_findings with the registered insight.security_summary prompt; its production version is
   vague, and the test LM (sloppy mode) then overstates the counts, so the narrative checks reject most summaries:
   a burst of ERROR traces.
2. The supervisor trips, exactly once, and calls optimize_prompt on serve over streamable HTTP.
3. The supervisor is killed with SIGKILL while the job runs; restarted, it follows the job instead of tripping again.
4. The optimization (DSPy GEPA with the test LM) learns from those traces, the candidate really scores better on
   held-out cases, and it is promoted.
5. serve's next answers use the new version, without a restart, and none of them is rejected.
6. The intervention is logged to MLflow with its outcome.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from lm_server import LMServer
from serve_process import EXE, serve
from test_optimization import make_worse_production

from insight_mcp.agents.core.mlflow_store import open_client
from insight_mcp.agents.core.prompts import SECURITY_SUMMARY, load_prompt
from insight_mcp.agents.core.state import StateStore
from insight_mcp.agents.settings import load_settings
from insight_mcp.agents.supervision import state
from insight_mcp.agents.supervision.interventions import EXPERIMENT
from insight_mcp.clients.client import connect_http
from insight_mcp.clients.demo import free_port

pytestmark = pytest.mark.e2e

API_KEY = "sk-test-loop-1234"
# The seed's file as printed, then the options this test needs: a fast check, a volume a burst reaches, GEPA.
AGENT_CONFIG = """\
ondemand_optimization:
  enabled: true
  supervisory_agent:
    check_interval: 1  # seconds
    min_traces_for_trigger: 20
  triggers:
    error_rate_threshold: 0.05
    rating_threshold: 3.0
    response_time_threshold: 5.0
  mcp_server:
    endpoint: "{endpoint}"
  framework: "dspy"
  optimizer: "gepa"
  evaluation_threshold: 0.6
  max_lm_calls: 400
"""


def _supervise(home: Path, config: Path, env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("INSIGHT_") and k != "MLFLOW_TRACKING_URI"}
    log = (home / "supervise.log").open("ab")
    return subprocess.Popen([str(EXE), "supervise", "--config", str(config), "--port", str(port)],
                            env={**full, **env}, stdout=log, stderr=log)


def _health(port: int) -> dict[str, Any] | None:
    try:
        return dict(httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json())
    except (httpx.HTTPError, ValueError):
        return None


def _wait(what: str, condition: Any, timeout: float, *, logs: list[Path]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs if p.exists())
    raise AssertionError(f"timed out waiting for {what}\n{tails}")


def _jobs(store: StateStore) -> list[dict[str, Any]]:
    with store.transaction() as conn:
        return [dict(r) for r in conn.execute("SELECT id, status, message FROM jobs WHERE kind = "
                                              "'prompt_optimization'").fetchall()]


async def _summaries(base: str, windows: list[str | None]) -> list[dict[str, Any]]:
    answers = []
    async with connect_http(f"{base}/security/mcp") as client:
        for since in windows:
            answer = await client.call("summarize_findings", {"since": since} if since else {})
            answers.append(dict(answer.structured or {}))
    return answers


def test_a_slipping_agent_is_optimized_promoted_and_served_once_across_a_supervisor_kill(
    store_home: Path, fixture_workspace: Path
) -> None:
    home = store_home
    settings = load_settings(home=home, workspace_file=fixture_workspace)
    champion = make_worse_production(settings)  # a vague production prompt
    store = StateStore(settings.state_path)
    with LMServer(api_key=API_KEY) as lm:
        lm.mode = "sloppy"
        env = {"INSIGHT_LM": "openai/test-model", "INSIGHT_LM_API_BASE": lm.url, "INSIGHT_LM_API_KEY": API_KEY,
               "INSIGHT_PROMPT_CACHE_SECONDS": "1", "INSIGHT_TRACING__ENABLED": "false"}
        served = serve(fixture_workspace, home, **env)
        supervisor: subprocess.Popen[bytes] | None = None
        logs = [served.log, home / "supervise.log"]
        try:
            latest = dt.datetime.fromisoformat(anyio.run(_summaries, served.base, [None])[0]["until"].rstrip("Z"))
            windows: list[str | None] = [(latest - dt.timedelta(days=2, hours=3 * k)).isoformat() for k in range(26)]
            before = anyio.run(_summaries, served.base, windows)
            assert all(a["prompt_version"] == champion for a in before)
            rejected = [a for a in before if a["rejected"]]
            assert len(rejected) >= 20 and all("findings in total" in a["rejected"] for a in rejected)

            config = home / "agent_config.yaml"
            config.write_text(AGENT_CONFIG.format(endpoint=served.base))
            port = free_port()
            supervisor = _supervise(home, config, {"INSIGHT_HOME": str(home),
                                                   "INSIGHT_WORKSPACE_FILE": str(fixture_workspace)}, port)
            job = _wait("the supervisor's optimization job to run",
                        lambda: next((j for j in _jobs(store) if j["status"] == "running"), None), 180, logs=logs)
            supervisor.send_signal(signal.SIGKILL)  # mid-job, as hard as a crash
            supervisor.wait(timeout=10)
            # Killed after the claim: either the server's answer was recorded, or the restart must adopt the job.
            inflight = state.load(store, "security_summary").inflight_job or ""
            assert inflight == job["id"] or inflight.startswith(state.STARTING), inflight

            supervisor = _supervise(home, config, {"INSIGHT_HOME": str(home),
                                                   "INSIGHT_WORKSPACE_FILE": str(fixture_workspace)}, port)
            ended = _wait("the restarted supervisor to follow the job to its end", lambda: next(
                (i for i in state.interventions(store) if i.outcome), None), 420, logs=logs)
            health = _wait("the supervisor's /health after a check", lambda: (
                (h := _health(port)) and h.get("last_check_at") and h), 60, logs=logs)
            supervisor.send_signal(signal.SIGTERM)
            assert supervisor.wait(timeout=30) == 0
            assert health["status"] == "ok", health

            # Tripped exactly once, across the kill: one intervention, one optimization job.
            assert [i.job_id for i in state.interventions(store)] == [job["id"]]
            assert [j["id"] for j in _jobs(store)] == [job["id"]]
            assert ended.trigger == "threshold" and ended.outcome == "succeeded: promoted", ended
            assert any("error rate" in reason for reason in ended.reasons), ended.reasons
            promoted = load_prompt(settings.model_copy(update={"prompt_cache_seconds": 0}), SECURITY_SUMMARY)
            assert promoted.version not in ("1", champion) and "counts exactly" in promoted.template.lower()

            # The running server picks the new version up: its next answers use it, and none is rejected.
            after = anyio.run(_summaries, served.base, windows[:8])
            assert {a["prompt_version"] for a in after} == {promoted.version}
            assert [a["rejected"] for a in after] == [None] * 8 and {a["source"] for a in after} == {"lm"}
        finally:
            if supervisor is not None and supervisor.poll() is None:
                supervisor.kill()
            served.stop()

    client = open_client(settings.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert len(runs) == 1, "one intervention logged"
    run = runs[0]
    assert run.data.tags["insight.job_id"] == job["id"] and run.data.tags["insight.outcome"] == "succeeded: promoted"
    assert run.data.params["trigger"] == "threshold" and "wilson" in run.data.params["test"].lower()
    assert run.data.metrics["error_rate"] > 0.5 and run.info.status == "FINISHED"
    optimization = client.search_runs([client.get_experiment_by_name("insight-optimization").experiment_id])
    assert [r.data.params["promoted"] for r in optimization] == ["true"]

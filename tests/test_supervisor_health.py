"""The supervisor's own /health and /metrics: real values after a real check against an MLflow store, optimizations
counted from the state store, and `degraded` once checks keep failing because MLflow is unreachable."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from test_metrics import metric_samples
from trace_burst import write_traces

from insight_mcp.agents.settings import Settings, load_settings
from insight_mcp.agents.supervision import state
from insight_mcp.agents.supervision.config import AgentConfig, OnDemandOptimization
from insight_mcp.clients.demo import free_port
from insight_mcp.supervisor.daemon import Supervisor, run_forever
from insight_mcp.supervisor.health import HealthServer, SupervisorStats
from insight_mcp.supervisor.launcher import McpLauncher


def _traces(settings: Settings, n: int, errors: int) -> None:
    """Traces at least as many as the supervisor reads, the first `errors` of them failed: written by another
    process, as the agents being watched would."""
    write_traces(settings.tracking_uri, settings.mlflow_artifacts, n, errors,
                 {"insight.prompt": "insight.security_summary"})


def _config(check_interval: float) -> OnDemandOptimization:
    # The optimization server is never reached: too few traces to trip (and a closed port if they did).
    return AgentConfig.model_validate({"ondemand_optimization": {
        "mcp_server": {"endpoint": f"http://127.0.0.1:{free_port()}"},
        "supervisory_agent": {"min_traces_for_trigger": 50, "check_interval": check_interval}}}).ondemand_optimization


def _run_until(supervisor: Supervisor, stats: SupervisorStats, done: Callable[[], bool]) -> None:
    """The real loop in a thread, stopped once `done()`; a generous bound so a slow machine fails, never hangs."""
    stop = threading.Event()
    loop = threading.Thread(target=run_forever, args=(supervisor,), daemon=True,
                            kwargs={"stop": lambda: stop.is_set() or done(), "observer": stats})
    loop.start()
    loop.join(180)
    stop.set()
    assert not loop.is_alive(), "run_forever did not stop"


@pytest.fixture
def endpoint(request: pytest.FixtureRequest) -> Iterator[Callable[[SupervisorStats, Settings], HealthServer]]:
    started: list[HealthServer] = []

    def start(stats: SupervisorStats, settings: Settings) -> HealthServer:
        server = HealthServer(stats, settings, port=free_port()).start()
        started.append(server)
        for _ in range(200):
            try:
                httpx.get(server.url + "/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        return server

    yield start
    for server in started:
        server.stop()


def test_health_and_metrics_after_a_real_check(tmp_path: Path, migrated_store: Path,
                                               endpoint: Callable[[SupervisorStats, Settings], HealthServer]) -> None:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(migrated_store, home / "mlflow.db")
    settings = load_settings(home=home)
    _traces(settings, 10, 2)
    ondemand = _config(check_interval=0.2)
    supervisor = Supervisor(ondemand, settings, McpLauncher(ondemand, settings))
    stats = SupervisorStats(supervisor.store)
    server = endpoint(stats, settings)
    assert httpx.get(server.url + "/health", timeout=10).json()["status"] == "starting"

    _run_until(supervisor, stats, lambda: stats.checks_total >= 1)
    health = httpx.get(server.url + "/health", timeout=10)
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok" and body["consecutive_failures"] == 0 and body["checks"] == 1
    assert body["last_check_at"] == body["last_success_at"] is not None
    assert set(body["agents"]) == {"security_summary", "finding_explanation", "network_narrative"}
    summary = body["agents"]["security_summary"]
    assert summary["volume"] == 10 and summary["new_traces"] == 10 and summary["trips"] is False
    assert "fewer than min_traces_for_trigger" in summary["action"]

    # An optimization the supervisor started (the state store's record of it) is counted; a manual one is not.
    state.add_intervention(supervisor.store, "security_summary", time.time(), "threshold", ["error rate"], "job-1")
    state.add_intervention(supervisor.store, "security_summary", time.time(), "manual", ["asked"], "job-2")
    _run_until(supervisor, stats, lambda: stats.checks_total >= 2)

    answer = httpx.get(server.url + "/metrics", timeout=10)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    samples = metric_samples(answer.text)
    agent = (("agent", "security_summary"),)
    assert samples[("insight_supervisor_checks_total", ())] == 2
    assert samples[("insight_supervisor_check_failures_total", ())] == 0
    assert samples[("insight_supervisor_window_volume", agent)] == 10
    assert samples[("insight_supervisor_window_error_rate", agent)] == pytest.approx(0.2)
    assert samples[("insight_supervisor_window_median_latency_seconds", agent)] == pytest.approx(0.2)
    assert ("insight_supervisor_window_average_rating", agent) not in samples  # no rating yet: no sample
    assert samples[("insight_supervisor_window_volume", (("agent", "network_narrative"),))] == 0
    assert samples[("insight_supervisor_optimizations_started_total", agent)] == 1
    assert ("insight_supervisor_trips_total", agent) not in samples
    assert samples[("insight_supervisor_seconds_since_last_success", ())] >= 0
    assert samples[("insight_supervisor_consecutive_failures", ())] == 0


def test_degraded_after_consecutive_failed_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  endpoint: Callable[[SupervisorStats, Settings], HealthServer]
                                                  ) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    settings = load_settings(home=tmp_path / "home", mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}")
    ondemand = _config(check_interval=0.1)
    supervisor = Supervisor(ondemand, settings, McpLauncher(ondemand, settings))
    stats = SupervisorStats(supervisor.store, degraded_after=2)
    server = endpoint(stats, settings)

    _run_until(supervisor, stats, lambda: stats.consecutive_failures >= 1)
    first = httpx.get(server.url + "/health", timeout=10).json()
    assert first["status"] == "ok" and first["consecutive_failures"] == 1  # one failure is not an outage yet
    _run_until(supervisor, stats, lambda: stats.consecutive_failures >= 2)
    body = httpx.get(server.url + "/health", timeout=10).json()
    assert body["status"] == "degraded" and body["consecutive_failures"] == 2 and body["checks"] == 2
    assert body["last_success_at"] is None and body["last_error"]
    samples = metric_samples(httpx.get(server.url + "/metrics", timeout=10).text)
    assert samples[("insight_supervisor_check_failures_total", ())] == 2
    assert samples[("insight_supervisor_consecutive_failures", ())] == 2
    assert ("insight_supervisor_seconds_since_last_success", ()) not in samples


def test_the_token_guards_metrics_and_health_details(tmp_path: Path,
                                                     endpoint: Callable[[SupervisorStats, Settings], HealthServer]
                                                     ) -> None:
    settings = load_settings(home=tmp_path / "home", api_token="sup-token")
    ondemand = _config(check_interval=60)
    stats = SupervisorStats(Supervisor(ondemand, settings, McpLauncher(ondemand, settings)).store)
    server = endpoint(stats, settings)
    assert httpx.get(server.url + "/health", timeout=10).json() == {"status": "starting"}
    assert httpx.get(server.url + "/metrics", timeout=10).status_code == 401
    auth = {"Authorization": "Bearer sup-token"}
    assert httpx.get(server.url + "/metrics", headers=auth, timeout=10).status_code == 200
    assert "consecutive_failures" in httpx.get(server.url + "/health", headers=auth, timeout=10).json()
    # Host checks as on serve: a rebinding page's Host is refused.
    assert httpx.get(server.url + "/health", headers={"Host": "evil.example"}, timeout=10).status_code == 421


def test_a_port_in_use_fails_at_start(tmp_path: Path,
                                      endpoint: Callable[[SupervisorStats, Settings], HealthServer]) -> None:
    settings = load_settings(home=tmp_path / "home")
    ondemand = _config(check_interval=60)
    stats = SupervisorStats(Supervisor(ondemand, settings, McpLauncher(ondemand, settings)).store)
    first = endpoint(stats, settings)
    with pytest.raises(OSError):
        HealthServer(stats, settings, port=first.port)


# The command as `insight-mcp supervise` runs it, with --host/--port, until SIGTERM.
SUPERVISE = """
import sys, typer
from insight_mcp.agents.settings import load_settings
from insight_mcp.supervisor.command import supervise_command

app = typer.Typer()


@app.callback()
def main(ctx: typer.Context) -> None:
    ctx.obj = load_settings()


app.command("supervise")(supervise_command)
app(sys.argv[1:])
"""


def test_the_daemon_serves_its_endpoint_and_stops_on_sigterm(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    home = tmp_path / "home"
    home.mkdir()
    (home / "agent_config.yaml").write_text(
        f"ondemand_optimization:\n  mcp_server: {{endpoint: 'http://127.0.0.1:{free_port()}'}}\n"
        "  supervisory_agent: {check_interval: 3600}\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INSIGHT_", "MLFLOW_TRACKING"))}
    env |= {"INSIGHT_HOME": str(home), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            "INSIGHT_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISE, "supervise", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        body = None
        for _ in range(600):
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json()
                if body["checks"]:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        assert body is not None and body["checks"] >= 1 and body["consecutive_failures"] >= 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)

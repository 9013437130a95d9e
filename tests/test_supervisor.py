"""The supervisor against a real `insight-mcp serve` over streamable HTTP: a real slip trips exactly once, the job
is followed across a restart, and the cooldown holds. Without an LM the optimization job fails, which is enough
to follow the supervisor's own decisions; the optimization itself is tested in test_optimization*."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from serve_process import serve
from trace_burst import write_traces

from insight_mcp.agents.core.mlflow_store import open_client
from insight_mcp.agents.settings import load_settings
from insight_mcp.agents.supervision import state
from insight_mcp.agents.supervision.config import AgentConfig
from insight_mcp.supervisor.daemon import EXPERIMENT, Supervisor
from insight_mcp.supervisor.launcher import McpLauncher

pytestmark = pytest.mark.e2e


def _burst(tracking_uri: str, artifacts: Path, n: int, errors: int) -> None:
    write_traces(tracking_uri, artifacts, n, errors,
                 {"insight.agent": "narrative", "insight.prompt": "insight.security_summary"})


def test_a_real_slip_trips_once_the_job_is_followed_across_a_restart_and_the_cooldown_holds(
    store_home: Path, fixture_workspace: Path
) -> None:
    home = store_home
    settings = load_settings(home=home, workspace_file=fixture_workspace)
    served = serve(fixture_workspace, home, INSIGHT_TRACING__ENABLED="false")
    try:
        config = AgentConfig.model_validate({"ondemand_optimization": {
            "mcp_server": {"endpoint": served.base}, "supervisory_agent": {"min_traces_for_trigger": 50}}})
        ondemand = config.ondemand_optimization
        _burst(settings.tracking_uri, settings.mlflow_artifacts, 40, 2)
        supervisor = Supervisor(ondemand, settings, McpLauncher(ondemand, settings))
        quiet = {c.agent: c for c in supervisor.check_once()}["security_summary"]
        assert not quiet.verdict.trips and "fewer than min_traces_for_trigger" in quiet.action

        _burst(settings.tracking_uri, settings.mlflow_artifacts, 40, 20)  # 22 errors in 80 calls
        tripped = {c.agent: c for c in supervisor.check_once()}["security_summary"]
        assert tripped.new_traces == 40 and tripped.verdict.trips, tripped.action
        assert "optimization job" in tripped.action and "started" in tripped.action
        job_id = state.load(supervisor.store, "security_summary").inflight_job
        assert job_id and not job_id.startswith(state.STARTING)

        # A new process (as after kill -9) reads the same state: it follows the job, it does not trip again.
        restarted = Supervisor(ondemand, settings, McpLauncher(ondemand, settings))
        deadline = time.monotonic() + 120
        while True:
            check = {c.agent: c for c in restarted.check_once()}["security_summary"]
            if "ended" in check.action or time.monotonic() > deadline:
                break
            assert "still" in check.action or "already in flight" in check.action, check.action
            time.sleep(0.5)
        assert "ended failed" in check.action  # no LM configured here: the job says so and ends
        after = state.load(restarted.store, "security_summary")
        assert after.inflight_job is None and "INSIGHT_LM" in (after.last_trip["outcome"]["error"] or "")
        again = {c.agent: c for c in restarted.check_once()}["security_summary"]
        assert again.verdict.trips and "cooling down" in again.action

        # A user's own agent the server refuses to optimize as configured (a scorer made for our prompts only):
        # refused once, then it cools down (no retry at every check), and nothing is logged as an intervention.
        own = AgentConfig.model_validate({"ondemand_optimization": {
            "mcp_server": {"endpoint": served.base}, "supervisory_agent": {"min_traces_for_trigger": 50},
            "agents": [{"name": "payroll_bot", "experiment": "insight-narrative", "scorer": "completeness",
                        "tags": {"insight.prompt": "insight.security_summary"},
                        "prompt": "acme.payroll_answers"}]}}).ondemand_optimization
        user = Supervisor(own, settings, McpLauncher(own, settings))
        refused = user.check_once()[0]
        assert "refused" in refused.action and "completeness checks the facts our own prompts" in refused.action
        assert state.load(user.store, "payroll_bot").cooldown_until > time.time()
        assert "cooling down" in user.check_once()[0].action
    finally:
        served.stop()

    client = open_client(settings.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert len(runs) == 1, "one trip, one intervention"
    run = runs[0]
    assert run.data.tags["insight.job_id"] == job_id and run.data.tags["insight.outcome"] == "failed"
    assert "error rate" in run.data.params["reasons"] and "wilson" in run.data.params["test"]
    assert run.data.metrics["volume"] == 80 and run.data.metrics["errors"] == 22


def test_a_users_own_agent_slips_on_ratings_and_its_prompt_is_optimized_through_serve(
    store_home: Path, fixture_workspace: Path
) -> None:
    """The support bot of user_agent.py, named in agent_config by its experiment, tag filter, prompt and scorer:
    poor ratings trip it, the optimization server learns from its own traces, and the new prompt is promoted."""
    from lm_server import LMServer
    from user_agent import EXPERIMENT as BOT_EXPERIMENT
    from user_agent import PROMPT, TAGS, VAGUE_TEMPLATE, support_calls, write_support_traces

    settings = load_settings(home=store_home, workspace_file=fixture_workspace)
    write_support_traces(settings.tracking_uri, settings.mlflow_artifacts, support_calls(40, good_every=3),
                         register=VAGUE_TEMPLATE)  # 14 answers rated 5, 26 rated 1-2: average 2.7
    with LMServer(api_key="sk-test-123456") as lm:
        served = serve(fixture_workspace, store_home, INSIGHT_TRACING__ENABLED="false", INSIGHT_LM="openai/test-model",
                       INSIGHT_LM_API_BASE=lm.url, INSIGHT_LM_API_KEY="sk-test-123456")
        try:
            ondemand = AgentConfig.model_validate({"ondemand_optimization": {
                "mcp_server": {"endpoint": served.base}, "supervisory_agent": {"min_traces_for_trigger": 30},
                "max_lm_calls": 120,
                "agents": [{"name": "support_bot", "experiment": BOT_EXPERIMENT, "tags": TAGS, "prompt": PROMPT,
                            "scorer": "expected_response"}]}}).ondemand_optimization
            supervisor = Supervisor(ondemand, settings, McpLauncher(ondemand, settings))
            tripped = supervisor.check_once()[0]
            assert tripped.verdict.trips and "average rating" in " ".join(tripped.verdict.reasons), tripped.action
            assert "optimization job" in tripped.action and "started" in tripped.action
            deadline = time.monotonic() + 240
            while "ended" not in (check := supervisor.check_once()[0]).action and time.monotonic() < deadline:
                time.sleep(0.5)
            assert "ended succeeded" in check.action, check.action
        finally:
            served.stop()
        assert any(r.path.endswith("/chat/completions") for r in lm.requests)

    client = open_client(settings.tracking_uri)
    production = client.load_prompt(f"prompts:/{PROMPT}@production", cache_ttl_seconds=0)
    assert str(production.version) == "2" and "{{message}}" in production.template
    assert "we have logged your request" in production.template, "it learned from the well-rated answers"
    (run,) = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert run.data.tags["insight.outcome"] == "succeeded: promoted" and run.data.tags["insight.agent"] == "support_bot"
    assert "average rating" in run.data.params["reasons"]

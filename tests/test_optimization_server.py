"""The optimization server over the in-memory MCP transport: optimize_prompt as a job with progress that promotes
through the real LiteLLM HTTP path, the prompt-version tools, cancellation that leaves production alone, errors
that say what to change (INSIGHT_LM among them), and read-only mode without a single write tool."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from lm_server import LMServer
from mcp import Client
from pydantic import SecretStr
from test_optimization import make_worse_production, production, store_settings, write_cases

from insight_mcp.agents.core.mlflow_store import open_client
from insight_mcp.agents.core.prompts import SECURITY_SUMMARY, load_prompt
from insight_mcp.agents.ingestion.duckdb_backend import DuckDBSystemTables
from insight_mcp.agents.settings import Settings
from insight_mcp.servers.optimization import build_optimization_server
from insight_mcp.servers.toolset import InsightServer

WRITE_TOOLS = {"optimize_prompt", "promote_prompt", "rollback_prompt", "cancel_optimization_job",
               "trigger_optimization"}
READ_TOOLS = {"get_optimization_job", "wait_for_optimization_job", "list_optimization_jobs", "list_prompt_versions"}


@pytest.fixture
def backend(fixture_workspace: Path) -> Iterator[DuckDBSystemTables]:
    opened = DuckDBSystemTables(fixture_workspace)
    yield opened
    anyio.run(opened.close)


@pytest.fixture
def worse(settings: Settings, migrated_store: Path) -> Settings:
    made = store_settings(settings, migrated_store)
    make_worse_production(made)
    return made


def with_lm(settings: Settings, server: LMServer) -> Settings:
    return settings.model_copy(update={"lm_model": "openai/test-model", "lm_api_base": server.url,
                                       "lm_api_key": SecretStr("sk-test-123456")})


def close(server: InsightServer) -> None:
    for closer in server.closers:
        closer()


def data(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content[0].text
    return dict(result.structured_content)


async def test_optimize_prompt_runs_as_a_job_and_promotes_through_the_http_lm(
    worse: Settings, backend: DuckDBSystemTables, tmp_path: Path
) -> None:
    cases = write_cases(tmp_path / "cases.jsonl", 24)
    seen: list[tuple[float, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, message))

    # The waiter samples the job every 0.25 s: 10 ms an LM call keeps the search (150 calls) long enough to be seen.
    with LMServer("slow", slow_seconds=0.01) as lm:
        server = build_optimization_server(with_lm(worse, lm), backend)
        try:
            async with Client(server) as client:
                started = data(await client.call_tool("optimize_prompt", {
                    "prompt": SECURITY_SUMMARY, "framework": "dspy", "optimizer": "gepa", "dataset": str(cases),
                    "max_lm_calls": 150, "min_traces": 10}))
                assert started["status"] in ("queued", "running")
                record = data(await client.call_tool("wait_for_optimization_job", {
                    "job_id": started["job_id"], "timeout_seconds": 240}, progress_callback=on_progress))
                listed = data(await client.call_tool("list_prompt_versions", {"prompt": SECURITY_SUMMARY}))
                back = data(await client.call_tool("rollback_prompt", {"prompt": SECURITY_SUMMARY}))
                served_after_rollback = load_prompt(worse, SECURITY_SUMMARY).version
                again = data(await client.call_tool("promote_prompt", {"prompt": SECURITY_SUMMARY, "version": "3"}))
                jobs = data(await client.call_tool("list_optimization_jobs", {}))
        finally:
            close(server)
        sent = [r for r in lm.requests if r.path.endswith("/chat/completions")]

    assert record["status"] == "succeeded", record
    result = record["result"]
    assert result["outcome"] == "promoted" and result["promoted"] and result["candidate_version"] == "3"
    assert result["significance"]["p_value"] < 0.05 and result["lm_calls"] == len(sent) <= 150
    assert seen and seen[-1][0] == 1.0 and [p for p, _ in seen] == sorted(p for p, _ in seen)
    assert any(m and m.startswith("searching") for _, m in seen)

    assert (listed["production"], listed["candidate"], listed["total"]) == ("3", "3", 3)
    assert listed["versions"][0]["optimization_run_id"] == result["mlflow_run_id"]
    assert (back["previous"], back["version"], back["changed"]) == ("3", "2", True) and served_after_rollback == "2"
    assert (again["previous"], again["version"], again["changed"]) == ("2", "3", True)
    assert load_prompt(worse, SECURITY_SUMMARY).version == "3"
    assert [j["id"] for j in jobs["jobs"]] == [started["job_id"]] and jobs["jobs"][0]["kind"] == "prompt_optimization"


async def test_a_cancelled_optimization_leaves_production_alone(
    worse: Settings, backend: DuckDBSystemTables, tmp_path: Path
) -> None:
    cases = write_cases(tmp_path / "cases.jsonl", 24)
    with LMServer("slow", slow_seconds=0.2) as lm:
        server = build_optimization_server(with_lm(worse, lm), backend)
        try:
            async with Client(server) as client:
                job_id = data(await client.call_tool("optimize_prompt", {
                    "prompt": SECURITY_SUMMARY, "dataset": str(cases), "min_traces": 10,
                    "max_lm_calls": 150}))["job_id"]
                for _ in range(300):  # until the search is under way
                    record = data(await client.call_tool("get_optimization_job", {"job_id": job_id}))
                    if (record["message"] or "").startswith("searching"):
                        break
                    await anyio.sleep(0.1)
                cancelled = data(await client.call_tool("cancel_optimization_job", {"job_id": job_id}))
        finally:
            close(server)
    assert cancelled["status"] == "cancelled" and cancelled["progress"] < 1
    client = open_client(worse.tracking_uri)
    experiment = client.get_experiment_by_name("insight-optimization").experiment_id
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the worker thread stops at its next LM call and closes its run
        [run] = client.search_runs([experiment])
        if run.info.status != "RUNNING":
            break
        await anyio.sleep(0.2)
    assert run.info.status == "KILLED" and run.data.params["reason"] == "cancelled"
    assert production(worse) == "2", "a cancelled optimization never moves production"


async def test_without_an_lm_the_job_fails_naming_insight_lm(
    worse: Settings, backend: DuckDBSystemTables, tmp_path: Path
) -> None:
    cases = write_cases(tmp_path / "cases.jsonl", 12)
    server = build_optimization_server(worse, backend)
    try:
        async with Client(server) as client:
            job_id = data(await client.call_tool("optimize_prompt", {"prompt": SECURITY_SUMMARY,
                                                                     "dataset": str(cases)}))["job_id"]
            record = data(await client.call_tool("wait_for_optimization_job", {"job_id": job_id,
                                                                               "timeout_seconds": 120}))
    finally:
        close(server)
    assert record["status"] == "failed" and "set INSIGHT_LM" in record["error"]
    assert "Traceback" not in record["error"] and production(worse) == "2"


async def test_bad_arguments_are_tool_errors_that_say_what_to_change(
    worse: Settings, backend: DuckDBSystemTables
) -> None:
    server = build_optimization_server(worse, backend)
    try:
        async with Client(server) as client:
            unknown = await client.call_tool("optimize_prompt", {"prompt": "insight.nope", "dataset": "x"})
            both = await client.call_tool("optimize_prompt", {"prompt": SECURITY_SUMMARY, "dataset": "x",
                                                              "since": "2026-11-01"})
            wrong = await client.call_tool("optimize_prompt", {"prompt": SECURITY_SUMMARY, "dataset": "x",
                                                               "framework": "textgrad", "optimizer": "gepa"})
            missing = await client.call_tool("promote_prompt", {"prompt": SECURITY_SUMMARY, "version": "9"})
            nothing = await client.call_tool("rollback_prompt", {"prompt": SECURITY_SUMMARY, "to_version": "2"})
            stay = data(await client.call_tool("promote_prompt", {"prompt": SECURITY_SUMMARY, "version": "2"}))
            listed = data(await client.call_tool("list_optimization_jobs", {}))
    finally:
        close(server)
    texts = {name: r.content[0].text for name, r in (("unknown", unknown), ("both", both), ("wrong", wrong),
                                                      ("missing", missing))}
    assert all(r.is_error for r in (unknown, both, wrong, missing))
    assert "unknown prompt 'insight.nope'" in texts["unknown"] and "insight.security_summary" in texts["unknown"]
    assert "exactly one training source" in texts["both"]
    assert "textgrad framework offers tgd" in texts["wrong"]
    assert "has no version 9; its versions are 2, 1" in texts["missing"]
    assert not any("Traceback" in t for t in texts.values())
    assert not nothing.is_error and nothing.structured_content["changed"] is False
    assert stay["changed"] is False and "already is version 2" in stay["message"] and listed["jobs"] == []


async def test_write_tools_are_annotated_and_read_only_mode_has_none(
    settings: Settings, backend: DuckDBSystemTables
) -> None:
    writable = build_optimization_server(settings, backend)
    locked = build_optimization_server(settings.model_copy(update={"read_only": True}), backend)
    try:
        tools = {t.name: t for t in await writable.list_tools()}
        assert set(tools) == WRITE_TOOLS | READ_TOOLS
        for name, tool in tools.items():
            assert tool.annotations.read_only_hint is (name in READ_TOOLS), name
            assert tool.annotations.destructive_hint is False and tool.annotations.open_world_hint is False
        assert tools["optimize_prompt"].annotations.idempotent_hint is False
        assert tools["promote_prompt"].annotations.idempotent_hint is True

        offered = {t.name: t for t in await locked.list_tools()}
        assert set(offered) == READ_TOOLS and set(locked.declarations) == READ_TOOLS
        assert all(t.annotations.read_only_hint for t in offered.values())
    finally:
        close(writable)
        close(locked)


async def test_trigger_optimization_takes_the_supervisors_path_with_its_cooldown_and_single_flight(
    worse: Settings, backend: DuckDBSystemTables, tmp_path: Path
) -> None:
    from insight_mcp.agents.core.state import StateStore
    from insight_mcp.agents.supervision import state
    from insight_mcp.agents.supervision.interventions import EXPERIMENT

    config = tmp_path / "agent_config.yaml"
    config.write_text("ondemand_optimization:\n  enabled: true\n  promotion: approve\n"
                      "  supervisory_agent:\n    cooldown_seconds: 3600\n")
    configured = worse.model_copy(update={"agent_config": config})
    with LMServer() as lm:
        server = build_optimization_server(with_lm(configured, lm), backend)
        try:
            async with Client(server) as client:
                first = data(await client.call_tool("trigger_optimization", {
                    "agent": "security_summary", "reason": "<script>alert(1)</script> rated poorly"}))
                again = data(await client.call_tool("trigger_optimization", {"agent": "insight.security_summary"}))
                ended = data(await client.call_tool("wait_for_optimization_job", {"job_id": first["job_id"],
                                                                                  "timeout_seconds": 120}))
                cooling = data(await client.call_tool("trigger_optimization", {"agent": "security_summary"}))
                other = data(await client.call_tool("trigger_optimization", {"agent": "network_narrative"}))
                unknown = await client.call_tool("trigger_optimization", {"agent": "payroll_bot"})
        finally:
            close(server)
    assert first["started"] and first["job_id"].startswith("job-") and first["cooldown_until"]
    assert not again["started"] and "already in flight" in again["message"] and again["job_id"] is None
    # no trace of this prompt in the window: the job skips, saying what it lacked
    assert ended["status"] == "succeeded" and ended["result"]["outcome"] == "skipped", ended
    assert ended["message"].startswith("skipped: ") and "min_traces" in ended["message"], ended["message"]
    assert ended["params"]["trigger"] == "manual" and ended["params"]["promotion"] == "approve"
    assert not cooling["started"] and "cooling down" in cooling["message"], cooling
    assert other["started"], "each agent has its own cooldown"
    assert unknown.is_error and "security_summary, finding_explanation, network_narrative" in unknown.content[0].text

    store = StateStore(configured.state_path)
    logged = state.interventions(store)
    assert [(i.agent, i.trigger) for i in logged] == [("network_narrative", "manual"), ("security_summary", "manual")]
    assert logged[1].job_id == first["job_id"] and logged[1].outcome == "succeeded: skipped"
    assert "<script>alert(1)</script> rated poorly" in logged[1].reasons[0]
    client_ = open_client(configured.tracking_uri)
    runs = client_.search_runs([client_.get_experiment_by_name(EXPERIMENT).experiment_id],
                               filter_string=f"tags.`insight.job_id` = '{first['job_id']}'")
    assert len(runs) == 1 and runs[0].data.params["trigger"] == "manual"
    assert runs[0].data.tags["insight.outcome"] == "succeeded: skipped" and runs[0].info.status == "FINISHED"


async def test_trigger_optimization_without_an_lm_or_with_a_broken_config_says_what_to_set(
    worse: Settings, backend: DuckDBSystemTables, tmp_path: Path
) -> None:
    from insight_mcp.agents.core.state import StateStore
    from insight_mcp.agents.supervision import state

    broken = tmp_path / "agent_config.yaml"
    broken.write_text("ondemand_optimization:\n  triggers:\n    error_rate_threshold: 7\n")
    plain = build_optimization_server(worse, backend)
    misconfigured = build_optimization_server(worse.model_copy(update={"agent_config": broken}), backend)
    try:
        async with Client(plain) as client:
            no_lm = await client.call_tool("trigger_optimization", {"agent": "security_summary"})
        async with Client(misconfigured) as client:
            bad = await client.call_tool("trigger_optimization", {"agent": "security_summary"})
    finally:
        close(plain)
        close(misconfigured)
    assert no_lm.is_error and "set INSIGHT_LM" in no_lm.content[0].text
    said = bad.content[0].text
    assert bad.is_error and "triggers.error_rate_threshold" in said and str(broken) in said
    current = state.load(StateStore(worse.state_path), "security_summary")
    assert current.cooldown_until == 0 and current.inflight_job is None, "a refused trigger claims nothing"

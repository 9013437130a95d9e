"""The status page of `insight-mcp serve`: agents against their thresholds, cooldowns and jobs in flight, candidates
waiting for a person, the latest analysis and MLflow links; hostile text stays text, in a real Chromium too."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from chromium import Browser
from markupsafe import escape
from serve_process import Served, serve

from insight_mcp.agents.core.jobs import JobRecord, JobRunner
from insight_mcp.agents.core.state import StateStore
from insight_mcp.agents.settings import Settings, load_settings
from insight_mcp.agents.supervision import state
from insight_mcp.clients.demo import free_port
from insight_mcp.servers.status_page import StatusPage

pytestmark = pytest.mark.e2e

SCRIPT = "<script>window.__pwned='script'</script>"
IMG = "<img src=x onerror=\"window.__pwned='img'\">"
HOSTILE = f"error rate 27.5% {SCRIPT} above 5.0% {IMG}"
RUN_ID = "0123456789abcdef0123456789abcdef"
CONFIG = """\
ondemand_optimization:
  enabled: true
  promotion: approve
  supervisory_agent:
    min_traces_for_trigger: 40
    cooldown_seconds: 7200
  triggers:
    error_rate_threshold: 0.05
    rating_threshold: 3.5
    response_time_threshold: 4.0
  agents:
    - name: security_summary
      prompt: insight.security_summary
      tags: {insight.prompt: insight.security_summary}
    - name: finding_explanation
      prompt: insight.finding_explanation
      tags: {insight.prompt: insight.finding_explanation}
    - name: network_narrative
      prompt: insight.network_narrative
"""
REPORT = {"report_id": "r-1234", "generated_at": "2026-11-28T06:00:00Z", "since": "2026-11-21T00:00:00Z",
          "until": "2026-11-28T00:00:00Z", "counts": {"total": 4, "by_severity": {"high": 3, "critical": 1},
                                                      "by_category": {}}}


def _finish(runner: JobRunner, record: JobRecord) -> JobRecord:
    for _ in range(400):
        done = runner.get(record.id, "local")
        if done.finished:
            return done
        time.sleep(0.05)
    raise AssertionError(f"job {record.id} did not finish")


def populate(home: Path) -> dict[str, Any]:
    """Real records, written the way the supervisor, the job runner and analyze write them."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "agent_config.yaml").write_text(CONFIG)
    store = StateStore(home / "state.db")
    now = time.time()
    metrics = {"volume": 80, "errors": 22, "error_rate": 0.275, "error_rate_lower_bound": 0.19, "ratings": 12,
               "average_rating": 2.5, "median_latency_seconds": 1.25, "since_ms": 1, "until_ms": 2}
    state.save_check(store, state.CheckSnapshot(agent="security_summary", checked_at=now, metrics=metrics,
                                                reasons=[HOSTILE, "average rating 2.50 over 12 ratings below 3.5"],
                                                trips=True, action=f"tripped: {IMG}"))
    claim = state.claim_trip(store, "security_summary", now, 7200, {"reasons": [HOSTILE]})
    assert claim is not None
    state.record_job(store, "security_summary", claim, "job-inflight-1")
    state.add_intervention(store, "security_summary", now, "threshold", [HOSTILE], "job-inflight-1")
    quiet = {"volume": 12, "errors": 0, "error_rate": 0.0, "error_rate_lower_bound": 0.0, "ratings": 0,
             "average_rating": None, "median_latency_seconds": 0.5, "since_ms": 1, "until_ms": 2}
    state.save_check(store, state.CheckSnapshot(
        agent="finding_explanation", checked_at=now, metrics=quiet, trips=False, action="no action",
        reasons=["12 traces in the window, fewer than min_traces_for_trigger (40)"]))
    claim = state.claim_trip(store, "finding_explanation", now - 60, 3600, {"reasons": ["earlier slip"]})
    assert claim is not None
    state.release(store, "finding_explanation", keep_cooldown=True, outcome={"status": "succeeded"})

    runner = JobRunner(store, describe_error=str)
    result = {"prompt": "insight.security_summary", "framework": "dspy", "optimizer": "bootstrap_few_shot",
              "outcome": "awaiting_approval", "promoted": False, "candidate_version": "3", "champion_version": "2",
              "reason": f"the candidate won {SCRIPT}", "mlflow_run_id": RUN_ID}

    async def optimized(progress: Any) -> dict[str, Any]:
        return result

    async def hostile(progress: Any) -> dict[str, Any]:
        raise ValueError(f"evaluation broke on {IMG}")

    async def forged(progress: Any) -> dict[str, Any]:
        return {**result, "outcome": "not_promoted", "mlflow_run_id": "javascript:alert(1)"}

    approval = _finish(runner, runner.submit("prompt_optimization", "local", {"prompt": "insight.security_summary"},
                                             optimized))
    failed = _finish(runner, runner.submit("agent_evaluation", "local", {"kind": "security_summary"}, hostile))
    _finish(runner, runner.submit("prompt_optimization", "local", {"prompt": "insight.security_summary"}, forged))
    runner.close()

    reports = home / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "latest.json").write_text(json.dumps(REPORT))
    (reports / "latest.md").write_text(f"# Report\n\n{SCRIPT}\n")
    (reports / "latest.html").write_text("<!DOCTYPE html><title>report</title><p>the report</p>")
    return {"approval": approval.id, "failed": failed.id}


@pytest.fixture(scope="module")
def served(fixture_workspace: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, dict[str, Any]]]:
    home = tmp_path_factory.mktemp("status") / "home"
    ids = populate(home)
    running = serve(fixture_workspace, home, INSIGHT_TRACING__ENABLED="false",
                    INSIGHT_MLFLOW_UI_URL="http://mlflow.internal:5000")
    yield running, {**ids, "home": home}
    running.stop()


def test_the_page_shows_each_agent_against_its_thresholds(served: tuple[Served, dict[str, Any]]) -> None:
    running, _ = served
    answer = httpx.get(running.base + "/", timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    csp = answer.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "style-src 'sha256-" in csp and "script-src" not in csp
    page = answer.text
    for expected in ("security_summary", "27.5%", "above (its 95% Wilson lower bound) 5.0%", "2.50", "below 3.50",
                     "1.25", "above 4.00", "anything can trip 40",
                     "Thresholds: error rate above 5.0%", "promotion approve"):
        assert expected in page, expected
    assert "http://" not in page.split("</head>")[0].replace(csp, "")

    data = StatusPage.model_validate(httpx.get(running.base + "/?format=json", timeout=30).json())
    agents = {a.name: a for a in data.agents}
    summary = agents["security_summary"]
    assert summary.state == "optimizing" and summary.inflight_job == "job-inflight-1" and summary.trips
    assert summary.cooldown_until is not None and summary.checked_at is not None
    metrics = {m.name: m for m in summary.metrics}
    assert metrics["volume"].value == 80 and metrics["volume"].threshold == 40 and metrics["volume"].breached
    assert metrics["error_rate"].breached and metrics["error_rate"].threshold == 0.05
    assert metrics["average_rating"].value == 2.5 and metrics["average_rating"].breached
    assert metrics["median_latency_seconds"].breached is False
    explainer = agents["finding_explanation"]
    assert explainer.state == "cooling_down" and explainer.inflight_job is None
    assert explainer.cooldown_until is not None and f"cooling down until {explainer.cooldown_until:%Y-%m-%d}" in page
    assert {m.name: m.breached for m in explainer.metrics}["volume"] is False
    assert {m.name: m.breached for m in explainer.metrics}["average_rating"] is None
    assert agents["network_narrative"].state == "not_checked"
    assert data.thresholds == {"error_rate_threshold": 0.05, "rating_threshold": 3.5, "response_time_threshold": 4.0}
    assert data.supervision["min_traces_for_trigger"] == 40


def test_interventions_jobs_and_the_candidate_waiting_for_approval(served: tuple[Served, dict[str, Any]]) -> None:
    running, ids = served
    page = httpx.get(running.base + "/", timeout=30).text
    data = StatusPage.model_validate(httpx.get(running.base + "/?format=json", timeout=30).json())
    [approval] = data.approvals
    assert approval.job_id == ids["approval"] and approval.prompt == "insight.security_summary"
    assert approval.candidate_version == "3" and approval.tool == "promote_prompt"
    assert approval.arguments == {"prompt": "insight.security_summary", "version": "3"}
    command = ("insight-mcp call optimization promote_prompt "
               "'{\"prompt\": \"insight.security_summary\", \"version\": \"3\"}'")
    assert approval.command == command
    assert escape(command) in page
    assert "waits under <code>@candidate</code>" in page and "promote_prompt</code> tool" in page
    kinds = sorted((j.kind, j.status) for j in data.jobs)
    assert kinds == [("agent_evaluation", "failed"), ("prompt_optimization", "succeeded"),
                     ("prompt_optimization", "succeeded")]
    [intervention] = data.interventions
    assert intervention.agent == "security_summary" and intervention.job_id == "job-inflight-1"
    assert intervention.trigger == "threshold" and intervention.reasons == [HOSTILE]
    # A run id that is not one MLflow made is shown, never linked; without MLflow, no run links at all.
    assert "javascript:alert(1)" in page and 'href="javascript' not in page
    assert all(j.run_url is None for j in data.jobs)


def test_hostile_text_is_escaped_never_markup(served: tuple[Served, dict[str, Any]]) -> None:
    running, _ = served
    page = httpx.get(running.base + "/", timeout=30).text
    assert SCRIPT not in page and IMG not in page and "<img" not in page and "<script" not in page
    assert escape(SCRIPT) in page and escape(IMG) in page
    assert page.count(escape(HOSTILE)) == 2  # the check's reason and the intervention's
    assert escape(f"evaluation broke on {IMG}") in page


def test_the_latest_analysis_and_its_report_routes(served: tuple[Served, dict[str, Any]]) -> None:
    running, ids = served
    data = StatusPage.model_validate(httpx.get(running.base + "/?format=json", timeout=30).json())
    assert data.analysis is not None and data.analysis.report_id == "r-1234" and data.analysis.total == 4
    assert data.analysis.by_severity == {"high": 3, "critical": 1}
    assert data.analysis.links == {fmt: f"/reports/latest.{fmt}" for fmt in ("html", "md", "json")}
    assert data.analysis.paths["json"] == str(ids["home"] / "reports" / "latest.json")
    report = httpx.get(running.base + "/reports/latest.html", timeout=30)
    assert report.status_code == 200 and "the report" in report.text
    assert report.headers["content-security-policy"].startswith("sandbox allow-scripts; default-src 'none'")
    markdown = httpx.get(running.base + "/reports/latest.md", timeout=30)
    assert markdown.headers["content-type"].startswith("text/plain") and SCRIPT in markdown.text
    assert markdown.headers["x-content-type-options"] == "nosniff"
    assert httpx.get(running.base + "/reports/latest.json", timeout=30).json()["report_id"] == "r-1234"
    for path in ("/reports/state.db", "/reports/latest.pdf", "/reports/..%2fstate.db", "/reports/"):
        assert httpx.get(running.base + path, timeout=30).status_code == 404, path
    assert httpx.get(running.base + "/?format=xml", timeout=30).status_code == 400


def test_mlflow_links_fall_back_to_the_ui_when_there_is_no_store(served: tuple[Served, dict[str, Any]]) -> None:
    running, ids = served
    data = StatusPage.model_validate(httpx.get(running.base + "/?format=json", timeout=30).json())
    assert data.mlflow.ui == "http://mlflow.internal:5000" and not data.mlflow.reachable
    assert data.mlflow.note and "no MLflow store yet" in data.mlflow.note
    assert set(data.mlflow.experiments) == {"insight-analysis", "insight-supervisor", "insight-optimization",
                                            "insight-narrative"}
    assert set(data.mlflow.experiments.values()) == {"http://mlflow.internal:5000/"}
    assert not (ids["home"] / "mlflow.db").exists(), "the status page never creates a tracking store"


def test_a_broken_agent_config_is_shown_not_a_500(served: tuple[Served, dict[str, Any]]) -> None:
    running, ids = served
    config = ids["home"] / "agent_config.yaml"
    good = config.read_text()
    try:
        config.write_text("ondemand_optimization:\n  triggers: {rating_threshold: 9}\n")
        answer = httpx.get(running.base + "/", timeout=30)
        data = httpx.get(running.base + "/?format=json", timeout=30).json()
        config.write_text("ondemand_optimization: [unclosed\n")
        unparsable = httpx.get(running.base + "/?format=json", timeout=30).json()
    finally:
        config.write_text(good)
    assert answer.status_code == 200 and 'id="config-error"' in answer.text
    assert "triggers.rating_threshold" in data["config_error"] and "is not valid YAML" in unparsable["config_error"]
    # What the store knows is still shown, without thresholds to judge it against.
    assert {a["name"] for a in data["agents"]} >= {"security_summary", "finding_explanation"}
    assert data["thresholds"] == {} and len(data["approvals"]) == 1


def test_the_page_in_chromium_renders_with_nothing_fetched_and_nothing_run(
        served: tuple[Served, dict[str, Any]]) -> None:
    running, _ = served
    url = running.base + "/"
    with Browser() as browser:
        page = browser.new_page()
        try:
            page.navigate(url)
            assert page.evaluate("document.title") == "Insight MCP status"
            assert page.evaluate("typeof window.__pwned") == "undefined"
            assert page.evaluate("document.scripts.length") == 0
            assert page.evaluate("document.querySelectorAll('img').length") == 0
            states = page.evaluate("Object.fromEntries(Array.from(document.querySelectorAll('tr.agent'))"
                                   ".map(r => [r.dataset.agent, r.dataset.state]))")
            assert states == {"security_summary": "optimizing", "finding_explanation": "cooling_down",
                              "network_narrative": "not_checked"}
            reasons = page.evaluate("Array.from(document.querySelectorAll('tr.agent .reasons li'))"
                                    ".map(li => li.textContent)")
            assert HOSTILE in reasons
            command = page.evaluate("document.querySelector('#approvals pre.command').textContent")
            assert command.endswith("'{\"prompt\": \"insight.security_summary\", \"version\": \"3\"}'")
            breached = page.evaluate("Array.from(document.querySelectorAll("
                                     "'tr.agent[data-agent=security_summary] tr.metric[data-breached=true]'))"
                                     ".map(r => r.dataset.metric)")
            assert breached == ["volume", "error_rate", "average_rating"]
            # The stylesheet applied (allowed by its hash), so the CSP blocked nothing of ours.
            assert page.evaluate("getComputedStyle(document.body).marginTop") == "0px"
            failed = browser.events(page.session_id, "Network.loadingFailed")
            assert page.problems == [] and failed == []
            assert page.requests == [url]
        finally:
            page.close()


def test_the_page_needs_the_token_like_metrics(fixture_workspace: Path, tmp_path: Path) -> None:
    from insight_mcp.servers.app import build_app

    settings = load_settings(home=tmp_path / "home", workspace_file=fixture_workspace, api_token="s3cret-token")
    app = build_app(settings)

    async def ask() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:9000") as client:
            codes = []
            for path in ("/", "/?format=json", "/reports/latest.json", "/metrics"):
                codes.append((await client.get(path)).status_code)
            good = {"Authorization": "Bearer s3cret-token"}
            codes.append((await client.get("/", headers=good)).status_code)
            codes.append((await client.get("/", headers={"Authorization": "Bearer wrong"})).status_code)
            return codes

    assert asyncio.run(ask()) == [401, 401, 401, 401, 200, 401]


def _status_app(settings: Settings) -> Any:
    from starlette.applications import Starlette

    from insight_mcp.servers.status_page import status_routes

    return Starlette(routes=status_routes(settings))


def _poll_json(app: Any, done: Any) -> StatusPage:
    """The page's JSON, asked again until `done(page)`: MLflow's ids come from a lookup that may outlast one answer."""

    async def ask() -> StatusPage:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            for _ in range(120):
                page = StatusPage.model_validate((await client.get("/?format=json")).json())
                if done(page):
                    return page
                await asyncio.sleep(0.5)
            return page

    return asyncio.run(ask())


def test_experiment_and_run_links_from_a_real_store(tmp_path: Path, migrated_store: Path) -> None:
    from insight_mcp.agents.core.mlflow_store import experiment_id, open_client

    home = tmp_path / "home"
    populate(home)
    shutil.copy(migrated_store, home / "mlflow.db")
    settings = load_settings(home=home)
    client = open_client(settings.tracking_uri)
    optimization = experiment_id(client, "insight-optimization", settings.mlflow_artifacts / "opt")
    supervisor = experiment_id(client, "insight-supervisor", settings.mlflow_artifacts / "sup")
    page = _poll_json(_status_app(settings), lambda p: p.mlflow.reachable)
    ui = "http://127.0.0.1:5000"
    assert page.mlflow.reachable and page.mlflow.note is None
    assert page.mlflow.experiments["insight-optimization"] == f"{ui}/#/experiments/{optimization}"
    assert page.mlflow.experiments["insight-supervisor"] == f"{ui}/#/experiments/{supervisor}"
    assert page.mlflow.experiments["insight-analysis"] == f"{ui}/"  # not created yet: the UI's front page
    runs = {j.mlflow_run_id: j.run_url for j in page.jobs if j.kind == "prompt_optimization"}
    assert runs == {RUN_ID: f"{ui}/#/experiments/{optimization}/runs/{RUN_ID}", "javascript:alert(1)": None}


def test_mlflow_down_degrades_to_the_ui_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    home = tmp_path / "home"
    populate(home)
    settings = load_settings(home=home, mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}")
    app = _status_app(settings)
    first = _poll_json(app, lambda p: True)  # whatever MLflow does, the page answers
    assert first.agents and first.mlflow.experiments["insight-optimization"] == "http://127.0.0.1:5000/"
    page = _poll_json(app, lambda p: "could not be reached" in (p.mlflow.note or ""))
    assert not page.mlflow.reachable and "could not be reached" in (page.mlflow.note or "")
    assert set(page.mlflow.experiments.values()) == {"http://127.0.0.1:5000/"}
    assert all(j.run_url is None for j in page.jobs)


def test_paths_that_are_no_servers_are_not_found(fixture_workspace: Path, tmp_path: Path) -> None:
    from insight_mcp.servers.app import build_app

    app = build_app(load_settings(home=tmp_path / "home", workspace_file=fixture_workspace))

    async def ask() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:9000") as client:
            return [(await client.get(path)).status_code
                    for path in ("/health", "/nowhere/mcp", "/system-tables", "/system-tables/elsewhere", "/health/x")]

    assert asyncio.run(ask()) == [200, 404, 404, 404, 404]

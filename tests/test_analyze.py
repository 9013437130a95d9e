"""The main job end to end: `analyze` on a generated workspace, its MLflow run and traces, and what goes wrong."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import duckdb
import jsonschema
import pytest
from typer.testing import CliRunner

from insight_mcp.agents.core.mlflow_store import open_client
from insight_mcp.agents.ingestion.duckdb_backend import DuckDBSystemTables
from insight_mcp.agents.orchestrator import AnalysisRequest, analyze
from insight_mcp.agents.reporting.model import Report
from insight_mcp.agents.reporting.render import ReportFolderError, ReportTemplateError
from insight_mcp.agents.settings import Settings, load_settings
from insight_mcp.clients.cli import app

DOCS = Path(__file__).resolve().parents[1] / "docs"
WINDOW = {"since": "2026-11-14", "until": "2026-11-21"}


def _settings(tmp_path: Path, workspace: Path, **overrides: object) -> Settings:
    return load_settings(home=tmp_path / "home", workspace_file=workspace, **overrides)


def _analyze(settings: Settings, **request: object):
    async def run():
        backend = DuckDBSystemTables(settings.workspace_path)
        try:
            return await analyze(settings, backend, AnalysisRequest(**{**WINDOW, **request}))
        finally:
            await backend.close()

    return anyio.run(run)


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory, demo_workspace: Path):
    """One analysis of the demo workspace into a local MLflow store, shared by the tests that only read it."""
    home = tmp_path_factory.mktemp("analysis")
    settings = _settings(home, demo_workspace)
    return settings, _analyze(settings)  # every format, as settings default


def test_analysis_finds_the_planted_attacks_and_writes_every_requested_format(analysed) -> None:
    settings, result = analysed
    report = result.report
    assert report.counts.total == len(report.findings) > 0
    assert report.counts.by_severity["critical"] + report.counts.by_severity["high"] > 0
    assert [a.agent for a in report.agents] == ["security", "network"]
    assert all(a.status == "ok" for a in report.agents)
    assert sum(a.findings for a in report.agents) == report.counts.total
    assert {c.table for c in report.coverage if c.rows} >= {"system.access.audit", "system.compute.clusters"}
    assert report.incidents, "the planted attacks add up to incidents"
    finding_ids = {f.id for f in report.findings}
    assert all({c.finding_id for c in i.findings} <= finding_ids for i in report.incidents)
    markdown = Path(result.reports.paths["md"]).read_text()
    assert markdown.index("## Incidents") < markdown.index("## Findings by severity"), "incidents lead"
    assert report.incidents[0].id in markdown
    assert [s.stage for s in result.stages] == ["ingestion", "analysis", "aggregation", "narrative", "reports",
                                                "alerts"]
    assert set(result.reports.paths) == {"md", "json", "html"}
    markdown = Path(result.reports.paths["md"]).read_text()
    assert markdown.index("## Executive summary") < markdown.index("## Findings by severity")
    top = report.findings[0]
    assert top.severity == "critical" and f"`{top.id}`" in markdown and "**Recommendation:**" in markdown
    # the latest copies are what the MCP resources serve
    assert Path(result.reports.latest["json"]).read_text() == Path(result.reports.paths["json"]).read_text()
    assert Path(result.reports.paths["md"]).parent == settings.reports_dir


def test_the_real_html_report_draws_in_chromium(analysed) -> None:
    from chromium import Browser

    _, result = analysed
    path = Path(result.reports.paths["html"])
    with Browser() as browser:
        page = browser.new_page()
        page.navigate(path.as_uri())
        assert page.wait_for("document.body.dataset.chartsReady") == "3"
        rows = page.evaluate("document.querySelectorAll('#findings-table tbody.finding').length")
        assert rows == result.report.counts.total
        assert page.problems == []
        assert page.requests == [path.as_uri()]


def test_json_report_matches_the_published_schema(analysed) -> None:
    _, result = analysed
    schema = json.loads((DOCS / "report.schema.json").read_text())
    assert schema == Report.model_json_schema(mode="serialization"), "run `make docs` to publish the schema"
    document = json.loads(Path(result.reports.paths["json"]).read_text())
    jsonschema.validate(document, schema, format_checker=jsonschema.FormatChecker())
    assert document["schema_version"] == "1.1.0" and isinstance(document["incidents"], list)
    assert Report.model_validate(document) == result.report


def test_the_analysis_is_an_mlflow_run_with_traced_stages_and_agents(analysed) -> None:
    settings, result = analysed
    tracking = result.tracking
    assert tracking.status == "recorded", tracking.reason
    client = open_client(settings.tracking_uri)
    experiment = client.get_experiment_by_name("insight-analysis")
    assert experiment.artifact_location.startswith((settings.home / "mlflow-artifacts").as_uri())
    run = client.get_run(tracking.run_id)
    report = result.report
    assert run.info.status == "FINISHED"
    assert run.data.params["rule_set_version"] == report.rule_set_version
    assert run.data.params["backend"] == "duckdb"
    assert run.data.params["since"].startswith("2026-11-14")
    assert run.data.metrics["findings.total"] == report.counts.total
    assert run.data.metrics["findings.severity.high"] == report.counts.by_severity["high"]
    assert run.data.metrics["findings.category.brute_force"] == report.counts.by_category["brute_force"]
    assert {"seconds.stage.analysis", "seconds.agent.security", "seconds.agent.network"} <= set(run.data.metrics)
    artifacts = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "reports")}
    assert artifacts == {Path(p).name for p in result.reports.paths.values()}

    trace = client.get_trace(tracking.trace_id)
    assert trace.info.tags["insight.agent"] == "orchestrator"
    assert trace.info.request_metadata["mlflow.sourceRun"] == run.info.run_id
    names = {span.name for span in trace.data.spans}
    assert {"analyze", "stage.ingestion", "stage.analysis", "agent.security", "agent.network", "stage.reports"} <= names
    assert trace.info.state.value == "OK"


def test_cli_analyze_prints_a_summary_and_json_without_progress_when_piped(tmp_path: Path,
                                                                           demo_workspace: Path) -> None:
    runner = CliRunner()
    env = {"INSIGHT_HOME": str(tmp_path / "home"), "INSIGHT_WORKSPACE_FILE": str(demo_workspace)}
    answer = runner.invoke(app, ["analyze", "--since", WINDOW["since"], "--until", WINDOW["until"], "--format",
                                 "json", "--json"], env=env)
    assert answer.exit_code == 0, answer.output
    data = json.loads(answer.stdout)
    assert data["tracking"]["status"] == "recorded"
    assert set(data["reports"]["paths"]) == {"json"}
    assert data["report"]["counts"]["total"] == len(data["report"]["findings"])
    assert "ingestion" not in answer.stderr  # no progress bar when not on a terminal

    answer = runner.invoke(app, ["analyze", "--since", WINDOW["since"], "--format", "md,pdf"], env=env)
    assert answer.exit_code == 2 and "md, json and html" in answer.stderr


def test_mlflow_down_still_writes_reports_and_says_tracking_was_skipped(tmp_path: Path, demo_workspace: Path) -> None:
    runner = CliRunner()
    env = {"INSIGHT_HOME": str(tmp_path / "home"), "INSIGHT_WORKSPACE_FILE": str(demo_workspace),
           "MLFLOW_TRACKING_URI": "http://user:hunter2@127.0.0.1:9"}
    answer = runner.invoke(app, ["analyze", "--since", WINDOW["since"], "--until", WINDOW["until"], "--format", "md",
                                 "--no-alerts"], env=env)
    assert answer.exit_code == 0, answer.output
    assert "MLflow tracking skipped" in answer.stdout and "could not be reached" in answer.stdout
    assert "hunter2" not in answer.output
    assert list((tmp_path / "home" / "reports").glob("insight-report-*.md"))


def test_an_unwritable_report_folder_fails_before_any_work(tmp_path: Path, demo_workspace: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    settings = _settings(tmp_path, demo_workspace)
    with pytest.raises(ReportFolderError, match=r"cannot write reports to .*not-a-folder/reports"):
        _analyze(settings, out_dir=blocker / "reports")
    assert not (settings.home / "mlflow.db").exists()  # nothing recorded for work that never ran

    answer = CliRunner().invoke(app, ["analyze", "--out", str(blocker / "reports")],
                                env={"INSIGHT_HOME": str(tmp_path / "home"),
                                     "INSIGHT_WORKSPACE_FILE": str(demo_workspace)})
    assert answer.exit_code == 2 and "cannot write reports" in answer.stderr and "Traceback" not in answer.output


def test_a_failing_agent_is_reported_while_the_other_finishes(tmp_path: Path, demo_workspace: Path) -> None:
    workspace = tmp_path / "no-network.duckdb"
    shutil.copy(demo_workspace, workspace)
    with duckdb.connect(str(workspace)) as conn:
        conn.execute("DROP TABLE access.outbound_network")
    settings = _settings(tmp_path, workspace, tracing={"enabled": False})
    result = _analyze(settings, formats=["md"])
    outcomes = {a.agent: a for a in result.report.agents}
    assert outcomes["network"].status == "failed" and "outbound_network" in outcomes["network"].error
    assert outcomes["security"].status == "ok" and outcomes["security"].findings > 0
    assert result.report.network is None
    assert "network analysis failed" in result.report.narrative.executive_summary
    coverage = {c.table: c for c in result.report.coverage}
    assert coverage["system.access.outbound_network"].rows is None
    assert "Incomplete" in Path(result.reports.paths["md"]).read_text()


def test_a_workspace_briefly_locked_by_a_writer_is_retried(tmp_path: Path, demo_workspace: Path) -> None:
    workspace = tmp_path / "busy.duckdb"
    shutil.copy(demo_workspace, workspace)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import duckdb, sys, time
            conn = duckdb.connect({str(workspace)!r})
            print("locked", flush=True)
            time.sleep(1.0)
            conn.close()
        """)], stdout=subprocess.PIPE, text=True, env={**os.environ})
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = _analyze(_settings(tmp_path, workspace), formats=["json"])
    finally:
        holder.wait(timeout=30)
    assert result.report.counts.total > 0


def test_custom_templates_replace_the_built_in_ones_and_broken_ones_fail_clearly(tmp_path: Path,
                                                                                 demo_workspace: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "report.md.j2").write_text("Custom: {{ report.counts.total }} findings for {{ report.backend }}\n")
    settings = _settings(tmp_path, demo_workspace, reports={"templates_dir": templates})
    result = _analyze(settings, formats=["md"])
    assert Path(result.reports.paths["md"]).read_text() == f"Custom: {result.report.counts.total} findings for duckdb\n"

    (templates / "report.md.j2").write_text("{% for x in report.nothing %}{{ x }}{% endfor %}\n")
    out = tmp_path / "second"
    with pytest.raises(ReportTemplateError, match=r"report.md.j2 \(in .*templates\).*failed"):
        _analyze(settings, formats=["json", "md"], out_dir=out)
    assert list(out.iterdir()) == []  # the JSON rendered fine, but no report is written by halves


def test_analysis_alerts_by_email_once_across_runs_and_queues_when_smtp_is_down(tmp_path: Path,
                                                                               demo_workspace: Path) -> None:
    from test_alerts import SmtpServer, free_port

    from insight_mcp.agents.core.state import StateStore
    from insight_mcp.agents.reporting.alerts import list_alerts

    port = free_port()
    settings = _settings(tmp_path, demo_workspace, alerts={"min_severity": "critical", "smtp": {
        "host": "127.0.0.1", "port": port, "recipients": ["soc@corp.example"]}})
    down = _analyze(settings, formats=["json"])  # nobody listens on the port yet
    incidents = [i for i in down.report.incidents if i.severity == "critical"]  # incidents first, then the rest
    covered = {c.finding_id for i in incidents for c in i.findings}
    critical = [*incidents, *(f for f in down.report.findings if f.severity == "critical" and f.id not in covered)]
    assert critical and down.alerts.status == "queued" and down.alerts.pending == len(critical)
    assert "127.0.0.1" in (down.alerts.detail or "")
    queued = list_alerts(StateStore(settings.state_path), status="queued")
    assert {a.finding_id for a in queued} == {f.id for f in critical}

    server = SmtpServer(port).start()
    try:
        again = _analyze(settings, formats=["json"])  # the same findings: not queued twice, and backoff holds
        assert again.alerts.queued == 0 and again.alerts.sent == 0 and again.alerts.pending == len(critical)
        env = {"INSIGHT_HOME": str(settings.home), "INSIGHT_ALERTS__SMTP__HOST": "127.0.0.1",
               "INSIGHT_ALERTS__SMTP__PORT": str(port), "INSIGHT_ALERTS__SMTP__RECIPIENTS": "soc@corp.example"}
        drained = CliRunner().invoke(app, ["alerts", "retry", "--json"], env=env)
        assert drained.exit_code == 0, drained.output
        assert json.loads(drained.stdout)["sent"] == len(critical)
        third = _analyze(settings, formats=["json"])
        assert third.alerts.sent == 0 and third.alerts.queued == 0 and third.alerts.pending == 0
    finally:
        server.stop()
    subjects = sorted(m["Subject"] for m in server.mailbox.messages)
    assert len(subjects) == len(critical) and all("CRITICAL" in s for s in subjects)


async def test_the_latest_reports_are_mcp_resources(analysed, tmp_path: Path) -> None:
    from mcp.shared.exceptions import MCPError as McpError

    from insight_mcp.agents.ingestion.duckdb_backend import DuckDBSystemTables as Backend
    from insight_mcp.clients.client import connect_in_process
    from insight_mcp.servers.security import build_security_server

    settings, result = analysed
    backend = Backend(settings.workspace_path)
    try:
        async with connect_in_process(build_security_server(settings, backend)) as client:
            for fmt, mime in (("md", "text/markdown"), ("json", "application/json"), ("html", "text/html")):
                read = await client.raw.read_resource(f"insight://reports/latest.{fmt}")
                assert read.contents[0].mime_type == mime
                assert read.contents[0].text == Path(result.reports.paths[fmt]).read_text()
        empty = _settings(tmp_path, settings.workspace_path)
        async with connect_in_process(build_security_server(empty, backend)) as client:
            with pytest.raises(McpError, match="run `insight-mcp analyze` first"):
                await client.raw.read_resource("insight://reports/latest.md")
    finally:
        await backend.close()


def test_with_an_lm_the_narrative_is_lm_written_validated_and_traced(tmp_path: Path, demo_workspace: Path) -> None:
    from lm_server import LMServer

    with LMServer(api_key="sk-test-analyze") as lm:
        settings = _settings(tmp_path, demo_workspace, lm_model="openai/test-model", lm_api_base=lm.url,
                             lm_api_key="sk-test-analyze")
        result = _analyze(settings, formats=["md", "json"])
        assert lm.requests, "the LM was never called"
    narrative = result.report.narrative
    assert narrative.source == "lm" and narrative.errors == [], narrative.errors
    assert str(result.report.counts.total) in narrative.executive_summary
    assert set(narrative.prompts) >= {"insight.security_summary", "insight.network_narrative"}
    assert narrative.executive_summary in Path(result.reports.paths["md"]).read_text()
    client = open_client(settings.tracking_uri)
    experiment = client.get_experiment_by_name("insight-narrative")
    traces = client.search_traces(locations=[experiment.experiment_id], max_results=50)
    prompts = {t.info.tags.get("insight.prompt") for t in traces}
    assert "insight.security_summary" in prompts
    assert all(t.info.tags.get("insight.report_id") == result.report.report_id for t in traces)
    assert "sk-test-analyze" not in Path(result.reports.paths["json"]).read_text()


def test_a_report_and_a_finding_explanation_can_be_rated(tmp_path: Path, demo_workspace: Path) -> None:
    from lm_server import LMServer

    with LMServer() as lm:
        settings = _settings(tmp_path, demo_workspace, lm_model="openai/test-model", lm_api_base=lm.url,
                             lm_api_key="sk-test")
        result = _analyze(settings, formats=["json"])
    explained = next(iter(result.report.narrative.explanations))
    env = {"INSIGHT_HOME": str(settings.home)}
    runner = CliRunner()
    for insight_id, rating in ((result.report.report_id, 4), (explained, 2)):
        answer = runner.invoke(app, ["feedback", insight_id, "--rating", str(rating), "--comment", "checked",
                                     "--json"], env=env)
        assert answer.exit_code == 0, answer.output
        receipt = json.loads(answer.stdout)
        trace = open_client(settings.tracking_uri).get_trace(receipt["trace_id"])
        assert [(a.name, a.value) for a in trace.info.assessments] == [("rating", rating)]
        expected = ("insight.security_summary" if insight_id == result.report.report_id
                    else "insight.finding_explanation")
        assert trace.info.tags["insight.prompt"] == expected and trace.info.tags["insight.agent"] == "narrative"
    missing = runner.invoke(app, ["feedback", "f-" + "0" * 20, "--rating", "3"], env=env)
    assert missing.exit_code == 2 and "nothing with id" in missing.stderr
    bad = runner.invoke(app, ["feedback", "not an id!", "--rating", "3"], env=env)
    assert bad.exit_code == 2 and "report id" in bad.stderr

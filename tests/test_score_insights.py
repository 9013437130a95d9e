"""score_insights: a report's insights scored through mlflow.genai.evaluate, per agent (accuracy against labels,
completeness, response time) and overall, with LM judges only when an LM is there, and clear errors otherwise."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import anyio
import pytest
import typer
from lm_server import AdapterEngine

from insight_mcp.agents.core.mlflow_store import open_client
from insight_mcp.agents.evaluation.detections import LabelsError, labels_from_backend, score_detections
from insight_mcp.agents.evaluation.insights import InsightScores, score_insights
from insight_mcp.agents.evaluation.runs import EvaluationError
from insight_mcp.agents.ingestion.duckdb_backend import DuckDBSystemTables
from insight_mcp.agents.orchestrator import AnalysisRequest, analyze
from insight_mcp.agents.reporting.model import Report
from insight_mcp.agents.settings import Settings, load_settings
from insight_mcp.clients.client import connect_in_process

WINDOW = {"since": "2026-11-14", "until": "2026-11-21"}


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory, demo_workspace: Path) -> tuple[Settings, Report]:
    """One analysis of the demo workspace, its reports in the module's home: what the scores are about."""
    settings = load_settings(home=tmp_path_factory.mktemp("insights") / "home", workspace_file=demo_workspace)

    async def run() -> Any:
        backend = DuckDBSystemTables(demo_workspace)
        try:
            return await analyze(settings, backend, AnalysisRequest(**WINDOW, formats=["json"], alerts=False))
        finally:
            await backend.close()

    return settings, anyio.run(run).report


def scored(settings: Settings, workspace: Path, **kwargs: Any) -> InsightScores:
    async def run() -> InsightScores:
        backend = DuckDBSystemTables(workspace)
        try:
            return await score_insights(settings, backend, **kwargs)
        finally:
            await backend.close()

    return anyio.run(run)


def by_component(scores: InsightScores) -> dict[str, Any]:
    return {c.component: c for c in scores.components}


def test_the_latest_report_is_scored_per_agent_and_overall(analysed: tuple[Settings, Report],
                                                          demo_workspace: Path) -> None:
    import mlflow

    from insight_mcp.agents.network import RULES_DIR
    from insight_mcp.agents.security.rules import configured_rules, rule_files

    settings, report = analysed
    scores = scored(settings, demo_workspace)
    parts = by_component(scores)
    assert list(parts) == ["security", "network", "narrative"] and scores.report_id == report.report_id
    assert scores.judges.startswith("off: no LM is configured") and "INSIGHT_LM" in scores.judges

    # accuracy is the F1 of the agent's own findings against the labels of its categories, inside the window
    labels = anyio.run(lambda: labels_from_backend(DuckDBSystemTables(demo_workspace), settings.query))
    network_rules = {p.stem for p in rule_files(RULES_DIR)}
    security_findings = [f for f in report.findings if f.rule_id not in network_rules]
    since, until = report.since - dt.timedelta(days=1), report.until + dt.timedelta(days=1)
    in_window = [lab for lab in labels if lab.last_seen >= since and lab.first_seen < until]
    covered = {rule.category for rule, path in configured_rules(None, []) if path.parent != RULES_DIR}
    expected = score_detections(security_findings, [lab for lab in in_window if lab.category in covered]).overall
    security = parts["security"]
    assert security.findings == len(security_findings)
    assert (security.precision, security.recall, security.accuracy) == (expected.precision, expected.recall,
                                                                       expected.f1)
    assert security.accuracy is not None and 0.5 < security.accuracy <= 1.0
    assert security.completeness == 1.0 and security.response_time == 1.0
    assert security.seconds == report.agents[0].seconds and security.confidence is not None
    assert parts["network"].findings == len(report.findings) - len(security_findings)
    assert scores.labelled_incidents == len(in_window)

    narrative = parts["narrative"]
    assert narrative.status == "template" and narrative.accuracy == 1.0 and narrative.completeness == 1.0
    assert narrative.response_time is None and narrative.clarity is None
    assert security.score == pytest.approx((security.accuracy + 1.0 + 1.0) / 3, abs=1e-4)
    assert scores.overall == pytest.approx(sum(c.score for c in scores.components) / 3, abs=1e-4)
    assert scores.insight_quality.accuracy == pytest.approx(
        (security.accuracy + parts["network"].accuracy + 1.0) / 3, abs=1e-4)

    client = open_client(settings.tracking_uri)
    run = client.get_run(scores.mlflow_run_id)
    assert scores.tracking == "logged" and run.data.tags["insight.kind"] == "insight_scores"
    assert run.data.metrics["overall"] == pytest.approx(scores.overall)
    assert run.data.metrics["security.accuracy"] == pytest.approx(security.accuracy)
    assert "accuracy/mean" in run.data.metrics, "the GenAI evaluation's own aggregates are on the run"
    kept = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/insight_scores.json")
    assert kept["overall"] == scores.overall


def test_a_tight_time_budget_and_a_failed_agent_lower_the_scores(
    analysed: tuple[Settings, Report], demo_workspace: Path, tmp_path: Path
) -> None:
    settings, report = analysed
    network = next(a for a in report.agents if a.agent == "network")
    broken = report.model_copy(update={"agents": [
        report.agents[0], network.model_copy(update={"status": "failed", "error": "the warehouse timed out"})]})
    path = tmp_path / "broken.json"
    path.write_text(broken.model_dump_json())
    budget = report.agents[0].seconds / 4
    scores = scored(settings, demo_workspace, report=str(path), time_budget_seconds=budget)
    parts = by_component(scores)
    assert parts["security"].response_time == pytest.approx(0.25, abs=0.01)
    assert (parts["network"].accuracy, parts["network"].completeness) == (0.0, 0.0)
    assert any("the warehouse timed out" in note for note in parts["network"].notes)
    assert scores.report_path == str(path) and scores.overall is not None and scores.overall < 0.9


def test_wrong_counts_and_unknown_citations_in_the_narrative_lower_its_accuracy(
    analysed: tuple[Settings, Report], demo_workspace: Path, tmp_path: Path
) -> None:
    settings, report = analysed
    ghost = "f-" + "0" * 20
    narrative = report.narrative.model_copy(update={
        "executive_summary": f"There are {report.counts.total + 7} findings in total.",
        "explanations": {**report.narrative.explanations, ghost: "This made-up finding matters."},
    })
    path = tmp_path / "lying.json"
    path.write_text(report.model_copy(update={"narrative": narrative}).model_dump_json())
    parts = by_component(scored(settings, demo_workspace, report=str(path), judges=False))
    accuracy = parts["narrative"].accuracy
    parts_checked = len(narrative.explanations) + 2
    assert accuracy == pytest.approx(1 - 2 / parts_checked, abs=1e-3)
    note = next(n for n in parts["narrative"].notes if n.startswith("accuracy:"))
    assert f"{report.counts.total + 7} findings in total" in note and f"explains {ghost}" in note


class JudgeEngine(AdapterEngine):
    """A judge that finds every text clear (4) and not very useful (2), and keeps what it was shown."""

    def complete(self, request: Any) -> Any:
        from dspy.lm15 import Message, Response, TextPart, Usage

        self.calls.append([{"role": m.role, "content": m.text or ""} for m in request.messages])
        content = "[[ ## clarity ## ]]\n4\n\n[[ ## usefulness ## ]]\n2\n\n[[ ## rationale ## ]]\nClear but vague." \
                  "\n\n[[ ## completed ## ]]"
        return Response(id=None, model="judge", message=Message.assistant([TextPart(content)]),
                        finish_reason="stop", usage=Usage(input_tokens=0, output_tokens=0, total_tokens=0))


def test_an_lm_judges_clarity_and_usefulness(analysed: tuple[Settings, Report], demo_workspace: Path) -> None:
    import dspy

    settings, report = analysed
    engine = JudgeEngine()
    lm = dspy.LM("local/judge", engine=engine, cache=False, num_retries=0)
    scores = scored(settings, demo_workspace, lm=lm)
    narrative = by_component(scores)["narrative"]
    assert scores.judges == "lm" and (narrative.clarity, narrative.usefulness) == (0.75, 0.25)
    assert scores.insight_quality.clarity == 0.75 and scores.insight_quality.usefulness == 0.25
    assert narrative.score == pytest.approx((1.0 + 1.0 + 0.75 + 0.25) / 4, abs=1e-4)
    assert len(engine.calls) == 1, "only the narrative is judged"
    shown = engine.calls[0][-1]["content"]
    assert report.narrative.executive_summary[:60] in shown and "<untrusted_audit_data-" in shown


def test_a_failing_judge_leaves_clarity_unset_and_says_why(analysed: tuple[Settings, Report],
                                                           demo_workspace: Path) -> None:
    from lm_server import engine_lm

    settings, _ = analysed
    lm, engine = engine_lm("error")
    scores = scored(settings, demo_workspace, lm=lm)
    narrative = by_component(scores)["narrative"]
    assert engine.calls and scores.judges.startswith("failed: ") and "the engine failed" in scores.judges
    assert narrative.clarity is None and narrative.accuracy == 1.0 and scores.overall is not None


def test_without_labels_accuracy_is_not_measured(analysed: tuple[Settings, Report],
                                                 fixture_workspace: Path) -> None:
    settings, _ = analysed
    scores = scored(settings, fixture_workspace)
    security = by_component(scores)["security"]
    assert security.accuracy is None and scores.labelled_incidents is None
    assert any("only a workspace made by `insight-mcp workspace generate`" in n for n in security.notes)
    assert security.completeness == 1.0 and scores.overall is not None


@pytest.mark.parametrize(("report", "message"), [
    ("latest", "no report yet in .*: run `insight-mcp analyze` first"),
    ("0123abcd", "no JSON report with id '0123abcd'"),
    ("notes.txt", "is not `latest`, a report id or the path of a JSON report"),
    ("missing.json", "report file missing.json does not exist"),
])
def test_reports_that_cannot_be_read_say_what_to_do(settings: Settings, fixture_workspace: Path, report: str,
                                                    message: str) -> None:
    with pytest.raises(EvaluationError, match=message):
        scored(settings, fixture_workspace, report=report)


def test_a_file_that_is_not_a_report_and_bad_labels_are_named(
    analysed: tuple[Settings, Report], demo_workspace: Path, tmp_path: Path
) -> None:
    settings, _ = analysed
    other = tmp_path / "other.json"
    other.write_text('{"report_id": "x"}')
    with pytest.raises(EvaluationError, match=rf"{other} is not an insight report \(generated_at: Field required\)"):
        scored(settings, demo_workspace, report=str(other))
    labels = tmp_path / "labels.json"
    labels.write_text('{"labels": []}')
    with pytest.raises(LabelsError, match='must hold an object with an "incidents" list'):
        scored(settings, demo_workspace, labels=str(labels))


def test_scores_answer_even_when_mlflow_is_down(analysed: tuple[Settings, Report], demo_workspace: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from insight_mcp.clients.demo import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    settings, _ = analysed
    down = settings.model_copy(update={"mlflow_tracking_uri": f"http://ops:s3cret@127.0.0.1:{free_port()}"})
    scores = scored(down, demo_workspace)
    assert scores.mlflow_run_id is None and scores.tracking.startswith("skipped: ") and "s3cret" not in scores.tracking
    assert by_component(scores)["security"].accuracy is not None and scores.overall is not None


async def test_the_tool_starts_a_job_that_answers_or_says_why_not(analysed: tuple[Settings, Report],
                                                                  demo_workspace: Path) -> None:
    from insight_mcp.servers.evaluation import build_evaluation_server

    settings, report = analysed
    backend = DuckDBSystemTables(demo_workspace)
    server = build_evaluation_server(settings, backend)
    try:
        async with connect_in_process(server) as mcp:
            ok = (await mcp.call("score_insights", {"report": report.report_id[:12]})).structured["job_id"]
            bad = (await mcp.call("score_insights", {"report": "ffffffff"})).structured["job_id"]
            done = (await mcp.call("wait_for_evaluation_job", {"job_id": ok, "timeout_seconds": 240})).structured
            failed = (await mcp.call("wait_for_evaluation_job", {"job_id": bad, "timeout_seconds": 60})).structured
    finally:
        for close in server.closers:
            close()
        await backend.close()
    assert done["status"] == "succeeded", done
    assert done["result"]["report_id"] == report.report_id and done["result"]["overall"] is not None
    assert [c["component"] for c in done["result"]["components"]] == ["security", "network", "narrative"]
    assert failed["status"] == "failed" and "no JSON report with id 'ffffffff'" in failed["error"]


def test_the_command_line_prints_the_scores(analysed: tuple[Settings, Report]) -> None:
    import json

    from typer.testing import CliRunner

    from insight_mcp.clients.evaluate_cli import evaluate_app

    settings, report = analysed
    root = typer.Typer()

    @root.callback()
    def main(ctx: typer.Context) -> None:
        ctx.obj = settings

    root.add_typer(evaluate_app, name="evaluate")
    done = CliRunner().invoke(root, ["evaluate", "insights", "--no-judges", "--json"])
    assert done.exit_code == 0, done.output
    answer = json.loads(done.stdout)
    assert answer["report_id"] == report.report_id and answer["judges"] == "off: not asked for"
    table = CliRunner().invoke(root, ["evaluate", "insights", "--report", "ffffffff"])
    assert table.exit_code == 2 and "no JSON report with id 'ffffffff'" in table.output

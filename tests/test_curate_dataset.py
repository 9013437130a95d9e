"""curate_dataset: traces filtered by agent, window, outcome and rating become a stratified, seeded MLflow evaluation
dataset whose expectations are what people said, whose tags keep the filter, and which evaluate_agent can run."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path
from typing import Any

import anyio
import pytest
import typer
from lm_server import engine_lm

from insight_mcp.agents.core.mlflow_store import experiment_id, open_client
from insight_mcp.agents.evaluation.curation import (
    CuratedDataset,
    TraceFilter,
    _Candidate,
    allocate,
    curate_dataset,
    fluent_mlflow,
    stratified_sample,
)
from insight_mcp.agents.evaluation.runs import EvaluationError
from insight_mcp.agents.narrative import facts
from insight_mcp.agents.settings import Settings, load_settings
from insight_mcp.clients.client import ToolCallError, connect_in_process

NOW = dt.datetime.now(dt.UTC)
LONG_AGO = dt.datetime(2026, 1, 5, 12, tzinfo=dt.UTC)


def _span(mlflow: Any, experiment: str, name: str, tags: dict[str, str], inputs: dict[str, Any], outputs: Any,
          when: dt.datetime, error: bool = False) -> str:
    start = int(when.timestamp() * 1e9)
    span = mlflow.start_span_no_context(name, span_type="TOOL", inputs=inputs, tags=tags, experiment_id=experiment,
                                        start_time_ns=start)
    span.set_outputs(outputs)
    span.end(status="ERROR" if error else "OK", end_time_ns=start + 5_000_000)
    return str(span.trace_id)


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, dict[str, Any]]:
    """110 traces in a real store: security calls (some failed, some rated), old network calls, narrative calls."""
    from mlflow.entities import AssessmentSource, Expectation, Feedback
    from mlflow.tracing.client import TracingClient

    settings = load_settings(home=tmp_path_factory.mktemp("curation") / "home")
    client = open_client(settings.tracking_uri)
    tools = experiment_id(client, settings.tracing.experiment, settings.mlflow_artifacts / "tools")
    narrative = experiment_id(client, "insight-narrative", settings.mlflow_artifacts / "narrative")
    ids: dict[str, Any] = {"security_ok": [], "security_error": [], "network": [], "narrative": []}
    rng = random.Random(1)
    with fluent_mlflow(settings.tracking_uri) as mlflow:
        for i in range(60):
            failed = i >= 50
            tags = {"insight.server": "security", "insight.agent": "security", "insight.tool": "top_risks",
                    "insight.status": "error" if failed else "ok", "insight.call_id": f"c{i:04d}"}
            trace_id = _span(mlflow, tools, "top_risks", tags, {"limit": i, "min_severity": "medium"},
                             None if failed else {"principals": [f"user{i}@corp.example"]},
                             NOW - dt.timedelta(minutes=i), error=failed)
            ids["security_error" if failed else "security_ok"].append(trace_id)
        for i in range(30):
            tags = {"insight.server": "network", "insight.agent": "network", "insight.tool": "external_ips",
                    "insight.status": "ok", "insight.call_id": f"n{i:04d}"}
            ids["network"].append(_span(mlflow, tools, "external_ips", tags, {"top": i}, {"ips": []},
                                        LONG_AGO + dt.timedelta(minutes=i)))
        for _ in range(20):
            total = rng.randint(1, 9)
            data = facts.untrusted({"counts": {"total": total, "by_severity": {"high": total}, "by_category": {}},
                                    "riskiest_principals": [], "findings": [], "failed_analyses": []})
            tags = {"insight.agent": "narrative", "insight.prompt": "insight.security_summary",
                    "insight.prompt_version": "1"}
            ids["narrative"].append(_span(mlflow, narrative, "narrative.security_summary", tags, {"data": data},
                                          {"text": f"{total} findings.", "accepted": True}, NOW))
        mlflow.flush_trace_async_logging()
    tracing = TracingClient(tracking_uri=settings.tracking_uri)

    def rate(trace_id: str, value: int, comment: str | None = None) -> None:
        tracing.log_assessment(trace_id, Feedback(name="rating", value=value, rationale=comment,
                                                  source=AssessmentSource(source_type="HUMAN", source_id="dana")))

    for trace_id in ids["security_ok"][:5]:
        rate(trace_id, 5, "spot on")
    for trace_id in ids["security_ok"][5:10]:
        rate(trace_id, 2, "wrong principal first")
    rate(ids["security_error"][0], 1, "it crashed")
    rate(ids["security_ok"][10], 5)
    rate(ids["security_ok"][10], 2, "on second look, wrong")  # the latest rating is the one that counts
    tracing.log_assessment(ids["security_ok"][0], Expectation(
        name="expected_response", value="user0 first", source=AssessmentSource(source_type="HUMAN",
                                                                                source_id="dana")))
    return settings, ids


def curate(settings: Settings, **kwargs: Any) -> CuratedDataset:
    options = {k: kwargs.pop(k) for k in ("name", "size", "seed") if k in kwargs}
    return curate_dataset(settings, trace_filter=TraceFilter(**kwargs), **options)


def records(settings: Settings, dataset_id: str) -> list[Any]:
    with fluent_mlflow(settings.tracking_uri):
        return list(open_client(settings.tracking_uri).get_dataset(dataset_id).records)


def test_agent_and_outcome_filters_and_the_tags_that_keep_them(traced: tuple[Settings, dict[str, Any]]) -> None:
    settings, ids = traced
    made = curate(settings, name="security-failures", agent="security", status="error")
    assert (made.matched, made.sampled, made.records) == (10, 10, 10) and made.scanned_all
    kept = records(settings, made.dataset_id)
    assert {r.source.source_data["trace_id"] for r in kept} == set(ids["security_error"])
    assert all(r.tags["insight.status"] == "error" and r.inputs["min_severity"] == "medium" for r in kept)
    rated = next(r for r in kept if r.source.source_data["trace_id"] == ids["security_error"][0])
    assert rated.expectations == {"rating": 1, "rating_comment": "it crashed"}
    tags = open_client(settings.tracking_uri).get_dataset(made.dataset_id).tags
    assert tags["insight.filter.agent"] == "security" and tags["insight.filter.status"] == "error"
    assert json.loads(tags["insight.filter"])["status"] == "error" and "trace.status = 'ERROR'" in \
        tags["insight.filter_string"]
    assert tags["insight.seed"] == "7" and tags["insight.matched"] == "10"


def test_ratings_and_expectations_become_expectations_and_the_latest_rating_counts(
    traced: tuple[Settings, dict[str, Any]]
) -> None:
    settings, ids = traced
    made = curate(settings, name="well-rated", min_rating=4)
    kept = {r.source.source_data["trace_id"]: r for r in records(settings, made.dataset_id)}
    assert set(kept) == set(ids["security_ok"][:5]), "re-rated 2 after a 5: the latest rating excludes it"
    first = kept[ids["security_ok"][0]]
    assert first.expectations == {"rating": 5, "rating_comment": "spot on", "expected_response": "user0 first"}
    assert first.outputs == {"principals": ["user0@corp.example"]}
    low = curate(settings, name="badly-rated", max_rating=2, agent="security")
    assert low.matched == 7 and low.with_expectations == 7


def test_the_time_window_uses_trace_start_times(traced: tuple[Settings, dict[str, Any]]) -> None:
    settings, ids = traced
    made = curate(settings, name="january", since="2026-01-05", until="2026-01-06")
    assert made.matched == 30 and {s.agent for s in made.strata} == {"network"}
    assert {r.source.source_data["trace_id"] for r in records(settings, made.dataset_id)} == set(ids["network"])
    with pytest.raises(EvaluationError, match=r"no traces match \(since=2030-01-01\) in insight-mcp, "
                                              r"insight-narrative: widen the window"):
        curate(settings, since="2030-01-01")


def test_the_sample_keeps_every_stratum_and_the_seed_fixes_it(traced: tuple[Settings, dict[str, Any]]) -> None:
    settings, _ = traced
    made = curate(settings, name="sample-a", size=20, seed=11)
    assert made.matched == 110 and made.sampled == 20 == sum(s.taken for s in made.strata)
    assert all(s.taken >= 1 for s in made.strata), "rare strata (a failure rated 1) must be represented"
    rare = next(s for s in made.strata if s.status == "error" and s.rating == "low")
    assert (rare.available, rare.taken) == (1, 1)
    biggest = max(made.strata, key=lambda s: s.available)
    assert biggest.taken == max(s.taken for s in made.strata)

    def sampled(name: str, seed: int) -> set[str]:
        return {r.source.source_data["trace_id"]
                for r in records(settings, curate(settings, name=name, size=20, seed=seed).dataset_id)}

    first = {r.source.source_data["trace_id"] for r in records(settings, made.dataset_id)}
    assert sampled("sample-b", 11) == first and sampled("sample-c", 12) != first


def test_allocation_is_proportional_with_one_each_when_it_fits() -> None:
    assert allocate({"a": 90, "b": 9, "c": 1}, 10) == {"a": 8, "b": 1, "c": 1}
    assert allocate({"a": 50, "b": 30, "c": 20}, 10) == {"a": 5, "b": 3, "c": 2}
    assert allocate({"a": 5, "b": 5}, 20) == {"a": 5, "b": 5}
    taken = allocate({k: 3 for k in "abcdef"}, 4)
    assert sum(taken.values()) == 4 and all(0 <= v <= 1 for v in taken.values())
    candidates = [_Candidate(f"tr-{i:03d}", "a", "t", "ok", None, None) for i in range(50)]
    picked, strata = stratified_sample(candidates, 5, seed=3)
    assert len(picked) == 5 and strata[0].taken == 5
    assert [c.trace_id for c in picked] == [c.trace_id for c in stratified_sample(candidates[::-1], 5, seed=3)[0]]


def test_a_curated_narrative_dataset_feeds_evaluate_agent(traced: tuple[Settings, dict[str, Any]]) -> None:
    from insight_mcp.agents.evaluation.agent_eval import evaluate_agent

    settings, _ = traced
    made = curate(settings, name="summaries-from-traces", agent="narrative", prompt="insight.security_summary")
    assert made.records == 20 and made.experiments == ["insight-mcp", "insight-narrative"]
    lm, engine = engine_lm()
    result = anyio.run(lambda: evaluate_agent(settings, prompt="insight.security_summary@production",
                                              dataset="summaries-from-traces", lm=lm, workers=4))
    assert result.dataset_id == made.dataset_id and result.predicted == 20 == len(engine.calls)
    assert result.scorers["completeness"].mean == 1.0, result.scorers
    # the trace's data is already fenced: shown as it is (a warning naming the marker, then the marker), not again
    assert all(call[-1]["content"].count("<untrusted_audit_data-") == 2 for call in engine.calls)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"agent": "x' OR 1=1"}, "agent \"x' OR 1=1\" is not a name"),
    ({"since": "yesterday"}, "since 'yesterday' is not an ISO date"),
    ({"since": "2026-02-01", "until": "2026-01-01"}, "since must be before until"),
    ({"min_rating": 4, "max_rating": 2}, "min_rating must not be above max_rating"),
    ({"agent": "nobody"}, r"no traces match \(agent=nobody\)"),
    ({"name": "bad name!"}, "dataset name 'bad name!': use letters"),
    ({"size": 0}, "size must be from 1 to"),
])
def test_bad_requests_say_what_to_change(traced: tuple[Settings, dict[str, Any]], kwargs: dict[str, Any],
                                         message: str) -> None:
    settings, _ = traced
    with pytest.raises(EvaluationError, match=message):
        curate(settings, **kwargs)


def test_a_taken_name_and_an_empty_store_are_explained(traced: tuple[Settings, dict[str, Any]],
                                                       tmp_path: Path) -> None:
    settings, _ = traced
    curate(settings, name="once", agent="network")
    with pytest.raises(EvaluationError, match="a dataset named 'once' exists already"):
        curate(settings, name="once", agent="network")
    with pytest.raises(EvaluationError, match="no traces yet: neither 'insight-mcp' nor 'insight-narrative'"):
        curate(load_settings(home=tmp_path / "empty"))


def test_mlflow_down_is_said_plainly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from insight_mcp.clients.demo import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    settings = load_settings(home=tmp_path, mlflow_tracking_uri=f"http://ops:s3cret@127.0.0.1:{free_port()}")
    with pytest.raises(EvaluationError, match="could not be reached") as caught:
        curate(settings)
    assert "s3cret" not in str(caught.value)


async def test_the_tool_curates_in_a_job_and_refuses_bad_filters_at_once(
    traced: tuple[Settings, dict[str, Any]], fixture_workspace: Path
) -> None:
    from insight_mcp.agents.ingestion.duckdb_backend import DuckDBSystemTables
    from insight_mcp.servers.evaluation import build_evaluation_server

    settings, _ = traced
    backend = DuckDBSystemTables(fixture_workspace)
    server = build_evaluation_server(settings, backend)
    try:
        async with connect_in_process(server) as mcp:
            job_id = (await mcp.call("curate_dataset", {"agent": "network", "size": 10, "name": "from-the-tool"})
                      ).structured["job_id"]
            record = (await mcp.call("wait_for_evaluation_job", {"job_id": job_id, "timeout_seconds": 120})
                      ).structured
            with pytest.raises(ToolCallError, match="until 'soon' is not an ISO date") as refused:
                await mcp.call("curate_dataset", {"until": "soon"})
    finally:
        for close in server.closers:
            close()
        await backend.close()
    assert record["status"] == "succeeded", record
    assert record["result"]["name"] == "from-the-tool" and record["result"]["sampled"] == 10
    assert record["params"] == {"name": "from-the-tool", "agent": "network", "size": 10, "seed": 7}
    assert "Traceback" not in refused.value.message


def test_the_command_line_curates(traced: tuple[Settings, dict[str, Any]]) -> None:
    from typer.testing import CliRunner

    from insight_mcp.clients.evaluate_cli import evaluate_app

    settings, _ = traced
    root = typer.Typer()

    @root.callback()
    def main(ctx: typer.Context) -> None:
        ctx.obj = settings

    root.add_typer(evaluate_app, name="evaluate")
    done = CliRunner().invoke(root, ["evaluate", "curate", "--agent", "security", "--status", "error", "--name",
                                     "cli-made", "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["records"] == 10
    again = CliRunner().invoke(root, ["evaluate", "curate", "--name", "cli-made"])
    assert again.exit_code == 2 and "exists already" in again.output and "Traceback" not in again.output

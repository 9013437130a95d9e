"""evaluate_agent: a registered prompt version over a dataset, on parallel workers, scored; a better version scores
higher, and bad prompts, datasets and LMs get messages a person can act on."""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import typer
from lm_server import AdapterEngine, LMServer, engine_lm
from pydantic import SecretStr

from insight_mcp.agents.core.prompts import FINDING_EXPLANATION, NETWORK_NARRATIVE, SECURITY_SUMMARY
from insight_mcp.agents.evaluation.agent_eval import (
    ABORT_AFTER,
    KINDS,
    evaluate_agent,
    parse_prompt_ref,
    prompt_scorers,
    read_jsonl,
    resolve_prompt,
)
from insight_mcp.agents.evaluation.runs import EvaluationError
from insight_mcp.agents.settings import Settings, load_settings
from insight_mcp.clients.client import connect_in_process

SEVERITIES = ("critical", "high", "medium", "low")
CATEGORIES = ("brute_force", "token_abuse", "data_exfiltration", "privilege_escalation", "posture")
WORSE = "Summarise the security findings for a busy reader in two sentences."  # no counts, no citations


def summary_facts(rng: random.Random) -> dict[str, Any]:
    """Facts shaped like agents/narrative/facts.summary_facts: what an executive summary is written from."""
    findings = []
    for _ in range(rng.randint(1, 9)):
        findings.append({
            "id": "f-" + hashlib.sha256(str(rng.random()).encode()).hexdigest()[:20],
            "severity": rng.choice(SEVERITIES), "category": rng.choice(CATEGORIES), "title": "Something happened",
            "principal": f"user{rng.randint(1, 5)}@corp.example", "workspace_id": "1",
            "event_count": rng.randint(1, 40), "first_seen": "2026-11-14T01:00:00",
            "last_seen": "2026-11-14T02:00:00", "rule_id": "some_rule",
        })
    findings.sort(key=lambda f: SEVERITIES.index(f["severity"]))
    top = findings[0]["principal"]
    return {
        "window": {"since": "2026-11-14T00:00:00", "until": "2026-11-21T00:00:00"},
        "counts": {"total": len(findings), "by_category": {},
                   "by_severity": {s: sum(f["severity"] == s for f in findings) for s in (*SEVERITIES, "info")}},
        "failed_analyses": [],
        "riskiest_principals": [{"principal": top, "risk_score": 40.0, "max_severity": findings[0]["severity"],
                                 "findings": sum(f["principal"] == top for f in findings), "categories": []}],
        "findings": findings,
        "findings_not_listed": 0,
    }


def write_cases(path: Path, n: int, seed: int = 3) -> Path:
    rng = random.Random(seed)
    with path.open("w") as handle:
        for _ in range(n):
            facts = summary_facts(rng)
            handle.write(json.dumps({"inputs": {"facts": facts},
                                     "expectations": {"expected_facts": [f"{facts['counts']['total']} finding"]}})
                         + "\n")
    return path


@pytest.fixture
def cases(tmp_path: Path) -> Path:
    return write_cases(tmp_path / "cases.jsonl", 120)


def register_worse_version(settings: Settings) -> str:
    import mlflow

    from insight_mcp.agents.core.prompts import load_prompt

    load_prompt(settings, SECURITY_SUMMARY)  # the default becomes version 1, @production
    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri)
    return str(client.register_prompt(SECURITY_SUMMARY, WORSE, commit_message="a vaguer summary").version)


def evaluate(settings: Settings, **kwargs: Any) -> Any:
    return anyio.run(lambda: evaluate_agent(settings, **kwargs))


def test_a_better_prompt_version_scores_higher(settings: Settings, cases: Path) -> None:
    import mlflow

    worse = register_worse_version(settings)
    lm, engine = engine_lm()
    good = evaluate(settings, prompt=f"{SECURITY_SUMMARY}@production", dataset=str(cases), lm=lm, workers=4)
    bad = evaluate(settings, prompt=SECURITY_SUMMARY, version=worse, dataset=str(cases), lm=lm, workers=4)

    assert (good.version, good.alias, bad.version, bad.alias) == ("1", "production", worse, None)
    assert good.cases == bad.cases == good.predicted == bad.predicted == 120 and len(engine.calls) == 240
    assert good.scorers["completeness"].mean == 1.0 and good.scorers["completeness"].count == 120
    assert bad.scorers["completeness"].mean is not None and bad.scorers["completeness"].mean < 0.5
    assert good.scorers["expected_facts"].mean > bad.scorers["expected_facts"].mean
    assert good.scorers["validity"].mean == 1.0, "the good prompt's summaries pass the narrative's own checks"
    assert good.scorers["expected_response"].skipped == 120 and good.scorers["expected_response"].mean is None
    assert good.score is not None and bad.score is not None and good.score > bad.score
    systems = [call[0]["content"] for call in engine.calls]
    assert sum("counts exactly" in s for s in systems) == 120 and sum(WORSE in s for s in systems) == 120

    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri)
    run = client.get_run(good.mlflow_run_id)
    assert good.tracking == "logged" and run.data.tags["insight.kind"] == "agent_evaluation"
    assert run.data.params["prompt_version"] == "1" and run.data.metrics["completeness.mean"] == 1.0
    assert run.data.metrics["score"] == good.score
    kept = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/cases.json")["cases"]
    assert len(kept) == 120 and all(c["scores"]["validity"] == 1.0 for c in kept)


class CountingEngine(AdapterEngine):
    """Answers like the test LM after a short wait, and remembers the most calls it ever had in flight."""

    def __init__(self, delay: float = 0.02) -> None:
        super().__init__()
        self.delay = delay
        self.in_flight = 0
        self.most = 0
        self.guard = threading.Lock()

    def complete(self, request: Any) -> Any:
        with self.guard:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        try:
            time.sleep(self.delay)
            return super().complete(request)
        finally:
            with self.guard:
                self.in_flight -= 1


def counting_lm(delay: float = 0.02) -> tuple[Any, CountingEngine]:
    import dspy

    engine = CountingEngine(delay)
    return dspy.LM("local/counting", engine=engine, cache=False, num_retries=0), engine


@pytest.mark.parametrize("workers", [1, 6])
def test_workers_bound_the_calls_in_flight(settings: Settings, tmp_path: Path, workers: int) -> None:
    lm, engine = counting_lm()
    result = evaluate(settings, prompt=SECURITY_SUMMARY, dataset=str(write_cases(tmp_path / "c.jsonl", 60)), lm=lm,
                      workers=workers)
    assert result.predicted == 60 and len(engine.calls) == 60 and result.workers == workers
    assert engine.most == workers, f"{workers} workers kept {engine.most} calls in flight"


def test_explanations_and_network_narratives_are_scored_too(settings: Settings, tmp_path: Path) -> None:
    finding = {"id": "f-" + "a" * 20, "rule_id": "admin_group_change", "category": "privilege_escalation",
               "severity": "critical", "title": "Admins group changed", "principal": "eve@corp.example",
               "workspace_id": "1", "event_count": 3, "first_seen": "2026-11-18T20:55:28",
               "last_seen": "2026-11-18T21:07:33", "mitre": ["T1098"], "threat_model": "platform_compromise",
               "recommendation": "Check the change.", "evidence": {"groups": ["admins"]}}
    network = {"external_ips": 111, "anonymizer_ip_count": 2, "anonymizer_ips": ["1.2.3.4", "5.6.7.8"],
               "ip_access_denials": 71, "denied_ip_count": 3, "denied_ips": ["9.9.9.1", "9.9.9.2", "9.9.9.3"],
               "egress_denials": 106, "risky_destination_count": 1, "risky_destinations": ["pastebin.com"]}
    lm, _ = engine_lm()
    for prompt, data in ((FINDING_EXPLANATION, finding), (NETWORK_NARRATIVE, network)):
        path = tmp_path / f"{prompt}.jsonl"
        path.write_text("\n".join(json.dumps({"inputs": {KINDS[prompt].input_field: data}}) for _ in range(5)))
        result = evaluate(settings, prompt=f"{prompt}@production", dataset=str(path), lm=lm, workers=2)
        assert result.scorers["completeness"].mean == 1.0, (prompt, result.scorers)
        assert result.scorers["validity"].mean == 1.0, (prompt, result.scorers)


def test_scorers_judge_what_they_are_given() -> None:
    facts = summary_facts(random.Random(1))
    total = facts["counts"]["total"]
    scorers = {s.name: s for s in prompt_scorers(KINDS[SECURITY_SUMMARY], ["validity", "completeness",
                                                                                 "expected_response"])}
    inputs = {"facts": facts}
    lying = {"text": f"{total + 5} findings were raised in the window.", "cited_finding_ids": ["f-" + "0" * 20]}
    verdict = scorers["validity"](inputs=inputs, outputs=lying, expectations={})
    assert verdict.value == 0.0 and "not a finding in the report" in verdict.rationale
    vague = scorers["completeness"](inputs=inputs, outputs={"text": "Things happened."}, expectations={})
    assert vague.value == 0.0 and f"the total ({total} findings)" in vague.rationale
    same = scorers["expected_response"](inputs=inputs, outputs={"text": "Two critical findings"},
                                        expectations={"expected_response": "two critical findings"})
    assert same.value == 1.0
    assert scorers["expected_response"](inputs=inputs, outputs={"text": "x"}, expectations={}) is None


def test_without_an_lm_the_error_names_insight_lm(settings: Settings, cases: Path) -> None:
    with pytest.raises(EvaluationError, match="INSIGHT_LM"):
        evaluate(settings, prompt=SECURITY_SUMMARY, dataset=str(cases))


@pytest.mark.parametrize(("prompt", "version", "message"), [
    ("insight.nope@production", None, r"unknown prompt 'insight.nope': the suite's own prompts are "
                                      r"insight.security_summary"),
    ("acme bot@production", None, r"'acme bot' is not a prompt name"),
    (f"{SECURITY_SUMMARY}@2", "3", "names version '2' but version is '3': give it once"),
    (f"{SECURITY_SUMMARY}@no good", None, "is neither a version number nor an alias"),
])
def test_prompt_references_are_checked(prompt: str, version: str | None, message: str) -> None:
    with pytest.raises(EvaluationError, match=message):
        parse_prompt_ref(prompt, version)


def test_unknown_versions_and_aliases_name_what_exists(settings: Settings) -> None:
    register_worse_version(settings)
    with pytest.raises(EvaluationError, match=r"has no version 9: its versions are 1, 2"):
        resolve_prompt(settings, f"{SECURITY_SUMMARY}/9")
    with pytest.raises(EvaluationError, match=r"has no alias 'candidate': its versions are 1, 2"):
        resolve_prompt(settings, f"prompts:/{SECURITY_SUMMARY}@candidate")
    with pytest.raises(EvaluationError, match=rf"{NETWORK_NARRATIVE} is not registered yet"):
        resolve_prompt(settings, NETWORK_NARRATIVE, "1")
    assert resolve_prompt(settings, SECURITY_SUMMARY, "2").template == WORSE


@pytest.mark.parametrize(("content", "message"), [
    ('{"inputs": {"facts": {}}}\n\n{"inputs": {"facts": {}}}\n{not json\n', r"line 4 is not valid JSON \(column 2"),
    ('{"inputs": {"facts": {}}}\n{"expectations": {}}\n', r'line 2 must be an object with a non-empty "inputs"'),
    ('{"inputs": {"facts": {}}, "expectations": [1]}\n', r'line 1: "expectations" must be an object'),
])
def test_malformed_jsonl_names_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(EvaluationError, match=message):
        read_jsonl(path)


@pytest.mark.parametrize(("dataset", "message"), [
    ("missing.jsonl", "dataset file missing.jsonl does not exist"),
    ("no-such-dataset", "no dataset named 'no-such-dataset': curate one with curate_dataset"),
    ("d-0123456789abcdef0123456789abcdef", "no dataset with id 'd-0123456789abcdef0123456789abcdef'"),
    ("bad'name", "is not a dataset name"),
])
def test_unknown_datasets_say_what_to_give(settings: Settings, dataset: str, message: str) -> None:
    lm, engine = engine_lm()
    with pytest.raises(EvaluationError, match=message):
        evaluate(settings, prompt=SECURITY_SUMMARY, dataset=dataset, lm=lm)
    assert not engine.calls


def test_a_failing_lm_stops_the_run_early(settings: Settings, cases: Path) -> None:
    lm, engine = engine_lm("error")
    with pytest.raises(EvaluationError, match=rf"the first {ABORT_AFTER} cases all failed, the last with: the LM "
                                              r"call failed \(.*the engine failed\)"):
        evaluate(settings, prompt=SECURITY_SUMMARY, dataset=str(cases), lm=lm, workers=2)
    assert ABORT_AFTER <= len(engine.calls) < 40, "it kept calling a broken LM"


def test_an_unreadable_registry_is_said_plainly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from insight_mcp.clients.demo import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    settings = load_settings(home=tmp_path, mlflow_tracking_uri=f"http://ops:s3cret@127.0.0.1:{free_port()}")
    with pytest.raises(EvaluationError, match="could not be reached") as caught:
        resolve_prompt(settings, SECURITY_SUMMARY, "2")
    assert "s3cret" not in str(caught.value) and "check MLFLOW_TRACKING_URI" in str(caught.value)


async def test_the_tool_runs_an_mlflow_dataset_through_the_lm_server(
    tmp_path: Path, fixture_workspace: Path
) -> None:
    """The real path: MCP tool -> job -> dspy.LM -> LiteLLM -> HTTP, over a dataset stored in MLflow."""
    import mlflow

    from insight_mcp.agents.evaluation.curation import fluent_mlflow
    from insight_mcp.agents.ingestion.duckdb_backend import DuckDBSystemTables
    from insight_mcp.servers.evaluation import build_evaluation_server

    rng = random.Random(5)
    records = [{"inputs": {"facts": summary_facts(rng)}} for _ in range(40)]
    with LMServer() as lm:
        settings = load_settings(home=tmp_path / "home", workspace_file=fixture_workspace,
                                 lm_model="openai/test-model", lm_api_base=lm.url, lm_api_key="sk-test-123456")
        client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri)
        with fluent_mlflow(settings.tracking_uri):
            client.create_dataset(name="summaries").merge_records(records)
        backend = DuckDBSystemTables(fixture_workspace)
        server = build_evaluation_server(settings, backend)
        try:
            async with connect_in_process(server) as mcp:
                started = await mcp.call("evaluate_agent", {"prompt": f"{SECURITY_SUMMARY}@production",
                                                            "dataset": "summaries", "workers": 4})
                job_id = started.structured["job_id"]
                seen: list[float] = []

                async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                    seen.append(progress)

                waited = await mcp.raw.call_tool("wait_for_evaluation_job", {"job_id": job_id, "timeout_seconds": 240},
                                                 progress_callback=on_progress)
                refused = await mcp.raw.call_tool("evaluate_agent", {"prompt": "insight.nope", "dataset": "x"})
        finally:
            for close in server.closers:
                close()
            await backend.close()
        record = waited.structured_content
        assert record["status"] == "succeeded", record
        result = record["result"]
        assert result["dataset"] == "summaries" and result["dataset_id"].startswith("d-") and result["cases"] == 40
        assert result["predicted"] == 40 and result["scorers"]["completeness"]["mean"] == 1.0
        assert len([r for r in lm.requests if r.path.endswith("/chat/completions")]) == 40
        assert seen and seen[-1] == 1.0
        assert refused.is_error and "unknown prompt 'insight.nope'" in refused.content[0].text
        assert "Traceback" not in refused.content[0].text


async def test_the_tool_fails_the_job_with_insight_lm_when_no_lm_is_set(
    settings: Settings, fixture_workspace: Path, cases: Path
) -> None:
    from insight_mcp.agents.ingestion.duckdb_backend import DuckDBSystemTables
    from insight_mcp.servers.evaluation import build_evaluation_server

    backend = DuckDBSystemTables(fixture_workspace)
    server = build_evaluation_server(settings, backend)
    try:
        async with connect_in_process(server) as mcp:
            job_id = (await mcp.call("evaluate_agent", {"prompt": SECURITY_SUMMARY, "dataset": str(cases)})
                      ).structured["job_id"]
            record = (await mcp.call("wait_for_evaluation_job", {"job_id": job_id, "timeout_seconds": 120})).structured
    finally:
        for close in server.closers:
            close()
        await backend.close()
    assert record["status"] == "failed" and "set INSIGHT_LM" in record["error"] and "Traceback" not in record["error"]


def test_a_cancelled_evaluation_takes_no_new_case(settings: Settings, cases: Path) -> None:
    lm, engine = counting_lm(delay=0.05)
    ten_done = threading.Event()

    def progress(fraction: float, message: str) -> None:
        if message.split(" of ")[0].isdigit() and int(message.split(" of ")[0]) >= 10:
            ten_done.set()

    async def run_then_cancel() -> None:
        async with anyio.create_task_group() as group:
            async def watch() -> None:
                while not ten_done.is_set():
                    await anyio.sleep(0.01)
                group.cancel_scope.cancel()

            group.start_soon(watch)
            await evaluate_agent(settings, prompt=SECURITY_SUMMARY, dataset=str(cases), lm=lm, workers=2,
                                 progress=progress)

    anyio.run(run_then_cancel)
    time.sleep(0.3)  # the calls in flight when it was cancelled finish
    stopped_at = len(engine.calls)
    time.sleep(0.5)
    assert len(engine.calls) == stopped_at < 120, "the pool kept taking cases after the job was cancelled"


def cli(settings: Settings) -> Any:
    """`insight-mcp evaluate` as the root command will mount it, with these settings loaded."""
    from insight_mcp.agents.logs import configure_logging
    from insight_mcp.clients.evaluate_cli import evaluate_app

    root = typer.Typer()

    @root.callback()
    def main(ctx: typer.Context) -> None:
        configure_logging(settings.log_level)  # as the root command does: logs to stderr, stdout is the answer
        ctx.obj = settings

    root.add_typer(evaluate_app, name="evaluate")
    return root


def test_the_command_line_evaluates_and_fails_cleanly(settings: Settings, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    cases = write_cases(tmp_path / "few.jsonl", 12)
    refused = CliRunner().invoke(cli(settings), ["evaluate", "agent", SECURITY_SUMMARY, "--dataset", str(cases)])
    assert refused.exit_code == 2 and "set INSIGHT_LM" in refused.output and "Traceback" not in refused.output
    with LMServer() as lm:
        with_lm = settings.model_copy(update={"lm_model": "openai/test-model", "lm_api_base": lm.url,
                                              "lm_api_key": SecretStr("sk-test-123456")})
        done = CliRunner().invoke(cli(with_lm), ["evaluate", "agent", f"{SECURITY_SUMMARY}@production", "--dataset",
                                                 str(cases), "--workers", "3", "--scorer", "completeness", "--json"])
    assert done.exit_code == 0, done.output
    answer = json.loads(done.stdout)
    assert answer["predicted"] == 12 and list(answer["scorers"]) == ["completeness"] and answer["workers"] == 3

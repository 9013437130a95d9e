"""Prompt optimization, champion against challenger, on a real SQLite MLflow store with the test LM: a candidate that
really scores better is registered, promoted (alias moved last, version tagged with the run) and served; one that
does not win stays under `candidate` with the reason; rollback restores; the p-value is logged; the budget holds."""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
import typer
from lm_server import LMServer, _summary, engine_lm, improve
from pydantic import SecretStr
from test_evaluate_agent import WORSE, summary_facts

from insight_mcp.agents.core.mlflow_store import open_client
from insight_mcp.agents.core.prompts import PRODUCTION_ALIAS, SECURITY_SUMMARY, load_prompt
from insight_mcp.agents.evaluation.agent_eval import KINDS
from insight_mcp.agents.optimization import registry
from insight_mcp.agents.optimization.budget import BudgetExhausted, LMBudget
from insight_mcp.agents.optimization.model import OptimizationError, OptimizationRequest, OptimizationResult
from insight_mcp.agents.optimization.optimizers import EXAMPLES_HEADER, strip_examples, with_examples
from insight_mcp.agents.optimization.service import Cancelled, run_optimization
from insight_mcp.agents.optimization.significance import compare, paired_bootstrap, sign_test
from insight_mcp.agents.optimization.training import split, training_case
from insight_mcp.agents.settings import Settings

EXAMPLE_LINE = re.compile(r"^Example \d+: .*$", re.M)
GOOD = "counts exactly cite finding ids riskiest principal"  # what the test LM needs to hear to answer in full


# --- helpers shared with test_optimization_server.py -----------------------------------------------------------


def store_settings(settings: Settings, migrated_store: Path, **updates: Any) -> Settings:
    """Settings on a fresh copy of a migrated MLflow store; aliases are read past the cache."""
    settings.home.mkdir(parents=True, exist_ok=True)
    shutil.copy(migrated_store, settings.home / "mlflow.db")
    return settings.model_copy(update={"prompt_cache_seconds": 0, **updates})


def make_worse_production(settings: Settings) -> str:
    """The default becomes version 1; a vaguer version 2 becomes production (the champion to beat)."""
    assert load_prompt(settings, SECURITY_SUMMARY).version == "1"
    client = open_client(settings.tracking_uri)
    version = str(client.register_prompt(SECURITY_SUMMARY, WORSE, commit_message="a vaguer summary").version)
    client.set_prompt_alias(SECURITY_SUMMARY, PRODUCTION_ALIAS, version)
    return version


def write_cases(path: Path, n: int, *, labeled_every: int = 2, seed: int = 3) -> Path:
    """Security-summary cases; every `labeled_every`-th has a good expected answer (a demonstration)."""
    rng = random.Random(seed)
    with path.open("w") as handle:
        for i in range(n):
            facts = summary_facts(rng)
            expectations: dict[str, Any] = {}
            if labeled_every and i % labeled_every == 0:
                expectations["expected_response"] = _summary(facts, GOOD)[0]
            handle.write(json.dumps({"inputs": {"facts": facts}, "expectations": expectations}) + "\n")
    return path


def production(settings: Settings) -> str | None:
    return registry.alias_version(settings, SECURITY_SUMMARY, PRODUCTION_ALIAS)


def run(settings: Settings, lm: Any = None, **fields: Any) -> OptimizationResult:
    request = OptimizationRequest(**{"prompt": SECURITY_SUMMARY, "min_traces": 5, **fields})
    return run_optimization(settings, request, lm=lm)


def mlflow_run(settings: Settings, run_id: str) -> Any:
    return open_client(settings.tracking_uri).get_run(run_id)


@pytest.fixture
def worse(settings: Settings, migrated_store: Path) -> Settings:
    made = store_settings(settings, migrated_store)
    assert make_worse_production(made) == "2"
    return made


@pytest.fixture
def cases(tmp_path: Path) -> Path:
    return write_cases(tmp_path / "cases.jsonl", 24)


# --- significance ----------------------------------------------------------------------------------------------


def test_the_sign_test_counts_wins_against_losses_and_ignores_ties() -> None:
    assert sign_test([0.5] * 12) == pytest.approx(1 / 4096)
    assert sign_test([0.5, 0.5, 0.0, 0.0, -0.5]) == pytest.approx(0.5)  # 2 wins of 3 decisive pairs: 4/8
    assert sign_test([0.0, 0.0]) == 1.0 and sign_test([]) == 1.0
    assert sign_test([-0.5] * 5) == 1.0


def test_the_paired_bootstrap_and_the_chosen_test() -> None:
    assert paired_bootstrap([0.4] * 10) < 0.001
    assert paired_bootstrap([0.2, -0.2] * 10) > 0.3
    clear = compare([0.5] * 12, [1.0] * 12, test="bootstrap", alpha=0.05)
    assert clear.significant and clear.p_value == clear.p_value_bootstrap and (clear.wins, clear.losses) == (12, 0)
    few = compare([0.5, 0.5], [1.0, 1.0], test="sign", alpha=0.05)
    assert not few.significant and few.p_value == pytest.approx(0.25) and few.mean_difference == 0.5


# --- training data ---------------------------------------------------------------------------------------------


def test_good_answers_become_demonstrations_and_failures_negatives() -> None:
    kind = KINDS[SECURITY_SUMMARY]
    facts = summary_facts(random.Random(1))
    good, _ = _summary(facts, GOOD)
    wrong = f"{facts['counts']['total'] + 5} findings were raised in the window."
    inputs = {"facts": facts}
    rated = training_case(kind, inputs, {"rating": 5}, {"text": good, "accepted": True}, {"insight.status": "ok"})
    unrated = training_case(kind, inputs, {}, {"text": good, "accepted": True}, {"insight.status": "ok"})
    failed = training_case(kind, inputs, {}, {"accepted": False}, {"insight.status": "error"})
    poor = training_case(kind, inputs, {"rating": 2, "rating_comment": "missed the counts"}, {"text": good})
    middling = training_case(kind, inputs, {"rating": 3}, {"text": good})
    miscounted = training_case(kind, inputs, {"rating": 5}, {"text": wrong})
    expected = training_case(kind, inputs, {"expected_response": good})
    assert rated.label == good and not rated.negative and rated.note == "a person rated an earlier answer 5/5"
    assert unrated.label == good and expected.label == good
    assert failed.negative and failed.label is None
    assert poor.negative and poor.label is None and poor.note and "missed the counts" in poor.note
    assert middling.label is None and not middling.negative
    assert miscounted.label is None, "an answer that fails the narrative's checks is never shown as an example"
    assert "rating" not in rated.case.expectations


def test_the_split_is_seeded_and_spreads_negatives() -> None:
    kind = KINDS[SECURITY_SUMMARY]
    rng = random.Random(2)
    cases = [training_case(kind, {"facts": summary_facts(rng)}, {"rating": 1 if i % 4 == 0 else 5})
             for i in range(20)]
    train, held = split(cases, 0.4, seed=7)
    _, again_held = split(cases, 0.4, seed=7)
    assert [id(c) for c in held] == [id(c) for c in again_held] and len(held) == 8 and len(train) == 12
    assert sum(c.negative for c in held) == 2 and sum(c.negative for c in train) == 3
    assert {id(c) for c in train} | {id(c) for c in held} == {id(c) for c in cases}


def test_example_answers_are_written_into_the_template_once() -> None:
    first = with_examples("Summarise.", ["3 findings were raised.", "1 finding was raised."])
    assert first.startswith("Summarise.\n\n" + EXAMPLES_HEADER) and len(EXAMPLE_LINE.findall(first)) == 2
    second = with_examples(first, ["2 findings were raised."])
    assert second.count(EXAMPLES_HEADER) == 1 and len(EXAMPLE_LINE.findall(second)) == 1
    assert strip_examples(second) == "Summarise."


def test_the_test_lm_improves_an_instruction_from_the_scorers_feedback() -> None:
    feedback = "completeness: does not state the total (5 findings); 2 critical; a critical or high finding's id"
    better = improve(WORSE, feedback)
    assert better.startswith(WORSE) and "counts exactly" in better and "cite finding ids" in better.lower()
    assert improve(better, feedback) == better, "a gap the instruction already covers adds nothing"
    assert improve(WORSE, "completeness: states everything asked") == WORSE


# --- champion and challenger -----------------------------------------------------------------------------------


def test_a_candidate_that_really_scores_better_is_promoted_and_served(worse: Settings, cases: Path) -> None:
    lm, engine = engine_lm()
    result = run(worse, lm, framework="dspy", optimizer="gepa", dataset=str(cases), max_lm_calls=150)

    assert result.outcome == "promoted" and result.promoted, result.reason
    assert (result.champion_version, result.candidate_version) == ("2", "3")
    assert result.baseline_score == 0.5 and result.candidate_score == 1.0 and result.improvement_pct == 100.0
    assert result.significance and result.significance.significant and result.significance.p_value < 0.05
    assert (result.train_cases, result.held_out_cases, result.cases) == (14, 10, 24) and result.demonstrations == 12
    assert result.lm_calls == len(engine.calls) <= 150

    assert production(worse) == "3" and registry.alias_version(worse, SECURITY_SUMMARY, "candidate") == "3"
    served = load_prompt(worse, SECURITY_SUMMARY)
    assert served.version == "3" and served.template.startswith(WORSE) and "counts exactly" in served.template
    version = open_client(worse.tracking_uri).get_prompt_version(SECURITY_SUMMARY, 3)
    assert version.tags[registry.RUN_TAG] == result.mlflow_run_id
    assert version.tags[registry.PROMOTED_FROM_TAG] == "2" and version.tags[registry.PARENT_TAG] == "2"
    assert version.tags["insight.optimizer"] == "gepa"
    assert result.mlflow_run_id in version.tags[registry.PROMOTED_BY_TAG]

    logged = mlflow_run(worse, result.mlflow_run_id)
    assert logged.info.status == "FINISHED"
    assert logged.data.params["promoted"] == "true" and logged.data.params["reason"].startswith("promoted version 3")
    assert logged.data.params["candidate_version"] == "3" and logged.data.params["champion_version"] == "2"
    metrics = logged.data.metrics
    assert metrics["baseline_score"] == 0.5 and metrics["candidate_score"] == 1.0 and metrics["improvement_pct"] == 100
    assert metrics["p_value"] == result.significance.p_value and "p_value_bootstrap" in metrics
    assert metrics["lm_calls"] == result.lm_calls and metrics["duration_seconds"] > 0
    experiment = open_client(worse.tracking_uri).get_experiment(logged.info.experiment_id)
    assert experiment.name == "insight-optimization"
    assert experiment.artifact_location.startswith(worse.mlflow_artifacts.as_uri())


@pytest.mark.parametrize(("framework", "optimizer"), [
    ("dspy", "bootstrap_few_shot"), ("dspy", "miprov2"), ("textgrad", "tgd"), ("mlflow", "metaprompt"),
    ("mlflow", "gepa"),
])
def test_every_optimizer_really_improves_the_prompt(worse: Settings, cases: Path, framework: str,
                                                    optimizer: str) -> None:
    lm, engine = engine_lm()
    result = run(worse, lm, framework=framework, optimizer=optimizer, dataset=str(cases), max_lm_calls=150)
    assert result.outcome == "promoted", (result.reason, result.optimizer_note)
    assert result.candidate_score == 1.0 > result.baseline_score and result.lm_calls == len(engine.calls) <= 150
    served = load_prompt(worse, SECURITY_SUMMARY)
    assert served.version == result.candidate_version and served.template != WORSE
    version = open_client(worse.tracking_uri).get_prompt_version(SECURITY_SUMMARY, result.candidate_version)
    assert version.tags[registry.RUN_TAG] == result.mlflow_run_id and version.tags["insight.framework"] == framework
    if optimizer == "bootstrap_few_shot":  # demos live in the text, as example answers
        assert EXAMPLES_HEADER in served.template and "were raised" in served.template


def test_a_win_that_is_not_significant_is_not_promoted_and_says_why(worse: Settings, tmp_path: Path) -> None:
    few = write_cases(tmp_path / "few.jsonl", 8)
    lm, _ = engine_lm()
    result = run(worse, lm, framework="dspy", optimizer="gepa", dataset=str(few), held_out_fraction=0.25,
                 max_lm_calls=60)
    assert result.outcome == "not_promoted" and not result.promoted and result.candidate_version == "3"
    assert result.candidate_score == 1.0 > result.baseline_score, "it did win, on too few cases to tell"
    assert result.significance and result.significance.p_value == pytest.approx(0.25)
    assert "not significant" in result.reason and "p=0.25" in result.reason
    assert "stays under @candidate" in result.reason
    assert production(worse) == "2" and load_prompt(worse, SECURITY_SUMMARY).template == WORSE
    assert registry.alias_version(worse, SECURITY_SUMMARY, "candidate") == "3"
    logged = mlflow_run(worse, result.mlflow_run_id)
    assert logged.data.params["promoted"] == "false" and "not significant" in logged.data.params["reason"]
    assert logged.data.metrics["p_value"] == pytest.approx(0.25)


def test_a_candidate_that_does_not_beat_the_champion_is_not_promoted(settings: Settings, migrated_store: Path,
                                                                      cases: Path) -> None:
    good = store_settings(settings, migrated_store)  # production is the full default: it already scores 1.0
    lm, _ = engine_lm()
    result = run(good, lm, framework="dspy", optimizer="bootstrap_few_shot", dataset=str(cases), max_lm_calls=80)
    assert result.outcome == "not_promoted" and result.candidate_version == "2"
    assert "does not beat the champion" in result.reason and result.baseline_score == result.candidate_score == 1.0
    assert production(good) == "1"


def test_approve_mode_leaves_a_winner_waiting_under_candidate(worse: Settings, cases: Path) -> None:
    lm, _ = engine_lm()
    result = run(worse, lm, framework="dspy", optimizer="bootstrap_few_shot", dataset=str(cases), promotion="approve")
    assert result.outcome == "awaiting_approval" and not result.promoted and "promote_prompt" in result.reason
    assert production(worse) == "2" and registry.alias_version(worse, SECURITY_SUMMARY, "candidate") == "3"
    moved = registry.promote(worse, SECURITY_SUMMARY, "3", by="dana")
    assert moved.changed and (moved.previous, moved.version) == ("2", "3") and production(worse) == "3"


def test_rollback_restores_the_previous_version(worse: Settings, cases: Path) -> None:
    lm, _ = engine_lm()
    assert run(worse, lm, framework="dspy", optimizer="bootstrap_few_shot", dataset=str(cases)).promoted
    assert load_prompt(worse, SECURITY_SUMMARY).version == "3"

    back = registry.rollback(worse, SECURITY_SUMMARY, by="dana")
    assert back.changed and (back.previous, back.version) == ("3", "2")
    served = load_prompt(worse, SECURITY_SUMMARY)
    assert (served.version, served.template) == ("2", WORSE)
    tags = open_client(worse.tracking_uri).get_prompt_version(SECURITY_SUMMARY, 3).tags
    assert registry.ROLLED_BACK_AT_TAG in tags

    with pytest.raises(OptimizationError, match=r"no earlier production version is recorded.*versions: 3, 2, 1"):
        registry.rollback(worse, SECURITY_SUMMARY, by="dana")  # version 2 was set by hand, not promoted
    assert registry.rollback(worse, SECURITY_SUMMARY, "1", by="dana").version == "1"
    assert registry.rollback(worse, SECURITY_SUMMARY, "1", by="dana").changed is False
    with pytest.raises(OptimizationError, match="has no version 9; its versions are 3, 2, 1"):
        registry.promote(worse, SECURITY_SUMMARY, "9", by="dana")

    listed = registry.list_versions(worse, SECURITY_SUMMARY)
    assert (listed.production, listed.candidate, listed.total) == ("1", "3", 3)
    assert [v.version for v in listed.versions] == ["3", "2", "1"]
    assert listed.versions[0].source == "optimization" and listed.versions[0].optimization_run_id
    assert listed.versions[2].aliases == ["production"] and listed.versions[2].source == "builtin-default"


# --- limits ----------------------------------------------------------------------------------------------------


def test_the_budget_refuses_the_call_past_its_limit_before_the_model_sees_it() -> None:
    from insight_mcp.agents.optimization.counted_lm import budgeted, complete

    lm, engine = engine_lm()
    budget = LMBudget(2)
    counted = budgeted(lm, budget)
    complete(counted, [{"role": "user", "content": "one"}])
    complete(counted.copy(temperature=1.0), [{"role": "user", "content": "two"}])  # copies share the budget
    with pytest.raises(BudgetExhausted, match="budget of 2 LM calls"):
        complete(counted, [{"role": "user", "content": "three"}])
    assert len(engine.calls) == 2 and budget.calls == 2 and budget.exhausted
    budget.cancelled.set()
    assert budget.remaining() == 0


def test_the_budget_holds_for_the_whole_optimization(worse: Settings, cases: Path) -> None:
    lm, engine = engine_lm()
    result = run(worse, lm, framework="dspy", optimizer="gepa", dataset=str(cases), max_lm_calls=30)
    assert len(engine.calls) == result.lm_calls <= 30
    assert result.held_out_cases == 10 and result.outcome in ("promoted", "not_promoted")
    assert mlflow_run(worse, result.mlflow_run_id).data.metrics["lm_calls"] <= 30

    with pytest.raises(OptimizationError, match=r"max_lm_calls=12 leaves nothing for the search.*20 calls"):
        run(worse, lm, framework="dspy", optimizer="gepa", dataset=str(cases), max_lm_calls=12)


def test_fewer_cases_than_min_traces_optimizes_nothing(worse: Settings, cases: Path) -> None:
    lm, engine = engine_lm()
    result = run(worse, lm, dataset=str(cases), min_traces=100)
    assert result.outcome == "skipped" and "fewer than min_traces=100" in result.reason and not engine.calls
    assert result.candidate_version is None and production(worse) == "2"
    assert mlflow_run(worse, result.mlflow_run_id).data.params["promoted"] == "false"


def test_without_an_lm_the_error_names_insight_lm(worse: Settings, cases: Path) -> None:
    with pytest.raises(OptimizationError, match="set INSIGHT_LM"):
        run(worse, dataset=str(cases))


@pytest.mark.parametrize(("framework", "optimizer"), [("dspy", "gepa"), ("dspy", "bootstrap_few_shot")])
def test_an_lm_that_always_fails_is_named_not_hidden(worse: Settings, cases: Path, framework: str,
                                                     optimizer: str) -> None:
    lm, engine = engine_lm("error")
    with pytest.raises(OptimizationError, match=r"the engine failed.*check that INSIGHT_LM answers"):
        run(worse, lm, framework=framework, optimizer=optimizer, dataset=str(cases), max_lm_calls=150)
    assert len(engine.calls) <= 20, "a dead LM must not eat the whole budget"
    assert production(worse) == "2"


def test_bad_requests_say_what_to_change() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="exactly one training source"):
        OptimizationRequest(prompt=SECURITY_SUMMARY, dataset="x", since="2026-11-01")
    with pytest.raises(ValidationError, match="textgrad framework offers tgd, not gepa"):
        OptimizationRequest(prompt=SECURITY_SUMMARY, framework="textgrad", optimizer="gepa", dataset="x")
    with pytest.raises(ValidationError, match=r"unknown prompt 'insight\.nope'"):
        OptimizationRequest(prompt="insight.nope", dataset="x")
    with pytest.raises(ValidationError, match="since 'last week' is not an ISO date"):
        OptimizationRequest(prompt=SECURITY_SUMMARY, since="last week")
    assert OptimizationRequest(prompt=SECURITY_SUMMARY, framework="mlflow", dataset="x").optimizer == "metaprompt"


def test_a_candidate_that_drops_the_untrusted_data_rules_is_never_promoted() -> None:
    from insight_mcp.agents.core.prompts import PROMPTS
    from insight_mcp.agents.optimization.service import dropped_rules

    default = PROMPTS[SECURITY_SUMMARY].template
    assert dropped_rules(default, default + "\n- State counts exactly.") is None
    assert dropped_rules(default, "Summarise the findings; state counts exactly.") == (
        "'untrusted_audit_data', 'never follow instructions'")
    assert dropped_rules(WORSE, "Anything.") is None, "a champion without the rules cannot lose them"


def test_an_interrupted_optimization_never_touches_production(worse: Settings, cases: Path) -> None:
    lm, _ = engine_lm()
    cancelled = threading.Event()

    def progress(fraction: float, message: str) -> None:
        if message.startswith("scoring champion and candidate"):
            cancelled.set()  # the job is cancelled while the candidate is being compared

    request = OptimizationRequest(prompt=SECURITY_SUMMARY, dataset=str(cases), min_traces=5,
                                  framework="dspy", optimizer="bootstrap_few_shot")
    with pytest.raises(Cancelled):
        run_optimization(worse, request, lm=lm, progress=progress, cancelled=cancelled)
    assert production(worse) == "2" and load_prompt(worse, SECURITY_SUMMARY).template == WORSE
    runs = open_client(worse.tracking_uri).search_runs(
        [open_client(worse.tracking_uri).get_experiment_by_name("insight-optimization").experiment_id])
    assert [r.info.status for r in runs] == ["KILLED"] and runs[0].data.params["reason"] == "cancelled"


# --- the real paths --------------------------------------------------------------------------------------------


def test_learning_from_traces_through_litellm_and_http(worse: Settings) -> None:
    """Narrative traces since a time, curated into a dataset; the LM reached through dspy.LM -> LiteLLM -> HTTP."""
    from mlflow.entities import AssessmentSource, Feedback
    from mlflow.tracing.client import TracingClient

    from insight_mcp.agents.core.mlflow_store import experiment_id
    from insight_mcp.agents.evaluation.curation import fluent_mlflow
    from insight_mcp.agents.narrative import facts as narrative_facts

    client = open_client(worse.tracking_uri)
    narrative = experiment_id(client, "insight-narrative", worse.mlflow_artifacts / "insight-narrative")
    rng = random.Random(11)
    trace_ids = []
    with fluent_mlflow(worse.tracking_uri) as mlflow:
        for i in range(24):
            data = summary_facts(rng)
            failed = i % 6 == 5
            text = _summary(data, GOOD)[0] if i % 3 == 0 else _summary(data, "")[0]
            span = mlflow.start_span_no_context(
                "narrative.security_summary", span_type="CHAIN", inputs={"data": narrative_facts.untrusted(data)},
                tags={"insight.agent": "narrative", "insight.prompt": SECURITY_SUMMARY,
                      "insight.prompt_version": "2"}, experiment_id=narrative)
            span.set_outputs({"accepted": False} if failed else {"text": text, "accepted": True})
            span.end(status="ERROR" if failed else "OK")
            trace_ids.append(str(span.trace_id))
        mlflow.flush_trace_async_logging()
    tracing = TracingClient(tracking_uri=worse.tracking_uri)
    for trace_id in trace_ids[1:12:3]:  # vague answers people rated poorly
        tracing.log_assessment(trace_id, Feedback(name="rating", value=2, rationale="no numbers",
                                                  source=AssessmentSource(source_type="HUMAN", source_id="dana")))

    since = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
    with LMServer() as server:
        result = run(with_http_lm(worse, server), framework="dspy", optimizer="bootstrap_few_shot", since=since,
                     max_lm_calls=100, min_traces=20)
        sent = [r for r in server.requests if r.path.endswith("/chat/completions")]
    assert result.outcome == "promoted", result.reason
    assert result.cases == 24 and result.negatives == 8 and result.demonstrations == 16  # every answer that passed
    assert "curated into dataset insight-opt-security-summary-" in result.source
    assert len(sent) == result.lm_calls and all(r.headers.get("Authorization") == "Bearer sk-test-123456"
                                                for r in sent)
    served = load_prompt(worse, SECURITY_SUMMARY)
    examples = EXAMPLE_LINE.findall(served.template)
    assert served.version == result.candidate_version and examples
    assert all("were raised" in line for line in examples), "only answers the scorers rate perfect are examples"


def test_the_command_line_optimizes_and_fails_cleanly(worse: Settings, cases: Path) -> None:
    from typer.testing import CliRunner

    from insight_mcp.agents.logs import configure_logging
    from insight_mcp.clients.optimize_cli import optimize_command

    def cli(settings: Settings) -> typer.Typer:
        """`insight-mcp optimize` as the root command mounts it, with these settings loaded."""
        root = typer.Typer()

        @root.callback()
        def main(ctx: typer.Context) -> None:
            configure_logging(settings.log_level)
            ctx.obj = settings

        root.command("optimize")(optimize_command)
        return root

    args = ["optimize", "--prompt", SECURITY_SUMMARY, "--dataset", str(cases), "--min-traces", "5"]
    refused = CliRunner().invoke(cli(worse), args)
    assert refused.exit_code == 2 and "set INSIGHT_LM" in refused.output and "Traceback" not in refused.output
    bad = CliRunner().invoke(cli(worse), [*args, "--framework", "textgrad", "--optimizer", "gepa"])
    assert bad.exit_code == 2 and "offers tgd, not gepa" in bad.output
    with LMServer() as server:
        done = CliRunner().invoke(cli(with_http_lm(worse, server)),
                                  [*args, "--optimizer", "bootstrap_few_shot", "--max-lm-calls", "60", "--json"])
    assert done.exit_code == 0, done.output
    answer = json.loads(done.stdout)
    assert answer["outcome"] == "promoted" and answer["lm_calls"] <= 60 and answer["candidate_version"] == "3"


def with_http_lm(settings: Settings, server: LMServer) -> Settings:
    """Settings that reach the test LM server through dspy.LM -> LiteLLM -> HTTP."""
    return settings.model_copy(update={"lm_model": "openai/test-model", "lm_api_base": server.url,
                                       "lm_api_key": SecretStr("sk-test-123456")})

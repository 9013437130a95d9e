"""A user's own agent optimized like ours: its registered template's {{variables}} become a DSPy program's inputs, it
learns from its own experiment's traces selected by tag, well-rated answers are both demonstrations and the answers
to expect, the candidate keeps every variable the agent fills in, and it is promoted only on a real win."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from lm_server import engine_lm
from test_optimization import store_settings
from user_agent import (
    EXPERIMENT,
    PROMPT,
    TAGS,
    VAGUE_TEMPLATE,
    good_answer,
    message,
    support_calls,
    write_support_traces,
)

from insight_mcp.agents.core.mlflow_store import open_client
from insight_mcp.agents.core.prompts import PRODUCTION_ALIAS
from insight_mcp.agents.evaluation.agent_eval import kind_of
from insight_mcp.agents.evaluation.runs import EvaluationError
from insight_mcp.agents.evaluation.user_prompts import field_values, keep_variables, template_variables
from insight_mcp.agents.optimization import registry
from insight_mcp.agents.optimization.model import OptimizationRequest
from insight_mcp.agents.optimization.optimizers import EXAMPLES_HEADER, Proposal
from insight_mcp.agents.optimization.service import _register_keeping_variables, run_optimization
from insight_mcp.agents.settings import Settings, load_settings


def since_an_hour_ago() -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()


def request(**fields: object) -> OptimizationRequest:
    return OptimizationRequest(**{"prompt": PROMPT, "since": since_an_hour_ago(), "experiment": EXPERIMENT,
                                  "trace_tags": TAGS, "framework": "dspy", "optimizer": "bootstrap_few_shot",
                                  "min_traces": 20, "max_lm_calls": 120, **fields})


@pytest.fixture(scope="module")
def bot_store(tmp_path_factory: pytest.TempPathFactory, migrated_store: Path) -> Path:
    """The support bot's store, written once: its vague prompt at @production, 40 rated calls, another app's 10."""
    home = tmp_path_factory.mktemp("support-bot")
    made = store_settings(load_settings(home=home), migrated_store)
    write_support_traces(made.tracking_uri, made.mlflow_artifacts, support_calls(40, good_every=2),
                         register=VAGUE_TEMPLATE)
    other = [{"message": message(9000 + i, i), "answer": "Another app's answer.", "rating": 5} for i in range(10)]
    write_support_traces(made.tracking_uri, made.mlflow_artifacts, other, tags={"app": "billing-bot"})
    return home / "mlflow.db"


@pytest.fixture
def bot(settings: Settings, bot_store: Path) -> Settings:
    """This test's copy of the support bot's store."""
    return store_settings(settings, bot_store)


def test_the_template_variables_are_the_programs_inputs_and_are_kept() -> None:
    template = "Answer {{ question }} for {{customer.name}}; again: {{question}}"
    assert template_variables(template) == ("question", "customer.name")
    kind = kind_of("acme.qa", template)
    assert kind.generic and kind.fields == ("question", "customer_name") and kind.output_field == "response"
    assert kind_of("acme.system", "You are a helpful bot.").fields == ("request",)
    assert field_values({"question": "q", "customer.name": "n"}, kind.fields) == {"question": "q",
                                                                                   "customer_name": "n"}
    with pytest.raises(ValueError, match="customer_name missing"):
        field_values({"question": "q"}, kind.fields)

    kept, restored = keep_variables(template, "Answer the question politely.")
    assert restored == ["question", "customer.name"]
    assert template_variables(kept) == ("question", "customer.name"), "the agent can still fill every variable"
    assert keep_variables(template, template + " Be brief.") == (template + " Be brief.", [])


def test_a_version_the_optimizer_registered_without_the_agents_variables_is_replaced_and_says_so(
        bot: Settings) -> None:
    client = open_client(bot.tracking_uri)
    champion = client.load_prompt(f"prompts:/{PROMPT}@{PRODUCTION_ALIAS}")
    lost = client.register_prompt(PROMPT, "Reply kindly.")  # as mlflow.genai.optimize_prompts registers its result
    proposal = Proposal(template="Reply kindly.", note="gepa", registered_version=str(lost.version))
    version = _register_keeping_variables(bot, request(), proposal, VAGUE_TEMPLATE, str(champion.version), "run-7",
                                          {"insight.framework": "mlflow"}, generic=True)
    assert version not in {str(lost.version), str(champion.version)}
    fixed = client.get_prompt_version(PROMPT, version)
    assert template_variables(fixed.template) == ("message",) and fixed.template.startswith("Reply kindly.")
    assert "put back (message)" in proposal.note
    assert registry.alias_version(bot, PROMPT, registry.CANDIDATE_ALIAS) == version
    orphan = {v.version: v for v in registry.list_versions(bot, PROMPT).versions}[str(lost.version)]
    assert orphan.tags[registry.REPLACED_BY_TAG] == version and orphan.optimization_run_id == "run-7"
    assert orphan.source == "optimization" and orphan.aliases == []
    # a proposal that kept them is registered once, and nothing is marked replaced
    whole = Proposal(template=VAGUE_TEMPLATE + " Be brief.", note="bootstrap")
    again = _register_keeping_variables(bot, request(), whole, VAGUE_TEMPLATE, str(champion.version), "run-8", {},
                                        generic=True)
    assert client.get_prompt_version(PROMPT, again).template == VAGUE_TEMPLATE + " Be brief."
    assert not any(registry.REPLACED_BY_TAG in v.tags and v.version != str(lost.version)
                   for v in registry.list_versions(bot, PROMPT).versions)


def test_a_user_agents_prompt_is_optimized_from_its_own_tagged_traces(bot: Settings) -> None:
    lm, engine = engine_lm()
    result = run_optimization(bot, request(), lm=lm)

    assert result.outcome == "promoted" and result.promoted, (result.reason, result.optimizer_note)
    assert result.cases == 40, "only the support bot's traces, not the billing bot's in the same experiment"
    assert result.demonstrations == 20 and result.negatives == 20  # rated 5, and rated 1-2
    assert f"traces in experiment {EXPERIMENT} tagged app=support-bot since" in result.source
    assert result.candidate_score == 1.0 > (result.baseline_score or 0)
    assert result.significance is not None and result.significance.significant
    assert result.lm_calls == len(engine.calls) <= 120

    served = open_client(bot.tracking_uri).load_prompt(f"prompts:/{PROMPT}@{PRODUCTION_ALIAS}",
                                                       cache_ttl_seconds=0)
    assert str(served.version) == result.candidate_version == "2"
    assert template_variables(served.template) == ("message",), "the bot still fills its message in"
    assert EXAMPLES_HEADER in served.template and "we have logged your request" in served.template
    assert "Another app" not in served.template
    filled = served.format(message=message(4411, 0))
    assert "order 4411 arrived damaged" in filled and "{{" not in filled
    assert registry.alias_version(bot, PROMPT, "candidate") == "2"


def test_a_user_agent_without_a_real_win_keeps_its_prompt(bot: Settings) -> None:
    """Scored on validity alone, the vague and the good answer both pass: no win, nothing promoted."""
    lm, _ = engine_lm()
    result = run_optimization(bot, request(scorers=["validity"]), lm=lm)
    assert result.outcome == "not_promoted" and not result.promoted
    assert result.candidate_score == result.baseline_score == 1.0 and "does not beat" in result.reason
    assert registry.alias_version(bot, PROMPT, PRODUCTION_ALIAS) == "1"


def test_a_user_prompt_is_evaluated_on_a_dataset_file(bot: Settings, tmp_path: Path) -> None:
    import anyio

    from insight_mcp.agents.evaluation.agent_eval import evaluate_agent

    cases = tmp_path / "support.jsonl"
    cases.write_text("".join(json.dumps({"inputs": {"message": message(500 + i, i)},
                                         "expectations": {"expected_response": good_answer(500 + i)}}) + "\n"
                             for i in range(4)))
    lm, _ = engine_lm()
    evaluation = anyio.run(lambda: evaluate_agent(bot, prompt=PROMPT, dataset=str(cases), lm=lm, workers=2,
                                                  scorers=["validity", "expected_response"]))
    assert evaluation.version == "1" and evaluation.predicted == 4
    assert evaluation.scorers["validity"].mean == 1.0
    assert (evaluation.scorers["expected_response"].mean or 1) < 0.3, "the vague prompt's answers say too little"


def test_a_user_prompt_needs_its_experiment_a_registered_production_and_fitting_scorers(
        bot: Settings, settings: Settings) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="name the MLflow `experiment` your agent logs them to"):
        OptimizationRequest(prompt=PROMPT, since=since_an_hour_ago())
    with pytest.raises(ValidationError, match="completeness checks the facts our own prompts must state"):
        request(scorers=["completeness"])
    with pytest.raises(ValidationError, match="is not a prompt name"):
        OptimizationRequest(prompt="acme support/reply", dataset="x")
    assert request().scorers == ["validity", "expected_response"]

    lm, engine = engine_lm()
    with pytest.raises(EvaluationError, match=r"no prompt named 'acme\.unknown' is registered"):
        run_optimization(bot, request(prompt="acme.unknown"), lm=lm)
    with pytest.raises(EvaluationError, match="no MLflow experiment is named 'acme-nowhere'"):
        run_optimization(bot, request(experiment="acme-nowhere"), lm=lm)
    client = open_client(bot.tracking_uri)
    client.register_prompt("acme.unaliased", VAGUE_TEMPLATE)
    with pytest.raises(EvaluationError, match=r"acme\.unaliased has no alias 'production'.*set @production"):
        run_optimization(bot, request(prompt="acme.unaliased"), lm=lm)
    assert not engine.calls, "nothing reached the LM"


def test_curating_reads_the_agents_own_experiment_by_tag_and_refuses_what_cannot_be_matched(bot: Settings) -> None:
    from insight_mcp.agents.evaluation.curation import TraceFilter, curate_dataset

    made = curate_dataset(bot, name="support-bot-cases", trace_filter=TraceFilter(experiment=EXPERIMENT, tags=TAGS))
    assert made.matched == made.records == 40 and made.experiments == [EXPERIMENT]
    assert made.with_expectations == 40, "every call was rated"
    everything = curate_dataset(bot, name="acme-cases", trace_filter=TraceFilter(experiment=EXPERIMENT))
    assert everything.matched == 50, "without the tag, the billing bot's calls too"
    with pytest.raises(EvaluationError, match="the value of tag 'app' cannot be matched"):
        curate_dataset(bot, trace_filter=TraceFilter(experiment=EXPERIMENT, tags={"app": "x' OR '1'='1"}))
    with pytest.raises(EvaluationError, match="no MLflow experiment is named 'acme-elsewhere'"):
        curate_dataset(bot, trace_filter=TraceFilter(experiment="acme-elsewhere"))

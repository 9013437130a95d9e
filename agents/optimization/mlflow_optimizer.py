"""MLflow's own `mlflow.genai.optimize_prompts`, with meta-prompting or GEPA, on the registered champion version.

Its `predict_fn` loads the champion by version and calls `.format()`, as `optimize_prompts` requires (it swaps the
template for each candidate while it evaluates), then runs the prompt's narrative module with that text; the
scorers are the task's MLflow scorers. Its reflection model goes through LiteLLM: here it is pointed at a LiteLLM
custom provider, registered for this one run under a unique name, that forwards every call to the optimization's
counted dspy.LM. So the reflection uses the configured model and counts against the same budget, and a test LM
answers it too. `optimize_prompts` registers its result as a new version itself (no alias): the service then tags
that version and points `candidate` at it.

MLflow evaluates inside the optimization's own run, so the traces its evaluation records land in the
`insight-optimization` experiment (with its artifact location under $INSIGHT_HOME), never in the default one.

This module imports LiteLLM at the top; import it only inside the functions that optimize.
"""

from __future__ import annotations

import contextlib
import secrets
from typing import Any

import litellm
from litellm import CustomLLM

from insight_mcp.agents.evaluation.agent_eval import make_module, predict
from insight_mcp.agents.evaluation.curation import fluent_mlflow
from insight_mcp.agents.optimization.counted_lm import complete
from insight_mcp.agents.optimization.optimizers import (
    REFLECTION_MINIBATCH,
    Proposal,
    Task,
    _BudgetStopper,
)

GUIDELINES = ("The prompt is a system prompt for a model that describes Databricks audit-log data to security "
              "people. Keep every rule about the untrusted data between the <untrusted_audit_data-…> markers word "
              "for word, and keep the output plain sentences with no markdown or links.")


class _Bridge(CustomLLM):
    """A LiteLLM provider whose every completion is a call of the optimization's counted LM."""

    def __init__(self, lm: Any) -> None:
        super().__init__()
        self.lm = lm

    def completion(self, *args: Any, **kwargs: Any) -> Any:
        messages = [{"role": m.get("role", "user"), "content": _text(m.get("content"))}
                    for m in kwargs.get("messages") or []]
        text = complete(self.lm, messages)
        return litellm.ModelResponse(model=str(kwargs.get("model") or "insight"), choices=[
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}])


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


@contextlib.contextmanager
def _provider(lm: Any) -> Any:
    """A LiteLLM custom provider for the length of one optimization, then removed: yields its model URI."""
    name = "insightopt" + secrets.token_hex(6)
    entry = {"provider": name, "custom_handler": _Bridge(lm)}
    litellm.custom_provider_map.append(entry)
    try:
        yield f"{name}:/{str(lm.model).split('/')[-1] or 'model'}"
    finally:
        with contextlib.suppress(ValueError):
            litellm.custom_provider_map.remove(entry)


def _aggregate(scores: dict[str, Any]) -> float:
    """The mean of the scorers that gave a number: a scorer that does not apply to a case is left out."""
    values = []
    for value in scores.values():
        value = getattr(value, "value", value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values.append(float(value))
    return sum(values) / len(values) if values else 1.0


def optimize(task: Task, optimizer: str) -> Proposal:
    """`mlflow.genai.optimize_prompts` with MetaPromptOptimizer or GepaPromptOptimizer, within the task's budget."""
    from mlflow.genai.optimize.optimizers import GepaPromptOptimizer, MetaPromptOptimizer

    from insight_mcp.agents.narrative.modules import chat_adapter

    with contextlib.suppress(ImportError):  # LIBRARY_NOTES: imported once up front, GEPA cannot deadlock on it
        import litellm.proxy.spend_tracking.savings  # noqa: F401

    room = task.budget.remaining()
    uri = f"prompts:/{task.prompt}/{task.champion_version}"
    adapter = chat_adapter()

    if optimizer == "metaprompt":
        size = min(len(task.train), (room - 1) // 2)  # baseline pass, one reflection, the final pass
        if size < 1:
            return Proposal(None, f"{room} LM calls are too few for meta-prompting")
    else:
        size = len(task.train)
        if room < 2 * REFLECTION_MINIBATCH + 4:
            return Proposal(None, f"{room} LM calls are too few for GEPA")
    train = [{"inputs": c.case.inputs, "expectations": dict(c.case.expectations)} for c in task.train[:size]]

    with _provider(task.lm) as reflection, fluent_mlflow(task.settings.tracking_uri) as mlflow:

        def predict_fn(**inputs: Any) -> dict[str, Any]:
            loaded = mlflow.genai.load_prompt(uri)  # optimize_prompts swaps in each candidate here
            # format() is how it sees the prompt used; a user's {{variables}} stay in the instructions, unfilled
            instructions = loaded.format(allow_partial=True) if task.kind.generic else loaded.format()
            return predict(make_module(task.kind, str(instructions)), task.kind, task.lm, adapter, inputs)

        if optimizer == "metaprompt":
            chosen: Any = MetaPromptOptimizer(reflection_model=reflection, guidelines=GUIDELINES)
            task.say(f"MLflow meta-prompting on {size} cases")
        else:
            m = REFLECTION_MINIBATCH
            calls = max(m + 1, room * m // (m + 1))
            chosen = GepaPromptOptimizer(reflection_model=reflection, max_metric_calls=calls, gepa_kwargs={
                "reflection_minibatch_size": m, "seed": task.seed,
                "stop_callbacks": [_BudgetStopper(task.budget, m + 1)]})
            task.say(f"MLflow GEPA: up to {calls} metric calls on {size} cases")
        run = mlflow.start_run(run_id=task.run_id) if task.run_id else contextlib.nullcontext()
        with run:
            result = mlflow.genai.optimize_prompts(predict_fn=predict_fn, train_data=train, prompt_uris=[uri],
                                                   optimizer=chosen, scorers=task.scorers, aggregation=_aggregate,
                                                   enable_tracking=False)
    [optimized] = result.optimized_prompts
    before, after = result.initial_eval_score, result.final_eval_score
    scores = f" (training score {before:.3f} -> {after:.3f})" if before is not None and after is not None else ""
    return Proposal(str(optimized.template), f"mlflow.genai.optimize_prompts with {result.optimizer_name}{scores}",
                    registered_version=str(optimized.version))

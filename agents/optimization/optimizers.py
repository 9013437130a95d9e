"""One interface over the optimizers: DSPy (BootstrapFewShot, GEPA, MIPROv2), TextGrad (TGD) and MLflow's own
`mlflow.genai.optimize_prompts` (meta-prompting, GEPA).

Every optimizer gets the same `Task`: the champion's template, the training cases, the scorers (the MLflow scorers
of `prompt_scorers`, so an optimizer is judged exactly as an evaluation would judge it), the counted LM and the
budget. Each returns a `Proposal`: a new template, or None with the reason. The DSPy program is the prompt's own
narrative module (`narrative/modules.py`) with the template as its instructions, so what is optimized is what runs;
a user's prompt runs as the program `user_prompts.program` builds from its template's variables.

- **bootstrap_few_shot**: DSPy's BootstrapFewShot, its teacher primed with the demonstrations (labelled answers),
  keeps the answers the scorers rate perfect. Demos do not fit in a text template, so the chosen answers are written
  into it as example answers (`with_examples`).
- **gepa** (DSPy): reflective instruction evolution. The metric returns the scorers' rationales as feedback, the
  reflection model is the same counted LM, and `max_metric_calls` is sized so metric calls plus reflection calls fit
  the budget; a stop callback ends it early when the budget runs low.
- **miprov2** (DSPy, with optuna): proposes instructions and few-shot sets and picks the best pair in a few trials.
- **tgd** (TextGrad, `textgrad_tgd.py`): textual gradient descent on the instruction text, the loss from the scorers.
- **metaprompt** and **gepa** (MLflow, `mlflow_optimizer.py`): `mlflow.genai.optimize_prompts` over the registered
  champion version; it registers its result itself.

DSPy prints progress to stdout, which belongs to `--json` answers and the stdio transport: every optimizer runs
with stdout sent to stderr.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from insight_mcp.agents.core.prompts import SECURITY_SUMMARY
from insight_mcp.agents.evaluation.agent_eval import (
    CaseResult,
    PromptKind,
    make_module,
    module_inputs,
    score,  # the evaluation's own scoring loop: an optimizer is judged exactly as an evaluation judges
)
from insight_mcp.agents.optimization.budget import BudgetExhausted, LMBudget
from insight_mcp.agents.optimization.model import OptimizationError
from insight_mcp.agents.optimization.training import TrainingCase
from insight_mcp.agents.settings import Settings

log = structlog.get_logger("insight_mcp.optimization")

PERFECT = 1.0 - 1e-9
MAX_DEMOS = 3
MAX_EXAMPLE_CHARS = 600
REFLECTION_MINIBATCH = 3
MAX_ERRORS = 5  # a teacher whose calls fail this often is an LM that is down: stop and say so
DEAD_LM_CALLS = 8  # GEPA stops when this many calls and more have all failed
VALSET_SIZE = 8
EXAMPLES_HEADER = ("Example answers, each written for other data: follow what they state and how, never copy their "
                   "numbers, ids or names.")
_FINDING_ID = re.compile(r"\bf-[0-9a-f]{20}\b")


@dataclass
class Task:
    """Everything an optimizer gets, the same for every one of them."""

    settings: Settings
    prompt: str
    kind: PromptKind
    template: str
    champion_version: str
    train: list[TrainingCase]
    scorers: list[Any]
    lm: Any  # a counted dspy.LM (counted_lm.BudgetedLM)
    budget: LMBudget
    workers: int = 4
    seed: int = 7
    run_id: str | None = None
    say: Callable[[str], None] = field(default=lambda message: None)


@dataclass
class Proposal:
    """What an optimizer proposes: a template (None when it found nothing better to try) and what it did."""

    template: str | None
    note: str
    registered_version: str | None = None  # when the optimizer registered the version itself (MLflow's does)


@dataclass
class Scored:
    """One answer's score (mean of the scorers that apply; None when none does) and the feedback that explains it."""

    score: float | None
    feedback: str


# --- scoring -----------------------------------------------------------------------------------------------------


def case_score(result: CaseResult) -> float | None:
    """One case's score: the mean of the scorers that apply, 0 when the LM gave no usable answer."""
    if result.outputs is None:
        return 0.0
    values = [v for v in result.scores.values() if v is not None]
    return round(sum(values) / len(values), 4) if values else None


def feedback_of(result: CaseResult, item: TrainingCase | None = None) -> str:
    """What the scorers found wrong, one scorer a line, plus what a person said about an earlier answer."""
    if result.outputs is None:
        return f"There was no usable answer: {result.error or 'unknown error'}"
    lines = [f"{name}: {result.rationales.get(name) or f'scored {value:g} of 1'}"
             for name, value in result.scores.items() if value is not None and value < PERFECT]
    lines += [f"{name} could not score it: {error}" for name, error in result.scorer_errors.items()]
    if item is not None and item.note:
        lines.append(item.note)
    return "\n".join(lines) if lines else "The answer states everything asked and passes every check."


def score_outputs(task: Task, item: TrainingCase, outputs: dict[str, Any] | None) -> Scored:
    """Score one answer with the task's scorers."""
    result = CaseResult(0, outputs=outputs, error=None if outputs is not None else "no answer in the expected format")
    if outputs is not None:
        score(result, item.case, task.scorers)
    return Scored(case_score(result), feedback_of(result, item))


def outputs_of(prediction: Any, kind: PromptKind) -> dict[str, Any] | None:
    """A DSPy prediction as the scorers read it: {"text", "cited_finding_ids"}."""
    if prediction is None:
        return None
    outputs: dict[str, Any] = {"text": str(getattr(prediction, kind.output_field, "") or "").strip()}
    if kind.prompt == SECURITY_SUMMARY:
        outputs["cited_finding_ids"] = [str(i) for i in (getattr(prediction, "cited_finding_ids", None) or [])]
    return outputs


# --- templates ---------------------------------------------------------------------------------------------------


def strip_examples(template: str) -> str:
    """The template without an example-answers section an earlier optimization wrote into it."""
    return template.split("\n\n" + EXAMPLES_HEADER)[0].rstrip()


def with_examples(template: str, answers: list[str]) -> str:
    """The template with example answers after it: how demonstrations live in a text prompt."""
    lines = [f"Example {i}: {' '.join(answer.split())[:MAX_EXAMPLE_CHARS]}" for i, answer in enumerate(answers, 1)]
    return strip_examples(template) + "\n\n" + EXAMPLES_HEADER + "\n" + "\n".join(lines)


# --- availability ------------------------------------------------------------------------------------------------


def check_available(framework: str, optimizer: str) -> None:
    """Fail before any LM call when an optimizer's library is missing."""
    if framework == "dspy" and optimizer == "miprov2" and importlib.util.find_spec("optuna") is None:
        raise OptimizationError("MIPROv2 needs the optuna package, which is missing from this installation: "
                                "reinstall insight-mcp with its dependencies, or choose gepa or bootstrap_few_shot")


# --- DSPy --------------------------------------------------------------------------------------------------------


def _program(task: Task) -> Any:
    return make_module(task.kind, task.template)


def _examples(task: Task, cases: list[TrainingCase]) -> list[Any]:
    """DSPy examples: the module's input field, the demonstration's answer as the label, and the case's index."""
    import dspy

    made = []
    for index, item in enumerate(cases):
        fields: dict[str, Any] = {**module_inputs(item.case.inputs, task.kind), "case_index": index}
        if item.label:
            fields[task.kind.output_field] = item.label
            if task.kind.prompt == SECURITY_SUMMARY:
                fields["cited_finding_ids"] = _FINDING_ID.findall(item.label)
        made.append(dspy.Example(**fields).with_inputs(*task.kind.fields))
    return made


def _float_metric(task: Task, cases: list[TrainingCase]) -> Callable[..., float]:
    def metric(gold: Any, prediction: Any, trace: Any = None) -> float:
        scored = score_outputs(task, cases[gold.case_index], outputs_of(prediction, task.kind))
        return 1.0 if scored.score is None else scored.score

    return metric


def _perfect_label(task: Task, item: TrainingCase) -> bool:
    """Whether a demonstration's own answer is one the scorers rate perfect: only those are shown as examples."""
    assert item.label is not None
    outputs = {"text": item.label, "cited_finding_ids": _FINDING_ID.findall(item.label)}
    scored = score_outputs(task, item, outputs)
    return scored.score is None or scored.score >= PERFECT


def _bootstrap(task: Task) -> Proposal:
    import dspy

    from insight_mcp.agents.narrative.modules import chat_adapter

    labeled = [c for c in task.train if c.label and _perfect_label(task, c)]
    pool = labeled or [c for c in task.train if not c.negative] or task.train
    room = task.budget.remaining()
    if room < 1:
        return Proposal(None, "no LM calls were left for bootstrapping")
    pool = pool[:room]  # one teacher call per example at most
    trainset = _examples(task, pool)
    optimizer = dspy.BootstrapFewShot(
        metric=_float_metric(task, pool), metric_threshold=PERFECT, max_bootstrapped_demos=MAX_DEMOS,
        max_labeled_demos=MAX_DEMOS if labeled else 0, max_rounds=1, max_errors=min(len(trainset) + 1, MAX_ERRORS))
    task.say(f"bootstrapping demonstrations from {len(trainset)} cases ({len(labeled)} labelled)")
    with dspy.context(lm=task.lm, adapter=chat_adapter()):
        compiled = optimizer.compile(_program(task), trainset=trainset)
    demos = list(compiled.write.demos)
    answers = [str(d.get(task.kind.output_field)) for d in demos if d.get(task.kind.output_field)]
    if not answers:
        return Proposal(None, f"BootstrapFewShot found no answer the scorers rate perfect in {len(trainset)} tries")
    bootstrapped = sum(1 for d in demos if d.get("augmented"))
    return Proposal(with_examples(task.template, answers),
                    f"BootstrapFewShot chose {len(answers)} demonstrations ({bootstrapped} bootstrapped, "
                    f"{len(answers) - bootstrapped} labelled), written into the prompt as example answers")


class _BudgetStopper:
    """A GEPA stop callback: stop when the budget cannot pay for another reflection round, when every LM call so far
    failed, or when a candidate already scores perfectly on the validation cases (GEPA would otherwise spend its
    budget confirming it)."""

    def __init__(self, budget: LMBudget, reserve: int) -> None:
        self.budget = budget
        self.reserve = reserve

    def __call__(self, gepa_state: Any) -> bool:
        if self.budget.remaining() < self.reserve:
            return True
        if self.budget.calls >= DEAD_LM_CALLS and self.budget.failures >= self.budget.calls:
            return True  # not one answer yet: the LM is down, and run_optimizer says so
        scores = getattr(gepa_state, "program_full_scores_val_set", None) or []
        return bool(scores) and max(scores) >= PERFECT


def _gepa(task: Task) -> Proposal:
    import dspy

    from insight_mcp.agents.narrative.modules import chat_adapter

    m = REFLECTION_MINIBATCH
    room = task.budget.remaining()
    if room < 2 * m + 4:
        return Proposal(None, f"{room} LM calls are too few for GEPA: it needs at least {2 * m + 4}")
    trainset = _examples(task, task.train)
    valset = trainset[:max(2, min(VALSET_SIZE, room // 4))]
    max_metric_calls = max(len(valset) + m, room * m // (m + 1))  # m metric calls per reflection call
    gepa = dspy.GEPA(
        metric=_gepa_metric(task), max_metric_calls=max_metric_calls, reflection_lm=task.lm,
        reflection_minibatch_size=m, use_merge=False, num_threads=task.workers, seed=task.seed,
        gepa_kwargs={"stop_callbacks": [_BudgetStopper(task.budget, m + 1)]})
    task.say(f"GEPA: up to {max_metric_calls} metric calls on {len(trainset)} training cases")
    with dspy.context(lm=task.lm, adapter=chat_adapter()):
        compiled = gepa.compile(_program(task), trainset=trainset, valset=valset)
    instructions = compiled.write.signature.instructions
    if instructions.strip() == task.template.strip():
        return Proposal(None, "GEPA kept the champion's instructions: no proposal scored better on its "
                              "validation cases")
    return Proposal(instructions, "GEPA evolved the instructions from the scorers' feedback")


def _gepa_metric(task: Task) -> Callable[..., Any]:
    import dspy

    def metric(gold: Any, prediction: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None) -> Any:
        scored = score_outputs(task, task.train[gold.case_index], outputs_of(prediction, task.kind))
        return dspy.Prediction(score=1.0 if scored.score is None else scored.score, feedback=scored.feedback)

    return metric


def _mipro(task: Task) -> Proposal:  # optuna is a dependency; check_available() still says so if it is missing
    import dspy

    from insight_mcp.agents.narrative.modules import chat_adapter

    trainset = _examples(task, task.train)
    valset = trainset[:VALSET_SIZE]
    room = task.budget.remaining()
    trials = max(1, min(10, room // max(1, len(valset)) - 2))
    mipro = dspy.MIPROv2(metric=_float_metric(task, task.train), prompt_model=task.lm, task_model=task.lm,
                         auto=None, num_candidates=3, max_bootstrapped_demos=MAX_DEMOS, max_labeled_demos=MAX_DEMOS,
                         num_threads=task.workers, seed=task.seed, verbose=False, track_stats=False)
    with dspy.context(lm=task.lm, adapter=chat_adapter()):
        compiled = mipro.compile(_program(task), trainset=trainset, valset=valset, num_trials=trials,
                                 minibatch=False)
    instructions = compiled.write.signature.instructions
    answers = [str(d.get(task.kind.output_field)) for d in compiled.write.demos if d.get(task.kind.output_field)]
    template = with_examples(instructions, answers) if answers else instructions
    if template.strip() == task.template.strip():
        return Proposal(None, "MIPROv2 kept the champion")
    return Proposal(template, f"MIPROv2 chose instructions and {len(answers)} example answers in {trials} trials")


def _describe(exc: BaseException, settings: Settings) -> str:
    """An exception in one line of at most 300 characters, with keys and credentials removed."""
    from insight_mcp.agents.llm import redact

    text = " ".join(str(exc).split())
    cause = exc.__cause__ or exc.__context__
    if "Failed to run the prediction function" in text and cause is not None:  # MLflow wraps the real failure
        text = " ".join(str(cause).split())
    return redact(f"{type(exc).__name__}: {text[:300]}", settings)


# --- dispatch ----------------------------------------------------------------------------------------------------


def run_optimizer(framework: str, optimizer: str, task: Task) -> Proposal:
    """Run one optimizer on the task; a search the budget cut short keeps whatever it had, or proposes nothing."""
    check_available(framework, optimizer)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            if framework == "dspy":
                run = {"bootstrap_few_shot": _bootstrap, "gepa": _gepa, "miprov2": _mipro}[optimizer]
                proposal = run(task)
            elif framework == "textgrad":
                # TextGrad writes a log of every prompt where TEXTGRAD_LOG_DIR says (./logs otherwise) on import.
                os.environ.setdefault("TEXTGRAD_LOG_DIR", str(task.settings.home / "logs" / "textgrad"))
                from insight_mcp.agents.optimization.textgrad_tgd import optimize as tgd

                proposal = tgd(task)
            else:
                from insight_mcp.agents.optimization.mlflow_optimizer import optimize as mlflow_optimize

                proposal = mlflow_optimize(task, optimizer)
    except BudgetExhausted as exc:
        return Proposal(None, f"the search stopped: {exc}")
    except OptimizationError:
        raise
    except Exception as exc:
        if task.budget.exhausted:  # the library failed on a refused call rather than stopping cleanly
            log.info("optimizer stopped by the budget", error=type(exc).__name__)
            return Proposal(None, f"the search stopped when the LM call budget ran out ({type(exc).__name__})")
        # Mostly the LM failing (a bad key, an endpoint down): say what failed, never a bare internal error.
        log.warning("optimizer failed", framework=framework, optimizer=optimizer, exc_info=exc)
        raise OptimizationError(f"the {framework} {optimizer} optimizer failed: {_describe(exc, task.settings)}; "
                                "check that INSIGHT_LM answers (insight-mcp evaluate agent runs it on a few cases)"
                                ) from None
    budget = task.budget
    if budget.failures and budget.failures >= budget.calls and budget.last_failure is not None:
        raise OptimizationError(f"every LM call of the {framework} {optimizer} search failed ({budget.failures}), the "
                                f"last with {_describe(budget.last_failure, task.settings)}; check that INSIGHT_LM "
                                "answers (insight-mcp evaluate agent runs it on a few cases)")
    if budget.failures:
        proposal.note += f" ({budget.failures} of {budget.calls} LM calls failed)"
    if proposal.template is not None and proposal.template.strip() == task.template.strip():
        return Proposal(None, proposal.note or "the optimizer proposed the champion's own text",
                        proposal.registered_version)
    return proposal

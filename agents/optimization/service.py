"""One optimization, champion against challenger, logged as an MLflow run in experiment `insight-optimization`.

1. Read the cases (a dataset, or the prompt's traces since a time) and sort them into demonstrations, negatives
   and plain cases. Fewer than `min_traces`: nothing is optimized, and the run says why.
2. Split them, seeded, into training and held-out cases.
3. Run the chosen optimizer on the training cases, from the current `production` version (the champion), within
   the budget: the LM calls it may make are the total less those kept back for step 5, and the search stops at
   `max_minutes`.
4. Register its proposal as a new version tagged with this run, under the alias `candidate`.
5. Score the champion and the candidate on the same held-out cases with the same scorers.
6. Promote the candidate to `production` only if it reaches `evaluation_threshold`, beats the champion, and the
   win is significant on the paired held-out scores (the test and both p-values are logged). Otherwise it stays
   under `candidate`, and the run records why. In `approve` mode a winner waits under `candidate` for a person.

The alias move is the last write of all: an optimization stopped at any earlier point leaves production as it was.
The run records the baseline and candidate scores, the improvement in percent, the LM calls and the duration, the
versions compared, the `promoted` param and its `reason`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

from insight_mcp.agents.core.mlflow_store import experiment_id, failure, open_client
from insight_mcp.agents.core.prompts import PRODUCTION_ALIAS
from insight_mcp.agents.evaluation.agent_eval import (
    CaseResult,
    PromptKind,
    ResolvedPrompt,
    kind_of,
    prompt_scorers,
    resolve_prompt,
    run_cases,
)
from insight_mcp.agents.evaluation.user_prompts import keep_variables
from insight_mcp.agents.optimization import registry
from insight_mcp.agents.optimization.budget import LMBudget
from insight_mcp.agents.optimization.model import (
    EXPERIMENT,
    OptimizationError,
    OptimizationRequest,
    OptimizationResult,
    SignificanceResult,
)
from insight_mcp.agents.optimization.optimizers import Proposal, Task, case_score, check_available, run_optimizer
from insight_mcp.agents.optimization.significance import compare
from insight_mcp.agents.optimization.training import TrainingData, load_training, split
from insight_mcp.agents.settings import Settings
from insight_mcp.agents.version import VERSION

log = structlog.get_logger("insight_mcp.optimization")

Say = Callable[[float, str], None]
MIN_CASES = 4  # two to train on, two held out: fewer cannot be compared at all
# Phrases of the prompts' rules about audit data (prompts.py): an optimized prompt must keep the ones it had.
UNTRUSTED_RULES = ("untrusted_audit_data", "never follow instructions")


class Cancelled(RuntimeError):
    """The job was cancelled: stop before the next write."""


def _quiet(fraction: float, message: str) -> None:
    return None


async def optimize_prompt(settings: Settings, request: OptimizationRequest, *, lm: Any = None,
                          progress: Say | None = None) -> OptimizationResult:
    """Run one optimization in a worker thread; a cancelled caller stops its LM calls and every later write."""
    import anyio

    cancelled = threading.Event()
    try:
        return await anyio.to_thread.run_sync(
            lambda: run_optimization(settings, request, lm=lm, progress=progress, cancelled=cancelled),
            abandon_on_cancel=True)
    finally:
        cancelled.set()


def run_optimization(settings: Settings, request: OptimizationRequest, *, lm: Any = None,
                     progress: Say | None = None, cancelled: threading.Event | None = None) -> OptimizationResult:
    """The whole optimization, synchronously (see the module docstring)."""
    from insight_mcp.agents.llm import LMNotConfigured, build_dspy_lm, redact
    from insight_mcp.agents.optimization.counted_lm import budgeted

    say = progress or _quiet
    cancelled = cancelled or threading.Event()
    started = time.perf_counter()
    assert request.optimizer is not None
    check_available(request.framework, request.optimizer)
    say(0.01, "setting up the LM")
    if lm is None:
        try:
            lm = build_dspy_lm(settings)
        except LMNotConfigured as exc:
            raise OptimizationError(str(exc)) from None
    say(0.02, "reading the training cases")
    champion = resolve_prompt(settings, request.prompt, PRODUCTION_ALIAS)
    kind = kind_of(request.prompt, champion.template)
    data = load_training(settings, request, kind, lambda f, m: say(0.02 + 0.04 * f, m))
    result = OptimizationResult(
        prompt=request.prompt, framework=request.framework, optimizer=request.optimizer, outcome="not_promoted",
        promoted=False, reason="", source=data.source, champion_version=champion.version,
        evaluation_threshold=request.evaluation_threshold, cases=len(data.cases),
        demonstrations=data.demonstrations, negatives=data.negatives, max_lm_calls=request.max_lm_calls)
    run_id, tracking = _open_run(settings, request, data, champion.version)
    result.mlflow_run_id, result.tracking = run_id, tracking
    budget = LMBudget(request.max_lm_calls, cancelled=cancelled)
    try:
        result, template = _champion_and_challenger(settings, request, kind, data, champion, lm, budget, result,
                                                    say, budgeted, lambda text: redact(text, settings))
    except BaseException as exc:
        status = "KILLED" if cancelled.is_set() or isinstance(exc, Cancelled) else "FAILED"
        result.reason = "cancelled" if status == "KILLED" else f"failed: {failure(exc)}"
        _close_run(settings, result, None, status, budget, started)
        raise
    result.lm_calls = budget.calls
    result.seconds = round(time.perf_counter() - started, 3)
    say(0.97, "logging to MLflow")
    _close_run(settings, result, template, "FINISHED", budget, started)
    say(1.0, result.reason)
    return result


def _champion_and_challenger(
    settings: Settings, request: OptimizationRequest, kind: PromptKind, data: TrainingData, champion: ResolvedPrompt,
    lm: Any, budget: LMBudget,
    result: OptimizationResult, say: Say, budgeted: Callable[[Any, LMBudget], Any], redact: Callable[[str], str],
) -> tuple[OptimizationResult, str | None]:
    """Steps 2-6 of the module docstring: (the result, the candidate's template when there is one)."""
    assert request.optimizer is not None
    if len(data.cases) < max(request.min_traces, MIN_CASES):
        floor = (f"min_traces={request.min_traces}" if request.min_traces >= MIN_CASES
                 else f"the {MIN_CASES} any comparison needs")
        result.outcome = "skipped"
        result.reason = (f"only {len(data.cases)} usable cases from {data.source}, fewer than {floor}: nothing was "
                         "optimized")
        return result, None
    train, held_out = split(data.cases, request.held_out_fraction, request.seed)
    result.train_cases, result.held_out_cases = len(train), len(held_out)
    judged = "judges" in request.scorer_names
    reserve = 2 * len(held_out) * (2 if judged else 1)  # champion and candidate, an answer (and a judge) per case
    if request.max_lm_calls - reserve < 1:
        raise OptimizationError(
            f"max_lm_calls={request.max_lm_calls} leaves nothing for the search: scoring the champion and the "
            f"candidate on the {len(held_out)} held-out cases takes {reserve} calls; raise max_lm_calls or lower "
            "held_out_fraction")

    def searching(calls: int, limit: int) -> None:
        say(0.08 + 0.62 * min(calls / max(limit, 1), 1.0), f"searching: {calls} of {limit} LM calls")

    budget.restrict(request.max_lm_calls - reserve, request.max_minutes * 60)
    budget.on_spend = searching
    counted = budgeted(lm, budget)
    scorers = prompt_scorers(kind, request.scorer_names, judge_lm=counted)
    task = Task(settings=settings, prompt=request.prompt, kind=kind, template=champion.template,
                champion_version=champion.version, train=train, scorers=scorers, lm=counted, budget=budget,
                workers=request.workers, seed=request.seed, run_id=result.mlflow_run_id,
                say=lambda message: say(min(0.08 + 0.62 * budget.calls / max(budget.limit, 1), 0.7), message))
    say(0.08, f"optimizing with {request.framework} {request.optimizer} on {len(train)} training cases")
    proposal = run_optimizer(request.framework, request.optimizer, task)
    result.optimizer_note = proposal.note
    result.budget_exhausted = budget.exhausted and not budget.cancelled.is_set()
    _check(budget)

    budget.extend(request.max_lm_calls)  # the calls kept back: the held-out comparison
    tags = {"insight.framework": request.framework, "insight.optimizer": request.optimizer,
            "insight.version": VERSION}
    if proposal.template is None:
        if proposal.registered_version:  # MLflow registered its unchanged result: say what it was
            registry.tag_existing_candidate(settings, request.prompt, proposal.registered_version,
                                            run_id=result.mlflow_run_id, parent_version=champion.version,
                                            tags=tags, alias=False)
        result.reason = f"no candidate to compare: {proposal.note}"
        return result, None

    say(0.72, "registering the candidate")
    _check(budget)
    result.candidate_version = _register_keeping_variables(settings, request, proposal, champion.template,
                                                           champion.version, result.mlflow_run_id, tags,
                                                           generic=kind.generic)
    template = proposal.template
    dropped = dropped_rules(champion.template, template)
    if dropped:  # kept for a person to read, never compared or promoted
        result.reason = (f"not promoted: the candidate drops the rules about untrusted data ({dropped}); version "
                         f"{result.candidate_version} stays under @candidate")
        return result, template

    def scoring(calls: int, limit: int) -> None:
        say(0.74 + 0.22 * min((calls - searched) / max(reserve, 1), 1.0), "scoring champion and candidate on the "
                                                                           f"{len(held_out)} held-out cases")

    searched = budget.calls
    budget.on_spend = scoring
    cases = [c.case for c in held_out]
    champion_results = run_cases(cases, kind, champion.template, counted, scorers, workers=request.workers,
                                 stop=budget.cancelled, redact=redact)
    candidate_results = run_cases(cases, kind, proposal.template, counted, scorers, workers=request.workers,
                                  stop=budget.cancelled, redact=redact)
    _check(budget)
    baseline, candidate, significance = _compare(request, champion_results, candidate_results)
    result.baseline_score, result.candidate_score, result.significance = baseline, candidate, significance
    result.improvement_pct = round((candidate - baseline) / baseline * 100, 2) if baseline > 0 else None
    reason = _verdict(request, baseline, candidate, significance)
    if reason is not None:
        result.reason = f"not promoted: {reason}; version {result.candidate_version} stays under @candidate"
        return result, template
    won = (f"the candidate scored {candidate:.3f} against the champion's {baseline:.3f} on {significance.pairs} "
           f"held-out cases ({significance.wins} wins, {significance.losses} losses; {significance.test} test "
           f"p={significance.p_value:.4g} < {significance.alpha:g})")
    if request.promotion == "approve":
        result.outcome = "awaiting_approval"
        result.reason = (f"{won}; it waits under @candidate for a person to promote it (promote_prompt "
                         f"{request.prompt} version {result.candidate_version})")
        return result, template
    _check(budget)
    say(0.96, "promoting")
    try:
        registry.promote(settings, request.prompt, result.candidate_version, expect_production=champion.version,
                         by=f"optimization run {result.mlflow_run_id or '(not tracked)'}")
    except OptimizationError as exc:
        result.reason = f"not promoted: {exc}"
        return result, template
    result.outcome, result.promoted = "promoted", True
    result.reason = f"promoted version {result.candidate_version} to @{PRODUCTION_ALIAS}: {won}"
    return result, template


def dropped_rules(champion: str, candidate: str) -> str | None:
    """The champion's rules about untrusted data that the candidate lost, if any: no score outweighs them."""
    lost = [phrase for phrase in UNTRUSTED_RULES if phrase in champion.lower() and phrase not in candidate.lower()]
    return ", ".join(repr(p) for p in lost) or None


def _check(budget: LMBudget) -> None:
    if budget.cancelled.is_set():
        raise Cancelled("the optimization was cancelled")


def _register_keeping_variables(settings: Settings, request: OptimizationRequest, proposal: Proposal,
                                champion_template: str, champion: str, run_id: str | None, tags: dict[str, str], *,
                                generic: bool) -> str:
    """Register the candidate; a user's agent fills its template in, so a variable the optimizer dropped is put back
    first, and a version MLflow registered without it is tagged as replaced rather than left looking like ours."""
    assert proposal.template is not None
    orphan = None
    if generic:
        proposal.template, restored = keep_variables(champion_template, proposal.template)
        if restored:
            proposal.note += f"; the variables it dropped were put back ({', '.join(restored)})"
            orphan, proposal.registered_version = proposal.registered_version, None
    version = _register(settings, request, proposal, champion, run_id, tags)
    if orphan is not None:
        registry.tag_existing_candidate(settings, request.prompt, orphan, run_id=run_id, parent_version=champion,
                                        tags={**tags, registry.REPLACED_BY_TAG: version}, alias=False)
    return version


def _register(settings: Settings, request: OptimizationRequest, proposal: Proposal, champion: str,
              run_id: str | None, tags: dict[str, str]) -> str:
    if proposal.registered_version is not None:
        registry.tag_existing_candidate(settings, request.prompt, proposal.registered_version, run_id=run_id,
                                        parent_version=champion, tags=tags)
        return proposal.registered_version
    assert proposal.template is not None
    message = f"{request.framework} {request.optimizer} candidate from version {champion}: {proposal.note}"
    return registry.register_candidate(settings, request.prompt, proposal.template, run_id=run_id,
                                       parent_version=champion, tags=tags, commit_message=message)


def _compare(request: OptimizationRequest, champion: list[CaseResult],
             candidate: list[CaseResult]) -> tuple[float, float, SignificanceResult]:
    """Mean held-out scores and the paired test, over the cases where the scorers apply to both answers."""
    by_index = {r.index: r for r in candidate}
    pairs = []
    for result in champion:
        other = by_index.get(result.index)
        if other is None:
            continue
        a, b = case_score(result), case_score(other)
        if a is not None and b is not None:
            pairs.append((a, b))
    if not pairs:
        raise OptimizationError(f"the scorers {', '.join(request.scorer_names)} apply to none of the held-out cases: "
                                "choose scorers that fit the data (validity applies to every case)")
    baseline = round(sum(a for a, _ in pairs) / len(pairs), 4)
    candidate_mean = round(sum(b for _, b in pairs) / len(pairs), 4)
    significance = compare([a for a, _ in pairs], [b for _, b in pairs], test=request.significance,
                           alpha=request.alpha, seed=request.seed)
    return baseline, candidate_mean, significance


def _verdict(request: OptimizationRequest, baseline: float, candidate: float,
             significance: SignificanceResult) -> str | None:
    """Why the candidate must not be promoted, or None when it may."""
    if candidate < request.evaluation_threshold:
        return (f"the candidate scored {candidate:.3f} on the held-out cases, below evaluation_threshold "
                f"{request.evaluation_threshold:g}")
    if candidate <= baseline:
        return f"the candidate ({candidate:.3f}) does not beat the champion ({baseline:.3f}) on the held-out cases"
    if not significance.significant:
        return (f"the candidate's win ({candidate:.3f} against {baseline:.3f}; {significance.wins} wins, "
                f"{significance.losses} losses, {significance.ties} ties) is not significant: {significance.test} "
                f"test p={significance.p_value:.4g}, not below {significance.alpha:g}")
    return None


# --- MLflow ------------------------------------------------------------------------------------------------------


def _open_run(settings: Settings, request: OptimizationRequest, data: TrainingData,
              champion: str) -> tuple[str | None, str]:
    """The optimization's MLflow run, with what was asked as params; (None, why) when the store cannot be reached."""
    try:
        client = open_client(settings.tracking_uri)
        experiment = experiment_id(client, EXPERIMENT, settings.mlflow_artifacts / EXPERIMENT)
        run = client.create_run(experiment, run_name=f"optimize {request.prompt} {request.framework}/"
                                                     f"{request.optimizer}", tags={
            "insight.kind": "prompt_optimization", "insight.version": VERSION, "insight.prompt": request.prompt,
            "insight.framework": request.framework, "insight.optimizer": str(request.optimizer),
            **({"insight.dataset_id": data.dataset_id} if data.dataset_id else {}),
        })
        run_id = run.info.run_id
        params = {"prompt": request.prompt, "framework": request.framework, "optimizer": request.optimizer,
                  "source": data.source[:500], "scorers": ",".join(request.scorer_names),
                  "max_lm_calls": request.max_lm_calls, "max_minutes": request.max_minutes,
                  "min_traces": request.min_traces, "evaluation_threshold": request.evaluation_threshold,
                  "held_out_fraction": request.held_out_fraction, "significance_test": request.significance,
                  "alpha": request.alpha, "promotion": request.promotion, "seed": request.seed,
                  "champion_version": champion}
        for key, value in params.items():
            client.log_param(run_id, key, value)
        return run_id, "logged"
    except Exception as exc:
        log.warning("optimization run not tracked", error=failure(exc))
        return None, "skipped: " + failure(exc)


def _close_run(settings: Settings, result: OptimizationResult, template: str | None, status: str,
               budget: LMBudget, started: float) -> None:
    """Everything the optimization found, then the run's end; tracking failures are logged, never raised."""
    if result.mlflow_run_id is None:
        return
    run_id = result.mlflow_run_id
    try:
        client = open_client(settings.tracking_uri)
        params = {"promoted": "true" if result.promoted else "false", "reason": result.reason[:500],
                  "outcome": result.outcome, "candidate_version": result.candidate_version or "",
                  "cases": result.cases, "train_cases": result.train_cases, "held_out_cases": result.held_out_cases,
                  "demonstrations": result.demonstrations, "negatives": result.negatives}
        for key, value in params.items():
            client.log_param(run_id, key, value)
        metrics: dict[str, float] = {"lm_calls": budget.calls, "duration_seconds": time.perf_counter() - started,
                                     "budget_exhausted": float(result.budget_exhausted)}
        for key in ("baseline_score", "candidate_score", "improvement_pct"):
            value = getattr(result, key)
            if value is not None:
                metrics[key] = value
        if result.candidate_version:
            metrics["candidate_version"] = float(result.candidate_version)
        if result.significance is not None:
            s = result.significance
            metrics |= {"p_value": s.p_value, "p_value_sign": s.p_value_sign, "p_value_bootstrap": s.p_value_bootstrap,
                        "wins": s.wins, "losses": s.losses, "ties": s.ties, "mean_difference": s.mean_difference}
        for key, value in metrics.items():
            client.log_metric(run_id, key, float(value))
        client.log_dict(run_id, result.model_dump(mode="json"), "optimization.json")
        if template is not None:
            client.log_text(run_id, template, "candidate_prompt.txt")
        client.set_terminated(run_id, status)
    except Exception as exc:
        log.warning("optimization run not completed in MLflow", run_id=run_id, error=failure(exc))

"""`insight-mcp evaluate`: score a report's insights, evaluate a prompt version on a dataset, curate a dataset from
traces, or evaluate the detections; a progress bar on a terminal, silence when piped, `--json` for programs."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import anyio
import typer
from rich.table import Table

from insight_mcp.agents.settings import Settings
from insight_mcp.clients.cli_common import (
    JsonOpt,
    fail,
    out,
    print_json,
    progress,
    quiet_mlflow,
    settings_of,
    tag_pairs,
)

evaluate_app = typer.Typer(no_args_is_help=True, help="Measure the suite: insights, prompts, datasets, detections.")
T = TypeVar("T")


class Severity(enum.StrEnum):
    info = "info"
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"


class Outcome(enum.StrEnum):
    any = "any"
    ok = "ok"
    error = "error"


class ScorerOpt(enum.StrEnum):
    validity = "validity"
    completeness = "completeness"
    expected_facts = "expected_facts"
    expected_response = "expected_response"
    judges = "judges"


SeverityOpt = Annotated[Severity, typer.Option("--min-severity", help="Findings below it are not scored.")]
LabelsOpt = Annotated[str, typer.Option("--labels", help="`generated` (the demo workspace's labels) or a labels "
                                                         "file (docs/labels-format.md).")]


def _run(settings: Settings, work: Callable[[Any], Awaitable[T]], *, backend: bool = False) -> T:
    """Run one evaluation, with the workspace's backend when it needs one; caller errors end the command."""
    from insight_mcp.agents.evaluation.detections import LabelsError
    from insight_mcp.agents.evaluation.runs import EvaluationError
    from insight_mcp.agents.ingestion.backend import BackendError
    from insight_mcp.agents.security.rules import RuleFileError
    from insight_mcp.agents.settings import SettingsError

    quiet_mlflow()

    async def run() -> T:
        if not backend:
            return await work(None)
        from insight_mcp.agents.ingestion.engines import build_backend

        opened = build_backend(settings)
        try:
            return await work(opened)
        finally:
            await opened.close()

    try:
        return anyio.run(run)
    except (EvaluationError, LabelsError, BackendError, RuleFileError, SettingsError) as exc:
        fail(str(exc))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _tracking(run_id: str | None, tracking: str) -> None:
    if run_id:
        out.print(f"[bold]MLflow[/] run {run_id} in experiment insight-evaluation", highlight=False)
    else:
        out.print(f"[yellow]MLflow tracking {tracking}[/]", highlight=False, markup=True)


@evaluate_app.command("insights")
def insights_command(
    ctx: typer.Context,
    report: Annotated[str, typer.Option(help="`latest`, a report id, or the path of a JSON report.")] = "latest",
    labels: LabelsOpt = "generated",
    min_severity: SeverityOpt = Severity.medium,
    time_budget: Annotated[float, typer.Option("--time-budget", min=0.001, max=86_400,
                                               help="Seconds an agent may take and still score 1.")] = 60.0,
    judges: Annotated[bool, typer.Option("--judges/--no-judges", help="LM-judged clarity and usefulness "
                                                                      "(needs INSIGHT_LM).")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Score a report's insights: per agent accuracy, completeness and response time, and the overall score."""
    from insight_mcp.agents.evaluation.insights import score_insights

    settings = settings_of(ctx)
    with progress(not as_json, "scoring insights") as step:
        scores = _run(settings, lambda backend: score_insights(
            settings, backend, report=report, labels=labels, min_severity=min_severity.value,
            time_budget_seconds=time_budget, judges=judges, progress=step), backend=True)
    if as_json:
        print_json(scores.model_dump(mode="json"))
        return
    table = Table(title=f"Insight scores of report {scores.report_id[:8]} ({scores.since:%Y-%m-%d} to "
                        f"{scores.until:%Y-%m-%d})")
    for column in ("component", "accuracy", "completeness", "response time", "clarity", "usefulness",
                   "confidence", "score"):
        table.add_column(column, justify="left" if column == "component" else "right")
    for c in scores.components:
        table.add_row(c.component, _fmt(c.accuracy), _fmt(c.completeness), _fmt(c.response_time), _fmt(c.clarity),
                      _fmt(c.usefulness), _fmt(c.confidence), _fmt(c.score))
    out.print(table)
    out.print(f"[bold]Overall system score[/] {_fmt(scores.overall)}", highlight=False)
    if scores.judges != "lm":
        out.print(f"judges {scores.judges}", highlight=False, markup=False)
    for c in scores.components:
        for note in c.notes:
            if not note.startswith(("accuracy:", "completeness:", "response_time:", "confidence:")):
                out.print(f"{c.component}: {note}", highlight=False, markup=False)
    _tracking(scores.mlflow_run_id, scores.tracking)


@evaluate_app.command("agent")
def agent_command(
    ctx: typer.Context,
    prompt: Annotated[str, typer.Argument(help="A registered prompt and version or alias, e.g. "
                                               "insight.security_summary@production.")],
    dataset: Annotated[str, typer.Option(help="An MLflow dataset's name or id (d-…), or a JSONL file.")],
    version: Annotated[str | None, typer.Option(help="Version number or alias, if PROMPT is a bare name.")] = None,
    workers: Annotated[int, typer.Option(min=1, max=32, help="LM calls in flight at once.")] = 8,
    scorer: Annotated[list[ScorerOpt] | None, typer.Option(help="A scorer to run (repeatable); default all the "
                                                               "code scorers.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first cases.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate a prompt version over a dataset with the configured LM (INSIGHT_LM), on parallel workers."""
    from insight_mcp.agents.evaluation.agent_eval import evaluate_agent

    settings = settings_of(ctx)
    with progress(not as_json, "evaluating") as step:
        result = _run(settings, lambda _: evaluate_agent(
            settings, prompt=prompt, dataset=dataset, version=version, workers=workers,
            scorers=[s.value for s in scorer] if scorer else None, limit=limit, progress=step))
    if as_json:
        print_json(result.model_dump(mode="json"))
        return
    table = Table(title=f"{result.prompt} v{result.version} on {result.dataset} ({result.cases} cases)")
    for column in ("scorer", "mean", "count", "failures", "skipped"):
        table.add_column(column, justify="left" if column == "scorer" else "right")
    for name, s in result.scorers.items():
        table.add_row(name, _fmt(s.mean), str(s.count), str(s.failures), str(s.skipped))
    out.print(table)
    out.print(f"[bold]Score[/] {_fmt(result.score)}; {result.predicted} answered, {result.prediction_failures} "
              f"failed; {result.cases_per_second:g} cases/s on {result.workers} workers", highlight=False)
    for example in result.failure_examples:
        out.print(f"[yellow]failure:[/] {example}", highlight=False)
    _tracking(result.mlflow_run_id, result.tracking)


@evaluate_app.command("curate")
def curate_command(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option(help="The new dataset's name.")] = None,
    agent: Annotated[str | None, typer.Option(help="Only this agent's traces (a server name, or narrative).")]
    = None,
    tool: Annotated[str | None, typer.Option(help="Only calls of this tool.")] = None,
    prompt: Annotated[str | None, typer.Option(help="Only narrative calls of this prompt.")] = None,
    since: Annotated[str | None, typer.Option(help="ISO start (UTC).")] = None,
    until: Annotated[str | None, typer.Option(help="ISO end (UTC, exclusive).")] = None,
    status: Annotated[Outcome, typer.Option(help="Answers (ok), failures (error) or both (any).")] = Outcome.any,
    min_rating: Annotated[int | None, typer.Option(min=1, max=5, help="Only traces rated at least this.")] = None,
    max_rating: Annotated[int | None, typer.Option(min=1, max=5, help="Only traces rated at most this.")] = None,
    rated: Annotated[bool, typer.Option("--rated", help="Only traces someone rated.")] = False,
    experiment: Annotated[str | None, typer.Option(help="Read this MLflow experiment (your own agent's) instead of "
                                                        "the suite's.")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="KEY=VALUE: a trace tag that must match (repeatable).")]
    = None,
    size: Annotated[int, typer.Option(min=1, max=10_000, help="Most cases to sample.")] = 200,
    seed: Annotated[int, typer.Option(help="Same traces, size and seed: same sample.")] = 7,
    as_json: JsonOpt = False,
) -> None:
    """Build an MLflow evaluation dataset from traces: filtered, stratified, seeded; ratings become expectations."""
    from insight_mcp.agents.evaluation.curation import TraceFilter, curate_dataset

    settings = settings_of(ctx)
    trace_filter = TraceFilter(agent=agent, tool=tool, prompt=prompt, since=since, until=until, status=status.value,
                               min_rating=min_rating, max_rating=max_rating, rated=rated, experiment=experiment,
                               tags=tag_pairs(tag, "--tag"))

    async def work(_: Any) -> Any:
        return await anyio.to_thread.run_sync(lambda: curate_dataset(
            settings, name=name, trace_filter=trace_filter, size=size, seed=seed, progress=step))

    with progress(not as_json, "curating") as step:
        made = _run(settings, work)
    if as_json:
        print_json(made.model_dump(mode="json"))
        return
    out.print(f"[bold]Dataset[/] {made.name} ({made.dataset_id}): {made.records} cases from {made.sampled} sampled "
              f"of {made.matched} matching traces; {made.with_expectations} carry ratings or expectations",
              highlight=False)
    table = Table(title="Strata")
    for column in ("agent", "tool or prompt", "status", "rating", "available", "taken"):
        table.add_column(column, justify="right" if column in ("available", "taken") else "left")
    for s in made.strata:
        table.add_row(s.agent, s.source, s.status, s.rating, str(s.available), str(s.taken))
    out.print(table)
    out.print(f"evaluate it with: insight-mcp evaluate agent <prompt>@production --dataset {made.name}",
              highlight=False, markup=False)


@evaluate_app.command("detections")
def detections_command(
    ctx: typer.Context,
    labels: LabelsOpt = "generated",
    since: Annotated[str | None, typer.Option(help="ISO start; default an hour before the first label.")] = None,
    until: Annotated[str | None, typer.Option(help="ISO end (exclusive); default after the latest event.")] = None,
    min_severity: SeverityOpt = Severity.medium,
    as_json: JsonOpt = False,
) -> None:
    """Score the detection rules on labelled incidents: precision, recall and F1, per category and rule."""
    from insight_mcp.agents.evaluation.service import evaluate_detections
    from insight_mcp.agents.security.service import SecurityAgent

    settings = settings_of(ctx)
    with progress(not as_json, "evaluating detections") as step:
        result = _run(settings, lambda backend: evaluate_detections(
            settings, SecurityAgent(settings, backend), labels_source=labels, since=since, until=until,
            min_severity=min_severity.value, progress=step), backend=True)
    if as_json:
        print_json(result.model_dump(mode="json"))
        return
    table = Table(title=f"Detections on {result.scores.labels} labelled incidents")
    for column in ("category", "precision", "recall", "f1"):
        table.add_column(column, justify="left" if column == "category" else "right")
    for name, score in [("overall", result.scores.overall), *result.scores.by_category.items()]:
        table.add_row(name, _fmt(score.precision), _fmt(score.recall), _fmt(score.f1))
    out.print(table)
    for missed in result.scores.missed:
        out.print(f"[yellow]missed[/] {missed.id} ({missed.category}, {missed.principal})", highlight=False)
    _tracking(result.mlflow_run_id, result.tracking)

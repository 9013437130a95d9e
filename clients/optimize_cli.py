"""`insight-mcp optimize`: optimize one registered prompt with the configured LM, champion against challenger; a
progress bar on a terminal, silence when piped, `--json` for programs."""

from __future__ import annotations

import enum
from typing import Annotated

import anyio
import typer
from rich.table import Table

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
from insight_mcp.clients.evaluate_cli import ScorerOpt
from insight_mcp.clients.schedule_cli import ConfigOpt, scheduled_once


class FrameworkOpt(enum.StrEnum):
    dspy = "dspy"
    textgrad = "textgrad"
    mlflow = "mlflow"


class OptimizerOpt(enum.StrEnum):
    gepa = "gepa"
    bootstrap_few_shot = "bootstrap_few_shot"
    miprov2 = "miprov2"
    tgd = "tgd"
    metaprompt = "metaprompt"


class SignificanceOpt(enum.StrEnum):
    sign = "sign"
    bootstrap = "bootstrap"


class PromotionOpt(enum.StrEnum):
    auto = "auto"
    approve = "approve"


# The options of a single run: --scheduled reads all of them from its configuration file instead.
_SINGLE_RUN = ("prompt", "framework", "optimizer", "dataset", "since", "experiment", "trace_tag", "scorer",
               "max_lm_calls", "max_minutes", "min_traces", "evaluation_threshold", "held_out_fraction",
               "significance", "alpha", "promotion")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def optimize_command(
    ctx: typer.Context,
    prompt: Annotated[str | None, typer.Option(help="The prompt to improve, e.g. insight.security_summary, or your "
                                                    "own agent's registered prompt.")] = None,
    framework: Annotated[FrameworkOpt, typer.Option(help="dspy, textgrad or mlflow.")] = FrameworkOpt.dspy,
    optimizer: Annotated[OptimizerOpt | None, typer.Option(help="dspy: gepa (default), bootstrap_few_shot, "
                                                                "miprov2; textgrad: tgd; mlflow: metaprompt "
                                                                "(default), gepa.")] = None,
    dataset: Annotated[str | None, typer.Option(help="An MLflow dataset's name or id (d-…), or a JSONL file.")]
    = None,
    since: Annotated[str | None, typer.Option(help="Or learn from the prompt's traces since this ISO time (UTC).")]
    = None,
    experiment: Annotated[str | None, typer.Option(help="With --since, for your own agent's prompt: the MLflow "
                                                       "experiment its traces are in.")] = None,
    trace_tag: Annotated[list[str] | None, typer.Option(help="With --since: KEY=VALUE, a trace tag selecting the "
                                                             "agent's traces (repeatable).")] = None,
    scorer: Annotated[list[ScorerOpt] | None, typer.Option(help="A scorer (repeatable); default validity and "
                                                               "completeness for ours, validity and "
                                                               "expected_response for your own prompt.")] = None,
    max_lm_calls: Annotated[int, typer.Option(min=4, max=100_000, help="Most LM calls in all.")] = 300,
    max_minutes: Annotated[float, typer.Option(min=0.01, max=1440, help="Longest search.")] = 15.0,
    min_traces: Annotated[int, typer.Option(min=1, help="Fewer usable cases: nothing is optimized.")] = 20,
    evaluation_threshold: Annotated[float, typer.Option(min=0, max=1, help="Held-out score a candidate must "
                                                                           "reach.")] = 0.7,
    held_out_fraction: Annotated[float, typer.Option(min=0.1, max=0.9, help="Share of cases held out.")] = 0.4,
    significance: Annotated[SignificanceOpt, typer.Option(help="The paired test a win must pass.")]
    = SignificanceOpt.sign,
    alpha: Annotated[float, typer.Option(min=0.0001, max=0.49, help="Significance level.")] = 0.05,
    promotion: Annotated[PromotionOpt, typer.Option(help="auto: promote a winner; approve: leave it under "
                                                         "`candidate`.")] = PromotionOpt.auto,
    scheduled: Annotated[bool, typer.Option(
        "--scheduled", help="Optimize every monitored agent from its traces since the last scheduled run, as "
                            "optimization_config.yaml says (for cron or a Databricks Job).")] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Optimize a registered prompt with the configured LM (INSIGHT_LM) and promote the candidate only if it wins."""
    from pydantic import ValidationError

    from insight_mcp.agents.core.errors import CallerError
    from insight_mcp.agents.optimization.model import OptimizationRequest
    from insight_mcp.agents.optimization.service import optimize_prompt

    settings = settings_of(ctx)
    if scheduled:
        given = [f"--{name.replace('_', '-')}" for name in _SINGLE_RUN  # typer vendors click: compare names
                 if getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"]
        if given:
            fail(f"--scheduled takes every setting from the configuration file: leave out {', '.join(given)}")
        scheduled_once(settings, config, as_json=as_json)
        return
    if config is not None:
        fail("--config is the scheduled optimization's file: add --scheduled, or leave --config out")
    if not prompt:
        fail("give --prompt: the prompt to optimize, e.g. --prompt insight.security_summary; or --scheduled to "
             "optimize every monitored agent as optimization_config.yaml says")
    fields = {"prompt": prompt, "framework": framework.value, "optimizer": optimizer.value if optimizer else None,
              "dataset": dataset, "since": since, "max_lm_calls": max_lm_calls, "max_minutes": max_minutes,
              "min_traces": min_traces, "evaluation_threshold": evaluation_threshold,
              "held_out_fraction": held_out_fraction, "significance": significance.value, "alpha": alpha,
              "promotion": promotion.value}
    if scorer:
        fields["scorers"] = [s.value for s in scorer]
    fields |= {"experiment": experiment, "trace_tags": tag_pairs(trace_tag, "--trace-tag")}
    try:
        request = OptimizationRequest(**fields)
    except ValidationError as exc:
        fail("; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors()))
    quiet_mlflow()
    with progress(not as_json, f"optimizing {request.prompt}") as step:
        try:
            result = anyio.run(lambda: optimize_prompt(settings, request, progress=step))
        except CallerError as exc:  # OptimizationError is one: a message written for a person
            fail(str(exc))
    if as_json:
        print_json(result.model_dump(mode="json"))
        return
    table = Table(title=f"{result.prompt}: {result.framework} {result.optimizer} on {result.train_cases} training "
                        f"and {result.held_out_cases} held-out cases")
    for column in ("version", "role", "held-out score"):
        table.add_column(column, justify="right" if column == "held-out score" else "left")
    table.add_row(result.champion_version or "-", "champion (production)", _fmt(result.baseline_score))
    table.add_row(result.candidate_version or "-", "candidate", _fmt(result.candidate_score))
    out.print(table)
    if result.significance is not None:
        s = result.significance
        out.print(f"{s.test} test: p={s.p_value:.4g} ({s.wins} wins, {s.losses} losses, {s.ties} ties)",
                  highlight=False, markup=False)
    colour = "green" if result.promoted else "yellow"
    out.print(f"[bold {colour}]{result.outcome}[/]: ", end="", highlight=False)
    out.print(result.reason, highlight=False, markup=False)
    out.print(f"{result.lm_calls} of {result.max_lm_calls} LM calls, {result.seconds:g} s; {result.optimizer_note}",
              highlight=False, markup=False)
    if result.mlflow_run_id:
        out.print(f"MLflow run {result.mlflow_run_id} in experiment insight-optimization", highlight=False)
    else:
        out.print(f"MLflow tracking {result.tracking}", highlight=False, markup=False)

"""What an optimization is asked for and what it answers: the models at the boundary of every caller (tools, CLI)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from insight_mcp.agents.core.timestamps import UtcDateTime, parse_utc
from insight_mcp.agents.evaluation.agent_eval import KINDS, ScorerName, check_prompt_name
from insight_mcp.agents.evaluation.curation import TraceFilter
from insight_mcp.agents.evaluation.runs import EvaluationError

EXPERIMENT = "insight-optimization"
CANDIDATE_ALIAS = "candidate"

Framework = Literal["dspy", "textgrad", "mlflow"]
OptimizerName = Literal["bootstrap_few_shot", "gepa", "miprov2", "tgd", "metaprompt"]
Significance = Literal["sign", "bootstrap"]
Promotion = Literal["auto", "approve"]
Outcome = Literal["promoted", "not_promoted", "awaiting_approval", "skipped"]

# Which optimizers each framework offers, the first being its default.
OPTIMIZERS: dict[str, tuple[str, ...]] = {
    "dspy": ("gepa", "bootstrap_few_shot", "miprov2"),
    "textgrad": ("tgd",),
    "mlflow": ("metaprompt", "gepa"),
}
DEFAULT_SCORERS: tuple[ScorerName, ...] = ("validity", "completeness")
USER_SCORERS: tuple[ScorerName, ...] = ("validity", "expected_response")


class OptimizationError(EvaluationError):
    """An optimization that cannot run as asked; the message says what to change.

    A CallerError, so every tool wrapper and job runner hands its message to the caller word for word; it stays an
    EvaluationError (a ValueError) for the callers that catch that.
    """


class OptimizationRequest(BaseModel):
    """One optimization: which prompt, how, learning from what, scored how, within which budget, promoted when."""

    prompt: str = Field(description="A registered prompt's name: one of ours (insight.security_summary, "
                                    "insight.finding_explanation, insight.network_narrative) or your own agent's, "
                                    "whose {{variables}} become the inputs it is optimized on.")
    framework: Framework = Field("dspy", description="dspy, textgrad or mlflow (mlflow.genai.optimize_prompts).")
    optimizer: OptimizerName | None = Field(
        None, description="dspy: gepa (default), bootstrap_few_shot, miprov2; textgrad: tgd; mlflow: metaprompt "
                          "(default) or gepa.")
    dataset: str | None = Field(None, description="An MLflow evaluation dataset (name or d-… id) or a JSONL file.")
    since: str | None = Field(None, description="Learn from this prompt's narrative traces since this ISO time "
                                                "instead of a dataset: well-rated answers become demonstrations, "
                                                "failures and poor ratings become negatives.")
    experiment: str | None = Field(None, description="With `since`, for your own agent: the MLflow experiment "
                                                     "its traces are in (required for a prompt not ours).")
    trace_tags: dict[str, str] = Field(default_factory=dict, description="With `since`: trace tags that select "
                                                                         "the agent's traces, e.g. "
                                                                         '{"app": "support-bot"}.')
    scorers: list[ScorerName] | None = Field(
        None, description="What a case's score is the mean of. Default: validity and completeness for ours; "
                          "validity and expected_response (against well-rated answers) for your own prompt.")
    max_lm_calls: int = Field(300, ge=4, le=100_000, description="Most LM calls in all: the search, and scoring the "
                                                                 "champion and the candidate on the held-out cases.")
    max_minutes: float = Field(15.0, gt=0, le=1440, description="Longest search; the held-out comparison follows.")
    min_traces: int = Field(20, ge=1, le=100_000, description="Fewer cases than this: nothing is optimized.")
    evaluation_threshold: float = Field(0.7, ge=0, le=1, description="The held-out score a candidate must reach.")
    held_out_fraction: float = Field(0.4, ge=0.1, le=0.9, description="Share of the cases kept out of training "
                                                                      "to compare champion and candidate on.")
    significance: Significance = Field("sign", description="The paired test a win must pass: a one-sided sign test "
                                                           "or a paired bootstrap of the mean difference.")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="A win is significant when the p-value is below it.")
    promotion: Promotion = Field("auto", description="auto: a winner becomes production; approve: it waits under "
                                                     "`candidate` until a person promotes it.")
    max_cases: int = Field(200, ge=2, le=10_000, description="Most cases read from the dataset or traces.")
    workers: int = Field(4, ge=1, le=32, description="LM calls in flight at once while scoring.")
    seed: int = Field(7, description="The same cases and seed give the same split.")

    @model_validator(mode="after")
    def _one_source_and_a_known_optimizer(self) -> OptimizationRequest:
        self.prompt = check_prompt_name(self.prompt)
        ours = self.prompt in KINDS
        if bool(self.dataset and self.dataset.strip()) == bool(self.since and self.since.strip()):
            raise ValueError("give exactly one training source: `dataset` (an evaluation dataset or JSONL file) or "
                             "`since` (this prompt's traces since a time)")
        if self.since and self.since.strip():
            try:
                parse_utc(self.since)
            except ValueError:
                raise ValueError(f"since {self.since[:40]!r} is not an ISO date or time such as 2026-11-14 or "
                                 "2026-11-14T08:00:00Z") from None
        allowed = OPTIMIZERS[self.framework]
        if self.optimizer is None:
            self.optimizer = allowed[0]  # type: ignore[assignment]
        elif self.optimizer not in allowed:
            raise ValueError(f"the {self.framework} framework offers {', '.join(allowed)}, not {self.optimizer}")
        if self.scorers is None:
            self.scorers = list(DEFAULT_SCORERS if ours else USER_SCORERS)
        if not self.scorers:
            raise ValueError("name at least one scorer")
        if not ours and "completeness" in self.scorers:
            raise ValueError(f"completeness checks the facts our own prompts must state; {self.prompt} is not one "
                             "of ours: use expected_facts, expected_response, validity or judges")
        if not ours and self.since and not (self.experiment and self.experiment.strip()):
            raise ValueError(f"{self.prompt} is not one of our prompts: to learn from its traces, name the MLflow "
                             "`experiment` your agent logs them to (and `trace_tags` that select them)")
        return self

    def trace_filter(self) -> TraceFilter:
        """Which traces a `since` source curates: ours by their prompt tag, a user's agent by experiment and tags."""
        prompt = self.prompt if self.prompt in KINDS and not self.experiment else None
        return TraceFilter(prompt=prompt, since=self.since, experiment=self.experiment, tags=self.trace_tags)

    @property
    def traces_described(self) -> str:
        """Whose traces, in words."""
        if self.experiment:
            tags = ", ".join(f"{k}={v}" for k, v in sorted(self.trace_tags.items()))
            return f"traces in experiment {self.experiment}" + (f" tagged {tags}" if tags else "")
        return f"traces of {self.prompt}"

    @property
    def scorer_names(self) -> list[str]:
        """The scorers, after validation filled in the default."""
        return list(self.scorers or ())

    @property
    def source(self) -> str:
        """The training source in words."""
        return f"dataset {self.dataset}" if self.dataset else f"{self.traces_described} since {self.since}"


class SignificanceResult(BaseModel):
    """The paired comparison of champion and candidate on the same held-out cases."""

    test: Significance
    p_value: float = Field(description="Of the chosen test; one-sided, candidate better.")
    p_value_sign: float
    p_value_bootstrap: float
    alpha: float
    significant: bool
    pairs: int = Field(description="Held-out cases both versions were scored on.")
    wins: int = Field(description="Cases where the candidate scored higher.")
    losses: int
    ties: int
    mean_difference: float


class OptimizationResult(BaseModel):
    """What one optimization did: the versions compared, their held-out scores, the test, and whether it promoted."""

    prompt: str
    framework: Framework
    optimizer: OptimizerName
    outcome: Outcome
    promoted: bool
    reason: str = Field(description="Why it was, or was not, promoted.")
    source: str = Field(description="What it learned from.")
    champion_version: str | None = None
    candidate_version: str | None = None
    baseline_score: float | None = Field(None, description="The champion's mean held-out score (0-1).")
    candidate_score: float | None = None
    improvement_pct: float | None = Field(None, description="The candidate's gain over the champion, in percent.")
    evaluation_threshold: float
    significance: SignificanceResult | None = None
    cases: int = 0
    train_cases: int = 0
    held_out_cases: int = 0
    demonstrations: int = Field(0, description="Training cases with a good answer to learn from.")
    negatives: int = Field(0, description="Training cases that failed or were rated poorly.")
    lm_calls: int = 0
    max_lm_calls: int
    budget_exhausted: bool = False
    seconds: float = 0.0
    optimizer_note: str = Field("", description="What the optimizer did, in a line.")
    mlflow_run_id: str | None = None
    tracking: str = Field("pending", description="`logged`, or why the MLflow run was skipped.")

    def headline(self) -> str:
        """The job's closing message, so that a job list shows at a glance which candidate waits for a person."""
        if self.outcome == "awaiting_approval":
            return (f"awaiting approval: {self.prompt} version {self.candidate_version} waits under @candidate; "
                    f"promote it with the promote_prompt tool, or `insight-mcp call optimization promote_prompt "
                    f"'{{\"prompt\": \"{self.prompt}\", \"version\": \"{self.candidate_version}\"}}'`")
        if self.outcome == "promoted":
            return f"promoted: {self.prompt} version {self.candidate_version} is now @production"
        return f"{self.outcome.replace('_', ' ')}: {self.reason}"[:500]


class PromptVersionInfo(BaseModel):
    """One registered version of a prompt."""

    version: str
    aliases: list[str]
    created_at: UtcDateTime | None = None
    commit_message: str | None = None
    source: str | None = Field(None, description="builtin-default, optimization, or unset (registered by hand).")
    optimization_run_id: str | None = Field(None, description="The MLflow run of the optimization that made it.")
    tags: dict[str, str] = Field(default_factory=dict, description="Its insight.* tags.")


class PromptVersions(BaseModel):
    """A prompt's versions, newest first, with where its aliases point."""

    prompt: str
    production: str | None
    candidate: str | None
    total: int
    versions: list[PromptVersionInfo]


class AliasMove(BaseModel):
    """A promotion or rollback: which alias moved, from which version to which."""

    prompt: str
    alias: str
    version: str
    previous: str | None
    changed: bool = Field(description="False when the alias already pointed there.")
    message: str

"""What an optimization learns from: the cases of an evaluation dataset, or of a prompt's own traces since a time.

Traces are first curated into an MLflow evaluation dataset (`curate_dataset`: stratified, seeded, ratings become
expectations), so every optimization names the dataset it trained on. Each case is then sorted:

- a **demonstration** has a good answer to learn from: its `expected_response`, or the answer of a successful
  trace that nobody rated below 4. The answer must pass the narrative's own output checks, or it is not used.
- a **negative** failed (trace status ERROR, an answer the narrative rejected) or was rated 1-2. Its inputs still
  train (they are where the prompt does badly) and what people said joins the feedback, but its answer is never
  shown as an example.
- anything else (rated 3, or a dataset case with no answer) is a plain training case.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from insight_mcp.agents.core.mlflow_store import open_client, unreachable
from insight_mcp.agents.evaluation.agent_eval import (
    Case,
    CaseError,
    PromptKind,
    module_inputs,
    read_cases,
    validity_problem,
)
from insight_mcp.agents.evaluation.curation import curate_dataset, fluent_mlflow
from insight_mcp.agents.evaluation.runs import EvaluationError
from insight_mcp.agents.optimization.model import OptimizationError, OptimizationRequest
from insight_mcp.agents.settings import Settings

GOOD_RATING = 4
POOR_RATING = 2
MAX_LABEL_CHARS = 1500
_NO_TRACES = re.compile(r"^no traces", re.I)


@dataclass
class TrainingCase:
    """One case, with a good answer to learn from (a demonstration) or marked as a failure (a negative)."""

    case: Case
    label: str | None = None
    negative: bool = False
    note: str | None = None  # what a person said about an earlier answer to it


@dataclass
class TrainingData:
    """Every case an optimization may use, and where they came from."""

    source: str
    dataset_id: str | None
    cases: list[TrainingCase]

    @property
    def demonstrations(self) -> int:
        return sum(1 for c in self.cases if c.label)

    @property
    def negatives(self) -> int:
        return sum(1 for c in self.cases if c.negative)


def split(cases: list[TrainingCase], held_out_fraction: float, seed: int) -> tuple[list[TrainingCase],
                                                                                   list[TrainingCase]]:
    """(train, held-out): a seeded shuffle, at least two cases on each side; negatives spread over both."""
    rng = random.Random(seed)
    order = list(cases)
    rng.shuffle(order)
    order.sort(key=lambda c: c.negative)  # stable: each kind keeps its shuffled order, then deal them alternately
    negatives = [c for c in order if c.negative]
    others = [c for c in order if not c.negative]
    held = max(2, min(len(cases) - 2, round(len(cases) * held_out_fraction)))
    take_negative = round(held * len(negatives) / len(cases)) if cases else 0
    held_out = negatives[:take_negative] + others[:held - take_negative]
    train = negatives[take_negative:] + others[held - take_negative:]
    return train, held_out


def _rating(expectations: dict[str, Any]) -> int | None:
    value = expectations.get("rating")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 1 <= value <= 5:
        return round(value)
    return None


def _label(kind: PromptKind, inputs: dict[str, Any], answer: Any) -> str | None:
    """A good answer worth showing as an example: text that passes the narrative's own checks, else None."""
    if not isinstance(answer, str) or not answer.strip() or len(answer) > MAX_LABEL_CHARS:
        return None
    try:
        problem = validity_problem(kind, inputs, {"text": answer.strip(), "cited_finding_ids": []})
    except (CaseError, ValueError, TypeError, KeyError):
        return None
    return None if problem else answer.strip()


def training_case(kind: PromptKind, inputs: dict[str, Any], expectations: dict[str, Any],
                  outputs: Any = None, tags: dict[str, str] | None = None) -> TrainingCase:
    """Sort one record into a demonstration, a negative or a plain case (see the module docstring)."""
    from insight_mcp.agents.evaluation.user_prompts import answer_text

    tags = tags or {}
    rating = _rating(expectations)
    answer = answer_text(outputs)
    rejected = isinstance(outputs, dict) and outputs.get("accepted") is False
    negative = tags.get("insight.status") == "error" or rejected or (rating is not None and rating <= POOR_RATING)
    label = None
    expectations = dict(expectations)
    if not negative:
        expected = expectations.get("expected_response")
        if isinstance(expected, str) and expected.strip():
            label = _label(kind, inputs, expected)
        elif answer is not None and (rating is None or rating >= GOOD_RATING):
            label = _label(kind, inputs, answer)
            if label is not None and rating is not None:  # a person rated it good: the answer to expect
                expectations["expected_response"] = label
    note = None
    if rating is not None:
        comment = expectations.get("rating_comment")
        note = f"a person rated an earlier answer {rating}/5" + (f": {str(comment)[:300]}" if comment else "")
    case = Case(inputs=inputs, expectations={k: v for k, v in expectations.items()
                                             if k not in ("rating", "rating_comment")})
    return TrainingCase(case=case, label=label, negative=negative, note=note)


def _records(settings: Settings, dataset_id: str, limit: int) -> list[Any]:
    try:
        client = open_client(settings.tracking_uri)
        with fluent_mlflow(settings.tracking_uri):
            return list(client.get_dataset(dataset_id).records)[:limit]
    except Exception as exc:
        raise OptimizationError(unreachable(exc)) from None


def _usable(kind: PromptKind, inputs: dict[str, Any]) -> bool:
    try:
        module_inputs(inputs, kind)
    except CaseError:
        return False
    return True


def load_training(settings: Settings, request: OptimizationRequest, kind: PromptKind,
                  progress: Callable[[float, str], None] | None = None) -> TrainingData:
    """The request's cases, sorted; a traces source is curated into a dataset first (its id is kept)."""
    say = progress or (lambda fraction, message: None)
    if request.dataset:
        name, dataset_id, cases = read_cases(settings, request.dataset, request.max_cases)
        if dataset_id is None:  # a JSONL file: expectations only
            made = [training_case(kind, c.inputs, c.expectations) for c in cases if _usable(kind, c.inputs)]
            return TrainingData(source=f"file {name}", dataset_id=None, cases=made)
        source = f"dataset {name} ({dataset_id})"
    else:
        since = request.since or ""
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        short = request.prompt.removeprefix("insight.").replace("_", "-")[:60]
        try:
            curated = curate_dataset(settings, name=f"insight-opt-{short}-{stamp}",
                                     trace_filter=request.trace_filter(),
                                     size=request.max_cases, seed=request.seed,
                                     progress=lambda f, m: say(f * 0.8, m))
        except EvaluationError as exc:
            if _NO_TRACES.match(str(exc)) or "no traces yet" in str(exc):
                return TrainingData(source=f"{request.traces_described} since {since} (none)", dataset_id=None,
                                    cases=[])
            raise
        dataset_id = curated.dataset_id
        source = f"{request.traces_described} since {since}, curated into dataset {curated.name} ({dataset_id})"
    records = _records(settings, dataset_id, request.max_cases)
    made = []
    for record in records:
        inputs = record.inputs or {}
        if inputs and _usable(kind, inputs):
            made.append(training_case(kind, inputs, dict(record.expectations or {}), record.outputs,
                                      dict(record.tags or {})))
    return TrainingData(source=source, dataset_id=dataset_id, cases=made)

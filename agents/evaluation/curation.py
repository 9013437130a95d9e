"""Evaluation datasets curated from traces: the calls people rated, failed or simply made, sampled to stay fair.

`curate_dataset` reads the traces of served tool calls (experiment `insight-mcp`) and of the LM-written narrative
parts (`insight-narrative`), filtered by agent, tool or prompt, time window, outcome and rating. It pages through
them without spans, groups them into strata (agent, tool or prompt, status, rating bucket), and draws a seeded
sample that keeps each stratum's share while giving every stratum at least one case when the size allows: rare
failures and bad ratings are exactly what an optimizer must see. Only the sampled traces are then read whole.

Each case keeps the call's inputs and its answer (`outputs`); its expectations are what people said about it: the
latest `rating` feedback (1-5) with its comment, and every `expectation` assessment by name (such as
`expected_response`). The dataset's tags record the filter, the seed and the strata, so a later optimization can
say exactly what it trained on.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import random
import re
import sys
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from insight_mcp.agents.core.feedback import RATING
from insight_mcp.agents.core.mlflow_store import experiment_id, failure, open_client, unreachable
from insight_mcp.agents.core.timestamps import parse_utc, rfc3339
from insight_mcp.agents.evaluation.runs import EvaluationError
from insight_mcp.agents.evaluation.service import EXPERIMENT
from insight_mcp.agents.narrative.writer import NARRATIVE_EXPERIMENT
from insight_mcp.agents.settings import Settings
from insight_mcp.agents.version import VERSION

PAGE_SIZE = 500
MAX_SCAN = 50_000
MAX_SIZE = 10_000
FETCH_BATCH = 100
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")
_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_FLUENT = threading.RLock()

Status = Literal["any", "ok", "error"]
RatingBucket = Literal["unrated", "low", "mid", "high"]


@contextlib.contextmanager
def fluent_mlflow(tracking_uri: str) -> Iterator[Any]:
    """MLflow's module-level API on our store, one user at a time: datasets and genai.evaluate read globals."""
    import mlflow

    with _FLUENT:
        if mlflow.get_tracking_uri() != tracking_uri:
            mlflow.set_tracking_uri(tracking_uri)
        yield mlflow


class TraceFilter(BaseModel):
    """Which traces may become cases; every field left unset matches everything."""

    agent: str | None = Field(None, description="The traces' `insight.agent` tag: a server name such as "
                                                "`security`, or `narrative` for the LM-written parts.")
    tool: str | None = Field(None, description="The `insight.tool` tag: one tool's calls.")
    prompt: str | None = Field(None, description="The `insight.prompt` tag: one narrative prompt's calls.")
    since: str | None = Field(None, description="ISO date or timestamp (UTC): traces that started at or after it.")
    until: str | None = Field(None, description="ISO date or timestamp (UTC): traces that started before it.")
    status: Status = Field("any", description="`ok` for answers, `error` for failures, `any` for both.")
    min_rating: int | None = Field(None, ge=1, le=5, description="Only traces rated at least this (1-5).")
    max_rating: int | None = Field(None, ge=1, le=5, description="Only traces rated at most this (1-5).")
    rated: bool = Field(False, description="Only traces someone rated.")
    experiment: str | None = Field(None, description="Read this MLflow experiment (a user's own agent's) instead "
                                                     "of ours (insight-mcp and insight-narrative).")
    tags: dict[str, str] = Field(default_factory=dict, description="Trace tags that must all match, e.g. "
                                                                   '{"app": "support-bot"}: any agent\'s tags.')


class Stratum(BaseModel):
    """One group of similar traces: how many matched and how many were taken."""

    agent: str
    source: str = Field(description="The tool or prompt the traces are calls of.")
    status: str
    rating: RatingBucket
    available: int
    taken: int


class CuratedDataset(BaseModel):
    """The dataset made, what it was made from, and how the sample was drawn."""

    dataset_id: str
    name: str
    records: int = Field(description="Cases in the dataset; calls with identical inputs are kept once.")
    matched: int = Field(description="Traces that matched the filter.")
    scanned_all: bool = Field(description="False when more than the scan limit matched and the newest were used.")
    sampled: int
    with_expectations: int = Field(description="Sampled cases that carry a rating, comment or expectation.")
    size: int
    seed: int
    experiments: list[str]
    filter: TraceFilter
    strata: list[Stratum]


@dataclass
class _Candidate:
    trace_id: str
    agent: str
    source: str
    status: str
    rating: int | None
    comment: str | None
    expectations: dict[str, Any] = field(default_factory=dict)

    @property
    def bucket(self) -> RatingBucket:
        return rating_bucket(self.rating)

    @property
    def stratum(self) -> tuple[str, str, str, str]:
        return self.agent, self.source, self.status, self.bucket


def rating_bucket(rating: int | None) -> RatingBucket:
    """unrated, low (1-2), mid (3) or high (4-5)."""
    if rating is None:
        return "unrated"
    return "low" if rating <= 2 else "mid" if rating == 3 else "high"


def allocate(available: dict[Any, int], size: int) -> dict[Any, int]:
    """How many to take from each stratum: proportional shares, at least one each while the size allows."""
    total = sum(available.values())
    if total <= size:
        return dict(available)
    keys = sorted((k for k, n in available.items() if n > 0), key=str)
    quota = {k: size * available[k] / total for k in keys}
    take = {k: min(available[k], math.floor(quota[k])) for k in keys}
    if len(keys) <= size:
        for k in keys:
            take[k] = max(take[k], 1)
    while sum(take.values()) > size:  # the minimum of one pushed us over: take back from the largest shares
        largest = max((k for k in keys if take[k] > 1), key=lambda k: (take[k] - quota[k], take[k], str(k)))
        take[largest] -= 1
    while sum(take.values()) < size:
        room = [k for k in keys if take[k] < available[k]]
        best = max(room, key=lambda k: (quota[k] - take[k], str(k)))
        take[best] += 1
    return take


def stratified_sample(candidates: list[_Candidate], size: int, seed: int) -> tuple[list[_Candidate], list[Stratum]]:
    """A seeded, stratified sample: the same traces, size and seed always give the same cases."""
    groups: dict[tuple[str, str, str, str], list[_Candidate]] = defaultdict(list)
    for candidate in candidates:
        groups[candidate.stratum].append(candidate)
    take = allocate({key: len(items) for key, items in groups.items()}, size)
    rng = random.Random(seed)
    chosen: list[_Candidate] = []
    strata: list[Stratum] = []
    for key in sorted(groups):
        items = sorted(groups[key], key=lambda c: c.trace_id)
        picked = rng.sample(items, take[key])
        chosen += picked
        agent, source, status, bucket = key
        strata.append(Stratum(agent=agent, source=source, status=status, rating=bucket,  # type: ignore[arg-type]
                              available=len(items), taken=len(picked)))
    return chosen, strata


def _checked_name(value: str | None, what: str) -> str | None:
    if value is None or not value.strip():
        return None
    value = value.strip()
    if not _NAME.match(value):
        raise EvaluationError(f"{what} {value[:80]!r} is not a name: use letters, digits and _ . : - only")
    return value


def _checked_experiment(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    value = value.strip()
    if len(value) > 500 or not value.isprintable() or "'" in value:
        raise EvaluationError(f"experiment {value[:80]!r} is not an experiment name (printable, no quotes, at most "
                              "500 characters)")
    return value


def _checked_tags(tags: dict[str, str]) -> dict[str, str]:
    """Tag filters the store can match exactly: names of printable text, values without quotes."""
    checked = {}
    for key, value in tags.items():
        key, value = str(key).strip(), str(value)
        if not key or len(key) > 250 or not key.isprintable() or "`" in key:
            raise EvaluationError(f"tag {key[:80]!r} is not a tag name (printable, no backticks, at most 250)")
        if len(value) > 250 or not value.isprintable() or "'" in value:
            raise EvaluationError(f"the value of tag {key[:80]!r} cannot be matched: printable, no quotes, at "
                                  "most 250 characters")
        checked[key] = value
    if len(checked) > 20:
        raise EvaluationError("at most 20 tags can be matched at once")
    return checked


def _millis(value: str | None, what: str) -> int | None:
    if value is None or not value.strip():
        return None
    try:
        return int(parse_utc(value).replace(tzinfo=dt.UTC).timestamp() * 1000)
    except ValueError:
        raise EvaluationError(f"{what} {value[:40]!r} is not an ISO date or timestamp such as 2026-11-14 or "
                              "2026-11-14T08:00:00Z") from None


def filter_string(flt: TraceFilter) -> str:
    """The MLflow trace filter for the parts the store can filter on (timestamps as integers, never dates)."""
    parts = []
    for tag, value in (("insight.agent", flt.agent), ("insight.tool", flt.tool), ("insight.prompt", flt.prompt),
                       *sorted(flt.tags.items())):
        if value:
            parts.append(f"tag.`{tag}` = '{value}'")
    since, until = _millis(flt.since, "since"), _millis(flt.until, "until")
    if since is not None:
        parts.append(f"trace.timestamp_ms >= {since}")
    if until is not None:
        parts.append(f"trace.timestamp_ms < {until}")
    if flt.status != "any":
        parts.append(f"trace.status = '{'OK' if flt.status == 'ok' else 'ERROR'}'")
    if flt.min_rating is not None:
        parts.append(f"feedback.{RATING} >= {flt.min_rating}")
    if flt.max_rating is not None:
        parts.append(f"feedback.{RATING} <= {flt.max_rating}")
    return " AND ".join(parts)


def checked_filter(flt: TraceFilter) -> TraceFilter:
    """The filter with its names and times checked; EvaluationError says what is wrong."""
    flt = flt.model_copy(update={"agent": _checked_name(flt.agent, "agent"), "tool": _checked_name(flt.tool, "tool"),
                                 "prompt": _checked_name(flt.prompt, "prompt"),
                                 "experiment": _checked_experiment(flt.experiment), "tags": _checked_tags(flt.tags)})
    since, until = _millis(flt.since, "since"), _millis(flt.until, "until")
    if since is not None and until is not None and since >= until:
        raise EvaluationError("since must be before until")
    if flt.min_rating is not None and flt.max_rating is not None and flt.min_rating > flt.max_rating:
        raise EvaluationError("min_rating must not be above max_rating")
    return flt


def describe_filter(flt: TraceFilter) -> str:
    """The filter in words, for messages."""
    said = [f"{k}={v}" for k, v in flt.model_dump().items() if v not in (None, False, "any", {})]
    return ", ".join(said) if said else "no filter"


def latest_rating(info: Any) -> tuple[int | None, str | None, dict[str, Any]]:
    """(latest valid rating, its comment, expectation assessments by name) of one trace."""
    rating: tuple[int, str | None] | None = None
    newest = -1
    expectations: dict[str, Any] = {}
    for assessment in sorted(info.assessments or [], key=lambda a: getattr(a, "create_time_ms", 0) or 0):
        if getattr(assessment, "valid", True) is False:
            continue
        if getattr(assessment, "expectation", None) is not None:
            expectations[assessment.name] = assessment.value
            continue
        if assessment.name != RATING or getattr(assessment, "feedback", None) is None:
            continue
        value = assessment.value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 1 <= value <= 5:
            created = getattr(assessment, "create_time_ms", 0) or 0
            if created >= newest:
                newest = created
                rating = (round(value), getattr(assessment, "rationale", None))
    return (rating[0], rating[1], expectations) if rating else (None, None, expectations)


def _candidate(trace: Any) -> _Candidate:
    info = trace.info
    tags = info.tags or {}
    rating, comment, expectations = latest_rating(info)
    state = str(getattr(info.state, "value", info.state))
    return _Candidate(
        trace_id=info.trace_id, agent=tags.get("insight.agent", "unknown"),
        source=tags.get("insight.tool") or tags.get("insight.prompt") or tags.get("mlflow.traceName", "unknown"),
        status="error" if state == "ERROR" else "ok", rating=rating, comment=comment, expectations=expectations,
    )


def _keep(candidate: _Candidate, flt: TraceFilter) -> bool:
    """The checks the store cannot make: the latest rating (not any rating) must be in range."""
    if flt.rated or flt.min_rating is not None or flt.max_rating is not None:
        if candidate.rating is None:
            return False
        if flt.min_rating is not None and candidate.rating < flt.min_rating:
            return False
        if flt.max_rating is not None and candidate.rating > flt.max_rating:
            return False
    return True


def _record(candidate: _Candidate, trace: Any) -> dict[str, Any]:
    root = trace.data._get_root_span() if trace is not None else None
    inputs = root.inputs if root is not None else None
    if not isinstance(inputs, dict):
        inputs = {} if inputs is None else {"input": inputs}
    outputs = root.outputs if root is not None else None
    expectations = dict(candidate.expectations)
    if candidate.rating is not None:
        expectations["rating"] = candidate.rating
        if candidate.comment:
            expectations["rating_comment"] = candidate.comment
    record: dict[str, Any] = {
        "inputs": inputs,
        "expectations": expectations,
        "tags": {"insight.agent": candidate.agent, "insight.source": candidate.source,
                 "insight.status": candidate.status, "insight.rating": candidate.bucket},
        "source": {"source_type": "TRACE", "source_data": {"trace_id": candidate.trace_id}},
    }
    if outputs is not None:
        record["outputs"] = outputs if isinstance(outputs, dict) else {"output": outputs}
    return record


def _flush_local_traces() -> None:
    """Traces this process wrote (the narrative's) must be in the store before we read: flush MLflow's queue."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        with contextlib.suppress(Exception):
            mlflow.flush_trace_async_logging()


def curate_dataset(
    settings: Settings, *, name: str | None = None, trace_filter: TraceFilter | None = None, size: int = 200,
    seed: int = 7, progress: Callable[[float, str], None] | None = None,
) -> CuratedDataset:
    """Sample matching traces into a new MLflow evaluation dataset, tagged with the filter that chose them."""
    say = progress or (lambda fraction, message: None)
    flt = checked_filter(trace_filter or TraceFilter())
    if not 1 <= size <= MAX_SIZE:
        raise EvaluationError(f"size must be from 1 to {MAX_SIZE}")
    now = dt.datetime.now(dt.UTC)
    name = (name or "").strip() or f"insight-traces-{flt.agent or 'all'}-{now:%Y%m%dT%H%M%S}"
    if not _DATASET_NAME.match(name):
        raise EvaluationError(f"dataset name {name[:80]!r}: use letters, digits and _ . - only (at most 100)")
    query = filter_string(flt)

    say(0.02, "opening the tracking store")
    _flush_local_traces()
    wanted = (flt.experiment,) if flt.experiment else (settings.tracing.experiment, NARRATIVE_EXPERIMENT)
    try:
        client = open_client(settings.tracking_uri)
        experiments = {}
        for experiment in wanted:
            found = client.get_experiment_by_name(experiment)
            if found is not None:
                experiments[experiment] = str(found.experiment_id)
        taken = client.search_datasets(filter_string=f'name = "{name}"', max_results=1)
    except Exception as exc:
        raise EvaluationError(unreachable(exc)) from None
    if taken:
        raise EvaluationError(f"a dataset named {name!r} exists already ({taken[0].dataset_id}): choose another "
                              "name, or evaluate that one")
    if flt.experiment and not experiments:
        raise EvaluationError(f"no MLflow experiment is named {flt.experiment!r}: name the experiment your agent "
                              "logs its traces to")
    if not experiments:
        raise EvaluationError(f"no traces yet: neither {settings.tracing.experiment!r} nor {NARRATIVE_EXPERIMENT!r} "
                              "exists in MLflow; serve the tools with tracing on (INSIGHT_TRACING__ENABLED) and use "
                              "them, or run an analysis with an LM")

    say(0.05, "reading traces")
    candidates: list[_Candidate] = []
    matched = 0
    token = None
    scanned_all = True
    try:
        while True:
            page = client.search_traces(locations=list(experiments.values()), filter_string=query or None,
                                        max_results=PAGE_SIZE, page_token=token, include_spans=False,
                                        order_by=["timestamp_ms DESC"])
            for trace in page:
                candidate = _candidate(trace)
                if _keep(candidate, flt):
                    candidates.append(candidate)
            matched = len(candidates)
            token = getattr(page, "token", None)
            say(min(0.05 + 0.4 * matched / MAX_SCAN, 0.45), f"read {matched} matching traces")
            if not token:
                break
            if matched >= MAX_SCAN:
                scanned_all = False
                break
    except EvaluationError:
        raise
    except Exception as exc:
        raise EvaluationError(f"searching traces failed ({failure(exc)}); check the filter") from None
    if not candidates:
        raise EvaluationError(
            f"no traces match ({describe_filter(flt)}) in {', '.join(experiments)}: widen the window, drop a "
            "filter, or rate some answers first (rate_answer) when filtering on ratings")

    chosen, strata = stratified_sample(candidates, size, seed)
    say(0.5, f"reading {len(chosen)} sampled traces whole")
    records = []
    try:
        from mlflow.tracing.client import TracingClient

        tracing = TracingClient(tracking_uri=settings.tracking_uri)
        for start in range(0, len(chosen), FETCH_BATCH):
            batch = chosen[start:start + FETCH_BATCH]
            full = {t.info.trace_id: t for t in tracing.batch_get_traces([c.trace_id for c in batch])}
            records += [_record(c, full.get(c.trace_id)) for c in batch]
            say(0.5 + 0.3 * (start + len(batch)) / len(chosen), f"read {start + len(batch)} of {len(chosen)}")
    except Exception as exc:
        raise EvaluationError(f"reading the sampled traces failed ({failure(exc)}); try again") from None

    say(0.85, f"writing dataset {name}")
    tags = {
        "insight.kind": "curated_traces", "insight.version": VERSION, "insight.created_at": rfc3339(now),
        "insight.filter": json.dumps(flt.model_dump(), sort_keys=True), "insight.filter_string": query,
        "insight.experiments": ",".join(experiments), "insight.size": str(size), "insight.seed": str(seed),
        "insight.matched": str(matched), "insight.sampled": str(len(chosen)),
        "insight.strata": json.dumps([s.model_dump() for s in strata], separators=(",", ":"))[:5000],
        **{f"insight.filter.{k}": str(v) for k, v in flt.model_dump().items() if v not in (None, False, "any", {})},
    }
    try:
        evaluation = experiment_id(client, EXPERIMENT, settings.mlflow_artifacts / EXPERIMENT)
        with fluent_mlflow(settings.tracking_uri):
            dataset = client.create_dataset(name=name, experiment_id=[evaluation, *experiments.values()], tags=tags)
            for start in range(0, len(records), PAGE_SIZE):
                dataset.merge_records(records[start:start + PAGE_SIZE])
            stored = len(client.get_dataset(dataset.dataset_id).records)
    except Exception as exc:
        raise EvaluationError(f"writing the dataset failed ({failure(exc)})") from None
    say(1.0, "done")
    return CuratedDataset(
        dataset_id=dataset.dataset_id, name=name, records=stored, matched=matched, scanned_all=scanned_all,
        sampled=len(chosen), with_expectations=sum(1 for r in records if r["expectations"]), size=size, seed=seed,
        experiments=list(experiments), filter=flt, strata=strata,
    )

"""Ratings of insights: a person's 1-5 and comment, stored as an MLflow feedback assessment on the insight's trace.

What can be rated, and the trace the rating lands on:
- a tool answer, by the call id in its `_meta["insight-mcp/call_id"]`: the call's trace (tag `insight.call_id`);
- a report, by its report id: the trace of its executive summary when an LM wrote it (experiment
  `insight-narrative`), else the analysis trace (experiment `insight-analysis`);
- one finding's explanation, by the finding id (`f-...`): the newest LM explanation of that finding.
The supervisor's average-rating trigger reads exactly these assessments (name `rating`).
"""

from __future__ import annotations

import re
import time
from typing import Any

from pydantic import BaseModel, Field

from insight_mcp.agents.core.mlflow_store import open_client, unreachable

RATING = "rating"


class FeedbackError(ValueError):
    """The rating could not be stored; the message says what to do."""


class RatingReceipt(BaseModel):
    """The stored rating, and the answer it rates."""

    call_id: str
    trace_id: str
    server: str | None
    tool: str | None
    rating: int = Field(ge=1, le=5)
    comment: str | None
    rated_by: str
    assessment_id: str


ANALYSIS_EXPERIMENT = "insight-analysis"
NARRATIVE_EXPERIMENT = "insight-narrative"
_REPORT_ID = re.compile(r"[0-9a-f]{32}")
_FINDING_ID = re.compile(r"f-[0-9a-f]{20}")


def _targets(insight_id: str, tool_experiment: str) -> list[tuple[str, str]]:
    """Where the trace of this kind of id lives: (experiment, filter), most specific first."""
    if _FINDING_ID.fullmatch(insight_id):
        return [(NARRATIVE_EXPERIMENT, f"tag.`insight.finding_id` = '{insight_id}'")]
    if _REPORT_ID.fullmatch(insight_id):
        return [(NARRATIVE_EXPERIMENT, f"tag.`insight.report_id` = '{insight_id}' AND "
                                       "tag.`insight.prompt` = 'insight.security_summary'"),
                (ANALYSIS_EXPERIMENT, f"tag.`insight.report_id` = '{insight_id}'")]
    if len(insight_id) <= 64 and insight_id.isalnum():
        return [(tool_experiment, f"tag.`insight.call_id` = '{insight_id}'")]
    raise FeedbackError("rate a tool answer by the id in its _meta['insight-mcp/call_id'] (e.g. 3f9c0a1b2d4e5f60), "
                        "a report by its report id, or a finding's explanation by its finding id (f-...)")


def rate_call(
    tracking_uri: str, experiment: str, call_id: str, rating: int, *, comment: str | None = None,
    rated_by: str = "anonymous", wait_seconds: float = 30.0,
) -> RatingReceipt:
    """Store a rating on the trace of one insight; wait a little for a trace the writer has not stored yet."""
    call_id = call_id.strip()
    if not (1 <= rating <= 5):
        raise FeedbackError("rating must be a whole number from 1 (useless) to 5 (excellent)")
    if not call_id:
        raise FeedbackError("give the id of what you rate: a call id, a report id or a finding id")
    targets = _targets(call_id, experiment)
    if comment is not None and len(comment) > 4000:
        raise FeedbackError("comment must be at most 4000 characters")
    try:
        from mlflow.entities import AssessmentSource, Feedback
        from mlflow.tracing.client import TracingClient

        client = open_client(tracking_uri)
        trace = None
        for name, filter_string in targets:
            found = client.get_experiment_by_name(name)
            if found is not None:
                trace = _find(client, found.experiment_id, filter_string, wait_seconds if len(targets) == 1 else 0)
            if trace is not None:
                break
        if trace is None:
            raise FeedbackError(
                f"nothing with id {call_id!r} in MLflow experiment {' or '.join(n for n, _ in targets)!r}: rate an "
                "answer of a served tool (its _meta carries the id) from a server that traces "
                "(INSIGHT_TRACING__ENABLED), or a report or finding of an analysis recorded in MLflow"
            )
        assessment = TracingClient(tracking_uri=tracking_uri).log_assessment(
            trace.info.trace_id,
            Feedback(name=RATING, value=rating, rationale=comment,
                     source=AssessmentSource(source_type="HUMAN", source_id=rated_by[:200])),
        )
    except FeedbackError:
        raise
    except Exception as exc:
        raise FeedbackError(unreachable(exc)) from None
    tags = trace.info.tags
    return RatingReceipt(call_id=call_id, trace_id=trace.info.trace_id, server=tags.get("insight.server"),
                         tool=tags.get("insight.tool") or tags.get("insight.prompt"), rating=rating, comment=comment,
                         rated_by=rated_by, assessment_id=assessment.assessment_id)


def _find(client: Any, experiment_id: str, filter_string: str, wait_seconds: float) -> Any:
    deadline = time.monotonic() + wait_seconds
    while True:
        found = client.search_traces(locations=[experiment_id], filter_string=filter_string, max_results=1,
                                     include_spans=False, order_by=["timestamp_ms DESC"])
        if found or time.monotonic() >= deadline:
            return found[0] if found else None
        time.sleep(0.5)

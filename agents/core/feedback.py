"""Ratings of answers: a person's 1-5 and comment, stored as an MLflow feedback assessment on the answer's trace.

Every answer carries its call id (`_meta["insight-mcp/call_id"]`), and its trace carries the same id as the tag
`insight.call_id`. The supervisor's average-rating trigger reads exactly these assessments (name `rating`).
"""

from __future__ import annotations

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


def rate_call(
    tracking_uri: str, experiment: str, call_id: str, rating: int, *, comment: str | None = None,
    rated_by: str = "anonymous", wait_seconds: float = 30.0,
) -> RatingReceipt:
    """Store a rating on the trace of one answer; wait a little for a trace the writer has not stored yet."""
    call_id = call_id.strip()
    if not (1 <= rating <= 5):
        raise FeedbackError("rating must be a whole number from 1 (useless) to 5 (excellent)")
    if not call_id or len(call_id) > 64 or not call_id.isalnum():
        raise FeedbackError("call_id must be the id in an answer's _meta['insight-mcp/call_id'], e.g. 3f9c0a1b2d4e5f60")
    if comment is not None and len(comment) > 4000:
        raise FeedbackError("comment must be at most 4000 characters")
    try:
        from mlflow.entities import AssessmentSource, Feedback
        from mlflow.tracing.client import TracingClient

        client = open_client(tracking_uri)
        found = client.get_experiment_by_name(experiment)
        trace = _find(client, found.experiment_id, call_id, wait_seconds) if found is not None else None
        if trace is None:
            raise FeedbackError(
                f"no answer with call id {call_id!r} in MLflow experiment {experiment!r}: rate an answer of a "
                "served tool (its _meta carries the id), from a server that traces (INSIGHT_TRACING__ENABLED)"
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
                         tool=tags.get("insight.tool"), rating=rating, comment=comment, rated_by=rated_by,
                         assessment_id=assessment.assessment_id)


def _find(client: Any, experiment_id: str, call_id: str, wait_seconds: float) -> Any:
    deadline = time.monotonic() + wait_seconds
    while True:
        found = client.search_traces(locations=[experiment_id], filter_string=f"tag.`insight.call_id` = '{call_id}'",
                                     max_results=1, include_spans=False)
        if found or time.monotonic() >= deadline:
            return found[0] if found else None
        time.sleep(0.5)

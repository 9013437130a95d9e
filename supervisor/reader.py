"""Reading only what is new: each check asks MLflow for traces that started since the last one, minus an overlap.

Traces are exported asynchronously and stamped with their start time, so a trace can land after the check that
covered its timestamp. Every read reaches back `overlap_seconds` before the newest start time seen, and the window
de-duplicates by trace id, so late traces are counted once and nothing is re-read beyond the overlap: a check costs
what the new traffic costs, not what the store holds. MLflow's aggregate trace metrics are not used (Databricks
managed tracking does not offer them).
"""

from __future__ import annotations

from typing import Any

from insight_mcp.agents.evaluation.curation import latest_rating
from insight_mcp.agents.supervision.config import MonitoredAgent
from insight_mcp.supervisor.window import Outcome

PAGE = 500


def filter_for(agent: MonitoredAgent, since_ms: int) -> str:
    """The search filter: the agent's tags and a start-time bound (an integer: date strings match nothing)."""
    parts = [f"trace.timestamp_ms >= {int(since_ms)}"]
    parts += [f"tag.`{key}` = '{value}'" for key, value in sorted(agent.tags.items())]
    return " AND ".join(parts)


def outcome(trace_info: Any) -> Outcome:
    """What the triggers need of one trace."""
    rating, _, _ = latest_rating(trace_info)
    state = str(getattr(trace_info.state, "value", trace_info.state))
    duration = getattr(trace_info, "execution_duration", None)
    return Outcome(trace_id=trace_info.trace_id, timestamp_ms=int(trace_info.request_time), error=state == "ERROR",
                   duration_ms=float(duration) if duration is not None else None,
                   rating=float(rating) if rating is not None else None)


def read_since(client: Any, experiment_id: str, agent: MonitoredAgent, since_ms: int) -> list[Outcome]:
    """Every trace of the agent that started at or after `since_ms`, page by page, without spans."""
    found: list[Outcome] = []
    token = None
    while True:
        page = client.search_traces(locations=[experiment_id], filter_string=filter_for(agent, since_ms),
                                    max_results=PAGE, include_spans=False, page_token=token,
                                    order_by=["timestamp_ms ASC"])
        found.extend(outcome(trace.info) for trace in page)
        token = getattr(page, "token", None)
        if not token:
            return found

"""An agent's rolling window of trace outcomes, and the decision whether its metrics have really slipped.

Each trace is kept once (by trace id) with what the triggers need: its start time, status, duration and latest
rating. A breach trips only with enough volume, and, for the error rate, only when it is significant: the Wilson
lower bound of the rate must pass the threshold, so that three errors in forty calls are not read as a 7.5% rate.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from pydantic import BaseModel, Field

from insight_mcp.agents.supervision.config import SupervisoryAgent, Triggers


@dataclass(frozen=True)
class Outcome:
    """What the triggers need of one trace."""

    trace_id: str
    timestamp_ms: int
    error: bool
    duration_ms: float | None
    rating: float | None


def wilson_lower(failures: int, total: int, z: float = 1.96) -> float:
    """The lower end of the Wilson score interval for a proportion: a rate the data supports with confidence."""
    if total == 0:
        return 0.0
    p = failures / total
    centre = p + z * z / (2 * total)
    margin = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return max(0.0, (centre - margin) / (1 + z * z / total))


class WindowMetrics(BaseModel):
    """The four trigger metrics over one window."""

    volume: int
    errors: int
    error_rate: float | None
    error_rate_lower_bound: float | None = Field(None, description="95% Wilson lower bound of the error rate.")
    ratings: int
    average_rating: float | None
    median_latency_seconds: float | None
    since_ms: int | None
    until_ms: int | None


class Verdict(BaseModel):
    """Whether the window trips, and why in words."""

    trips: bool
    reasons: list[str]
    test: str = Field(description="How significance was judged.")
    metrics: WindowMetrics


class RollingWindow:
    """Outcomes newer than the window's length, each counted once however often it is read."""

    def __init__(self, window_seconds: float) -> None:
        self.window_ms = int(window_seconds * 1000)
        self.outcomes: dict[str, Outcome] = {}

    def add(self, outcomes: list[Outcome]) -> int:
        """Add or refresh outcomes (a rating may arrive later); returns how many were new."""
        new = sum(1 for o in outcomes if o.trace_id not in self.outcomes)
        for outcome in outcomes:
            self.outcomes[outcome.trace_id] = outcome
        return new

    def trim(self, now_ms: int) -> None:
        """Forget what has left the window."""
        cutoff = now_ms - self.window_ms
        self.outcomes = {k: o for k, o in self.outcomes.items() if o.timestamp_ms >= cutoff}

    def metrics(self, z: float = 1.96) -> WindowMetrics:
        values = list(self.outcomes.values())
        errors = sum(o.error for o in values)
        ratings = [o.rating for o in values if o.rating is not None]
        durations = [o.duration_ms for o in values if o.duration_ms is not None]
        times = [o.timestamp_ms for o in values]
        return WindowMetrics(
            volume=len(values), errors=errors,
            error_rate=errors / len(values) if values else None,
            error_rate_lower_bound=wilson_lower(errors, len(values), z) if values else None,
            ratings=len(ratings), average_rating=statistics.fmean(ratings) if ratings else None,
            median_latency_seconds=statistics.median(durations) / 1000 if durations else None,
            since_ms=min(times) if times else None, until_ms=max(times) if times else None,
        )


def judge(metrics: WindowMetrics, triggers: Triggers, agent: SupervisoryAgent) -> Verdict:
    """Trip on any breached threshold, given the volume; the error rate must breach significantly."""
    test = (f"wilson lower bound (z={agent.confidence_z}) of the error rate" if agent.significance == "wilson"
            else "observed error rate")
    if metrics.volume < agent.min_traces_for_trigger:
        return Verdict(trips=False, test=test, metrics=metrics,
                       reasons=[f"{metrics.volume} traces in the window, fewer than min_traces_for_trigger "
                                f"({agent.min_traces_for_trigger})"])
    reasons = []
    rate = metrics.error_rate or 0.0
    judged = metrics.error_rate_lower_bound if agent.significance == "wilson" else rate
    if judged is not None and judged > triggers.error_rate_threshold:
        reasons.append(f"error rate {rate:.1%} ({metrics.errors}/{metrics.volume}; {test} {judged:.1%}) above "
                       f"{triggers.error_rate_threshold:.1%}")
    if metrics.average_rating is not None and metrics.average_rating < triggers.rating_threshold:
        reasons.append(f"average rating {metrics.average_rating:.2f} over {metrics.ratings} ratings below "
                       f"{triggers.rating_threshold}")
    latency = metrics.median_latency_seconds
    if latency is not None and latency > triggers.response_time_threshold:
        reasons.append(f"median response time {latency:.2f} s above {triggers.response_time_threshold} s")
    return Verdict(trips=bool(reasons), reasons=reasons or ["every metric within its threshold"], test=test,
                   metrics=metrics)

"""Prometheus metrics for `serve`: tool calls, errors and latency per tool, the last analysis, the alert outbox.

One registry per app, never the process-global one, so two apps in one process (tests) never share counts. The
analysis figures are read at scrape time from the newest JSON report, since `analyze` usually runs in another
process (cron, a job); the outbox depth is read from the state store the same way.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from insight_mcp.agents.settings import Settings

log = structlog.get_logger("insight_mcp.metrics")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _AnalysisCollector(Collector):
    """Findings by severity and the time of the newest analysis, and the outbox depth, read when scraped."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._cached: tuple[float, dict[str, Any]] | None = None

    def _latest(self) -> dict[str, Any] | None:
        path = self.settings.reports_dir / "latest.json"
        try:
            mtime = path.stat().st_mtime
            if self._cached is None or self._cached[0] != mtime:
                data = json.loads(path.read_text(encoding="utf-8"))
                self._cached = (mtime, {"counts": data["counts"], "generated_at": data["generated_at"]})
            return self._cached[1]
        except (OSError, ValueError, KeyError):
            return None

    def _outbox_depth(self) -> int | None:
        path: Path = self.settings.state_path
        if not path.exists():
            return 0
        try:
            from insight_mcp.agents.core.state import StateStore
            from insight_mcp.agents.reporting.alerts import outbox_depth

            return outbox_depth(StateStore(path))
        except Exception as exc:  # a scrape must answer even when the store is busy or broken
            log.warning("outbox_depth_unreadable", error=type(exc).__name__)
            return None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        latest = self._latest()
        findings = GaugeMetricFamily("insight_last_analysis_findings", "Findings of the newest analysis.",
                                     labels=["severity"])
        when = GaugeMetricFamily("insight_last_analysis_timestamp_seconds",
                                 "When the newest analysis report was generated (Unix time).")
        if latest is not None:
            for severity, n in latest["counts"]["by_severity"].items():
                findings.add_metric([severity], n)
            generated = dt.datetime.fromisoformat(latest["generated_at"].replace("Z", "+00:00"))
            when.add_metric([], generated.timestamp())
        yield findings
        yield when
        depth = self._outbox_depth()
        outbox = GaugeMetricFamily("insight_alert_outbox_depth", "Alerts waiting in the outbox for delivery.")
        if depth is not None:
            outbox.add_metric([], depth)
        yield outbox


class ServerMetrics:
    """The counters every tool call updates, and the registry `/metrics` renders."""

    def __init__(self, settings: Settings) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.calls = Counter("insight_tool_calls", "MCP tool calls by server, tool and outcome.",
                             ["server", "tool", "status"], registry=self.registry)
        self.errors = Counter("insight_tool_errors", "MCP tool calls that ended in an error.", ["server", "tool"],
                              registry=self.registry)
        self.latency = Histogram("insight_tool_latency_seconds", "MCP tool call latency.", ["server", "tool"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(_AnalysisCollector(settings))
        # The labelled series of each (server, tool, outcome), found once: looking them up is most of what a call
        # costs the metrics. Tools are declared, so this holds at most two entries a tool.
        self._series: dict[tuple[str, str, bool], tuple[Any, Any, Any]] = {}

    def observe(self, server: str, tool: str, seconds: float, failed: bool) -> None:
        """Count one call; never raises into the call it measures."""
        key = (server, tool, failed)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (
                self.calls.labels(server, tool, "error" if failed else "ok"),
                self.errors.labels(server, tool) if failed else None,
                self.latency.labels(server, tool),
            )
        calls, errors, latency = series
        calls.inc()
        if errors is not None:
            errors.inc()
        latency.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

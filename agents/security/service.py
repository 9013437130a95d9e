"""The Cyber Security Agent's front door: one lazily built engine per settings, and windows that default sensibly."""

from __future__ import annotations

import datetime as dt
import threading

from insight_mcp.agents.ingestion.backend import SystemTables
from insight_mcp.agents.ingestion.explore import InvalidArgument, resolve_window
from insight_mcp.agents.security.engine import DetectionEngine, DetectionRun
from insight_mcp.agents.security.model import CATEGORIES, SEVERITIES, Finding
from insight_mcp.agents.security.risk import FindingStore
from insight_mcp.agents.settings import Settings, SettingsError

DEFAULT_WINDOW = dt.timedelta(days=7)


class SecurityAgent:
    """Detections over one workspace: compiled once, run per window, findings remembered for get_finding."""

    def __init__(self, settings: Settings, backend: SystemTables) -> None:
        self.settings = settings
        self.backend = backend
        self.store = FindingStore()
        self._engine: DetectionEngine | None = None
        self._lock = threading.Lock()

    def engine(self) -> DetectionEngine:
        """Build the engine on first use: the workspace may be created after the server starts."""
        if self.settings.backend != "duckdb":
            raise SettingsError("detections run on the embedded workspace only (INSIGHT_BACKEND=duckdb)")
        with self._lock:
            if self._engine is None:
                self._engine = DetectionEngine(self.settings.workspace_path, self.settings.detections)
            return self._engine

    async def window(self, since: str | None, until: str | None) -> tuple[dt.datetime, dt.datetime]:
        """Default: the last seven days of audit data."""
        return await resolve_window(self.backend, "system.access.audit", "event_time", since, until,
                                    DEFAULT_WINDOW, self.settings.query)

    async def run(
        self,
        *,
        since: str | None = None,
        until: str | None = None,
        categories: list[str] | None = None,
        min_severity: str = "info",
        workspace_id: str | None = None,
        rule_ids: list[str] | None = None,
    ) -> DetectionRun:
        """Run detections and remember their findings."""
        bad = sorted(set(categories or []) - set(CATEGORIES))
        if bad:
            raise InvalidArgument(f"unknown categories {bad}; choose from {', '.join(CATEGORIES)}")
        if min_severity not in SEVERITIES:
            raise InvalidArgument(f"min_severity must be one of {', '.join(SEVERITIES)}")
        start, end = await self.window(since, until)
        engine = self.engine()
        try:
            run = await engine.run(start, end, categories=categories, min_severity=min_severity,
                                   workspace_id=workspace_id, rule_ids=rule_ids)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        self.store.add(run.findings)
        return run

    async def find(self, finding_id: str) -> Finding | None:
        """A finding by id; one this process has not seen yet is looked for in the default window.

        Ids are stable across runs, so an id from another process (a stdio client starts one per session) or
        from before a restart is found again as long as its finding falls in the last seven days of data.
        """
        finding = self.store.get(finding_id)
        if finding is None:
            await self.run()
            finding = self.store.get(finding_id)
        return finding

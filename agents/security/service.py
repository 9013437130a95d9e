"""The Cyber Security Agent's front door: one lazily built engine per settings, and windows that default sensibly."""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict

from insight_mcp.agents.ingestion.backend import SystemTables
from insight_mcp.agents.ingestion.explore import InvalidArgument, resolve_window
from insight_mcp.agents.security.engine import DetectionEngine, DetectionRun
from insight_mcp.agents.security.incidents import Incident, correlate
from insight_mcp.agents.security.model import CATEGORIES, SEVERITIES, Finding
from insight_mcp.agents.security.risk import FindingStore
from insight_mcp.agents.settings import Settings, SettingsError

DEFAULT_WINDOW = dt.timedelta(days=7)
MAX_INCIDENTS = 2000


class SecurityAgent:
    """Detections over one workspace: compiled once, run per window, findings remembered for get_finding."""

    def __init__(self, settings: Settings, backend: SystemTables) -> None:
        self.settings = settings
        self.backend = backend
        self.store = FindingStore()
        self._engine: DetectionEngine | None = None
        self._lock = threading.Lock()
        self._incidents: OrderedDict[str, Incident] = OrderedDict()  # the newest MAX_INCIDENTS, for get_incident

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

    async def incidents(self, *, since: str | None = None, until: str | None = None,
                        min_severity: str = "low") -> tuple[DetectionRun, list[Incident]]:
        """Every rule over the window, its findings correlated into incidents (remembered for get_incident)."""
        run = await self.run(since=since, until=until, min_severity="info")
        found = self.correlate(run.findings)
        wanted = SEVERITIES.index(min_severity) if min_severity in SEVERITIES else 0
        return run, [i for i in found if SEVERITIES.index(i.severity) >= wanted]

    def correlate(self, findings: list[Finding]) -> list[Incident]:
        """The incidents these findings raise with the engine's rules, remembered for get_incident."""
        rules = {rule_id: compiled.rule for rule_id, compiled in self.engine().rules.items()}
        found = correlate(findings, rules, self.settings.detections.incidents)
        with self._lock:
            for incident in found:
                self._incidents[incident.id] = incident
                self._incidents.move_to_end(incident.id)
            while len(self._incidents) > MAX_INCIDENTS:
                self._incidents.popitem(last=False)
        return found

    async def incident(self, incident_id: str) -> Incident | None:
        """An incident by id; one this process has not seen is looked for in the default window."""
        with self._lock:
            found = self._incidents.get(incident_id)
        if found is None:
            await self.incidents()
            with self._lock:
                found = self._incidents.get(incident_id)
        return found

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

"""The Cyber Security Agent's front door: one lazily built engine per settings, and windows that default sensibly."""

from __future__ import annotations

import datetime as dt
import os
import threading
import urllib.parse
from collections import OrderedDict
from pathlib import Path

import anyio

from insight_mcp.agents.core.timestamps import rfc3339
from insight_mcp.agents.ingestion.backend import SystemTables
from insight_mcp.agents.ingestion.explore import InvalidArgument, resolve_window
from insight_mcp.agents.security.engine import DetectionEngine, DetectionRun
from insight_mcp.agents.security.incidents import Incident, correlate
from insight_mcp.agents.security.model import CATEGORIES, SEVERITIES, Finding
from insight_mcp.agents.security.risk import FindingStore
from insight_mcp.agents.security.rules import rule_set_version
from insight_mcp.agents.security.ruleset import rules_by_id
from insight_mcp.agents.security.run_store import RunStore, run_key
from insight_mcp.agents.settings import Settings
from insight_mcp.agents.version import VERSION

DEFAULT_WINDOW = dt.timedelta(days=7)
MAX_INCIDENTS = 2000
MAX_REMEMBERED_RUNS = 8


class SecurityAgent:
    """Detections over one workspace: compiled once, run per window, findings remembered for get_finding."""

    def __init__(self, settings: Settings, backend: SystemTables, *, keep_runs: bool = True) -> None:
        """`keep_runs`: whole-suite runs go to the state store under `settings.home`, for triage in other processes
        (off for a scratch workspace that is gone after one evaluation)."""
        self.settings = settings
        self.backend = backend
        self.store = FindingStore()
        self._kept = RunStore(settings.state_path) if keep_runs else None
        self._engine: DetectionEngine | None = None
        self._engine_rules = ""  # rule_set_version of the files the engine compiled
        self._lock = threading.Lock()
        self._incidents: OrderedDict[str, Incident] = OrderedDict()  # the newest MAX_INCIDENTS, for get_incident
        # Whole-suite runs by window and the audit table's size then: what the risk tools read instead of re-running.
        self._full_runs: OrderedDict[tuple[object, ...], DetectionRun] = OrderedDict()

    def engine(self) -> DetectionEngine:
        """Build the engine on first use (the workspace may be created after the server starts), on the agent's own
        backend: detections open no second connection to the workspace."""
        with self._lock:
            if self._engine is None:
                self._engine_rules = rule_set_version(self.settings.detections)
                self._engine = DetectionEngine(self.backend, self.settings.detections)
            return self._engine

    def close(self) -> None:
        """Close the engine (its runner); the backend belongs to whoever passed it in."""
        with self._lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()

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
        whole = not categories and not rule_ids and not workspace_id and min_severity == "info"
        key = await self._run_key(start, end) if whole else None
        try:
            run = await engine.run(start, end, categories=categories, min_severity=min_severity,
                                   workspace_id=workspace_id, rule_ids=rule_ids)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        self.store.add(run.findings)
        if key is not None:
            self._remember(key, run)
            if self._kept is not None and not any(s.error for s in run.stats):  # a failed rule is worth a re-run
                kept = await self._kept_key(key)
                if kept is not None:
                    await anyio.to_thread.run_sync(self._kept.put, kept, run)
        return run

    async def _run_key(self, start: dt.datetime, end: dt.datetime) -> tuple[object, ...]:
        """A window, and the audit table's size and last event: a load since the last run makes it a new key."""
        stats = await self.backend.table_stats(["system.access.audit"])
        audit = stats[0] if stats else None
        return start, end, audit.rows if audit else 0, audit.last_event if audit else None

    def _remember(self, key: tuple[object, ...], run: DetectionRun) -> None:
        with self._lock:
            self._full_runs[key] = run
            self._full_runs.move_to_end(key)
            while len(self._full_runs) > MAX_REMEMBERED_RUNS:
                self._full_runs.popitem(last=False)

    async def latest_run(self, *, since: str | None = None, until: str | None = None) -> DetectionRun:
        """The findings of the last whole-suite run over this window on unchanged data; the suite runs only when
        there is none (what principal_risk and top_risks read, so triage does not re-run every rule per call)."""
        start, end = await self.window(since, until)
        key = await self._run_key(start, end)
        with self._lock:
            found = self._full_runs.get(key)
        if found is not None:
            return found
        if self._kept is not None and (kept := await self._kept_key(key)) is not None:
            found = await anyio.to_thread.run_sync(self._kept.get, kept)
            if found is not None:  # another process ran the suite over this window on this data
                self.store.add(found.findings)
                self._remember(key, found)
                return found
        return await self.run(since=rfc3339(start), until=rfc3339(end))

    async def _kept_key(self, key: tuple[object, ...]) -> str | None:
        """The state store's key for a whole run: the window and data, and what else decides its findings (the
        rules, the pipeline's settings, which workspace, this version); None for an engine it cannot name.

        The rules are named by the hash of their files, those the engine compiled once it is built: a new process
        that finds a kept run answers without compiling the suite, which costs more than the run itself."""
        source = _source(self.backend, self.settings)
        if source is None:
            return None
        with self._lock:
            built = self._engine_rules if self._engine is not None else None
        rules = built or await anyio.to_thread.run_sync(rule_set_version, self.settings.detections)
        pipeline = self.settings.detections.model_dump(mode="json", exclude={"parallelism", "incidents"})
        return run_key({"data": list(key), "rules": rules, "pipeline": pipeline, "source": source,
                        "version": VERSION})

    async def incidents(self, *, since: str | None = None, until: str | None = None,
                        min_severity: str = "low") -> tuple[DetectionRun, list[Incident]]:
        """Every rule over the window, its findings correlated into incidents (remembered for get_incident)."""
        run = await self.latest_run(since=since, until=until)
        found = self.correlate(run.findings)
        wanted = SEVERITIES.index(min_severity) if min_severity in SEVERITIES else 0
        return run, [i for i in found if SEVERITIES.index(i.severity) >= wanted]

    def correlate(self, findings: list[Finding]) -> list[Incident]:
        """The incidents these findings raise with the engine's rules, remembered for get_incident."""
        with self._lock:
            engine = self._engine
        rules = engine.ruleset.by_id() if engine is not None else rules_by_id(self.settings.detections)
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
            self.store.add((await self.latest_run()).findings)
            finding = self.store.get(finding_id)
        return finding


def _source(backend: SystemTables, settings: Settings) -> dict[str, object] | None:
    """Which workspace a backend reads, in terms that survive a restart (never a credential)."""
    kind = getattr(backend, "kind", None)
    if kind == "duckdb" and isinstance(path := getattr(backend, "path", None), Path):
        try:
            changed: int | None = path.stat().st_mtime_ns  # a load or a new estate rewrites the file
        except OSError:
            changed = None
        return {"kind": kind, "path": str(path.resolve()), "changed": changed}
    if kind == "spark":
        remote = settings.spark_remote.get_secret_value() if settings.spark_remote else ""
        url = urllib.parse.urlsplit(remote)
        where = f"{url.hostname}:{url.port}" if remote else str(getattr(backend, "tables_dir", ""))
        return {"kind": kind, "at": where}
    if kind == "databricks":
        config = settings.databricks
        return {"kind": kind, "host": config.host or os.environ.get("DATABRICKS_HOST"),
                "profile": config.profile or os.environ.get("DATABRICKS_CONFIG_PROFILE"),
                "warehouse": config.warehouse_id or os.environ.get("DATABRICKS_WAREHOUSE_ID")}
    return None

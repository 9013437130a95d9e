"""Whole-suite detection runs kept in the state store, so that triage in a new process (a stdio session, a CLI call,
the morning after the daily analysis job) reads the last run over a window instead of running every rule again.

A run is found again only under its key: the window, the hash of the rule files, what the pipeline keeps, which
workspace, and the audit table's size and last event then. A store that cannot be read or written costs a re-run,
never an answer: its failures are logged and the caller goes on.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

import structlog
from pydantic import ValidationError

from insight_mcp.agents.core.state import StateStore
from insight_mcp.agents.security.pipeline import DetectionRun

log = structlog.get_logger("insight_mcp.security")

KEEP_RUNS = 8  # the newest runs kept; each holds its findings, so a handful of windows is enough for triage


def run_key(parts: dict[str, object]) -> str:
    """One opaque key for everything a run's findings depend on (no part of it is ever shown or logged)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class RunStore:
    """Runs by key in `$INSIGHT_HOME/state.db`, shared by every process on that home."""

    def __init__(self, path: Path, *, keep: int = KEEP_RUNS) -> None:
        self.path, self.keep = path, keep
        self._store: StateStore | None = None

    def _opened(self) -> StateStore:
        if self._store is None:
            self._store = StateStore(self.path)
        return self._store

    def get(self, key: str) -> DetectionRun | None:
        """The run stored under `key`, or None when there is none or it cannot be read."""
        try:
            with self._opened().transaction() as conn:
                row = conn.execute("SELECT payload FROM detection_runs WHERE key = ?", (key,)).fetchone()
            return DetectionRun.model_validate_json(row["payload"]) if row is not None else None
        except (sqlite3.Error, OSError) as exc:
            log.warning("detection_run_unreadable", store=str(self.path), error=str(exc)[:200])
        except ValidationError:
            log.warning("detection_run_unreadable", store=str(self.path), error="the stored run is not a valid run")
        return None

    def put(self, key: str, run: DetectionRun) -> None:
        """Keep `run` under `key`, and only the newest `keep` runs; a store that cannot be written is logged."""
        try:
            payload = run.model_dump_json()
            with self._opened().transaction() as conn:
                conn.execute("INSERT INTO detection_runs (key, stored_at, payload) VALUES (?, ?, ?) ON CONFLICT (key) "
                             "DO UPDATE SET stored_at = excluded.stored_at, payload = excluded.payload",
                             (key, time.time(), payload))
                conn.execute("DELETE FROM detection_runs WHERE key NOT IN (SELECT key FROM detection_runs "
                             "ORDER BY stored_at DESC LIMIT ?)", (self.keep,))
        except (sqlite3.Error, OSError) as exc:
            log.warning("detection_run_not_kept", store=str(self.path), error=str(exc)[:200])

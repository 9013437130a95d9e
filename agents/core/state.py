"""The one embedded store for state that must survive a restart: jobs now, the alert outbox and supervisor next.

SQLite under `$INSIGHT_HOME`, in WAL mode so readers never wait on the writer, every change in a transaction.
Each call opens its own short connection: the store is shared by threads and by processes (a server and the CLI).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    message TEXT,
    params TEXT NOT NULL,
    result TEXT,
    error TEXT,
    instance TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, created_at);
CREATE TABLE IF NOT EXISTS instances (
    id TEXT PRIMARY KEY,
    heartbeat_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    finding_id TEXT NOT NULL,
    severity TEXT NOT NULL,
    title TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    claimed_at TEXT,
    claim_token TEXT,
    last_error TEXT,
    created_at TEXT NOT NULL,
    sent_at TEXT,
    UNIQUE (channel, finding_id)
);
CREATE INDEX IF NOT EXISTS alerts_due ON alerts (status, next_attempt_at);
CREATE TABLE IF NOT EXISTS supervisor_agents (
    agent TEXT PRIMARY KEY,
    watermark_ms INTEGER NOT NULL DEFAULT 0,
    cooldown_until REAL NOT NULL DEFAULT 0,
    inflight_job TEXT,
    inflight_since REAL,
    last_trip TEXT
);
CREATE TABLE IF NOT EXISTS supervisor_checks (
    agent TEXT PRIMARY KEY,
    checked_at REAL NOT NULL,
    snapshot TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS supervisor_interventions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agent TEXT NOT NULL,
    at REAL NOT NULL,
    trigger TEXT NOT NULL,
    reasons TEXT NOT NULL,
    job_id TEXT,
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS supervisor_interventions_at ON supervisor_interventions (at);
CREATE TABLE IF NOT EXISTS detection_runs (
    key TEXT PRIMARY KEY,
    stored_at REAL NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS scheduled_optimization (
    agent TEXT PRIMARY KEY,
    last_run_at REAL,
    last_attempt_at REAL NOT NULL,
    last_outcome TEXT NOT NULL,
    last_reason TEXT
);
"""


class StateStore:
    """A SQLite file with the suite's durable tables."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)  # idempotent; executescript manages its own transaction
        finally:
            conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One connection and one transaction: committed on success, rolled back on any error."""
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

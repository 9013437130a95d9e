"""Long work (batch evaluation, dataset curation, optimization) as jobs: a handle at once, the work in the background.

A job runs on the runner's own event loop thread, so it outlives the request that started it, whatever transport
served that request. Its record lives in the state store: status, progress, result or error. Handles are random
and bound to the caller that started the job; another caller is told the job does not exist. A job that a restart
interrupted is marked failed with the reason, never left `running`. Several processes may share one store (a stdio
server for a desktop client beside `insight-mcp serve`): each runner beats a heartbeat into the store, and only
the jobs of a runner whose heartbeat stopped are declared interrupted.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import anyio
import structlog
from anyio.from_thread import BlockingPortal, start_blocking_portal
from pydantic import BaseModel, Field, ValidationError

from insight_mcp.agents.core.state import StateStore
from insight_mcp.agents.core.timestamps import UtcDateTime

log = structlog.get_logger("insight_mcp.jobs")

HEARTBEAT_SECONDS = 5.0
DEAD_AFTER_SECONDS = 30.0  # a runner silent this long has stopped: its unfinished jobs never will finish

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class JobNotFound(LookupError):
    """No such job for this caller: unknown, expired, or started by someone else (the three read alike)."""


class JobRecord(BaseModel):
    """What a caller may know about a job."""

    id: str
    kind: str
    status: JobStatus
    progress: float = Field(description="0 to 1.")
    message: str | None = Field(None, description="What the job is doing now, or why it ended as it did.")
    params: dict[str, Any]
    result: Any = None
    error: str | None = None
    created_at: UtcDateTime
    started_at: UtcDateTime | None = None
    finished_at: UtcDateTime | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class JobList(BaseModel):
    jobs: list[JobRecord]


class Progress:
    """Handed to a job: report how far it is; writes are throttled so a chatty job does not hammer the store."""

    def __init__(self, runner: JobRunner, job_id: str) -> None:
        self._runner = runner
        self._job_id = job_id
        self._last = 0.0
        self.fraction = 0.0

    def __call__(self, fraction: float, message: str | None = None) -> None:
        self.fraction = min(max(fraction, 0.0), 1.0)
        now = time.monotonic()
        if now - self._last >= 0.25 or self.fraction >= 1.0:
            self._last = now
            self._runner._update(self._job_id, progress=self.fraction, message=message)


JobFn = Callable[[Progress], Awaitable[Any]]


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat()


class JobRunner:
    """Runs jobs on a background event loop and keeps their records in the state store."""

    def __init__(
        self, store: StateStore | Callable[[], StateStore], *,
        describe_error: Callable[[BaseException], str] | None = None, max_running: int = 4,
    ) -> None:
        self._store_source = store
        self._store: StateStore | None = store if isinstance(store, StateStore) else None
        self.instance = secrets.token_hex(8)
        self._describe_error = describe_error or _default_error
        self._limiter: anyio.CapacityLimiter | None = None
        self._max_running = max_running
        self._futures: dict[str, concurrent.futures.Future[Any]] = {}
        self._portal_cm: Any = None
        self._portal: BlockingPortal | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._started = False
        self._interrupted = 0

    # --- lifecycle -------------------------------------------------------------------------------------------

    @property
    def store(self) -> StateStore:
        """The state store, opened on first use: a server that never runs a job never creates one."""
        self._start()
        assert self._store is not None
        return self._store

    @property
    def interrupted(self) -> int:
        """How many jobs of stopped runners this runner declared interrupted when it started."""
        self._start()
        return self._interrupted

    def _start(self) -> None:
        if self._started:  # no lock on the common path: a job finishing during close() must not wait on it
            return
        with self._lock:
            if self._started:
                return
            if self._store is None:
                source = self._store_source
                self._store = source() if callable(source) else source
            self._started = True
        self._beat()
        self._interrupted = self._fail_interrupted()
        threading.Thread(target=self._heartbeat, name="insight-job-heartbeat", daemon=True).start()

    def _beat(self) -> None:
        with self.store.transaction() as conn:
            conn.execute("INSERT INTO instances (id, heartbeat_at) VALUES (?, ?) ON CONFLICT (id) DO UPDATE "
                         "SET heartbeat_at = excluded.heartbeat_at", (self.instance, time.time()))

    def _heartbeat(self) -> None:
        while not self._stopped.wait(HEARTBEAT_SECONDS):
            try:
                self._beat()
                self._fail_interrupted()
            except Exception as exc:  # a busy or vanished store must not kill the heartbeat
                log.warning("job_heartbeat_failed", error=type(exc).__name__)

    def _fail_interrupted(self) -> int:
        """Jobs whose runner stopped beating can never finish: say so, with the reason, keeping their progress."""
        reason = "interrupted: the server stopped or restarted before the job finished; start it again"
        with self.store.transaction() as conn:
            cursor = conn.execute(
                "UPDATE jobs SET status = 'failed', error = ?, message = ?, finished_at = ? "
                "WHERE status IN ('queued', 'running') AND instance != ? AND instance NOT IN "
                "(SELECT id FROM instances WHERE heartbeat_at >= ?)",
                (reason, reason, _now(), self.instance, time.time() - DEAD_AFTER_SECONDS),
            )
            conn.execute("DELETE FROM instances WHERE heartbeat_at < ?", (time.time() - 86_400,))
            return cursor.rowcount

    def _ensure_portal(self) -> BlockingPortal:
        with self._lock:
            if self._portal is None:
                self._portal_cm = start_blocking_portal()
                self._portal = self._portal_cm.__enter__()
                self._limiter = self._portal.call(anyio.CapacityLimiter, self._max_running)
            return self._portal

    def close(self, timeout: float = 10.0) -> None:
        """Cancel what still runs (its record says so) and stop the background loop and the heartbeat."""
        self._stopped.set()
        for job_id, future in list(self._futures.items()):
            if not future.done():
                future.cancel()
                self._finish(job_id, "cancelled", message="cancelled: the server is shutting down")
        with self._lock:  # take the portal, then stop it outside the lock: its jobs write their end on the way out
            portal_cm, self._portal_cm, self._portal = self._portal_cm, None, None
        if portal_cm is not None:
            portal_cm.__exit__(None, None, None)

    # --- the caller's side -----------------------------------------------------------------------------------

    def submit(self, kind: str, owner: str, params: dict[str, Any], fn: JobFn) -> JobRecord:
        """Record the job, start it in the background, and return its handle at once."""
        job_id = "job-" + secrets.token_urlsafe(18)
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO jobs (id, kind, owner, status, params, instance, created_at, message) "
                "VALUES (?, ?, ?, 'queued', ?, ?, ?, 'queued')",
                (job_id, kind, owner, json.dumps(params, default=str), self.instance, _now()),
            )
        portal = self._ensure_portal()
        self._futures[job_id] = portal.start_task_soon(self._run, job_id, fn)
        return self.get(job_id, owner)

    def get(self, job_id: str, owner: str) -> JobRecord:
        """The job's record, if this caller started it."""
        with self.store.transaction() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ? AND owner = ?", (job_id, owner)).fetchone()
        if row is None:
            raise JobNotFound(f"no job {job_id[:80]!r} for this caller: use a handle this caller was given")
        return _record(row)

    def list(self, owner: str, *, kind: str | None = None, limit: int = 50) -> list[JobRecord]:
        """This caller's jobs, newest first."""
        sql = "SELECT * FROM jobs WHERE owner = ?" + (" AND kind = ?" if kind else "")
        args: tuple[Any, ...] = (owner, kind) if kind else (owner,)
        with self.store.transaction() as conn:
            rows = conn.execute(sql + " ORDER BY created_at DESC LIMIT ?", (*args, limit)).fetchall()
        return [_record(r) for r in rows]

    def cancel(self, job_id: str, owner: str) -> JobRecord:
        """Stop a job of this caller's; a finished job is left as it ended."""
        record = self.get(job_id, owner)
        if record.finished:
            return record
        future = self._futures.get(job_id)
        if future is not None:
            future.cancel()
        self._finish(job_id, "cancelled", message="cancelled by the caller")
        return self.get(job_id, owner)

    async def wait(self, job_id: str, owner: str, *, timeout: float,
                   on_progress: Callable[[JobRecord], Awaitable[None]] | None = None) -> JobRecord:
        """Poll until the job finishes or the timeout passes, telling `on_progress` whenever it moved."""
        deadline = time.monotonic() + timeout
        last: tuple[float, str | None] | None = None
        while True:
            record = await anyio.to_thread.run_sync(self.get, job_id, owner)
            if on_progress is not None and (record.progress, record.message) != last:
                last = (record.progress, record.message)
                await on_progress(record)
            if record.finished or time.monotonic() >= deadline:
                return record
            await anyio.sleep(min(0.25, max(deadline - time.monotonic(), 0.01)))

    # --- the job's side ----------------------------------------------------------------------------------------

    async def _run(self, job_id: str, fn: JobFn) -> None:
        assert self._limiter is not None
        try:
            async with self._limiter:
                self._update(job_id, status="running", started_at=_now(), message="running")
                result = await fn(Progress(self, job_id))
        except anyio.get_cancelled_exc_class():
            self._finish(job_id, "cancelled", message="cancelled")
            raise
        except Exception as exc:
            error = self._describe_error(exc)
            self._finish(job_id, "failed", error=error, message=error)
        else:
            payload = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
            headline = getattr(result, "headline", None)
            self._finish(job_id, "succeeded", result=payload, message=headline() if callable(headline) else "done")
        finally:
            self._futures.pop(job_id, None)

    def _update(self, job_id: str, **fields: Any) -> None:
        names = ", ".join(f"{k} = ?" for k in fields)
        with self.store.transaction() as conn:
            conn.execute(f"UPDATE jobs SET {names} WHERE id = ? AND status NOT IN "
                         "('succeeded', 'failed', 'cancelled')", (*fields.values(), job_id))

    def _finish(self, job_id: str, status: JobStatus, *, result: Any = None, error: str | None = None,
                message: str | None = None) -> None:
        fields: dict[str, Any] = {"status": status, "finished_at": _now(), "message": message, "error": error}
        if status == "succeeded":
            fields |= {"progress": 1.0, "result": json.dumps(result, default=str)}
        self._update(job_id, **fields)


def stored_jobs(store: StateStore, *, kinds: tuple[str, ...] = (), ids: tuple[str, ...] = (),
                limit: int = 50) -> list[JobRecord]:
    """Jobs of every caller, newest first, by kind or id: for the operator's views (status page, supervision),
    never for a caller's own tools. A row that cannot be read is logged and left out."""
    where, args = [], []
    for column, values in (("kind", kinds), ("id", ids)):
        if values:
            where.append(f"{column} IN ({', '.join('?' for _ in values)})")
            args += list(values)
    sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
    with store.transaction() as conn:
        rows = conn.execute(sql + " ORDER BY created_at DESC LIMIT ?", (*args, limit)).fetchall()
    found = []
    for row in rows:
        try:
            found.append(_record(row))
        except (ValueError, ValidationError) as exc:
            log.warning("job_unreadable", job=str(row["id"])[:40], error=type(exc).__name__)
    return found


def _record(row: Any) -> JobRecord:
    data = dict(row)
    data.pop("owner")
    data.pop("instance")
    data["params"] = json.loads(data["params"])
    data["result"] = json.loads(data["result"]) if data["result"] is not None else None
    return JobRecord.model_validate(data)


def _default_error(exc: BaseException) -> str:
    ref = secrets.token_hex(4)
    log.error("job_failed", ref=ref, error=type(exc).__name__, exc_info=exc)
    return f"internal error (reference {ref}); the server log has the details"

"""Every call becomes an MLflow trace, written by a separate process so tracing never slows or breaks a call.

A call costs one append to a bounded queue. A feeder thread sends the records, as JSON lines, to the trace writer
process (`trace_writer.py`), which imports MLflow once and writes traces with their real start and end times.
MLflow's own work never competes with the server for the interpreter lock: in-process, it made the `run_query`
round trip 1.4 to 2 times slower. If the store cannot be reached the calls go on; the writer keeps the records,
retries with backoff, and `status` says why. A writer that dies is started again.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
import structlog

from insight_mcp.agents.core.jsontext import dumps
from insight_mcp.agents.core.mlflow_store import without_credentials

log = structlog.get_logger("insight_mcp.tracing")

TRACE_VALUE_CHARS = 64_000  # inputs and answers are kept whole up to this size, for evaluation datasets
FEED_BATCH = 500  # records handed to the writer in one write at most
FEED_LINGER_SECONDS = 0.05  # after a write, the feeder waits this long for more records


@dataclass
class SpanRecord:
    """One finished call, as it will appear in MLflow: name, what went in and out, when, and how it ended."""

    name: str
    span_type: str
    inputs: dict[str, Any]
    outputs: Any
    start_ns: int
    end_ns: int
    error: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


class TraceRecorder:
    """Queue call records and hand them to one trace writer process for one MLflow experiment."""

    def __init__(
        self, tracking_uri: str, experiment: str, artifact_location: Path, *, capacity: int = 100_000,
        retry_seconds: float = 5.0,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.artifact_location = artifact_location
        self.retry_seconds = retry_seconds
        self._queue: queue.Queue[SpanRecord | int] = queue.Queue(capacity)
        self._feeder: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._accepted = 0  # records taken from callers
        self._sent = 0  # records handed to the writer process
        self._acked = 0  # records the current writer process has written
        self._base = 0  # written by earlier writer processes
        self._flushed = 0
        self._lost = 0  # accepted, then lost with a writer process that died
        self.dropped = 0
        self.status = "idle"

    @property
    def written(self) -> int:
        return self._base + self._acked

    # --- the request path: cheap and never raises ------------------------------------------------------------

    def record(self, record: SpanRecord) -> None:
        """Hand one record to the writer; if the queue is full the record is counted and dropped, loudly."""
        self._ensure_started()
        try:
            self._queue.put_nowait(record)
            self._accepted += 1
        except queue.Full:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("trace_dropped", dropped=self.dropped, reason="trace queue full: MLflow is behind")

    # --- the feeder and the writer process ------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer now, so MLflow is imported and connected before the first call rather than during it."""
        self._ensure_started()

    def _ensure_started(self) -> None:
        if self._feeder is not None:
            return
        with self._start_lock:
            if self._feeder is None:
                self._feeder = threading.Thread(target=self._feed, name="insight-trace-feeder", daemon=True)
                self._feeder.start()

    def _spawn(self) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "insight_mcp.agents.core.trace_writer", self.tracking_uri,
                   self.experiment, str(self.artifact_location), str(self.retry_seconds)]
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": os.environ.get("MLFLOW_DISABLE_TELEMETRY", "true")}
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                bufsize=1, start_new_session=True)
        self.status = "connecting"
        assert proc.stdout is not None
        threading.Thread(target=self._listen, args=(proc.stdout,), name="insight-trace-listener",
                         daemon=True).start()
        return proc

    def _listen(self, stdout: IO[str]) -> None:
        for line in stdout:
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                continue
            with self._changed:
                if "written" in message:
                    self._acked = int(message["written"])
                elif "flushed" in message:
                    self._flushed = int(message["flushed"])
                elif "status" in message:
                    status = str(message["status"])
                    if status.startswith("unavailable") and not self.status.startswith("unavailable"):
                        log.warning("tracking_unavailable", uri=without_credentials(self.tracking_uri),
                                    reason=status.removeprefix("unavailable: "))
                    self.status = status
                self._changed.notify_all()
        with self._changed:  # the writer is gone: what it had not written is lost
            lost = self._sent - self._acked
            self._base += self._acked
            self._sent = self._acked = 0
            self._lost += lost
            self.dropped += lost
            if not self._stop.is_set():
                self.status = "writer stopped"
                log.warning("trace_writer_stopped", lost=lost)
            self._changed.notify_all()

    def _feed(self) -> None:
        while not self._stop.is_set():
            try:
                items = [self._queue.get(timeout=0.5)]
            except queue.Empty:
                if self._proc is None:
                    self._proc = self._spawn()
                continue
            while len(items) < FEED_BATCH:  # what else is queued goes in the same write
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            lines = [dumps({"flush": item}) if isinstance(item, int) else record_line(item) for item in items]
            try:
                if self._proc is None or self._proc.poll() is not None:
                    self._proc = self._spawn()
                assert self._proc.stdin is not None
                with self._changed:
                    self._sent += sum(not isinstance(item, int) for item in items)
                self._proc.stdin.write("\n".join(lines) + "\n")
            except (OSError, ValueError) as exc:  # the writer died mid-write; the listener counts the loss
                log.warning("trace_writer_pipe", error=type(exc).__name__)
                self._proc = None
                time.sleep(min(self.retry_seconds, 1.0))
                continue
            # Let the next records gather: a busy server wakes this thread, and takes the interpreter lock from
            # its calls, once a batch rather than once a call.
            self._stop.wait(FEED_LINGER_SECONDS)

    @property
    def writer_pid(self) -> int | None:
        """The trace writer process, while one runs: what an operator looks for in `top`."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    # --- draining ----------------------------------------------------------------------------------------------

    def flush(self, timeout: float = 60.0) -> bool:
        """Wait until every record so far is in the store (or the timeout passes); True if all were written."""
        self._ensure_started()
        deadline = time.monotonic() + timeout
        target = self._accepted
        # The token follows the records through the queue and the pipe, and ends the writer's batch at once.
        token = int(time.monotonic_ns() % 1_000_000_000) or 1
        try:
            self._queue.put(token, timeout=max(deadline - time.monotonic(), 0.1))
        except queue.Full:
            return False
        with self._changed:
            while self._flushed != token:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.5))
        return self.written >= target

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, within the timeout, then stop the writer process."""
        if self._feeder is None:
            return
        idle = self._accepted == 0
        if not idle and not self.flush(timeout):
            log.warning("traces_not_written", accepted=self._accepted, written=self.written, status=self.status)
        self._stop.set()
        self._feeder.join(timeout=5)
        proc = self._proc
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(timeout=1 if idle else 10)
            except subprocess.TimeoutExpired:
                if not idle:
                    proc.kill()
                # An idle writer may still be importing MLflow or creating the store's tables; stopping it there
                # could leave a half-made store, and it has nothing to write: it reads the end of its input and
                # exits by itself once connected, so nobody waits for it.


def experiment_traces(tracking_uri: str, experiment: str, page_size: int = 500) -> list[Any]:
    """Every trace of one experiment (infos, no spans), paged through: [] when the experiment does not exist."""
    from insight_mcp.agents.core.mlflow_store import open_client

    client = open_client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    traces: list[Any] = []
    token = None
    while True:
        page = client.search_traces(locations=[found.experiment_id], max_results=page_size, page_token=token,
                                    include_spans=False)
        traces += list(page)
        token = page.token
        if not token:
            return traces


def record_line(record: SpanRecord) -> str:
    """One record as the JSON line the writer reads. Its inputs and answer are written to JSON once each (they are
    most of the line) and set in as they are: this thread takes the interpreter lock from the server's calls."""
    return orjson.dumps({"record": {
        "name": record.name, "span_type": record.span_type,
        "inputs": orjson.Fragment(bounded_json(record.inputs)),
        "outputs": orjson.Fragment(bounded_json(record.outputs)),
        "start_ns": record.start_ns, "end_ns": record.end_ns, "error": record.error, "tags": record.tags,
    }}, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def bounded_json(value: Any, limit: int = TRACE_VALUE_CHARS) -> str:
    """The value's JSON when it is small; otherwise the JSON of a marker holding its first `limit` characters."""
    try:
        text = dumps(value)
    except (TypeError, ValueError):
        text = dumps(str(value))
    if len(text) <= limit:
        return text
    return dumps({"truncated": True, "chars": len(text), "head": text[:limit]})

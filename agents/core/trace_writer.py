"""The trace writer process: reads call records as JSON lines and writes them to MLflow as traces.

It runs apart from the server so that MLflow's work (span building, serialising, SQLite or HTTP writes) never
competes with the server's event loop for the interpreter lock. Protocol, one JSON object a line:

- in:  `{"record": {...SpanRecord fields...}}`, `{"flush": N}`
- out: `{"status": "ready"}` or `{"status": "unavailable: why"}`, `{"written": total}`, `{"flushed": N}`

A batch is the records that arrive until the server has been quiet for a quarter of a second, five seconds after its
first record at the latest, or 500 of them (a flush ends it at once). It is written as MLflow stores traces sent to
it over OpenTelemetry (its `/v1/traces` endpoint): one `log_spans` call for the whole batch, each record the root
span of its own trace, the trace's name and tags carried as `mlflow.traceTag.*` attributes. The store derives each
trace's state, times and previews from its root span. Through MLflow's own exporter every trace cost a `log_spans`,
then a `start_trace` that took the store's conflict-and-merge path, one trace at a time: about 45 ms of CPU a trace,
a full core at 22 calls a second. A batch of one costs about 10 ms a trace, of fifty or more 2.5-2.7 ms. If the
store cannot be reached the writer keeps the batch, says why and tries it again with backoff: the same spans and
trace ids, which the store replaces rather than adds.

On Databricks, and on a store that keeps no spans, MLflow's exporter writes them, one at a time. The writer runs at
the lowest CPU priority (Linux's idle class where it can): a busy server's calls come before its traces, and a burst
of calls is written once it is over, not while it lasts.

    python -m insight_mcp.agents.core.trace_writer TRACKING_URI EXPERIMENT ARTIFACT_DIR [RETRY_SECONDS]
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import queue
import secrets
import sys
import threading
import time
from pathlib import Path
from typing import Any

from insight_mcp.agents.core.mlflow_store import experiment_id, failure, open_client

# MLflow reads these when its exporter starts; beyond them it drops traces without a word (the Databricks path).
MLFLOW_QUEUE_LIMITS = {
    "MLFLOW_ASYNC_TRACE_LOGGING_MAX_QUEUE_SIZE": "100000",
    "MLFLOW_TRACE_BUFFER_MAX_SIZE": "100000",
}
BATCH = 500  # records written in one go at most
# A batch is written once no record has come for QUIET_SECONDS, or LINGER_SECONDS after its first record, whichever
# is sooner (a flush ends it at once). A batch of one costs MLflow's store about 10 ms of CPU a trace, of ten 3.6 ms,
# of fifty or more 2.5-2.7 ms: more than the call it records. Waiting for a pause writes a burst of calls after it,
# on CPU the calls no longer want, and in fewer, larger batches. OpenTelemetry's batch span processor waits 5 s too.
QUIET_SECONDS = 0.25
LINGER_SECONDS = 5.0
# The writer's CPU priority, the lowest. Under sustained one-row calls on two cores it took the CPU the engine's
# second thread wanted: 1.05-1.33x the peer's p50 at normal priority, 1.02-1.06x at this one. Where Linux allows it
# the writer also joins the idle scheduling class, which yields to any other process at once.
NICENESS = 19
READ_AHEAD = 2_000  # records read from the server before it has to wait: the pipe then pushes back


def say(message: dict[str, Any]) -> None:
    """Tell the server; a server that has gone (it stopped while this writer was still connecting) hears nothing."""
    try:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # nor at exit, when Python flushes stdout again
        os.close(devnull)


class Writer:
    """Connects lazily, writes batches of records as traces, and reconnects after a failure."""

    def __init__(self, tracking_uri: str, experiment: str, artifacts: Path) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.artifacts = artifacts
        self.mlflow: Any = None
        self.client: Any = None
        self.experiment_id: str | None = None
        self.spans_in_store = True  # False once the store says it cannot hold spans
        self.written = 0

    def connect(self) -> None:
        import mlflow
        from mlflow.tracing.client import TracingClient
        from mlflow.utils.uri import is_databricks_uri

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # MLflow sets its own level when imported
        mlflow.set_tracking_uri(self.tracking_uri)
        self.experiment_id = experiment_id(open_client(self.tracking_uri), self.experiment, self.artifacts)
        # Databricks keeps spans in Unity Catalog tables, not in the tracking store: MLflow's exporter knows that way.
        self.client = None if is_databricks_uri(self.tracking_uri) else TracingClient(self.tracking_uri)
        self.mlflow = mlflow
        say({"status": "ready"})

    def span(self, record: dict[str, Any]) -> Any:
        """One record as the root span of a trace of its own, carrying the trace's name and tags as attributes."""
        from mlflow.entities import Span
        from mlflow.tracing.constant import SpanAttributeKey, TraceTagKey
        from mlflow.tracing.utils import dump_span_attribute_value

        otel_trace_id, otel_span_id = secrets.token_bytes(16), secrets.token_bytes(8)
        error = record.get("error")
        attributes = {
            SpanAttributeKey.REQUEST_ID: dump_span_attribute_value("tr-" + otel_trace_id.hex()),
            SpanAttributeKey.EXPERIMENT_ID: dump_span_attribute_value(self.experiment_id),
            SpanAttributeKey.SPAN_TYPE: dump_span_attribute_value(record["span_type"]),
            SpanAttributeKey.INPUTS: dump_span_attribute_value(record["inputs"]),
            SpanAttributeKey.OUTPUTS: dump_span_attribute_value(record["outputs"]),
        }
        if error is not None:
            attributes["error"] = dump_span_attribute_value(error)
        for key, value in {TraceTagKey.TRACE_NAME: record["name"], **record["tags"]}.items():
            attributes[SpanAttributeKey.TRACE_TAG_PREFIX + key] = dump_span_attribute_value(str(value))
        return Span.from_dict({
            "trace_id": base64.b64encode(otel_trace_id).decode(),
            "span_id": base64.b64encode(otel_span_id).decode(),
            "parent_span_id": None,
            "name": record["name"],
            "start_time_unix_nano": record["start_ns"],
            "end_time_unix_nano": record["end_ns"],
            "status": {"code": "STATUS_CODE_ERROR" if error is not None else "STATUS_CODE_OK",
                       "message": str(error) if error is not None else ""},
            "attributes": attributes,
            "events": [],
        })

    def write(self, records: list[dict[str, Any]], spans: list[Any]) -> None:
        """Write one batch; `spans` holds its spans once made, so that a retry writes the same trace ids again (the
        store then replaces them rather than adding traces)."""
        if self.mlflow is None:
            self.connect()
        if self.client is not None and self.spans_in_store:
            if not spans:
                spans.extend(self.span(record) for record in records)
            try:
                self.client.log_spans(self.experiment_id, spans)
                self.written += len(records)
                return
            except NotImplementedError:  # a store that keeps no spans: MLflow's exporter puts them in artifacts
                self.spans_in_store = False
        for record in records:
            self._write_with_exporter(record)
        self.written += len(records)

    def _write_with_exporter(self, record: dict[str, Any]) -> None:
        span = self.mlflow.start_span_no_context(
            record["name"], span_type=record["span_type"], inputs=record["inputs"], tags=record["tags"],
            experiment_id=self.experiment_id, start_time_ns=record["start_ns"],
        )
        if record.get("error") is not None:
            span.set_attribute("error", record["error"])
        span.set_outputs(record["outputs"])
        span.end(status="ERROR" if record.get("error") is not None else "OK", end_time_ns=record["end_ns"])

    def flush(self) -> None:
        """Wait for what MLflow's exporter still holds (its path only: a `log_spans` has landed when it returns)."""
        if self.mlflow is not None and (self.client is None or not self.spans_in_store):
            self.mlflow.flush_trace_async_logging()


def read_messages(stream: Any, inbox: queue.Queue[dict[str, Any] | None]) -> None:
    """Parse the server's lines onto the inbox, then None at the end of input; a line that is not JSON is skipped."""
    for line in stream:
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(message, dict):
            inbox.put(message)
    inbox.put(None)


def next_batch(
    inbox: queue.Queue[dict[str, Any] | None], quiet: float = QUIET_SECONDS, linger: float = LINGER_SECONDS
) -> tuple[list[dict[str, Any]], dict[str, Any] | None, bool]:
    """The records that come until none has come for `quiet`, or for `linger` after the first (up to BATCH), the
    flush that ends them early if any, and whether the input has ended."""
    records: list[dict[str, Any]] = []
    message = inbox.get()
    deadline: float | None = None
    while True:
        if message is None:
            return records, None, True
        if "flush" in message:
            return records, message, False
        if "record" in message:
            records.append(message["record"])
            if deadline is None:
                deadline = time.monotonic() + linger
        if len(records) >= BATCH:
            return records, None, False
        left = min(quiet, deadline - time.monotonic()) if deadline is not None else 0.0
        try:
            message = inbox.get(timeout=left) if left > 0 else inbox.get_nowait()
        except queue.Empty:
            return records, None, False


def serve(writer: Writer, retry_seconds: float, stream: Any = None) -> None:
    """Write records as they come, batched; keep a batch the store refused and try it again later."""
    delay = retry_seconds
    unavailable = False
    try:
        writer.connect()  # MLflow's import and the store's migrations happen now, before the first call
    except Exception as exc:
        unavailable = True
        say({"status": "unavailable: " + failure(exc)})
    inbox: queue.Queue[dict[str, Any] | None] = queue.Queue(READ_AHEAD)
    threading.Thread(target=read_messages, args=(stream or sys.stdin, inbox), name="insight-trace-reader",
                     daemon=True).start()
    ended = False
    while not ended:
        records, flush, ended = next_batch(inbox)
        spans: list[Any] = []
        while records:
            try:
                writer.write(records, spans)
                if unavailable:
                    say({"status": "ready"})
                unavailable, delay = False, retry_seconds
                say({"written": writer.written})
                break
            except Exception as exc:
                writer.mlflow = None
                unavailable = True
                say({"status": "unavailable: " + failure(exc)})
                time.sleep(delay)
                delay = min(delay * 2, 300.0)
        if flush is not None:
            writer.flush()
            say({"flushed": flush["flush"]})
    writer.flush()


def lowest_priority() -> None:
    """Serving comes first: on a busy machine the writer takes what CPU is left."""
    if hasattr(os, "nice"):
        with contextlib.suppress(OSError):
            os.nice(NICENESS)
    if hasattr(os, "SCHED_IDLE"):  # Linux: runs only when no other process wants the CPU
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def main(argv: list[str]) -> None:
    lowest_priority()
    tracking_uri, experiment, artifacts = argv[0], argv[1], Path(argv[2])
    retry_seconds = float(argv[3]) if len(argv) > 3 else 5.0
    for key, value in MLFLOW_QUEUE_LIMITS.items():
        os.environ.setdefault(key, value)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    serve(Writer(tracking_uri, experiment, artifacts), retry_seconds)


if __name__ == "__main__":
    main(sys.argv[1:])

"""The trace writer process: reads call records as JSON lines and writes them to MLflow as traces.

It runs apart from the server so that MLflow's work (span building, serialising, SQLite or HTTP writes) never
competes with the server's event loop for the interpreter lock. Protocol, one JSON object a line:

- in:  `{"record": {...SpanRecord fields...}}`, `{"flush": N}`
- out: `{"status": "ready"}` or `{"status": "unavailable: why"}`, `{"written": total}`, `{"flushed": N}`

Records that arrive together are written together: each trace's info first (`start_trace`), then the spans of the
whole batch in one `log_spans` transaction. MLflow's own exporter logs a trace's spans before its info, so every
`start_trace` took the store's conflict-and-merge path, and wrote one trace at a time: about 45 ms of CPU a trace,
a full core at 22 calls a second. If the store cannot be reached the writer keeps the batch, says why and tries it
again with backoff (the same trace ids, so a batch half-written before an outage is completed, not duplicated).

    python -m insight_mcp.agents.core.trace_writer TRACKING_URI EXPERIMENT ARTIFACT_DIR [RETRY_SECONDS]
"""

from __future__ import annotations

import base64
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
BATCH = 200  # records written in one go at most
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
        self.metadata: dict[str, str] = {}
        self.spans_in_store = True  # False once the store says it cannot hold spans: they go to artifacts
        self.written = 0

    def connect(self) -> None:
        import mlflow
        from mlflow.tracing.client import TracingClient
        from mlflow.tracing.constant import TRACE_SCHEMA_VERSION, TRACE_SCHEMA_VERSION_KEY
        from mlflow.tracing.utils.environment import resolve_env_metadata
        from mlflow.utils.uri import is_databricks_uri

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # MLflow sets its own level when imported
        mlflow.set_tracking_uri(self.tracking_uri)
        self.experiment_id = experiment_id(open_client(self.tracking_uri), self.experiment, self.artifacts)
        # What MLflow's span processor puts on every trace: where it came from, and the schema version.
        self.metadata = {**resolve_env_metadata(), TRACE_SCHEMA_VERSION_KEY: str(TRACE_SCHEMA_VERSION)}
        # Databricks keeps spans in Unity Catalog tables, not in the tracking store: MLflow's exporter knows that way.
        self.client = None if is_databricks_uri(self.tracking_uri) else TracingClient(self.tracking_uri)
        self.mlflow = mlflow
        say({"status": "ready"})

    def build(self, record: dict[str, Any]) -> Any:
        """One record as an MLflow trace of one span, with what MLflow's own exporter would give it."""
        from mlflow.entities import Span, Trace, TraceData, TraceInfo, TraceLocation, TraceState
        from mlflow.tracing.constant import TraceMetadataKey, TraceTagKey
        from mlflow.tracing.utils import add_size_stats_to_trace_metadata, dump_span_attribute_value
        from mlflow.tracing.utils.truncation import set_request_response_preview

        assert self.experiment_id is not None
        otel_trace_id, otel_span_id = secrets.token_bytes(16), secrets.token_bytes(8)
        trace_id = "tr-" + otel_trace_id.hex()
        error = record.get("error")
        attributes = {
            "mlflow.traceRequestId": dump_span_attribute_value(trace_id),
            "mlflow.experimentId": dump_span_attribute_value(self.experiment_id),
            "mlflow.spanType": dump_span_attribute_value(record["span_type"]),
            "mlflow.spanInputs": dump_span_attribute_value(record["inputs"]),
            "mlflow.spanOutputs": dump_span_attribute_value(record["outputs"]),
        }
        if error is not None:
            attributes["error"] = dump_span_attribute_value(error)
        span = Span.from_dict({
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
        info = TraceInfo(
            trace_id=trace_id,
            trace_location=TraceLocation.from_experiment_id(self.experiment_id),
            request_time=record["start_ns"] // 1_000_000,
            execution_duration=(record["end_ns"] - record["start_ns"]) // 1_000_000,
            state=TraceState.ERROR if error is not None else TraceState.OK,
            trace_metadata={**self.metadata,
                            TraceMetadataKey.INPUTS: _metadata_preview(attributes["mlflow.spanInputs"]),
                            TraceMetadataKey.OUTPUTS: _metadata_preview(attributes["mlflow.spanOutputs"])},
            tags={TraceTagKey.TRACE_NAME: record["name"], **record["tags"]},
        )
        trace = Trace(info=info, data=TraceData(spans=[span]))
        set_request_response_preview(info, trace.data)
        add_size_stats_to_trace_metadata(trace)
        return trace

    def write(self, records: list[dict[str, Any]], built: list[Any]) -> None:
        """Write one batch; `built` holds its traces once made, so that a retry writes the same trace ids."""
        if self.mlflow is None:
            self.connect()
        if self.client is None:
            for record in records[len(built):]:
                self._write_with_exporter(record)
                built.append(None)
        else:
            if not built:
                built.extend(self.build(record) for record in records)
            for trace in built:
                self.client.start_trace(trace.info)
            self._log_spans(built)
        self.written += len(records)

    def _log_spans(self, traces: list[Any]) -> None:
        if self.spans_in_store:
            try:
                self.client.log_spans(self.experiment_id, [span for trace in traces for span in trace.data.spans])
                return
            except NotImplementedError:  # a store that keeps no spans: the trace's artifacts hold them
                self.spans_in_store = False
        for trace in traces:
            self.client._upload_trace_data(trace.info, trace.data)

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
        if self.mlflow is not None and self.client is None:
            self.mlflow.flush_trace_async_logging()


def _metadata_preview(value: str) -> str:
    """Trace metadata keeps inputs and outputs cut as MLflow's span processor cuts them."""
    from mlflow.tracing.constant import MAX_CHARS_IN_TRACE_INFO_METADATA, TRUNCATION_SUFFIX

    if len(value) <= MAX_CHARS_IN_TRACE_INFO_METADATA:
        return value
    return value[:MAX_CHARS_IN_TRACE_INFO_METADATA - len(TRUNCATION_SUFFIX)] + TRUNCATION_SUFFIX


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


def next_batch(inbox: queue.Queue[dict[str, Any] | None]) -> tuple[list[dict[str, Any]], dict[str, Any] | None, bool]:
    """Records that are waiting (up to BATCH, at least one message), the flush that ends them if any, and whether
    the input has ended."""
    records: list[dict[str, Any]] = []
    message = inbox.get()
    while True:
        if message is None:
            return records, None, True
        if "flush" in message:
            return records, message, False
        if "record" in message:
            records.append(message["record"])
        if len(records) >= BATCH:
            return records, None, False
        try:
            message = inbox.get_nowait()
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
        built: list[Any] = []
        while records:
            try:
                writer.write(records, built)
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


def main(argv: list[str]) -> None:
    tracking_uri, experiment, artifacts = argv[0], argv[1], Path(argv[2])
    retry_seconds = float(argv[3]) if len(argv) > 3 else 5.0
    for key, value in MLFLOW_QUEUE_LIMITS.items():
        os.environ.setdefault(key, value)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    serve(Writer(tracking_uri, experiment, artifacts), retry_seconds)


if __name__ == "__main__":
    main(sys.argv[1:])

"""The trace writer process: reads call records as JSON lines and writes them to MLflow as traces.

It runs apart from the server so that MLflow's work (span building, serialising, SQLite or HTTP writes) never
competes with the server's event loop for the interpreter lock. Protocol, one JSON object a line:

- in:  `{"record": {...SpanRecord fields...}}`, `{"flush": N}`
- out: `{"status": "ready"}` or `{"status": "unavailable: why"}`, `{"written": total}`, `{"flushed": N}`

If the store cannot be reached it keeps the record, says why and tries again with backoff.

    python -m insight_mcp.agents.core.trace_writer TRACKING_URI EXPERIMENT ARTIFACT_DIR
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from insight_mcp.agents.core.mlflow_store import experiment_id, failure, open_client

# MLflow reads these when its exporter starts; beyond them it drops traces without a word.
MLFLOW_QUEUE_LIMITS = {
    "MLFLOW_ASYNC_TRACE_LOGGING_MAX_QUEUE_SIZE": "100000",
    "MLFLOW_TRACE_BUFFER_MAX_SIZE": "100000",
}


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
    """Connects lazily, writes one record at a time, and reconnects after a failure."""

    def __init__(self, tracking_uri: str, experiment: str, artifacts: Path) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.artifacts = artifacts
        self.mlflow: Any = None
        self.experiment_id: str | None = None
        self.written = 0

    def connect(self) -> None:
        import mlflow

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # MLflow sets its own level when imported
        mlflow.set_tracking_uri(self.tracking_uri)
        self.experiment_id = experiment_id(open_client(self.tracking_uri), self.experiment, self.artifacts)
        self.mlflow = mlflow
        say({"status": "ready"})

    def write(self, record: dict[str, Any]) -> None:
        if self.mlflow is None:
            self.connect()
        span = self.mlflow.start_span_no_context(
            record["name"], span_type=record["span_type"], inputs=record["inputs"], tags=record["tags"],
            experiment_id=self.experiment_id, start_time_ns=record["start_ns"],
        )
        if record.get("error") is not None:
            span.set_attribute("error", record["error"])
        span.set_outputs(record["outputs"])
        span.end(status="ERROR" if record.get("error") is not None else "OK", end_time_ns=record["end_ns"])
        self.written += 1

    def flush(self) -> None:
        if self.mlflow is not None:
            self.mlflow.flush_trace_async_logging()


def serve(writer: Writer, retry_seconds: float) -> None:
    """Write records as they come; keep a record the store refused and try it again later."""
    delay = retry_seconds
    unavailable = False
    try:
        writer.connect()  # MLflow's import and the store's migrations happen now, before the first call
    except Exception as exc:
        unavailable = True
        say({"status": "unavailable: " + failure(exc)})
    for line in sys.stdin:
        message = json.loads(line)
        if "flush" in message:
            writer.flush()
            say({"flushed": message["flush"]})
            continue
        while True:
            try:
                writer.write(message["record"])
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

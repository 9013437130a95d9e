"""Opening the MLflow tracking store safely from several processes at once.

A fresh SQLite store is created by running MLflow's migrations, which are not safe to run twice at the same time:
the trace writer process and an evaluation logging its run could both find the file new, and one would fail with
`duplicate column`. Opening a SQLite store is therefore serialised with a file lock beside the database.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_OPENING = threading.Lock()
_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
UNREACHABLE_HINT = "check MLFLOW_TRACKING_URI or INSIGHT_MLFLOW_TRACKING_URI and try again"


def without_credentials(text: str) -> str:
    """Any URL in the text with its user and password removed: MLflow's errors quote the tracking URI whole."""
    return _CREDENTIALS.sub(r"\g<scheme>", text)


def failure(exc: BaseException) -> str:
    """An MLflow failure in one line a person can read, with no credentials in it."""
    return without_credentials(f"{type(exc).__name__}: {str(exc)[:300]}")


def unreachable(exc: BaseException) -> str:
    """What to tell a person when the tracking store failed them."""
    return f"the MLflow tracking store could not be reached ({failure(exc)}); {UNREACHABLE_HINT}"


def experiment_id(client: Any, name: str, artifacts: Path) -> str:
    """The experiment's id, creating it with its artifacts under `artifacts` (never the working directory)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    artifacts.mkdir(parents=True, exist_ok=True)
    return str(client.create_experiment(name, artifact_location=artifacts.as_uri()))


@contextlib.contextmanager
def store_lock(tracking_uri: str, purpose: str) -> Iterator[None]:
    """One process at a time on a local SQLite store (a lock file beside the database); no-op for remote stores."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(f"{database.name}.{purpose}-lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_client(tracking_uri: str) -> Any:
    """An MlflowClient whose store exists and is migrated; raises what MLflow raises when it cannot be reached."""
    # MLflow prints "View run ... at" to stdout when a run ends on a tracking server: stdout belongs to JSON
    # answers (`--json`) and to the stdio transport, so that print is always off.
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    # Threads of one process opening stores at once race in MLflow's lazy imports of its store models
    # (seen as AttributeError: dimension_attributes): one opening at a time per process as well.
    with _OPENING:
        import mlflow

        # MlflowClient() itself creates and migrates a new SQLite store (TrackingServiceClient and TracingClient
        # fetch their store in __init__), so the client is built under the lock, not only its first call.
        with store_lock(tracking_uri, "init"):
            client = mlflow.MlflowClient(tracking_uri=tracking_uri)
            client.search_experiments(max_results=1)
    return client

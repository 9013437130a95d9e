"""Opening the MLflow tracking store safely from several processes at once.

A fresh SQLite store is created by running MLflow's migrations, which are not safe to run twice at the same time:
the trace writer process and an evaluation logging its run could both find the file new, and one would fail with
`duplicate column`. Opening a SQLite store is therefore serialised with a file lock beside the database.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def _init_lock(tracking_uri: str) -> Iterator[None]:
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".init-lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_client(tracking_uri: str) -> Any:
    """An MlflowClient whose store exists and is migrated; raises what MLflow raises when it cannot be reached."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    with _init_lock(tracking_uri):
        client.search_experiments(max_results=1)  # creates and migrates a new store, once, under the lock
    return client

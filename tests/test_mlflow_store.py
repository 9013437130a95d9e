"""Opening one fresh MLflow store from several processes and threads at once: exactly one of them migrates it."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from insight_mcp.agents.core.mlflow_store import failure, open_client, without_credentials

OPEN_AND_CREATE = """
import sys
from insight_mcp.agents.core.mlflow_store import experiment_id, open_client
from pathlib import Path
client = open_client(sys.argv[1])
experiment_id(client, "exp-" + sys.argv[2], Path(sys.argv[3]))
print("ok")
"""


def test_processes_opening_one_fresh_store_at_once_all_succeed(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_AND_CREATE, uri, str(i), str(tmp_path / "art")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(3)]
    outcomes = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outcomes, strict=True):
        assert proc.returncode == 0 and out.strip() == "ok", err[-2000:]
    names = {e.name for e in open_client(uri).search_experiments()}
    assert {f"exp-{i}" for i in range(3)} <= names


def test_threads_opening_one_fresh_store_at_once_all_succeed(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    errors: list[str] = []

    def open_one() -> None:
        try:
            open_client(uri).search_experiments(max_results=1)
        except Exception as exc:  # collected for the assertion below
            errors.append(failure(exc))

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_failures_never_quote_credentials() -> None:
    text = without_credentials("could not reach https://alice:s3cret@mlflow.example.com/api and http://tok@h/")
    assert "s3cret" not in text and "alice" not in text and "tok@" not in text
    assert "https://mlflow.example.com/api" in text

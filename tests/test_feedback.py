"""Rating an answer: `insight-mcp feedback` stores a HUMAN `rating` assessment on the trace of the call that produced
it, in a real tracking store, where the supervisor's rating trigger finds it; bad ids and a store that is down get
messages a person can act on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from insight_mcp.agents.core.feedback import FeedbackError, rate_call
from insight_mcp.agents.core.mlflow_store import open_client
from insight_mcp.agents.settings import load_settings
from insight_mcp.clients.client import connect_in_process
from insight_mcp.clients.demo import free_port
from insight_mcp.servers.app import build_servers, close_servers
from insight_mcp.servers.common import CALL_ID_META

EXE = Path(sys.executable).with_name("insight-mcp")


def test_a_rating_lands_on_the_trace_of_the_answer(fixture_workspace: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = load_settings(home=home, workspace_file=fixture_workspace, tracing={"enabled": True})
    servers = build_servers(settings, ["system-tables"])

    async def ask() -> str:
        async with connect_in_process(servers["system-tables"]) as client:
            result = await client.raw.call_tool("run_query", {"sql": "SELECT count(*) FROM system.access.audit"})
            return str(result.meta[CALL_ID_META])

    call_id = anyio.run(ask)
    close_servers(servers)  # writes the trace
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INSIGHT_", "MLFLOW_TRACKING"))}
    done = subprocess.run(
        [str(EXE), "feedback", call_id, "--rating", "4", "--comment", "right count, slow", "--by", "dana", "--json"],
        env={**env, "INSIGHT_HOME": str(home)}, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    receipt = json.loads(done.stdout)
    assert receipt["tool"] == "run_query" and receipt["server"] == "system-tables" and receipt["rating"] == 4

    client = open_client(settings.tracking_uri)
    (assessment,) = client.get_trace(receipt["trace_id"]).info.assessments
    assert (assessment.name, assessment.value, assessment.rationale) == ("rating", 4, "right count, slow")
    assert assessment.source.source_type == "HUMAN" and assessment.source.source_id == "dana"
    experiment = client.get_experiment_by_name(settings.tracing.experiment)
    rated = client.search_traces(locations=[experiment.experiment_id], filter_string="feedback.rating >= 4",
                                 include_spans=False)
    assert [t.info.trace_id for t in rated] == [receipt["trace_id"]]


@pytest.mark.parametrize(("call_id", "rating", "message"), [
    ("x' OR 1=1 --", 3, "rate a tool answer by the id in its _meta"),
    ("3f9c0a1b2d4e5f60", 6, "rating must be a whole number"),
])
def test_bad_ratings_are_refused_before_anything_is_written(tmp_path: Path, call_id: str, rating: int,
                                                            message: str) -> None:
    with pytest.raises(FeedbackError, match=message):
        rate_call(f"sqlite:///{tmp_path / 'mlflow.db'}", "insight-mcp", call_id, rating)
    assert not (tmp_path / "mlflow.db").exists()


def test_an_unknown_call_id_says_where_ids_come_from(tmp_path: Path) -> None:
    with pytest.raises(FeedbackError, match=r"nothing with id '3f9c0a1b2d4e5f60'.*_meta"):
        rate_call(f"sqlite:///{tmp_path / 'mlflow.db'}", "insight-mcp", "3f9c0a1b2d4e5f60", 3, wait_seconds=0.5)


def test_a_store_that_is_down_is_named_without_its_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(FeedbackError, match="MLFLOW_TRACKING_URI") as caught:
        rate_call(f"http://dana:hunter2@127.0.0.1:{free_port()}", "insight-mcp", "3f9c0a1b2d4e5f60", 3)
    assert "hunter2" not in str(caught.value)


def test_the_cli_refuses_a_bad_rating_clearly(tmp_path: Path) -> None:
    done = subprocess.run([str(EXE), "feedback", "3f9c0a1b2d4e5f60", "--rating", "9"],
                          env={**os.environ, "INSIGHT_HOME": str(tmp_path)}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "rating" in done.stderr

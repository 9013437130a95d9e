"""Every tool call becomes an MLflow trace in a real tracking store: none lost in a burst, failures marked ERROR,
the tags the supervisor groups by, nothing in the working directory, and calls unaffected when MLflow is down."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from insight_mcp.agents.core.mlflow_store import open_client
from insight_mcp.agents.core.tracing import TRACE_VALUE_CHARS, SpanRecord, experiment_traces, record_line
from insight_mcp.agents.settings import Settings, load_settings
from insight_mcp.clients.client import ToolCallError, connect_in_process
from insight_mcp.servers.app import build_servers, close_servers
from insight_mcp.servers.common import CALL_ID_META


def _settings(home: Path, workspace: Path, **tracing: Any) -> Settings:
    return load_settings(home=home, workspace_file=workspace, tracing={"enabled": True, **tracing})


def _traces(settings: Settings) -> list[Any]:
    experiment = open_client(settings.tracking_uri).get_experiment_by_name(
        settings.tracing.experiment)
    assert experiment is not None, "the tool-call experiment was never created"
    assert experiment.artifact_location.startswith(settings.mlflow_artifacts.as_uri())
    return experiment_traces(settings.tracking_uri, settings.tracing.experiment)


def test_a_burst_of_2000_calls_leaves_2000_traces(
    fixture_workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory
    settings = _settings(tmp_path / "home", fixture_workspace)
    server = build_servers(settings, ["system-tables"])["system-tables"]
    refused = 0

    async def burst() -> list[str]:
        nonlocal refused
        call_ids: list[str] = []
        limiter = anyio.Semaphore(32)

        async def one(client: Any, i: int) -> None:
            nonlocal refused
            async with limiter:
                if i % 10 == 0:
                    try:
                        await client.call("run_query", {"sql": f"DROP TABLE system.access.audit -- {i}"})
                    except ToolCallError:
                        refused += 1
                    return
                answer = await client.raw.call_tool("describe_table", {"table": "system.access.audit"})
                call_ids.append(answer.meta[CALL_ID_META])

        async with connect_in_process(server) as client, anyio.create_task_group() as tg:
            for i in range(2000):
                tg.start_soon(one, client, i)
        return call_ids

    call_ids = anyio.run(burst)
    assert refused == 200 and len(call_ids) == 1800
    assert server.tracer is not None
    assert server.tracer.flush(timeout=600), f"traces still queued; writer status: {server.tracer.status}"
    traces = _traces(settings)
    assert len(traces) == 2000, f"{2000 - len(traces)} traces lost"
    states = {str(t.info.state).rsplit(".", 1)[-1] for t in traces if t.info.tags.get("insight.tool") == "run_query"}
    assert states == {"ERROR"}
    described = [t for t in traces if t.info.tags.get("insight.tool") == "describe_table"]
    assert {t.info.tags["insight.call_id"] for t in described} == set(call_ids)
    assert all(t.info.tags["insight.server"] == "system-tables" for t in traces)
    assert not [p for p in os.listdir(tmp_path) if p != "home"], "MLflow wrote into the working directory"
    close_servers({"system-tables": server})


def test_a_failed_call_is_an_error_trace_with_its_reason(fixture_workspace: Path, tmp_path: Path) -> None:
    settings = _settings(tmp_path / "home", fixture_workspace)
    server = build_servers(settings, ["security"])["security"]

    async def fail() -> None:
        async with connect_in_process(server) as client:
            with pytest.raises(ToolCallError):
                await client.call("get_finding", {"finding_id": "f-nope"})

    anyio.run(fail)
    assert server.tracer is not None and server.tracer.flush(timeout=120)
    (trace,) = _traces(settings)
    assert str(trace.info.state).endswith("ERROR")
    assert trace.info.tags["insight.tool"] == "get_finding" and trace.info.tags["insight.status"] == "error"
    full = open_client(settings.tracking_uri).get_trace(trace.info.trace_id)
    (span,) = full.data.spans
    assert span.inputs == {"finding_id": "f-nope"}
    assert "no finding 'f-nope'" in span.attributes["error"]
    close_servers({"security": server})


def test_calls_keep_working_when_the_tracking_store_is_down(
    fixture_workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from insight_mcp.clients.demo import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    settings = load_settings(home=tmp_path / "home", workspace_file=fixture_workspace, tracing={"enabled": True},
                             mlflow_tracking_uri=f"http://user:secret@127.0.0.1:{free_port()}")
    server = build_servers(settings, ["system-tables"])["system-tables"]

    async def calls() -> list[Any]:
        async with connect_in_process(server) as client:
            return [await client.call("run_query", {"sql": "SELECT count(*) AS n FROM system.access.audit"})
                    for _ in range(5)]

    answers = anyio.run(calls)
    assert [a.structured["rows"] for a in answers if a.structured] == [[[240]]] * 5
    recorder = server.tracer
    assert recorder is not None
    deadline = time.monotonic() + 120
    while not recorder.status.startswith("unavailable") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert recorder.status.startswith("unavailable"), recorder.status
    assert "secret" not in recorder.status
    assert recorder.flush(timeout=0.5) is False, "the records are kept for when the store is back"
    # The writer, still trying, runs at the lowest priority: calls come first on a busy machine.
    assert recorder.writer_pid is not None and os.getpriority(os.PRIO_PROCESS, recorder.writer_pid) == 19
    if hasattr(os, "SCHED_IDLE"):  # and, on Linux, in the class that runs only when nothing else wants the CPU
        assert os.sched_getscheduler(recorder.writer_pid) == os.SCHED_IDLE
    close_servers({"system-tables": server}, timeout=0.5)


def test_an_idle_recorder_stops_without_waiting_and_its_writer_still_finishes_the_store(tmp_path: Path) -> None:
    """Stopping a server that traced nothing must not wait for MLflow's import and the store's creation, nor cut
    them short: the writer reads the end of its input once connected and exits cleanly, leaving a whole store."""
    from insight_mcp.agents.core.mlflow_store import store_lock
    from insight_mcp.agents.core.tracing import TraceRecorder

    store = tmp_path / "mlflow.db"
    recorder = TraceRecorder(f"sqlite:///{store}", "idle", tmp_path / "artifacts")
    with store_lock(f"sqlite:///{store}", "init"):  # the writer cannot finish connecting while this is held
        recorder.start()
        deadline = time.monotonic() + 30
        while recorder._proc is None and time.monotonic() < deadline:  # the feeder spawns it on its first turn
            time.sleep(0.05)
        writer = recorder._proc
        assert writer is not None
        recorder.close()
        assert writer.poll() is None, "close waited for the writer to connect, though it had nothing to write"
    assert writer.wait(timeout=300) == 0
    assert open_client(f"sqlite:///{store}").get_experiment_by_name("idle") is not None


def test_a_writer_whose_server_has_gone_exits_cleanly(tmp_path: Path) -> None:
    """A server stopped while its idle writer was still connecting: the writer's next word meets a closed pipe, and
    it must neither print a traceback into the terminal the server ran in nor fail."""
    import subprocess
    import sys

    store = tmp_path / "mlflow.db"
    writer = subprocess.Popen(
        [sys.executable, "-m", "insight_mcp.agents.core.trace_writer", f"sqlite:///{store}", "gone",
         str(tmp_path / "artifacts")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert writer.stdin is not None and writer.stdout is not None and writer.stderr is not None
    writer.stdin.close()
    writer.stdout.close()  # the server is gone before the writer says it is ready
    assert writer.wait(timeout=300) == 0
    assert "Traceback" not in writer.stderr.read()
    assert open_client(f"sqlite:///{store}").get_experiment_by_name("gone") is not None


def _record(i: int, error: str | None = None) -> dict[str, Any]:
    now = time.time_ns()
    return {"name": "run_query", "span_type": "TOOL", "inputs": {"sql": f"SELECT {i}"},
            "outputs": {"rows": [[i]], "row_count": 1}, "start_ns": now, "end_ns": now + 3_000_000, "error": error,
            "tags": {"insight.tool": "run_query", "insight.call_id": f"{i:016x}",
                     "insight.status": "error" if error else "ok"}}


def test_a_batch_written_again_after_a_failure_leaves_each_trace_once_and_whole(tmp_path: Path) -> None:
    """The writer keeps a batch's spans when the store fails and writes the same ones again: a trace stored before
    the failure is replaced, not duplicated; each trace has its name, tags, state, times, span and previews."""
    from insight_mcp.agents.core.trace_writer import Writer

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    writer = Writer(uri, "batches", tmp_path / "artifacts")
    writer.connect()
    records = [_record(i, error="refused: DROP is not allowed" if i == 3 else None) for i in range(5)]
    spans: list[Any] = []
    writer.write(records, spans)
    writer.write(records, spans)  # as after an outage in which the first write did land
    traces = experiment_traces(uri, "batches")
    assert sorted(t.info.tags["insight.call_id"] for t in traces) == [f"{i:016x}" for i in range(5)]
    client = open_client(uri)
    for summary in traces:
        trace = client.get_trace(summary.info.trace_id)
        (span,) = trace.data.spans
        i = int(trace.info.tags["insight.call_id"], 16)
        assert span.inputs == {"sql": f"SELECT {i}"} and span.outputs == {"rows": [[i]], "row_count": 1}
        assert trace.info.tags["mlflow.traceName"] == "run_query"
        assert trace.info.execution_duration == 3
        assert trace.info.request_preview == json.dumps({"sql": f"SELECT {i}"})
        assert trace.info.response_preview == json.dumps({"rows": [[i]], "row_count": 1})
        assert trace.info.request_time == records[i]["start_ns"] // 1_000_000
        assert str(trace.info.state).endswith("ERROR" if i == 3 else "OK")
    failed = client.get_trace(next(t.info.trace_id for t in traces if t.info.tags["insight.status"] == "error"))
    assert failed.data.spans[0].attributes["error"] == "refused: DROP is not allowed"


def test_records_that_arrive_together_are_written_together_and_a_flush_keeps_its_place() -> None:
    """A flush answers only after the records sent before it, and never waits for ones sent after it."""
    import queue

    from insight_mcp.agents.core.trace_writer import BATCH, next_batch, read_messages

    inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
    lines = [json.dumps({"record": {"n": i}}) + "\n" for i in range(BATCH + 3)]
    lines[2:2] = ["not json at all\n", json.dumps([1, 2]) + "\n"]  # skipped, not fatal
    lines.insert(5, json.dumps({"flush": 9}) + "\n")
    read_messages(iter(lines), inbox)
    records, flush, ended = next_batch(inbox)
    assert [r["n"] for r in records] == [0, 1, 2] and flush == {"flush": 9} and not ended
    records, flush, ended = next_batch(inbox)
    assert len(records) == BATCH and records[0]["n"] == 3 and flush is None and not ended  # at most BATCH at once
    assert records[-1]["n"] == BATCH + 2
    assert next_batch(inbox) == ([], None, True)  # the end of input


def test_a_batch_waits_for_records_that_follow_its_first_until_a_flush_ends_it() -> None:
    """Batches of one cost the store four times the CPU a trace of batches of fifty: the writer lingers for more."""
    import queue
    import threading

    from insight_mcp.agents.core.trace_writer import next_batch

    inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
    inbox.put({"record": {"n": 0}})

    def later() -> None:  # once the batch has taken the first record and found nothing more waiting
        while not inbox.empty():
            time.sleep(0.01)
        time.sleep(0.1)
        inbox.put({"record": {"n": 1}})
        inbox.put({"flush": 4})

    threading.Thread(target=later, daemon=True).start()
    records, flush, ended = next_batch(inbox, quiet=60.0, linger=60.0)
    assert [r["n"] for r in records] == [0, 1] and flush == {"flush": 4} and not ended
    inbox.put({"record": {"n": 2}})
    assert next_batch(inbox, linger=0.0) == ([{"n": 2}], None, False)  # no linger: what is waiting, at once


def test_a_burst_is_written_after_it_ends_and_a_long_one_when_the_linger_is_up() -> None:
    """The writer waits for a pause in the calls, so that their traces do not take the CPU the calls want; a burst
    that goes on is still written every `linger` seconds."""
    import queue
    import threading

    from insight_mcp.agents.core.trace_writer import next_batch

    def burst(inbox: queue.Queue[dict[str, Any] | None], count: int, gap: float) -> None:
        for n in range(1, count):
            time.sleep(gap)
            inbox.put({"record": {"n": n}})

    inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
    inbox.put({"record": {"n": 0}})
    sender = threading.Thread(target=burst, args=(inbox, 12, 0.02), daemon=True)
    sender.start()
    # Records 20 ms apart never leave a pause of 1 s: the batch holds the whole burst, then ends at the pause.
    records, flush, ended = next_batch(inbox, quiet=1.0, linger=60.0)
    sender.join()
    assert [r["n"] for r in records] == list(range(12)) and flush is None and not ended
    assert inbox.empty()

    inbox.put({"record": {"n": 0}})
    stop = threading.Event()

    def endless() -> None:  # a record every 10 ms, for as long as the test needs
        n = 1
        while not stop.is_set():
            time.sleep(0.01)
            inbox.put({"record": {"n": n}})
            n += 1

    threading.Thread(target=endless, daemon=True).start()
    try:  # no pause ever comes: the linger ends the batch, and the records after it start the next one
        first, _, _ = next_batch(inbox, quiet=60.0, linger=0.3)
        second, _, _ = next_batch(inbox, quiet=60.0, linger=0.3)
    finally:
        stop.set()
    assert 1 < len(first) and second[0]["n"] == len(first)


def test_a_record_line_keeps_small_values_whole_and_cuts_large_ones() -> None:
    record = SpanRecord(name="run_query", span_type="TOOL", inputs={"sql": "SELECT 1", "n": 2**70},
                        outputs={"rows": [["a\u202eb", None, 1.5]], "when": dt.date(2026, 11, 30)},
                        start_ns=1, end_ns=2, error=None, tags={"insight.tool": "run_query"})
    line = json.loads(record_line(record))["record"]
    assert line == {"name": "run_query", "span_type": "TOOL", "inputs": {"sql": "SELECT 1", "n": 2**70},
                    "outputs": {"rows": [["a\u202eb", None, 1.5]], "when": "2026-11-30"},
                    "start_ns": 1, "end_ns": 2, "error": None, "tags": {"insight.tool": "run_query"}}

    big = SpanRecord(name="t", span_type="TOOL", inputs={}, outputs={"text": "x" * 100_000}, start_ns=1, end_ns=2,
                     error="boom")
    cut = json.loads(record_line(big))["record"]
    assert cut["outputs"]["truncated"] is True and cut["outputs"]["chars"] == len('{"text":""}') + 100_000
    assert len(cut["outputs"]["head"]) == TRACE_VALUE_CHARS and cut["outputs"]["head"].startswith('{"text":"xxx')
    assert cut["inputs"] == {} and cut["error"] == "boom"

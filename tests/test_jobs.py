"""Jobs: a handle at once, progress, a result or a clear error, cancellation, callers kept apart, and restarts that
never leave a job silently `running`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from insight_mcp.agents.core.jobs import JobNotFound, JobRecord, JobRunner, Progress
from insight_mcp.agents.core.state import StateStore


def _until_finished(runner: JobRunner, job_id: str, owner: str, seconds: float = 30) -> JobRecord:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        record = runner.get(job_id, owner)
        if record.finished:
            return record
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {runner.get(job_id, owner).status} after {seconds} s")


@pytest.fixture
def runner(tmp_path: Path) -> Any:
    made = JobRunner(StateStore(tmp_path / "state.db"))
    yield made
    made.close()


def test_a_job_reports_progress_and_keeps_its_result(runner: JobRunner) -> None:
    seen: list[float] = []

    async def count(progress: Progress) -> dict[str, int]:
        for i in range(1, 5):
            progress(i / 4, f"step {i} of 4")
            await anyio.sleep(0.3)
        return {"counted": 4}

    started = runner.submit("count", "alice", {"to": 4}, count)
    assert started.status in ("queued", "running") and started.params == {"to": 4}
    assert len(started.id) > 20, "handles are long random tokens"
    while not (record := runner.get(started.id, "alice")).finished:
        seen.append(record.progress)
        time.sleep(0.05)
    assert record.status == "succeeded" and record.result == {"counted": 4} and record.progress == 1.0
    assert record.started_at is not None and record.finished_at is not None
    assert any(0 < p < 1 for p in seen), "progress was visible while it ran"
    assert [j.id for j in runner.list("alice")] == [started.id]


def test_a_failing_job_says_why_without_a_traceback(tmp_path: Path) -> None:
    runner = JobRunner(StateStore(tmp_path / "state.db"),
                       describe_error=lambda exc: str(exc) if isinstance(exc, ValueError) else "internal error")

    async def bad_dataset(progress: Progress) -> None:
        raise ValueError("unknown dataset 'nope': list them with list_evaluations")

    async def crash(progress: Progress) -> None:
        raise RuntimeError("secret internals")

    first = runner.submit("evaluate", "alice", {}, bad_dataset)
    second = runner.submit("evaluate", "alice", {}, crash)
    assert _until_finished(runner, first.id, "alice").error == "unknown dataset 'nope': list them with list_evaluations"
    crashed = _until_finished(runner, second.id, "alice")
    assert crashed.status == "failed" and crashed.error == "internal error"
    runner.close()


def test_cancel_stops_the_work(runner: JobRunner) -> None:
    reached: list[int] = []

    async def slow(progress: Progress) -> None:
        for i in range(100):
            reached.append(i)
            await anyio.sleep(0.1)

    job = runner.submit("slow", "alice", {}, slow)
    time.sleep(0.5)
    assert runner.cancel(job.id, "alice").status == "cancelled"
    before = len(reached)
    time.sleep(0.5)
    assert len(reached) <= before + 1, "the work stopped"
    assert runner.get(job.id, "alice").status == "cancelled"


def test_handles_are_bound_to_their_caller(runner: JobRunner) -> None:
    async def quick(progress: Progress) -> int:
        return 1

    job = runner.submit("quick", "alice", {}, quick)
    for call in (lambda: runner.get(job.id, "mallory"), lambda: runner.cancel(job.id, "mallory")):
        with pytest.raises(JobNotFound, match="no job"):
            call()
    assert runner.list("mallory") == []
    assert _until_finished(runner, job.id, "alice").status == "succeeded"


def test_a_restart_marks_interrupted_jobs_failed_with_the_reason(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    first = JobRunner(store)

    async def forever(progress: Progress) -> None:
        progress(0.5, "half way")
        await anyio.sleep(3600)

    job = first.submit("forever", "alice", {}, forever)
    time.sleep(0.3)
    assert first.get(job.id, "alice").status == "running"
    # A second process on the same store (a stdio server beside `serve`) leaves a live runner's jobs alone.
    neighbour = JobRunner(store)
    assert neighbour.interrupted == 0 and neighbour.get(job.id, "alice").status == "running"
    # The first process dies: its heartbeat stops, and nothing is closed. The next runner to start says so.
    first._stopped.set()
    with store.transaction() as conn:
        conn.execute("UPDATE instances SET heartbeat_at = heartbeat_at - 3600 WHERE id = ?", (first.instance,))
    restarted = JobRunner(store)
    assert restarted.interrupted == 1
    record = restarted.get(job.id, "alice")
    assert record.status == "failed" and record.error is not None and "interrupted" in record.error
    assert record.progress == 0.5, "how far it got is kept"
    first.close()
    assert restarted.get(job.id, "alice").status == "failed", "the old instance's shutdown does not rewrite it"
    for runner in (neighbour, restarted):
        runner.close()


async def test_wait_reports_each_change_until_done(runner: JobRunner) -> None:
    async def steps(progress: Progress) -> str:
        for i in range(1, 4):
            progress(i / 3, f"step {i}")
            await anyio.sleep(0.4)
        return "ok"

    job = runner.submit("steps", "alice", {}, steps)
    updates: list[float] = []

    async def note(record: JobRecord) -> None:
        updates.append(record.progress)

    final = await runner.wait(job.id, "alice", timeout=30, on_progress=note)
    assert final.status == "succeeded" and final.result == "ok"
    assert updates == sorted(updates) and updates[-1] == 1.0 and len(updates) >= 3


def test_a_failed_transaction_leaves_nothing_half_written(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    with pytest.raises(RuntimeError), store.transaction() as conn:
        conn.execute("INSERT INTO jobs (id, kind, owner, status, params, instance, created_at) "
                     "VALUES ('j1', 'k', 'o', 'queued', '{}', 'i', 'now')")
        raise RuntimeError("interrupted half way")
    with store.transaction() as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 0
    assert StateStore(tmp_path / "state.db").path.exists(), "opening an existing store again is harmless"


def test_closing_with_a_job_running_ends_promptly_and_says_so(tmp_path: Path) -> None:
    """The job's own cancellation writes its end while close() stops the loop: neither may wait on the other."""
    import threading

    runner = JobRunner(StateStore(tmp_path / "state.db"))

    async def forever(progress: Progress) -> None:
        await anyio.sleep(3600)

    for _ in range(3):
        runner.submit("forever", "alice", {}, forever)
    time.sleep(0.3)
    closer = threading.Thread(target=runner.close, daemon=True)
    closer.start()
    closer.join(timeout=60)
    assert not closer.is_alive(), "close() deadlocked with its own jobs"
    assert {j.status for j in JobRunner(StateStore(tmp_path / "state.db")).list("alice")} == {"cancelled"}


def test_the_caller_is_the_holder_of_the_bearer_token_else_this_machine() -> None:
    from types import SimpleNamespace

    from starlette.datastructures import Headers

    from insight_mcp.servers.jobs import caller_of

    def who(headers: Headers | None) -> str:
        return caller_of(SimpleNamespace(headers=headers))  # type: ignore[arg-type]

    alice = who(Headers({"authorization": "Bearer alice-token", "host": "127.0.0.1"}))
    assert alice.startswith("token:") and len(alice) == len("token:") + 24 and "alice" not in alice
    assert who(Headers({"Authorization": "bearer  alice-token "})) == alice  # scheme and spacing as HTTP allows
    assert who(Headers({"authorization": "Bearer bob-token"})) not in (alice, "local")
    assert who(Headers({"authorization": "Basic YWxpY2U6eA=="})) == "local"
    assert who(Headers({"host": "127.0.0.1"})) == "local"
    assert who(Headers({})) == "local"
    assert who(None) == "local"

"""The supervisor's durable decisions: one claim per trip across threads and restarts, cooldowns that hold."""

from __future__ import annotations

import threading
from pathlib import Path

from insight_mcp.agents.core.state import StateStore
from insight_mcp.agents.supervision import state


def test_only_one_of_many_concurrent_trips_is_claimed(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    claims: list[str | None] = []
    barrier = threading.Barrier(8)

    def trip() -> None:
        barrier.wait()
        claims.append(state.claim_trip(StateStore(tmp_path / "state.db"), "summary", 1000.0, 600, {"why": "x"}))

    threads = [threading.Thread(target=trip) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len([c for c in claims if c]) == 1
    current = state.load(store, "summary")
    assert current.claim_id == next(c for c in claims if c) and current.cooldown_until == 1600.0


def test_a_claim_survives_a_restart_and_the_cooldown_holds_after_the_job(tmp_path: Path) -> None:
    claim = state.claim_trip(StateStore(tmp_path / "state.db"), "summary", 1000.0, 600, {"why": "x"})
    assert claim is not None
    reopened = StateStore(tmp_path / "state.db")  # a new process after kill -9
    assert state.load(reopened, "summary").claim_id == claim
    assert state.claim_trip(reopened, "summary", 1001.0, 600, {}) is None  # in flight: no second trip
    state.record_job(reopened, "summary", claim, "job-1")
    assert state.load(reopened, "summary").inflight_job == "job-1"
    state.release(reopened, "summary", keep_cooldown=True, outcome={"status": "succeeded"})
    after = state.load(reopened, "summary")
    assert after.inflight_job is None and after.last_trip["outcome"] == {"status": "succeeded"}
    assert state.claim_trip(reopened, "summary", 1500.0, 600, {}) is None  # still cooling down
    assert state.claim_trip(reopened, "summary", 1601.0, 600, {}) is not None


def test_a_call_that_never_reached_the_server_releases_the_cooldown(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    state.claim_trip(store, "summary", 1000.0, 600, {})
    state.release(store, "summary", keep_cooldown=False, outcome={"error": "connection refused"})
    assert state.claim_trip(store, "summary", 1001.0, 600, {}) is not None


def test_the_watermark_only_moves_forward(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    state.save_watermark(store, "summary", 5000)
    state.save_watermark(store, "summary", 4000)
    assert state.load(store, "summary").watermark_ms == 5000

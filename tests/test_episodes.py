"""One finding per episode: the same rule, principal and evidence recurring night after night is one finding with a
count and a time range; a pause longer than the rule's dedup window starts a new one."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import anyio

from insight_mcp.agents.security.case_workspace import build_workspace
from insight_mcp.agents.security.engine import DetectionEngine
from insight_mcp.agents.security.episodes import merge_episodes
from insight_mcp.agents.security.model import Evidence, Finding
from insight_mcp.agents.settings import DetectionSettings

SPN = "7c1e2d3f-0000-4000-8000-00000000abcd"


def nightly(days: list[int]) -> list[dict[str, object]]:
    """A job whose expired credential fails twenty times at 02:00 on each of these days of November."""
    return [{"t": f"2026-11-{day:02d}T02:00:00", "email": SPN, "ip": "10.0.0.7", "service": "accounts",
             "action": "tokenLogin", "status": 401, "repeat": 20, "every_seconds": 30} for day in days]


def detect(folder: Path, days: list[int]) -> list[Finding]:
    folder.mkdir(parents=True, exist_ok=True)
    workspace = build_workspace(folder / "ws.duckdb", {"audit": nightly(days)})
    engine = DetectionEngine(workspace, DetectionSettings(), only=["brute_force_user"])
    try:
        run = anyio.run(lambda: engine.run(dt.datetime(2026, 11, 1), dt.datetime(2026, 11, 30)))
    finally:
        engine.close()
    return run.findings


def test_a_nightly_failure_is_one_finding_with_its_count_and_range(tmp_path: Path) -> None:
    (episode,) = detect(tmp_path, [10, 11, 12, 13, 14])
    assert episode.occurrences == 5 and episode.event_count == 100
    assert episode.first_seen == dt.datetime(2026, 11, 10, 2, 0)
    assert episode.last_seen.date() == dt.date(2026, 11, 14)
    again = detect(tmp_path / "again", [10, 11, 12, 13, 14])
    assert [f.id for f in again] == [episode.id], "the same window gives the same id"


def test_a_pause_longer_than_the_dedup_window_starts_a_new_episode(tmp_path: Path) -> None:
    first, second = sorted(detect(tmp_path, [10, 11, 15, 16]), key=lambda f: f.first_seen)
    assert (first.occurrences, second.occurrences) == (2, 2)
    assert first.last_seen.date() == dt.date(2026, 11, 11) and second.first_seen.date() == dt.date(2026, 11, 15)


def _finding(rule: str, principal: str, day: int, **fields: object) -> Finding:
    at = dt.datetime(2026, 11, day, 2)
    return Finding(id=f"f-{rule}-{principal}-{day}", rule_id=rule, category="secrets_access", severity="medium",
                   title="t", principal=principal, workspace_id="1", first_seen=at, last_seen=at, event_count=3,
                   evidence=Evidence(event_ids=[f"e{day}"], fields=fields), mitre=[], recommendation="r",
                   threat_model="insider")


def test_only_the_same_rule_principal_and_evidence_shape_merge() -> None:
    merged = merge_episodes([_finding("a", "x", 1, scope="s"), _finding("a", "x", 2, scope="s"),
                             _finding("a", "y", 2, scope="s"), _finding("b", "x", 2, scope="s"),
                             _finding("a", "x", 3, scope="s", tables=["t"])], {"a": 24, "b": 24})
    assert sorted((f.rule_id, f.principal, f.occurrences) for f in merged) == [
        ("a", "x", 1), ("a", "x", 2), ("a", "y", 1), ("b", "x", 1)]
    longer = merge_episodes([_finding("a", "x", 1), _finding("a", "x", 3)], {"a": 48})
    assert [f.occurrences for f in longer] == [2], "a 48-hour dedup window bridges a day's pause"

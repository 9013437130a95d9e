"""The embedded runner's action slice: which reads of the audit table it may serve, and that serving them changes
no finding."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import anyio
import sqlglot
from sqlglot import exp

from insight_mcp.agents.security.action_slice import point_at_slice, slice_actions, slice_table
from insight_mcp.agents.security.engine import DetectionEngine, DetectionRun
from insight_mcp.agents.security.runners import _selects_every_column
from insight_mcp.agents.settings import DetectionSettings

BOUNDS = "event_time >= :baseline_start AND event_time < :until"


def _actions(where: str, *, bounds: str = BOUNDS, source: str = "system.access.audit") -> frozenset[str] | None:
    tree = sqlglot.parse_one(f"SELECT event_id FROM {source} WHERE {bounds} AND ({where})", read="databricks")
    return slice_actions(tree)


def test_a_read_is_sliced_by_the_actions_its_where_names() -> None:
    assert _actions("action_name = 'login'") == {"login"}
    assert _actions("service_name = 'accounts' AND action_name IN ('login', 'tokenLogin')") == {"login", "tokenLogin"}
    assert _actions("action_name IN ('a', 'b') AND action_name IN ('b', 'c')") == {"b"}
    assert _actions("action_name IN ('a') OR (action_name = 'b' AND response.status_code = 403)") == {"a", "b"}
    assert _actions("concat(service_name, '.', action_name) IN ('secrets.getSecret', 'dbfs.read')") == {
        "getSecret", "read"}


def test_a_read_that_could_see_other_actions_reads_the_table() -> None:
    assert _actions("action_name IN ('a') OR service_name = 'secrets'") is None  # the OR lets any action through
    assert _actions("NOT action_name IN ('a')") is None
    assert _actions("lower(action_name) = 'login'") is None
    assert _actions("action_name IN (SELECT action_name FROM system.access.audit)") is None
    assert _actions("service_name = 'accounts'") is None
    # the slice holds [earliest baseline, until): a read without both bounds, or other bounds, may need more
    assert _actions("action_name = 'login'", bounds="event_time >= :since") is None
    assert _actions("action_name = 'login'", bounds="event_time < :until") is None
    assert _actions("action_name = 'login'", bounds="event_time >= :since - INTERVAL 1 DAY AND event_time < :until"
                    ) is None
    assert _actions("action_name = 'login'", bounds="event_time >= :since AND event_time < :until + INTERVAL 1 DAY"
                    ) is None


def test_a_join_or_another_tables_column_keeps_the_read_on_the_table() -> None:
    joined = sqlglot.parse_one(
        "SELECT a.event_id FROM system.access.audit a JOIN system.access.audit b ON a.event_id = b.event_id "
        "WHERE a.event_time >= :since AND a.event_time < :until AND a.action_name = 'login'", read="databricks")
    assert slice_actions(joined) is None
    other = sqlglot.parse_one(f"SELECT event_id FROM system.access.audit AS x WHERE {BOUNDS} AND y.action_name = 'a'",
                              read="databricks")
    assert slice_actions(other) is None


def test_only_the_sliceable_reads_are_pointed_at_the_slice_and_the_rule_is_not_changed() -> None:
    tree = sqlglot.parse_one(
        f"WITH a AS (SELECT event_id FROM system.access.audit WHERE {BOUNDS} AND action_name = 'login'), "
        f"b AS (SELECT event_id FROM system.access.audit ev WHERE {BOUNDS} AND service_name = 'x') "
        "SELECT * FROM a JOIN b USING (event_id)", read="databricks")
    before = tree.sql("databricks")
    pointed = point_at_slice(tree, slice_table)
    assert tree.sql("databricks") == before
    tables = [(t.catalog, t.db, t.name, t.alias) for t in pointed.find_all(exp.Table) if t.db]
    assert ("scratch", "main", "slice_access_audit", "audit") in tables
    assert ("system", "access", "audit", "ev") in tables


def test_the_sliced_suite_finds_exactly_what_reading_the_table_finds(demo_workspace: Path) -> None:
    engine = DetectionEngine(demo_workspace, DetectionSettings())
    try:
        since, until = dt.datetime(2026, 11, 7), dt.datetime(2026, 11, 21)
        sliced = anyio.run(lambda: engine.run(since, until))
        cursor = engine.backend.cursor()  # type: ignore[attr-defined]
        try:  # the copy is emptied after the run: an idle server holds none of it
            assert cursor.execute(f"SELECT count(*) FROM {slice_table().sql('duckdb')}").fetchone() == (0,)
        finally:
            engine.backend.release(cursor)  # type: ignore[attr-defined]
        engine.runner.slice_min_rules = 10**6  # type: ignore[attr-defined]
        plain = anyio.run(lambda: engine.run(since, until))
    finally:
        engine.close()
    assert sliced.slice_ms > 0 and plain.slice_ms == 0
    assert [s for s in sliced.stats if s.error] == []
    assert len(sliced.findings) > 20

    def shape(run: DetectionRun) -> list[tuple[object, ...]]:
        return sorted((f.id, f.severity, f.first_seen, f.last_seen, f.event_count, len(f.evidence.event_ids),
                       sorted(f.evidence.fields)) for f in run.findings)

    assert shape(sliced) == shape(plain)


def test_a_rule_selecting_every_column_of_the_table_gets_a_slice_of_every_column() -> None:
    def every(sql: str) -> bool:
        tree = sqlglot.parse_one(sql, read="databricks")
        return any(_selects_every_column(s, "access", "audit") for s in tree.find_all(exp.Star))

    assert every("SELECT * FROM system.access.audit WHERE action_name = 'a'")
    assert every("SELECT a.* FROM system.access.audit a")
    assert every("SELECT * FROM (SELECT * FROM system.access.audit) x")
    assert not every("SELECT count(*) FROM system.access.audit")
    assert not every("WITH g AS (SELECT event_id FROM system.access.audit) SELECT *, 1 FROM g")

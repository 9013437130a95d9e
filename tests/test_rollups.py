"""Shared rollups: built once per run for the embedded engine, carried inside each rule's portable SQL for the others.

The central check: a rule read through the shared rollup and the same rule run from its standalone portable SQL give
the same findings, on the labelled scenarios of its case file and on a generated estate.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlglot
import yaml

from insight_mcp.agents.ingestion.catalog import TABLES
from insight_mcp.agents.ingestion.generator import generate_workspace
from insight_mcp.agents.security.case_workspace import build_workspace
from insight_mcp.agents.security.compiler import (
    RuleCompileError,
    compile_rollup,
    inject_rollups,
    rollups_read,
)
from insight_mcp.agents.security.engine import DetectionEngine
from insight_mcp.agents.security.model import Finding, Rollup
from insight_mcp.agents.security.rule_cases import cases_by_rule
from insight_mcp.agents.security.rules import RuleFileError, builtin_rule_dirs, load_rollups, load_rules
from insight_mcp.agents.settings import DetectionSettings

WS = "ws"  # where these tests attach the workspace

CASES = cases_by_rule(builtin_rule_dirs())
RULES = {rule.id: rule for rule, _ in load_rules(builtin_rule_dirs())}
ROLLUP_IDS = [rollup.id for rollup, _ in load_rollups()]


def _readers() -> list[str]:
    """Built-in rules whose queries read a shared rollup by name."""
    out = []
    for rule_id, rule in RULES.items():
        if rollups_read(sqlglot.parse_one(rule.query, read="databricks"), ROLLUP_IDS):
            out.append(rule_id)
    return out


READERS = _readers()


def _portable_copy(engine: DetectionEngine, rule_id: str, folder: Path) -> str:
    """Write the rule's standalone portable SQL as a user rule of its own; return its id."""
    compiled = engine.rules[rule_id]
    copy_id = f"{rule_id}_portable"
    data = RULES[rule_id].model_dump(mode="json", exclude={"parameters"})
    data |= {"id": copy_id, "query": compiled.databricks_sql}
    (folder / f"{copy_id}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return copy_id


def _shape(findings: list[Finding], rule_id: str) -> list[tuple[Any, ...]]:
    return sorted(
        (f.principal, f.first_seen, f.last_seen, f.event_count, f.severity, tuple(sorted(f.evidence.event_ids)))
        for f in findings if f.rule_id == rule_id
    )


def _compare(workspace: Path, rule_id: str, since: dt.datetime, until: dt.datetime, folder: Path) -> int:
    """Run the rule both ways over one window; return how many findings they agreed on."""
    probe = DetectionEngine(workspace, DetectionSettings(), only=[rule_id])
    try:
        copy_id = _portable_copy(probe, rule_id, folder)
    finally:
        probe.close()
    engine = DetectionEngine(workspace, DetectionSettings(rules_dir=folder), only=[rule_id, copy_id])
    try:
        assert engine.rules[rule_id].rollups, "the built-in rule should read the shared rollup"
        assert engine.rules[copy_id].rollups == [], "the portable SQL should stand alone"
        assert f"FROM {WS}." not in engine.rules[rule_id].databricks_sql
        run = anyio.run(lambda: engine.run(since, until, rule_ids=[rule_id, copy_id]))
    finally:
        engine.close()
    assert [s for s in run.stats if s.error] == []
    shared, portable = _shape(run.findings, rule_id), _shape(run.findings, copy_id)
    assert shared == portable
    return len(shared)


def test_some_rules_read_the_shared_history() -> None:
    assert "audit_ip_history" in ROLLUP_IDS
    assert {"first_seen_public_ip", "ip_many_principals", "session_multiple_public_ips"} <= set(READERS)


@pytest.mark.parametrize("rule_id", READERS)
def test_portable_sql_answers_like_the_shared_rollup_on_the_rule_cases(tmp_path: Path, rule_id: str) -> None:
    case = CASES[rule_id]
    agreed = 0
    for i, scenario in enumerate(case.fires + case.near_misses):
        workspace = build_workspace(tmp_path / f"ws{i}.duckdb", scenario.tables)
        window = case.window_of(scenario)
        folder = tmp_path / f"rules{i}"
        folder.mkdir()
        agreed += _compare(workspace, rule_id, window.since, window.until, folder)
    assert agreed >= len(case.fires)  # every firing scenario gave at least one finding both ways


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rollup-estate") / "workspace.duckdb"
    generate_workspace(path, days=30, users=80, seed=5, events_per_day=4000, end=dt.date(2026, 11, 1))
    return path


def test_portable_sql_answers_like_the_shared_rollup_on_a_generated_estate(tmp_path: Path, estate: Path) -> None:
    until = dt.datetime(2026, 11, 1)
    agreed = {}
    for rule_id in READERS:
        folder = tmp_path / rule_id
        folder.mkdir()
        agreed[rule_id] = _compare(estate, rule_id, until - dt.timedelta(days=7), until, folder)
    # The estate's session-hijacking and token-abuse scenarios give the IP-history rules findings to agree on.
    assert agreed["session_multiple_public_ips"] >= 1 and agreed["first_seen_public_ip"] >= 2, agreed


def test_the_portable_sql_defines_the_rollup_before_the_rule_uses_it() -> None:
    rule = RULES["first_seen_public_ip"]
    own = sqlglot.parse_one(rule.query, read="databricks")
    rollup = sqlglot.parse_one(load_rollups()[0][0].query, read="databricks")
    portable = inject_rollups(own, {"audit_ip_history": rollup})
    names = [cte.alias_or_name for cte in portable.args["with_"].expressions]
    assert names[0] == "audit_ip_history" and names[1:] == [c.alias_or_name for c in own.args["with_"].expressions]
    assert rollups_read(portable, ROLLUP_IDS) == []  # now it is the query's own CTE


def test_a_query_cte_named_like_a_rollup_is_its_own() -> None:
    tree = sqlglot.parse_one(
        "WITH audit_ip_history AS (SELECT 1 AS x) SELECT * FROM audit_ip_history", read="databricks"
    )
    assert rollups_read(tree, ROLLUP_IDS) == []


def test_a_rollup_may_use_only_the_run_parameters() -> None:
    rollup = Rollup(
        id="bad_rollup", description="uses a rule parameter it cannot have", tables=["system.access.audit"],
        query="SELECT user_identity.email AS principal FROM system.access.audit WHERE response.status_code > :floor",
    )
    with pytest.raises(RuleCompileError, match=r"bad_rollup.yaml: field 'query'.*floor.*a rollup takes only"):
        compile_rollup(rollup, "bad_rollup.yaml", allowed_tables=TABLES.keys(),
                       table_target=lambda s, t: sqlglot.exp.table_(t, db=s, catalog=WS), engine_functions=set())


def test_a_rollup_is_guarded_like_a_rule() -> None:
    rollup = Rollup(id="sneaky", description="reads a file instead of a table", tables=["system.access.audit"],
                    query="SELECT * FROM read_csv('/etc/passwd') WHERE 1 = 1")
    with pytest.raises(RuleCompileError, match=r"sneaky\.yaml: query refused by the guard"):
        compile_rollup(rollup, "sneaky.yaml", allowed_tables=TABLES.keys(),
                       table_target=lambda s, t: sqlglot.exp.table_(t, db=s, catalog=WS), engine_functions=set())


def test_a_bad_rollup_file_names_file_and_field(tmp_path: Path) -> None:
    (tmp_path / "short.yaml").write_text("id: short\ndescription: too short a query\ntables: [system.access.audit]\n"
                                         "query: SELECT 1\n")
    with pytest.raises(RuleFileError, match=r"short\.yaml: field 'query'"):
        load_rollups(tmp_path)

"""The detection engine: knows no rule in particular; loads, compiles, runs them in parallel and normalises findings."""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import anyio
import duckdb
import sqlglot
import sqlglot.errors
import structlog
from pydantic import BaseModel, Field
from sqlglot import exp

from insight_mcp.agents.ingestion.backend import BackendError, json_value
from insight_mcp.agents.ingestion.catalog import TABLES, get_table
from insight_mcp.agents.security.compiler import (
    CompiledRollup,
    CompiledRule,
    RuleCompileError,
    compile_rollup,
    compile_rule,
    rollup_table,
)
from insight_mcp.agents.security.episodes import merge_episodes
from insight_mcp.agents.security.model import (
    SEVERITY_RANK,
    Evidence,
    Finding,
    Rule,
    finding_id,
)
from insight_mcp.agents.security.rules import builtin_rule_dirs, load_rollups, load_rules
from insight_mcp.agents.settings import DetectionSettings, Suppression
from insight_mcp.agents.sql.ipnet import in_networks, parse_networks

log = structlog.get_logger("insight_mcp.detections")

WS = "ws"  # the workspace file, attached read-only
SLICE_PREFIX = "slice_"
ADMIN_WORK = {"privilege_escalation", "defense_evasion", "supply_chain"}


class RuleStat(BaseModel):
    rule_id: str
    ms: float
    rows: int
    error: str | None = None


class DetectionRun(BaseModel):
    """Findings of one run, with what each rule cost."""

    since: dt.datetime
    until: dt.datetime
    findings: list[Finding]
    suppressed: int
    rules_run: int
    stats: list[RuleStat] = Field(default_factory=list)
    skipped: dict[str, str] = Field(default_factory=dict, description="Rules not run, and why.")
    slice_ms: float = 0.0
    rollup_ms: float = Field(0.0, description="Time spent building the shared rollups the rules read.")


def baseline_start(since: dt.datetime, days: int) -> dt.datetime:
    """Where a rule's history starts: `days` whole days before the window's first day, whatever runs beside it."""
    if days <= 0:
        return since
    return since.replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(days=days)


def _open_engine(workspace: Path) -> duckdb.DuckDBPyConnection:
    """In-memory scratch for shared slices, the workspace attached read-only, then locked."""
    if not workspace.exists():
        raise BackendError(
            f"no workspace at {workspace}: run `insight-mcp workspace generate` or `insight-mcp workspace load`"
        )
    conn = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                               "autoload_known_extensions": False})
    conn.execute(f"ATTACH '{workspace.as_posix()}' AS {WS} (READ_ONLY)")
    conn.execute("SET GLOBAL TimeZone = 'UTC'")
    conn.execute("SET GLOBAL enable_external_access = false")
    conn.execute("SET GLOBAL lock_configuration = true")
    return conn


def _table_target(sliced: set[str]) -> Any:
    def target(schema_name: str, table_name: str) -> exp.Table:
        full = f"system.{schema_name}.{table_name}"
        if full in sliced:
            return exp.table_(f"{SLICE_PREFIX}{schema_name}_{table_name}", db="main", catalog="memory")
        return exp.table_(table_name, db=schema_name, catalog=WS)

    return target


def _columns_read(table: str, rules: list[Rule]) -> str:
    """The columns of `table` any of these rules names: the shared slice carries only those."""
    spec = get_table(table)
    names = {c.name for c in spec.columns}
    used = {spec.time_column, *spec.event_key}
    for rule in rules:
        if table in rule.tables:
            try:
                tree = sqlglot.parse_one(rule.query, read="databricks")
            except sqlglot.errors.ParseError:
                return "*"  # the compiler will name the fault
            used |= {ident.name.lower() for ident in tree.find_all(exp.Identifier)} & names
    return ", ".join(f'"{c.name}"' for c in spec.columns if c.name in used)


# Compiled rules by everything their compilation reads, shared by the engines of one process: compiling the suite
# takes seconds (sqlglot parses, transforms and checks every query), and a server builds an engine per workspace.
_COMPILED: dict[tuple[object, ...], CompiledRule] = {}
MAX_COMPILED = 2000


def _engine_key(sliced: set[str], functions: set[str], rollups: dict[str, CompiledRollup]) -> tuple[object, ...]:
    """What every rule's compiled SQL depends on in this engine: its slices, functions and rollups."""
    import hashlib

    functions_digest = hashlib.sha256("\n".join(sorted(functions)).encode()).hexdigest()
    return frozenset(sliced), functions_digest, tuple(sorted((k, v.duckdb_sql) for k, v in rollups.items()))


def _references(folder: Path) -> tuple[object, ...]:
    """The reference lists beside a folder's rules, by name, time and size: a rule's from_file parameters read them."""
    return tuple(sorted((ref.name, ref.stat().st_mtime_ns, ref.stat().st_size) for ref in folder.glob("*.txt")))


class DetectionEngine:
    """Rules compiled once against one workspace; `run` answers a window."""

    def __init__(
        self,
        workspace: Path,
        config: DetectionSettings,
        *,
        sliced_tables: Iterable[str] = (),
        only: Iterable[str] | None = None,
    ) -> None:
        self.workspace = workspace
        self.config = config
        self._conn = _open_engine(workspace)
        self._lock = anyio.Lock()  # runs share the slice and rollup tables; waiting must not block the event loop
        self._sliced = set(sliced_tables)
        folders = builtin_rule_dirs() + ([config.rules_dir] if config.rules_dir else [])
        self.rules: dict[str, CompiledRule] = {}
        listed = self._conn.execute("SELECT function_name FROM duckdb_functions()").fetchall()
        functions = {r[0].lower() for r in listed}
        wanted = set(only) if only is not None else None
        available = load_rules(folders)
        chosen = [(rule, path) for rule, path in available
                  if rule.id not in config.disabled_rules and (wanted is None or rule.id in wanted)]
        self._slice_columns = {name: _columns_read(name, [r for r, _ in chosen]) for name in self._sliced}
        self._create_empty_slices()
        present = {
            f"system.{schema}.{table}"
            for schema, table in self._conn.execute(
                f"SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = '{WS}'"
            ).fetchall()
        }
        self.rollups = self._compile_rollups(present, functions)
        self.skipped: dict[str, str] = {}
        engine_key = _engine_key(self._sliced, functions, self.rollups)
        references: dict[Path, tuple[object, ...]] = {}
        for rule, path in chosen:
            missing = sorted(set(rule.tables) - present)
            if missing:
                self.skipped[rule.id] = f"the workspace has no {', '.join(missing)}"
                log.info("rule_skipped", rule=rule.id, reason=self.skipped[rule.id])
                continue
            if path.parent not in references:
                references[path.parent] = _references(path.parent)
            key = (str(path), rule.model_dump_json(), json.dumps(config.parameters.get(rule.id), sort_keys=True,
                                                                 default=str), references[path.parent], engine_key)
            compiled = _COMPILED.get(key)
            if compiled is None:
                compiled = compile_rule(
                    rule, path.name, allowed_tables=TABLES.keys(), overrides=config.parameters.get(rule.id),
                    table_target=_table_target(self._sliced), engine_functions=functions, explain=self._explain,
                    folder=path.parent, rollups=self.rollups,
                )
                if len(_COMPILED) >= MAX_COMPILED:
                    _COMPILED.clear()
                _COMPILED[key] = compiled
            self.rules[rule.id] = compiled
        unknown = (set(config.parameters) | set(config.disabled_rules)) - {r.id for r, _ in available}
        if unknown:
            raise RuleCompileError(f"detections config names unknown rules: {', '.join(sorted(unknown))}")

    def _compile_rollups(self, present: set[str], functions: set[str]) -> dict[str, CompiledRollup]:
        """Compile every rollup this workspace has the tables for, and make an empty table for rules to plan on."""
        out: dict[str, CompiledRollup] = {}
        for rollup, path in load_rollups():
            if not set(rollup.tables) <= present:
                continue  # rules reading it list the same tables and are skipped with the reason
            compiled = compile_rollup(rollup, path.name, allowed_tables=TABLES.keys(),
                                      table_target=_table_target(self._sliced), engine_functions=functions)
            self._build_rollup(compiled, {"since": dt.datetime(2000, 1, 2), "until": dt.datetime(2000, 1, 2),
                                          "baseline_start": dt.datetime(2000, 1, 2)})
            out[rollup.id] = compiled
        return out

    def _build_rollup(self, compiled: CompiledRollup, params: dict[str, Any]) -> None:
        used = {k: v for k, v in params.items() if f"${k}" in compiled.duckdb_sql}
        target = rollup_table(compiled.rollup.id).sql("duckdb")
        self._conn.execute(f"CREATE OR REPLACE TABLE {target} AS {compiled.duckdb_sql}", used or None)

    def _build_rollups(self, needed: dict[str, dict[str, Any]]) -> tuple[float, dict[str, str]]:
        """Each rollup the chosen rules read, built once for this run with its parameters; failures by name."""
        started = time.perf_counter()
        failed: dict[str, str] = {}
        for name, params in sorted(needed.items()):
            try:
                self._build_rollup(self.rollups[name], params)
            except duckdb.Error as exc:
                failed[name] = str(exc).strip().splitlines()[0][:300]
                log.warning("rollup_failed", rollup=name, error=failed[name])
        return (time.perf_counter() - started) * 1000, failed

    def _explain(self, sql: str) -> None:
        cursor = self._conn.cursor()
        try:
            params = {"since": dt.datetime(2000, 1, 1), "until": dt.datetime(2000, 1, 2),
                      "baseline_start": dt.datetime(1999, 12, 1)}
            used = {k: v for k, v in params.items() if f"${k}" in sql}
            cursor.execute(f"EXPLAIN {sql}", used or None)
        finally:
            cursor.close()

    def _create_empty_slices(self) -> None:
        for name in list(self._sliced):
            spec = get_table(name)
            try:
                self._conn.execute(
                    f"CREATE OR REPLACE TABLE memory.main.{SLICE_PREFIX}{spec.schema_name}_{spec.table_name} AS "
                    f"SELECT {self._slice_columns[name]} FROM {WS}.{spec.local_name} LIMIT 0"
                )
            except duckdb.CatalogException:
                self._sliced.discard(name)  # not in this workspace: rules reading it are skipped

    def _fill_slices(self, start: dt.datetime, until: dt.datetime) -> float:
        """One filtered pass per sliced table: the rules that read it share the window's and baselines' rows.

        Off by default: on a workspace whose rows are in time order (generated, or loaded export by export), rules
        reading the file directly prune by zone maps and read only their columns, which measured 2.7x faster at 10M
        rows than copying a window that spans most of the table. Slicing pays when the window is a small part of an
        unordered table.
        """
        started = time.perf_counter()
        for name in self._sliced:
            spec = get_table(name)
            self._conn.execute(
                f"CREATE OR REPLACE TABLE memory.main.{SLICE_PREFIX}{spec.schema_name}_{spec.table_name} AS "
                f"SELECT {self._slice_columns[name]} FROM {WS}.{spec.local_name} "
                f"WHERE {spec.time_column} >= $start AND {spec.time_column} < $until",
                {"start": start, "until": until},
            )
        return (time.perf_counter() - started) * 1000

    def select(
        self, *, rule_ids: list[str] | None = None, categories: list[str] | None = None
    ) -> list[CompiledRule]:
        """The compiled rules matching the filters."""
        unknown = set(rule_ids or []) - set(self.rules) - set(self.skipped)
        if unknown:
            raise ValueError(f"unknown rule ids: {', '.join(sorted(unknown))}")
        chosen = [r for r in self.rules.values() if not rule_ids or r.rule.id in rule_ids]
        return [r for r in chosen if not categories or r.rule.category in categories]

    def _run_one(self, compiled: CompiledRule, params: dict[str, Any]) -> tuple[list[dict[str, Any]], RuleStat]:
        cursor = self._conn.cursor()
        started = time.perf_counter()
        try:
            used = {k: v for k, v in params.items() if f"${k}" in compiled.duckdb_sql}
            relation = cursor.execute(compiled.duckdb_sql, used or None)
            names = [d[0] for d in relation.description or []]
            rows = [dict(zip(names, r, strict=True)) for r in relation.fetchall()]
            return rows, RuleStat(rule_id=compiled.rule.id, ms=(time.perf_counter() - started) * 1000, rows=len(rows))
        except duckdb.Error as exc:
            message = str(exc).strip().splitlines()[0][:300]
            log.warning("rule_failed", rule=compiled.rule.id, error=message)
            return [], RuleStat(rule_id=compiled.rule.id, ms=(time.perf_counter() - started) * 1000, rows=0,
                                error=message)
        finally:
            cursor.close()

    async def run(
        self,
        since: dt.datetime,
        until: dt.datetime,
        *,
        categories: list[str] | None = None,
        min_severity: str = "info",
        workspace_id: str | None = None,
        rule_ids: list[str] | None = None,
        concurrency: int = 4,
    ) -> DetectionRun:
        """Run the chosen rules over [since, until) with their baselines, in parallel; normalise and suppress."""
        if since >= until:
            raise ValueError("since must be earlier than until")
        chosen = self.select(rule_ids=rule_ids, categories=categories)
        params = {c.rule.id: {"since": since, "until": until,
                              "baseline_start": baseline_start(since, c.rule.baseline_days)} for c in chosen}
        earliest = min((p["baseline_start"] for p in params.values()), default=since)
        # A rollup covers the longest history among the rules reading it; each rule then filters its own start.
        needed: dict[str, dict[str, Any]] = {}
        for c in chosen:
            for name in c.rollups:
                start = params[c.rule.id]["baseline_start"]
                if name not in needed or start < needed[name]["baseline_start"]:
                    needed[name] = {"since": since, "until": until, "baseline_start": start}
        async with self._lock:
            slice_ms = await anyio.to_thread.run_sync(self._fill_slices, earliest, until)
            rollup_ms, broken = await anyio.to_thread.run_sync(self._build_rollups, needed)
            limiter = anyio.CapacityLimiter(concurrency)
            results: list[tuple[CompiledRule, list[dict[str, Any]], RuleStat]] = []

            async def one(compiled: CompiledRule) -> None:
                failed = next((name for name in compiled.rollups if name in broken), None)
                if failed is not None:
                    error = f"shared rollup {failed} could not be built: {broken[failed]}"
                    results.append((compiled, [], RuleStat(rule_id=compiled.rule.id, ms=0.0, rows=0, error=error)))
                    return
                rows, stat = await anyio.to_thread.run_sync(self._run_one, compiled, params[compiled.rule.id],
                                                            limiter=limiter)
                results.append((compiled, rows, stat))

            async with anyio.create_task_group() as tg:
                for compiled in chosen:
                    tg.start_soon(one, compiled)
        findings: dict[str, Finding] = {}
        suppressed = 0
        floor = SEVERITY_RANK[min_severity]
        for compiled, rows, _stat in results:
            for row in rows:
                finding = self._normalise(compiled.rule, row)
                if finding is None or SEVERITY_RANK[finding.severity] < floor:
                    continue
                if workspace_id and finding.workspace_id not in (workspace_id, None):
                    continue
                if self._suppressed(finding, self.config.suppression):
                    suppressed += 1
                    continue
                existing = findings.get(finding.id)
                if existing is None or finding.event_count > existing.event_count:
                    findings[finding.id] = finding
        windows = {c.rule.id: c.rule.dedup_window_hours for c in chosen}
        episodes = merge_episodes(list(findings.values()), windows, max_evidence=self.config.max_evidence)
        ordered = sorted(episodes, key=lambda f: (-SEVERITY_RANK[f.severity], f.first_seen, f.rule_id))
        stats = sorted((s for _, _, s in results), key=lambda s: -s.ms)
        return DetectionRun(since=since, until=until, findings=ordered, suppressed=suppressed, rules_run=len(chosen),
                            stats=stats, skipped=self.skipped, slice_ms=round(slice_ms, 2),
                            rollup_ms=round(rollup_ms, 2))

    def _normalise(self, rule: Rule, row: dict[str, Any]) -> Finding | None:
        principal = row.get("principal")
        first, last = row.get("first_seen"), row.get("last_seen")
        if not principal or first is None or last is None:
            return None
        if isinstance(first, dt.date) and not isinstance(first, dt.datetime):
            first = dt.datetime.combine(first, dt.time())
        if isinstance(last, dt.date) and not isinstance(last, dt.datetime):
            last = dt.datetime.combine(last, dt.time())
        ids = [str(i) for i in (row.get("evidence_ids") or []) if i is not None][: self.config.max_evidence]
        extra = {k: json_value(v) for k, v in row.items() if k not in {
            "principal", "workspace_id", "first_seen", "last_seen", "event_count", "evidence_ids", "severity"}}
        severity = row.get("severity") if row.get("severity") in SEVERITY_RANK else rule.severity
        workspace = None if row.get("workspace_id") is None else str(row["workspace_id"])
        return Finding(
            id=finding_id(rule.id, str(principal), workspace, first, rule.dedup_window_hours),
            rule_id=rule.id, category=rule.category, severity=severity, title=rule.title,
            principal=json_value(str(principal)), workspace_id=workspace, first_seen=first, last_seen=last,
            event_count=int(row.get("event_count") or 0), evidence=Evidence(event_ids=ids, fields=extra),
            mitre=rule.mitre, recommendation=rule.recommendation, threat_model=rule.threat_model,
        )

    @staticmethod
    def _suppressed(finding: Finding, rules: Suppression) -> bool:
        networks = parse_networks(tuple(rules.trusted_cidrs))
        if networks and in_networks(finding.principal, networks):
            return True
        ips = finding.evidence.fields.get("source_ips")
        if networks and isinstance(ips, list) and ips and all(in_networks(str(ip), networks) for ip in ips):
            return True
        principal = finding.principal.lower()
        if finding.category in ADMIN_WORK and principal in {p.lower() for p in rules.admin_principals}:
            return True
        expected = rules.expected_service_principals.get(finding.principal, [])
        if finding.rule_id in expected or finding.category in expected:
            return True
        patterns = rules.allowlists.get(finding.rule_id, [])
        return any(fnmatch.fnmatch(principal, p.lower()) for p in patterns)

    def close(self) -> None:
        self._conn.close()

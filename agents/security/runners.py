"""One runner per backend: each runs the portable rule set through that backend's SystemTables, with the backend's
own optimisations declared as a list of transformations (pySigma's shape), never a fork of the engine.

- The embedded runner builds each shared rollup once per run in the backend's scratch database, copies the audit
  events of the actions the rules name into one slice that most rules read instead of the table (the rules that read
  neither run while these are built), and adds sargable filters: one connection, the backend's.
- The statement runner sends each rule's standalone Databricks SQL (rollups as leading CTEs) through any backend's
  `execute`, with named parameters, up to the configured parallelism: a SQL warehouse, Spark, or DuckDB itself.
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import duckdb
import sqlglot
import sqlglot.errors
import structlog
from sqlglot import exp

from insight_mcp.agents.ingestion.backend import BackendError, Statement, SystemTables
from insight_mcp.agents.ingestion.catalog import TABLES, column_types, get_table
from insight_mcp.agents.ingestion.duckdb_backend import SCRATCH, DuckDBSystemTables
from insight_mcp.agents.security.action_slice import point_at_slice, slice_actions, slice_table
from insight_mcp.agents.security.compiler import (
    PortableRule,
    RuleCompileError,
    explain_or_fail,
    point_at_rollups,
    render_duckdb,
    rollup_table,
    sargable_pairs,
)
from insight_mcp.agents.security.pipeline import RuleResult, RuleStat
from insight_mcp.agents.security.ruleset import RuleSet
from insight_mcp.agents.settings import DetectionSettings
from insight_mcp.agents.sql.dialect import ColumnTypes, compat_transforms, rename_tables

log = structlog.get_logger("insight_mcp.detections")

SLICE_MIN_RULES = 3
AUDIT_TABLE = "system.access.audit"
RUNTIME = ("since", "until", "baseline_start")


@dataclass(frozen=True)
class Transformation:
    """One declared change a backend makes to a portable rule before running it."""

    name: str
    why: str
    apply: Callable[[exp.Expression, PortableRule | None], exp.Expression]


def baseline_start(since: dt.datetime, days: int) -> dt.datetime:
    """Where a rule's history starts: `days` whole days before the window's first day, whatever runs beside it."""
    if days <= 0:
        return since
    return since.replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(days=days)


def rule_params(rule: PortableRule, since: dt.datetime, until: dt.datetime) -> dict[str, Any]:
    return {"since": since, "until": until, "baseline_start": baseline_start(since, rule.rule.baseline_days)}


class RuleRunner(Protocol):
    """What the engine needs of a backend's runner."""

    kind: str
    skipped: dict[str, str]

    async def prepare(self, ruleset: RuleSet) -> None:
        """Check and ready every rule for this backend; a rule whose tables the backend lacks is skipped."""
        ...

    async def run(self, rules: list[PortableRule], since: dt.datetime,
                  until: dt.datetime) -> tuple[list[RuleResult], float, float]:
        """Each rule's rows over [since, until), with the slice and rollup milliseconds."""
        ...

    def close(self) -> None: ...


def _selects_every_column(star: exp.Star, schema_name: str, table_name: str) -> bool:
    """`*` (or `alias.*`) in a SELECT that reads the table itself: its columns leave unnamed."""
    if isinstance(star.parent, exp.Count):
        return False
    select = star.find_ancestor(exp.Select)
    return select is not None and any(
        t.db.lower() == schema_name and t.name.lower() == table_name
        for t in select.find_all(exp.Table) if t.find_ancestor(exp.Select) is select)


@functools.lru_cache(maxsize=2000)
def _columns_named(table: str, sql: str) -> frozenset[str] | None:
    """The columns of `table` one rule's SQL names, or None when it selects them all (or cannot be parsed).

    Kept per process: every engine asks it of every rule, and parsing is most of an engine's set-up.
    """
    spec = get_table(table)
    try:
        tree = sqlglot.parse_one(sql, read="databricks")
    except sqlglot.errors.ParseError:
        return None
    if any(_selects_every_column(star, spec.schema_name, spec.table_name) for star in tree.find_all(exp.Star)):
        return None  # a rule selecting every column of the table gets every column
    return frozenset({ident.name.lower() for ident in tree.find_all(exp.Identifier)} & {c.name for c in spec.columns})


def _columns_read(table: str, rules: Iterable[PortableRule]) -> str:
    """The columns of `table` any of these rules names: a shared slice carries only those."""
    spec = get_table(table)
    used = {spec.time_column, *spec.event_key}
    for rule in rules:
        if table in rule.tables:
            named = _columns_named(table, rule.databricks_sql)
            if named is None:
                return "*"
            used |= named
    return ", ".join(f'"{c.name}"' for c in spec.columns if c.name in used)


def _with_scratch(types: ColumnTypes, cursor: duckdb.DuckDBPyConnection) -> ColumnTypes:
    """The system tables' types and the scratch tables' (rollups, the slice) as the engine built them."""
    columns: dict[tuple[str, str, str], list[tuple[str, str]]] = {}
    for schema, table, column, kind in cursor.execute(
        "SELECT schema_name, table_name, column_name, data_type FROM duckdb_columns() WHERE database_name = ? "
        "ORDER BY schema_name, table_name, column_index", [SCRATCH]
    ).fetchall():
        columns.setdefault((SCRATCH, schema, table), []).append((column, kind))
    return ColumnTypes(tables=types.tables + tuple((name, tuple(cols)) for name, cols in columns.items()),
                       default_catalog=types.default_catalog)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


# DuckDB's function names by library version: listing them takes tens of milliseconds, and every engine asks. The
# workspace's connections load no extensions (autoloading is off in the locked configuration), so a connection can
# call what the library itself was built with.
_FUNCTIONS: dict[str, frozenset[str]] = {}


def _functions(cursor: duckdb.DuckDBPyConnection) -> frozenset[str]:
    """The functions this connection can call, which is what rendering a rule for DuckDB checks against."""
    if duckdb.__version__ not in _FUNCTIONS:
        _FUNCTIONS[duckdb.__version__] = frozenset(
            r[0].lower() for r in cursor.execute("SELECT DISTINCT function_name FROM duckdb_functions()").fetchall())
    return _FUNCTIONS[duckdb.__version__]


# The embedded runner's SQL per rule, by the portable rule and everything the embedded form depends on.
_DUCKDB_SQL: dict[tuple[object, ...], str] = {}
MAX_CACHED = 2000


class DuckDBRunner:
    """The embedded workspace's runner: shared rollups and the run's action slice in the backend's scratch database."""

    kind = "duckdb"

    def __init__(self, backend: DuckDBSystemTables, config: DetectionSettings, *,
                 slice_min_rules: int = SLICE_MIN_RULES) -> None:
        self.backend = backend
        self.config = config
        self.slice_min_rules = slice_min_rules  # a run with fewer rules that can read the slice reads the table
        self.skipped: dict[str, str] = {}
        self.sql: dict[str, str] = {}
        self.sliced_sql: dict[str, str] = {}  # rules with a read the action slice can serve, pointed at it
        self.slice_actions: dict[str, frozenset[str]] = {}
        self._rollup_sql: dict[str, str] = {}
        self._slice_columns = "*"
        self._types = column_types()  # the system tables', and once prepared the scratch tables' too
        self.transformations = [
            Transformation("shared_rollups", "read each rollup from the table built once for this run",
                           lambda tree, rule: point_at_rollups(rule.own, rule.rollups)
                           if rule and rule.rollups else tree),
            Transformation("action_slice", "read the audit events of the actions a read names from the run's slice",
                           lambda tree, rule: point_at_slice(tree, slice_table)),
            Transformation("tables", "system.<schema>.<table> is the workspace's <schema>.<table>",
                           lambda tree, rule: rename_tables(tree, lambda schema, table: exp.table_(table, db=schema))),
            Transformation("compatibility", "make DuckDB answer as Spark does where sqlglot's output differs",
                           lambda tree, rule: compat_transforms(tree, self._types)),
            Transformation("sargable", "filter on plain columns before building concatenated strings",
                           lambda tree, rule: sargable_pairs(tree)),
        ]

    def transform(self, rule: PortableRule, functions: AbstractSet[str], *, sliced: bool = False) -> str:
        """The declared transformations in order, rendered as DuckDB SQL whose functions all exist."""
        tree: exp.Expression = rule.own
        for step in self.transformations:
            if sliced or step.name != "action_slice":
                tree = step.apply(tree, rule)
        return render_duckdb(tree, rule.source, functions)

    async def prepare(self, ruleset: RuleSet) -> None:
        await self.backend.run_sync(self.prepare_sync, ruleset)

    def prepare_sync(self, ruleset: RuleSet) -> None:
        """Compile every rule for the embedded engine and check that it plans, under the scratch lock."""
        with self.backend.scratch_lock():
            cursor = self.backend.cursor()
            try:
                self._prepare(ruleset, cursor)
            except duckdb.Error as exc:  # a table without the columns of the system table it claims to be
                first = str(exc).strip().splitlines()[0][:300]
                raise BackendError(f"the workspace's tables cannot run the detections ({first}); a table does not "
                                   "have the system table's columns: rebuild it with `insight-mcp workspace "
                                   "generate` or `insight-mcp workspace load`") from None
            finally:
                self.backend.release(cursor)

    def _prepare(self, ruleset: RuleSet, cursor: duckdb.DuckDBPyConnection) -> None:
        functions = _functions(cursor)
        present = {
            f"system.{schema}.{table}"
            for schema, table in cursor.execute(
                f"SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name <> '{SCRATCH}'"
            ).fetchall()
        }
        read = {name for rule in ruleset.rules.values() for name in rule.rollups}
        for rollup_id, tree in ruleset.rollups.items():
            rollup, path = ruleset.rollup_files[rollup_id]
            if rollup_id not in read or not set(rollup.tables) <= present:
                continue  # rules reading it list the same tables and are skipped with the reason
            for step in self.transformations:
                if step.name not in {"shared_rollups", "action_slice"}:  # rollups read the tables themselves
                    tree = step.apply(tree, None)
            sql = render_duckdb(tree, path.name, functions)
            self._rollup_sql[rollup_id] = sql
            self._build_rollup(cursor, rollup_id, {"since": dt.datetime(2000, 1, 2), "until": dt.datetime(2000, 1, 2),
                                                   "baseline_start": dt.datetime(2000, 1, 2)})
        runnable = {k: v for k, v in ruleset.rules.items() if set(v.tables) <= present}
        actions = {k: a for k, v in runnable.items() if (a := slice_actions(v.own)) is not None}
        if AUDIT_TABLE in present:
            self._slice_columns = _columns_read(AUDIT_TABLE, [runnable[k] for k in actions])
            self._fill_slice(cursor, {}, None)  # empty, so that the sliced rules plan
        else:
            actions = {}
        self._types = _with_scratch(column_types(), cursor)
        digest = (hash(frozenset(functions)), tuple(sorted(self._rollup_sql.items())), self._slice_columns)
        for rule_id, portable in ruleset.rules.items():
            missing = sorted(set(portable.tables) - present)
            if missing:
                self.skipped[rule_id] = f"the workspace has no {', '.join(missing)}"
                log.info("rule_skipped", rule=rule_id, reason=self.skipped[rule_id])
                continue
            self.sql[rule_id] = self._compiled(cursor, portable, functions, digest, sliced=False)
            if rule_id in actions:
                self.sliced_sql[rule_id] = self._compiled(cursor, portable, functions, digest, sliced=True)
                self.slice_actions[rule_id] = actions[rule_id]

    def _compiled(self, cursor: duckdb.DuckDBPyConnection, portable: PortableRule, functions: AbstractSet[str],
                  digest: tuple[object, ...], *, sliced: bool) -> str:
        """A rule's DuckDB SQL, planned once per process for everything it depends on."""
        key = (portable.rule.id, portable.source, portable.databricks_sql, digest, sliced)
        sql = _DUCKDB_SQL.get(key)
        if sql is None:
            sql = self.transform(portable, functions, sliced=sliced)
            explain_or_fail(lambda text: self._explain(cursor, text), sql, portable.source)
            if len(_DUCKDB_SQL) >= MAX_CACHED:
                _DUCKDB_SQL.clear()
            _DUCKDB_SQL[key] = sql
        return sql

    @staticmethod
    def _explain(cursor: duckdb.DuckDBPyConnection, sql: str) -> None:
        params = {"since": dt.datetime(2000, 1, 1), "until": dt.datetime(2000, 1, 2),
                  "baseline_start": dt.datetime(1999, 12, 1)}
        cursor.execute(f"EXPLAIN {sql}", {k: v for k, v in params.items() if f"${k}" in sql} or None)

    def _build_rollup(self, cursor: duckdb.DuckDBPyConnection, rollup_id: str, params: dict[str, Any]) -> None:
        sql = self._rollup_sql[rollup_id]
        used = {k: v for k, v in params.items() if f"${k}" in sql}
        target = rollup_table(rollup_id).sql("duckdb")
        cursor.execute(f"CREATE OR REPLACE TABLE {target} AS {sql}", used or None)

    def _fill_slice(self, cursor: duckdb.DuckDBPyConnection, starts: dict[str, dt.datetime],
                    until: dt.datetime | None) -> None:
        """One filtered pass over the audit table: the events of the actions the run's sliced rules read, each
        from the earliest baseline of a rule reading it (a 7-day rule's action is not copied for 30 days).

        The events stay in the table's order, so the rules' time filters still skip row groups of the slice.
        Built empty outside a run, so that an idle server holds no copy.
        """
        spec = get_table(AUDIT_TABLE)
        target = slice_table().sql("duckdb")
        source = f"SELECT {self._slice_columns} FROM {spec.local_name}"
        if not starts or until is None:
            cursor.execute(f"CREATE OR REPLACE TABLE {target} AS {source} LIMIT 0")
            return
        groups: dict[dt.datetime, list[str]] = {}
        for action, start in starts.items():
            groups.setdefault(start, []).append(action)
        params: dict[str, Any] = {"until": until}
        terms = []
        for i, (start, actions) in enumerate(sorted(groups.items())):
            params[f"start{i}"], params[f"actions{i}"] = start, sorted(actions)
            terms.append(f"({spec.time_column} >= $start{i} AND action_name IN (SELECT unnest($actions{i})))")
        cursor.execute(f"CREATE OR REPLACE TABLE {target} AS {source} "
                       f"WHERE {spec.time_column} >= $start0 AND {spec.time_column} < $until "
                       f"AND ({' OR '.join(terms)})", params)

    def _shared(self, rules: list[PortableRule], sliced: list[PortableRule], since: dt.datetime,
                until: dt.datetime) -> tuple[float, float, dict[str, str]]:
        """Fill the action slice and build each rollup the rules read, once, with the longest history among them."""
        cursor = self.backend.cursor()
        try:
            started = time.perf_counter()
            if sliced:
                starts: dict[str, dt.datetime] = {}  # each action from the earliest baseline of a rule reading it
                for rule in sliced:
                    start = rule_params(rule, since, until)["baseline_start"]
                    for action in self.slice_actions[rule.rule.id]:
                        starts[action] = min(starts.get(action, start), start)
                self._fill_slice(cursor, starts, until)
            slice_ms = (time.perf_counter() - started) * 1000
            needed: dict[str, dict[str, Any]] = {}
            for rule in rules:
                for name in rule.rollups:
                    params = rule_params(rule, since, until)
                    if name not in needed or params["baseline_start"] < needed[name]["baseline_start"]:
                        needed[name] = params
            started = time.perf_counter()
            failed: dict[str, str] = {}
            for name, params in sorted(needed.items()):
                try:
                    self._build_rollup(cursor, name, params)
                except duckdb.Error as exc:
                    failed[name] = _first_line(exc)
                    log.warning("rollup_failed", rollup=name, error=failed[name])
            return slice_ms, (time.perf_counter() - started) * 1000, failed
        finally:
            self.backend.release(cursor)

    def _empty_slice(self) -> None:
        cursor = self.backend.cursor()
        try:
            self._fill_slice(cursor, {}, None)
        except duckdb.Error as exc:  # the copy is only memory: a failure to drop it must not hide the findings
            log.warning("slice_not_emptied", error=_first_line(exc))
        finally:
            self.backend.release(cursor)

    def _run_one(self, rule: PortableRule, params: dict[str, Any], sliced: bool) -> RuleResult:
        sql = self.sliced_sql[rule.rule.id] if sliced else self.sql[rule.rule.id]
        cursor = self.backend.cursor()
        started = time.perf_counter()
        try:
            used = {k: v for k, v in params.items() if f"${k}" in sql}
            relation = cursor.execute(sql, used or None)
            names = [d[0] for d in relation.description or []]
            rows = [dict(zip(names, r, strict=True)) for r in relation.fetchall()]
            stat = RuleStat(rule_id=rule.rule.id, ms=(time.perf_counter() - started) * 1000, rows=len(rows))
            return RuleResult(rule=rule.rule, rows=rows, stat=stat)
        except duckdb.Error as exc:
            message = _first_line(exc)
            log.warning("rule_failed", rule=rule.rule.id, error=message)
            stat = RuleStat(rule_id=rule.rule.id, ms=(time.perf_counter() - started) * 1000, rows=0, error=message)
            return RuleResult(rule=rule.rule, rows=[], stat=stat)
        finally:
            self.backend.release(cursor)

    async def run(self, rules: list[PortableRule], since: dt.datetime,
                  until: dt.datetime) -> tuple[list[RuleResult], float, float]:
        sliced = [r for r in rules if r.rule.id in self.sliced_sql]
        if len(sliced) < self.slice_min_rules:
            sliced = []  # one filtered copy costs about what one rule's own pass does
        use_slice = {r.rule.id for r in sliced}
        lock = self.backend.scratch_lock()
        await anyio.to_thread.run_sync(lock.acquire)  # not abandoned on cancellation: the finally releases it
        try:
            limiter = anyio.Semaphore(self.config.parallelism)
            results: list[RuleResult] = []
            shared_ready = anyio.Event()
            shared: dict[str, Any] = {"slice_ms": 0.0, "rollup_ms": 0.0, "broken": {}}

            async def build_shared() -> None:
                shared["slice_ms"], shared["rollup_ms"], shared["broken"] = await self.backend.run_sync(
                    self._shared, rules, sliced, since, until)
                shared_ready.set()

            async def one(rule: PortableRule) -> None:
                if rule.rule.id in use_slice or rule.rollups:
                    await shared_ready.wait()  # the rest read only the workspace: they run while the slice fills
                failed = next((name for name in rule.rollups if name in shared["broken"]), None)
                if failed is not None:
                    error = f"shared rollup {failed} could not be built: {shared['broken'][failed]}"
                    results.append(RuleResult(rule=rule.rule, rows=[],
                                              stat=RuleStat(rule_id=rule.rule.id, ms=0.0, rows=0, error=error)))
                    return
                async with limiter:
                    results.append(await self.backend.run_sync(self._run_one, rule, rule_params(rule, since, until),
                                                               rule.rule.id in use_slice))

            async with anyio.create_task_group() as tg:
                tg.start_soon(build_shared)
                for rule in rules:
                    tg.start_soon(one, rule)
            slice_ms, rollup_ms = shared["slice_ms"], shared["rollup_ms"]
        finally:
            try:
                if sliced:
                    with anyio.CancelScope(shield=True):
                        await self.backend.run_sync(self._empty_slice)
            finally:
                lock.release()
        return results, slice_ms, rollup_ms

    def close(self) -> None:
        """Nothing of its own to close: the backend owns the connection."""


def _typed_rows(columns: list[Any], rows: list[list[Any]]) -> list[dict[str, Any]]:
    names = [c.name for c in columns]
    return [dict(zip(names, row, strict=True)) for row in rows]


class StatementRunner:
    """Any backend's runner: each rule's standalone Databricks SQL as one statement, with named parameters."""

    def __init__(self, backend: SystemTables, config: DetectionSettings,
                 transformations: list[Transformation] | None = None) -> None:
        self.backend = backend
        self.kind = backend.kind
        self.config = config
        self.transformations = list(transformations or [])  # rollups stay leading CTEs; tables stay `system.*`
        self.skipped: dict[str, str] = {}
        self.sql: dict[str, str] = {}

    async def prepare(self, ruleset: RuleSet) -> None:
        """Skip the rules reading a table this backend does not hold; render each rule once."""
        wanted = sorted({t for r in ruleset.rules.values() for t in r.tables} & set(TABLES))
        stats = await self.backend.table_stats(wanted)
        present = {s.name for s in stats if s.present}
        notes = {s.name: s.note for s in stats if s.note}
        for rule_id, portable in ruleset.rules.items():
            missing = sorted(set(portable.tables) - present)
            if missing:
                denied = [notes[t] for t in missing if t in notes]
                self.skipped[rule_id] = denied[0] if denied else f"the workspace has no {', '.join(missing)}"
                continue
            tree = sqlglot.parse_one(portable.databricks_sql, read="databricks")
            for step in self.transformations:
                tree = step.apply(tree, portable)
            self.sql[rule_id] = tree.sql("databricks")

    async def _run_one(self, rule: PortableRule, since: dt.datetime, until: dt.datetime) -> RuleResult:
        sql = self.sql[rule.rule.id]
        params = {k: v for k, v in rule_params(rule, since, until).items() if f":{k}" in sql}
        started = time.perf_counter()
        limit = self.config.max_rule_rows
        try:
            answer = await self.backend.execute(Statement(databricks_sql=sql, params=params), max_rows=limit,
                                                max_chars=2**62, timeout_seconds=self.config.rule_timeout_seconds)
        except BackendError as exc:  # a timeout too: QueryTimeout is one
            message = _first_line(exc)
            log.warning("rule_failed", rule=rule.rule.id, error=message, backend=self.kind)
            return RuleResult(rule=rule.rule, rows=[], stat=RuleStat(
                rule_id=rule.rule.id, ms=(time.perf_counter() - started) * 1000, rows=0, error=message))
        error = None
        if answer.truncated:
            error = (f"returned more than {limit} rows; only the first {limit} were read "
                     "(detections.max_rule_rows)")
        rows = _typed_rows(answer.columns, answer.rows)
        return RuleResult(rule=rule.rule, rows=rows, stat=RuleStat(
            rule_id=rule.rule.id, ms=(time.perf_counter() - started) * 1000, rows=len(rows), error=error))

    async def run(self, rules: list[PortableRule], since: dt.datetime,
                  until: dt.datetime) -> tuple[list[RuleResult], float, float]:
        limiter = anyio.Semaphore(self.config.parallelism)
        results: list[RuleResult] = []

        async def one(rule: PortableRule) -> None:
            async with limiter:
                results.append(await self._run_one(rule, since, until))

        async with anyio.create_task_group() as tg:
            for rule in rules:
                tg.start_soon(one, rule)
        return results, 0.0, 0.0

    def close(self) -> None:
        """The backend is its caller's to close."""


def runner_for(backend: SystemTables, config: DetectionSettings) -> RuleRunner:
    """The embedded workspace gets its own runner; every other backend runs portable statements."""
    if isinstance(backend, DuckDBSystemTables) and backend.kind == "duckdb":
        return DuckDBRunner(backend, config)
    return StatementRunner(backend, config)


__all__ = ["DuckDBRunner", "RuleCompileError", "RuleRunner", "StatementRunner", "Transformation", "baseline_start",
           "runner_for"]

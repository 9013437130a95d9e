"""Compile a rule's Databricks SQL once, at load time, into SQL the embedded engine runs with the same meaning.

Steps: parse (databricks) -> guard -> portability lint -> bind parameters -> rename the `system` catalog ->
compatibility transforms -> check every function against the engine -> EXPLAIN. A rule failing any step fails to load.

A rule may read a shared rollup by its bare name. Its portable SQL then carries the rollup as a leading CTE, so it runs
as written on any engine; the embedded engine instead builds each rollup once per run and points the rule at it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any, TypeVar

import sqlglot
from pydantic import BaseModel
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from insight_mcp.agents.ingestion.duckdb_backend import SCRATCH
from insight_mcp.agents.security.model import ParamValue, Rollup, Rule
from insight_mcp.agents.security.reference_lists import resolve_parameter
from insight_mcp.agents.sql.dialect import compat_transforms, rename_tables
from insight_mcp.agents.sql.generators import check_generators
from insight_mcp.agents.sql.guard import QueryRefused, check_functions, check_recursion, check_shape, check_tables

RUNTIME_PARAMS = ("since", "until", "baseline_start")
MAX_GENERATOR_ROWS = 1_000_000  # run_query's default cap: a rule is held to what an agent's query is
ROLLUP_PREFIX = "rollup_"
T = TypeVar("T")
REQUIRED_COLUMNS = ("principal", "workspace_id", "first_seen", "last_seen", "event_count", "evidence_ids")

_LOOKAROUND = re.compile(r"\(\?[=!<]|\\[1-9]")


class RuleCompileError(ValueError):
    """A rule that cannot run the same way everywhere; the message names the file and the step."""


class CompiledRule(BaseModel):
    """A rule ready to run: its DuckDB SQL with runtime placeholders, and the portable SQL it came from."""

    rule: Rule
    source: str
    databricks_sql: str
    duckdb_sql: str
    tables: list[str]
    rollups: list[str] = []


class CompiledRollup(BaseModel):
    """A rollup ready to build: its parsed Databricks SQL for rules to carry, and the DuckDB SQL the engine runs."""

    model_config = {"arbitrary_types_allowed": True}

    rollup: Rollup
    source: str
    tree: exp.Expression
    duckdb_sql: str


def rollup_table(rollup_id: str) -> exp.Table:
    """Where the embedded engine keeps a rollup for the length of a run."""
    return exp.table_(f"{ROLLUP_PREFIX}{rollup_id}", db="main", catalog=SCRATCH)


def _defined_ctes(tree: exp.Expression) -> set[str]:
    return {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}


def rollups_read(tree: exp.Expression, available: Iterable[str]) -> list[str]:
    """Bare table names that are rollups and not the query's own CTEs, in the order they first appear."""
    names, own, seen = set(available), _defined_ctes(tree), []
    for table in tree.find_all(exp.Table):
        name = table.name.lower()
        if not table.db and not table.catalog and name in names and name not in own and name not in seen:
            seen.append(name)
    return seen


def inject_rollups(tree: exp.Expression, rollups: Mapping[str, exp.Expression]) -> exp.Expression:
    """Put each rollup in front of the query's own CTEs, so the SQL stands alone on any engine."""
    tree = tree.copy()
    if not rollups:
        return tree
    ctes = [exp.CTE(this=query.copy(), alias=exp.TableAlias(this=exp.to_identifier(name)))
            for name, query in rollups.items()]
    existing = tree.args.get("with_")
    if isinstance(existing, exp.With):
        existing.set("expressions", ctes + list(existing.expressions))
    else:
        tree.set("with_", exp.With(expressions=ctes))
    return tree


def point_at_rollups(tree: exp.Expression, names: Iterable[str]) -> exp.Expression:
    """Read each named rollup from the table the engine built for this run."""
    wanted, own = set(names), _defined_ctes(tree)

    def swap(node: exp.Expression) -> exp.Expression:
        if (isinstance(node, exp.Table) and not node.db and not node.catalog and node.name.lower() in wanted
                and node.name.lower() not in own):
            new = rollup_table(node.name.lower())
            new.set("alias", node.args.get("alias") or exp.TableAlias(this=exp.to_identifier(node.name.lower())))
            for key in ("joins", "pivots", "laterals"):
                if node.args.get(key) is not None:
                    new.set(key, node.args[key])
            return new
        return node

    return tree.transform(swap, copy=True)


def _parse(query: str, source: str) -> exp.Expression:
    """Parse one statement in the Databricks dialect and check its shape."""
    try:
        statements = sqlglot.parse(query, read="databricks")
    except (ParseError, TokenError) as exc:
        raise RuleCompileError(f"{source}: query is not valid Databricks SQL: {str(exc).splitlines()[0]}") from None
    return _guarded(source, lambda: check_shape(statements))


def _guarded(source: str, step: Callable[[], T]) -> T:
    try:
        return step()
    except QueryRefused as exc:
        raise RuleCompileError(f"{source}: query refused by the guard ({exc.rule}): {exc.detail}") from None


def _guard(tree: exp.Expression, source: str, allowed_tables: Iterable[str], declared: list[str]) -> list[str]:
    """The run_query guard, then every table read must be declared in the file's `tables`."""

    def check() -> set[str]:
        check_recursion(tree)
        check_functions(tree)
        return set(check_tables(tree, set(allowed_tables)))

    referenced = _guarded(source, check)
    undeclared = referenced - set(declared)
    if undeclared:
        raise RuleCompileError(f"{source}: field 'tables' must list {', '.join(sorted(undeclared))}")
    return sorted(referenced)


def _engine_sql(tree: exp.Expression, source: str, table_target: Callable[[str, str], exp.Table],
                engine_functions: AbstractSet[str]) -> str:
    """DuckDB SQL with the catalog renamed and compatibility transforms; every function must exist there."""
    return render_duckdb(sargable_pairs(compat_transforms(rename_tables(tree, table_target))), source,
                         engine_functions)


def render_duckdb(tree: exp.Expression, source: str, engine_functions: AbstractSet[str]) -> str:
    """A transformed tree as DuckDB SQL; a function sqlglot passed through untranslated must exist in the engine."""
    duckdb_sql = tree.sql("duckdb")
    unknown = called_functions(duckdb_sql) - engine_functions
    if unknown:
        raise RuleCompileError(
            f"{source}: field 'query' calls {', '.join(sorted(unknown))}, which DuckDB does not have "
            "(sqlglot passed it through untranslated)"
        )
    return duckdb_sql


def portable_rollup(rollup: Rollup, source: str, *, allowed_tables: Iterable[str]) -> exp.Expression:
    """The rule pipeline for a rollup, engine-free: guard, portability lint, runtime parameters only."""
    tree = _parse(rollup.query, source)
    _guard(tree, source, allowed_tables, rollup.tables)
    try:
        _lint_portability(tree)
        bound = bind_parameters(tree, {})
    except ValueError as exc:
        only = ", ".join(RUNTIME_PARAMS)
        raise RuleCompileError(f"{source}: field 'query': {exc} (a rollup takes only {only})") from None
    _guarded(source, lambda: check_generators(bound, max_rows=MAX_GENERATOR_ROWS))
    return bound


def compile_rollup(
    rollup: Rollup,
    source: str,
    *,
    allowed_tables: Iterable[str],
    table_target: Callable[[str, str], exp.Table],
    engine_functions: AbstractSet[str],
) -> CompiledRollup:
    """A rollup's portable form, then the DuckDB SQL the embedded runner builds it with."""
    bound = portable_rollup(rollup, source, allowed_tables=allowed_tables)
    duckdb_sql = _engine_sql(bound, source, table_target, engine_functions)
    return CompiledRollup(rollup=rollup, source=source, tree=bound, duckdb_sql=duckdb_sql)


def _lint_portability(tree: exp.Expression) -> None:
    """Refuse constructs where sqlglot's output runs but means something else on DuckDB."""
    for node in tree.walk():
        name = node.name.lower() if isinstance(node, exp.Anonymous) else ""
        if name == "window":
            raise ValueError("Spark WINDOW(ts, '60 minutes') has no DuckDB translation: bucket with date_trunc")
        if (isinstance(node, exp.Anonymous) and name == "weekday") or type(node).__name__ == "WeekDay":
            raise ValueError("weekday() numbers days differently across engines: use dayofweek() (1 = Sunday)")
        if name == "array_distinct" or type(node).__name__ == "ArrayDistinct":
            raise ValueError("array_distinct drops NULLs and order on DuckDB: use size(collect_set(...))")
        if isinstance(node, exp.Exists) and not isinstance(node.this, (exp.Select, exp.Subquery, exp.SetOperation)):
            raise ValueError(
                "exists(array, x -> ...) loses its lambda on DuckDB: use size(filter(array, x -> ...)) > 0"
            )
        if name in {"forall", "aggregate"}:
            raise ValueError(f"{name}() does not translate to DuckDB: use size(filter(...)) comparisons")
        if isinstance(node, exp.StrToUnix):
            raise ValueError("unix_timestamp(col) does not transpile: use unix_seconds(col)")
        if isinstance(node, exp.Filter) and isinstance(node.this, exp.ArrayUniqueAgg):
            raise ValueError("collect_set(x) FILTER (WHERE ...) transpiles to a doubled FILTER: use CASE WHEN")
        divisor = node.expression if isinstance(node, exp.Div) else None
        if isinstance(divisor, exp.Literal) and divisor.this in {"0", "0.0"}:
            raise ValueError("division by zero errors under Spark ANSI and gives inf on DuckDB: use try_divide")
        if isinstance(node, (exp.RegexpLike, exp.RegexpExtract, exp.RegexpReplace, exp.RegexpSplit)):
            pattern = node.expression if not isinstance(node, exp.RegexpReplace) else node.args.get("expression")
            if isinstance(pattern, exp.Literal) and _LOOKAROUND.search(pattern.this):
                raise ValueError("DuckDB's regex is RE2: no lookaround and no backreferences")


def _literal(value: ParamValue) -> exp.Expression:
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, (int, float)):
        return exp.Literal.number(value)
    if isinstance(value, list):
        return exp.Array(expressions=[_literal(v) for v in value])
    return exp.Literal.string(str(value))


def bind_parameters(tree: exp.Expression, values: Mapping[str, ParamValue]) -> exp.Expression:
    """Put rule parameters in as literals; leave :since, :until and :baseline_start for run time."""
    missing: set[str] = set()

    def swap(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Placeholder) and node.name:
            if node.name in RUNTIME_PARAMS:
                return node
            if node.name not in values:
                missing.add(node.name)
                return node
            value = values[node.name]
            if isinstance(value, list) and isinstance(node.parent, exp.In):
                return exp.Tuple(expressions=[_literal(v) for v in value])
            return _literal(value)
        return node

    bound = tree.transform(swap, copy=True)
    if missing:
        raise ValueError(f"the query uses undeclared parameters: {', '.join(sorted(missing))}")
    # `x IN (:list)` parses as IN with one expression; unwrap the tuple we put there.
    for node in bound.find_all(exp.In):
        items = node.expressions
        if len(items) == 1 and isinstance(items[0], exp.Tuple):
            node.set("expressions", items[0].expressions)
    return bound


def sargable_pairs(tree: exp.Expression) -> exp.Expression:
    """`concat(a, '.', b) IN ('x.y', ...)` also implies `a IN ('x', ...) AND b IN ('y', ...)`: add those cheap
    conjuncts so the engine filters on plain columns before building a string for every row. Meaning is unchanged.
    """
    tree = tree.copy()
    for node in list(tree.find_all(exp.In)):
        target, items = node.this, node.expressions
        if isinstance(node.parent, exp.Not) or not isinstance(target, exp.Concat) or not items:
            continue
        parts = target.expressions
        if (len(parts) != 3 or not isinstance(parts[0], exp.Column) or not isinstance(parts[2], exp.Column)
                or not (isinstance(parts[1], exp.Literal) and parts[1].is_string and parts[1].this)):
            continue
        sep = parts[1].this
        if not all(isinstance(i, exp.Literal) and i.is_string and sep in i.this for i in items):
            continue
        heads = sorted({i.this.split(sep, 1)[0] for i in items})
        tails = sorted({i.this.split(sep, 1)[1] for i in items})
        extra = exp.and_(
            exp.In(this=parts[0].copy(), expressions=[exp.Literal.string(h) for h in heads]),
            exp.In(this=parts[2].copy(), expressions=[exp.Literal.string(t) for t in tails]),
        )
        node.replace(exp.paren(exp.and_(extra, node.copy())))
    return tree


def called_functions(duckdb_sql: str) -> set[str]:
    """Names of functions sqlglot passed through unknown: they must exist in the engine."""
    tree = sqlglot.parse_one(duckdb_sql, read="duckdb")
    return {node.name.lower() for node in tree.find_all(exp.Anonymous)}


def parameter_values(
    rule: Rule, source: str, *, folder: Path = Path("."), overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """What each rule parameter binds to: the configured override, else the default or its file expanded."""
    try:
        values: dict[str, Any] = {
            name: resolve_parameter(p, folder, source) for name, p in rule.parameters.items()
        }
    except ValueError as exc:
        raise RuleCompileError(str(exc)) from None
    for name, value in (overrides or {}).items():
        if name not in values:
            raise RuleCompileError(f"{source}: config overrides unknown parameter {name!r}")
        values[name] = value
    return values


class PortableRule(BaseModel):
    """A rule checked and bound once, in the Databricks dialect, knowing nothing of engines.

    `databricks_sql` stands alone (rollups it reads are leading CTEs) and runs as written on a warehouse or Spark;
    `own` is the rule's own bound query, still naming rollups by their bare names, for runners that build rollups.
    """

    model_config = {"arbitrary_types_allowed": True}

    rule: Rule
    source: str
    databricks_sql: str
    own: exp.Expression
    tables: list[str]
    rollups: list[str] = []


def compile_portable(
    rule: Rule,
    source: str,
    *,
    allowed_tables: Iterable[str],
    overrides: Mapping[str, Any] | None = None,
    folder: Path = Path("."),
    rollups: Mapping[str, exp.Expression] | None = None,
) -> PortableRule:
    """Parse, guard, lint and bind a rule; any failure raises RuleCompileError naming the file and what to change."""
    own = _parse(rule.query, source)
    available = rollups or {}
    read = rollups_read(own, available)
    tree = inject_rollups(own, {name: available[name] for name in read})
    referenced = _guard(tree, source, allowed_tables, rule.tables)
    values = parameter_values(rule, source, folder=folder, overrides=overrides)
    try:
        _lint_portability(tree)
        bound = bind_parameters(tree, values)
    except ValueError as exc:
        raise RuleCompileError(f"{source}: field 'query': {exc}") from None
    _guarded(source, lambda: check_generators(bound, max_rows=MAX_GENERATOR_ROWS))  # sizes are literal once bound
    outputs = {s.alias_or_name.lower() for s in bound.selects} if isinstance(bound, exp.Select) else set()
    if isinstance(bound, exp.SetOperation):
        outputs = {s.alias_or_name.lower() for s in bound.left.selects}  # type: ignore[attr-defined]
    missing = [c for c in REQUIRED_COLUMNS if c not in outputs]
    if missing:
        raise RuleCompileError(f"{source}: field 'query' must return columns {', '.join(missing)}")
    own_bound = bind_parameters(own, values) if read else bound
    return PortableRule(rule=rule, source=source, databricks_sql=bound.sql("databricks"), own=own_bound,
                        tables=referenced, rollups=read)


def explain_or_fail(explain: Callable[[str], None], duckdb_sql: str, source: str) -> None:
    """The engine must plan the rule; its own words say why not."""
    try:
        explain(duckdb_sql)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RuleCompileError(f"{source}: field 'query' does not plan on DuckDB: {first[:300]}") from None


def compile_rule(
    rule: Rule,
    source: str,
    *,
    allowed_tables: Iterable[str],
    overrides: Mapping[str, Any] | None = None,
    table_target: Callable[[str, str], exp.Table],
    engine_functions: AbstractSet[str],
    explain: Callable[[str], None] | None = None,
    folder: Path = Path("."),
    rollups: Mapping[str, CompiledRollup] | None = None,
) -> CompiledRule:
    """The portable compile, then the DuckDB form: what export and the rule tests check a rule with."""
    portable = compile_portable(rule, source, allowed_tables=allowed_tables, overrides=overrides, folder=folder,
                                rollups={k: v.tree for k, v in (rollups or {}).items()})
    tree = point_at_rollups(portable.own, portable.rollups) if portable.rollups else portable.own
    duckdb_sql = _engine_sql(tree, source, table_target, engine_functions)
    if explain is not None:
        explain_or_fail(explain, duckdb_sql, source)
    return CompiledRule(rule=rule, source=source, databricks_sql=portable.databricks_sql, duckdb_sql=duckdb_sql,
                        tables=portable.tables, rollups=portable.rollups)

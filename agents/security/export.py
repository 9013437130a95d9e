"""Rules as code a user can own: each configured rule's portable Databricks SQL, to list, read or export as files.

The SQL is the one the compiler checks at load time, rendered for a SQL warehouse: rule parameters bound as literals
(the settings' overrides before the rule's defaults), shared rollups inlined as leading CTEs, tables named
`system.<schema>.<table>`. Only the run's window stays open, as the named parameter markers `:since`, `:until` and
`:baseline_start`, which a Databricks SQL query, alert or job sets.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlglot
from sqlglot import exp

from insight_mcp.agents.core.errors import CallerError
from insight_mcp.agents.ingestion.catalog import TABLES
from insight_mcp.agents.security.answers import RuleInfo, RuleList
from insight_mcp.agents.security.compiler import (
    RUNTIME_PARAMS,
    CompiledRollup,
    compile_rollup,
    compile_rule,
    parameter_values,
)
from insight_mcp.agents.security.mitre import tactic_names
from insight_mcp.agents.security.model import Rule
from insight_mcp.agents.security.rules import configured_rules, load_rollups
from insight_mcp.agents.settings import DetectionSettings, Settings
from insight_mcp.agents.version import VERSION

FORMATS = ("databricks-sql",)
DIALECT = "databricks"
_SHOWN_LIST_ITEMS = 6  # a longer list is summarised in the header; the SQL below it carries every value


class ExportError(CallerError, ValueError):
    """Rules that cannot be listed or exported as asked; the message says what to change."""


@dataclass(frozen=True)
class ExportedRule:
    """One rule's Databricks SQL and the parameter values bound into it."""

    rule: Rule
    path: Path
    sql: str
    values: dict[str, Any]
    configured: frozenset[str]

    def file_text(self) -> str:
        """The `.sql` file: a comment header saying what the rule is and how it was bound, then the query."""
        return _header(self) + "\n" + self.sql + "\n"


def _nowhere(schema_name: str, table_name: str) -> exp.Table:
    """The compiler also renders engine SQL; an export never runs it, so its tables point at a placeholder."""
    return exp.table_(table_name, db=schema_name, catalog="engine")


@functools.lru_cache(maxsize=1)
def _engine_functions() -> frozenset[str]:
    """The functions the embedded engine has: a rule the engine could not run is not exported either."""
    import duckdb

    conn = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                              "autoload_known_extensions": False})
    try:
        return frozenset(r[0].lower() for r in conn.execute("SELECT function_name FROM duckdb_functions()").fetchall())
    finally:
        conn.close()


class _Compiler:
    """The engine's compile steps without a workspace: every rollup once, then any rule."""

    def __init__(self, config: DetectionSettings, known: set[str]) -> None:
        unknown = (set(config.parameters) | set(config.disabled_rules)) - known
        if unknown:  # the engine refuses such settings too
            raise ExportError(f"detections config names unknown rules: {', '.join(sorted(unknown))}")
        self.config = config
        self.functions = set(_engine_functions())
        self.rollups: dict[str, CompiledRollup] = {
            rollup.id: compile_rollup(rollup, path.name, allowed_tables=TABLES.keys(), table_target=_nowhere,
                                      engine_functions=self.functions)
            for rollup, path in load_rollups()
        }

    def portable(self, rule: Rule, path: Path) -> ExportedRule:
        overrides = self.config.parameters.get(rule.id) or {}
        compiled = compile_rule(rule, path.name, allowed_tables=TABLES.keys(), overrides=overrides,
                                table_target=_nowhere, engine_functions=self.functions, folder=path.parent,
                                rollups=self.rollups)
        pretty = sqlglot.parse_one(compiled.databricks_sql, read=DIALECT).sql(dialect=DIALECT, pretty=True)
        values = parameter_values(rule, path.name, folder=path.parent, overrides=overrides)
        return ExportedRule(rule=rule, path=path, sql=pretty, values=values, configured=frozenset(overrides))


def _rules(config: DetectionSettings, rule_ids: Iterable[str] | None = None,
           category: str | None = None) -> tuple[list[tuple[Rule, Path]], set[str]]:
    """The enabled rules, optionally only the named ones (each must exist and be enabled) or one category; and the
    ids of every rule, enabled or not."""
    every = configured_rules(config.rules_dir, [])
    known = {rule.id for rule, _ in every}
    enabled = [(rule, path) for rule, path in every if rule.id not in config.disabled_rules]
    if rule_ids is not None:
        wanted = set(rule_ids)
        unknown = wanted - known
        if unknown:
            raise ExportError(f"unknown rule ids: {', '.join(sorted(unknown))}; `insight-mcp rules list` names them")
        disabled = wanted & set(config.disabled_rules)
        if disabled:
            raise ExportError(f"rules {', '.join(sorted(disabled))} are disabled (detections.disabled_rules)")
        enabled = [(rule, path) for rule, path in enabled if rule.id in wanted]
    if category:
        enabled = [(rule, path) for rule, path in enabled if rule.category == category]
    return sorted(enabled, key=lambda item: (item[0].category, item[0].id)), known


def portable_rules(settings: Settings, *, rule_ids: Iterable[str] | None = None,
                   category: str | None = None) -> list[ExportedRule]:
    """Every enabled rule (or the named ones) compiled to portable SQL with the configured parameters."""
    chosen, known = _rules(settings.detections, rule_ids, category)
    if not chosen:
        return []
    compiler = _Compiler(settings.detections, known)
    return [compiler.portable(rule, path) for rule, path in chosen]


def portable_sql(rule: Rule | str, settings: Settings) -> str:
    """One rule's query as Databricks SQL: parameters bound, rollups inlined, only the window left open."""
    rule_id = rule if isinstance(rule, str) else rule.id
    return portable_rules(settings, rule_ids=[rule_id])[0].sql


def rule_catalog(settings: Settings, *, category: str | None = None, include_sql: bool = False) -> RuleList:
    """What list_detections and `insight-mcp rules list` show: each enabled rule's metadata, and its SQL on request."""
    config = settings.detections
    chosen, known = _rules(config, category=category)
    sql: dict[str, str] = {}
    if include_sql and chosen:
        compiler = _Compiler(config, known)
        sql = {rule.id: compiler.portable(rule, path).sql for rule, path in chosen}
    rules = [
        RuleInfo(id=r.id, title=r.title, category=r.category, severity=r.severity, kind=r.kind, fidelity=r.fidelity,
                 mitre=r.mitre, tactics=tactic_names(r.tactics), threat_model=r.threat_model, tables=r.tables,
                 false_positives=" ".join(r.false_positives.split()),
                 parameters={k: config.parameters.get(r.id, {}).get(k, p.default if p.from_file is None
                                                                     else f"<list from {p.from_file}>")
                             for k, p in r.parameters.items()},
                 description=r.description.strip(), sql=sql.get(r.id))
        for r, _ in chosen
    ]
    return RuleList(rules=rules)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _shown(value: Any, param_file: str | None) -> str:
    if isinstance(value, list) and (len(value) > _SHOWN_LIST_ITEMS or param_file):
        where = f" from {param_file}" if param_file else ""
        return f"{len(value)} values{where}, bound in the query"
    if isinstance(value, str) and param_file:
        return f"a pattern built from {param_file}"
    return _one_line(json.dumps(value, ensure_ascii=False, default=str))


def _runtime_lines(rule: Rule, used: set[str]) -> list[str]:
    meaning = {
        "since": "window start, inclusive (TIMESTAMP, UTC)",
        "until": "window end, exclusive (TIMESTAMP, UTC)",
        "baseline_start": (f"midnight UTC of :since's day minus {rule.baseline_days} day(s): the history compared"
                           if rule.baseline_days else "the same as :since (the rule reads no history)"),
    }
    return [f"--   :{name:<15} {meaning[name]}" for name in RUNTIME_PARAMS if name in used]


def _header(item: ExportedRule) -> str:
    rule = item.rule
    lines = [
        f"-- rule: {rule.id}",
        f"-- title: {_one_line(rule.title)}",
        f"-- severity: {rule.severity}",
        f"-- category: {rule.category}",
        f"-- mitre: {', '.join(rule.mitre) or '-'}",
        f"-- tactics: {', '.join(tactic_names(rule.tactics)) or '-'}",
        f"-- tables: {', '.join(rule.tables)}",
    ]
    if item.values:
        lines.append("-- parameters:")
        for name, value in item.values.items():
            param = rule.parameters[name]
            origin = "configured" if name in item.configured else "default"
            lines.append(f"--   {name} = {_shown(value, None if origin == 'configured' else param.from_file)}"
                         f" ({origin})")
    else:
        lines.append("-- parameters: none")
    used = {p.name for p in sqlglot.parse_one(item.sql, read=DIALECT).find_all(exp.Placeholder) if p.name}
    runtime = _runtime_lines(rule, used)
    if runtime:
        lines.append("-- set when scheduling (named parameter markers):")
        lines.extend(runtime)
    lines.append(f"-- generated by insight-mcp {VERSION}; do not edit, re-export")
    return "\n".join(lines) + "\n"


def _write_all(out_dir: Path, files: Mapping[Path, str]) -> None:
    """Every file or none: each is written beside its target first, then all are moved into place."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"cannot export to {out_dir}: it is a file, not a folder")
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create the export folder {out_dir}: {exc.strerror or exc}") from None
    staged: list[tuple[Path, Path]] = []
    try:
        for target, text in files.items():
            temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
            with temp.open("x", encoding="utf-8", newline="\n") as handle:
                staged.append((temp, target))
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
    except OSError as exc:
        for temp, _ in staged:
            temp.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise ExportError(f"cannot write to the export folder {out_dir}: {exc.strerror or exc}; "
                          "nothing was written") from None
    moved = 0
    try:
        for temp, target in staged:
            os.replace(temp, target)
            moved += 1
    except OSError as exc:
        for temp, _ in staged[moved:]:
            temp.unlink(missing_ok=True)
        raise ExportError(f"cannot replace files in {out_dir}: {exc.strerror or exc}; {moved} of {len(staged)} "
                          "were updated, export again") from None


def export_rules(settings: Settings, out_dir: Path, *, rule_ids: Iterable[str] | None = None,
                 fmt: str = "databricks-sql") -> list[Path]:
    """Write `<rule_id>.sql` per enabled rule (or the named ones) for scheduling as Databricks SQL queries or alerts."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}: the accepted format is {', '.join(FORMATS)}")
    exported = portable_rules(settings, rule_ids=rule_ids)
    if not exported:
        raise ExportError("no enabled rule to export")
    files = {out_dir / f"{item.rule.id}.sql": item.file_text() for item in exported}
    _write_all(out_dir, files)
    return list(files)

"""The portable rule set: rule and rollup files parsed, checked and bound once, to Databricks SQL, for any engine."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from sqlglot import exp

from insight_mcp.agents.ingestion.catalog import TABLES
from insight_mcp.agents.security.compiler import (
    PortableRule,
    RuleCompileError,
    compile_portable,
    portable_rollup,
)
from insight_mcp.agents.security.model import Rollup, Rule
from insight_mcp.agents.security.rules import builtin_rule_dirs, load_rollups, load_rules
from insight_mcp.agents.settings import DetectionSettings

# Portable rules by everything their compilation reads, shared by the rule sets of one process: compiling the suite
# takes seconds (sqlglot parses, transforms and checks every query), and a server may build several.
_PORTABLE: dict[tuple[object, ...], PortableRule] = {}
MAX_CACHED = 2000


def _references(folder: Path) -> tuple[object, ...]:
    """The reference lists beside a folder's rules, by name, time and size: a rule's from_file parameters read them."""
    return tuple(sorted((ref.name, ref.stat().st_mtime_ns, ref.stat().st_size) for ref in folder.glob("*.txt")))


def _chosen(config: DetectionSettings, only: Iterable[str] | None) -> list[tuple[Rule, Path]]:
    """The enabled rule files (optionally only some), parsed and checked but not compiled."""
    folders = builtin_rule_dirs() + ([config.rules_dir] if config.rules_dir else [])
    available = load_rules(folders)
    unknown = (set(config.parameters) | set(config.disabled_rules)) - {r.id for r, _ in available}
    if unknown:
        raise RuleCompileError(f"detections config names unknown rules: {', '.join(sorted(unknown))}")
    wanted = set(only) if only is not None else None
    return [(rule, path) for rule, path in available
            if rule.id not in config.disabled_rules and (wanted is None or rule.id in wanted)]


def rules_by_id(config: DetectionSettings) -> dict[str, Rule]:
    """The enabled rules' own files, by id, uncompiled: what correlation reads a rule's risk and story from."""
    return {rule.id: rule for rule, _ in _chosen(config, None)}


class RuleSet:
    """The enabled rules (optionally only some) and the rollups they read, in their portable form."""

    def __init__(self, config: DetectionSettings, *, only: Iterable[str] | None = None) -> None:
        self.config = config
        chosen = _chosen(config, only)
        self.rollup_files: dict[str, tuple[Rollup, Path]] = {r.id: (r, p) for r, p in load_rollups()}
        self.rollups: dict[str, exp.Expression] = {
            rid: portable_rollup(rollup, path.name, allowed_tables=TABLES.keys())
            for rid, (rollup, path) in self.rollup_files.items()
        }
        digest = tuple(sorted((k, v.sql("databricks")) for k, v in self.rollups.items()))
        references: dict[Path, tuple[object, ...]] = {}
        self.rules: dict[str, PortableRule] = {}
        self.paths: dict[str, Path] = {}
        for rule, path in chosen:
            if path.parent not in references:
                references[path.parent] = _references(path.parent)
            overrides = config.parameters.get(rule.id)
            key = (str(path), rule.model_dump_json(), json.dumps(overrides, sort_keys=True, default=str),
                   references[path.parent], digest)
            portable = _PORTABLE.get(key)
            if portable is None:
                portable = compile_portable(rule, path.name, allowed_tables=TABLES.keys(), overrides=overrides,
                                            folder=path.parent, rollups=self.rollups)
                if len(_PORTABLE) >= MAX_CACHED:
                    _PORTABLE.clear()
                _PORTABLE[key] = portable
            self.rules[rule.id] = portable
            self.paths[rule.id] = path

    def by_id(self) -> dict[str, Rule]:
        """Each rule's own file, by id: what correlation and reports read a rule's risk and story from."""
        return {rule_id: portable.rule for rule_id, portable in self.rules.items()}

    def select(self, *, rule_ids: list[str] | None = None, categories: list[str] | None = None,
               skipped: Iterable[str] = ()) -> list[PortableRule]:
        """The runnable rules matching the filters; an id that is neither runnable nor skipped is an error."""
        skip = set(skipped)
        unknown = set(rule_ids or []) - set(self.rules)
        if unknown:
            raise ValueError(f"unknown rule ids: {', '.join(sorted(unknown))}")
        chosen = [r for r in self.rules.values() if r.rule.id not in skip and (not rule_ids or r.rule.id in rule_ids)]
        return [r for r in chosen if not categories or r.rule.category in categories]

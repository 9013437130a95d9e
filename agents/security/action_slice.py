"""Which reads of the audit table can come from a per-run slice holding only the actions the rules name.

Most rules read a few actions (sign-ins, secret reads, deletions) over weeks of history, and each paid for filtering
every event of those weeks on its own. The embedded runner instead copies, once per run, the events whose
`action_name` any such read names, and points those reads at the copy. A read is pointed there only when that is
sure to change nothing: its own WHERE restricts `action_name` to literals (through AND and OR), and bounds
`event_time` from below by `:since` or `:baseline_start` and from above by `:until` or `:since`, which the slice's
time range covers. The read keeps its whole WHERE, so the copy only has to hold a superset of its rows.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlglot import exp

from insight_mcp.agents.ingestion.duckdb_backend import SCRATCH

AUDIT = ("access", "audit")
ACTION = "action_name"
SERVICE = "service_name"
TIME = "event_time"
LOWER_BOUNDS = {"since", "baseline_start"}  # both are at or after the slice's start
UPPER_BOUNDS = {"until", "since"}  # both are at or before the slice's end


def slice_table() -> exp.Table:
    """Where the embedded runner keeps the run's slice, beside the rollups."""
    return exp.table_("slice_access_audit", db="main", catalog=SCRATCH)


def _own_column(node: exp.Expression, alias: str, name: str) -> bool:
    """`node` is the read table's column `name`, bare or qualified by the table's alias."""
    return (isinstance(node, exp.Column) and node.name.lower() == name
            and (not node.table or node.table.lower() == alias))


def _strings(items: list[exp.Expression]) -> frozenset[str] | None:
    if items and all(isinstance(i, exp.Literal) and i.is_string for i in items):
        return frozenset(i.this for i in items)
    return None


def action_keys(node: exp.Expression, alias: str) -> frozenset[str] | None:
    """Actions that include every row `node` can be true for, or None when the condition does not bound them."""
    if isinstance(node, exp.Paren):
        return action_keys(node.this, alias)
    if isinstance(node, exp.And):
        known = [k for k in (action_keys(node.left, alias), action_keys(node.right, alias)) if k is not None]
        return frozenset.intersection(*known) if known else None
    if isinstance(node, exp.Or):
        left, right = action_keys(node.left, alias), action_keys(node.right, alias)
        return None if left is None or right is None else left | right
    if isinstance(node, exp.EQ):
        if _own_column(node.this, alias, ACTION):
            return _strings([node.expression])
        if _own_column(node.expression, alias, ACTION):
            return _strings([node.this])
        return None
    if isinstance(node, exp.In) and not node.args.get("query"):
        if _own_column(node.this, alias, ACTION):
            return _strings(node.expressions)
        if isinstance(node.this, exp.Concat):  # concat(service_name, '.', action_name) IN ('svc.action', ...)
            parts = node.this.expressions
            if (len(parts) == 3 and _own_column(parts[0], alias, SERVICE) and _own_column(parts[2], alias, ACTION)
                    and isinstance(parts[1], exp.Literal) and parts[1].is_string and parts[1].this):
                pairs = _strings(node.expressions)
                sep = parts[1].this
                if pairs is not None and all(sep in p for p in pairs):
                    # The action is what follows the service's name and the separator; a service name never holds
                    # the separator, so splitting at its first occurrence finds it.
                    return frozenset(p.split(sep, 1)[1] for p in pairs)
    return None


def _time_bound(node: exp.Expression, alias: str) -> str | None:
    """'lower' or 'upper' for `event_time >= :since`-style bounds the slice's range covers."""
    if isinstance(node, (exp.GTE, exp.GT, exp.LT, exp.LTE)) and _own_column(node.this, alias, TIME):
        bound = node.expression
        if isinstance(bound, exp.Placeholder):
            if isinstance(node, (exp.GTE, exp.GT)) and bound.name in LOWER_BOUNDS:
                return "lower"
            if isinstance(node, (exp.LT, exp.LTE)) and bound.name in UPPER_BOUNDS:
                return "upper"
    return None


def is_audit(node: exp.Expression) -> bool:
    return (isinstance(node, exp.Table) and node.catalog.lower() == "system"
            and (node.db.lower(), node.name.lower()) == AUDIT)


def reference_actions(table: exp.Table) -> frozenset[str] | None:
    """The actions one read of the audit table is restricted to, when its rows can come from the slice."""
    source = table.parent
    select = source.parent if isinstance(source, exp.From) else None
    if not isinstance(select, exp.Select) or select.args.get("joins") or select.args.get("laterals"):
        return None
    where = select.args.get("where")
    if where is None:
        return None
    alias = table.alias_or_name.lower()
    conjuncts = list(where.this.flatten()) if isinstance(where.this, exp.And) else [where.this]
    bounds = {_time_bound(c, alias) for c in conjuncts}
    if not {"lower", "upper"} <= bounds:
        return None
    known = [k for k in (action_keys(c, alias) for c in conjuncts) if k is not None]
    return frozenset.intersection(*known) if known else None


def slice_actions(tree: exp.Expression) -> frozenset[str] | None:
    """Every action the rule's sliceable reads need, or None when none of its reads can use the slice."""
    found = [k for k in (reference_actions(t) for t in tree.find_all(exp.Table) if is_audit(t)) if k is not None]
    return frozenset().union(*found) if found else None


def point_at_slice(tree: exp.Expression, target: Callable[[], exp.Table]) -> exp.Expression:
    """Read each sliceable reference of the audit table from the slice; every other read is left as it is."""
    tree = tree.copy()  # the rule's own tree is shared: never changed in place
    chosen = {id(t) for t in tree.find_all(exp.Table) if is_audit(t) and reference_actions(t) is not None}

    def swap(node: exp.Expression) -> exp.Expression:
        if id(node) in chosen and isinstance(node, exp.Table):
            new = target()
            new.set("alias", node.args.get("alias") or exp.TableAlias(this=exp.to_identifier(AUDIT[1])))
            return new
        return node

    return tree.transform(swap, copy=False)

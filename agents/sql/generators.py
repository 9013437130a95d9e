"""Row generators (range, sequence, explode, ...): each bounded in size, and never multiplied by a join.

A query over generators alone reads no table, so nothing but its literals bounds it: `range(10^9) a, range(10^9) b`
keeps a core busy until the statement timeout. Exploding a column of a system table is bounded by the table.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

from sqlglot import exp

from insight_mcp.agents.sql.refused import QueryRefused

SETTING = "INSIGHT_QUERY__MAX_GENERATOR_ROWS"

# Functions whose row count (or array length) follows from literal start, stop and step, or a count.
_SIZED = frozenset({"range", "generate_series", "sequence", "array_repeat", "list_repeat"})
# Functions that turn each array (or map) into rows.
_EXPANDERS = frozenset(
    {"explode", "explode_outer", "posexplode", "posexplode_outer", "inline", "inline_outer", "unnest"}
)
_SECONDS = {"SECOND": 1, "MINUTE": 60, "HOUR": 3600, "DAY": 86_400, "WEEK": 604_800,
            "MONTH": 28 * 86_400, "QUARTER": 89 * 86_400, "YEAR": 365 * 86_400}  # shortest: never under-counts


def generator_name(node: exp.Expression) -> str | None:
    """The generator a node calls (`range`, `sequence`, `explode`, ...), or None when it is not one."""
    if isinstance(node, exp.GenerateSeries):
        return "sequence"
    if isinstance(node, exp.Anonymous):
        name = str(node.name).lower()
    elif isinstance(node, exp.Func):
        name = node.sql_name().lower()
    else:
        name = type(node).__name__.lower().lstrip("_")
        name = {"explodeouter": "explode_outer"}.get(name, name)
    return name if name in _SIZED or name in _EXPANDERS else None


def call_text(node: exp.Expression) -> str:
    """The call as a person would write it, shortened: `range(1000000000)`."""
    text = node.sql("databricks", normalize_functions="lower")
    at = text.find("(")
    shown = f"{generator_name(node) or text[:at].lower()}{text[at:]}" if at > 0 else text
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _arguments(node: exp.Expression) -> list[exp.Expression]:
    if isinstance(node, exp.GenerateSeries):
        return [a for a in (node.args.get("start"), node.args.get("end"), node.args.get("step")) if a is not None]
    if isinstance(node, (exp.Anonymous, exp.Unnest)):
        return list(node.expressions)
    first = node.args.get("this")
    return [first, *node.expressions] if isinstance(first, exp.Expression) else list(node.expressions)


def _number(node: exp.Expression) -> float | None:
    if isinstance(node, exp.Paren):
        return _number(node.this)
    if isinstance(node, exp.Neg):
        inner = _number(node.this)
        return -inner if inner is not None else None
    if isinstance(node, exp.Literal) and not node.is_string:
        try:
            return float(node.this)
        except ValueError:
            return None
    if isinstance(node, exp.Cast) and node.to.is_type(*exp.DataType.NUMERIC_TYPES):
        return _number(node.this)
    return None


def _moment(node: exp.Expression) -> float | None:
    """A literal date or timestamp, in seconds."""
    literal = node.this if isinstance(node, (exp.Cast, exp.TsOrDsToDate, exp.TsOrDsToTimestamp, exp.Date)) else None
    if isinstance(node, exp.Cast) and not node.to.is_type(*exp.DataType.TEMPORAL_TYPES):
        return None
    if not isinstance(literal, exp.Literal) or not literal.is_string:
        return None
    try:
        return dt.datetime.fromisoformat(literal.this.strip()).replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return None


def _interval(node: exp.Expression) -> float | None:
    """A literal interval, in seconds (months and years at their shortest)."""
    if not isinstance(node, exp.Interval):
        return None
    text = node.this.name if isinstance(node.this, exp.Literal) else (node.this.sql() if node.this else "")
    unit = node.text("unit").upper()
    if not unit:
        found = re.fullmatch(r"\s*(-?[\d.]+)\s+([A-Za-z]+)\s*", text)
        if not found:
            return None
        text, unit = found.group(1), found.group(2).upper()
    seconds = _SECONDS.get(unit.rstrip("S"))
    try:
        return float(text) * seconds if seconds else None
    except ValueError:
        return None


def _span(start: float, stop: float, step: float, *, inclusive: bool) -> int:
    if step == 0 or (stop - start) * step < 0:
        return 0
    steps = (stop - start) / step
    return math.floor(steps) + 1 if inclusive else math.ceil(steps)


def generator_size(node: exp.Expression) -> int | None:
    """Rows (or array elements) a sized generator makes, when its literals say; None when they do not."""
    name = generator_name(node)
    args = _arguments(node)
    if name in {"array_repeat", "list_repeat"}:
        count = _number(args[1]) if len(args) >= 2 else None
        return max(0, int(count)) if count is not None else None
    if not args:
        return None
    inclusive = name != "range"
    if name == "range" and len(args) == 1:
        args = [exp.Literal.number(0), args[0]]
    numbers = [n for n in (_number(a) for a in args[:3]) if n is not None]
    if len(numbers) == len(args[:3]) >= 2:
        start, stop = numbers[0], numbers[1]
        # sequence counts down by default when stop < start; range yields nothing then.
        step = numbers[2] if len(numbers) > 2 else -1.0 if inclusive and stop < start else 1.0
        return _span(start, stop, step, inclusive=inclusive)
    moments = [_moment(a) for a in args[:2]]
    if len(args) >= 2 and moments[0] is not None and moments[1] is not None:
        step_s = _interval(args[2]) if len(args) > 2 else (86_400.0 if moments[1] >= moments[0] else -86_400.0)
        if step_s is None:
            return None
        return _span(moments[0], moments[1], step_s, inclusive=inclusive)
    return None


@dataclass
class _Source:
    node: exp.Expression
    kind: str  # "generator", "bounded" (explode of a system table's column), "table" or "other"
    join: exp.Join | None
    lateral: bool = False

    @property
    def conditioned(self) -> bool:
        """Joined ON a condition that names a column (ON TRUE is a cross join by another name)."""
        if self.join is None:
            return False
        on = self.join.args.get("on")
        return bool(self.join.args.get("using")) or (on is not None and on.find(exp.Column) is not None)


class _Scopes:
    """Classifies what each FROM, JOIN and LATERAL brings: a generator, a system table, or neither."""

    def __init__(self, tree: exp.Expression) -> None:
        self.ctes = {cte.alias_or_name.lower(): cte.this for cte in tree.find_all(exp.CTE)}
        self._visiting: set[str] = set()

    def sources(self, select: exp.Select) -> list[_Source]:
        found: list[_Source] = []
        from_ = select.args.get("from_") or select.args.get("from")
        if isinstance(from_, exp.From):
            found.append(_Source(from_.this, "", None))
        for join in select.args.get("joins") or []:
            found.append(_Source(join.this, "", join, lateral=isinstance(join.this, exp.Lateral)))
        for lateral in select.args.get("laterals") or []:
            found.append(_Source(lateral, "", None, lateral=True))
        for projection in select.expressions:
            for node in projection.walk():
                if generator_name(node) in _EXPANDERS and node.find_ancestor(exp.Select) is select:
                    found.append(_Source(node, "", None, lateral=True))
        has_table = False
        for source in found:
            if not source.lateral:
                source.kind = self.kind(source.node, has_table=False)
                has_table = has_table or source.kind == "table"
        for source in found:
            if source.lateral:
                source.kind = self.kind(source.node, has_table=has_table)
        return found

    def kind(self, node: exp.Expression, *, has_table: bool) -> str:
        if isinstance(node, (exp.Lateral, exp.Subquery)) and isinstance(node.this, exp.Query):
            return self.body_kind(node.this)
        if isinstance(node, (exp.Lateral, exp.Table)) and isinstance(node.this, exp.Expression):
            if isinstance(node.this, exp.Identifier):
                return self.table_kind(node) if isinstance(node, exp.Table) else "other"
            node = node.this
        name = generator_name(node)
        if name in _SIZED:
            return "generator"
        if name in _EXPANDERS:
            columns = any(arg.find(exp.Column) for arg in _arguments(node))
            return "bounded" if columns and has_table else "generator"
        return "other"

    def table_kind(self, table: exp.Table) -> str:
        name = table.name.lower()
        if table.db or table.catalog or name not in self.ctes:
            return "table"
        if name in self._visiting:  # a recursive CTE's reference to itself
            return "other"
        self._visiting.add(name)
        try:
            return self.body_kind(self.ctes[name])
        finally:
            self._visiting.discard(name)

    def body_kind(self, query: exp.Expression) -> str:
        selects = [query] if isinstance(query, exp.Select) else list(_arms(query))
        kinds = {s.kind for select in selects for s in self.sources(select)}
        if "generator" in kinds and not isinstance(query, exp.Select):
            return "generator"
        return "table" if "table" in kinds else "generator" if "generator" in kinds else "other"


def _arms(query: exp.Expression) -> Iterator[exp.Select]:
    if isinstance(query, exp.Select):
        yield query
    elif isinstance(query, exp.SetOperation):
        yield from _arms(query.this)
        yield from _arms(query.expression)
    elif isinstance(query, exp.Subquery):
        yield from _arms(query.this)


def _describe(source: _Source) -> str:
    node = source.node
    if isinstance(node, (exp.Table, exp.Lateral)) and generator_name(node.this):
        return call_text(node.this)
    if generator_name(node):
        return call_text(node)
    if isinstance(node, exp.Table):
        return ".".join(part for part in (node.catalog, node.db, node.name) if part)
    return "a subquery over generators" if source.kind == "generator" else "a subquery"


def check_generators(tree: exp.Expression, *, max_rows: int) -> None:
    """Refuse generators larger than `max_rows`, ones whose size no literal bounds, and joins that multiply them."""
    scopes = _Scopes(tree)
    for node in tree.walk():
        name = generator_name(node)
        if name in _SIZED:
            size = generator_size(node)
            if size is None:
                raise QueryRefused(
                    "generator_size",
                    f"{call_text(node)} has a size that its literals do not fix (it depends on a column, a "
                    f"subquery or an expression); give literal start, stop and step, at most {max_rows:,} rows "
                    f"({SETTING})",
                )
            if size > max_rows:
                raise QueryRefused(
                    "generator_size",
                    f"{call_text(node)} would produce {size:,} rows; at most {max_rows:,} per generator ({SETTING})",
                )
        elif name in _EXPANDERS and any(arg.find(exp.Query) for arg in _arguments(node)):
            raise QueryRefused(
                "generator_size",
                f"{call_text(node)} expands the answer of a subquery, whose size is not known before it runs; "
                "explode a column of a system table, or a literal array",
            )
    for select in tree.find_all(exp.Select):
        sources = scopes.sources(select)
        for source in sources:
            if source.kind == "generator" and generator_name(source.node) in _EXPANDERS and any(
                arg.find(exp.Column) for arg in _arguments(source.node)
            ):
                raise QueryRefused(
                    "generator_size",
                    f"{call_text(source.node)} expands values that do not come from a system table, so no table "
                    "bounds it; explode a column of a system table, or a literal array",
                )
        generators = [s for s in sources if s.kind == "generator"]
        others = [s for s in sources if s.kind in ("table", "other")]
        if len(generators) >= 2:
            first, second = generators[0], generators[1]
            raise QueryRefused(
                "generator_join",
                f"{_describe(first)} is joined with {_describe(second)}: a join of generators multiplies their "
                "rows and can keep a core busy until the timeout; use one generator per SELECT",
            )
        if generators and others:
            generator = generators[0]
            loose = (
                generator.lateral
                or (generator.join is not None and not generator.conditioned)
                or (generator.join is None and any(not s.conditioned for s in others))
            )
            if loose:
                other = next(s for s in others if s is not generator)
                raise QueryRefused(
                    "generator_join",
                    f"{_describe(generator)} is cross joined with {_describe(other)}: every row of one meets every "
                    "row of the other; join a generator to a table only ON a condition on their columns",
                )

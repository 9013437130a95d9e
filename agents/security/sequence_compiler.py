"""Sequences as data: an ordered chain of event steps joined on a key within time bounds, written as a file like a rule.

A sequence file holds a rule's metadata and, instead of `query`, `steps`. Each step selects events with a Databricks
SQL condition and names the columns it exposes; a later step joins an earlier one on the columns it names in `join`,
and must happen after it within `within_minutes`. A step with `min_count` needs that many of its events (sharing the
step's join columns) within `count_minutes`, and the chain continues from the event that reached the count.

The sequence is compiled into an ordinary rule: one query in Databricks SQL (window counts and self-joins, nothing an
engine lacks), so it loads, compiles, runs, exports and is tested with firing and near-miss cases exactly as a
rule is. Its finding names the principal the last step exposes, spans the first to the last step, and carries each
step's evidence.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from insight_mcp.agents.security.model import Detection, Rule

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
MAX_STEPS = 5
EVIDENCE_PER_STEP = 3


class Step(BaseModel):
    """One link of the chain: which events, which columns it exposes, how it joins the step before."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=3, max_length=120, description="What this step is, in words.")
    table: str = Field("system.access.audit", description="The system table the step reads.")
    where: str = Field(min_length=3, description="A Databricks SQL condition on the table's columns; the row is "
                                                 "`ev`, for subqueries that look back (e.g. at a rollup).")
    columns: dict[str, str] = Field(description="Name -> Databricks SQL expression: what the step exposes.")
    join: list[str] = Field(default_factory=list, description="Columns equal to the same-named columns of the "
                                                              "latest earlier step exposing them.")
    within_minutes: int | None = Field(None, ge=1, le=60 * 24 * 30,
                                       description="After the previous step, at most this long.")
    min_count: int = Field(1, ge=1, le=100_000, description="Events of this step needed, sharing its join columns.")
    count_minutes: int | None = Field(None, ge=1, le=60 * 24 * 30,
                                      description="The span min_count events must fall in; default within_minutes "
                                                  "or 60.")

    @field_validator("columns")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("a step must expose at least one column")
        for name in value:
            if not _NAME.match(name) or name in {"t", "id", "n", "workspace_id"}:
                raise ValueError(f"column name {name!r} must be snake_case and not t, id, n or workspace_id")
        return value


class Sequence(Detection):
    """A detection whose finding is an ordered chain of steps."""

    principal: str = Field("principal", description="The column (exposed by some step) naming who did it.")
    steps: list[Step] = Field(min_length=2, max_length=MAX_STEPS)

    @model_validator(mode="after")
    def _chain(self) -> Sequence:
        seen: set[str] = set()
        for number, step in enumerate(self.steps, 1):
            if number == 1 and (step.join or step.within_minutes):
                raise ValueError("steps.1: the first step joins nothing: leave out join and within_minutes")
            if number > 1:
                if not step.join:
                    raise ValueError(f"steps.{number}: name the join columns it shares with an earlier step")
                missing = [c for c in step.join if c not in seen]
                if missing:
                    raise ValueError(f"steps.{number}: join on {', '.join(missing)}, which no earlier step exposes")
                if step.within_minutes is None:
                    raise ValueError(f"steps.{number}: within_minutes bounds how long after the previous step")
            unknown = [c for c in step.join if c not in step.columns]
            if unknown:
                raise ValueError(f"steps.{number}: join columns {', '.join(unknown)} must be among its columns")
            seen |= set(step.columns)
        if self.principal not in seen:
            raise ValueError(f"principal {self.principal!r} is not a column any step exposes")
        return self


def is_sequence(data: dict[str, Any]) -> bool:
    """A rule file whose detection is a chain of steps rather than one query."""
    return "steps" in data and "query" not in data


def _time_and_id(table: str) -> tuple[str, str]:
    from insight_mcp.agents.ingestion.catalog import get_table

    spec = get_table(table)
    key = spec.event_key[0] if spec.event_key else spec.time_column
    return spec.time_column, key


def _step_cte(index: int, step: Step) -> str:
    time_column, key = _time_and_id(step.table)
    exposed = ",\n         ".join(f"{expr} AS {name}" for name, expr in step.columns.items())
    return (f"s{index} AS (\n"
            f"  SELECT {exposed},\n"
            f"         ev.workspace_id, ev.{time_column} AS t, CAST(ev.{key} AS STRING) AS id\n"
            f"  FROM {step.table} ev\n"
            f"  WHERE ev.{time_column} >= :since AND ev.{time_column} < :until\n"
            f"    AND ({step.where})\n"
            f")")


def _counted_cte(index: int, step: Step) -> str:
    """Events of a counting step that are at least the min_count-th within count_minutes of their join key."""
    span = step.count_minutes or step.within_minutes or 60
    keys = ", ".join([*(step.join or list(step.columns)), "workspace_id"])
    return (f"c{index} AS (\n"
            f"  SELECT * FROM (\n"
            f"    SELECT *, count(*) OVER (PARTITION BY {keys} ORDER BY t\n"
            f"                             RANGE BETWEEN INTERVAL {span} MINUTES PRECEDING AND CURRENT ROW) AS n\n"
            f"    FROM s{index}\n"
            f"  ) WHERE n >= {step.min_count}\n"
            f")")


def query(sequence: Sequence) -> str:
    """The sequence as one Databricks SQL query returning finding rows."""
    ctes = [_step_cte(i, step) for i, step in enumerate(sequence.steps, 1)]
    ctes += [_counted_cte(i, step) for i, step in enumerate(sequence.steps, 1) if step.min_count > 1]

    def source(i: int) -> str:
        return f"c{i}" if sequence.steps[i - 1].min_count > 1 else f"s{i}"

    owner: dict[str, int] = {}  # column -> the latest step exposing it so far
    selects: list[str] = []
    first = sequence.steps[0]
    for name in first.columns:
        owner[name] = 1
    selects.append(f"m1 AS (\n  SELECT {', '.join(f'{name} AS {name}_1' for name in first.columns)},\n"
                   f"         workspace_id, t AS t1, t AS t_last, array(id) AS ids1\n  FROM {source(1)}\n)")
    carried = [f"{name}_1" for name in first.columns] + ["ids1"]
    for i, step in enumerate(sequence.steps[1:], 2):
        on = " AND ".join(f"e.{c} = m.{c}_{owner[c]}" for c in step.join)
        mine = [f"e.{name} AS {name}_{i}" for name in step.columns]
        keep = ", ".join(f"m.{c}" for c in carried)
        selects.append(
            f"m{i} AS (\n"
            f"  SELECT {keep}, {', '.join(mine)},\n"
            f"         m.workspace_id, m.t1, e.t AS t_last, array(e.id) AS ids{i}\n"
            f"  FROM m{i - 1} m JOIN {source(i)} e\n"
            f"    ON {on} AND e.workspace_id <=> m.workspace_id\n"
            f"   AND e.t > m.t_last AND e.t <= m.t_last + INTERVAL {step.within_minutes} MINUTES\n)")
        for name in step.columns:
            owner[name] = i
        carried += [f"{name}_{i}" for name in step.columns] + [f"ids{i}"]
    last = len(sequence.steps)
    principal = f"{sequence.principal}_{owner[sequence.principal]}"
    evidence = ", ".join(f"slice(flatten(collect_list(ids{i})), 1, {EVIDENCE_PER_STEP})"
                         for i in range(1, last + 1))
    extra = ", ".join(f"slice(collect_set(CAST({name}_{index} AS STRING)), 1, 5) AS {name}s"
                      for name, index in owner.items() if name != sequence.principal)
    final = (f"SELECT CAST({principal} AS STRING) AS principal,\n"
             f"       workspace_id,\n"
             f"       min(t1) AS first_seen,\n"
             f"       max(t_last) AS last_seen,\n"
             f"       count(*) AS event_count,\n"
             f"       concat({evidence}) AS evidence_ids" + (f",\n       {extra}" if extra else "") + "\n"
             f"FROM m{last}\n"
             f"WHERE {principal} IS NOT NULL\n"
             f"GROUP BY CAST({principal} AS STRING), workspace_id")
    return "WITH " + ",\n".join(ctes + selects) + "\n" + final


def to_rule(sequence: Sequence) -> Rule:
    """The sequence as the rule the engine runs: its metadata, its steps in the description, its compiled query."""
    chain = " -> ".join(step.name for step in sequence.steps)
    tables = list(dict.fromkeys(step.table for step in sequence.steps))
    return Rule(id=sequence.id, title=sequence.title, description=f"{sequence.description.strip()} Sequence: {chain}.",
                category=sequence.category, severity=sequence.severity, fidelity=sequence.fidelity,
                mitre=sequence.mitre, tactics=sequence.tactics, threat_model=sequence.threat_model, tables=tables,
                dedup_window_hours=sequence.dedup_window_hours, baseline_days=sequence.baseline_days,
                false_positives=sequence.false_positives, recommendation=sequence.recommendation, query=query(sequence),
                kind="sequence", risk=sequence.risk)

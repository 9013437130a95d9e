"""Small SQL helpers for the bulk rows: quoting, list literals, weighted slots and temp lookup tables."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import duckdb
import pyarrow as pa


def _q(value: str | None) -> str:
    return "NULL" if value is None else "'" + value.replace("'", "''") + "'"


def _sql_list(values: Iterable[Any]) -> str:
    items = [str(v) if isinstance(v, int) else _q(str(v)) for v in values]
    return "[" + ", ".join(items) + "]"


def _allocate(weights: Sequence[float], total: int, *, min_one: bool = True) -> list[int]:
    """Integer slot counts proportional to the weights (largest remainder), summing to total."""
    positive = sum(w for w in weights if w > 0)
    raw = [w / positive * total if w > 0 else 0.0 for w in weights]
    counts = [max(1, math.floor(r)) if (min_one and w > 0) else math.floor(r) for r, w in zip(raw, weights,
                                                                                                strict=True)]
    order = sorted(range(len(weights)), key=lambda i: (raw[i] - math.floor(raw[i]), -i), reverse=True)
    i = 0
    while sum(counts) < total:
        if weights[order[i % len(order)]] > 0:
            counts[order[i % len(order)]] += 1
        i += 1
    while sum(counts) > total:
        j = max(range(len(counts)), key=lambda k: counts[k])
        counts[j] -= 1
    return counts


def _slots(weights: Sequence[float], total: int) -> list[int]:
    out: list[int] = []
    for index, count in enumerate(_allocate(weights, total)):
        out.extend([index] * count)
    return out


def _register(con: duckdb.DuckDBPyConnection, name: str, columns: dict[str, list[Any]]) -> None:
    con.register("_g_src", pa.table(columns))
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM _g_src")
    finally:
        con.unregister("_g_src")


def _register_slots(
    con: duckdb.DuckDBPyConnection, name: str, rows: dict[str, list[Any]], counts: list[int]
) -> None:
    """A lookup table with one row per slot: row i of `rows` repeated counts[i] times, slots in row order.

    Joining `slot = random % total` against it is a fast, deterministic weighted choice.
    """
    columns = dict(rows)
    columns["_n"] = counts
    columns["_o"] = list(range(len(counts)))
    names = ", ".join(rows)
    con.register("_g_src", pa.table(columns))
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {name} AS "
            f"SELECT (row_number() OVER (ORDER BY _o, _j) - 1)::BIGINT AS slot, {names} "
            f"FROM (SELECT *, unnest(range(_n)) AS _j FROM _g_src)"
        )
    finally:
        con.unregister("_g_src")

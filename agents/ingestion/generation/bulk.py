"""Shared machinery of the in-DuckDB bulk rows: lookup slot tables, who-and-when CTEs, batched inserts."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from typing import Any

import duckdb

from insight_mcp.agents.ingestion.generation.audit_actions import ACTIONS, ERROR_PROFILES
from insight_mcp.agents.ingestion.generation.model import DAY_MS, HOUR_MS, _Estate, _Principal
from insight_mcp.agents.ingestion.generation.sql_helpers import _allocate, _register, _register_slots, _slots, _sql_list
from insight_mcp.agents.ingestion.generation.values import _hex

KIND_CODES = {"human": 0, "admin": 1, "sp_etl": 2, "sp_sql": 3, "sp_infra": 4}
HUMAN_HOUR_WEIGHTS = (0.4, 0.2, 0.1, 0.1, 0.1, 0.3, 1.5, 8, 30, 90, 100, 100, 60, 90, 100, 95, 80, 50, 25,
                      12, 9, 7, 4, 1.5)
DAY_WEIGHTS = (1.0, 1.0, 1.0, 0.98, 0.82, 0.05, 0.035)  # Monday .. Sunday
PRINCIPAL_SLOTS_MIN = 1 << 16
DAY_SLOTS = 1 << 17
ACTION_SLOTS = 1 << 14
HUMAN_SHARE = 0.64  # of audit events and statements; service principals make the rest


def _slot_count(n: int) -> int:
    return max(PRINCIPAL_SLOTS_MIN, 1 << math.ceil(math.log2(max(1, 8 * n))))


def _day_table(estate: _Estate) -> dict[str, list[Any]]:
    """Per day: its share of all rows, and the share of those made by people (working days are busier)."""
    people = [DAY_WEIGHTS[(estate.start + dt.timedelta(days=d)).weekday()] for d in range(estate.days)]
    total = sum(people)
    shares = [HUMAN_SHARE * w / total + (1 - HUMAN_SHARE) / estate.days for w in people]
    p_human = [round(100_000 * HUMAN_SHARE * w / total / share)
               for w, share in zip(people, shares, strict=True)]
    return {"day_idx": list(range(estate.days)), "p_human": p_human, "share": shares}


def _register_helpers(con: duckdb.DuckDBPyConnection, estate: _Estate) -> None:
    """Small lookup tables the bulk SQL joins against: who, what, when, from where."""
    con.execute(
        "CREATE OR REPLACE TEMP MACRO rb(h, s, w, n) AS "
        "CAST(((((h >> s) & ((1::UBIGINT << w) - 1)) * CAST(n AS UBIGINT)) >> w) AS BIGINT)"
    )
    _register_people_slots(con, "_g_pslot", estate, estate.principals)
    _register_action_slots(con)
    days = _day_table(estate)
    shares = days.pop("share")
    _register_slots(con, "_g_dslot", days, _allocate(shares, DAY_SLOTS))
    keys, ips = [], []
    for p in estate.principals:
        for k, ip in enumerate(p.ips):
            keys.append(p.pid * 16 + k)
            ips.append(ip)
    _register(con, "_g_ipslot", {"ipkey": keys, "ip": ips})


def _principal_columns(estate: _Estate, principals: Sequence[_Principal]) -> dict[str, list[Any]]:
    """Per-principal attributes the bulk SQL needs, column-wise."""
    cols: dict[str, list[Any]] = {}
    for p in principals:
        period = p.period_s or 86400
        whs = estate.ws_warehouses(p.home_ws)
        values = {
            "pid": p.pid, "kind": KIND_CODES[p.kind], "profile": _profile(p), "email": p.email,
            "subject": p.subject, "user_id": p.user_id, "tz": p.tz, "scheduled": p.scheduled,
            "period_ms": period * 1000, "offset_ms": p.offset_s * 1000,
            "jitter_ms": min(period // 3, 900) * 1000,
            "browser_ua": p.browser_ua, "api_ua": p.api_ua, "sql_ua": p.sql_ua, "home_ws": p.home_ws,
            "alt_ws": p.alt_ws, "token_id": p.token_id, "tbl_base": p.tbl_base, "tbl_span": p.tbl_span,
            "sec_base": p.sec_base, "sec_span": p.sec_span, "job_base": p.job_base,
            "sess": _hex(24, "session", estate.seed, p.email),
            "qsess": _hex(24, "qsession", estate.seed, p.email),
            "wh1": whs[p.pid % len(whs)].warehouse_id, "wh2": whs[(p.pid + 1) % len(whs)].warehouse_id,
            "serverless": whs[p.pid % len(whs)].serverless, "dur_mu": p.dur_mu, "bytes_mu": p.bytes_mu,
            "client_app": p.client[0], "client_driver": p.client[1],
            "job": str(estate.jobs[p.home_ws][p.job_base]),
        }
        for key, value in values.items():
            cols.setdefault(key, []).append(value)
    return cols


def _register_people_slots(
    con: duckdb.DuckDBPyConnection, name: str, estate: _Estate, principals: Sequence[_Principal],
    boost_sp: float = 1.0,
) -> None:
    """Weighted slots: [0, H) hold people, [H, H + S) service principals; (H, S) go to estate.slot_sizes."""
    humans = [p for p in principals if p.is_human]
    sps = [p for p in principals if p.is_sp]
    h, s = _slot_count(len(humans)), _slot_count(len(sps))
    counts = _allocate([p.weight for p in humans], h) + _allocate([p.weight * boost_sp for p in sps], s)
    _register_slots(con, name, _principal_columns(estate, humans + sps), counts)
    estate.slot_sizes[name] = (h, s)


def _who_and_when_sql(e: _Estate, n: int, slots: str, salt: int) -> str:
    """CTEs `ev` -> `timed`: the row's hashes, its day (monotonic in the row number), principal and time.

    Rows come out roughly in time order, so DuckDB's zone maps can skip row groups on time filters.
    """
    k = e.key + salt
    h_slots, s_slots = e.slot_sizes[slots]
    hours = _slots(HUMAN_HOUR_WEIGHTS, 1024)
    total_ms = e.days * DAY_MS
    return f"""
WITH ev AS (
  SELECT i, hash(i, {k}) AS h1, hash(i, {k + 1}) AS h2, hash(i, {k + 2}) AS h3, hash(i, {k + 3}) AS h4,
         hash(i, {k + 4}) AS h5
  FROM __ROWS__ t
), dayed AS (
  SELECT ev.*, d.day_idx, d.p_human FROM ev JOIN _g_dslot d ON d.slot = (ev.i * {DAY_SLOTS}) // {n}
), joined AS (
  SELECT dayed.*, p.* EXCLUDE (slot) FROM dayed JOIN {slots} p
    ON p.slot = CASE WHEN rb(h1, 0, 17, 100000) < p_human THEN rb(h1, 17, 20, {h_slots})
                     ELSE {h_slots} + rb(h1, 17, 20, {s_slots}) END
), placed AS (
  SELECT *,
    CASE WHEN scheduled
         THEN day_idx * {DAY_MS} + rb(h5, 32, 20, jitter_ms)
              + (rb(h5, 0, 20, {DAY_MS} // period_ms) * period_ms + offset_ms) % {DAY_MS}
         ELSE day_idx * {DAY_MS} + ({_sql_list(hours)}[1 + rb(h2, 0, 10, 1024)] - tz) * {HOUR_MS}
              + rb(h2, 10, 22, {HOUR_MS}) END AS t_raw
  FROM joined
), timed AS (  -- time zones and jitter push a few events over the ends of the range: move them a day back in
  SELECT *, CASE WHEN t_raw < 0 THEN t_raw + {DAY_MS} WHEN t_raw >= {total_ms} THEN t_raw - {DAY_MS}
                 ELSE t_raw END AS t_ms
  FROM placed
)"""


def _drop_helpers(con: duckdb.DuckDBPyConnection) -> None:
    for name in ("_g_pslot", "_g_aslot", "_g_dslot", "_g_ipslot", "_g_qslot", "_g_range"):
        con.execute(f"DROP TABLE IF EXISTS {name}")
    con.execute("DROP MACRO IF EXISTS rb")


def _register_action_slots(con: duckdb.DuckDBPyConnection) -> None:
    rows: dict[str, list[Any]] = {"aid": [], "service": [], "action": [], "browser": [], "sql_client": [],
                                  "fail_rate": [], "err_profile": [], "account_level": []}
    counts: list[int] = []
    for kind in range(5):  # slots kind * ACTION_SLOTS ... (kind + 1) * ACTION_SLOTS - 1 belong to one kind
        for aid, count in enumerate(_allocate([a.weights[kind] for a in ACTIONS], ACTION_SLOTS)):
            a = ACTIONS[aid]
            values = {"aid": aid, "service": a.service, "action": a.action, "browser": a.browser,
                      "sql_client": a.sql_client, "fail_rate": int(a.fail * 100_000),
                      "err_profile": ERROR_PROFILES.index(a.errors), "account_level": a.account_level}
            for key, value in values.items():
                rows[key].append(value)
            counts.append(count)
    _register_slots(con, "_g_aslot", rows, counts)


BATCH_ROWS = 1 << 22


def _insert_in_batches(con: duckdb.DuckDBPyConnection, n: int, sql: Callable[[str], str]) -> None:
    """Run an INSERT ... SELECT over row numbers 0..n-1 in batches.

    The row numbers come from a materialized table rather than range(), so DuckDB scans them in parallel;
    batches bound the memory. Every value derives from the absolute row number, so batching changes nothing.
    """
    size = min(n, BATCH_ROWS)
    con.execute(f"CREATE OR REPLACE TEMP TABLE _g_range AS SELECT range AS j FROM range({size})")
    for offset in range(0, n, BATCH_ROWS):
        size = min(BATCH_ROWS, n - offset)
        con.execute(sql(f"(SELECT j + {offset} AS i FROM _g_range WHERE j < {size})"))


def _profile(p: _Principal) -> str:
    if p.kind == "sp_sql":
        return "dbt" if p.client[0] == "dbt" else "bi"
    return "etl" if p.kind == "sp_etl" else "human"

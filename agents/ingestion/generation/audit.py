"""The bulk of access.audit, generated inside DuckDB as one INSERT ... SELECT over row numbers."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import duckdb

from insight_mcp.agents.ingestion.generation.audit_actions import ACTIONS, ERROR_PROFILES, ERRORS
from insight_mcp.agents.ingestion.generation.bulk import ACTION_SLOTS, _insert_in_batches, _who_and_when_sql
from insight_mcp.agents.ingestion.generation.model import DAY_MS, _Estate
from insight_mcp.agents.ingestion.generation.sql_helpers import _q, _sql_list
from insight_mcp.agents.ingestion.generation.values import _hex, _uuid
from insight_mcp.agents.ingestion.generation.vocabulary import NOTEBOOK_NAMES


def _map_sql(params: dict[str, str]) -> str:
    if not params:
        return "MAP {}::MAP(VARCHAR, VARCHAR)"
    fields = ", ".join(f"{_q(k)}: ({v})::VARCHAR" for k, v in params.items())
    return f"CAST({{{fields}}} AS MAP(VARCHAR, VARCHAR))"


def _params_case() -> str:
    branches = "\n      ".join(f"WHEN {i} THEN {_map_sql(a.params)}" for i, a in enumerate(ACTIONS))
    return f"CASE aid\n      {branches}\n    END"


def _result_case() -> str:
    branches = " ".join(f"WHEN {i} THEN {a.result}" for i, a in enumerate(ACTIONS) if a.result)
    return f"CASE aid {branches} ELSE NULL END"


def _error_case(part: int) -> str:
    branches = []
    for index, name in enumerate(ERROR_PROFILES):
        options = ERRORS[name]
        inner = " ".join(f"WHEN {j} THEN {o[part]}" for j, o in enumerate(options))
        branches.append(f"WHEN {index} THEN CASE rb(h3, 40, 8, {len(options)}) {inner} END")
    return "CASE err_profile " + " ".join(branches) + " END"


def _padded(values: Sequence[Any], n: int) -> list[Any]:
    return [values[i % len(values)] for i in range(n)] if values else ["unknown"] * n


def _audit_vars(e: _Estate) -> dict[str, str]:
    """SQL for the $variables of action parameters: list lookups by integer columns computed for every row.

    They are substituted into the CASE branches, so strings are only built for the rows that use them.
    """
    n_ws = len(e.workspaces)
    clusters = [c for w in range(n_ws) for c in _padded([c.cluster_id for c in e.ws_clusters(w)
                                                        if c.source != "JOB"], 64)]
    warehouses = [x for i in range(n_ws) for x in _padded([w.warehouse_id for w in e.ws_warehouses(i)], 8)]
    jobs = _sql_list(str(j) for ws_jobs in e.jobs for j in ws_jobs)
    notebooks = _sql_list(NOTEBOOK_NAMES)
    rng = e.rng("audit-vars")
    exec_times = sorted(f"{rng.lognormvariate(0.3, 1.4):.3f}" for _ in range(1024))
    rng.shuffle(exec_times)
    return {
        "tbl": f"{_sql_list(e.tables)}[ti]",
        "tid": f"{_sql_list(_uuid('table', e.seed, t) for t in e.tables)}[ti]",
        "cl": f"{_sql_list(clusters)}[1 + wsi * 64 + rb(r, 16, 6, 64)]",
        "job": f"{jobs}[1 + wsi * 64 + (job_base + rb(r, 22, 3, 6)) % 64]",
        "wh": f"{_sql_list(warehouses)}[1 + wsi * 8 + rb(r, 28, 3, 8)]",
        "scope": f"{_sql_list(s for s, _ in e.secrets)}[si]",
        "key": f"{_sql_list(k for _, k in e.secrets)}[si]",
        "nb_path": f"(CASE WHEN kind >= 2 THEN '/Workspace/Shared/pipelines/' || {notebooks}[1 + pid % 16] "
                   f"ELSE '/Users/' || email || '/' || {notebooks}[1 + nbi] END)",
        "nb_id": "(1000000000000000 + pid * 1000 + nbi)::VARCHAR",
        "exec_time": f"{_sql_list(exec_times)}[1 + rb(r, 40, 10, 1024)]",
    }


def _expand(sql: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], sql)


def _insert_bulk_audit(con: duckdb.DuckDBPyConnection, e: _Estate, n: int) -> None:
    """The bulk of access.audit: one INSERT ... SELECT per batch of row numbers."""
    template = _audit_sql(e, n)
    _insert_in_batches(con, n, lambda rows: template.replace("__ROWS__", rows))


def _audit_sql(e: _Estate, n: int) -> str:
    k = e.key
    day_hex = [_hex(8, "day", e.seed, d) for d in range(e.days)]
    variables = _audit_vars(e)
    sql = f"""
INSERT INTO access.audit BY NAME
{_who_and_when_sql(e, n, "_g_pslot", 0)}, acted AS (
  SELECT t.*, a.* EXCLUDE (slot), h4 AS r,
    CASE WHEN rb(h3, 24, 4, 16) < 14 THEN home_ws ELSE alt_ws END AS wsi
  FROM timed t JOIN _g_aslot a ON a.slot = t.kind * {ACTION_SLOTS} + rb(t.h1, 40, 14, {ACTION_SLOTS})
), final AS (
  SELECT t.*, ipx.ip, rb(h3, 0, 17, 100000) < fail_rate AS failed,
    epoch_ms({e.start_ms} + t_ms) AS ts,
    {_sql_list(e.workspaces)}[wsi + 1] AS ws,
    1 + (tbl_base + rb(r, 0, 16, tbl_span)) % {len(e.tables)} AS ti,
    1 + (sec_base + rb(r, 31, 2, sec_span)) % {len(e.secrets)} AS si,
    rb(r, 33, 4, 16) AS nbi,
    '{e.account_id}' AS account_id, '{e.metastore_id}' AS metastore_id
  FROM acted t JOIN _g_ipslot ipx ON ipx.ipkey = t.pid * 16 + rb(t.h3, 28, 4, 16)
)
SELECT
  account_id,
  CASE WHEN account_level THEN '0' ELSE ws END AS workspace_id,
  '2.0' AS version,
  ts AS event_time,
  CAST(ts AS DATE) AS event_date,
  ip AS source_ip_address,
  CASE WHEN kind >= 2 THEN api_ua
       WHEN sql_client AND sql_ua IS NOT NULL THEN sql_ua
       WHEN browser OR sql_client THEN browser_ua
       ELSE api_ua END AS user_agent,
  CASE WHEN kind <= 1 AND (browser OR (sql_client AND sql_ua IS NULL))
       THEN sess || {_sql_list(day_hex)}[1 + t_ms // {DAY_MS}] END AS session_id,
  {{'email': email, 'subject_name': subject}} AS user_identity,
  service AS service_name,
  action AS action_name,
  md5_number(i::VARCHAR || ':r:{k}')::UUID::VARCHAR AS request_id,
  {_params_case()} AS request_params,
  {{'status_code': CASE WHEN failed THEN {_error_case(0)} ELSE 200 END::INTEGER,
    'error_message': CASE WHEN failed THEN {_error_case(1)} END,
    'result': CASE WHEN NOT failed THEN {_result_case()} END}} AS response,
  CASE WHEN account_level THEN 'ACCOUNT_LEVEL' ELSE 'WORKSPACE_LEVEL' END AS audit_level,
  md5_number(i::VARCHAR || ':e:{k}')::UUID::VARCHAR AS event_id,
  CASE WHEN kind >= 2 AND service IN ('jobs', 'notebook')
       THEN {{'run_by': email, 'run_as': email, 'acting_resource': NULL::VARCHAR}} END AS identity_metadata
FROM final
"""
    return _expand(sql, variables)

"""The bulk of query.history, generated inside DuckDB with per-user workload profiles."""

from __future__ import annotations

import duckdb

from insight_mcp.agents.ingestion.generation.bulk import _insert_in_batches, _register_people_slots, _who_and_when_sql
from insight_mcp.agents.ingestion.generation.model import DAY_MS, _Estate
from insight_mcp.agents.ingestion.generation.sql_helpers import _sql_list
from insight_mcp.agents.ingestion.generation.values import _hex

STATEMENT_MIX = {  # per executor profile: (statement_type, share per mille) in cumulative order
    "human": (("SELECT", 860), ("DESCRIBE", 30), ("SHOW", 30), ("CREATE", 30), ("INSERT", 20), ("UPDATE", 10),
              ("DELETE", 5), ("EXPLAIN", 15)),
    "dbt": (("SELECT", 350), ("CREATE", 300), ("MERGE", 250), ("INSERT", 100)),
    "bi": (("SELECT", 1000),),
    "etl": (("INSERT", 300), ("MERGE", 250), ("SELECT", 300), ("OPTIMIZE", 100), ("COPY", 50)),
}
QUERY_ERRORS = (
    "[TABLE_OR_VIEW_NOT_FOUND] The table or view cannot be found. Verify the spelling and correctness of the "
    "schema and catalog.",
    "[PARSE_SYNTAX_ERROR] Syntax error at or near 'FROM'.",
    "[DIVIDE_BY_ZERO] Division by zero. Use `try_divide` to tolerate divisor being 0 and return NULL "
    "instead.",
    "[UNRESOLVED_COLUMN.WITH_SUGGESTION] A column, variable, or function parameter with name `amount_usd` "
    "cannot be resolved.",
    "Query exceeded the configured statement timeout of 2 hours.",
    "[CAST_INVALID_INPUT] The value 'N/A' of the type \"STRING\" cannot be cast to \"DECIMAL(18,2)\" because "
    "it is malformed.",
    "[INSUFFICIENT_PERMISSIONS] Insufficient privileges: User does not have permission SELECT on table.",
)
DIMENSIONS = ("region", "country", "channel", "product_category", "status", "segment", "store_id")


def _register_query_slots(con: duckdb.DuckDBPyConnection, e: _Estate) -> None:
    executors = [p for p in e.principals if p.sql_user]
    _register_people_slots(con, "_g_qslot", e, executors, boost_sp=3.0)


def _mix_case(column: str) -> str:
    branches = []
    for profile, mix in STATEMENT_MIX.items():
        inner, acc = [], 0
        for stype, share in mix:
            acc += share
            inner.append(f"WHEN u_type < {acc} THEN '{stype}'")
        branches.append(f"WHEN '{profile}' THEN CASE {' '.join(inner)} ELSE 'SELECT' END")
    return f"CASE {column} {' '.join(branches)} END"


def _statement_text_sql(tables: str) -> str:
    t = f"{tables}[ti]"
    t2 = f"{tables}[ti2]"
    dim = f"{_sql_list(DIMENSIONS)}[1 + rb(h6, 40, 3, {len(DIMENSIONS)})]"
    day = _day_expr()
    return f"""CASE stype
      WHEN 'SELECT' THEN CASE variant
        WHEN 0 THEN 'SELECT * FROM ' || {t} || ' WHERE updated_at >= ''' || {day} || ''' LIMIT 1000'
        WHEN 1 THEN 'SELECT ' || {dim} || ', count(*) AS n, sum(amount) AS total FROM ' || {t}
                    || ' WHERE event_date >= date_sub(current_date(), 30) GROUP BY ' || {dim}
                    || ' ORDER BY total DESC'
        WHEN 2 THEN 'SELECT a.*, b.status FROM ' || {t} || ' a JOIN ' || {t2}
                    || ' b ON a.id = b.id WHERE a.updated_at > ''' || {day} || ''''
        ELSE 'SELECT date_trunc(''day'', created_at) AS day, count(DISTINCT customer_id) AS customers FROM '
             || {t} || ' GROUP BY 1 ORDER BY 1' END
      WHEN 'DESCRIBE' THEN 'DESCRIBE TABLE EXTENDED ' || {t}
      WHEN 'SHOW' THEN 'SHOW TABLES IN ' || split_part({t}, '.', 1) || '.' || split_part({t}, '.', 2)
      WHEN 'EXPLAIN' THEN 'EXPLAIN SELECT * FROM ' || {t} || ' WHERE id = 42'
      WHEN 'CREATE' THEN 'CREATE OR REPLACE TABLE ' || {t} || '_tmp AS SELECT * FROM ' || {t2}
                         || ' WHERE ingest_date >= ''' || {day} || ''''
      WHEN 'INSERT' THEN 'INSERT INTO ' || {t} || ' SELECT * FROM ' || {t2}
                         || ' WHERE ingest_date = ''' || {day} || ''''
      WHEN 'MERGE' THEN 'MERGE INTO ' || {t} || ' AS tgt USING ' || {t2} || ' AS src ON tgt.id = src.id '
                        || 'WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *'
      WHEN 'UPDATE' THEN 'UPDATE ' || {t} || ' SET status = ''closed'' WHERE updated_at < ''' || {day} || ''''
      WHEN 'DELETE' THEN 'DELETE FROM ' || {t} || ' WHERE ingest_date < ''' || {day} || ''''
      WHEN 'OPTIMIZE' THEN 'OPTIMIZE ' || {t} || ' ZORDER BY (id)'
      ELSE 'COPY INTO ' || {t} || ' FROM ''/Volumes/' || replace({t}, '.', '/')
           || '/landing/'' FILEFORMAT = JSON'
    END"""


def _normal(h: str, shift: int) -> str:
    """A standard normal deviate from 52 bits of a hash (Box-Muller)."""
    u1 = f"((rb({h}, {shift}, 26, 67108864) + 0.5) / 67108864.0)"
    u2 = f"(rb({h}, {shift + 26}, 26, 67108864) / 67108864.0)"
    return f"(sqrt(-2.0 * ln({u1})) * cos(2.0 * pi() * {u2}))"


def _insert_bulk_queries(con: duckdb.DuckDBPyConnection, e: _Estate, n: int) -> None:
    """The bulk of query.history: statements with lognormal durations and per-user workload profiles."""
    _register_query_slots(con, e)
    template = _queries_sql(e, n)
    _insert_in_batches(con, n, lambda rows: template.replace("__ROWS__", rows))


def _queries_sql(e: _Estate, n: int) -> str:
    k = e.key + 100
    day_hex = [_hex(8, "qday", e.seed, d) for d in range(e.days)]
    tables = _sql_list(e.tables)
    n_tables = len(e.tables)
    errors = _sql_list(QUERY_ERRORS)
    return f"""
INSERT INTO query.history BY NAME
{_who_and_when_sql(e, n, "_g_qslot", 100)}, base AS (
  SELECT *, hash(i, {k + 5}) AS h6, hash(i, {k + 6}) AS h7, hash(i, {k + 7}) AS h8,
    {_normal('h3', 0)} AS z1,
    {_normal('h4', 0)} AS z2,
    rb(h3, 52, 10, 1000) AS u_status,
    rb(h4, 52, 10, 1000) AS u_type,
    rb(h6, 0, 10, 1000) AS u_cache,
    rb(h6, 10, 10, 1000) AS u_wait,
    rb(h6, 20, 2, 4) AS variant,
    1 + (tbl_base + rb(h8, 41, 16, tbl_span)) % {n_tables} AS ti,
    1 + (tbl_base + rb(h6, 24, 16, tbl_span) + 1) % {n_tables} AS ti2
  FROM timed
), typed AS (
  SELECT *, epoch_ms({e.start_ms} + t_ms) AS ts, {_mix_case('profile')} AS stype FROM base
), shaped AS (
  SELECT *,
    u_cache < 70 AND stype = 'SELECT' AND profile IN ('human', 'bi') AS cached,
    CASE WHEN u_status < 32 THEN 'FAILED' WHEN u_status < 48 THEN 'CANCELED' ELSE 'FINISHED' END AS status,
    greatest(3.0, exp(dur_mu + 1.15 * z1)
      * CASE stype WHEN 'DESCRIBE' THEN 0.04 WHEN 'SHOW' THEN 0.04 WHEN 'EXPLAIN' THEN 0.08
                   WHEN 'OPTIMIZE' THEN 8.0 WHEN 'MERGE' THEN 3.0 WHEN 'CREATE' THEN 2.5
                   WHEN 'INSERT' THEN 2.0 ELSE 1.0 END) AS exec_raw,
    CASE WHEN stype IN ('DESCRIBE', 'SHOW', 'EXPLAIN') THEN 0.0
         ELSE least(4.0e12, exp(bytes_mu + 0.8 * z1 + 0.7 * z2)) END AS bytes_raw
  FROM typed
), measured AS (
  SELECT *,
    CASE WHEN cached THEN 0 WHEN status = 'FAILED' THEN round(exec_raw * 0.35)
         WHEN status = 'CANCELED' THEN round(exec_raw * 1.6) ELSE round(exec_raw) END::BIGINT AS exec_ms,
    CASE WHEN cached THEN 4 + rb(h7, 52, 6, 40)
         ELSE greatest(6, round(exec_raw * (0.03 + rb(h8, 0, 8, 200) / 1000.0))) END::BIGINT AS compile_ms,
    CASE WHEN NOT cached AND u_wait < 22 THEN CASE WHEN serverless THEN 2000 + rb(h7, 34, 14, 8000)
                                                   ELSE 60000 + rb(h7, 34, 18, 240000) END
         ELSE 0 END::BIGINT AS wait_compute_ms,
    CASE WHEN NOT cached AND u_wait BETWEEN 22 AND 55 THEN round(exp(8.3 + 1.1 * z2)) ELSE 0 END::BIGINT
      AS wait_capacity_ms,
    CASE WHEN cached OR status = 'FAILED' THEN 0 ELSE round(bytes_raw) END::BIGINT AS read_bytes
  FROM shaped
), sized AS (
  SELECT *,
    wait_compute_ms + wait_capacity_ms + compile_ms + exec_ms AS total_ms,
    (read_bytes // (40 + rb(h6, 48, 4, 16) * 20))::BIGINT AS read_rows,
    CASE WHEN read_bytes = 0 THEN 0
         ELSE 1 + read_bytes // (48000000 + rb(h8, 35, 6, 64) * 1000000) END::BIGINT AS read_files
  FROM measured
), outcome AS (
  SELECT *,
    CASE WHEN status <> 'FINISHED' THEN 0
         WHEN stype = 'DESCRIBE' THEN 12 + rb(h7, 0, 6, 48)
         WHEN stype IN ('SHOW', 'EXPLAIN') THEN 3 + rb(h7, 0, 7, 120)
         WHEN stype IN ('INSERT', 'MERGE', 'CREATE', 'UPDATE', 'DELETE', 'OPTIMIZE', 'COPY') THEN 1
         WHEN cached THEN 10 + rb(h7, 0, 10, 1000)
         WHEN variant = 0 THEN least(1000, read_rows)
         WHEN variant = 1 THEN least(read_rows, 5 + rb(h7, 0, 8, 200))
         WHEN variant = 2 THEN least(read_rows // 20, 2000000)
         ELSE least(read_rows, 30 + rb(h7, 0, 9, 335)) END::BIGINT AS produced_rows,
    CASE WHEN stype IN ('INSERT', 'MERGE', 'CREATE', 'COPY', 'OPTIMIZE', 'UPDATE', 'DELETE')
              AND status = 'FINISHED' THEN (read_bytes * (0.1 + rb(h8, 8, 8, 80) / 100.0))::BIGINT
         ELSE 0 END AS written_bytes
  FROM sized
)
SELECT
  '{e.account_id}' AS account_id,
  {_sql_list(e.workspaces)}[home_ws + 1] AS workspace_id,
  md5_number(i::VARCHAR || ':q:{k}')::UUID::VARCHAR AS statement_id,
  email AS executed_by,
  qsess || {_sql_list(day_hex)}[1 + t_ms // {DAY_MS}] AS session_id,
  status AS execution_status,
  CASE WHEN client_app = 'Databricks Notebook'
       THEN {{'type': 'SERVERLESS_COMPUTE', 'cluster_id': NULL::VARCHAR, 'warehouse_id': NULL::VARCHAR}}
       ELSE {{'type': 'WAREHOUSE', 'cluster_id': NULL::VARCHAR,
              'warehouse_id': CASE WHEN rb(h6, 22, 2, 4) = 0 THEN wh2 ELSE wh1 END}} END AS compute,
  user_id AS executed_by_user_id,
  {_statement_text_sql(tables)} AS statement_text,
  stype AS statement_type,
  CASE WHEN status = 'FAILED' THEN {errors}[1 + rb(h8, 16, 8, {len(QUERY_ERRORS)})] END AS error_message,
  client_app AS client_application,
  client_driver,
  total_ms AS total_duration_ms,
  wait_compute_ms AS waiting_for_compute_duration_ms,
  wait_capacity_ms AS waiting_at_capacity_duration_ms,
  exec_ms AS execution_duration_ms,
  compile_ms AS compilation_duration_ms,
  (exec_ms * least(512.0, greatest(1.0, exp(1.6 + 0.9 * z2))))::BIGINT AS total_task_duration_ms,
  (3 + produced_rows // 2000)::BIGINT AS result_fetch_duration_ms,
  ts AS start_time,
  ts + to_milliseconds(total_ms) AS end_time,
  ts + to_milliseconds(total_ms + 3 + produced_rows // 2000) AS update_time,
  CASE WHEN read_files = 0 THEN 0 ELSE 1 + read_files // 12 END AS read_partitions,
  (read_files * rb(h6, 52, 6, 50) / 10)::BIGINT AS pruned_files,
  read_files,
  read_rows,
  produced_rows,
  read_bytes,
  CASE WHEN read_bytes = 0 THEN 0 ELSE rb(h8, 28, 7, 101) END::TINYINT AS read_io_cache_percent,
  cached AS from_result_cache,
  CASE WHEN exec_ms > 60000 AND rb(h3, 62, 2, 4) = 0 THEN read_bytes // 3 ELSE 0 END AS spilled_local_bytes,
  written_bytes,
  CASE WHEN variant IN (1, 2, 3) AND stype = 'SELECT' THEN (read_bytes * rb(h8, 24, 4, 16) / 32)::BIGINT
       WHEN stype IN ('MERGE', 'CREATE', 'OPTIMIZE') THEN read_bytes // 4 ELSE 0 END AS shuffle_read_bytes,
  {{'job_info': CASE WHEN profile = 'etl' THEN {{'job_id': job,
                  'job_run_id': (100000000000000 + rb(h2, 0, 24, 10000000) * 79)::VARCHAR,
                  'job_task_run_id': (100000000000000 + rb(h7, 10, 24, 10000000) * 83 + 1)::VARCHAR}} END,
    'legacy_dashboard_id': NULL::VARCHAR,
    'dashboard_id': CASE WHEN client_app = 'Databricks Dashboards' OR profile = 'bi'
                         THEN md5('dash:' || (pid * 8 + variant)::VARCHAR)::UUID::VARCHAR END,
    'alert_id': NULL::VARCHAR,
    'notebook_id': CASE WHEN client_app = 'Databricks Notebook'
                        THEN (1000000000000000 + pid * 1000 + variant)::VARCHAR END,
    'sql_query_id': CASE WHEN client_app = 'Databricks SQL Editor' AND variant < 2
                         THEN md5('query:' || (pid * 8 + variant)::VARCHAR)::UUID::VARCHAR END,
    'genie_space_id': NULL::VARCHAR,
    'pipeline_info': NULL::STRUCT(pipeline_id VARCHAR, update_id VARCHAR)}} AS query_source,
  user_id AS executed_as_user_id,
  email AS executed_as,
  CASE WHEN written_bytes > 0 THEN read_rows // 3 ELSE 0 END AS written_rows,
  CASE WHEN written_bytes > 0 THEN 1 + written_bytes // 128000000 ELSE 0 END AS written_files,
  CASE WHEN cached THEN md5_number((i // 7)::VARCHAR || ':qc:{k}')::UUID::VARCHAR END
    AS cache_origin_statement_id,
  CASE WHEN client_app = 'Databricks Dashboards' OR profile = 'bi'
       THEN {{'named_parameters': MAP {{'date_from': {_day_expr()}}}, 'pos_parameters': NULL::VARCHAR[],
              'truncated': false}} END AS query_parameters,
  CASE WHEN profile = 'dbt' THEN MAP {{'dbt_model': split_part({tables}[ti], '.', 3),
                                       'dbt_target': 'prod'}} END AS query_tags
FROM outcome
"""


def _day_expr() -> str:
    return "strftime(ts - INTERVAL (rb(h6, 43, 5, 30)) DAY, '%Y-%m-%d')"

"""Benchmark load_table against DuckDB's own read_json on one Spark-style export of system.access.audit.

Run: `python benchmarks/bench_load.py [--gb 1.0]` (use `--gb 0.05` for a quick run). The goal is a
load/read_json ratio of at most 1.5x.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import duckdb

from insight_mcp.agents.ingestion.loader import load_table

GOAL = 1.5
PART_BYTES = 128 * 1024 * 1024  # Spark's default maxPartitionBytes, so parts look like a real export

# One synthetic audit row per integer i, shaped like system.access.audit; NULL fields are dropped from the
# JSON text afterwards, the way Spark writes them.
ROW_SQL = """
SELECT {
  'account_id': '7c1b2e4a-0f5d-4a8e-9b6c-3d2e1f0a9b8c',
  'workspace_id': (1000000000000000 + (h % 5))::VARCHAR,
  'version': '2.0',
  'event_time': CASE WHEN h % 3 = 0
      THEN strftime(ts + INTERVAL 2 HOUR, '%Y-%m-%dT%H:%M:%S.%g+02:00')
      ELSE strftime(ts, '%Y-%m-%dT%H:%M:%S.%gZ') END,
  'event_date': strftime(ts, '%Y-%m-%d'),
  'source_ip_address': '10.' || (h % 200)::VARCHAR || '.' || ((h >> 8) % 250)::VARCHAR || '.'
      || ((h >> 16) % 250)::VARCHAR,
  'user_agent': CASE h % 4 WHEN 0 THEN 'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) Chrome/130.0.0.0'
      WHEN 1 THEN 'databricks-sdk-py/0.60.0 python/3.11.9 os/linux auth/pat'
      WHEN 2 THEN 'Databricks-JDBC-Driver/2.6.40' ELSE NULL END,
  'session_id': CASE WHEN h % 5 = 0 THEN NULL ELSE md5((i // 40)::VARCHAR) END,
  'user_identity': {'email': 'user' || (h % 350)::VARCHAR || '@corp.example',
                    'subject_name': CASE WHEN h % 9 = 0 THEN 'sp-' || (h % 20)::VARCHAR ELSE NULL END},
  'service_name': (['unityCatalog', 'notebook', 'clusters', 'accounts', 'jobs', 'secrets'])[1 + h % 6],
  'action_name': (['getTable', 'runCommand', 'create', 'login', 'runNow', 'getSecret'])[1 + h % 6],
  'request_id': md5('r' || i::VARCHAR),
  'request_params': MAP {'full_name_arg': 'main.sales.orders_' || (h % 97)::VARCHAR,
                         'workspace_id': (1000000000000000 + (h % 5))::VARCHAR,
                         'metastore_id': 'a1b2c3d4-e5f6-4711-8899-aabbccddeeff'},
  'response': {'status_code': CASE WHEN h % 13 = 0 THEN 403 ELSE 200 END,
               'error_message': CASE WHEN h % 13 = 0 THEN 'PERMISSION_DENIED: User does not have USE CATALOG'
                                     ELSE NULL END,
               'result': NULL},
  'audit_level': CASE WHEN h % 10 = 0 THEN 'ACCOUNT_LEVEL' ELSE 'WORKSPACE_LEVEL' END,
  'event_id': md5('e' || i::VARCHAR),
  'identity_metadata': CASE WHEN h % 4 = 0 THEN {'run_by': 'user' || (h % 350)::VARCHAR || '@corp.example',
      'run_as': 'user' || (h % 350)::VARCHAR || '@corp.example', 'acting_resource': NULL} ELSE NULL END
} AS row
FROM (SELECT i, (hash(i) % 1000000007)::BIGINT AS h,
             TIMESTAMP '2026-11-01 00:00:00' + to_milliseconds(i * 37) AS ts
      FROM range({start}, {stop}) t(i))
"""

# Drop `"key":null` pairs (Spark omits null fields) and tidy the commas left behind.
LINE_SQL = (
    "SELECT replace(replace(regexp_replace(to_json(row), '\"[A-Za-z_]+\":null,?', '', 'g'), ',}', '}'), "
    "'{,', '{') AS line FROM ({rows})"
)


def _copy_lines(conn: duckdb.DuckDBPyConnection, start: int, stop: int, path: Path) -> None:
    """Write rows start..stop as JSON lines to path, entirely inside DuckDB."""
    rows = ROW_SQL.replace("{start}", str(start)).replace("{stop}", str(stop))
    query = LINE_SQL.replace("{rows}", rows)
    conn.execute(
        f"COPY ({query}) TO '{path}' (FORMAT csv, HEADER false, QUOTE '', ESCAPE '', DELIMITER '\x01')"
    )


def write_export(folder: Path, gb: float) -> tuple[int, int]:
    """Write a Spark-style folder of part-*.json files totalling about `gb` GB; returns (rows, bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    conn = duckdb.connect()
    conn.execute("SET enable_progress_bar = false")
    sample = folder / "_sample.json"
    _copy_lines(conn, 0, 10_000, sample)
    bytes_per_row = sample.stat().st_size / 10_000
    sample.unlink()
    target = gb * 1024**3
    total_rows = max(1, int(target / bytes_per_row))
    parts = max(2, round(target / PART_BYTES))
    per_part = -(-total_rows // parts)
    job = uuid.uuid4()
    for n in range(parts):
        start, stop = n * per_part, min(total_rows, (n + 1) * per_part)
        if start >= stop:
            break
        _copy_lines(conn, start, stop, folder / f"part-{n:05d}-{job}-c000.json")
    (folder / "_SUCCESS").touch()
    conn.close()
    size = sum(p.stat().st_size for p in folder.glob("part-*.json"))
    return total_rows, size


def _settle(folder: Path) -> None:
    """Flush the new export and read it once, so both timings start from the same warm page cache."""
    os.sync()
    for path in folder.glob("part-*.json"):
        with path.open("rb") as fh:
            while fh.read(16 * 1024 * 1024):
                pass


def time_read_json(folder: Path, db: Path) -> float:
    """Baseline: DuckDB's own auto-detecting read_json into a fresh database file."""
    start = time.perf_counter()
    conn = duckdb.connect(str(db))
    conn.execute("SET enable_progress_bar = false")  # as load_table does
    conn.execute(f"CREATE TABLE t AS SELECT * FROM read_json('{folder}/part-*.json')")
    conn.close()
    return time.perf_counter() - start


def time_load(folder: Path, db: Path) -> tuple[float, int]:
    """load_table into a fresh workspace file; returns (seconds, rows inserted)."""
    start = time.perf_counter()
    report = load_table(db, "system.access.audit", folder)
    return time.perf_counter() - start, report.inserted


def main() -> None:
    """Generate the export, time both loads on it, print the ratio against the goal."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gb", type=float, default=1.0, help="approximate export size in GB (default 1.0)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="time each side this many times, alternating; keep the best"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and print its path")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_load_"))
    try:
        export = tmp / "audit"
        started = time.perf_counter()
        rows, size = write_export(export, args.gb)
        parts = len(list(export.glob("part-*.json")))
        print(
            f"export: {rows:,} rows, {size / 1024**3:.2f} GB in {parts} part files "
            f"({time.perf_counter() - started:.1f}s to write)"
        )
        _settle(export)
        baseline, load = float("inf"), float("inf")
        for n in range(args.repeat):
            for db in tmp.glob("*.duckdb*"):
                db.unlink()
            baseline = min(baseline, time_read_json(export, tmp / f"baseline{n}.duckdb"))
            seconds, inserted = time_load(export, tmp / f"workspace{n}.duckdb")
            load = min(load, seconds)
            if inserted != rows:
                raise SystemExit(f"load_table inserted {inserted:,} rows, expected {rows:,}")
        print(f"best of {args.repeat} alternating runs each (other load on the machine shows up as noise)")
        print(f"read_json (CREATE TABLE AS): {baseline:.2f}s")
        print(f"load_table:                  {load:.2f}s")
        ratio = load / baseline
        verdict = "ok" if ratio <= GOAL else "ABOVE GOAL"
        print(f"load/read_json ratio: {ratio:.2f}x (goal <= {GOAL}x) {verdict}")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Generation speed: rows per second of `workspace generate` at 10 million audit rows.

The baseline, measured in the same run, is DuckDB writing the same number of audit rows of the same layout with
cheap synthetic values into a fresh file: the floor any generator pays to store that much data. Prints both rates
and the ratio; the goal is 10 million audit rows in about a minute on 2 cores.

    python benchmarks/bench_generate.py [--days 30] [--events-per-day 340000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import duckdb

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from insight_mcp.agents.ingestion.catalog import get_table
from insight_mcp.agents.ingestion.generator import generate_workspace


def baseline(path: Path, rows: int) -> float:
    """Seconds for DuckDB to write `rows` audit rows with trivial values."""
    spec = get_table("system.access.audit")
    con = duckdb.connect(str(path))
    con.execute(f"CREATE SCHEMA {spec.schema_name}")
    con.execute(spec.create_sql())
    started = time.perf_counter()
    con.execute(
        f"""INSERT INTO {spec.local_name}
        SELECT 'acc', (i % 3)::VARCHAR, '2.0', TIMESTAMP '2026-01-01' + to_seconds(i // 4),
               DATE '2026-01-01' + (i // 345600)::INT, '10.0.' || (i % 250) || '.' || (i % 199), 'agent',
               's' || (i % 1000),
               {{'email': 'u' || (i % 200) || '@x.com', 'subject_name': NULL}}, 'svc', 'act', 'r' || i,
               MAP {{'k': 'v'}}, {{'status_code': 200, 'error_message': NULL, 'result': NULL}}, 'WORKSPACE_LEVEL',
               md5(i::VARCHAR), {{'run_by': NULL, 'run_as': NULL, 'acting_resource': NULL}}
        FROM range({rows}) t(i)"""
    )
    con.close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--events-per-day", type=int, default=340_000)
    parser.add_argument("--users", type=int, default=500)
    opts = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="insight-bench-gen-"))

    started = time.perf_counter()
    report = generate_workspace(tmp / "workspace.duckdb", days=opts.days, users=opts.users,
                                events_per_day=opts.events_per_day)
    generated_s = time.perf_counter() - started
    audit_rows = report.rows["system.access.audit"]
    base_s = baseline(tmp / "baseline.duckdb", audit_rows)

    print(f"generate: {audit_rows:,} audit rows ({sum(report.rows.values()):,} in all tables) in {generated_s:.1f} s "
          f"= {audit_rows / generated_s:,.0f} audit rows/s")
    print(f"baseline (DuckDB writing trivial rows): {audit_rows / base_s:,.0f} rows/s in {base_s:.1f} s")
    print(f"ratio generate/baseline: {generated_s / base_s:.2f}x; goal: 10M audit rows in about 60 s")


if __name__ == "__main__":
    main()

"""The system tables written where Spark reads them: Parquet folders, one per table, from the embedded workspace.

The embedded workspace stays the staging area (the loader validates, normalises and de-duplicates there); publishing
copies whole tables, so Spark and DuckDB hold the same rows. Each table is written beside its old folder and swapped
in, so a reader never sees half a table.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import duckdb

from insight_mcp.agents.ingestion.backend import BackendError
from insight_mcp.agents.ingestion.catalog import TABLES, get_table
from insight_mcp.agents.ingestion.spark_backend import table_folder


def publish_tables(workspace: Path, tables_dir: Path, tables: list[str] | None = None) -> dict[str, int]:
    """Copy the named tables (default: every table the workspace holds) to Parquet folders; rows written by table."""
    if not workspace.exists():
        raise BackendError(f"no workspace at {workspace}: run `insight-mcp workspace generate` or `workspace load`")
    conn = duckdb.connect(str(workspace), read_only=True)
    try:
        conn.execute("SET TimeZone = 'UTC'")
        present = {f"system.{s}.{t}" for s, t in conn.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = current_database()").fetchall()}
        wanted = [t for t in (tables or sorted(TABLES)) if t in present]
        written: dict[str, int] = {}
        for name in wanted:
            written[name] = _publish(conn, name, tables_dir)
        return written
    finally:
        conn.close()


def _publish(conn: duckdb.DuckDBPyConnection, name: str, tables_dir: Path) -> int:
    spec = get_table(name)
    types = dict(conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
        [spec.schema_name, spec.table_name]).fetchall())
    # TIMESTAMP holds UTC here; written as instants, Spark reads them as TIMESTAMP (not TIMESTAMP_NTZ).
    columns = ", ".join(f'"{c}"::TIMESTAMPTZ AS "{c}"' if t == "TIMESTAMP" else f'"{c}"' for c, t in types.items())
    final = table_folder(tables_dir, name)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".{spec.table_name}.{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        target = (staging / "part-00000.parquet").as_posix().replace("'", "''")
        conn.execute(f"COPY (SELECT {columns} FROM {spec.local_name} ORDER BY \"{spec.time_column}\") "
                     f"TO '{target}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 122880)")
        count = conn.execute(f"SELECT count(*) FROM {spec.local_name}").fetchone()[0]  # type: ignore[index]
        old = final.parent / f".{spec.table_name}.old.{uuid.uuid4().hex[:8]}"
        if final.exists():
            final.rename(old)
        staging.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        return int(count)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

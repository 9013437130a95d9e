"""Choose the SystemTables engine the settings name."""

from __future__ import annotations

from insight_mcp.agents.ingestion.backend import SystemTables
from insight_mcp.agents.ingestion.duckdb_backend import DuckDBSystemTables
from insight_mcp.agents.settings import Settings, SettingsError


def build_backend(settings: Settings) -> SystemTables:
    """The embedded workspace by default; Spark (local or Connect) or a SQL warehouse when configured."""
    if settings.backend == "duckdb":
        return DuckDBSystemTables(settings.workspace_path)
    if settings.backend == "spark":
        from insight_mcp.agents.ingestion.spark_backend import SparkSystemTables

        remote = settings.spark_remote.get_secret_value() if settings.spark_remote else None
        return SparkSystemTables(settings.spark, tables_dir=settings.spark_tables_dir, remote=remote)
    if settings.backend == "databricks":
        from insight_mcp.agents.ingestion.warehouse_backend import WarehouseSystemTables

        return WarehouseSystemTables(settings.databricks)
    raise SettingsError(f"unknown backend {settings.backend!r}: use duckdb, spark or databricks")

"""Choose the SystemTables engine the settings name."""

from __future__ import annotations

from insight_mcp.agents.ingestion.backend import SystemTables
from insight_mcp.agents.ingestion.duckdb_backend import DuckDBSystemTables
from insight_mcp.agents.settings import Settings, SettingsError


def build_backend(settings: Settings) -> SystemTables:
    """The embedded workspace by default; a SQL warehouse when configured."""
    if settings.backend == "duckdb":
        return DuckDBSystemTables(settings.workspace_path)
    raise SettingsError(
        "INSIGHT_BACKEND=databricks is not available in this version; use the embedded workspace (duckdb)"
    )

"""The demo estate: a deterministic, realistic Databricks workspace in one DuckDB file, with labelled attacks.

Bulk rows (audit events, query history) are generated inside DuckDB from row numbers, with every random
choice derived from `hash(row, seed, salt)`, so the same arguments always give the same table contents, fast.
The estate itself (principals, IPs, clusters, ...) and the small tables are built in Python from seeded RNGs.
Attack scenarios are ordinary-looking principals whose behaviour deviates; their labels live beside the data
in `labels.scenarios`.

The parts live in the `generation` package; this module keeps the public entry points and the build.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets as pysecrets
import time
from pathlib import Path
from typing import Any

import duckdb
from pydantic import BaseModel

from insight_mcp.agents.ingestion.catalog import TABLES
from insight_mcp.agents.ingestion.generation.audit import _insert_bulk_audit
from insight_mcp.agents.ingestion.generation.billing import _add_usage
from insight_mcp.agents.ingestion.generation.bulk import _drop_helpers, _register_helpers
from insight_mcp.agents.ingestion.generation.clusters import _add_clusters
from insight_mcp.agents.ingestion.generation.emitter import _Emitter
from insight_mcp.agents.ingestion.generation.estate import _build_estate
from insight_mcp.agents.ingestion.generation.labels import CATEGORIES, LABELS_TABLE, ScenarioLabel
from insight_mcp.agents.ingestion.generation.network import _add_network
from insight_mcp.agents.ingestion.generation.noise import _add_benign_noise
from insight_mcp.agents.ingestion.generation.query_history import _insert_bulk_queries
from insight_mcp.agents.ingestion.generation.scenarios import _add_scenarios
from insight_mcp.agents.ingestion.generation.storage import _create_tables, _insert_labels, _insert_records

__all__ = ["CATEGORIES", "LABELS_TABLE", "GenerationReport", "ScenarioLabel", "generate_workspace", "read_labels"]


# --- public models ----------------------------------------------------------------------------------------


class GenerationReport(BaseModel):
    """What generate_workspace built: where, how many rows per table, which scenarios, how long it took."""

    path: Path
    rows: dict[str, int]
    scenarios: list[str]
    seconds: float


# --- public API -------------------------------------------------------------------------------------------


def generate_workspace(
    path: Path,
    *,
    days: int = 30,
    users: int = 200,
    seed: int = 7,
    events_per_day: int = 20_000,
    end: dt.date | None = None,
    attacks: bool = True,
) -> GenerationReport:
    """Build the demo workspace atomically, so demos and tests get a realistic estate with known attacks.

    `attacks=False` weaves in none: the routine alone, to tune rules against (how many findings normal work draws).
    """
    _validate(days=days, users=users, seed=seed, events_per_day=events_per_day, end=end)
    started = time.perf_counter()
    path = Path(path)
    end_day = end or dt.datetime.now(dt.UTC).date()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{pysecrets.token_hex(6)}")
    try:
        rows, labels = _build(tmp, days=days, users=users, seed=seed, events_per_day=events_per_day,
                              end=end_day, attacks=attacks)
        os.replace(tmp, path)
    except BaseException:
        _remove_database_files(tmp)
        raise
    _remove_stale_wal(path)
    return GenerationReport(
        path=path,
        rows=rows,
        scenarios=[label.scenario_id for label in labels],
        seconds=round(time.perf_counter() - started, 3),
    )


def read_labels(path: Path) -> list[ScenarioLabel]:
    """Read the scenario labels of a workspace, so evaluations can score detections against the truth."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        rows = con.execute(
            "SELECT scenario_id, category, principal, workspace_id, first_seen, last_seen, description "
            f"FROM {LABELS_TABLE} ORDER BY scenario_id"
        ).fetchall()
    finally:
        con.close()
    keys = ("scenario_id", "category", "principal", "workspace_id", "first_seen", "last_seen", "description")
    return [ScenarioLabel(**dict(zip(keys, row, strict=True))) for row in rows]


# --- validation and files -----------------------------------------------------------------------------------


def _validate(*, days: Any, users: Any, seed: Any, events_per_day: Any, end: Any) -> None:
    for name, value, low, high in (
        ("days", days, 1, 3650),
        ("users", users, 5, 100_000),
        ("events_per_day", events_per_day, 100, 10_000_000),
    ):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        if not low <= value <= high:
            raise ValueError(f"{name} must be between {low:,} and {high:,}, got {value:,}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if end is not None and (not isinstance(end, dt.date) or isinstance(end, dt.datetime)):
        raise ValueError(f"end must be a datetime.date, got {end!r}")


def _remove_database_files(db: Path) -> None:
    for candidate in (db, db.with_name(db.name + ".wal")):
        candidate.unlink(missing_ok=True)
    tmpdir = db.with_name(db.name + ".tmp")
    if tmpdir.is_dir():
        for child in tmpdir.iterdir():
            child.unlink(missing_ok=True)
        tmpdir.rmdir()


def _remove_stale_wal(db: Path) -> None:
    # A write-ahead log left by an earlier file at this path would be replayed against the new one.
    db.with_name(db.name + ".wal").unlink(missing_ok=True)


# --- the build ----------------------------------------------------------------------------------------------


def _build(
    tmp: Path, *, days: int, users: int, seed: int, events_per_day: int, end: dt.date, attacks: bool
) -> tuple[dict[str, int], list[ScenarioLabel]]:
    estate = _build_estate(days=days, users=users, seed=seed, end=end)
    con = duckdb.connect(str(tmp), config={"preserve_insertion_order": False})
    try:
        con.execute("SET enable_progress_bar = false")
        con.execute("SET TimeZone = 'UTC'")
        # DuckDB cannot estimate the generated rows and would build hash tables on them: keep the joins as
        # written (small lookup tables on the build side), which streams, parallelises and keeps row order.
        con.execute("SET disabled_optimizers = 'join_order,build_side_probe_side'")
        _create_tables(con)
        _register_helpers(con, estate)
        _insert_bulk_audit(con, estate, days * events_per_day)
        _insert_bulk_queries(con, estate, max(days, days * events_per_day // 20))
        em = _Emitter(estate)
        _add_benign_noise(em)
        labels = _add_scenarios(em) if attacks else []  # may add or delete clusters: clusters and usage come after
        _add_clusters(em)
        _add_usage(em)
        _add_network(em)
        for spec_name, records in em.rows.by_table.items():
            _insert_records(con, TABLES[spec_name].local_name, records)
        _insert_labels(con, labels)
        _drop_helpers(con)
        rows = {
            name: con.execute(f"SELECT count(*) FROM {spec.local_name}").fetchone()[0]  # type: ignore[index]
            for name, spec in TABLES.items()
        }
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return rows, labels

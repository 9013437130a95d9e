"""A real workspace file built from a rule case's rows: audit shorthand expanded, other tables by column name.

Audit shorthand keys: t, email, ip, service, action, status, error, result (response.result), params (map), ua,
session, ws, level, run_by, run_as, repeat, every_seconds, vary_ip (append the repeat index to the last octet),
vary_params (a key whose value gets the repeat index appended). Other tables take rows with their real column names,
nested columns as mappings; `t`, `repeat` and `every_seconds` work there too, shifting the table's time column.
"""

from __future__ import annotations

import atexit
import datetime as dt
import functools
import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from insight_mcp.agents.ingestion.catalog import TABLES, get_table

SHORT_TABLES = {
    "audit": "system.access.audit",
    "clusters": "system.compute.clusters",
    "query_history": "system.query.history",
    "outbound_network": "system.access.outbound_network",
    "inbound_network": "system.access.inbound_network",
    "billing": "system.billing.usage",
}
REPEAT_KEYS = frozenset({"t", "repeat", "every_seconds"})
AUDIT_KEYS = REPEAT_KEYS | {"event_time", "email", "ip", "service", "action", "status", "error", "params", "ua",
                            "session", "ws", "level", "run_by", "run_as", "vary_ip", "vary_params", "result"}


def table_name(key: str) -> str:
    """The catalog name of a scenario's table section: a short name (`audit`) or the full one."""
    return SHORT_TABLES.get(key, key)


def allowed_keys(table: str) -> frozenset[str]:
    """The keys a row of this table may hold in a case file: audit shorthand, or column names plus repetition."""
    if table == "system.access.audit":
        return AUDIT_KEYS
    return REPEAT_KEYS | {c.name for c in get_table(table).columns}


def _ts(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None)
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).replace(tzinfo=None)


def _audit_row(spec: dict[str, Any], index: int, when: dt.datetime) -> dict[str, Any]:
    ip = str(spec.get("ip", "198.51.100.10"))
    if spec.get("vary_ip"):
        head, _, _ = ip.rpartition(".")
        ip = f"{head}.{(index % 250) + 1}"
    params = {str(k): str(v) for k, v in (spec.get("params") or {}).items()}
    if spec.get("vary_params"):
        key = spec["vary_params"]
        params[key] = f"{params.get(key, key)}-{index}"
    email = spec.get("email", "someone@corp.example")
    status = int(spec.get("status", 200))
    seed = f"{email}|{spec.get('action')}|{when.isoformat()}|{index}|{ip}|{sorted(params.items())}"
    return {
        "account_id": "acc-test", "workspace_id": str(spec.get("ws", "1001")), "version": "2.0",
        "event_time": when, "event_date": when.date(), "source_ip_address": ip,
        "user_agent": spec.get("ua", "Mozilla/5.0 (Macintosh) Chrome/130.0"),
        "session_id": spec.get("session", f"sess-{hashlib.md5(str(email).encode()).hexdigest()[:8]}"),
        "user_identity": {"email": email, "subject_name": None},
        "service_name": spec.get("service", "accounts"), "action_name": spec.get("action", "login"),
        "request_id": f"req-{index}", "request_params": {"key": list(params), "value": list(params.values())},
        "response": {"status_code": status, "error_message": spec.get("error"), "result": spec.get("result")},
        "audit_level": spec.get("level", "WORKSPACE_LEVEL"),
        "event_id": "ev-" + hashlib.sha256(seed.encode()).hexdigest()[:24],
        "identity_metadata": {"run_by": spec.get("run_by"), "run_as": spec.get("run_as"), "acting_resource": None},
    }


def _expand(table: str, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    spec_table = get_table(table)
    rows: list[dict[str, Any]] = []
    for spec in specs:
        repeat, every = int(spec.get("repeat", 1)), float(spec.get("every_seconds", 60))
        start = _ts(spec.get("t") or spec.get(spec_table.time_column))
        for i in range(repeat):
            when = start + dt.timedelta(seconds=every * i)
            if table == "system.access.audit":
                rows.append(_audit_row(spec, len(rows), when))
                continue
            row = {k: v for k, v in spec.items() if k not in REPEAT_KEYS}
            row[spec_table.time_column] = when
            for key in spec_table.event_key:
                if key not in row or (repeat > 1 and key != spec_table.time_column):
                    row[key] = f"{row.get(key, key)}-{len(rows)}"
            rows.append(row)
    return rows


def _to_param(value: Any, duck_type: str) -> Any:
    if value is None:
        return None
    if duck_type.startswith("MAP(") and isinstance(value, dict) and set(value) != {"key", "value"}:
        return {"key": [str(k) for k in value], "value": [None if v is None else str(v) for v in value.values()]}
    if duck_type == "TIMESTAMP":
        return _ts(value)
    if duck_type == "DATE" and not isinstance(value, dt.date):
        return dt.date.fromisoformat(str(value)[:10])
    return value


def _insert(con: duckdb.DuckDBPyConnection, table: str, columns: list[str], types: dict[str, str],
            params: list[list[Any]]) -> None:
    """Rows in one Arrow batch (a row at a time costs milliseconds each); values Arrow cannot type go row by row."""
    names = ", ".join(f'"{c}"' for c in columns)
    schema = con.sql(f"SELECT {names} FROM {table} LIMIT 0").to_arrow_table().schema
    try:
        data = {c: [_to_arrow(row[i], types[c]) for row in params] for i, c in enumerate(columns)}
        batch = pa.Table.from_pydict(data, schema=schema)
    except (pa.ArrowException, TypeError, ValueError):
        placeholders = ", ".join("?" for _ in columns)
        con.executemany(f"INSERT INTO {table} ({names}) VALUES ({placeholders})", params)
        return
    con.register("case_rows", batch)
    try:
        con.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM case_rows")
    finally:
        con.unregister("case_rows")


def _to_arrow(value: Any, duck_type: str) -> Any:
    """A DuckDB parameter as Arrow's lists take it: a map as its (key, value) pairs."""
    if duck_type.startswith("MAP(") and isinstance(value, dict):
        return list(zip(value["key"], value["value"], strict=True))
    return value


def empty_workspace(path: Path) -> Path:
    """A workspace file with every catalog table and no rows: copied per scenario, it saves creating them each time."""
    con = duckdb.connect(str(path))
    try:
        for spec in TABLES.values():
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {spec.schema_name}")
            con.execute(spec.create_sql())
    finally:
        con.close()
    return path


@functools.lru_cache(maxsize=1)
def _empty_template() -> Path:
    """One empty workspace per process, copied for each scenario: creating every table costs more than a copy."""
    folder = Path(tempfile.mkdtemp(prefix="insight-empty-workspace-"))
    atexit.register(shutil.rmtree, folder, True)
    return empty_workspace(folder / "empty.duckdb")


def build_workspace(path: Path, tables: dict[str, list[dict[str, Any]]]) -> Path:
    """A workspace file with every catalog table, holding the expanded rows of one scenario."""
    if not _empty_template().exists():  # something cleaned the temporary folder: make it again
        _empty_template.cache_clear()
    shutil.copyfile(_empty_template(), path)
    con = duckdb.connect(str(path))
    try:
        for key, specs in tables.items():
            table = table_name(key)
            spec = get_table(table)
            rows = _expand(table, specs)
            if not rows:
                continue
            types = {c.name: c.duckdb_type for c in spec.columns}
            columns = sorted({k for r in rows for k in r})
            unknown = set(columns) - set(types)
            if unknown:
                raise ValueError(f"{table} has no columns {sorted(unknown)}")
            params = [[_to_param(r.get(c), types[c]) for c in columns] for r in rows]
            _insert(con, spec.local_name, columns, types, params)
    finally:
        con.close()
    return path

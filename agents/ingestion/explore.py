"""Typed questions about the system tables, answered without the caller writing SQL."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, Field

from insight_mcp.agents.core.timestamps import UtcDateTime, parse_utc, rfc3339
from insight_mcp.agents.ingestion.backend import QueryResult, Statement, SystemTables
from insight_mcp.agents.ingestion.catalog import TABLES, get_table
from insight_mcp.agents.settings import QueryLimits
from insight_mcp.agents.sql.ipnet import ip_filter_sql

AUDIT = "system.access.audit"


class InvalidArgument(ValueError):
    """A tool argument a caller must change; the message says what is allowed."""


# --- models ----------------------------------------------------------------------------------------


class TableSummary(BaseModel):
    name: str
    description: str
    rows: int
    first_event: UtcDateTime | None = None
    last_event: UtcDateTime | None = None
    note: str | None = Field(None, description="Why the table cannot be read here (a missing grant), when it cannot.")


class ColumnDoc(BaseModel):
    name: str
    type: str
    description: str


class TableDescription(BaseModel):
    name: str
    description: str
    time_column: str
    event_key: list[str]
    columns: list[ColumnDoc]


class AuditEvent(BaseModel):
    event_time: UtcDateTime
    event_id: str | None
    workspace_id: str | None
    service_name: str | None
    action_name: str | None
    principal: str | None = Field(description="user_identity.email: a user's email or a service principal's id.")
    source_ip_address: str | None
    user_agent: str | None
    session_id: str | None
    status_code: int | None
    error_message: str | None
    request_params: dict[str, Any] | None


class AuditEventsPage(BaseModel):
    since: UtcDateTime
    until: UtcDateTime
    events: list[AuditEvent]
    next_cursor: str | None = Field(None, description="Pass back as `cursor` for the next page; null at the end.")


class ClusterState(BaseModel):
    cluster_id: str
    cluster_name: str | None
    workspace_id: str | None
    owned_by: str | None
    cluster_source: str | None
    dbr_version: str | None
    data_security_mode: str | None
    auto_termination_minutes: int | None
    worker_node_type: str | None
    worker_count: int | None
    max_autoscale_workers: int | None
    create_time: UtcDateTime | None
    change_time: UtcDateTime | None
    deleted: bool
    risks: list[str] = Field(description="Risky settings: no_auto_termination, no_isolation, old_runtime.")


class ClusterInventory(BaseModel):
    clusters: list[ClusterState]
    risky_count: int
    min_runtime: str


class QueryStats(BaseModel):
    key: str | None = Field(description="The user (executed_by) or warehouse id the row groups by.")
    queries: int
    failures: int
    p50_duration_ms: float | None
    p95_duration_ms: float | None
    read_bytes: int


class QueryHistorySummary(BaseModel):
    group_by: Literal["user", "warehouse"]
    since: UtcDateTime
    until: UtcDateTime
    groups: list[QueryStats]


# --- helpers ---------------------------------------------------------------------------------------


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


def parse_time(value: str | None, name: str) -> dt.datetime | None:
    """Accept ISO 8601 dates and timestamps; compare in UTC without a zone, as the tables store it."""
    if value is None or value == "":
        return None
    try:
        return parse_utc(value)
    except ValueError:
        raise InvalidArgument(f"{name} must be an ISO 8601 date or timestamp, e.g. 2026-11-20T08:00:00Z") from None


async def _latest(backend: SystemTables, table: str, column: str, limits: QueryLimits) -> dt.datetime | None:
    result = await backend.execute(
        Statement(databricks_sql=f"SELECT max({column}) AS latest FROM {table}"),
        max_rows=1, max_chars=10_000, timeout_seconds=limits.timeout_seconds,
    )
    value = result.rows[0][0] if result.rows else None
    return parse_utc(value) if value else None


async def resolve_window(
    backend: SystemTables, table: str, column: str, since: str | None, until: str | None,
    default: dt.timedelta, limits: QueryLimits,
) -> tuple[dt.datetime, dt.datetime]:
    """A time window; missing ends default to the latest data and `default` before it."""
    start, end = parse_time(since, "since"), parse_time(until, "until")
    if end is None:
        latest = await _latest(backend, table, column, limits)
        end = (latest.replace(microsecond=0) + dt.timedelta(seconds=1)) if latest else _utcnow()
    if start is None:
        start = end - default
    if start >= end:
        raise InvalidArgument("since must be earlier than until")
    return start, end


def _encode_cursor(payload: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, fingerprint: str) -> dict[str, Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(payload, dict) or not {"t", "id", "f"} <= payload.keys():
            raise ValueError
        parse_utc(payload["t"])
    except (ValueError, TypeError, json.JSONDecodeError):
        raise InvalidArgument("cursor is not one this tool returned; omit it to start from the first page") from None
    if payload["f"] != fingerprint:
        raise InvalidArgument("cursor belongs to a different set of filters; omit it or repeat the same filters")
    return payload


# --- questions -------------------------------------------------------------------------------------


async def list_tables(backend: SystemTables) -> list[TableSummary]:
    """Every system table with its row count and time range."""
    stats = {s.name: s for s in await backend.table_stats(sorted(TABLES))}
    return [
        TableSummary(
            name=name, description=spec.description, rows=stats[name].rows,
            first_event=stats[name].first_event, last_event=stats[name].last_event, note=stats[name].note,
        )
        for name, spec in sorted(TABLES.items())
    ]


def describe_table(name: str) -> TableDescription:
    """Columns, types and meanings of one system table, from the catalog."""
    try:
        spec = get_table(name.strip())
    except KeyError as exc:
        raise InvalidArgument(str(exc.args[0])) from None
    return TableDescription(
        name=spec.name, description=spec.description, time_column=spec.time_column, event_key=list(spec.event_key),
        columns=[ColumnDoc(name=c.name, type=c.type, description=c.description) for c in spec.columns],
    )


_NAME_RE = re.compile(r"^[A-Za-z0-9_.:@/+\-]{1,200}$")


def _checked_name(value: str, name: str) -> str:
    value = value.strip()
    if not _NAME_RE.match(value):
        raise InvalidArgument(f"{name} must be 1-200 characters of letters, digits and _ . : @ / + -")
    return value


async def audit_events(
    backend: SystemTables,
    limits: QueryLimits,
    *,
    since: str | None = None,
    until: str | None = None,
    principal: str | None = None,
    service: str | None = None,
    action: str | None = None,
    status: Literal["success", "failure"] | None = None,
    source_ip: str | None = None,
    page_size: int = 50,
    cursor: str | None = None,
) -> AuditEventsPage:
    """One page of audit events, newest first, filtered without SQL."""
    if not 1 <= page_size <= min(500, limits.row_cap):
        raise InvalidArgument(f"page_size must be between 1 and {min(500, limits.row_cap)}")
    start, end = await resolve_window(
        backend, AUDIT, "event_time", since, until, dt.timedelta(hours=24), limits
    )
    where = ["event_time >= :since", "event_time < :until"]
    params: dict[str, Any] = {"since": start, "until": end}
    if principal:
        where.append("lower(user_identity.email) = lower(:principal)")
        params["principal"] = _checked_name(principal, "principal")
    if service:
        where.append("service_name = :service")
        params["service"] = _checked_name(service, "service")
    if action:
        where.append("action_name = :action")
        params["action"] = _checked_name(action, "action")
    if status == "success":
        where.append("(response.status_code IS NULL OR response.status_code < 400)")
    elif status == "failure":
        where.append("response.status_code >= 400")
    if source_ip:
        try:
            clause, extra = ip_filter_sql("source_ip_address", source_ip, "ip")
        except ValueError as exc:
            raise InvalidArgument(f"source_ip: {exc}") from None
        where.append(clause)
        params.update(extra)
    fingerprint = hashlib.sha256(
        json.dumps([start.isoformat(), end.isoformat(), principal, service, action, status, source_ip]).encode()
    ).hexdigest()[:16]
    if cursor:
        position = _decode_cursor(cursor, fingerprint)
        where.append("(event_time < :cur_t OR (event_time = :cur_t AND event_id < :cur_id))")
        params["cur_t"] = parse_utc(position["t"])
        params["cur_id"] = str(position["id"])
    sql = (
        "SELECT event_time, event_id, workspace_id, service_name, action_name, user_identity.email AS principal, "
        "source_ip_address, user_agent, session_id, response.status_code AS status_code, "
        "response.error_message AS error_message, request_params "
        f"FROM {AUDIT} WHERE {' AND '.join(where)} ORDER BY event_time DESC, event_id DESC LIMIT {page_size + 1}"
    )
    result = await backend.execute(
        Statement(databricks_sql=sql, params=params), max_rows=page_size + 1, max_chars=limits.max_chars,
        timeout_seconds=limits.timeout_seconds,
    )
    records = result.records()
    more = len(records) > page_size or result.truncated
    records = records[:page_size]
    events = [AuditEvent(**r) for r in records]
    next_cursor = None
    if more and events:
        last = events[-1]
        next_cursor = _encode_cursor({"t": rfc3339(last.event_time), "id": last.event_id, "f": fingerprint})
    return AuditEventsPage(since=start, until=end, events=events, next_cursor=next_cursor)


_ISOLATED_MODES = {"USER_ISOLATION", "SINGLE_USER", "DATA_SECURITY_MODE_STANDARD", "DATA_SECURITY_MODE_DEDICATED",
                   "DATA_SECURITY_MODE_AUTO", "LEGACY_SINGLE_USER_STANDARD"}
_RUNTIME_RE = re.compile(r"^(\d+)\.(\d+)")


def runtime_tuple(version: str | None) -> tuple[int, int] | None:
    """`15.4.x-scala2.12` -> (15, 4); None when it names no runtime."""
    match = _RUNTIME_RE.match(version or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def cluster_risks(row: dict[str, Any], min_runtime: tuple[int, int]) -> list[str]:
    """The risky settings of one cluster's latest state."""
    risks = []
    source = (row.get("cluster_source") or "").upper()
    if source not in {"JOB", "PIPELINE", "PIPELINE_MAINTENANCE"} and not row.get("auto_termination_minutes"):
        risks.append("no_auto_termination")
    if (row.get("data_security_mode") or "NONE").upper() not in _ISOLATED_MODES:
        risks.append("no_isolation")
    runtime = runtime_tuple(row.get("dbr_version"))
    if runtime is not None and runtime < min_runtime:
        risks.append("old_runtime")
    return risks


async def cluster_inventory(
    backend: SystemTables, limits: QueryLimits, *, include_deleted: bool = False, only_risky: bool = False,
    min_runtime: str = "13.3",
) -> ClusterInventory:
    """The latest state of each cluster, with risky settings flagged."""
    floor = runtime_tuple(min_runtime)
    if floor is None:
        raise InvalidArgument("min_runtime must look like 13.3")
    sql = (
        "SELECT cluster_id, cluster_name, workspace_id, owned_by, cluster_source, dbr_version, data_security_mode, "
        "auto_termination_minutes, worker_node_type, worker_count, max_autoscale_workers, create_time, "
        "change_time, delete_time IS NOT NULL AS deleted FROM system.compute.clusters "
        "QUALIFY row_number() OVER (PARTITION BY workspace_id, cluster_id ORDER BY change_time DESC) = 1 "
        "ORDER BY cluster_name, cluster_id"
    )
    result = await backend.execute(
        Statement(databricks_sql=sql), max_rows=limits.row_cap, max_chars=limits.max_chars,
        timeout_seconds=limits.timeout_seconds,
    )
    clusters = []
    for row in result.records():
        if row["deleted"] and not include_deleted:
            continue
        state = ClusterState(**row, risks=cluster_risks(row, floor))
        if only_risky and not state.risks:
            continue
        clusters.append(state)
    return ClusterInventory(
        clusters=clusters, risky_count=sum(1 for c in clusters if c.risks), min_runtime=min_runtime
    )


async def query_history_summary(
    backend: SystemTables, limits: QueryLimits, *, group_by: Literal["user", "warehouse"] = "user",
    since: str | None = None, until: str | None = None, top: int = 20,
) -> QueryHistorySummary:
    """Per user or warehouse: query counts, failures, p50/p95 duration and bytes read."""
    if not 1 <= top <= limits.row_cap:
        raise InvalidArgument(f"top must be between 1 and {limits.row_cap}")
    start, end = await resolve_window(
        backend, "system.query.history", "start_time", since, until, dt.timedelta(days=7), limits
    )
    key = "executed_by" if group_by == "user" else "compute.warehouse_id"
    sql = (
        f"SELECT {key} AS key, count(*) AS queries, "
        "count_if(execution_status = 'FAILED') AS failures, "
        "round(percentile(total_duration_ms, 0.5), 1) AS p50_duration_ms, "
        "round(percentile(total_duration_ms, 0.95), 1) AS p95_duration_ms, "
        "coalesce(sum(read_bytes), 0) AS read_bytes "
        "FROM system.query.history WHERE start_time >= :since AND start_time < :until "
        f"GROUP BY {key} ORDER BY queries DESC, key LIMIT {top}"
    )
    result: QueryResult = await backend.execute(
        Statement(databricks_sql=sql, params={"since": start, "until": end}), max_rows=top,
        max_chars=limits.max_chars, timeout_seconds=limits.timeout_seconds,
    )
    return QueryHistorySummary(
        group_by=group_by, since=start, until=end,
        groups=[QueryStats(**r) for r in result.records()],
    )


# --- completion: values a person may mean while typing a prompt argument -------------------------------------


def matching(values: list[str], typed: str) -> list[str]:
    """Values that start with what was typed first, then those that contain it; case is ignored."""
    needle = typed.strip().lower()
    starts = [v for v in values if v.lower().startswith(needle)]
    contains = [v for v in values if needle in v.lower() and not v.lower().startswith(needle)]
    return starts + contains


async def active_principals(backend: SystemTables, limits: QueryLimits, top: int = 1000) -> list[str]:
    """The principals of the last 30 days of audit data, most active first."""
    sql = (
        f"SELECT user_identity.email AS principal, count(*) AS events FROM {AUDIT} "
        f"WHERE user_identity.email IS NOT NULL AND event_time >= (SELECT max(event_time) FROM {AUDIT}) "
        f"- INTERVAL 30 DAYS GROUP BY 1 ORDER BY events DESC, principal LIMIT {top}"
    )
    result = await backend.execute(Statement(databricks_sql=sql), max_rows=top, max_chars=limits.max_chars,
                                   timeout_seconds=limits.timeout_seconds)
    return [str(row[0]) for row in result.rows]


async def recent_days(backend: SystemTables, limits: QueryLimits, days: int = 30) -> list[str]:
    """The last days that have audit data, newest first, as ISO dates a window can start from."""
    latest = await _latest(backend, AUDIT, "event_time", limits)
    if latest is None:
        return []
    return [(latest.date() - dt.timedelta(days=n)).isoformat() for n in range(days)]

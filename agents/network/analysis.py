"""Network questions beyond rules: which IPs, which patterns, how much data, and where warehouses choke."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from insight_mcp.agents.core.timestamps import UtcDateTime
from insight_mcp.agents.ingestion.backend import Statement, SystemTables
from insight_mcp.agents.ingestion.explore import InvalidArgument, resolve_window
from insight_mcp.agents.network import RULES_DIR
from insight_mcp.agents.security.reference_lists import ipv4_prefix24, read_lines
from insight_mcp.agents.settings import QueryLimits
from insight_mcp.agents.sql.ipnet import parse_networks

AUDIT = "system.access.audit"
PRIVATE = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8",
                                             "169.254.0.0/16", "100.64.0.0/10", "fc00::/7", "::1/128")]


class ReferenceLists(BaseModel):
    """The shipped lists, read once: anonymiser prefixes and risky destination classes."""

    anonymizer_prefixes: set[str] = Field(default_factory=set)
    destinations: dict[str, str] = Field(default_factory=dict, description="domain -> class")


def load_reference_lists(folder: Path = RULES_DIR) -> ReferenceLists:
    """Anonymiser ranges and destination classes from the files beside the network rules."""
    lists = ReferenceLists()
    anonymizers = folder / "anonymizers.txt"
    if anonymizers.is_file():
        lists.anonymizer_prefixes = set(ipv4_prefix24(read_lines(anonymizers), anonymizers.name))
    destinations = folder / "risky_destinations.txt"
    if destinations.is_file():
        current = "risky"
        for raw in destinations.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if line.lower().startswith("# class:"):
                current = line.split(":", 1)[1].strip().lower() or "risky"
                continue
            item = line.split("#", 1)[0].strip().lower().lstrip("*.")
            if item:
                lists.destinations[item] = current
    return lists


def classify_ip(value: str | None, trusted: list[str], lists: ReferenceLists) -> str:
    """private, trusted, anonymizer, public or invalid."""
    if not value:
        return "invalid"
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return "invalid"
    if any(address in net for net in PRIVATE):
        return "private"
    if any(address in net for net in parse_networks(tuple(trusted))):
        return "trusted"
    prefixes = lists.anonymizer_prefixes
    if address.version == 4 and (value in prefixes or value.rsplit(".", 1)[0] in prefixes):
        return "anonymizer"
    return "public"


def classify_destination(domain: str | None, lists: ReferenceLists) -> str:
    """The risky class of a destination domain (paste, tunnel, file_sharing, mining...), or `other`."""
    if not domain:
        return "other"
    name = domain.lower().rstrip(".")
    parts = name.split(".")
    for i in range(len(parts) - 1):
        suffix = ".".join(parts[i:])
        if suffix in lists.destinations:
            return lists.destinations[suffix]
    return "other"


# --- models ---------------------------------------------------------------------------------------


class ExternalIP(BaseModel):
    ip: str
    classification: str = Field(description="public, trusted, anonymizer, private or invalid.")
    principals: int
    sample_principals: list[str]
    events: int
    failures: int
    first_seen: UtcDateTime
    last_seen: UtcDateTime


class ExternalIPs(BaseModel):
    since: UtcDateTime
    until: UtcDateTime
    ips: list[ExternalIP]


class DeniedIP(BaseModel):
    ip: str
    classification: str
    denials: int
    principals: list[str]
    workspaces: list[str]
    first_seen: UtcDateTime
    last_seen: UtcDateTime


class IPAccessDenials(BaseModel):
    since: UtcDateTime
    until: UtcDateTime
    total: int
    by_ip: list[DeniedIP]


class ConnectionPattern(BaseModel):
    principal: str
    events: int
    distinct_ips: int
    public_ips: list[str]
    user_agents: list[str]
    sessions: int
    active_hours_utc: list[int]
    failures: int


class ConnectionPatterns(BaseModel):
    since: UtcDateTime
    until: UtcDateTime
    principals: list[ConnectionPattern]


class EgressDenial(BaseModel):
    destination: str
    classification: str
    denials: int
    workspaces: list[str]
    first_seen: UtcDateTime
    last_seen: UtcDateTime


class EgressDenials(BaseModel):
    since: UtcDateTime
    until: UtcDateTime
    destinations: list[EgressDenial]


class VolumeRow(BaseModel):
    key: str | None
    queries: int
    read_bytes: int
    produced_rows: int
    shuffle_read_bytes: int
    outlier: bool = Field(description="read_bytes far above the median of its peers (robust z-score > 3.5).")


class DataVolumeInsights(BaseModel):
    since: UtcDateTime
    until: UtcDateTime
    by_user: list[VolumeRow]
    by_warehouse: list[VolumeRow]


class Bottleneck(BaseModel):
    warehouse_id: str | None
    hour: UtcDateTime
    queries: int
    p95_queue_ms: float | None
    p95_compile_ms: float | None
    spilled_bytes: int
    queued_share: float = Field(description="Share of queries that waited at capacity.")


class Bottlenecks(BaseModel):
    since: UtcDateTime
    until: UtcDateTime
    hotspots: list[Bottleneck]


# --- questions ------------------------------------------------------------------------------------


async def _rows(
    backend: SystemTables, limits: QueryLimits, sql: str, params: dict[str, Any], max_rows: int
) -> list[dict[str, Any]]:
    """Rows as dicts (collect_set over only NULLs is [] on every engine: see compat_transforms)."""
    result = await backend.execute(
        Statement(databricks_sql=sql, params=params), max_rows=max_rows, max_chars=limits.max_chars * 5,
        timeout_seconds=limits.timeout_seconds,
    )
    return result.records()


async def _window(backend: SystemTables, table: str, column: str, since: str | None, until: str | None,
                  days: int, limits: QueryLimits) -> tuple[dt.datetime, dt.datetime]:
    return await resolve_window(backend, table, column, since, until, dt.timedelta(days=days), limits)


async def external_ips(backend: SystemTables, limits: QueryLimits, trusted: list[str], lists: ReferenceLists, *,
                       since: str | None = None, until: str | None = None, top: int = 50,
                       include_private: bool = False) -> ExternalIPs:
    """Every source IP seen in the audit log: for whom, when, and whether it is public, trusted or an anonymiser."""
    _check_top(top, limits)
    start, end = await _window(backend, AUDIT, "event_time", since, until, 7, limits)
    sql = (
        "SELECT source_ip_address AS ip, count(DISTINCT user_identity.email) AS principals, "
        "slice(sort_array(collect_set(user_identity.email)), 1, 5) AS sample_principals, count(*) AS events, "
        "count_if(response.status_code >= 400) AS failures, min(event_time) AS first_seen, "
        "max(event_time) AS last_seen FROM system.access.audit "
        "WHERE event_time >= :since AND event_time < :until AND source_ip_address IS NOT NULL "
        "GROUP BY source_ip_address ORDER BY events DESC, ip"
    )
    rows = await _rows(backend, limits, sql, {"since": start, "until": end}, 20_000)
    ips = []
    for row in rows:
        cls = classify_ip(row["ip"], trusted, lists)
        if cls == "private" and not include_private:
            continue
        ips.append(ExternalIP(classification=cls, **row))
        if len(ips) >= top:
            break
    return ExternalIPs(since=start, until=end, ips=ips)


async def ip_access_denials(backend: SystemTables, limits: QueryLimits, trusted: list[str], lists: ReferenceLists, *,
                            since: str | None = None, until: str | None = None, top: int = 50) -> IPAccessDenials:
    """IpAccessDenied events by source IP: who was tried, in which workspaces."""
    _check_top(top, limits)
    start, end = await _window(backend, AUDIT, "event_time", since, until, 7, limits)
    sql = (
        "SELECT source_ip_address AS ip, count(*) AS denials, "
        "slice(sort_array(collect_set(user_identity.email)), 1, 10) AS principals, "
        "slice(sort_array(collect_set(workspace_id)), 1, 10) AS workspaces, min(event_time) AS first_seen, "
        "max(event_time) AS last_seen FROM system.access.audit "
        "WHERE event_time >= :since AND event_time < :until AND action_name = 'IpAccessDenied' "
        f"GROUP BY source_ip_address ORDER BY denials DESC, ip LIMIT {top}"
    )
    rows = await _rows(backend, limits, sql, {"since": start, "until": end}, top)
    by_ip = [DeniedIP(classification=classify_ip(r["ip"], trusted, lists), **r) for r in rows]
    return IPAccessDenials(since=start, until=end, total=sum(d.denials for d in by_ip),
                           by_ip=by_ip)


async def connection_patterns(backend: SystemTables, limits: QueryLimits, *, principal: str | None = None,
                              since: str | None = None, until: str | None = None, top: int = 25) -> ConnectionPatterns:
    """How each principal connects: IPs, user agents, sessions and active hours; the widest first."""
    _check_top(top, limits)
    start, end = await _window(backend, AUDIT, "event_time", since, until, 7, limits)
    where = "event_time >= :since AND event_time < :until AND user_identity.email IS NOT NULL"
    params: dict[str, Any] = {"since": start, "until": end}
    if principal:
        where += " AND lower(user_identity.email) = lower(:principal)"
        params["principal"] = principal.strip()
    sql = (
        "SELECT user_identity.email AS principal, count(*) AS events, count(DISTINCT source_ip_address) AS "
        "distinct_ips, slice(sort_array(collect_set(source_ip_address)), 1, 50) AS ips, "
        "slice(sort_array(collect_set(user_agent)), 1, 10) AS user_agents, count(DISTINCT session_id) AS sessions, "
        "sort_array(collect_set(hour(event_time))) AS hours, "
        "count_if(response.status_code >= 400) AS failures "
        f"FROM system.access.audit WHERE {where} GROUP BY user_identity.email "
        f"ORDER BY distinct_ips DESC, events DESC, principal LIMIT {top}"
    )
    rows = await _rows(backend, limits, sql, params, top)
    lists = ReferenceLists()
    out = []
    for r in rows:
        public = sorted(ip for ip in r.pop("ips") if classify_ip(ip, [], lists) in ("public", "anonymizer"))
        out.append(ConnectionPattern(public_ips=public[:20], active_hours_utc=sorted(r.pop("hours")), **r))
    return ConnectionPatterns(since=start, until=end, principals=out)


async def egress_denials(backend: SystemTables, limits: QueryLimits, lists: ReferenceLists, *,
                         since: str | None = None, until: str | None = None, top: int = 50) -> EgressDenials:
    """Denied outbound destinations from serverless compute, classified: paste, tunnel, file sharing, mining."""
    _check_top(top, limits)
    start, end = await _window(backend, "system.access.outbound_network", "event_time", since, until, 7, limits)
    sql = (
        "SELECT coalesce(destination, dns_event.domain_name, storage_event.hostname) AS destination, "
        "count(*) AS denials, slice(sort_array(collect_set(workspace_id)), 1, 10) AS workspaces, "
        "min(event_time) AS first_seen, max(event_time) AS last_seen FROM system.access.outbound_network "
        "WHERE event_time >= :since AND event_time < :until "
        "GROUP BY coalesce(destination, dns_event.domain_name, storage_event.hostname) ORDER BY denials DESC, 1"
    )
    rows = await _rows(backend, limits, sql, {"since": start, "until": end}, 5_000)
    found = [EgressDenial(classification=classify_destination(r["destination"], lists), **r)
             for r in rows if r["destination"]]
    found.sort(key=lambda d: (d.classification == "other", -d.denials))
    return EgressDenials(since=start, until=end, destinations=found[:top])


def _robust_outliers(values: list[int]) -> list[bool]:
    if len(values) < 4:
        return [False] * len(values)
    ordered = sorted(values)
    median = ordered[len(ordered) // 2]
    mad = sorted(abs(v - median) for v in values)[len(values) // 2] or 1
    return [0.6745 * (v - median) / mad > 3.5 for v in values]


async def data_volume_insights(backend: SystemTables, limits: QueryLimits, *, since: str | None = None,
                               until: str | None = None, top: int = 20) -> DataVolumeInsights:
    """Bytes read, rows produced and shuffle per user and per warehouse, with outliers marked."""
    _check_top(top, limits)
    start, end = await _window(backend, "system.query.history", "start_time", since, until, 7, limits)
    out: dict[str, list[VolumeRow]] = {}
    for name, key in (("user", "executed_by"), ("warehouse", "compute.warehouse_id")):
        sql = (
            f"SELECT {key} AS key, count(*) AS queries, coalesce(sum(read_bytes), 0) AS read_bytes, "
            "coalesce(sum(produced_rows), 0) AS produced_rows, coalesce(sum(shuffle_read_bytes), 0) AS "
            "shuffle_read_bytes FROM system.query.history WHERE start_time >= :since AND start_time < :until "
            f"GROUP BY {key} ORDER BY read_bytes DESC, 1"
        )
        rows = await _rows(backend, limits, sql, {"since": start, "until": end}, 10_000)
        flags = _robust_outliers([r["read_bytes"] for r in rows])
        out[name] = [VolumeRow(outlier=flag, **r) for r, flag in zip(rows, flags, strict=True)][:top]
    return DataVolumeInsights(since=start, until=end, by_user=out["user"],
                              by_warehouse=out["warehouse"])


async def bottlenecks(backend: SystemTables, limits: QueryLimits, *, since: str | None = None, until: str | None = None,
                      warehouse_id: str | None = None, top: int = 20) -> Bottlenecks:
    """Hours when warehouses queued at capacity, compiled slowly or spilled: the worst first."""
    _check_top(top, limits)
    start, end = await _window(backend, "system.query.history", "start_time", since, until, 7, limits)
    where = "start_time >= :since AND start_time < :until AND compute.warehouse_id IS NOT NULL"
    params: dict[str, Any] = {"since": start, "until": end}
    if warehouse_id:
        where += " AND compute.warehouse_id = :warehouse"
        params["warehouse"] = warehouse_id
    sql = (
        "SELECT compute.warehouse_id AS warehouse_id, date_trunc('HOUR', start_time) AS hour, count(*) AS queries, "
        "round(percentile(waiting_at_capacity_duration_ms, 0.95), 1) AS p95_queue_ms, "
        "round(percentile(compilation_duration_ms, 0.95), 1) AS p95_compile_ms, "
        "coalesce(sum(spilled_local_bytes), 0) AS spilled_bytes, "
        "count_if(waiting_at_capacity_duration_ms > 0) / count(*) AS queued_share "
        f"FROM system.query.history WHERE {where} GROUP BY compute.warehouse_id, date_trunc('HOUR', start_time) "
        f"ORDER BY p95_queue_ms DESC NULLS LAST, spilled_bytes DESC, 1 LIMIT {top}"
    )
    rows = await _rows(backend, limits, sql, params, top)
    return Bottlenecks(since=start, until=end,
                       hotspots=[Bottleneck(**{**r, "queued_share": round(float(r["queued_share"] or 0), 4)})
                                 for r in rows])


def _check_top(top: int, limits: QueryLimits) -> None:
    if not 1 <= top <= limits.row_cap:
        raise InvalidArgument(f"top must be between 1 and {limits.row_cap}")


GroupBy = Literal["user", "warehouse"]

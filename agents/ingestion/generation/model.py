"""The estate model (principals, clusters, warehouses) and the time and table-name constants all parts share."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Any

AUDIT, CLUSTERS, QUERIES = "system.access.audit", "system.compute.clusters", "system.query.history"
OUTBOUND, INBOUND = "system.access.outbound_network", "system.access.inbound_network"
USAGE = "system.billing.usage"

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
SCENARIO_DAYS = 7  # scenarios happen in the last week, so every principal has a baseline before them


@dataclass(frozen=True)
class _Principal:
    pid: int
    kind: str  # human | admin | sp_etl | sp_sql | sp_infra
    email: str  # a person's email, or a service principal's application id
    name: str  # display name
    user_id: str
    team: str
    home_ws: int
    alt_ws: int
    tz: int  # hours east of UTC (humans)
    browser_ua: str | None
    api_ua: str
    sql_ua: str | None  # the SQL tool a person uses (JDBC/ODBC/dbt), if any
    ips: tuple[str, ...]  # 16 weighted slots
    weight: float
    period_s: int  # run period (scheduled service principals)
    offset_s: int
    token_id: str
    tbl_base: int
    tbl_span: int
    sec_base: int
    sec_span: int
    job_base: int
    sql_user: bool
    dur_mu: float  # log of the median statement duration (ms)
    bytes_mu: float  # log of the median bytes read per statement
    client: tuple[str, str | None]  # query-history client application and driver

    @property
    def is_sp(self) -> bool:
        return self.kind.startswith("sp_")

    @property
    def is_human(self) -> bool:
        return not self.is_sp

    @property
    def subject(self) -> str | None:
        return self.name if self.is_sp else None

    @property
    def scheduled(self) -> bool:
        return self.kind in ("sp_etl", "sp_sql")


@dataclass(frozen=True)
class _Cluster:
    cluster_id: str
    ws: int
    name: str
    owner: str
    source: str  # UI | API | JOB
    created: dt.datetime
    deleted: dt.datetime | None
    dbr: str
    mode: str | None
    autoterm: int | None
    driver: str
    worker: str
    workers: int | None
    autoscale: tuple[int, int] | None
    tags: dict[str, str]
    policy_id: str | None
    init_scripts: tuple[str, ...] = ()
    changes: tuple[tuple[dt.datetime, dict[str, Any]], ...] = ()  # later configuration changes


@dataclass(frozen=True)
class _Warehouse:
    warehouse_id: str
    ws: int
    name: str
    size: str
    serverless: bool


@dataclass
class _Estate:
    seed: int
    key: int  # 62-bit seed used inside SQL
    start: dt.datetime
    days: int
    account_id: str
    metastore_id: str
    workspaces: list[str]
    domain: str
    corp_ips: list[str]
    vpn_ips: list[str]
    principals: list[_Principal]
    tables: list[str]
    secrets: list[tuple[str, str]]
    jobs: list[list[int]]  # per workspace
    clusters: list[_Cluster]
    warehouses: list[_Warehouse]
    known_ips: set[str] = field(default_factory=set)
    slot_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # slot table -> (people, SPs)

    @property
    def end(self) -> dt.datetime:
        return self.start + dt.timedelta(days=self.days)

    @property
    def start_ms(self) -> int:
        return int((self.start - dt.datetime(1970, 1, 1)).total_seconds()) * 1000

    def rng(self, purpose: str) -> random.Random:
        return random.Random(f"insight-estate:{self.seed}:{purpose}")

    def humans(self, *, admin: bool | None = None) -> list[_Principal]:
        return [p for p in self.principals if p.is_human and (admin is None or (p.kind == "admin") == admin)]

    def sps(self, kind: str | None = None) -> list[_Principal]:
        return [p for p in self.principals if p.is_sp and (kind is None or p.kind == kind)]

    def ws_clusters(self, ws: int) -> list[_Cluster]:
        return [c for c in self.clusters if c.ws == ws]

    def ws_warehouses(self, ws: int) -> list[_Warehouse]:
        return [w for w in self.warehouses if w.ws == ws] or self.warehouses

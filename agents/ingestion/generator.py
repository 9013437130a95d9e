"""The demo estate: a deterministic, realistic Databricks workspace in one DuckDB file, with labelled attacks.

Bulk rows (audit events, query history) are generated inside DuckDB from row numbers, with every random
choice derived from `hash(row, seed, salt)`, so the same arguments always give the same table contents, fast.
The estate itself (principals, IPs, clusters, ...) and the small tables are built in Python from seeded RNGs.
Attack scenarios are ordinary-looking principals whose behaviour deviates; their labels live beside the data
in `labels.scenarios`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import os
import random
import re
import secrets as pysecrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from pydantic import BaseModel

from insight_mcp.agents.ingestion.catalog import TABLES

CATEGORIES: tuple[str, ...] = (
    "brute_force", "token_abuse", "ip_access_denied", "privilege_escalation", "defense_evasion",
    "data_exfiltration", "secrets_access", "supply_chain", "suspicious_network", "resource_abuse",
    "destructive_activity", "unauthorized_data_access", "session_hijacking", "posture",
)
LABELS_TABLE = "labels.scenarios"
LABELS_DDL = (
    "CREATE TABLE IF NOT EXISTS labels.scenarios (scenario_id VARCHAR, category VARCHAR, principal VARCHAR, "
    "workspace_id VARCHAR, first_seen TIMESTAMP, last_seen TIMESTAMP, description VARCHAR)"
)
AUDIT, CLUSTERS, QUERIES = "system.access.audit", "system.compute.clusters", "system.query.history"
OUTBOUND, INBOUND = "system.access.outbound_network", "system.access.inbound_network"
USAGE = "system.billing.usage"

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
SCENARIO_DAYS = 7  # scenarios happen in the last week, so every principal has a baseline before them


# --- public models ----------------------------------------------------------------------------------------


class ScenarioLabel(BaseModel):
    """One labelled attack (or posture problem) woven into the generated estate."""

    scenario_id: str
    category: str
    principal: str
    workspace_id: str
    first_seen: dt.datetime
    last_seen: dt.datetime
    description: str


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
) -> GenerationReport:
    """Build the demo workspace atomically, so demos and tests get a realistic estate with known attacks."""
    _validate(days=days, users=users, seed=seed, events_per_day=events_per_day, end=end)
    started = time.perf_counter()
    path = Path(path)
    end_day = end or dt.datetime.now(dt.UTC).date()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{pysecrets.token_hex(6)}")
    try:
        rows, labels = _build(tmp, days=days, users=users, seed=seed, events_per_day=events_per_day,
                              end=end_day)
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
    tmp: Path, *, days: int, users: int, seed: int, events_per_day: int, end: dt.date
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
        labels = _add_scenarios(em)  # may add or delete clusters, so clusters and usage come after
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


def _create_tables(con: duckdb.DuckDBPyConnection) -> None:
    for spec in TABLES.values():
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {spec.schema_name}")
        con.execute(spec.create_sql())
    con.execute("CREATE SCHEMA IF NOT EXISTS labels")
    con.execute(LABELS_DDL)


@dataclass
class _Rows:
    """Rows built in Python, per Databricks table name, inserted in one go at the end."""

    by_table: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, table: str, rows: Iterable[dict[str, Any]]) -> None:
        self.by_table.setdefault(table, []).extend(rows)


def _insert_records(con: duckdb.DuckDBPyConnection, table: str, records: list[dict[str, Any]]) -> None:
    if not records:
        return
    schema = con.sql(f"SELECT * FROM {table} LIMIT 0").to_arrow_table().schema
    con.register("_g_records", pa.Table.from_pylist(records, schema=schema))
    try:
        con.execute(f"INSERT INTO {table} SELECT * FROM _g_records")
    finally:
        con.unregister("_g_records")


def _insert_labels(con: duckdb.DuckDBPyConnection, labels: list[ScenarioLabel]) -> None:
    con.executemany(
        f"INSERT INTO {LABELS_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (lb.scenario_id, lb.category, lb.principal, lb.workspace_id, lb.first_seen, lb.last_seen,
             lb.description)
            for lb in labels
        ],
    )


# --- vocabulary ---------------------------------------------------------------------------------------------

FIRST_NAMES = (
    "james", "mary", "robert", "patricia", "john", "jennifer", "michael", "linda", "david", "elizabeth",
    "william", "barbara", "richard", "susan", "joseph", "jessica", "thomas", "sarah", "charles", "karen",
    "daniel", "lisa", "matthew", "nancy", "anthony", "sandra", "mark", "ashley", "steven", "emily", "paul",
    "michelle", "andrew", "amanda", "joshua", "melissa", "kevin", "stephanie", "brian", "rebecca", "george",
    "laura", "timothy", "helen", "ryan", "anna", "jacob", "olivia", "lucas", "sophie", "maximilian", "lena",
    "jonas", "mia", "felix", "hannah", "pierre", "camille", "luca", "giulia", "mateo", "lucia", "sven",
    "ingrid", "pieter", "femke", "raj", "priya", "wei", "mei", "hiroshi", "yuki", "omar", "fatima", "ivan",
    "olga", "kofi", "amara", "diego", "valentina",
)
LAST_NAMES = (
    "smith", "johnson", "williams", "brown", "jones", "garcia", "miller", "davis", "rodriguez", "martinez",
    "hernandez", "lopez", "wilson", "anderson", "thomas", "taylor", "moore", "jackson", "martin", "lee",
    "thompson", "white", "harris", "clark", "lewis", "walker", "hall", "young", "allen", "king", "wright",
    "scott", "green", "baker", "adams", "nelson", "hill", "campbell", "mitchell", "roberts", "carter",
    "phillips", "evans", "turner", "mueller", "schmidt", "schneider", "fischer", "weber", "meyer", "wagner",
    "becker", "dubois", "moreau", "laurent", "rossi", "russo", "ferrari", "jansen", "devries", "bakker",
    "nielsen", "hansen", "larsen", "kowalski", "nowak", "novak", "silva", "santos", "costa", "patel",
    "sharma", "chen", "wang", "tanaka", "suzuki", "kim", "park", "okafor", "mensah",
)
COMPANY_DOMAINS = (
    "northwind-analytics.com", "bluepeak-logistics.com", "meridian-health.org", "corvalis-energy.com",
    "harborview-retail.com", "altamira-insurance.com", "stellarfreight.io", "kestrel-pharma.com",
)
TEAMS = ("data-engineering", "analytics", "data-science", "finance", "marketing", "platform", "ml-platform")
GROUPS = ("data-engineers", "analysts", "data-scientists", "ml-platform", "finance-readers", "bi-developers",
          "marketing-analysts", "platform-ops")
SP_NAMES = {
    "sp_etl": ("etl-nightly", "ingest-kafka", "orders-pipeline", "feature-store-refresh", "cdc-replicator",
               "dq-checks", "ml-batch-scoring", "events-compaction", "crm-sync", "gl-close-jobs"),
    "sp_sql": ("dbt-prod", "tableau-server", "powerbi-gateway", "looker-svc", "dbt-marketing", "reverse-etl"),
    "sp_infra": ("terraform-ci", "github-actions-deploy", "workspace-automation", "uc-permissions-bot"),
}
SQL_SP_TOOLS = {  # name prefix -> ((client_application, client_driver), user agent)
    "dbt": (("dbt", "Databricks SQL Connector for Python"),
            "dbt-databricks/1.{d}.3 databricks-sql-connector/3.{q}.0 python/3.11.9"),
    "tableau": (("Tableau Server 2024.2", "Databricks JDBC Driver"),
                "Databricks-JDBC-Driver/2.6.{j} (Tableau Server 2024.2)"),
    "powerbi": (("Power BI Service", "Databricks ODBC Driver"),
                "SimbaSparkODBCDriver/2.8.{j} (Power BI Gateway)"),
    "looker": (("Looker", "Databricks JDBC Driver"), "Databricks-JDBC-Driver/2.6.{j} (Looker)"),
    "reverse": (("Hightouch", "Databricks SQL Driver for Go"), "databricks-sql-go/1.{d}.0"),
}
CATALOGS = ("main", "prod", "dev", "sandbox", "finance", "hr")
SCHEMAS = ("sales", "marketing", "finance", "hr", "product", "ml_features", "raw_events", "bronze", "silver",
           "gold", "crm", "supply_chain", "support", "web_analytics")
TABLE_NAMES = (
    "orders", "order_items", "customers", "customer_addresses", "invoices", "payments", "refunds", "sessions",
    "page_views", "clicks", "employees", "salaries", "payroll_runs", "inventory", "shipments", "forecasts",
    "churn_features", "leads", "campaigns", "gl_entries", "budgets", "tickets", "products", "price_history",
    "suppliers", "contracts", "events_raw", "events_clean", "daily_revenue", "user_profiles", "consents",
    "model_predictions", "ab_tests", "returns", "credit_limits",
)
SENSITIVE_SCHEMAS = ("hr", "finance", "crm")
NOTEBOOK_NAMES = ("exploration", "etl_orders", "feature_engineering", "dashboard_prep", "scratch",
                  "model_training", "data_quality_checks", "Untitled Notebook 2024-03-11", "weekly_report",
                  "backfill", "eda_customers", "join_debug", "kpi_definitions", "prototype", "cleanup",
                  "udfs")
SECRET_SCOPES = {
    "etl-prod": ("jdbc-user", "jdbc-password", "storage-account-key"),
    "kafka": ("sasl-username", "sasl-password", "schema-registry-key"),
    "salesforce": ("client-id", "client-secret", "refresh-token"),
    "snowflake-migration": ("user", "password"),
    "aws-keys": ("access-key-id", "secret-access-key"),
    "openai": ("api-key",),
    "slack-alerts": ("webhook-url", "bot-token"),
    "postgres-crm": ("username", "password", "host"),
    "sftp-partner": ("username", "private-key"),
    "github": ("pat", "app-private-key"),
    "datadog": ("api-key", "app-key"),
    "sendgrid": ("api-key",),
}
BROWSER_UAS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 "
    "Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 "
    "Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 "
    "Safari/537.36 Edg/{v}.0.0.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.{s} "
    "Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{f}.0) Gecko/20100101 Firefox/{f}.0",
    "Mozilla/5.0 (X11; Linux x86_64; rv:{f}.0) Gecko/20100101 Firefox/{f}.0",
)
BROWSER_UA_WEIGHTS = (34, 26, 12, 14, 9, 5)
HUMAN_API_UAS = (
    "databricks-cli/0.{c}.0 databricks-sdk-go/0.{g}.0 go/1.22.7 os/darwin cmd/{cmd} auth/pat",
    "databricks-cli/0.{c}.0 databricks-sdk-go/0.{g}.0 go/1.22.7 os/windows cmd/{cmd} auth/databricks-cli",
    "databricks-sdk-py/0.{p}.0 python/3.11.9 os/darwin auth/pat",
    "databricks-sdk-py/0.{p}.0 python/3.10.12 os/linux auth/databricks-cli",
    "vscode-extension/2.{d}.1 databricks-sdk-py/0.{p}.0 python/3.11.9 os/darwin",
)
HUMAN_API_UA_WEIGHTS = (30, 10, 25, 15, 20)
HUMAN_SQL_UAS = (
    "dbt-databricks/1.{d}.3 databricks-sql-connector/3.{q}.0 python/3.11.9",
    "Databricks-JDBC-Driver/2.6.{j} (DBeaver 24.{d}.0)",
    "SimbaSparkODBCDriver/2.8.{j} (Tableau Desktop 2024.2)",
    "SimbaSparkODBCDriver/2.8.{j} (Power BI Desktop)",
    "databricks-sql-python/3.{q}.0",
)
HUMAN_SQL_UA_WEIGHTS = (25, 20, 20, 20, 15)
SP_UAS = {
    "sp_etl": (
        "databricks-sdk-py/0.{p}.0 python/3.10.12 os/linux auth/oauth-m2m",
        "Apache-HttpClient/4.5.14 (Java/17.0.10) databricks-jobs",
        "databricks-sdk-go/0.{g}.0 go/1.22.7 os/linux auth/oauth-m2m",
    ),
    "sp_infra": (
        "Terraform/1.{t}.8 databricks-tf-provider/1.{tp}.0 databricks-sdk-go/0.{g}.0 go/1.22.7 os/linux",
        "databricks-cli/0.{c}.0 databricks-sdk-go/0.{g}.0 go/1.22.7 os/linux cmd/bundle_deploy "
        "auth/oauth-m2m",
        "databricks-sdk-py/0.{p}.0 python/3.12.3 os/linux auth/oauth-m2m",
    ),
}
CORP_PREFIXES = ("62.153", "80.156", "193.110", "195.34", "212.227", "145.40", "91.218", "213.61")
HOME_PREFIXES = ("73", "24", "68", "98", "86", "90", "92", "81", "82", "84", "109", "176", "188", "217", "79",
                 "94", "2", "5")
MOBILE_PREFIXES = ("37", "46", "89", "31", "176", "77")
HOSTING_PREFIXES = ("45", "185", "194", "103", "141", "159", "167", "193", "206", "91", "5", "179", "162")
CLOUD_PREFIXES = ("3", "18", "34", "35", "44", "52", "54", "13", "20", "40", "4")
NODE_TYPES = ("i3.xlarge", "i3.2xlarge", "m5d.large", "m5d.xlarge", "m5d.2xlarge", "r5d.xlarge",
              "r5d.4xlarge", "c5d.2xlarge", "c5d.4xlarge", "m6gd.xlarge", "r6gd.2xlarge")
GPU_NODE_TYPES = ("g5.xlarge", "g5.2xlarge", "g4dn.xlarge", "p3.2xlarge")
DBU_PER_HOUR = {
    "i3.xlarge": 1.0, "i3.2xlarge": 2.0, "m5d.large": 0.34, "m5d.xlarge": 0.69, "m5d.2xlarge": 1.37,
    "r5d.xlarge": 0.9, "r5d.4xlarge": 3.6, "c5d.2xlarge": 1.5, "c5d.4xlarge": 3.0, "m6gd.xlarge": 0.75,
    "r6gd.2xlarge": 1.8, "g5.xlarge": 2.7, "g5.2xlarge": 3.3, "g4dn.xlarge": 1.5, "p3.2xlarge": 5.5,
    "g5.12xlarge": 16.0, "g5.48xlarge": 58.0, "p4d.24xlarge": 92.0,
}
DBR_VERSIONS = (("15.4.x-scala2.12", 30), ("14.3.x-scala2.12", 18), ("15.4.x-photon-scala2.12", 12),
                ("13.3.x-photon-scala2.12", 8), ("13.3.x-scala2.12", 8), ("16.1.x-scala2.12", 8),
                ("12.2.x-scala2.12", 4), ("11.3.x-scala2.12", 3), ("10.4.x-scala2.12", 4),
                ("14.3.x-cpu-ml-scala2.12", 5))
GPU_DBR_VERSIONS = ("15.4.x-gpu-ml-scala2.12", "14.3.x-gpu-ml-scala2.12")
EGRESS_BENIGN = (
    ("pypi.org", 30), ("files.pythonhosted.org", 30), ("repo1.maven.org", 10), ("registry.npmjs.org", 6),
    ("api.github.com", 8), ("raw.githubusercontent.com", 10), ("huggingface.co", 8),
    ("cdn-lfs.huggingface.co", 5), ("api.openai.com", 6), ("hooks.slack.com", 5), ("conda.anaconda.org", 5),
    ("login.microsoftonline.com", 3), ("api.segment.io", 2), ("telemetry.vendor-insights.net", 1),
)


# --- estate -------------------------------------------------------------------------------------------------


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


def _uuid(*parts: object) -> str:
    digest = hashlib.md5("|".join(map(str, parts)).encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:]}"


def _hex(n: int, *parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:n]


def _seed_key(seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"insight:{seed}".encode()).digest()[:8], "big") >> 2


def _ip(rng: random.Random, prefixes: Sequence[str]) -> str:
    prefix = rng.choice(prefixes)
    parts = prefix.split(".")
    while len(parts) < 3:
        parts.append(str(rng.randint(1, 254)))
    return ".".join([*parts, str(rng.randint(2, 253))])


def _weighted(rng: random.Random, pairs: Sequence[tuple[Any, float]]) -> Any:
    return rng.choices([p[0] for p in pairs], weights=[p[1] for p in pairs])[0]


def _build_estate(*, days: int, users: int, seed: int, end: dt.date) -> _Estate:
    rng = random.Random(f"insight-estate:{seed}:estate")
    start = dt.datetime.combine(end - dt.timedelta(days=days), dt.time())
    n_ws = 3 if rng.random() < 0.7 else 2
    workspaces = [str(rng.randint(1_000_000_000_000_000, 8_999_999_999_999_999)) for _ in range(n_ws)]
    corp_base = rng.choice(CORP_PREFIXES)
    corp_c = rng.randint(1, 250)
    corp_ips = [f"{corp_base}.{corp_c}.{d}" for d in rng.sample(range(2, 15), 4)]
    vpn_base = rng.choice([p for p in CORP_PREFIXES if p != corp_base])
    vpn_c = rng.randint(1, 250)
    vpn_ips = [f"{vpn_base}.{vpn_c}.{d}" for d in range(20, 252)]
    tables = _build_tables(rng)
    scopes = list(SECRET_SCOPES.items())
    secrets = [(scope, key) for scope, keys in scopes for key in keys]
    jobs = [sorted(rng.sample(range(10**14, 10**15), 64)) for _ in workspaces]
    estate = _Estate(
        seed=seed, key=_seed_key(seed), start=start, days=days, account_id=_uuid("account", seed),
        metastore_id=_uuid("metastore", seed), workspaces=workspaces, domain=rng.choice(COMPANY_DOMAINS),
        corp_ips=corp_ips, vpn_ips=vpn_ips, principals=[], tables=tables, secrets=secrets, jobs=jobs,
        clusters=[], warehouses=[],
    )
    estate.principals = _build_principals(rng, estate, users)
    estate.warehouses = _build_warehouses(rng, estate)
    estate.principals = [_with_warehouse_profile(rng, p) for p in estate.principals]
    estate.clusters = _build_clusters(rng, estate)
    estate.known_ips = {ip for p in estate.principals for ip in p.ips} | set(corp_ips) | set(vpn_ips)
    return estate


def _build_tables(rng: random.Random) -> list[str]:
    names: set[str] = set()
    while len(names) < 160:
        catalog = _weighted(rng, [(c, w) for c, w in zip(CATALOGS, (40, 25, 12, 8, 8, 4), strict=True)])
        schema = rng.choice(SCHEMAS)
        if catalog in ("finance", "hr"):
            schema = rng.choice(("reporting", "restricted", "payroll", "ledger", "people"))
        names.add(f"{catalog}.{schema}.{rng.choice(TABLE_NAMES)}")
    return sorted(names)


def _fill_ua(template: str, rng: random.Random) -> str:
    commands = ("fs_cp", "jobs_run-now", "workspace_export", "clusters_list", "bundle_deploy")
    return template.format(
        v=rng.choice((128, 129, 130, 131)), s=rng.randint(3, 6), f=rng.choice((130, 131, 132)),
        c=rng.choice((218, 221, 224, 229, 230, 232)), g=rng.randint(44, 52), p=rng.randint(28, 38),
        d=rng.randint(6, 9), q=rng.randint(2, 5), j=rng.randint(33, 40), cmd=rng.choice(commands),
        t=rng.randint(7, 9), tp=rng.randint(48, 60),
    )


def _build_principals(rng: random.Random, estate: _Estate, users: int) -> list[_Principal]:
    n_sp = max(3, round(users * 0.08))
    n_human = users - n_sp
    n_admin = max(1, min(n_human - 1, max(2, round(n_human * 0.04))))
    sp_kinds = ["sp_etl", "sp_sql", "sp_etl", "sp_infra"]
    while len(sp_kinds) < n_sp:
        sp_kinds.append(_weighted(rng, [("sp_etl", 5), ("sp_sql", 3), ("sp_infra", 2)]))
    out: list[_Principal] = []
    emails: set[str] = set()
    for pid in range(users):
        if pid < n_human:
            kind = "admin" if pid < n_admin else "human"
            out.append(_human(rng, estate, pid, kind, emails))
        else:
            kind = sp_kinds[pid - n_human]
            index = sp_kinds[: pid - n_human].count(kind)
            out.append(_service_principal(rng, estate, pid, kind, index))
    rng.shuffle(out)
    return [_renumber(p, i) for i, p in enumerate(out)]


def _renumber(p: _Principal, pid: int) -> _Principal:
    return _replace(p, pid=pid)


def _replace(p: Any, **changes: Any) -> Any:
    values = {f: getattr(p, f) for f in p.__dataclass_fields__}
    values.update(changes)
    return type(p)(**values)


def _human(rng: random.Random, estate: _Estate, pid: int, kind: str, emails: set[str]) -> _Principal:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    email = f"{first}.{last}@{estate.domain}"
    n = 2
    while email in emails:
        email = f"{first}.{last}{n}@{estate.domain}"
        n += 1
    emails.add(email)
    n_ws = len(estate.workspaces)
    home = rng.choices(range(n_ws), weights=[6, 3, 2][:n_ws])[0]
    alt = rng.randrange(n_ws)
    homes = [_ip(rng, HOME_PREFIXES) for _ in range(rng.choice((1, 1, 2)))]
    corp = rng.choice(estate.corp_ips)
    vpn = rng.choice(estate.vpn_ips)
    slots = [corp] * 8 + [vpn] * 4 + [homes[0]] * 2 + [homes[-1]]
    slots.append(_ip(rng, MOBILE_PREFIXES) if rng.random() < 0.3 else rng.choice(estate.corp_ips))
    team = rng.choice(TEAMS)
    sql_user = kind == "admin" or team in ("analytics", "finance", "marketing", "data-science") \
        or rng.random() < 0.25
    n_tables = len(estate.tables)
    return _Principal(
        pid=pid, kind=kind, email=email, name=f"{first.title()} {last.title()}",
        user_id=str(rng.randint(10**15, 9 * 10**15)), team=team, home_ws=home, alt_ws=alt,
        tz=_weighted(rng, [(0, 25), (1, 45), (2, 10), (-5, 20)]),
        browser_ua=_fill_ua(_weighted(rng, list(zip(BROWSER_UAS, BROWSER_UA_WEIGHTS, strict=True))), rng),
        api_ua=_fill_ua(_weighted(rng, list(zip(HUMAN_API_UAS, HUMAN_API_UA_WEIGHTS, strict=True))), rng),
        sql_ua=_fill_ua(_weighted(rng, list(zip(HUMAN_SQL_UAS, HUMAN_SQL_UA_WEIGHTS, strict=True))), rng)
        if sql_user and rng.random() < 0.5 else None,
        ips=tuple(slots), weight=rng.lognormvariate(0, 0.8) * (1.2 if kind == "admin" else 1.0),
        period_s=0, offset_s=0, token_id=_hex(64, "token", estate.seed, email),
        tbl_base=rng.randrange(n_tables), tbl_span=n_tables if kind == "admin" else rng.randint(25, 60),
        sec_base=rng.randrange(len(estate.secrets)), sec_span=rng.randint(1, 3), job_base=rng.randrange(64),
        sql_user=sql_user, dur_mu=0.0, bytes_mu=0.0, client=("Databricks SQL Editor", None),
    )


def _service_principal(rng: random.Random, estate: _Estate, pid: int, kind: str, index: int) -> _Principal:
    app_id = _uuid("sp", estate.seed, pid, rng.random())
    base = SP_NAMES[kind][index % len(SP_NAMES[kind])]
    name = f"{base}-{rng.choice(('sp', 'svc', 'prod', 'automation'))}"
    if index >= len(SP_NAMES[kind]):
        name += f"-{index}"
    if kind == "sp_sql":
        client, ua = SQL_SP_TOOLS[base.split("-")[0]]
    else:
        client, ua = ("Databricks Jobs", None), SP_UAS[kind][index % len(SP_UAS[kind])]
    n_ws = len(estate.workspaces)
    home = rng.randrange(n_ws)
    if kind == "sp_etl":
        subnet = f"10.{rng.choice((20, 40, 64, 96))}.{rng.randint(0, 31) * 8}"
        ips = tuple(f"{subnet}.{rng.randint(4, 250)}" for _ in range(16))
        period = rng.choice((900, 1800, 3600, 3600, 7200, 14400, 86400))
    elif kind == "sp_sql":
        ips = tuple([_ip(rng, CLOUD_PREFIXES)] * 12 + [_ip(rng, CLOUD_PREFIXES)] * 4)
        period = rng.choice((900, 3600, 3600, 21600, 86400))
    else:
        pool = [_ip(rng, CLOUD_PREFIXES) for _ in range(6)]
        ips = tuple(rng.choice(pool) for _ in range(16))
        period = 0
    n_tables = len(estate.tables)
    return _Principal(
        pid=pid, kind=kind, email=app_id, name=name, user_id=str(rng.randint(10**15, 9 * 10**15)),
        team="platform", home_ws=home, alt_ws=home, tz=0, browser_ua=None,
        api_ua=_fill_ua(ua, rng), sql_ua=None, ips=ips,
        weight=rng.lognormvariate(0, 0.4) * {"sp_etl": 5.0, "sp_sql": 6.0, "sp_infra": 0.8}[kind],
        period_s=period, offset_s=rng.randrange(max(period, 1)),
        token_id=_hex(64, "token", estate.seed, app_id),
        tbl_base=rng.randrange(n_tables), tbl_span=rng.randint(6, 16) if kind != "sp_infra" else n_tables,
        sec_base=rng.randrange(len(estate.secrets)), sec_span=rng.randint(2, 4), job_base=rng.randrange(64),
        sql_user=kind in ("sp_sql", "sp_etl"), dur_mu=0.0, bytes_mu=0.0, client=client,
    )


def _build_warehouses(rng: random.Random, estate: _Estate) -> list[_Warehouse]:
    names = ("Shared Endpoint", "bi-serverless", "dbt-prod", "analytics-pro", "finance-reporting",
             "adhoc-small", "data-science-sql")
    out = []
    for ws in range(len(estate.workspaces)):
        for name in rng.sample(names, rng.randint(2, 3)):
            out.append(_Warehouse(
                warehouse_id=_hex(16, "wh", estate.seed, ws, name), ws=ws, name=name,
                size=_weighted(rng, [("Small", 4), ("Medium", 3), ("Large", 2), ("X-Large", 1)]),
                serverless=rng.random() < 0.5,
            ))
    return out


HUMAN_CLIENTS = (
    (("Databricks SQL Editor", None), 45), (("Databricks Notebook", None), 20),
    (("Databricks Dashboards", None), 10), (("DBeaver 24.2.3", "Databricks JDBC Driver"), 10),
    (("Tableau Desktop 2024.2", "Databricks ODBC Driver"), 8),
    (("Power BI Desktop", "Databricks ODBC Driver"), 7),
)


def _with_warehouse_profile(rng: random.Random, p: _Principal) -> _Principal:
    if p.kind == "sp_sql":
        return _replace(p, dur_mu=math.log(rng.uniform(2500, 25000)),
                        bytes_mu=math.log(rng.uniform(2e8, 8e9)))
    if p.kind == "sp_etl":
        return _replace(p, client=("Databricks Jobs", None), dur_mu=math.log(rng.uniform(5000, 60000)),
                        bytes_mu=math.log(rng.uniform(1e9, 2e10)))
    return _replace(p, client=_weighted(rng, HUMAN_CLIENTS), dur_mu=math.log(rng.lognormvariate(7.0, 0.7)),
                    bytes_mu=math.log(rng.lognormvariate(18.5, 1.0)))


def _cluster_id(rng: random.Random, created: dt.datetime) -> str:
    tail = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(8))
    return f"{created:%m%d}-{created:%H%M%S}-{tail}"


def _build_clusters(rng: random.Random, estate: _Estate) -> list[_Cluster]:
    n = max(40, min(80, len(estate.principals) // 3))
    humans = estate.humans()
    sps = estate.sps()
    out = []
    for _ in range(n):
        source = _weighted(rng, [("UI", 55), ("API", 25), ("JOB", 20)])
        owner = rng.choice(sps if (source != "UI" and sps and rng.random() < 0.6) else humans)
        ws = owner.home_ws
        if source == "JOB":
            created = estate.start + dt.timedelta(seconds=rng.randrange(estate.days * 86400))
            deleted: dt.datetime | None = created + dt.timedelta(minutes=rng.randint(12, 240))
        else:
            created = estate.start - dt.timedelta(days=rng.randint(1, 400), seconds=rng.randrange(86400))
            deleted = None
            if rng.random() < 0.15:
                seconds = rng.randrange(max(1, (estate.days - 1) * 86400))
                deleted = estate.start + dt.timedelta(seconds=seconds)
        gpu = source != "JOB" and rng.random() < 0.08
        worker = rng.choice(GPU_NODE_TYPES) if gpu else rng.choice(NODE_TYPES)
        dbr = rng.choice(GPU_DBR_VERSIONS) if gpu else _weighted(rng, DBR_VERSIONS)
        interactive = source == "UI"
        mode = "SINGLE_USER" if source == "JOB" or gpu else _weighted(
            rng, [("USER_ISOLATION", 55), ("SINGLE_USER", 35), ("NONE", 10)])
        autoterm = None if source == "JOB" else _weighted(
            rng, [(30, 20), (60, 30), (120, 25), (20, 10), (0, 8 if interactive else 1), (None, 4)])
        autoscale = (rng.randint(1, 2), rng.randint(3, 12)) if rng.random() < 0.5 else None
        name = _cluster_name(rng, source, owner, gpu)
        tags = {"team": owner.team, "cost_center": f"cc-{rng.randint(1000, 1999)}",
                "env": rng.choice(("prod", "dev", "prod", "staging"))}
        changes = _cluster_changes(rng, estate, created, deleted, source)
        out.append(_Cluster(
            cluster_id=_cluster_id(rng, created), ws=ws, name=name, owner=owner.email, source=source,
            created=created, deleted=deleted, dbr=dbr, mode=mode, autoterm=autoterm,
            driver=worker if not gpu else rng.choice(NODE_TYPES), worker=worker,
            workers=None if autoscale else rng.randint(1, 8), autoscale=autoscale, tags=tags,
            policy_id=_hex(16, "policy", rng.randint(0, 5)).upper() if rng.random() < 0.4 else None,
            init_scripts=("/Workspace/Shared/init/install-certs.sh",) if rng.random() < 0.15 else (),
            changes=changes,
        ))
    return out


def _cluster_name(rng: random.Random, source: str, owner: _Principal, gpu: bool) -> str:
    if source == "JOB":
        return f"job-{rng.randint(10**14, 10**15)}-run-{rng.randint(10**14, 10**15)}"
    if gpu:
        return rng.choice(("ml-gpu-training", "gpu-experiments", "cv-model-dev", "llm-eval"))
    if owner.is_human and rng.random() < 0.4:
        return f"{owner.email.split('.')[0]}'s Cluster"
    base = rng.choice(("shared-analytics", "etl-nightly", "data-eng-shared", "ds-sandbox", "bi-extracts",
                       "streaming-ingest", "adhoc-medium", "feature-pipelines", "ml-dev"))
    return f"{base}-{rng.randint(1, 9)}"


def _cluster_changes(
    rng: random.Random, estate: _Estate, created: dt.datetime, deleted: dt.datetime | None, source: str
) -> tuple[tuple[dt.datetime, dict[str, Any]], ...]:
    if source == "JOB":
        return ()
    out = []
    last = deleted or estate.end - dt.timedelta(hours=1)
    for _ in range(_weighted(rng, [(0, 30), (1, 35), (2, 20), (3, 10), (4, 5)])):
        span = max(1, int((last - estate.start).total_seconds()))
        when = estate.start + dt.timedelta(seconds=rng.randrange(span))
        change = _weighted(rng, [
            ({"dbr": "15.4.x-scala2.12"}, 3), ({"workers": rng.randint(2, 12)}, 3),
            ({"autoterm": rng.choice((30, 60, 120))}, 2), ({"tags_extra": {"owner_team": "platform"}}, 1),
        ])
        out.append((when, change))
    return tuple(sorted(out, key=lambda c: c[0]))


# --- SQL helpers --------------------------------------------------------------------------------------------


def _q(value: str | None) -> str:
    return "NULL" if value is None else "'" + value.replace("'", "''") + "'"


def _sql_list(values: Iterable[Any]) -> str:
    items = [str(v) if isinstance(v, int) else _q(str(v)) for v in values]
    return "[" + ", ".join(items) + "]"


def _allocate(weights: Sequence[float], total: int, *, min_one: bool = True) -> list[int]:
    """Integer slot counts proportional to the weights (largest remainder), summing to total."""
    positive = sum(w for w in weights if w > 0)
    raw = [w / positive * total if w > 0 else 0.0 for w in weights]
    counts = [max(1, math.floor(r)) if (min_one and w > 0) else math.floor(r) for r, w in zip(raw, weights,
                                                                                                strict=True)]
    order = sorted(range(len(weights)), key=lambda i: (raw[i] - math.floor(raw[i]), -i), reverse=True)
    i = 0
    while sum(counts) < total:
        if weights[order[i % len(order)]] > 0:
            counts[order[i % len(order)]] += 1
        i += 1
    while sum(counts) > total:
        j = max(range(len(counts)), key=lambda k: counts[k])
        counts[j] -= 1
    return counts


def _slots(weights: Sequence[float], total: int) -> list[int]:
    out: list[int] = []
    for index, count in enumerate(_allocate(weights, total)):
        out.extend([index] * count)
    return out


def _register(con: duckdb.DuckDBPyConnection, name: str, columns: dict[str, list[Any]]) -> None:
    con.register("_g_src", pa.table(columns))
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM _g_src")
    finally:
        con.unregister("_g_src")


def _register_slots(
    con: duckdb.DuckDBPyConnection, name: str, rows: dict[str, list[Any]], counts: list[int]
) -> None:
    """A lookup table with one row per slot: row i of `rows` repeated counts[i] times, slots in row order.

    Joining `slot = random % total` against it is a fast, deterministic weighted choice.
    """
    columns = dict(rows)
    columns["_n"] = counts
    columns["_o"] = list(range(len(counts)))
    names = ", ".join(rows)
    con.register("_g_src", pa.table(columns))
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {name} AS "
            f"SELECT (row_number() OVER (ORDER BY _o, _j) - 1)::BIGINT AS slot, {names} "
            f"FROM (SELECT *, unnest(range(_n)) AS _j FROM _g_src)"
        )
    finally:
        con.unregister("_g_src")


KIND_CODES = {"human": 0, "admin": 1, "sp_etl": 2, "sp_sql": 3, "sp_infra": 4}
HUMAN_HOUR_WEIGHTS = (0.4, 0.2, 0.1, 0.1, 0.1, 0.3, 1.5, 8, 30, 90, 100, 100, 60, 90, 100, 95, 80, 50, 25,
                      12, 9, 7, 4, 1.5)
DAY_WEIGHTS = (1.0, 1.0, 1.0, 0.98, 0.82, 0.05, 0.035)  # Monday .. Sunday
PRINCIPAL_SLOTS_MIN = 1 << 16
DAY_SLOTS = 1 << 17
ACTION_SLOTS = 1 << 14
HUMAN_SHARE = 0.64  # of audit events and statements; service principals make the rest


def _slot_count(n: int) -> int:
    return max(PRINCIPAL_SLOTS_MIN, 1 << math.ceil(math.log2(max(1, 8 * n))))


def _day_table(estate: _Estate) -> dict[str, list[Any]]:
    """Per day: its share of all rows, and the share of those made by people (working days are busier)."""
    people = [DAY_WEIGHTS[(estate.start + dt.timedelta(days=d)).weekday()] for d in range(estate.days)]
    total = sum(people)
    shares = [HUMAN_SHARE * w / total + (1 - HUMAN_SHARE) / estate.days for w in people]
    p_human = [round(100_000 * HUMAN_SHARE * w / total / share)
               for w, share in zip(people, shares, strict=True)]
    return {"day_idx": list(range(estate.days)), "p_human": p_human, "share": shares}


def _register_helpers(con: duckdb.DuckDBPyConnection, estate: _Estate) -> None:
    """Small lookup tables the bulk SQL joins against: who, what, when, from where."""
    con.execute(
        "CREATE OR REPLACE TEMP MACRO rb(h, s, w, n) AS "
        "CAST(((((h >> s) & ((1::UBIGINT << w) - 1)) * CAST(n AS UBIGINT)) >> w) AS BIGINT)"
    )
    _register_people_slots(con, "_g_pslot", estate, estate.principals)
    _register_action_slots(con)
    days = _day_table(estate)
    shares = days.pop("share")
    _register_slots(con, "_g_dslot", days, _allocate(shares, DAY_SLOTS))
    keys, ips = [], []
    for p in estate.principals:
        for k, ip in enumerate(p.ips):
            keys.append(p.pid * 16 + k)
            ips.append(ip)
    _register(con, "_g_ipslot", {"ipkey": keys, "ip": ips})


def _principal_columns(estate: _Estate, principals: Sequence[_Principal]) -> dict[str, list[Any]]:
    """Per-principal attributes the bulk SQL needs, column-wise."""
    cols: dict[str, list[Any]] = {}
    for p in principals:
        period = p.period_s or 86400
        whs = estate.ws_warehouses(p.home_ws)
        values = {
            "pid": p.pid, "kind": KIND_CODES[p.kind], "profile": _profile(p), "email": p.email,
            "subject": p.subject, "user_id": p.user_id, "tz": p.tz, "scheduled": p.scheduled,
            "period_ms": period * 1000, "offset_ms": p.offset_s * 1000,
            "jitter_ms": min(period // 3, 900) * 1000,
            "browser_ua": p.browser_ua, "api_ua": p.api_ua, "sql_ua": p.sql_ua, "home_ws": p.home_ws,
            "alt_ws": p.alt_ws, "token_id": p.token_id, "tbl_base": p.tbl_base, "tbl_span": p.tbl_span,
            "sec_base": p.sec_base, "sec_span": p.sec_span, "job_base": p.job_base,
            "sess": _hex(24, "session", estate.seed, p.email),
            "qsess": _hex(24, "qsession", estate.seed, p.email),
            "wh1": whs[p.pid % len(whs)].warehouse_id, "wh2": whs[(p.pid + 1) % len(whs)].warehouse_id,
            "serverless": whs[p.pid % len(whs)].serverless, "dur_mu": p.dur_mu, "bytes_mu": p.bytes_mu,
            "client_app": p.client[0], "client_driver": p.client[1],
            "job": str(estate.jobs[p.home_ws][p.job_base]),
        }
        for key, value in values.items():
            cols.setdefault(key, []).append(value)
    return cols


def _register_people_slots(
    con: duckdb.DuckDBPyConnection, name: str, estate: _Estate, principals: Sequence[_Principal],
    boost_sp: float = 1.0,
) -> None:
    """Weighted slots: [0, H) hold people, [H, H + S) service principals; (H, S) go to estate.slot_sizes."""
    humans = [p for p in principals if p.is_human]
    sps = [p for p in principals if p.is_sp]
    h, s = _slot_count(len(humans)), _slot_count(len(sps))
    counts = _allocate([p.weight for p in humans], h) + _allocate([p.weight * boost_sp for p in sps], s)
    _register_slots(con, name, _principal_columns(estate, humans + sps), counts)
    estate.slot_sizes[name] = (h, s)


def _who_and_when_sql(e: _Estate, n: int, slots: str, salt: int) -> str:
    """CTEs `ev` -> `timed`: the row's hashes, its day (monotonic in the row number), principal and time.

    Rows come out roughly in time order, so DuckDB's zone maps can skip row groups on time filters.
    """
    k = e.key + salt
    h_slots, s_slots = e.slot_sizes[slots]
    hours = _slots(HUMAN_HOUR_WEIGHTS, 1024)
    total_ms = e.days * DAY_MS
    return f"""
WITH ev AS (
  SELECT i, hash(i, {k}) AS h1, hash(i, {k + 1}) AS h2, hash(i, {k + 2}) AS h3, hash(i, {k + 3}) AS h4,
         hash(i, {k + 4}) AS h5
  FROM __ROWS__ t
), dayed AS (
  SELECT ev.*, d.day_idx, d.p_human FROM ev JOIN _g_dslot d ON d.slot = (ev.i * {DAY_SLOTS}) // {n}
), joined AS (
  SELECT dayed.*, p.* EXCLUDE (slot) FROM dayed JOIN {slots} p
    ON p.slot = CASE WHEN rb(h1, 0, 17, 100000) < p_human THEN rb(h1, 17, 20, {h_slots})
                     ELSE {h_slots} + rb(h1, 17, 20, {s_slots}) END
), placed AS (
  SELECT *,
    CASE WHEN scheduled
         THEN day_idx * {DAY_MS} + rb(h5, 32, 20, jitter_ms)
              + (rb(h5, 0, 20, {DAY_MS} // period_ms) * period_ms + offset_ms) % {DAY_MS}
         ELSE day_idx * {DAY_MS} + ({_sql_list(hours)}[1 + rb(h2, 0, 10, 1024)] - tz) * {HOUR_MS}
              + rb(h2, 10, 22, {HOUR_MS}) END AS t_raw
  FROM joined
), timed AS (  -- time zones and jitter push a few events over the ends of the range: move them a day back in
  SELECT *, CASE WHEN t_raw < 0 THEN t_raw + {DAY_MS} WHEN t_raw >= {total_ms} THEN t_raw - {DAY_MS}
                 ELSE t_raw END AS t_ms
  FROM placed
)"""


def _drop_helpers(con: duckdb.DuckDBPyConnection) -> None:
    for name in ("_g_pslot", "_g_aslot", "_g_dslot", "_g_ipslot", "_g_qslot", "_g_range"):
        con.execute(f"DROP TABLE IF EXISTS {name}")
    con.execute("DROP MACRO IF EXISTS rb")


# --- audit actions ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Action:
    service: str
    action: str
    weights: tuple[float, float, float, float, float]  # human, admin, sp_etl, sp_sql, sp_infra
    params: dict[str, str]  # request_params key -> SQL expression
    browser: bool = False  # humans do it in the UI (browser user agent, UI session)
    fail: float = 0.002  # share of failed requests
    errors: str = "generic"
    account_level: bool = False
    result: str | None = None  # SQL expression of response.result on success
    sql_client: bool = False  # humans may do it from a SQL tool (JDBC/ODBC/dbt user agent)


# The expressions below may use the columns email, ws, pid, kind, r (a random UBIGINT), ts (event time),
# token_id, user_id, account_id, metastore_id, and the $variables of _audit_vars (expanded only where used).
_UC = {"workspace_id": "ws", "metastore_id": "metastore_id"}
_NB = {"notebookId": "$nb_id", "notebookFullPath": "$nb_path"}
_CATALOG = "split_part($tbl, '.', 1)"
_SCHEMA = "split_part($tbl, '.', 2)"
_N = "rb(r, 40, 16, 99999)::VARCHAR"  # a random file or run number
_GROUP = f"list_extract({_sql_list(GROUPS)}, 1 + rb(r, 50, 3, 8))"
_EXPORT_FORMAT = ("CASE rb(r, 44, 7, 128) WHEN 0 THEN 'JUPYTER' WHEN 1 THEN 'HTML' WHEN 2 THEN 'DBC' "
                  "ELSE 'SOURCE' END")  # mostly source; now and then another format
_LIBRARY = ("'[{\"pypi\":{\"package\":\"' || list_extract(['pandas==2.2.2', 'scikit-learn==1.5.1', "
            "'great-expectations==0.18.19', 'xgboost==2.1.1', 'openpyxl==3.1.5'], 1 + rb(r, 50, 3, 5)) "
            "|| '\"}}]'")
_REPO = "(1000000 + pid * 7 + rb(r, 40, 3, 7))::VARCHAR"
_VOLUME = "'/Volumes/' || replace($tbl, '.', '/')"
_WORKERS = "(1 + rb(r, 52, 3, 8))::VARCHAR"

# Weights are per principal kind: (human, admin, sp_etl, sp_sql, sp_infra).
ACTIONS: tuple[_Action, ...] = (
    # accounts: authentication
    _Action("accounts", "login", (4, 3, 0, 0, 0), {"user": "email"}, True, 0.02, "login"),
    _Action("accounts", "samlLogin", (8, 6, 0, 0, 0), {"user": "email"}, True, 0.012, "saml"),
    _Action("accounts", "oidcBrowserLogin", (5, 4, 0, 0, 0), {"user": "email"}, True, 0.008, "login"),
    _Action("accounts", "tokenLogin", (28, 22, 60, 80, 40), {"tokenId": "token_id", "user": "email"},
            False, 0.003, "token"),
    _Action("accounts", "logout", (2, 2, 0, 0, 0), {"user": "email"}, True, 0.0),
    _Action("accounts", "generateDbToken", (0.3, 0.5, 0, 0, 0.2),
            {"tokenExpirationTime": "(epoch_ms(ts) + 7776000000)::VARCHAR", "comment": "'cli access'"}, True),
    _Action("accounts", "login", (0, 0.8, 0, 0, 0), {"user": "email"}, True, 0.01, "login",
            account_level=True),
    _Action("accountsAccessControl", "getRuleSet", (0, 2, 0, 0, 1.5),
            {"name": "'accounts/' || account_id || '/ruleSets/default'", "etag": "''"}, True,
            account_level=True),
    _Action("accountsAccessControl", "updateRuleSet", (0, 0.3, 0, 0, 0.6),
            {"name": "'accounts/' || account_id || '/servicePrincipals/' || user_id || '/ruleSets/default'"},
            True, account_level=True),
    # notebooks and workspace objects
    _Action("notebook", "runCommand", (220, 110, 50, 0, 0),
            {"notebookId": "$nb_id", "executionTime": "$exec_time",
             "status": "CASE WHEN rb(r, 56, 4, 16) = 0 THEN 'error' ELSE 'finished' END",
             "commandId": "rb(r, 0, 32, 4000000000)::VARCHAR"}, True, 0.0),
    _Action("notebook", "attachNotebook", (25, 10, 0, 0, 0),
            {"path": "$nb_path", "clusterId": "$cl", "notebookId": "$nb_id"}, True, 0.002, "cluster"),
    _Action("notebook", "createNotebook", (4, 2, 0, 0, 0), {"notebookId": "$nb_id", "path": "$nb_path"},
            True),
    _Action("notebook", "downloadPreviewResults", (1.5, 1, 0, 0, 0), _NB, True),
    _Action("notebook", "downloadLargeResults", (0.15, 0.1, 0, 0, 0), _NB, True),
    _Action("notebook", "deleteNotebook", (0.2, 0.2, 0, 0, 0),
            {"notebookId": "$nb_id", "notebookName": "split_part($nb_path, '/', -1)", "path": "$nb_path"},
            True),
    _Action("workspace", "workspaceExport", (1.2, 0.8, 0, 0, 0.6),
            {"workspaceExportFormat": _EXPORT_FORMAT, "notebookFullPath": "$nb_path"}, True),
    _Action("workspace", "getRoleAssignment", (10, 8, 0, 0, 2), {}, True),
    _Action("workspace", "mkdirs", (0.5, 0.3, 0, 0, 1), {"path": "'/Users/' || email || '/projects'"}, True),
    # Unity Catalog
    _Action("unityCatalog", "getTable", (80, 60, 150, 120, 5), {"full_name_arg": "$tbl", **_UC},
            True, 0.006, "uc"),
    _Action("unityCatalog", "getCatalog", (15, 15, 20, 20, 5), {"name_arg": _CATALOG, **_UC},
            True, 0.002, "uc"),
    _Action("unityCatalog", "listSchemas", (15, 15, 10, 20, 5), {"catalog_name": _CATALOG, **_UC},
            True, 0.002, "uc"),
    _Action("unityCatalog", "listTables", (10, 10, 5, 10, 0),
            {"catalog_name": _CATALOG, "schema_name": _SCHEMA, **_UC}, True, 0.002, "uc"),
    _Action("unityCatalog", "generateTemporaryTableCredential", (40, 30, 120, 80, 0),
            {"table_id": "$tid", "table_full_name": "$tbl",
             "operation": "CASE WHEN kind = 2 AND rb(r, 50, 2, 4) = 0 THEN 'READ_WRITE' ELSE 'READ' END"},
            False, 0.006, "uc"),
    _Action("unityCatalog", "getPermissions", (2, 4, 0, 0, 5),
            {"securable_type": "'table'", "securable_full_name": "$tbl"}, True, 0.003, "uc"),
    _Action("unityCatalog", "updatePermissions", (0.2, 2, 0, 0, 3),
            {"securable_type": "'table'", "securable_full_name": "$tbl",
             "changes": f"'[{{\"principal\":\"' || {_GROUP} || '\",\"add\":[\"SELECT\"]}}]'"},
            True, 0.01, "uc"),
    _Action("unityCatalog", "createTable", (0.5, 0.5, 3, 4, 0),
            {"name": "split_part($tbl, '.', 3) || '_v' || rb(r, 50, 4, 9)::VARCHAR", "catalog_name": _CATALOG,
             "schema_name": _SCHEMA, "table_type": "'MANAGED'", "data_source_format": "'DELTA'"},
            False, 0.004, "uc"),
    _Action("unityCatalog", "deleteTable", (0.03, 0.08, 0.2, 0.1, 0), {"full_name_arg": "$tbl", **_UC},
            False, 0.01, "uc"),
    # Databricks SQL
    _Action("databrickssql", "executeStatement", (30, 20, 5, 100, 0),
            {"warehouseId": "$wh", "statementId": "md5(r::VARCHAR)::UUID::VARCHAR"}, True, 0.004,
            sql_client=True),
    _Action("databrickssql", "downloadQueryResult", (1.2, 0.8, 0, 0.3, 0),
            {"queryResultId": "md5((r >> 7)::VARCHAR)::UUID::VARCHAR",
             "fileType": "list_extract(['csv', 'csv', 'xlsx', 'arrows'], 1 + rb(r, 40, 2, 4))",
             "queryId": "md5((r >> 9)::VARCHAR)::UUID::VARCHAR"}, True),
    # jobs
    _Action("jobs", "runNow", (4, 3, 10, 0, 5), {"job_id": "$job"}, False, 0.004,
            result="'{\"run_id\":' || (100000000000000 + rb(r, 0, 24, 10000000) * 97)::VARCHAR || '}'"),
    _Action("jobs", "submitRun", (1, 1, 15, 0, 0), {"run_name": "'adhoc-run-' || " + _N}, False, 0.004),
    _Action("jobs", "create", (0.4, 0.4, 0.2, 0, 6), {"name": "'job-' || $job", "job_type": "'NORMAL'"}),
    _Action("jobs", "reset", (0.3, 0.3, 0, 0, 5), {"job_id": "$job"}),
    _Action("jobs", "delete", (0.03, 0.05, 0, 0, 0.4), {"job_id": "$job"}),
    # clusters
    _Action("clusters", "start", (3, 2, 2, 0, 0), {"cluster_id": "$cl"}, True, 0.006, "cluster"),
    _Action("clusters", "create", (0.25, 0.4, 1.5, 0, 1),
            {"cluster_name": "'adhoc-' || rb(r, 40, 10, 999)::VARCHAR", "spark_version": "'15.4.x-scala2.12'",
             "node_type_id": "list_extract(['i3.xlarge', 'm5d.xlarge', 'r5d.xlarge'], 1 + rb(r, 50, 2, 3))",
             "num_workers": _WORKERS, "autotermination_minutes": "'60'"}, True, 0.01, "cluster"),
    _Action("clusters", "edit", (0.4, 1, 0, 0, 3),
            {"cluster_id": "$cl", "num_workers": _WORKERS,
             "autotermination_minutes": "list_extract(['30', '60', '120'], 1 + rb(r, 50, 2, 3))"},
            True, 0.01, "cluster"),
    _Action("clusters", "delete", (0.4, 0.5, 2, 0, 0.5), {"cluster_id": "$cl"}, True, 0.004, "cluster"),
    _Action("clusters", "permanentDelete", (0.01, 0.06, 0, 0, 0.2), {"cluster_id": "$cl"}, True, 0.01,
            "cluster"),
    _Action("clusters", "resize", (0.3, 0.3, 0.5, 0, 0), {"cluster_id": "$cl", "num_workers": _WORKERS},
            True, 0.01, "cluster"),
    _Action("clusters", "restart", (0.5, 0.5, 0, 0, 0), {"cluster_id": "$cl"}, True, 0.004, "cluster"),
    _Action("clusterLibraries", "installLibraries", (0.4, 0.4, 0.3, 0, 0.5),
            {"clusterId": "$cl", "libraries": _LIBRARY}, True, 0.01),
    # secrets
    _Action("secrets", "getSecret", (1.2, 0.8, 10, 2, 1.5), {"scope": "$scope", "key": "$key"},
            False, 0.004, "secret"),
    _Action("secrets", "listSecrets", (0.4, 0.5, 0.4, 0, 1), {"scope": "$scope"}, False, 0.004, "secret"),
    _Action("secrets", "listScopes", (0.4, 0.5, 0.1, 0, 1), {}),
    _Action("secrets", "putSecret", (0.05, 0.3, 0, 0, 1), {"scope": "$scope", "key": "$key"}, False, 0.01),
    # repos
    _Action("repos", "pull", (3, 2, 0, 0, 0.5), {"id": _REPO}, True),
    _Action("repos", "commitAndPush", (1, 0.5, 0, 0, 0), {"id": _REPO, "checkSensitiveToken": "'true'"},
            True),
    _Action("repos", "createRepo", (0.1, 0.1, 0, 0, 0.5),
            {"url": "'https://github.com/' || split_part(split_part(email, '@', 2), '.', 1) || '/analytics-' "
                    "|| rb(r, 40, 4, 12)::VARCHAR || '.git'",
             "provider": "'gitHub'", "path": "'/Repos/' || email || '/analytics'"}, True),
    # DBFS and files
    _Action("dbfs", "getStatus", (6, 4, 10, 0, 1), {"path": "'dbfs:/FileStore/' || split_part($tbl, '.', 3)"},
            False, 0.01, "notfound"),
    _Action("dbfs", "list", (4, 3, 5, 0, 0), {"path": f"'dbfs:/mnt/' || {_SCHEMA}"}),
    _Action("dbfs", "read", (3, 2, 5, 0, 0),
            {"path": "'dbfs:/FileStore/' || split_part($tbl, '.', 3) || '.csv'", "offset": "'0'",
             "length": "'1048576'"}, False, 0.005, "notfound"),
    _Action("dbfs", "put", (0.5, 0.5, 3, 0, 0),
            {"path": "'dbfs:/FileStore/uploads/' || " + _N + " || '.csv'", "overwrite": "'true'"}, True),
    _Action("filesystem", "filesGet", (3, 2, 6, 0, 0),
            {"path": _VOLUME + " || '/part-' || rb(r, 40, 8, 200)::VARCHAR || '.parquet'",
             "transferredSize": "rb(r, 20, 20, 50000000)::VARCHAR"}, False, 0.005, "notfound"),
    _Action("filesystem", "filesPut", (0.5, 0.5, 4, 0, 0),
            {"path": _VOLUME + " || '/landing/' || " + _N + " || '.json'",
             "transferredSize": "rb(r, 20, 20, 5000000)::VARCHAR"}),
    _Action("filesystem", "directoriesGet", (1, 1, 1, 0, 0), {"path": _VOLUME}),
    # legacy table ACLs
    _Action("sqlPermissions", "showPermissions", (0.3, 1, 0, 0, 0), {"securable": "'TABLE `' || $tbl || '`'"},
            True),
    _Action("sqlPermissions", "grantPermission", (0.02, 0.4, 0, 0, 0.4),
            {"securable": "'TABLE `' || $tbl || '`'", "permission": "'SELECT'", "principal": _GROUP}, True),
)

_TABLE_DENIED = "'PERMISSION_DENIED: User does not have SELECT on Table ''' || $tbl || '''.'"
_SCHEMA_DENIED = ("'PERMISSION_DENIED: User does not have USE SCHEMA on Schema ''' || "
                  "split_part($tbl, '.', 1) || '.' || split_part($tbl, '.', 2) || '''.'")
ERRORS: dict[str, tuple[tuple[int, str], ...]] = {
    "generic": ((404, "'RESOURCE_DOES_NOT_EXIST: The requested resource does not exist.'"),
                (400, "'INVALID_PARAMETER_VALUE: Invalid request parameters.'"),
                (500, "'INTERNAL_ERROR: An internal error occurred. Please retry.'")),
    "login": ((401, "'Invalid username or password.'"),),
    "saml": ((401, "'SAML authentication failed: the assertion is invalid or expired.'"),),
    "token": ((401, "'Invalid access token.'"), (401, "'Token has expired.'")),
    "uc": ((403, _TABLE_DENIED), (403, _SCHEMA_DENIED),
           (404, "'TABLE_DOES_NOT_EXIST: Table ''' || $tbl || ''' does not exist.'")),
    "secret": ((403, "'PERMISSION_DENIED: User does not have READ permission on scope ' || $scope"),
               (404, "'RESOURCE_DOES_NOT_EXIST: Secret does not exist with scope: ' || $scope "
                     "|| ' and key: ' || $key")),
    "cluster": ((400, "'INVALID_STATE: Cluster ' || $cl || ' is in unexpected state Terminating.'"),
                (403, "'PERMISSION_DENIED: User does not have permission to manage cluster ' || $cl"),
                (404, "'RESOURCE_DOES_NOT_EXIST: Cluster ' || $cl || ' does not exist'")),
    "notfound": ((404, "'RESOURCE_DOES_NOT_EXIST: No file or directory exists on path.'"),),
}
ERROR_PROFILES = tuple(ERRORS)


def _register_action_slots(con: duckdb.DuckDBPyConnection) -> None:
    rows: dict[str, list[Any]] = {"aid": [], "service": [], "action": [], "browser": [], "sql_client": [],
                                  "fail_rate": [], "err_profile": [], "account_level": []}
    counts: list[int] = []
    for kind in range(5):  # slots kind * ACTION_SLOTS ... (kind + 1) * ACTION_SLOTS - 1 belong to one kind
        for aid, count in enumerate(_allocate([a.weights[kind] for a in ACTIONS], ACTION_SLOTS)):
            a = ACTIONS[aid]
            values = {"aid": aid, "service": a.service, "action": a.action, "browser": a.browser,
                      "sql_client": a.sql_client, "fail_rate": int(a.fail * 100_000),
                      "err_profile": ERROR_PROFILES.index(a.errors), "account_level": a.account_level}
            for key, value in values.items():
                rows[key].append(value)
            counts.append(count)
    _register_slots(con, "_g_aslot", rows, counts)


def _map_sql(params: dict[str, str]) -> str:
    if not params:
        return "MAP {}::MAP(VARCHAR, VARCHAR)"
    fields = ", ".join(f"{_q(k)}: ({v})::VARCHAR" for k, v in params.items())
    return f"CAST({{{fields}}} AS MAP(VARCHAR, VARCHAR))"


def _params_case() -> str:
    branches = "\n      ".join(f"WHEN {i} THEN {_map_sql(a.params)}" for i, a in enumerate(ACTIONS))
    return f"CASE aid\n      {branches}\n    END"


def _result_case() -> str:
    branches = " ".join(f"WHEN {i} THEN {a.result}" for i, a in enumerate(ACTIONS) if a.result)
    return f"CASE aid {branches} ELSE NULL END"


def _error_case(part: int) -> str:
    branches = []
    for index, name in enumerate(ERROR_PROFILES):
        options = ERRORS[name]
        inner = " ".join(f"WHEN {j} THEN {o[part]}" for j, o in enumerate(options))
        branches.append(f"WHEN {index} THEN CASE rb(h3, 40, 8, {len(options)}) {inner} END")
    return "CASE err_profile " + " ".join(branches) + " END"


def _padded(values: Sequence[Any], n: int) -> list[Any]:
    return [values[i % len(values)] for i in range(n)] if values else ["unknown"] * n


def _audit_vars(e: _Estate) -> dict[str, str]:
    """SQL for the $variables of action parameters: list lookups by integer columns computed for every row.

    They are substituted into the CASE branches, so strings are only built for the rows that use them.
    """
    n_ws = len(e.workspaces)
    clusters = [c for w in range(n_ws) for c in _padded([c.cluster_id for c in e.ws_clusters(w)
                                                        if c.source != "JOB"], 64)]
    warehouses = [x for i in range(n_ws) for x in _padded([w.warehouse_id for w in e.ws_warehouses(i)], 8)]
    jobs = _sql_list(str(j) for ws_jobs in e.jobs for j in ws_jobs)
    notebooks = _sql_list(NOTEBOOK_NAMES)
    rng = e.rng("audit-vars")
    exec_times = sorted(f"{rng.lognormvariate(0.3, 1.4):.3f}" for _ in range(1024))
    rng.shuffle(exec_times)
    return {
        "tbl": f"{_sql_list(e.tables)}[ti]",
        "tid": f"{_sql_list(_uuid('table', e.seed, t) for t in e.tables)}[ti]",
        "cl": f"{_sql_list(clusters)}[1 + wsi * 64 + rb(r, 16, 6, 64)]",
        "job": f"{jobs}[1 + wsi * 64 + (job_base + rb(r, 22, 3, 6)) % 64]",
        "wh": f"{_sql_list(warehouses)}[1 + wsi * 8 + rb(r, 28, 3, 8)]",
        "scope": f"{_sql_list(s for s, _ in e.secrets)}[si]",
        "key": f"{_sql_list(k for _, k in e.secrets)}[si]",
        "nb_path": f"(CASE WHEN kind >= 2 THEN '/Workspace/Shared/pipelines/' || {notebooks}[1 + pid % 16] "
                   f"ELSE '/Users/' || email || '/' || {notebooks}[1 + nbi] END)",
        "nb_id": "(1000000000000000 + pid * 1000 + nbi)::VARCHAR",
        "exec_time": f"{_sql_list(exec_times)}[1 + rb(r, 40, 10, 1024)]",
    }


def _expand(sql: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], sql)


BATCH_ROWS = 1 << 22


def _insert_in_batches(con: duckdb.DuckDBPyConnection, n: int, sql: Callable[[str], str]) -> None:
    """Run an INSERT ... SELECT over row numbers 0..n-1 in batches.

    The row numbers come from a materialized table rather than range(), so DuckDB scans them in parallel;
    batches bound the memory. Every value derives from the absolute row number, so batching changes nothing.
    """
    size = min(n, BATCH_ROWS)
    con.execute(f"CREATE OR REPLACE TEMP TABLE _g_range AS SELECT range AS j FROM range({size})")
    for offset in range(0, n, BATCH_ROWS):
        size = min(BATCH_ROWS, n - offset)
        con.execute(sql(f"(SELECT j + {offset} AS i FROM _g_range WHERE j < {size})"))


def _insert_bulk_audit(con: duckdb.DuckDBPyConnection, e: _Estate, n: int) -> None:
    """The bulk of access.audit: one INSERT ... SELECT per batch of row numbers."""
    template = _audit_sql(e, n)
    _insert_in_batches(con, n, lambda rows: template.replace("__ROWS__", rows))


def _audit_sql(e: _Estate, n: int) -> str:
    k = e.key
    day_hex = [_hex(8, "day", e.seed, d) for d in range(e.days)]
    variables = _audit_vars(e)
    sql = f"""
INSERT INTO access.audit BY NAME
{_who_and_when_sql(e, n, "_g_pslot", 0)}, acted AS (
  SELECT t.*, a.* EXCLUDE (slot), h4 AS r,
    CASE WHEN rb(h3, 24, 4, 16) < 14 THEN home_ws ELSE alt_ws END AS wsi
  FROM timed t JOIN _g_aslot a ON a.slot = t.kind * {ACTION_SLOTS} + rb(t.h1, 40, 14, {ACTION_SLOTS})
), final AS (
  SELECT t.*, ipx.ip, rb(h3, 0, 17, 100000) < fail_rate AS failed,
    epoch_ms({e.start_ms} + t_ms) AS ts,
    {_sql_list(e.workspaces)}[wsi + 1] AS ws,
    1 + (tbl_base + rb(r, 0, 16, tbl_span)) % {len(e.tables)} AS ti,
    1 + (sec_base + rb(r, 31, 2, sec_span)) % {len(e.secrets)} AS si,
    rb(r, 33, 4, 16) AS nbi,
    '{e.account_id}' AS account_id, '{e.metastore_id}' AS metastore_id
  FROM acted t JOIN _g_ipslot ipx ON ipx.ipkey = t.pid * 16 + rb(t.h3, 28, 4, 16)
)
SELECT
  account_id,
  CASE WHEN account_level THEN '0' ELSE ws END AS workspace_id,
  '2.0' AS version,
  ts AS event_time,
  CAST(ts AS DATE) AS event_date,
  ip AS source_ip_address,
  CASE WHEN kind >= 2 THEN api_ua
       WHEN sql_client AND sql_ua IS NOT NULL THEN sql_ua
       WHEN browser OR sql_client THEN browser_ua
       ELSE api_ua END AS user_agent,
  CASE WHEN kind <= 1 AND (browser OR (sql_client AND sql_ua IS NULL))
       THEN sess || {_sql_list(day_hex)}[1 + t_ms // {DAY_MS}] END AS session_id,
  {{'email': email, 'subject_name': subject}} AS user_identity,
  service AS service_name,
  action AS action_name,
  md5_number(i::VARCHAR || ':r:{k}')::UUID::VARCHAR AS request_id,
  {_params_case()} AS request_params,
  {{'status_code': CASE WHEN failed THEN {_error_case(0)} ELSE 200 END::INTEGER,
    'error_message': CASE WHEN failed THEN {_error_case(1)} END,
    'result': CASE WHEN NOT failed THEN {_result_case()} END}} AS response,
  CASE WHEN account_level THEN 'ACCOUNT_LEVEL' ELSE 'WORKSPACE_LEVEL' END AS audit_level,
  md5_number(i::VARCHAR || ':e:{k}')::UUID::VARCHAR AS event_id,
  CASE WHEN kind >= 2 AND service IN ('jobs', 'notebook')
       THEN {{'run_by': email, 'run_as': email, 'acting_resource': NULL::VARCHAR}} END AS identity_metadata
FROM final
"""
    return _expand(sql, variables)


# --- query history ------------------------------------------------------------------------------------------

STATEMENT_MIX = {  # per executor profile: (statement_type, share per mille) in cumulative order
    "human": (("SELECT", 860), ("DESCRIBE", 30), ("SHOW", 30), ("CREATE", 30), ("INSERT", 20), ("UPDATE", 10),
              ("DELETE", 5), ("EXPLAIN", 15)),
    "dbt": (("SELECT", 350), ("CREATE", 300), ("MERGE", 250), ("INSERT", 100)),
    "bi": (("SELECT", 1000),),
    "etl": (("INSERT", 300), ("MERGE", 250), ("SELECT", 300), ("OPTIMIZE", 100), ("COPY", 50)),
}
QUERY_ERRORS = (
    "[TABLE_OR_VIEW_NOT_FOUND] The table or view cannot be found. Verify the spelling and correctness of the "
    "schema and catalog.",
    "[PARSE_SYNTAX_ERROR] Syntax error at or near 'FROM'.",
    "[DIVIDE_BY_ZERO] Division by zero. Use `try_divide` to tolerate divisor being 0 and return NULL "
    "instead.",
    "[UNRESOLVED_COLUMN.WITH_SUGGESTION] A column, variable, or function parameter with name `amount_usd` "
    "cannot be resolved.",
    "Query exceeded the configured statement timeout of 2 hours.",
    "[CAST_INVALID_INPUT] The value 'N/A' of the type \"STRING\" cannot be cast to \"DECIMAL(18,2)\" because "
    "it is malformed.",
    "[INSUFFICIENT_PERMISSIONS] Insufficient privileges: User does not have permission SELECT on table.",
)
DIMENSIONS = ("region", "country", "channel", "product_category", "status", "segment", "store_id")


def _profile(p: _Principal) -> str:
    if p.kind == "sp_sql":
        return "dbt" if p.client[0] == "dbt" else "bi"
    return "etl" if p.kind == "sp_etl" else "human"


def _register_query_slots(con: duckdb.DuckDBPyConnection, e: _Estate) -> None:
    executors = [p for p in e.principals if p.sql_user]
    _register_people_slots(con, "_g_qslot", e, executors, boost_sp=3.0)


def _mix_case(column: str) -> str:
    branches = []
    for profile, mix in STATEMENT_MIX.items():
        inner, acc = [], 0
        for stype, share in mix:
            acc += share
            inner.append(f"WHEN u_type < {acc} THEN '{stype}'")
        branches.append(f"WHEN '{profile}' THEN CASE {' '.join(inner)} ELSE 'SELECT' END")
    return f"CASE {column} {' '.join(branches)} END"


def _statement_text_sql(tables: str) -> str:
    t = f"{tables}[ti]"
    t2 = f"{tables}[ti2]"
    dim = f"{_sql_list(DIMENSIONS)}[1 + rb(h6, 40, 3, {len(DIMENSIONS)})]"
    day = _day_expr()
    return f"""CASE stype
      WHEN 'SELECT' THEN CASE variant
        WHEN 0 THEN 'SELECT * FROM ' || {t} || ' WHERE updated_at >= ''' || {day} || ''' LIMIT 1000'
        WHEN 1 THEN 'SELECT ' || {dim} || ', count(*) AS n, sum(amount) AS total FROM ' || {t}
                    || ' WHERE event_date >= date_sub(current_date(), 30) GROUP BY ' || {dim}
                    || ' ORDER BY total DESC'
        WHEN 2 THEN 'SELECT a.*, b.status FROM ' || {t} || ' a JOIN ' || {t2}
                    || ' b ON a.id = b.id WHERE a.updated_at > ''' || {day} || ''''
        ELSE 'SELECT date_trunc(''day'', created_at) AS day, count(DISTINCT customer_id) AS customers FROM '
             || {t} || ' GROUP BY 1 ORDER BY 1' END
      WHEN 'DESCRIBE' THEN 'DESCRIBE TABLE EXTENDED ' || {t}
      WHEN 'SHOW' THEN 'SHOW TABLES IN ' || split_part({t}, '.', 1) || '.' || split_part({t}, '.', 2)
      WHEN 'EXPLAIN' THEN 'EXPLAIN SELECT * FROM ' || {t} || ' WHERE id = 42'
      WHEN 'CREATE' THEN 'CREATE OR REPLACE TABLE ' || {t} || '_tmp AS SELECT * FROM ' || {t2}
                         || ' WHERE ingest_date >= ''' || {day} || ''''
      WHEN 'INSERT' THEN 'INSERT INTO ' || {t} || ' SELECT * FROM ' || {t2}
                         || ' WHERE ingest_date = ''' || {day} || ''''
      WHEN 'MERGE' THEN 'MERGE INTO ' || {t} || ' AS tgt USING ' || {t2} || ' AS src ON tgt.id = src.id '
                        || 'WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *'
      WHEN 'UPDATE' THEN 'UPDATE ' || {t} || ' SET status = ''closed'' WHERE updated_at < ''' || {day} || ''''
      WHEN 'DELETE' THEN 'DELETE FROM ' || {t} || ' WHERE ingest_date < ''' || {day} || ''''
      WHEN 'OPTIMIZE' THEN 'OPTIMIZE ' || {t} || ' ZORDER BY (id)'
      ELSE 'COPY INTO ' || {t} || ' FROM ''/Volumes/' || replace({t}, '.', '/')
           || '/landing/'' FILEFORMAT = JSON'
    END"""


def _normal(h: str, shift: int) -> str:
    """A standard normal deviate from 52 bits of a hash (Box-Muller)."""
    u1 = f"((rb({h}, {shift}, 26, 67108864) + 0.5) / 67108864.0)"
    u2 = f"(rb({h}, {shift + 26}, 26, 67108864) / 67108864.0)"
    return f"(sqrt(-2.0 * ln({u1})) * cos(2.0 * pi() * {u2}))"


def _insert_bulk_queries(con: duckdb.DuckDBPyConnection, e: _Estate, n: int) -> None:
    """The bulk of query.history: statements with lognormal durations and per-user workload profiles."""
    _register_query_slots(con, e)
    template = _queries_sql(e, n)
    _insert_in_batches(con, n, lambda rows: template.replace("__ROWS__", rows))


def _queries_sql(e: _Estate, n: int) -> str:
    k = e.key + 100
    day_hex = [_hex(8, "qday", e.seed, d) for d in range(e.days)]
    tables = _sql_list(e.tables)
    n_tables = len(e.tables)
    errors = _sql_list(QUERY_ERRORS)
    return f"""
INSERT INTO query.history BY NAME
{_who_and_when_sql(e, n, "_g_qslot", 100)}, base AS (
  SELECT *, hash(i, {k + 5}) AS h6, hash(i, {k + 6}) AS h7, hash(i, {k + 7}) AS h8,
    {_normal('h3', 0)} AS z1,
    {_normal('h4', 0)} AS z2,
    rb(h3, 52, 10, 1000) AS u_status,
    rb(h4, 52, 10, 1000) AS u_type,
    rb(h6, 0, 10, 1000) AS u_cache,
    rb(h6, 10, 10, 1000) AS u_wait,
    rb(h6, 20, 2, 4) AS variant,
    1 + (tbl_base + rb(h8, 41, 16, tbl_span)) % {n_tables} AS ti,
    1 + (tbl_base + rb(h6, 24, 16, tbl_span) + 1) % {n_tables} AS ti2
  FROM timed
), typed AS (
  SELECT *, epoch_ms({e.start_ms} + t_ms) AS ts, {_mix_case('profile')} AS stype FROM base
), shaped AS (
  SELECT *,
    u_cache < 70 AND stype = 'SELECT' AND profile IN ('human', 'bi') AS cached,
    CASE WHEN u_status < 32 THEN 'FAILED' WHEN u_status < 48 THEN 'CANCELED' ELSE 'FINISHED' END AS status,
    greatest(3.0, exp(dur_mu + 1.15 * z1)
      * CASE stype WHEN 'DESCRIBE' THEN 0.04 WHEN 'SHOW' THEN 0.04 WHEN 'EXPLAIN' THEN 0.08
                   WHEN 'OPTIMIZE' THEN 8.0 WHEN 'MERGE' THEN 3.0 WHEN 'CREATE' THEN 2.5
                   WHEN 'INSERT' THEN 2.0 ELSE 1.0 END) AS exec_raw,
    CASE WHEN stype IN ('DESCRIBE', 'SHOW', 'EXPLAIN') THEN 0.0
         ELSE least(4.0e12, exp(bytes_mu + 0.8 * z1 + 0.7 * z2)) END AS bytes_raw
  FROM typed
), measured AS (
  SELECT *,
    CASE WHEN cached THEN 0 WHEN status = 'FAILED' THEN round(exec_raw * 0.35)
         WHEN status = 'CANCELED' THEN round(exec_raw * 1.6) ELSE round(exec_raw) END::BIGINT AS exec_ms,
    CASE WHEN cached THEN 4 + rb(h7, 52, 6, 40)
         ELSE greatest(6, round(exec_raw * (0.03 + rb(h8, 0, 8, 200) / 1000.0))) END::BIGINT AS compile_ms,
    CASE WHEN NOT cached AND u_wait < 22 THEN CASE WHEN serverless THEN 2000 + rb(h7, 34, 14, 8000)
                                                   ELSE 60000 + rb(h7, 34, 18, 240000) END
         ELSE 0 END::BIGINT AS wait_compute_ms,
    CASE WHEN NOT cached AND u_wait BETWEEN 22 AND 55 THEN round(exp(8.3 + 1.1 * z2)) ELSE 0 END::BIGINT
      AS wait_capacity_ms,
    CASE WHEN cached OR status = 'FAILED' THEN 0 ELSE round(bytes_raw) END::BIGINT AS read_bytes
  FROM shaped
), sized AS (
  SELECT *,
    wait_compute_ms + wait_capacity_ms + compile_ms + exec_ms AS total_ms,
    (read_bytes // (40 + rb(h6, 48, 4, 16) * 20))::BIGINT AS read_rows,
    CASE WHEN read_bytes = 0 THEN 0
         ELSE 1 + read_bytes // (48000000 + rb(h8, 35, 6, 64) * 1000000) END::BIGINT AS read_files
  FROM measured
), outcome AS (
  SELECT *,
    CASE WHEN status <> 'FINISHED' THEN 0
         WHEN stype = 'DESCRIBE' THEN 12 + rb(h7, 0, 6, 48)
         WHEN stype IN ('SHOW', 'EXPLAIN') THEN 3 + rb(h7, 0, 7, 120)
         WHEN stype IN ('INSERT', 'MERGE', 'CREATE', 'UPDATE', 'DELETE', 'OPTIMIZE', 'COPY') THEN 1
         WHEN cached THEN 10 + rb(h7, 0, 10, 1000)
         WHEN variant = 0 THEN least(1000, read_rows)
         WHEN variant = 1 THEN least(read_rows, 5 + rb(h7, 0, 8, 200))
         WHEN variant = 2 THEN least(read_rows // 20, 2000000)
         ELSE least(read_rows, 30 + rb(h7, 0, 9, 335)) END::BIGINT AS produced_rows,
    CASE WHEN stype IN ('INSERT', 'MERGE', 'CREATE', 'COPY', 'OPTIMIZE', 'UPDATE', 'DELETE')
              AND status = 'FINISHED' THEN (read_bytes * (0.1 + rb(h8, 8, 8, 80) / 100.0))::BIGINT
         ELSE 0 END AS written_bytes
  FROM sized
)
SELECT
  '{e.account_id}' AS account_id,
  {_sql_list(e.workspaces)}[home_ws + 1] AS workspace_id,
  md5_number(i::VARCHAR || ':q:{k}')::UUID::VARCHAR AS statement_id,
  email AS executed_by,
  qsess || {_sql_list(day_hex)}[1 + t_ms // {DAY_MS}] AS session_id,
  status AS execution_status,
  CASE WHEN client_app = 'Databricks Notebook'
       THEN {{'type': 'SERVERLESS_COMPUTE', 'cluster_id': NULL::VARCHAR, 'warehouse_id': NULL::VARCHAR}}
       ELSE {{'type': 'WAREHOUSE', 'cluster_id': NULL::VARCHAR,
              'warehouse_id': CASE WHEN rb(h6, 22, 2, 4) = 0 THEN wh2 ELSE wh1 END}} END AS compute,
  user_id AS executed_by_user_id,
  {_statement_text_sql(tables)} AS statement_text,
  stype AS statement_type,
  CASE WHEN status = 'FAILED' THEN {errors}[1 + rb(h8, 16, 8, {len(QUERY_ERRORS)})] END AS error_message,
  client_app AS client_application,
  client_driver,
  total_ms AS total_duration_ms,
  wait_compute_ms AS waiting_for_compute_duration_ms,
  wait_capacity_ms AS waiting_at_capacity_duration_ms,
  exec_ms AS execution_duration_ms,
  compile_ms AS compilation_duration_ms,
  (exec_ms * least(512.0, greatest(1.0, exp(1.6 + 0.9 * z2))))::BIGINT AS total_task_duration_ms,
  (3 + produced_rows // 2000)::BIGINT AS result_fetch_duration_ms,
  ts AS start_time,
  ts + to_milliseconds(total_ms) AS end_time,
  ts + to_milliseconds(total_ms + 3 + produced_rows // 2000) AS update_time,
  CASE WHEN read_files = 0 THEN 0 ELSE 1 + read_files // 12 END AS read_partitions,
  (read_files * rb(h6, 52, 6, 50) / 10)::BIGINT AS pruned_files,
  read_files,
  read_rows,
  produced_rows,
  read_bytes,
  CASE WHEN read_bytes = 0 THEN 0 ELSE rb(h8, 28, 7, 101) END::TINYINT AS read_io_cache_percent,
  cached AS from_result_cache,
  CASE WHEN exec_ms > 60000 AND rb(h3, 62, 2, 4) = 0 THEN read_bytes // 3 ELSE 0 END AS spilled_local_bytes,
  written_bytes,
  CASE WHEN variant IN (1, 2, 3) AND stype = 'SELECT' THEN (read_bytes * rb(h8, 24, 4, 16) / 32)::BIGINT
       WHEN stype IN ('MERGE', 'CREATE', 'OPTIMIZE') THEN read_bytes // 4 ELSE 0 END AS shuffle_read_bytes,
  {{'job_info': CASE WHEN profile = 'etl' THEN {{'job_id': job,
                  'job_run_id': (100000000000000 + rb(h2, 0, 24, 10000000) * 79)::VARCHAR,
                  'job_task_run_id': (100000000000000 + rb(h7, 10, 24, 10000000) * 83 + 1)::VARCHAR}} END,
    'legacy_dashboard_id': NULL::VARCHAR,
    'dashboard_id': CASE WHEN client_app = 'Databricks Dashboards' OR profile = 'bi'
                         THEN md5('dash:' || (pid * 8 + variant)::VARCHAR)::UUID::VARCHAR END,
    'alert_id': NULL::VARCHAR,
    'notebook_id': CASE WHEN client_app = 'Databricks Notebook'
                        THEN (1000000000000000 + pid * 1000 + variant)::VARCHAR END,
    'sql_query_id': CASE WHEN client_app = 'Databricks SQL Editor' AND variant < 2
                         THEN md5('query:' || (pid * 8 + variant)::VARCHAR)::UUID::VARCHAR END,
    'genie_space_id': NULL::VARCHAR,
    'pipeline_info': NULL::STRUCT(pipeline_id VARCHAR, update_id VARCHAR)}} AS query_source,
  user_id AS executed_as_user_id,
  email AS executed_as,
  CASE WHEN written_bytes > 0 THEN read_rows // 3 ELSE 0 END AS written_rows,
  CASE WHEN written_bytes > 0 THEN 1 + written_bytes // 128000000 ELSE 0 END AS written_files,
  CASE WHEN cached THEN md5_number((i // 7)::VARCHAR || ':qc:{k}')::UUID::VARCHAR END
    AS cache_origin_statement_id,
  CASE WHEN client_app = 'Databricks Dashboards' OR profile = 'bi'
       THEN {{'named_parameters': MAP {{'date_from': {_day_expr()}}}, 'pos_parameters': NULL::VARCHAR[],
              'truncated': false}} END AS query_parameters,
  CASE WHEN profile = 'dbt' THEN MAP {{'dbt_model': split_part({tables}[ti], '.', 3),
                                       'dbt_target': 'prod'}} END AS query_tags
FROM outcome
"""


def _day_expr() -> str:
    return "strftime(ts - INTERVAL (rb(h6, 43, 5, 30)) DAY, '%Y-%m-%d')"


# --- rows built in Python: emitter --------------------------------------------------------------------------

ATTACK_UAS = ("python-requests/2.31.0", "curl/8.5.0", "Go-http-client/1.1", "python-httpx/0.27.0",
              "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
              "Safari/537.36")
IP_BLOCKED = "Source IP address is blocked by the workspace IP access list."
LOGIN_ERRORS = {"login": "Invalid username or password.",
                "samlLogin": "SAML authentication failed: the assertion is invalid or expired.",
                "oidcBrowserLogin": "Invalid username or password.", "tokenLogin": "Invalid access token."}


def _ms(t: dt.datetime) -> dt.datetime:
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


class _Emitter:
    """Builds rows for the Python-made parts of the estate, with deterministic ids."""

    def __init__(self, estate: _Estate) -> None:
        self.e = estate
        self.rows = _Rows()
        self._n = 0

    def next_id(self, tag: str) -> str:
        self._n += 1
        return _uuid(tag, self.e.seed, self._n)

    def audit(
        self,
        ts: dt.datetime,
        who: _Principal | str | None,
        service: str,
        action: str,
        params: dict[str, str],
        *,
        ip: str | None = None,
        ua: str | None = None,
        status: int = 200,
        error: str | None = None,
        ws: int | None = None,
        session: str | None = None,
        account_level: bool = False,
        result: str | None = None,
    ) -> dict[str, Any]:
        e = self.e
        if isinstance(who, _Principal):
            email, subject = who.email, who.subject
            ip = ip or who.ips[0]
            ua = ua or (who.browser_ua if session and who.browser_ua else who.api_ua)
            ws = who.home_ws if ws is None else ws
        else:
            email, subject = who, None
        row = {
            "account_id": e.account_id,
            "workspace_id": "0" if account_level else e.workspaces[ws or 0],
            "version": "2.0",
            "event_time": _ms(ts),
            "event_date": ts.date(),
            "source_ip_address": ip,
            "user_agent": ua,
            "session_id": session,
            "user_identity": {"email": email, "subject_name": subject},
            "service_name": service,
            "action_name": action,
            "request_id": self.next_id("req"),
            "request_params": params,
            "response": {"status_code": status, "error_message": error, "result": result},
            "audit_level": "ACCOUNT_LEVEL" if account_level else "WORKSPACE_LEVEL",
            "event_id": self.next_id("evt"),
            "identity_metadata": None,
        }
        self.rows.add(AUDIT, [row])
        return row

    def session(self, who: _Principal, day: dt.datetime) -> str:
        return _hex(32, "py-session", self.e.seed, who.email, day.date())


def _scenario_start(
    rng: random.Random, e: _Estate, hour_local: float, tz: int = 0, span_hours: float = 2.0
) -> dt.datetime:
    """A moment in the last week at the given local hour, early enough for the scenario to end in time."""
    first = max(0, e.days - SCENARIO_DAYS)
    day = e.start + dt.timedelta(days=rng.randint(first, e.days - 1))
    t = day + dt.timedelta(hours=hour_local - tz, seconds=rng.randrange(1800))
    return min(max(t, e.start + dt.timedelta(days=first)), e.end - dt.timedelta(hours=span_hours))


def _in_window(e: _Estate, t: dt.datetime) -> dt.datetime:
    return min(max(t, e.start), e.end - dt.timedelta(seconds=1))


def _public_ip(rng: random.Random, e: _Estate, prefixes: Sequence[str] = HOSTING_PREFIXES) -> str:
    while True:
        ip = _ip(rng, prefixes)
        if ip not in e.known_ips:
            e.known_ips.add(ip)
            return ip


# --- clusters, usage and network ----------------------------------------------------------------------------


def _aws_account(e: _Estate) -> str:
    return f"{int(e.account_id[:8], 16) % 10**12:012d}"


def _cluster_row(e: _Estate, c: _Cluster, when: dt.datetime, state: dict[str, Any]) -> dict[str, Any]:
    return {
        "account_id": e.account_id, "workspace_id": e.workspaces[c.ws], "cluster_id": c.cluster_id,
        "cluster_name": c.name, "owned_by": c.owner, "create_time": _ms(c.created),
        "delete_time": _ms(c.deleted) if c.deleted and c.deleted <= when else None,
        "driver_node_type": c.driver, "worker_node_type": c.worker,
        "worker_count": None if c.autoscale else state["workers"],
        "min_autoscale_workers": c.autoscale[0] if c.autoscale else None,
        "max_autoscale_workers": state["max_workers"] if c.autoscale else None,
        "auto_termination_minutes": state["autoterm"], "enable_elastic_disk": c.source != "JOB",
        "tags": state["tags"], "cluster_source": c.source, "init_scripts": list(c.init_scripts),
        "aws_attributes": {
            "instance_profile_arn": None if c.source == "JOB" else
            f"arn:aws:iam::{_aws_account(e)}:instance-profile/databricks-{c.tags['team']}",
            "zone_id": "auto" if c.source != "UI" else "us-east-1a", "first_on_demand": 1,
            "availability": "SPOT_WITH_FALLBACK" if c.source == "JOB" else "ON_DEMAND",
            "spot_bid_price_percent": 100, "ebs_volume_count": 0,
        },
        "azure_attributes": None, "gcp_attributes": None, "driver_instance_pool_id": None,
        "worker_instance_pool_id": None, "dbr_version": state["dbr"], "change_time": _ms(when),
        "change_date": when.date(), "data_security_mode": c.mode, "policy_id": c.policy_id,
    }


def _add_clusters(em: _Emitter) -> None:
    """Slowly-changing cluster history: a row at creation, one per configuration change, one at deletion."""
    e = em.e
    for c in e.clusters:
        state = {"workers": c.workers, "max_workers": c.autoscale[1] if c.autoscale else None,
                 "autoterm": c.autoterm, "tags": dict(c.tags), "dbr": c.dbr}
        rows = [_cluster_row(e, c, c.created, state)]
        for when, change in c.changes:
            if when <= c.created or (c.deleted and when >= c.deleted):
                continue
            before = dict(state)
            if "workers" in change:
                state["workers" if not c.autoscale else "max_workers"] = change["workers"]
            if "autoterm" in change and state["autoterm"] not in (None, 0):
                state["autoterm"] = change["autoterm"]
            if "dbr" in change and "gpu" not in state["dbr"] and state["dbr"] < change["dbr"]:
                state["dbr"] = change["dbr"]
            if "tags_extra" in change:
                state["tags"] = {**state["tags"], **change["tags_extra"]}
            if state != before:
                rows.append(_cluster_row(e, c, when, state))
        if c.deleted and e.start <= c.deleted < e.end:
            rows.append(_cluster_row(e, c, c.deleted, state))
        em.rows.add(CLUSTERS, rows)


WAREHOUSE_DBU = {"Small": 12.0, "Medium": 24.0, "Large": 40.0, "X-Large": 80.0}


def _usage_row(
    e: _Estate, day: dt.datetime, sku: str, quantity: float, product: str, *, cluster: _Cluster | None = None,
    warehouse: _Warehouse | None = None, photon: bool = False,
) -> dict[str, Any]:
    ws = cluster.ws if cluster else warehouse.ws  # type: ignore[union-attr]
    owner = cluster.owner if cluster else None
    metadata: dict[str, Any] = {"cluster_id": cluster.cluster_id if cluster else None,
                                "warehouse_id": warehouse.warehouse_id if warehouse else None,
                                "node_type": cluster.worker if cluster else None}
    if cluster and cluster.source == "JOB":
        metadata["job_id"] = cluster.name.split("-")[1]
        metadata["job_run_id"] = cluster.name.split("-")[3]
    tags = dict(cluster.tags) if cluster else {"warehouse": warehouse.name}  # type: ignore[union-attr]
    return {
        "record_id": _uuid("usage", e.seed, sku, metadata["cluster_id"], metadata["warehouse_id"], day),
        "account_id": e.account_id, "workspace_id": e.workspaces[ws], "sku_name": sku, "cloud": "AWS",
        "usage_start_time": day, "usage_end_time": day + dt.timedelta(days=1), "usage_date": day.date(),
        "custom_tags": tags, "usage_unit": "DBU", "usage_quantity": Decimal(f"{quantity:.6f}"),
        "usage_metadata": metadata,
        "identity_metadata": {"run_as": owner if cluster and cluster.source == "JOB" else None,
                              "created_by": owner, "owned_by": owner, "run_by": None},
        "record_type": "ORIGINAL", "ingestion_date": (day + dt.timedelta(days=1)).date(),
        "billing_origin_product": product,
        "product_features": {"jobs_tier": "PREMIUM" if product == "JOBS" else None,
                             "sql_tier": "PRO" if product == "SQL" else None,
                             "is_serverless": bool(warehouse and warehouse.serverless), "is_photon": photon},
        "usage_type": "COMPUTE_TIME",
    }


def _add_usage(em: _Emitter) -> None:
    """Daily DBU records per cluster and per warehouse while they exist."""
    e = em.e
    rng = e.rng("usage")
    rows = []
    for d in range(e.days):
        day = e.start + dt.timedelta(days=d)
        weekday = day.weekday() < 5
        for c in e.clusters:
            hours = _cluster_hours(rng, c, day, weekday)
            if hours <= 0:
                continue
            workers = c.workers or (sum(c.autoscale) / 2 if c.autoscale else 1)
            dbus = hours * DBU_PER_HOUR.get(c.worker, 1.0) * (1 + workers)
            photon = "photon" in c.dbr
            product = "JOBS" if c.source == "JOB" else "ALL_PURPOSE"
            sku = f"PREMIUM_{product}_COMPUTE" + ("_(PHOTON)" if photon else "")
            rows.append(_usage_row(e, day, sku, dbus, product, cluster=c, photon=photon))
        for w in e.warehouses:
            hours = rng.uniform(5, 12) if weekday else rng.uniform(0, 1.5)
            if hours < 0.2:
                continue
            sku = ("PREMIUM_SERVERLESS_SQL_COMPUTE_US_EAST_N_VIRGINIA" if w.serverless
                   else "PREMIUM_SQL_PRO_COMPUTE")
            rows.append(_usage_row(e, day, sku, hours * WAREHOUSE_DBU[w.size] * rng.uniform(0.3, 0.9), "SQL",
                                   warehouse=w, photon=True))
    em.rows.add(USAGE, rows)


def _cluster_hours(rng: random.Random, c: _Cluster, day: dt.datetime, weekday: bool) -> float:
    day_end = day + dt.timedelta(days=1)
    if c.created >= day_end or (c.deleted and c.deleted <= day):
        return 0.0
    if c.source == "JOB":
        end = c.deleted or day_end
        return max(0.0, (min(end, day_end) - max(c.created, day)).total_seconds() / 3600)
    if not c.autoterm:  # never auto-terminates: once started it runs around the clock
        start = max(c.created, day)
        return (min(c.deleted or day_end, day_end) - start).total_seconds() / 3600
    if rng.random() > (0.8 if weekday else 0.08):
        return 0.0
    return rng.uniform(0.5, 9.0)


def _add_network(em: _Emitter) -> None:
    """Background denied egress (package repos, SaaS APIs, the odd unknown domain) and denied ingress."""
    e = em.e
    rng = e.rng("network")
    humans = e.humans()
    for d in range(e.days):
        day = e.start + dt.timedelta(days=d)
        for _ in range(rng.randint(2, 9)):
            domain = _weighted(rng, EGRESS_BENIGN)
            source = _weighted(rng, [("General Compute", 5), ("DBSQL", 2), ("MLServing", 1), ("ML Build", 1),
                                     ("Apps", 1)])
            _egress(em, day + dt.timedelta(seconds=rng.randrange(86400)), rng.randrange(len(e.workspaces)),
                    domain, rng, source=source)
        if rng.random() < 0.3:
            bucket = rng.choice(("partner-exports", "vendor-drop", "legacy-datalake", "datasets-mirror"))
            _egress(em, day + dt.timedelta(seconds=rng.randrange(86400)), rng.randrange(len(e.workspaces)),
                    f"{bucket}.s3.amazonaws.com", rng, source="General Compute", storage=True)
        for _ in range(rng.randint(0, 3)):
            t = day + dt.timedelta(seconds=rng.randrange(86400))
            if rng.random() < 0.5:
                who = rng.choice(humans)
                _ingress(em, t, who.home_ws, who.ips[-3], who.email, "/api/2.0/clusters/list",
                         "DRY_RUN_DENIAL", "corp-and-vpn-only")
            else:
                _ingress(em, t, rng.randrange(len(e.workspaces)), _public_ip(rng, e, HOSTING_PREFIXES), None,
                         rng.choice(("/login.html", "/api/2.0/token/list", "/api/2.0/preview/scim/v2/Users")),
                         "DENIED", None)


def _egress(
    em: _Emitter, t: dt.datetime, ws: int, destination: str, rng: random.Random, *, source: str,
    storage: bool = False,
) -> None:
    """One denied egress event: blocked DNS lookups answer NXDOMAIN (rcode 3), storage paths are rejected."""
    e = em.e
    row = {
        "account_id": e.account_id, "workspace_id": e.workspaces[ws], "event_id": em.next_id("egress"),
        "destination_type": "STORAGE" if storage else "DNS",
        "destination": f"s3://{destination.split('.')[0]}" if storage else destination,
        "dns_event": None if storage else {"domain_name": destination, "rcode": 3, "rdata": []},
        "storage_event": {"hostname": f"s3://{destination.split('.')[0]}",
                          "path": f"/exports/{t:%Y/%m/%d}/part-{rng.randrange(10000):05d}.parquet",
                          "rejection_reason": "storage-bucket-path-denied"} if storage else None,
        "event_time": _ms(t), "access_type": "DROP", "network_source_type": source,
    }
    em.rows.add(OUTBOUND, [row])


def _ingress(
    em: _Emitter, t: dt.datetime, ws: int, ip: str, who: str | None, path: str, outcome: str, rule: str | None
) -> None:
    e = em.e
    em.rows.add(INBOUND, [{
        "account_id": e.account_id, "workspace_id": e.workspaces[ws], "event_id": em.next_id("ingress"),
        "event_time": _ms(t), "source": {"ip": ip}, "authenticated_as": who, "request_path": path,
        "rule_label": rule, "policy_outcome": outcome,
    }])


# --- benign noise: near-misses that detections must not flag -----------------------------------------------


def _work_time(rng: random.Random, e: _Estate, who: _Principal, *, first_day: int = 0) -> dt.datetime:
    """A weekday working-hours moment for a person, anywhere in [first_day, days)."""
    for _ in range(20):
        day = e.start + dt.timedelta(days=rng.randint(first_day, e.days - 1))
        if day.weekday() < 5:
            break
    t = day + dt.timedelta(hours=rng.uniform(9, 17.5) - who.tz)
    return _in_window(e, t)


def _add_benign_noise(em: _Emitter) -> None:
    """Near-misses: ordinary behaviour that looks a little like the attacks, spread over the whole range."""
    rng = em.e.rng("noise")
    _noise_mistyped_passwords(em, rng)
    _noise_group_changes(em, rng)
    _noise_scheduled_secret_reads(em, rng)
    _noise_ip_access_denied(em, rng)
    _noise_admin_settings(em, rng)
    _noise_cluster_cleanup(em, rng)
    _noise_permission_denials(em, rng)


def _noise_mistyped_passwords(em: _Emitter, rng: random.Random) -> None:
    e = em.e
    humans = e.humans()
    for who in rng.sample(humans, min(len(humans), max(3, len(humans) // 12))):
        for _ in range(rng.randint(1, 3)):
            t = _work_time(rng, e, who)
            session = em.session(who, t)
            ip = who.ips[rng.randrange(16)]
            for _ in range(rng.choice((1, 2, 2))):
                em.audit(t, who, "accounts", "login", {"user": who.email}, ip=ip, ua=who.browser_ua,
                         status=401, error=LOGIN_ERRORS["login"])
                t += dt.timedelta(seconds=rng.uniform(6, 40))
            em.audit(t, who, "accounts", "login", {"user": who.email}, ip=ip, ua=who.browser_ua,
                     session=session)


def _group_params(group: str, target: _Principal, e: _Estate) -> dict[str, str]:
    return {"targetGroupId": str(10**14 + GROUPS.index(group) if group in GROUPS else 10**14 + 99),
            "endpoint": "adminConsole", "targetUserId": target.user_id, "targetGroupName": group,
            "targetUserName": target.email}


def _noise_group_changes(em: _Emitter, rng: random.Random) -> None:
    e = em.e
    admins, humans = e.humans(admin=True), e.humans()
    for _ in range(max(2, e.days // 3)):
        admin, target = rng.choice(admins), rng.choice(humans)
        action = "addPrincipalToGroup" if rng.random() < 0.7 else "removePrincipalFromGroup"
        t = _work_time(rng, e, admin)
        em.audit(t, admin, "accounts", action, _group_params(rng.choice(GROUPS), target, e),
                 ua=admin.browser_ua, session=em.session(admin, t))
    if e.days >= 10 and len(admins) >= 2:  # a legitimate admin rotation, well before the scenario week
        admin, target = rng.sample(admins, 2)
        t = _work_time(rng, e, admin)
        t = min(t, e.start + dt.timedelta(days=max(1, e.days - SCENARIO_DAYS - 2)))
        em.audit(t, admin, "accounts", "addPrincipalToGroup", _group_params("admins", target, e),
                 ua=admin.browser_ua, session=em.session(admin, t))


def _noise_scheduled_secret_reads(em: _Emitter, rng: random.Random) -> None:
    """One pipeline service principal reads the same three secrets at the start of every run."""
    e = em.e
    sp = _near_miss_sp(e)
    if sp is None:
        return
    period = max(sp.period_s, 3600)
    scope = e.secrets[sp.sec_base][0]
    keys = [k for s, k in e.secrets if s == scope][:3]
    t = e.start + dt.timedelta(seconds=sp.offset_s % period)
    while t < e.end:
        for j, key in enumerate(keys):
            em.audit(t + dt.timedelta(seconds=2 + j * 0.4), sp, "secrets", "getSecret",
                     {"scope": scope, "key": key})
        t += dt.timedelta(seconds=period)


def _near_miss_sp(e: _Estate) -> _Principal | None:
    sps = e.sps("sp_etl") or e.sps()
    return sps[0] if sps else None


def _noise_ip_access_denied(em: _Emitter, rng: random.Random) -> None:
    e = em.e
    humans = e.humans()
    for d in range(e.days):
        day = e.start + dt.timedelta(days=d)
        for _ in range(rng.choice((0, 0, 1, 1, 2))):  # internet background noise: single blocked requests
            em.audit(day + dt.timedelta(seconds=rng.randrange(86400)), None, "accounts", "IpAccessDenied",
                     {"path": rng.choice(("/login.html", "/api/2.0/clusters/list", "/")), "userName": ""},
                     ip=_public_ip(rng, e), ua=rng.choice(ATTACK_UAS), status=403,
                     ws=rng.randrange(len(e.workspaces)), error=IP_BLOCKED)
        if rng.random() < 0.15 and day.weekday() < 5:  # someone forgot the VPN, then connects through it
            who = rng.choice(humans)
            t = _in_window(e, day + dt.timedelta(hours=rng.uniform(8, 10) - who.tz))
            em.audit(t, who, "accounts", "IpAccessDenied", {"path": "/login.html", "userName": who.email},
                     ip=who.ips[-3], ua=who.browser_ua, status=403,
                     error=IP_BLOCKED)
            em.audit(t + dt.timedelta(minutes=rng.uniform(2, 9)), who, "accounts", "samlLogin",
                     {"user": who.email}, ip=who.ips[8], ua=who.browser_ua, session=em.session(who, t))


def _noise_admin_settings(em: _Emitter, rng: random.Random) -> None:
    e = em.e
    admins = e.humans(admin=True)
    settings = (("enableResultsDownloading", "true"), ("maxTokenLifetimeDays", "90"),
                ("enableTokensConfig", "true"), ("enableDbfsFileBrowser", "false"),
                ("enableWebTerminal", "true"), ("enableNotebookTableClipboard", "true"))
    for _ in range(max(1, e.days // 10)):
        admin = rng.choice(admins)
        key, value = rng.choice(settings)
        t = _work_time(rng, e, admin)
        em.audit(t, admin, "workspace", "workspaceConfEdit",
                 {"workspaceConfKeys": key, "workspaceConfValues": value}, ua=admin.browser_ua,
                 session=em.session(admin, t))
    admin = rng.choice(admins)
    t = _work_time(rng, e, admin)
    em.audit(t, admin, "ipAccessLists", "createIpAccessList",
             {"ipAccessListId": _uuid("ipacl", e.seed, "partner"), "label": "partner-sftp",
              "listType": "ALLOW", "ipAddresses": f"[\"{_public_ip(rng, e, CLOUD_PREFIXES)}/32\"]"},
             ua=admin.browser_ua, session=em.session(admin, t))
    infra = e.sps("sp_infra")
    if infra:  # terraform re-applies the managed global init script: a change, but an expected one
        sp = infra[0]
        t = _in_window(e, e.start + dt.timedelta(days=e.days // 3, hours=rng.uniform(9, 17)))
        em.audit(t, sp, "globalInitScripts", "update",
                 {"script_id": _hex(16, "gis", e.seed).upper(), "name": "install-corp-certs", "position": "0",
                  "script-SHA256": _hex(64, "gis-body", e.seed), "enabled": "true"})


def _noise_cluster_cleanup(em: _Emitter, rng: random.Random) -> None:
    e = em.e
    admin = rng.choice(e.humans(admin=True))
    for _ in range(2):
        t = _work_time(rng, e, admin)
        for c in rng.sample(e.clusters, min(3, len(e.clusters))):
            em.audit(t, admin, "clusters", "delete", {"cluster_id": c.cluster_id}, ws=c.ws,
                     ua=admin.browser_ua, session=em.session(admin, t))
            t += dt.timedelta(seconds=rng.uniform(20, 120))


def _noise_permission_denials(em: _Emitter, rng: random.Random) -> None:
    e = em.e
    humans = e.humans(admin=False) or e.humans()
    for who in rng.sample(humans, min(len(humans), max(2, len(humans) // 20))):
        t = _work_time(rng, e, who)
        table = rng.choice(e.tables)
        for _ in range(rng.randint(2, 4)):
            em.audit(t, who, "unityCatalog", "getTable",
                     {"full_name_arg": table, "workspace_id": e.workspaces[who.home_ws],
                      "metastore_id": e.metastore_id},
                     ua=who.browser_ua, session=em.session(who, t), status=403,
                     error=f"PERMISSION_DENIED: User does not have SELECT on Table '{table}'.")
            t += dt.timedelta(seconds=rng.uniform(5, 90))


# --- labelled scenarios -------------------------------------------------------------------------------------


class _Picker:
    """Chooses scenario actors among ordinary principals, preferring ones not used by another scenario."""

    def __init__(self, e: _Estate, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[int] = set()
        near_miss = _near_miss_sp(e)
        if near_miss is not None:
            self.used.add(near_miss.pid)

    def pick(self, *pools: list[_Principal]) -> _Principal:
        for pool in pools:
            fresh = [p for p in pool if p.pid not in self.used]
            if fresh:
                chosen = self.rng.choice(fresh)
                self.used.add(chosen.pid)
                return chosen
        pool = next(p for p in pools if p)
        return self.rng.choice(pool)


@dataclass
class _Scene:
    """What a scenario function needs: the emitter, its own RNG, the shared picker, its event times."""

    em: _Emitter
    rng: random.Random
    picker: _Picker
    times: list[dt.datetime] = field(default_factory=list)

    @property
    def e(self) -> _Estate:
        return self.em.e

    def audit(self, ts: dt.datetime, who: _Principal | str | None, service: str, action: str,
              params: dict[str, str], **kw: Any) -> None:
        self.times.append(ts)
        self.em.audit(ts, who, service, action, params, **kw)

    def label(self, category: str, principal: str, ws: int | str, description: str) -> ScenarioLabel:
        workspace = ws if isinstance(ws, str) else self.e.workspaces[ws]
        return ScenarioLabel(scenario_id="", category=category, principal=principal, workspace_id=workspace,
                             first_seen=_ms(min(self.times)), last_seen=_ms(max(self.times)),
                             description=description)


def _add_scenarios(em: _Emitter) -> list[ScenarioLabel]:
    """Weave the labelled attacks into the estate; every actor is an ordinary generated principal."""
    e = em.e
    picker = _Picker(e, e.rng("scenario-actors"))
    labels: list[ScenarioLabel] = []
    for func in SCENARIOS:
        scene = _Scene(em=em, rng=e.rng(f"scenario:{func.__name__}"), picker=picker)
        for label in func(scene):
            scenario_id = f"S{len(labels) + 1:02d}-{label.category}"
            labels.append(label.model_copy(update={"scenario_id": scenario_id}))
    return labels


def _non_admins(e: _Estate) -> list[_Principal]:
    return e.humans(admin=False)


def _sc_brute_force_user(s: _Scene) -> list[ScenarioLabel]:
    e, rng = s.e, s.rng
    victim = s.picker.pick(_non_admins(e), e.humans())
    ip, ua = _public_ip(rng, e), rng.choice(ATTACK_UAS)
    t = _scenario_start(rng, e, rng.choice((1.0, 2.5, 3.0, 23.0)), victim.tz)
    attempts = rng.randint(30, 60)
    for j in range(attempts):
        action = rng.choices(("login", "samlLogin", "tokenLogin"), weights=(5, 2, 3))[0]
        params = {"user": victim.email}
        if action == "tokenLogin":
            params = {"tokenId": _hex(64, "guess", e.seed, j), "user": victim.email}
        s.audit(t, victim, "accounts", action, params, ip=ip, ua=ua, status=401, error=LOGIN_ERRORS[action])
        t += dt.timedelta(seconds=rng.uniform(3, 40))
    session = _hex(32, "bf-session", e.seed)
    s.audit(t, victim, "accounts", "login", {"user": victim.email}, ip=ip, ua=ua, session=session)
    for action, params in (("listScopes", {}), ("listSecrets", {"scope": e.secrets[0][0]}),
                           ("getSecret", {"scope": e.secrets[0][0], "key": e.secrets[0][1]})):
        t += dt.timedelta(seconds=rng.uniform(10, 60))
        s.audit(t, victim, "secrets", action, params, ip=ip, ua=ua, session=session)
    return [s.label("brute_force", victim.email, victim.home_ws,
                    f"{attempts} failed logins for one user from one external IP within minutes, then a "
                    "successful login and secret enumeration from the same IP.")]


def _sc_password_spray(s: _Scene) -> list[ScenarioLabel]:
    e, rng = s.e, s.rng
    ip, ua = _public_ip(rng, e), rng.choice(ATTACK_UAS)
    humans = e.humans()
    targets = rng.sample(humans, min(len(humans), rng.randint(25, 40)))
    ws = rng.randrange(len(e.workspaces))
    t = _scenario_start(rng, e, rng.uniform(0, 5))
    for who in targets:
        for _ in range(rng.choice((1, 1, 2))):
            s.audit(t, who.email, "accounts", "login", {"user": who.email}, ip=ip, ua=ua, status=401, ws=ws,
                    error=LOGIN_ERRORS["login"])
            t += dt.timedelta(seconds=rng.uniform(20, 120))
    return [s.label("brute_force", ip, ws, f"Password spraying: one external IP tried logins against "
                    f"{len(targets)} different users.")]


def _sc_token_abuse(s: _Scene) -> list[ScenarioLabel]:
    e, rng = s.e, s.rng
    victim = s.picker.pick(_non_admins(e), e.humans())
    t0 = _scenario_start(rng, e, rng.uniform(10, 20), victim.tz)
    n_ips = rng.randint(12, 20)
    for _ in range(n_ips):
        ip = _public_ip(rng, e, rng.choice((HOSTING_PREFIXES, CLOUD_PREFIXES)))
        ua = rng.choice((*ATTACK_UAS[:3], victim.api_ua))
        t = t0 + dt.timedelta(minutes=rng.uniform(0, 55))
        s.audit(t, victim, "accounts", "tokenLogin", {"tokenId": victim.token_id, "user": victim.email},
                ip=ip, ua=ua)
        for _ in range(rng.randint(1, 4)):
            t += dt.timedelta(seconds=rng.uniform(1, 20))
            table = rng.choice(e.tables)
            service, action, params = rng.choice((
                ("unityCatalog", "listSchemas", {"catalog_name": table.split(".")[0]}),
                ("unityCatalog", "getTable", {"full_name_arg": table}),
                ("secrets", "listScopes", {}),
                ("dbfs", "list", {"path": "dbfs:/mnt/"}),
            ))
            s.audit(t, victim, service, action, params, ip=ip, ua=ua)
    return [s.label("token_abuse", victim.email, victim.home_ws, "One user's personal access token used "
                    f"from {n_ips} distinct public IPs within an hour.")]


def _sc_session_hijacking(s: _Scene) -> list[ScenarioLabel]:
    e, rng = s.e, s.rng
    victim = s.picker.pick(_non_admins(e), e.humans())
    session = _hex(32, "hijacked-session", e.seed)
    t = _scenario_start(rng, e, rng.uniform(8.5, 10.5), victim.tz, span_hours=5)
    home_ip = victim.ips[0]
    s.audit(t, victim, "accounts", "samlLogin", {"user": victim.email}, ip=home_ip, ua=victim.browser_ua,
            session=session)
    for _ in range(rng.randint(6, 12)):
        t += dt.timedelta(minutes=rng.uniform(1, 8))
        params = {"notebookId": str(10**15 + victim.pid * 1000),
                  "executionTime": f"{rng.uniform(0.1, 9):.3f}", "status": "finished",
                  "commandId": str(rng.randrange(10**9))}
        s.audit(t, victim, "notebook", "runCommand", params, ip=home_ip, ua=victim.browser_ua,
                session=session)
    uas = [ua for ua in (_fill_ua(tpl, rng) for tpl in BROWSER_UAS) if ua != victim.browser_ua]
    n_ips = rng.randint(4, 6)
    for j in range(n_ips):
        ip = _public_ip(rng, e, rng.choice((HOSTING_PREFIXES, MOBILE_PREFIXES)))
        ua = uas[j % len(uas)]
        t += dt.timedelta(minutes=rng.uniform(3, 20))
        for _ in range(rng.randint(3, 8)):
            t += dt.timedelta(seconds=rng.uniform(5, 90))
            service, action, params = rng.choice((
                ("workspace", "workspaceExport", {"workspaceExportFormat": "SOURCE",
                                                  "notebookFullPath": f"/Users/{victim.email}/etl_orders"}),
                ("unityCatalog", "getTable", {"full_name_arg": rng.choice(e.tables)}),
                ("secrets", "listSecrets", {"scope": rng.choice(e.secrets)[0]}),
                ("notebook", "attachNotebook", {"path": f"/Users/{victim.email}/exploration",
                                                "clusterId": e.clusters[0].cluster_id, "notebookId": "0"}),
            ))
            s.audit(t, victim, service, action, params, ip=ip, ua=ua, session=session)
    return [s.label("session_hijacking", victim.email, victim.home_ws,
                    f"One browser session id reused from {n_ips} new public IPs with different user agents.")]


def _sc_secrets_access(s: _Scene) -> list[ScenarioLabel]:
    e, rng = s.e, s.rng
    sp = s.picker.pick(e.sps("sp_etl"), e.sps())
    t = _scenario_start(rng, e, rng.uniform(1, 5))
    s.audit(t, sp, "secrets", "listScopes", {})
    reads = 0
    for round_ in range(rng.randint(3, 6)):
        for scope, keys in SECRET_SCOPES.items():
            if round_ == 0:
                t += dt.timedelta(seconds=rng.uniform(0.5, 4))
                s.audit(t, sp, "secrets", "listSecrets", {"scope": scope})
            for key in keys:
                t += dt.timedelta(seconds=rng.uniform(0.3, 6))
                s.audit(t, sp, "secrets", "getSecret", {"scope": scope, "key": key})
                reads += 1
    return [s.label("secrets_access", sp.email, sp.home_ws,
                    f"A service principal read {reads} secrets across {len(SECRET_SCOPES)} scopes in one "
                    "burst, far above its usual handful per run.")]


def _sc_data_exfiltration(s: _Scene) -> list[ScenarioLabel]:
    e, rng = s.e, s.rng
    sql_humans = [p for p in _non_admins(e) if p.sql_user]
    who = s.picker.pick(sql_humans, _non_admins(e), e.humans())
    t = _scenario_start(rng, e, rng.uniform(19, 22), who.tz, span_hours=3.5)
    session = _hex(32, "exfil-session", e.seed)
    sensitive = [x for x in e.tables if x.split(".")[0] in ("finance", "hr")
                 or x.split(".")[1] in SENSITIVE_SCHEMAS] or e.tables
    whs = e.ws_warehouses(who.home_ws)
    for _ in range(rng.randint(15, 25)):
        t += dt.timedelta(seconds=rng.uniform(30, 200))
        _exfil_query(s, who, t, rng.choice(sensitive), rng.choice(whs).warehouse_id, rng)
        for _ in range(rng.randint(1, 3)):
            t += dt.timedelta(seconds=rng.uniform(5, 40))
            s.audit(t, who, "databrickssql", "downloadQueryResult",
                    {"queryResultId": _uuid("qr", e.seed, t), "fileType": rng.choice(("csv", "xlsx")),
                     "queryId": _uuid("q", e.seed, t)}, ua=who.browser_ua, session=session)
    for _ in range(rng.randint(4, 10)):
        t += dt.timedelta(seconds=rng.uniform(10, 60))
        s.audit(t, who, "notebook", "downloadLargeResults",
                {"notebookId": str(10**15 + who.pid * 1000 + rng.randrange(16)),
                 "notebookFullPath": f"/Users/{who.email}/{rng.choice(NOTEBOOK_NAMES)}"},
                ua=who.browser_ua, session=session)
    owners = rng.sample(e.humans(), min(6, len(e.humans())))
    for _ in range(rng.randint(10, 20)):
        t += dt.timedelta(seconds=rng.uniform(3, 30))
        owner = rng.choice(owners)
        s.audit(t, who, "workspace", "workspaceExport",
                {"workspaceExportFormat": rng.choice(("DBC", "HTML", "JUPYTER", "DBC")),
                 "notebookFullPath": f"/Users/{owner.email}/{rng.choice(NOTEBOOK_NAMES)}"},
                ua=who.browser_ua, session=session)
    return [s.label("data_exfiltration", who.email, who.home_ws,
                    "Bulk result downloads and notebook exports in DBC/HTML/JUPYTER formats, with queries "
                    "reading hundreds of gigabytes, far above this user's usual volume.")]


def _exfil_query(
    s: _Scene, who: _Principal, t: dt.datetime, table: str, warehouse: str, rng: random.Random
) -> None:
    e = s.e
    read_bytes = int(rng.uniform(5e10, 4e11))
    exec_ms = int(rng.uniform(90_000, 900_000))
    compile_ms = int(rng.uniform(200, 2500))
    rows = read_bytes // rng.randint(80, 200)
    produced = int(rows * rng.uniform(0.3, 1.0))
    total = exec_ms + compile_ms
    s.times.append(t)
    fetch = produced // 2000
    s.em.rows.add(QUERIES, [{
        "account_id": e.account_id, "workspace_id": e.workspaces[who.home_ws],
        "statement_id": s.em.next_id("statement"), "executed_by": who.email,
        "session_id": _hex(32, "exfil-q", e.seed), "execution_status": "FINISHED",
        "compute": {"type": "WAREHOUSE", "cluster_id": None, "warehouse_id": warehouse},
        "executed_by_user_id": who.user_id, "statement_text": f"SELECT * FROM {table}",
        "statement_type": "SELECT", "error_message": None, "client_application": "Databricks SQL Editor",
        "client_driver": None, "total_duration_ms": total, "waiting_for_compute_duration_ms": 0,
        "waiting_at_capacity_duration_ms": 0, "execution_duration_ms": exec_ms,
        "compilation_duration_ms": compile_ms, "total_task_duration_ms": exec_ms * rng.randint(40, 200),
        "result_fetch_duration_ms": fetch, "start_time": _ms(t),
        "end_time": _ms(t + dt.timedelta(milliseconds=total)),
        "update_time": _ms(t + dt.timedelta(milliseconds=total + fetch)),
        "read_partitions": 1 + read_bytes // 10**9, "pruned_files": 0, "read_files": read_bytes // 64_000_000,
        "read_rows": rows, "produced_rows": produced, "read_bytes": read_bytes, "read_io_cache_percent": 0,
        "from_result_cache": False, "spilled_local_bytes": read_bytes // 5, "written_bytes": 0,
        "shuffle_read_bytes": 0, "query_source": None, "executed_as_user_id": who.user_id,
        "executed_as": who.email, "written_rows": 0, "written_files": 0, "cache_origin_statement_id": None,
        "query_parameters": None, "query_tags": None,
    }])


def _sc_privilege_escalation(s: _Scene) -> list[ScenarioLabel]:
    e, rng = s.e, s.rng
    who = s.picker.pick(_non_admins(e), e.humans())
    t = _scenario_start(rng, e, rng.uniform(18, 21), who.tz)
    session = _hex(32, "privesc-session", e.seed)
    s.audit(t, who, "accounts", "setAdmin", {"endpoint": "adminConsole", "targetUserName": who.email,
                                             "targetUserId": who.user_id}, ua=who.browser_ua, session=session,
            status=403, error="PERMISSION_DENIED: Only workspace admins can change admin status.")
    t += dt.timedelta(minutes=rng.uniform(2, 10))
    s.audit(t, who, "accounts", "addPrincipalToGroup", _group_params("admins", who, e), ua=who.browser_ua,
            session=session)
    t += dt.timedelta(minutes=rng.uniform(1, 5))
    s.audit(t, who, "accounts", "setAdmin", {"endpoint": "adminConsole", "targetUserName": who.email,
                                             "targetUserId": who.user_id}, ua=who.browser_ua, session=session)
    catalog = rng.choice(("finance", "hr", "prod"))
    t += dt.timedelta(minutes=rng.uniform(1, 5))
    s.audit(t, who, "unityCatalog", "updatePermissions",
            {"securable_type": "catalog", "securable_full_name": catalog,
             "changes": f"[{{\"principal\":\"{who.email}\",\"add\":[\"ALL_PRIVILEGES\"]}}]"},
            ua=who.browser_ua, session=session)
    return [s.label("privilege_escalation", who.email, who.home_ws,
                    "A non-admin added themselves to the admins group, made themselves admin and granted "
                    f"themselves ALL PRIVILEGES on catalog {catalog}.")]


def _sc_defense_evasion(s: _Scene) -> list[ScenarioLabel]:
    e, rng = s.e, s.rng
    who = s.picker.pick(e.humans(admin=True), e.humans())
    t = _scenario_start(rng, e, rng.uniform(22, 23.5), who.tz)
    session = _hex(32, "evasion-session", e.seed)
    for key, value in (("enableVerboseAuditLogs", "false"), ("enableIpAccessLists", "false")):
        s.audit(t, who, "workspace", "workspaceConfEdit",
                {"workspaceConfKeys": key, "workspaceConfValues": value}, ua=who.browser_ua, session=session)
        t += dt.timedelta(minutes=rng.uniform(1, 6))
    s.audit(t, who, "ipAccessLists", "deleteIpAccessList",
            {"ipAccessListId": _uuid("ipacl", e.seed, "corp"), "userId": who.user_id}, ua=who.browser_ua,
            session=session)
    return [s.label("defense_evasion", who.email, who.home_ws,
                    "Verbose audit logging and IP access lists switched off, and the corporate IP access "
                    "list deleted, late in the evening.")]


def _sc_supply_chain(s: _Scene) -> list[ScenarioLabel]:
    e, rng = s.e, s.rng
    who = s.picker.pick(e.humans(admin=True), e.humans())
    t = _scenario_start(rng, e, rng.uniform(12, 17), who.tz)
    session = _hex(32, "supply-session", e.seed)
    s.audit(t, who, "globalInitScripts", "create",
            {"name": rng.choice(("env-setup", "monitoring-agent", "pip-config")), "position": "0",
             "script-SHA256": _hex(64, "evil-script", e.seed), "enabled": "true"},
            ua=who.browser_ua, session=session,
            result=f"{{\"script_id\":\"{_hex(16, 'new-gis', e.seed).upper()}\"}}")
    package = rng.choice(("requets==2.31.0", "databricks-helpers-ext==0.3.1", "pandas-profilers==1.0.4"))
    t += dt.timedelta(minutes=rng.uniform(2, 15))
    s.audit(t, who, "clusterLibraries", "installLibraryOnAllClusters",
            {"library": f"{{\"pypi\":{{\"package\":\"{package}\"}}}}"}, ua=who.browser_ua, session=session)
    return [s.label("supply_chain", who.email, who.home_ws,
                    f"A global init script created and the package {package} installed on all clusters.")]


def _sc_ip_access_denied(s: _Scene) -> list[ScenarioLabel]:
    e, rng = s.e, s.rng
    ip, ua = _public_ip(rng, e), rng.choice(ATTACK_UAS)
    ws = rng.randrange(len(e.workspaces))
    t = _scenario_start(rng, e, rng.uniform(0, 24))
    names = [p.email for p in rng.sample(e.humans(), min(5, len(e.humans())))] + [""]
    attempts = rng.randint(40, 100)
    for _ in range(attempts):
        user = rng.choice(names)
        s.audit(t, user or None, "accounts", "IpAccessDenied",
                {"path": rng.choice(("/login.html", "/api/2.0/clusters/list", "/api/2.0/secrets/scopes/list",
                                     "/api/2.0/token/create")), "userName": user},
                ip=ip, ua=ua, status=403, ws=ws, error=IP_BLOCKED)
        t += dt.timedelta(seconds=rng.uniform(5, 30))
    return [s.label("ip_access_denied", ip, ws, f"{attempts} requests from one unknown IP blocked by the IP "
                    "access list within minutes.")]


def _sc_suspicious_network(s: _Scene) -> list[ScenarioLabel]:
    e, rng = s.e, s.rng
    ws = rng.randrange(len(e.workspaces))
    t0 = _scenario_start(rng, e, rng.uniform(1, 20), span_hours=4.5)
    labels = []
    tunnel = f"{_hex(4, 'tun', e.seed)}-{_hex(4, 'tun2', e.seed)}.ngrok-free.app"
    pool = rng.choice(("pool.supportxmr.com", "gulf.moneroocean.stream", "xmr-eu1.nanopool.org"))
    for domain, count, what in (("pastebin.com", rng.randint(8, 15), "a paste site"),
                                (tunnel, rng.randint(10, 20), "a tunnelling service"),
                                (pool, rng.randint(20, 40), "a cryptocurrency mining pool")):
        times = sorted(t0 + dt.timedelta(seconds=rng.uniform(0, 4 * 3600)) for _ in range(count))
        for t in times:
            _egress(s.em, t, ws, domain, rng, source="General Compute")
        scene = _Scene(em=s.em, rng=rng, picker=s.picker, times=times)
        description = f"{count} denied egress attempts from serverless compute to {what} ({domain})."
        labels.append(scene.label("suspicious_network", domain, ws, description))
    return labels


def _new_cluster(
    e: _Estate, rng: random.Random, owner: _Principal, created: dt.datetime, **kw: Any
) -> _Cluster:
    values: dict[str, Any] = {
        "cluster_id": _cluster_id(rng, created), "ws": owner.home_ws, "owner": owner.email, "source": "UI",
        "created": _ms(created), "deleted": None, "policy_id": None, "autoscale": None,
        "tags": {"team": owner.team, "cost_center": f"cc-{rng.randint(1000, 1999)}", "env": "dev"},
    }
    values.update(kw)
    cluster = _Cluster(**values)
    e.clusters.append(cluster)
    return cluster


def _sc_resource_abuse(s: _Scene) -> list[ScenarioLabel]:
    e, rng = s.e, s.rng
    who = s.picker.pick(_non_admins(e), e.humans())
    t = _scenario_start(rng, e, rng.uniform(1, 4), who.tz)
    node = rng.choice(("g5.12xlarge", "g5.48xlarge", "p4d.24xlarge"))
    workers = rng.randint(16, 32)
    name = rng.choice(("llm-finetune-test", "training-big", "exp-gpu-2", "tmp-benchmark"))
    dbr = GPU_DBR_VERSIONS[0]
    cluster = _new_cluster(e, rng, who, t, name=name, dbr=dbr, mode="SINGLE_USER", autoterm=0, driver=node,
                           worker=node, workers=workers)
    session = _hex(32, "gpu-session", e.seed)
    s.audit(t, who, "clusters", "create",
            {"cluster_name": name, "spark_version": dbr, "node_type_id": node, "driver_node_type_id": node,
             "num_workers": str(workers), "autotermination_minutes": "0",
             "data_security_mode": "SINGLE_USER"},
            ua=who.browser_ua, session=session, result=f"{{\"cluster_id\":\"{cluster.cluster_id}\"}}")
    s.audit(t + dt.timedelta(minutes=rng.uniform(1, 4)), who, "clusters", "start",
            {"cluster_id": cluster.cluster_id}, ua=who.browser_ua, session=session)
    return [s.label("resource_abuse", who.email, who.home_ws,
                    f"A {workers}-worker {node} GPU cluster with no auto-termination created in the middle "
                    "of the night.")]


def _sc_destructive(s: _Scene) -> list[ScenarioLabel]:
    e, rng = s.e, s.rng
    who = s.picker.pick(_non_admins(e), e.humans())
    t = _scenario_start(rng, e, rng.uniform(16, 18.5), who.tz, span_hours=1)
    session = _hex(32, "destroy-session", e.seed)
    ws = who.home_ws
    alive = [c for c in e.ws_clusters(ws) if c.source != "JOB" and c.deleted is None and c.created < t]
    for c in rng.sample(alive, min(len(alive), rng.randint(5, 8))):
        t += dt.timedelta(seconds=rng.uniform(5, 40))
        s.audit(t, who, "clusters", "permanentDelete", {"cluster_id": c.cluster_id}, ua=who.browser_ua,
                session=session)
        e.clusters[e.clusters.index(c)] = _replace(c, deleted=_ms(t))
    for job in rng.sample(e.jobs[ws], rng.randint(8, 15)):
        t += dt.timedelta(seconds=rng.uniform(3, 25))
        s.audit(t, who, "jobs", "delete", {"job_id": str(job)}, ua=who.browser_ua, session=session)
    owners = e.humans()
    for _ in range(rng.randint(20, 40)):
        t += dt.timedelta(seconds=rng.uniform(2, 15))
        owner = rng.choice(owners)
        path = f"/Users/{owner.email}/{rng.choice(NOTEBOOK_NAMES)}"
        s.audit(t, who, "notebook", "deleteNotebook",
                {"notebookId": str(10**15 + owner.pid * 1000 + rng.randrange(16)),
                 "notebookName": path.rsplit("/", 1)[1], "path": path}, ua=who.browser_ua, session=session)
    for table in rng.sample(e.tables, rng.randint(10, 20)):
        t += dt.timedelta(seconds=rng.uniform(2, 20))
        params = {"full_name_arg": table, "workspace_id": e.workspaces[ws], "metastore_id": e.metastore_id}
        s.audit(t, who, "unityCatalog", "deleteTable", params, ua=who.browser_ua, session=session)
    return [s.label("destructive_activity", who.email, ws,
                    "Mass deletion in minutes: clusters permanently deleted, jobs, notebooks and Unity "
                    "Catalog tables removed.")]


def _sc_unauthorized_access(s: _Scene) -> list[ScenarioLabel]:
    e, rng = s.e, s.rng
    who = s.picker.pick(_non_admins(e), e.humans())
    t = _scenario_start(rng, e, rng.uniform(10, 16), who.tz)
    session = _hex(32, "uc-denied-session", e.seed)
    tables = rng.sample(e.tables, min(len(e.tables), rng.randint(35, 60)))
    requests = 0
    for table in tables:
        actions = ("getTable", "generateTemporaryTableCredential", "getTable")
        for action in rng.sample(actions, rng.randint(1, 2)):
            t += dt.timedelta(seconds=rng.uniform(2, 30))
            params = ({"full_name_arg": table, "workspace_id": e.workspaces[who.home_ws],
                       "metastore_id": e.metastore_id} if action == "getTable"
                      else {"table_id": _uuid("table", e.seed, table), "table_full_name": table,
                            "operation": "READ"})
            s.audit(t, who, "unityCatalog", action, params, ua=who.browser_ua, session=session, status=403,
                    error=f"PERMISSION_DENIED: User does not have SELECT on Table '{table}'.")
            requests += 1
    return [s.label("unauthorized_data_access", who.email, who.home_ws,
                    f"{requests} Unity Catalog requests denied with PERMISSION_DENIED across {len(tables)} "
                    "tables in half an hour.")]


def _sc_posture(s: _Scene) -> list[ScenarioLabel]:
    e, rng = s.e, s.rng
    who = s.picker.pick(_non_admins(e), e.humans())
    t = _scenario_start(rng, e, rng.uniform(10, 16), who.tz)
    name = f"{who.email.split('.')[0]}-legacy-shared"
    cluster = _new_cluster(e, rng, who, t, name=name, dbr="10.4.x-scala2.12", mode="NONE", autoterm=0,
                           driver="i3.xlarge", worker="i3.xlarge", workers=4)
    s.audit(t, who, "clusters", "create",
            {"cluster_name": name, "spark_version": "10.4.x-scala2.12", "node_type_id": "i3.xlarge",
             "num_workers": "4", "autotermination_minutes": "0", "data_security_mode": "NONE"},
            ua=who.browser_ua, session=_hex(32, "posture-session", e.seed),
            result=f"{{\"cluster_id\":\"{cluster.cluster_id}\"}}")
    return [s.label("posture", who.email, who.home_ws,
                    "An all-purpose cluster with no isolation (data_security_mode NONE), an end-of-support "
                    "runtime (10.4) and no auto-termination.")]


SCENARIOS: tuple[Callable[[_Scene], list[ScenarioLabel]], ...] = (
    _sc_brute_force_user, _sc_password_spray, _sc_token_abuse, _sc_session_hijacking, _sc_secrets_access,
    _sc_data_exfiltration, _sc_privilege_escalation, _sc_defense_evasion, _sc_supply_chain,
    _sc_ip_access_denied, _sc_suspicious_network, _sc_resource_abuse, _sc_destructive,
    _sc_unauthorized_access, _sc_posture,
)

"""Building the estate from seeded RNGs: workspaces, IPs, tables, warehouses and clusters."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from insight_mcp.agents.ingestion.generation.model import _Cluster, _Estate, _Principal, _Warehouse
from insight_mcp.agents.ingestion.generation.principals import _build_principals, _with_warehouse_profile
from insight_mcp.agents.ingestion.generation.values import _hex, _seed_key, _uuid, _weighted
from insight_mcp.agents.ingestion.generation.vocabulary import (
    CATALOGS,
    COMPANY_DOMAINS,
    CORP_PREFIXES,
    DBR_VERSIONS,
    GPU_DBR_VERSIONS,
    GPU_NODE_TYPES,
    NODE_TYPES,
    SCHEMAS,
    SECRET_SCOPES,
    TABLE_NAMES,
)


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

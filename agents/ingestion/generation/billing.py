"""The billing.usage table: daily DBU records per cluster and warehouse."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from typing import Any

from insight_mcp.agents.ingestion.generation.emitter import _Emitter
from insight_mcp.agents.ingestion.generation.model import USAGE, _Cluster, _Estate, _Warehouse
from insight_mcp.agents.ingestion.generation.values import _uuid
from insight_mcp.agents.ingestion.generation.vocabulary import DBU_PER_HOUR

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

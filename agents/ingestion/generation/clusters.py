"""The compute.clusters table: a slowly-changing history row per cluster change."""

from __future__ import annotations

import datetime as dt
from typing import Any

from insight_mcp.agents.ingestion.generation.emitter import _Emitter
from insight_mcp.agents.ingestion.generation.model import CLUSTERS, _Cluster, _Estate
from insight_mcp.agents.ingestion.generation.values import _ms


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

"""Labelled attacks on data and workloads: exfiltration, supply chain, network, compute, posture."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from insight_mcp.agents.ingestion.generation.emitter import _scenario_start
from insight_mcp.agents.ingestion.generation.estate import _cluster_id
from insight_mcp.agents.ingestion.generation.labels import ScenarioLabel
from insight_mcp.agents.ingestion.generation.model import QUERIES, _Cluster, _Estate, _Principal
from insight_mcp.agents.ingestion.generation.network import _egress
from insight_mcp.agents.ingestion.generation.scenes import _non_admins, _Scene
from insight_mcp.agents.ingestion.generation.values import _hex, _ms, _replace, _uuid
from insight_mcp.agents.ingestion.generation.vocabulary import GPU_DBR_VERSIONS, NOTEBOOK_NAMES, SENSITIVE_SCHEMAS


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

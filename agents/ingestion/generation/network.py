"""The outbound and inbound network tables: denied egress and ingress events."""

from __future__ import annotations

import datetime as dt
import random

from insight_mcp.agents.ingestion.generation.emitter import _Emitter, _public_ip
from insight_mcp.agents.ingestion.generation.model import INBOUND, OUTBOUND
from insight_mcp.agents.ingestion.generation.values import _ms, _weighted
from insight_mcp.agents.ingestion.generation.vocabulary import EGRESS_BENIGN, HOSTING_PREFIXES


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

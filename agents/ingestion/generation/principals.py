"""Building the principals: people and service principals with IPs, user agents and workload profiles."""

from __future__ import annotations

import math
import random

from insight_mcp.agents.ingestion.generation.model import _Estate, _Principal
from insight_mcp.agents.ingestion.generation.values import _hex, _ip, _replace, _uuid, _weighted
from insight_mcp.agents.ingestion.generation.vocabulary import (
    BROWSER_UA_WEIGHTS,
    BROWSER_UAS,
    CLOUD_PREFIXES,
    FIRST_NAMES,
    HOME_PREFIXES,
    HUMAN_API_UA_WEIGHTS,
    HUMAN_API_UAS,
    HUMAN_SQL_UA_WEIGHTS,
    HUMAN_SQL_UAS,
    LAST_NAMES,
    MOBILE_PREFIXES,
    SP_NAMES,
    SP_UAS,
    SQL_SP_TOOLS,
    TEAMS,
)


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

"""Benign near-misses: ordinary behaviour that looks a little like the attacks and must not be flagged."""

from __future__ import annotations

import datetime as dt
import random

from insight_mcp.agents.ingestion.generation.emitter import _Emitter, _in_window, _public_ip
from insight_mcp.agents.ingestion.generation.model import SCENARIO_DAYS, _Estate, _Principal
from insight_mcp.agents.ingestion.generation.values import _hex, _uuid
from insight_mcp.agents.ingestion.generation.vocabulary import (
    ATTACK_UAS,
    CLOUD_PREFIXES,
    GROUPS,
    IP_BLOCKED,
    LOGIN_ERRORS,
)


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

"""Labelled attacks on identities and access: brute force, token, session, secrets, privileges."""

from __future__ import annotations

import datetime as dt

from insight_mcp.agents.ingestion.generation.emitter import _public_ip, _scenario_start
from insight_mcp.agents.ingestion.generation.labels import ScenarioLabel
from insight_mcp.agents.ingestion.generation.noise import _group_params
from insight_mcp.agents.ingestion.generation.principals import _fill_ua
from insight_mcp.agents.ingestion.generation.scenes import _non_admins, _Scene
from insight_mcp.agents.ingestion.generation.values import _hex, _uuid
from insight_mcp.agents.ingestion.generation.vocabulary import (
    ATTACK_UAS,
    BROWSER_UAS,
    CLOUD_PREFIXES,
    HOSTING_PREFIXES,
    IP_BLOCKED,
    LOGIN_ERRORS,
    MOBILE_PREFIXES,
    SECRET_SCOPES,
)


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

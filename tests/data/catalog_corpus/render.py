"""Render the catalog corpus: the hand-written cases over a routine background, as a Spark JSON-lines export.

    python tests/data/catalog_corpus/render.py [--out DIR]

Reads `estate.yaml` (who works where, and their routine) and `cases.yaml` (the labelled attacks and benign near
misses, event by event), and writes `audit/part-0000N-<uuid>-c000.json` and `labels.json` beside them (or in
DIR). The output
depends only on those two files: the same input gives the same bytes. Nothing here imports the project, so the
corpus stays independent of the generator and of the rules it is meant to measure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import ipaddress
import json
import random
import sys
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
PARTS = 4
EVENT_KEYS = ("account_id", "workspace_id", "version", "event_time", "event_date", "source_ip_address", "user_agent",
              "session_id", "user_identity", "service_name", "action_name", "request_id", "request_params",
              "response", "audit_level", "event_id", "identity_metadata")
CASE_KEYS = {"t", "who", "ip", "ua", "ws", "act", "params", "status", "error", "result", "session",
             "repeat", "every", "jitter", "ips", "vary", "run_by", "run_as", "ctx", "subject"}
DEFAULT_ERRORS = {
    401: "Invalid username or password",
    403: "PERMISSION_DENIED: User does not have permission to perform this operation.",
}


@dataclass
class Person:
    key: str
    email: str
    site: str
    role: str
    login: str
    level: str
    home: str
    vpn: str
    ua: str
    pat: bool
    pat_ua: str
    token_id: str
    admin_of: list[str] = field(default_factory=list)


@dataclass
class Event:
    t: dt.datetime
    row: dict[str, Any]


def stable_hex(*parts: object, n: int = 32) -> str:
    """A hex id fixed by its parts, so ids do not move when unrelated events are added."""
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:n]


def stable_digits(*parts: object, n: int = 15) -> str:
    return str(int(stable_hex(*parts, n=16), 16))[:n].rjust(n, "1")


class Corpus:
    """The estate, the random source and the events written so far."""

    def __init__(self, estate: dict[str, Any]) -> None:
        self.estate = estate
        self.rng = random.Random(estate["seed"])
        self.domain = estate["domain"]
        self.ws = {k: str(v) for k, v in estate["workspaces"].items()}
        self.uas = estate["user_agents"]
        self.people = {p["key"]: self._person(p) for p in estate["people"]}
        self.sps = estate["service_principals"]
        self.events: list[Event] = []

    def _person(self, p: dict[str, Any]) -> Person:
        email = f"{p['key']}@{self.domain}"
        digest = hashlib.sha256(email.encode()).digest()
        return Person(key=p["key"], email=email, site=p["site"], role=p["role"], login=p["login"], level=p["level"],
                      home=p["home"], vpn=f"10.40.{digest[0] % 200 + 10}.{digest[1] % 250 + 2}",
                      ua=self.uas[p["ua"]], pat=bool(p.get("pat")), pat_ua=self.uas[p.get("pat_ua", "cli")],
                      token_id=hashlib.sha256((email + "|pat").encode()).hexdigest(),
                      admin_of=list(p.get("admin_of", [])))

    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def egress(self, site: str, day: dt.date) -> list[str]:
        ips = self.estate["sites"][site]["egress"]
        for change in self.estate.get("egress_changes", []):
            if change["site"] == site and day >= dt.date.fromisoformat(change["from"]):
                ips = change["egress"]
        return list(ips)

    def cluster_ip(self, ws: str = "prod") -> str:
        net = "10.81" if ws == "dev" else "10.80"
        return f"{net}.{self.rng.randint(16, 23)}.{self.rng.randint(2, 254)}"

    def identity(self, who: str) -> dict[str, str]:
        """user_identity for a person key, a service principal name, or a literal email / application id."""
        if who in self.people:
            return {"email": self.people[who].email}
        if who.startswith("sp:"):
            sp = self.sps[who[3:]]
            return {"email": sp["id"], "subject_name": who[3:]}
        return {"email": who}

    def emit(self, t: dt.datetime, ws: str, service: str, action: str, *, who: str | None = None,
             ip: str | None = None, ua: str | None = None, session: str | None = None,
             params: dict[str, Any] | None = None, status: int = 200, error: str | None = None,
             result: str | None = None, run_by: str | None = None, run_as: str | None = None,
             subject: str | None = None) -> None:
        """One audit row in the export's layout: absent keys are NULL columns, as Spark writes them."""
        workspace = self.ws.get(ws, ws)
        row: dict[str, Any] = {
            "account_id": self.estate["account_id"], "workspace_id": workspace, "version": "2.0",
            "event_date": t.date().isoformat(),
        }
        if ip:
            row["source_ip_address"] = ip
        if ua:
            row["user_agent"] = ua
        if session:
            row["session_id"] = session
        if who:
            row["user_identity"] = self.identity(who)
            if subject:
                row["user_identity"]["subject_name"] = subject
        row["service_name"] = service
        row["action_name"] = action
        row["request_params"] = {str(k): str(v) for k, v in (params or {}).items()}
        response: dict[str, Any] = {"status_code": int(status)}
        if error:
            response["error_message"] = error
        if result:
            response["result"] = result
        row["response"] = response
        row["audit_level"] = "ACCOUNT_LEVEL" if workspace == "0" else "WORKSPACE_LEVEL"
        if run_by or run_as:
            row["identity_metadata"] = {k: v for k, v in (("run_by", run_by), ("run_as", run_as)) if v}
        self.events.append(Event(t, row))


# --- the routine background -----------------------------------------------------------------------------------


def local(day: dt.date, hour: float, tz: int) -> dt.datetime:
    return dt.datetime.combine(day, dt.time()) + dt.timedelta(hours=hour - tz)


def background(c: Corpus) -> None:
    """Every person's working day and every service principal's schedule, over the export's days."""
    start = dt.date.fromisoformat(c.estate["start"])
    end = dt.date.fromisoformat(c.estate["end"])
    day = start
    while day <= end:
        for person in c.people.values():
            person_day(c, person, day)
        service_day(c, day)
        day += dt.timedelta(days=1)
    for when in c.estate["break_glass"]["tests"]:
        t = dt.datetime.fromisoformat(when)
        ip = c.egress("hh", t.date())[0]
        who = c.estate["break_glass"]["email"]
        session = stable_hex("breakglass", when)
        c.emit(t, "account", "accounts", "login", who=who, ip=ip, ua=c.uas["chrome_mac"], session=session,
               params={"user": who})
        c.emit(t + dt.timedelta(seconds=41), "account", "accountsManager", "listWorkspaces", who=who, ip=ip,
               ua=c.uas["chrome_mac"], session=session)
        c.emit(t + dt.timedelta(minutes=3, seconds=12), "account", "accounts", "logout", who=who, ip=ip,
               ua=c.uas["chrome_mac"], session=session, params={"user": who})


def person_day(c: Corpus, p: Person, day: dt.date) -> None:
    rng = c.rng
    weekday = day.weekday() < 5
    if weekday:
        chance = 0.97 if p.level == "heavy" else 0.7
    else:
        chance = 0.1 if p.level == "heavy" else 0.03
    if rng.random() > chance:
        return
    tz = c.estate["sites"][p.site]["tz"]
    roll = rng.random()
    office_share = 0.45 if day.weekday() in (0, 4) else 0.6
    if not weekday or roll > office_share + 0.3:
        ip = p.vpn if weekday and roll > 0.9 else p.home
    elif roll > office_share:
        ip = p.home
    else:
        ip = rng.choice(c.egress(p.site, day))
    ws = "dev" if p.role == "engineer" and rng.random() < 0.3 else ("fin" if p.role == "finance" else "prod")
    t = local(day, rng.uniform(7.3, 9.6), tz)
    session = c.uid().replace("-", "")
    login = "login" if p.login == "password" else "oidcBrowserLogin"
    if p.login == "password" and rng.random() < 0.05:  # one mistyped password, then straight in
        c.emit(t - dt.timedelta(seconds=rng.uniform(8, 40)), ws, "accounts", login, who=p.key, ip=ip, ua=p.ua,
               params={"user": p.email}, status=401, error=DEFAULT_ERRORS[401])
    c.emit(t, ws, "accounts", login, who=p.key, ip=ip, ua=p.ua, session=session, params={"user": p.email})
    actions = rng.randint(5, 9) if p.level == "heavy" and weekday else rng.randint(1, 3)
    end = local(day, rng.uniform(16.5, 18.2), tz)
    span = (end - t).total_seconds()
    moments = sorted(t + dt.timedelta(seconds=rng.uniform(60, span)) for _ in range(actions))
    for when in moments:
        routine_action(c, p, when, ws, ip, session, day)
    if rng.random() < 0.5:
        c.emit(end + dt.timedelta(minutes=rng.uniform(1, 20)), ws, "accounts", "logout", who=p.key, ip=ip,
               ua=p.ua, session=session, params={"user": p.email})
    if p.role == "finance" and day.day == 31 and day.month == 8:  # month-end close: a handful of xlsx downloads
        for i in range(rng.randint(4, 8)):
            download(c, p, end - dt.timedelta(minutes=30 * (i + 1)), ws, ip, session, "xlsx")


def routine_action(c: Corpus, p: Person, t: dt.datetime, ws: str, ip: str, session: str, day: dt.date) -> None:
    rng = c.rng
    roll = rng.random()
    if p.role in ("analyst", "finance", "business"):
        if roll < 0.55:
            sql(c, p, t, ws, ip, p.ua)
        elif roll < 0.8:
            uc_read(c, p, t, ws, ip)
        elif roll < 0.9:
            notebook(c, p, t, ws, ip, session)
        elif roll < 0.95:
            download(c, p, t, ws, ip, session, rng.choice(("csv", "csv", "xlsx")))
        elif roll < 0.975:
            uc_denied(c, p, t, ws, ip)
        else:
            sql(c, p, t, ws, ip, p.ua, failed=True)
        return
    if p.pat and roll < 0.18:
        cli(c, p, t, ws, ip)
    elif roll < 0.55:
        notebook(c, p, t, ws, ip, session)
    elif roll < 0.72:
        sql(c, p, t, ws, ip, p.ua)
    elif roll < 0.86:
        uc_read(c, p, t, ws, ip)
    elif roll < 0.92:
        c.emit(t, ws, "clusters", rng.choice(("start", "start", "edit", "restart")), who=p.key, ip=ip, ua=p.ua,
               session=session, params={"cluster_id": personal_cluster(p, ws)})
    elif roll < 0.96 and p.role in ("engineer", "admin"):
        scope = f"team-{p.site}"
        c.emit(t, ws, "secrets", "getSecret", who=p.key, ip=c.cluster_ip(ws),
               params={"scope": scope, "key": rng.choice(("warehouse-token", "s3-access-key"))})
    elif roll < 0.98:
        name = f"scratch_{rng.randint(1, 40)}"
        c.emit(t, ws, "notebook", "deleteNotebook", who=p.key, ip=ip, ua=p.ua, session=session,
               params={"notebookId": stable_digits(p.email, name, n=16), "notebookName": name,
                       "path": f"/Users/{p.email}/scratch/{name}"})
    else:
        uc_denied(c, p, t, ws, ip)


def personal_cluster(p: Person, ws: str) -> str:
    return f"0{stable_digits(p.email, ws, n=3)}-{stable_digits(p.email, ws, 'c', n=6)}-{stable_hex(p.email, ws, n=8)}"


def sql(c: Corpus, who: Person | str, t: dt.datetime, ws: str, ip: str, ua: str, *, failed: bool = False) -> None:
    key = who.key if isinstance(who, Person) else who
    command = c.uid()
    warehouse = stable_hex(ws, "warehouse", n=16)
    params = {"commandId": command, "warehouseId": warehouse}
    c.emit(t, ws, "databrickssql", "commandSubmit", who=key, ip=ip, ua=ua, params=params,
           subject=key[3:] if key.startswith("sp:") else None)
    done = t + dt.timedelta(seconds=c.rng.uniform(0.8, 45))
    if failed:
        c.emit(done, ws, "databrickssql", "commandFinish", who=key, params=params, status=400,
               error="[TABLE_OR_VIEW_NOT_FOUND] The table or view cannot be found.")
    else:
        c.emit(done, ws, "databrickssql", "commandFinish", who=key, params=params,
               subject=key[3:] if key.startswith("sp:") else None)


TABLES = ("fleet.rides.trips", "fleet.rides.trip_segments", "fleet.vehicles.battery_health", "fleet.vehicles.fleet",
          "fleet.pricing.zones", "fleet.pricing.tariffs", "ops.maintenance.work_orders", "ops.stations.docks",
          "marketing.campaigns.promo_codes", "customers.profiles.accounts_masked")
RESTRICTED = ("finance.ledger.gl_entries", "finance.ledger.invoices", "hr.people.salaries", "customers.pii.addresses")


def uc_read(c: Corpus, p: Person, t: dt.datetime, ws: str, ip: str) -> None:
    table = c.rng.choice(TABLES)
    catalog, schema, _ = table.split(".")
    base = {"workspace_id": c.ws[ws], "metastore_id": c.estate["metastore_id"]}
    kind = c.rng.random()
    if kind < 0.5:
        c.emit(t, ws, "unityCatalog", "getTable", who=p.key, ip=ip, ua=p.ua, params={"full_name_arg": table, **base})
    elif kind < 0.8:
        c.emit(t, ws, "unityCatalog", "listTables", who=p.key, ip=ip, ua=p.ua,
               params={"catalog_name": catalog, "schema_name_pattern": schema, **base})
    else:
        c.emit(t, ws, "unityCatalog", "listSchemas", who=p.key, ip=ip, ua=p.ua,
               params={"catalog_name": catalog, **base})


def uc_denied(c: Corpus, p: Person, t: dt.datetime, ws: str, ip: str) -> None:
    table = c.rng.choice(RESTRICTED)
    schema = ".".join(table.split(".")[:2])
    c.emit(t, ws, "unityCatalog", "getTable", who=p.key, ip=ip, ua=p.ua,
           params={"full_name_arg": table, "workspace_id": c.ws[ws], "metastore_id": c.estate["metastore_id"]},
           status=403, error=f"PERMISSION_DENIED: User does not have USE SCHEMA on Schema '{schema}'.")


def notebook(c: Corpus, p: Person, t: dt.datetime, ws: str, ip: str, session: str) -> None:
    rng = c.rng
    nb = stable_digits(p.email, "notebook", rng.randint(1, 4), n=16)
    if rng.random() < 0.3:
        c.emit(t, ws, "notebook", "attachNotebook", who=p.key, ip=ip, ua=p.ua, session=session,
               params={"path": f"/Users/{p.email}/analysis_{nb[-3:]}", "clusterId": personal_cluster(p, ws),
                       "notebookId": nb})
    for _ in range(rng.randint(1, 2)):
        t += dt.timedelta(seconds=rng.uniform(5, 240))
        c.emit(t, ws, "notebook", "runCommand", who=p.key,
               params={"notebookId": nb, "executionTime": f"{rng.uniform(0.1, 40):.3f}", "status": "finished",
                       "commandId": c.uid().replace("-", "")})


def download(c: Corpus, p: Person, t: dt.datetime, ws: str, ip: str, session: str, file_type: str) -> None:
    c.emit(t, ws, "databrickssql", "downloadQueryResult", who=p.key, ip=ip, ua=p.ua, session=session,
           params={"queryId": c.uid(), "queryResultId": c.uid(), "fileType": file_type})


def cli(c: Corpus, p: Person, t: dt.datetime, ws: str, ip: str) -> None:
    rng = c.rng
    c.emit(t, ws, "accounts", "tokenLogin", who=p.key, ip=ip, ua=p.pat_ua,
           params={"user": p.email, "tokenId": p.token_id, "authenticationMethod": "API_INT_PAT_TOKEN"})
    if p.role == "finance":
        sql(c, p, t + dt.timedelta(seconds=2), ws, ip, p.pat_ua)
        return
    for _ in range(rng.randint(1, 3)):
        t += dt.timedelta(seconds=rng.uniform(1, 30))
        kind = rng.random()
        if kind < 0.35:
            c.emit(t, ws, "dbfs", "getStatus", who=p.key, ip=ip, ua=p.pat_ua,
                   params={"path": f"dbfs:/Volumes/fleet/raw/landing/{rng.choice(('gps', 'battery', 'rides'))}"})
        elif kind < 0.6:
            c.emit(t, ws, "jobs", "runNow", who=p.key, ip=ip, ua=p.pat_ua,
                   params={"job_id": stable_digits(p.email, "job", rng.randint(1, 3))})
        elif kind < 0.8:
            c.emit(t, ws, "jobs", "reset", who=p.key, ip=ip, ua=p.pat_ua,
                   params={"job_id": stable_digits(p.email, "job", rng.randint(1, 3)),
                           "name": f"{p.key.split('.')[0]}_pipeline_{rng.randint(1, 3)}"})
        else:
            sql(c, p, t, ws, ip, p.pat_ua)


def service_day(c: Corpus, day: dt.date) -> None:
    """The service principals' schedules for one day."""
    rng = c.rng
    nets = c.estate["networks"]
    midnight = dt.datetime.combine(day, dt.time())
    weekday = day.weekday() < 5
    sp = c.sps
    airflow_ua = "airflow/2.10.2 databricks-provider/6.11.0"
    airflow_token = stable_hex(sp["airflow-prod"]["id"], "pat", n=64)
    for hour in range(2, 24, 4):
        t = midnight + dt.timedelta(hours=hour, seconds=rng.uniform(5, 60))
        ip = nets["aws_nat"][0]
        c.emit(t, "prod", "accounts", "tokenLogin", who="sp:airflow-prod", ip=ip, ua=airflow_ua,
               params={"user": sp["airflow-prod"]["id"], "tokenId": airflow_token,
                       "authenticationMethod": "API_INT_PAT_TOKEN"})
        for job in range(8 if hour == 2 else 2):
            c.emit(t + dt.timedelta(seconds=3 + 4 * job), "prod", "jobs", "runNow", who="sp:airflow-prod", ip=ip,
                   ua=airflow_ua, params={"job_id": stable_digits("airflow", job)})
    etl = sp["etl-fleet-telemetry"]["id"]
    job_id = stable_digits("fleet_telemetry_ingest")
    for hour in range(0, 24, 4):
        t = midnight + dt.timedelta(hours=hour, minutes=10, seconds=rng.uniform(20, 50))
        run_id = stable_digits("etl", day, hour)
        run = {"jobId": job_id, "runId": run_id, "jobTriggerType": "cron", "jobClusterType": "job_cluster",
               "jobTaskType": "notebook"}
        c.emit(t, "prod", "jobs", "runStart", who="sp:etl-fleet-telemetry", params=run, run_by=etl, run_as=etl)
        ip = c.cluster_ip()
        for i, key in enumerate(c.estate["secret_scopes"]["telemetry-kafka"]):
            c.emit(t + dt.timedelta(seconds=95 + i * 0.4), "prod", "secrets", "getSecret", who="sp:etl-fleet-telemetry",
                   ip=ip, params={"scope": "telemetry-kafka", "key": key})
        c.emit(t + dt.timedelta(minutes=rng.uniform(9, 16)), "prod", "jobs", "runSucceeded",
               who="sp:etl-fleet-telemetry", params=run, run_by=etl, run_as=etl)
    ml = sp["ml-scoring"]["id"]
    t = midnight + dt.timedelta(hours=1, minutes=30, seconds=rng.uniform(10, 50))
    run = {"jobId": stable_digits("demand_forecast"), "runId": stable_digits("ml", day), "jobTriggerType": "cron",
           "jobClusterType": "job_cluster", "jobTaskType": "notebook"}
    c.emit(t, "prod", "jobs", "runStart", who="sp:ml-scoring", params=run, run_by=ml, run_as=ml)
    ip = c.cluster_ip()
    for i, key in enumerate(c.estate["secret_scopes"]["ml-serving"]):
        c.emit(t + dt.timedelta(seconds=120 + i), "prod", "secrets", "getSecret", who="sp:ml-scoring", ip=ip,
               params={"scope": "ml-serving", "key": key})
    c.emit(t + dt.timedelta(minutes=rng.uniform(25, 40)), "prod", "jobs", "runSucceeded", who="sp:ml-scoring",
           params=run, run_by=ml, run_as=ml)
    dbt_ua = "dbt-databricks/1.8.5 databricks-sql-connector/3.3.0"
    dbt_token = stable_hex(sp["dbt-cloud-prod"]["id"], "pat", n=64)
    for hour in (5, 11, 17) if weekday else (5,):
        t = midnight + dt.timedelta(hours=hour, seconds=rng.uniform(10, 90))
        ip = rng.choice(nets["dbt_cloud"])
        c.emit(t, "prod", "accounts", "tokenLogin", who="sp:dbt-cloud-prod", ip=ip, ua=dbt_ua,
               params={"user": sp["dbt-cloud-prod"]["id"], "tokenId": dbt_token,
                       "authenticationMethod": "API_INT_PAT_TOKEN"})
        for _ in range(rng.randint(3, 5)):
            t += dt.timedelta(seconds=rng.uniform(10, 120))
            sql(c, "sp:dbt-cloud-prod", t, "prod", ip, dbt_ua)
    fivetran_ua = "Fivetran/1.0 DatabricksJDBCDriver/2.6.40"
    fivetran_token = stable_hex(sp["fivetran-connector"]["id"], "pat", n=64)
    for hour in range(1, 24, 6):
        t = midnight + dt.timedelta(hours=hour, minutes=20, seconds=rng.uniform(0, 60))
        ip = rng.choice(nets["fivetran"])
        c.emit(t, "prod", "accounts", "tokenLogin", who="sp:fivetran-connector", ip=ip, ua=fivetran_ua,
               params={"user": sp["fivetran-connector"]["id"], "tokenId": fivetran_token,
                       "authenticationMethod": "API_INT_PAT_TOKEN"})
        for _ in range(2):
            t += dt.timedelta(seconds=rng.uniform(5, 60))
            sql(c, "sp:fivetran-connector", t, "prod", ip, fivetran_ua)
    if weekday:
        looker_token = stable_hex(sp["looker-bi"]["id"], "pat", n=64)
        for hour in range(7, 17, 2):
            t = midnight + dt.timedelta(hours=hour, minutes=rng.uniform(0, 50))
            ip = nets["looker"][0]
            ua = "Looker/24.14 DatabricksJDBCDriver/2.6.38"
            c.emit(t, "prod", "accounts", "tokenLogin", who="sp:looker-bi", ip=ip, ua=ua,
                   params={"user": sp["looker-bi"]["id"], "tokenId": looker_token,
                           "authenticationMethod": "API_INT_PAT_TOKEN"})
            sql(c, "sp:looker-bi", t + dt.timedelta(seconds=1), "prod", ip, ua)
        ci_token = stable_hex(sp["ci-deployer"]["id"], "pat", n=64)
        for _ in range(rng.randint(1, 3)):
            t = midnight + dt.timedelta(hours=rng.uniform(8, 17))
            ci_deploy(c, t, runner_ip(c), ci_token)
    tf_ua = "terraform-provider-databricks/1.52.0 databricks-sdk-go/0.47.0"
    t = midnight + dt.timedelta(hours=3, minutes=30, seconds=rng.uniform(0, 40))
    ip = nets["aws_nat"][3]
    c.emit(t, "prod", "secrets", "listScopes", who="sp:tf-platform", ip=ip, ua=tf_ua)
    c.emit(t + dt.timedelta(seconds=2), "prod", "globalInitScripts", "getAll", who="sp:tf-platform", ip=ip, ua=tf_ua)
    for path in ("/Shared/etl", "/Shared/reporting", "/Shared/ml"):
        c.emit(t + dt.timedelta(seconds=3), "prod", "workspace", "getStatus", who="sp:tf-platform", ip=ip, ua=tf_ua,
               params={"path": path})
    if day.weekday() == 6:
        backup(c, midnight + dt.timedelta(minutes=30, seconds=rng.uniform(0, 120)))


def runner_ip(c: Corpus) -> str:
    net = ipaddress.ip_network(c.rng.choice(c.estate["networks"]["github_runners"]))
    return str(net.network_address + c.rng.randint(256, net.num_addresses - 2))


def ci_deploy(c: Corpus, t: dt.datetime, ip: str, token: str) -> None:
    ua = "databricks-cli/0.227.1 cmd/bundle_deploy cicd/github"
    sp = c.sps["ci-deployer"]["id"]
    c.emit(t, "prod", "accounts", "tokenLogin", who="sp:ci-deployer", ip=ip, ua=ua,
           params={"user": sp, "tokenId": token, "authenticationMethod": "API_INT_PAT_TOKEN"})
    bundle = c.rng.choice(("fleet_ingest", "pricing_models", "reporting"))
    c.emit(t + dt.timedelta(seconds=4), "prod", "workspace", "mkdirs", who="sp:ci-deployer", ip=ip, ua=ua,
           params={"path": f"/Workspace/Deployments/{bundle}/.bundle/prod"})
    for i in range(2):
        c.emit(t + dt.timedelta(seconds=9 + i * 2), "prod", "jobs", "reset", who="sp:ci-deployer", ip=ip, ua=ua,
               params={"job_id": stable_digits(bundle, i), "name": f"{bundle}_{i + 1}"})
    c.emit(t + dt.timedelta(seconds=15), "prod", "repos", "updateRepo", who="sp:ci-deployer", ip=ip, ua=ua,
           params={"id": stable_digits(bundle, "repo"), "branch": "main"})


def backup(c: Corpus, t: dt.datetime) -> None:
    ip = c.estate["networks"]["aws_nat"][2]
    ua = "databricks-sdk-py/0.32.3 python/3.11.9 os/linux auth/oauth-m2m"
    for i in range(c.rng.randint(55, 66)):
        folder = ("/Shared/etl", "/Shared/reporting", "/Shared/ml", "/Repos/platform")[i % 4]
        c.emit(t + dt.timedelta(seconds=i * c.rng.uniform(1.5, 4)), "prod", "workspace", "workspaceExport",
               who="sp:backup-exporter", ip=ip, ua=ua,
               params={"notebookFullPath": f"{folder}/nb_{i:02d}", "workspaceExportFormat": "SOURCE",
                       "notebookId": stable_digits(folder, i, n=16)})


# --- the hand-written cases ----------------------------------------------------------------------------------


def parse_time(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None)
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).replace(tzinfo=None)


def render_case(c: Corpus, case: dict[str, Any]) -> tuple[dt.datetime, dt.datetime]:
    """Expand one case's compact events; returns the time range of its non-context events."""
    times: list[dt.datetime] = []
    sessions: dict[str, str] = {}
    for spec in case["events"]:
        unknown = set(spec) - CASE_KEYS
        if unknown:
            raise SystemExit(f"{case['id']}: unknown event keys {sorted(unknown)}")
        start = parse_time(spec["t"])
        repeat = int(spec.get("repeat", 1))
        every = float(spec.get("every", 60))
        jitter = float(spec.get("jitter", 0))
        who_spec = spec.get("who")
        for i in range(repeat):
            t = start + dt.timedelta(seconds=every * i + (c.rng.uniform(0, jitter) if jitter else 0))
            t += dt.timedelta(milliseconds=c.rng.randint(0, 999))
            who = who_spec[i % len(who_spec)] if isinstance(who_spec, list) else who_spec
            person = c.people.get(who) if isinstance(who, str) else None
            email = c.identity(who)["email"] if who else None
            ip = resolve_ip(c, spec, i, person, t)
            ua = resolve_ua(c, spec, person)
            params = {}
            for key, value in (spec.get("params") or {}).items():
                params[key] = template(str(value), i, email, c)
            for key, values in (spec.get("vary") or {}).items():
                params[key] = template(str(values[i % len(values)]), i, email, c)
            session = spec.get("session")
            if session:
                session = sessions.setdefault(session, stable_hex(case["id"], session))
            service, action = spec["act"].split(".", 1)
            status = int(spec.get("status", 200))
            error = spec.get("error") or (DEFAULT_ERRORS.get(status) if status >= 400 else None)
            c.emit(t, spec.get("ws", "prod"), service, action, who=who, ip=ip, ua=ua, session=session, params=params,
                   status=status, error=error, result=template(spec["result"], i, email, c) if spec.get("result")
                   else None, run_by=spec.get("run_by"), run_as=spec.get("run_as"), subject=spec.get("subject"))
            if not spec.get("ctx"):
                times.append(t)
    return min(times), max(times)


def resolve_ip(c: Corpus, spec: dict[str, Any], i: int, person: Person | None, t: dt.datetime) -> str | None:
    value = spec["ips"][i % len(spec["ips"])] if spec.get("ips") else spec.get("ip")
    if value in (None, "none"):
        return None
    value = str(value)
    if value in ("home", "vpn", "office"):
        if person is None:
            raise SystemExit(f"ip {value!r} needs a person, in {spec}")
        if value == "office":
            return c.egress(person.site, t.date())[0]
        return person.home if value == "home" else person.vpn
    if value == "cluster":
        return c.cluster_ip(spec.get("ws", "prod"))
    return value


def resolve_ua(c: Corpus, spec: dict[str, Any], person: Person | None) -> str | None:
    value = spec.get("ua")
    if value in (None, "none"):
        return None
    if value == "browser" and person:
        return person.ua
    if value == "cli" and person:
        return person.pat_ua
    return str(c.uas.get(value, value))


def template(value: str, i: int, email: str | None, c: Corpus) -> str:
    out = value.replace("{n}", str(i + 1)).replace("{n2}", f"{i + 1:02d}").replace("{email}", email or "")
    if "{uuid}" in out:
        out = out.replace("{uuid}", c.uid())
    if "{token}" in out and email:
        person = next((p for p in c.people.values() if p.email == email), None)
        out = out.replace("{token}", person.token_id if person else stable_hex(email, "pat", n=64))
    return out


# --- output ----------------------------------------------------------------------------------------------------


def write(c: Corpus, labels: dict[str, Any], folder: Path) -> dict[str, int]:
    """The part files, cut along time like Spark's output of a sorted read, and the labels file."""
    out = folder / "audit"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("part-*.json"):
        old.unlink()
    events = sorted(c.events, key=lambda e: (e.t, e.row["service_name"], e.row["action_name"]))
    run = str(uuid.UUID(int=random.Random(c.estate["seed"] + 1).getrandbits(128), version=4))
    rng = random.Random(c.estate["seed"] + 2)
    for event in events:  # ids last, in time order, so they do not depend on the order cases were written in
        event.row["request_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        event.row["event_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        zone = "Z" if rng.random() < 0.7 else "+00:00"
        event.row["event_time"] = event.t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{event.t.microsecond // 1000:03d}{zone}"
    counts: dict[str, int] = {}
    cuts = [len(events) * k // PARTS for k in range(PARTS + 1)]
    for part in range(PARTS):
        name = f"part-{part:05d}-{run}-c000.json"
        chunk = events[cuts[part]:cuts[part + 1]]
        with (out / name).open("w", encoding="utf-8", newline="\n") as fh:
            for event in chunk:
                row = {k: event.row[k] for k in EVENT_KEYS if k in event.row}
                fh.write(json.dumps(row, separators=(",", ":"), ensure_ascii=False) + "\n")
        counts[name] = len(chunk)
    (folder / "labels.json").write_text(json.dumps(labels, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return counts


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S") + "Z"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE, help="Where to write audit/ and labels.json.")
    folder = parser.parse_args().out
    estate = yaml.safe_load((HERE / "estate.yaml").read_text(encoding="utf-8"))
    spec = yaml.safe_load((HERE / "cases.yaml").read_text(encoding="utf-8"))
    c = Corpus(estate)
    background(c)
    incidents, benign = [], []
    seen: dict[str, list[str]] = defaultdict(list)
    for case in spec["cases"]:
        first, last = render_case(c, case)
        principal = str(case["principal"])
        principal = c.identity(principal)["email"] if principal in c.people or principal.startswith("sp:") \
            else principal
        seen[principal].append(case["kind"])
        entry = {"id": case["id"], "category": case["category"], "principal": principal,
                 "first_seen": iso(first), "last_seen": iso(last),
                 "description": " ".join(f"{case['description']} Catalog: {case['source']}.".split())}
        if case["kind"] == "attack":
            incidents.append(entry)
        elif case["kind"] == "near_miss":
            benign.append(entry)
        else:
            raise SystemExit(f"{case['id']}: kind must be attack or near_miss")
    mixed = sorted(p for p, kinds in seen.items() if len(set(kinds)) > 1)
    if mixed:
        raise SystemExit(f"principals both attacker and benign: {mixed}")
    notes = ("Aldermoor Mobility SOC labels for the Databricks audit export 2026-08-17..2026-09-30 (UTC), written "
             "from the public catalogs' detections (see README.md). Incidents are attacks; everything before "
             "2026-09-01 is routine. Benign principals whose activity looks like an attack but is legitimate (do "
             "NOT count as incidents; also listed in `benign`): "
             + "; ".join(f"{b['principal']} ({b['id']}: {b['description']})" for b in benign))
    labels = {"incidents": incidents, "benign": benign, "notes": notes}
    counts = write(c, labels, folder)
    total = sum(counts.values())
    print(f"{len(incidents)} attacks, {len(benign)} near misses, {total} events in {len(counts)} part files",
          file=sys.stderr)


if __name__ == "__main__":
    main()

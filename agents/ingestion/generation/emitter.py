"""The emitter building the Python-made rows with deterministic ids, plus scenario timing and IP helpers."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from insight_mcp.agents.ingestion.generation.model import AUDIT, SCENARIO_DAYS, _Estate, _Principal
from insight_mcp.agents.ingestion.generation.values import _hex, _ip, _ms, _uuid
from insight_mcp.agents.ingestion.generation.vocabulary import HOSTING_PREFIXES


@dataclass
class _Rows:
    """Rows built in Python, per Databricks table name, inserted in one go at the end."""

    by_table: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, table: str, rows: Iterable[dict[str, Any]]) -> None:
        self.by_table.setdefault(table, []).extend(rows)


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

"""`insight-mcp alerts`: see the alert outbox and drain it now, e.g. after fixing the SMTP or webhook settings."""

from __future__ import annotations

import enum
import sqlite3
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from insight_mcp.agents.core.state import StateStore
from insight_mcp.clients.cli_common import JsonOpt, fail, out, print_json, settings_of

alerts_app = typer.Typer(no_args_is_help=True, help="The alert outbox: list alerts and retry undelivered ones.")


class Status(enum.StrEnum):
    """The outbox states a person can filter on."""

    queued = "queued"
    sending = "sending"
    sent = "sent"
    failed = "failed"


StatusOpt = Annotated[
    Status | None,
    typer.Option("--status", help="Only alerts in this state: queued, sending, sent or failed (given up)."),
]
LimitOpt = Annotated[int, typer.Option("--limit", min=1, max=10_000, help="Most alerts to show, newest first.")]


def _open(ctx: typer.Context) -> StateStore:
    """The state store the servers and the pipeline share, or a clear error when it cannot be opened."""
    settings = settings_of(ctx)
    try:
        return StateStore(settings.state_path)
    except (sqlite3.Error, OSError) as exc:
        fail(f"could not open the state store {settings.state_path}: {exc}")


def _when(value: object) -> str:
    return str(value)[:19].replace("T", " ") if value else "-"


@alerts_app.command("list")
def alerts_list(ctx: typer.Context, status: StatusOpt = None, limit: LimitOpt = 50, as_json: JsonOpt = False) -> None:
    """Alerts in the outbox, newest first: where each goes, its state, attempts and last error."""
    from insight_mcp.agents.reporting.alerts import list_alerts, outbox_depth

    store = _open(ctx)
    records = list_alerts(store, status=status.value if status else None, limit=limit)
    if as_json:
        print_json({"depth": outbox_depth(store), "alerts": [r.model_dump(mode="json") for r in records]})
        return
    if not records:
        out.print(f"no {status.value + ' ' if status else ''}alerts in the outbox")
        return
    table = Table("status", "channel", "severity", "title", "principal", "tries", "next try / sent (UTC)",
                  "last error", title=f"alerts ({outbox_depth(store)} waiting)")
    for r in records:
        when = _when(r.sent_at) if r.status == "sent" else _when(r.next_attempt_at)
        # Text, not str: a title or principal from an audit log must not be read as Rich markup.
        table.add_row(r.status, r.channel, r.severity, Text(r.title), Text(r.principal), str(r.attempts), when,
                      Text(r.last_error or ""))
    out.print(table)


@alerts_app.command("retry")
def alerts_retry(
    ctx: typer.Context,
    include_failed: Annotated[bool, typer.Option(
        "--include-failed", help="Also give alerts that were given up a fresh set of attempts.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Send every queued alert now, whatever its backoff; exits 1 when any still failed."""
    from insight_mcp.agents.reporting.alerts import deliver_due, requeue_failed

    settings = settings_of(ctx)
    store = _open(ctx)
    requeued = requeue_failed(store) if include_failed else 0
    result = deliver_due(settings.alerts, store, force=True)
    if as_json:
        print_json({"requeued": requeued, **result.model_dump(mode="json")})
    else:
        if result.note:
            out.print(result.note, markup=False)
        if requeued:
            out.print(f"{requeued} given-up alert(s) queued again", markup=False)
        for o in result.outcomes:
            label = {"sent": "sent", "retrying": "still failing", "failed": "gave up"}[o.status]
            detail = f": {o.error}" if o.error else ""
            out.print(f"{label:<13} {o.channel:<7} {o.title}{detail}", markup=False, highlight=False)
        out.print(f"{result.sent} sent, {result.failed_attempts + result.gave_up} failed "
                  f"({result.gave_up} given up), {result.remaining} waiting", markup=False)
    if result.failed_attempts or result.gave_up:
        raise typer.Exit(1)

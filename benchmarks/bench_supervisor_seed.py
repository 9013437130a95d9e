"""Seeding a real MLflow SQLite tracking store with many traces, fast and faithfully, for bench_supervisor.py.

Logging 200,000 traces through MLflow's API would take more than an hour on SQLite (35-50 traces a second), and
MLflow has no batch API that writes whole traces. So a few template traces are written through MLflow's own tracing
API (an OK one and an ERROR one, tagged like the narrative agent's), and their rows in MLflow's schema
(`trace_info`, `trace_tags`, `trace_request_metadata`, `spans`) are cloned in bulk SQL, each clone with its own
trace id, span id, start time, duration and status. The store is created and migrated by MLflow itself, so every
index MLflow makes is there and stays there. `verify` reads clones back through `MlflowClient.search_traces` and
`get_trace`. SQLite's ANALYZE is not run (MLflow does not run it), so queries are planned as on a real store.

Seeded stores are cached by size under the cache folder; a run copies one and never writes to the cached file.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from insight_mcp.agents.core.mlflow_store import experiment_id, open_client

FORMAT = 1  # bump when the seeded rows change, so that stale caches are not reused
EXPERIMENT = "insight-narrative"
TAGS = {"insight.agent": "narrative", "insight.prompt": "insight.security_summary"}
SPAN_NAME = "narrative.security_summary"
DAY_MS = 86_400_000


@dataclass(frozen=True)
class Template:
    """The rows MLflow wrote for one trace, keyed by table."""

    info: dict[str, Any]
    tags: list[dict[str, Any]]
    metadata: list[dict[str, Any]]
    span: dict[str, Any]


def write_traces(tracking_uri: str, artifacts: Path, n: int, errors: int, *, start_ns: int | None = None,
                 duration_ms: int = 20) -> str:
    """`n` narrative traces through MLflow's tracing API, the first `errors` of them failed; returns the experiment
    id once they are all in the store."""
    import mlflow

    client = open_client(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    experiment = experiment_id(client, EXPERIMENT, artifacts / EXPERIMENT)
    start = time.time_ns() if start_ns is None else start_ns
    for i in range(n):
        at = start + i * 1_000_000
        span = mlflow.start_span_no_context(SPAN_NAME, experiment_id=experiment, start_time_ns=at, tags=TAGS)
        span.end(status="ERROR" if i < errors else "OK", end_time_ns=at + duration_ms * 1_000_000)
    mlflow.flush_trace_async_logging()
    return experiment


def _rows(conn: sqlite3.Connection, sql: str, *args: Any) -> list[dict[str, Any]]:
    cursor = conn.execute(sql, args)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _templates(conn: sqlite3.Connection) -> dict[str, Template]:
    """The template traces MLflow wrote, by status."""
    found = {}
    for info in _rows(conn, "SELECT * FROM trace_info"):
        rid = info["request_id"]
        spans = _rows(conn, "SELECT * FROM spans WHERE trace_id = ?", rid)
        assert len(spans) == 1, f"a template trace should have one span, {rid} has {len(spans)}"
        span = {k: v for k, v in spans[0].items() if k != "duration_ns"}  # a generated column
        found[info["status"]] = Template(
            info=info, span=span,
            tags=_rows(conn, "SELECT * FROM trace_tags WHERE request_id = ?", rid),
            metadata=_rows(conn, "SELECT * FROM trace_request_metadata WHERE request_id = ?", rid))
    assert set(found) == {"OK", "ERROR"}, f"templates by status: {sorted(found)}"
    return found


def _b64(hex_id: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_id)).decode()


def _clone(template: Template, trace_hex: str, span_hex: str, start_ns: int, duration_ms: int
           ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """One trace's rows: the template's, with a new trace id, span id, start time and duration."""
    old_id, rid = template.info["request_id"], f"tr-{trace_hex}"
    info = template.info | {"request_id": rid, "timestamp_ms": start_ns // 1_000_000,
                            "execution_time_ms": duration_ms}
    tags = [t | {"request_id": rid, "value": t["value"].replace(old_id, rid) if t["value"] else t["value"]}
            for t in template.tags]
    metadata = [m | {"request_id": rid} for m in template.metadata]
    end_ns = start_ns + duration_ms * 1_000_000
    content = json.loads(template.span["content"])
    content |= {"trace_id": _b64(trace_hex), "span_id": _b64(span_hex), "start_time_unix_nano": start_ns,
                "end_time_unix_nano": end_ns}
    content["attributes"] = content["attributes"] | {"mlflow.spanStartTimeNs": str(start_ns),
                                                     "mlflow.traceRequestId": json.dumps(rid)}
    span = template.span | {"trace_id": rid, "span_id": span_hex, "start_time_unix_nano": start_ns,
                            "end_time_unix_nano": end_ns, "content": json.dumps(content)}
    return info, tags, metadata, span


def _insert(conn: sqlite3.Connection, table: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    columns = list(rows[0])
    quoted = ", ".join(f'"{c}"' for c in columns)
    marks = ", ".join("?" for _ in columns)
    conn.executemany(f'INSERT INTO "{table}" ({quoted}) VALUES ({marks})', [tuple(r[c] for c in columns) for r in rows])


def _batches(n: int, size: int) -> Iterator[range]:
    for first in range(0, n, size):
        yield range(first, min(n, first + size))


def clone_traces(database: Path, n: int, *, until_ms: int, days: float, error_share: float = 0.02,
                 seed: int = 7) -> None:
    """Add `n` clones of the store's template traces, spread evenly over `days` before `until_ms`."""
    rng = random.Random(seed)
    conn = sqlite3.connect(database)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        templates = _templates(conn)
        step_ns = int(days * DAY_MS * 1_000_000 / max(n, 1))
        first_ns = until_ms * 1_000_000 - n * step_ns
        for batch in _batches(n, 20_000):
            infos, tags, metadata, spans = [], [], [], []
            for i in batch:
                status = "ERROR" if rng.random() < error_share else "OK"
                rows = _clone(templates[status], f"{rng.getrandbits(128):032x}", f"{rng.getrandbits(64):016x}",
                              first_ns + i * step_ns + rng.randrange(step_ns), rng.randint(20, 3000))
                infos.append(rows[0])
                tags += rows[1]
                metadata += rows[2]
                spans.append(rows[3])
            with conn:
                _insert(conn, "trace_info", infos)
                _insert(conn, "trace_tags", tags)
                _insert(conn, "trace_request_metadata", metadata)
                _insert(conn, "spans", spans)
    finally:
        conn.close()


def verify(tracking_uri: str, n_expected: int, until_ms: int) -> str:
    """Read the seeded traces back through MLflow: count, tags, status, timestamps and one trace's span."""
    client = open_client(tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    tag_filter = " AND ".join(f"tag.`{k}` = '{v}'" for k, v in TAGS.items())
    total, statuses, token, newest = 0, {"OK": 0, "ERROR": 0}, None, None
    while True:
        page = client.search_traces(locations=[experiment], filter_string=f"trace.timestamp_ms < {until_ms} AND "
                                    f"{tag_filter}", max_results=50_000,
                                    include_spans=False, page_token=token, order_by=["timestamp_ms DESC"])
        for trace in page:
            info = trace.info
            assert all(info.tags.get(k) == v for k, v in TAGS.items()), info.tags
            assert info.request_time < until_ms and info.execution_duration is not None
            statuses[str(getattr(info.state, "value", info.state))] += 1
            newest = info if newest is None else newest
        total += len(page)
        token = getattr(page, "token", None)
        if not token:
            break
    assert total == n_expected, f"read back {total} seeded traces, expected {n_expected}"
    full = client.get_trace(newest.trace_id)
    span = full.data.spans[0]
    assert span.name == SPAN_NAME and span.start_time_ns // 1_000_000 == newest.request_time
    assert span.trace_id == newest.trace_id or span.request_id == newest.trace_id
    return f"read back {total:,} seeded traces through MlflowClient.search_traces ({statuses['ERROR']:,} ERROR), " \
           f"tags, status, timestamps and spans as written"


def indexes(database: Path) -> set[str]:
    """The names of a store's indexes, to show that a seeded store keeps every one MLflow made."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    finally:
        conn.close()


def empty_store(cache: Path) -> Path:
    """A store created and migrated by MLflow, with no traces: its schema and every index MLflow makes."""
    cache.mkdir(parents=True, exist_ok=True)
    empty = cache / f"mlflow-empty-v{FORMAT}.db"
    if not empty.exists():
        building = empty.with_suffix(".building")
        building.unlink(missing_ok=True)
        open_client(f"sqlite:///{building}")
        building.rename(empty)
        building.with_name(f"{building.name}.init-lock").unlink(missing_ok=True)
    return empty


def seeded_store(cache: Path, n: int, *, older_than_ms: int, days: float = 30.0) -> Path:
    """A migrated store holding `n` narrative traces all started before `older_than_ms`; built once per size."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"mlflow-{n}-v{FORMAT}.db"
    marker = path.with_suffix(".json")
    if path.exists() and marker.exists():
        until_ms = json.loads(marker.read_text())["until_ms"]
        if until_ms <= older_than_ms:
            return path
    building = path.with_suffix(".building")
    shutil.copy(empty_store(cache), building)
    started = time.perf_counter()
    # Two templates written by MLflow, old enough to sit among the clones; they are removed after cloning.
    until_ms = older_than_ms
    write_traces(f"sqlite:///{building}", cache / "artifacts", 1, 1, start_ns=(until_ms - 1000) * 1_000_000)
    write_traces(f"sqlite:///{building}", cache / "artifacts", 1, 0, start_ns=(until_ms - 2000) * 1_000_000)
    conn = sqlite3.connect(building)
    templates = [r[0] for r in conn.execute("SELECT request_id FROM trace_info")]
    conn.close()
    clone_traces(building, n, until_ms=until_ms - 5000, days=days)
    conn = sqlite3.connect(building)
    with conn:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.executemany("DELETE FROM trace_info WHERE request_id = ?", [(t,) for t in templates])
    conn.close()
    assert indexes(building) == indexes(empty_store(cache)), "a seeded store must keep MLflow's indexes"
    print(f"seeded {n:,} traces in {time.perf_counter() - started:.1f} s; "
          + verify(f"sqlite:///{building}", n, until_ms))
    building.rename(path)
    building.with_name(f"{building.name}.init-lock").unlink(missing_ok=True)
    marker.write_text(json.dumps({"until_ms": until_ms, "traces": n}))
    return path

"""Peer comparison: our `run_query` against `execute_query` of mcp-server-motherduck (a DuckDB MCP server).

Both servers answer the same rows of the same audit data, each from its own DuckDB file (the peer pins an older
DuckDB, so it runs from its own virtual environment, built by `make bench-peer-env`). Both run as subprocesses over
stdio, the one transport both serve to a local client, and are called with the same official MCP SDK client, which
validates each structured answer against the tool's output schema as any SDK client does. The peer keeps one
read-only connection open and its row and character caps are raised so that it returns every row, as ours does.

Two workloads, the same SQL but for the table's name: 1,000 rows x 8 columns, and one row. Calls go one at a time,
in bursts (each begun once both servers are idle, so that our trace writer's last batch does not land in the next
burst, then a short warm-up) within which the servers take turns every five calls, so that drift in the machine's
load hits both alike. Prints p50 and p90 of each and the ratios ours / peer (the goal: <= 1.0x for both), then a
breakdown of where a 1,000-row answer's time goes: what our server reports for the statement, the client's schema
validation and parsing of each server's answer, and our server's pieces timed in process (`--profile` adds a
cProfile listing of them).

    make bench-peer-env   # once: the peer's own virtual environment (INSIGHT_PEER_VENV)
    python benchmarks/bench_peer_query.py [--calls 300] [--rounds 5] [--warmup 5] [--no-tracing] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime as dt
import functools
import io
import json
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import anyio
from bench_roundtrip import interleaved

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mcp_types
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp_types import methods as sdk_methods

PEER_PACKAGE = "mcp-server-motherduck"
PEER_VERSION = "1.1.0"  # pinned with its DuckDB, framework and SDK in benchmarks/peer_env.sh
PEER_VENV = Path(os.environ.get("INSIGHT_PEER_VENV", "~/.cache/insight-mcp/peer-venv")).expanduser()
END_DAY = dt.date(2026, 11, 21)
BIG_ROWS = 1000
MAX_CHARS = 100_000_000  # both servers' character caps: far above a 1,000-row answer, so nothing is cut
# Eight scalar columns; the nested ones are read the same way in Databricks SQL and DuckDB.
COLUMNS = ("event_time, event_id, workspace_id, service_name, action_name, user_identity.email AS principal, "
           "source_ip_address, response.status_code AS status_code")
EXPORTED = "event_time, event_id, workspace_id, service_name, action_name, user_identity, source_ip_address, response"
OURS, PEER = "ours", "peer"
Call = tuple[str, dict[str, Any]]


def statement(table: str, rows: int) -> str:
    """The one statement both servers run; only the table's name differs."""
    return f"SELECT {COLUMNS} FROM {table} ORDER BY event_time, event_id LIMIT {rows}"


def calls_for(rows: int) -> dict[str, Call]:
    return {
        OURS: ("run_query", {"sql": statement("system.access.audit", rows), "limit": rows}),
        PEER: ("execute_query", {"sql": statement("access.audit", rows)}),
    }


# --- the data -------------------------------------------------------------------------------------------------


def build_data(tmp: Path) -> tuple[Path, Path]:
    """Our workspace, and the peer's DuckDB file holding the same audit columns (through Parquet, as DuckDB 2.x and
    1.5.x files differ)."""
    import duckdb

    from insight_mcp.agents.ingestion.generator import generate_workspace

    workspace, parquet, peer_db = tmp / "workspace.duckdb", tmp / "audit.parquet", tmp / "peer.duckdb"
    generate_workspace(workspace, days=3, users=30, events_per_day=2_000, end=END_DAY)
    conn = duckdb.connect(str(workspace), read_only=True)
    try:
        conn.execute(f"COPY (SELECT {EXPORTED} FROM access.audit) TO '{parquet}' (FORMAT parquet)")
    finally:
        conn.close()
    load = ("import duckdb, sys\nconn = duckdb.connect(sys.argv[1])\nconn.execute('CREATE SCHEMA access')\n"
            "conn.execute('CREATE TABLE access.audit AS SELECT * FROM read_parquet(?)', [sys.argv[2]])\n"
            "conn.close()\n")
    subprocess.run([str(PEER_VENV / "bin" / "python"), "-c", load, str(peer_db), str(parquet)], check=True)
    return workspace, peer_db


def server_parameters(tmp: Path, workspace: Path, peer_db: Path, tracing: bool) -> dict[str, StdioServerParameters]:
    ours_env = {k: v for k, v in os.environ.items() if k != "INSIGHT_API_TOKEN"} | {
        "INSIGHT_HOME": str(tmp), "INSIGHT_WORKSPACE_FILE": str(workspace), "INSIGHT_LOG_LEVEL": "warning",
        "INSIGHT_QUERY__MAX_CHARS": str(MAX_CHARS), "INSIGHT_TRACING__ENABLED": "true" if tracing else "false",
    }
    exe = Path(sys.executable).with_name("insight-mcp")
    return {
        OURS: StdioServerParameters(command=str(exe), env=ours_env,
                                    args=["serve", "--server", "system-tables", "--transport", "stdio"]),
        PEER: StdioServerParameters(
            command=str(PEER_VENV / "bin" / "mcp-server-motherduck"), env={"HOME": str(tmp)},
            # Read-only is its default for a local file; one persistent connection, like ours; caps above the answer.
            args=["--transport", "stdio", "--db-path", str(peer_db), "--no-ephemeral-connections",
                  "--max-rows", str(100 * BIG_ROWS), "--max-chars", str(MAX_CHARS)],
        ),
    }


# --- checking the answers -----------------------------------------------------------------------------------


def rows_of(name: str, result: mcp_types.CallToolResult) -> tuple[list[str], list[list[Any]]]:
    """Column names and rows of an answer, refusing an error or a cut answer."""
    if result.is_error:
        raise SystemExit(f"{name}: the tool failed: {result.content}")
    data = result.structured_content or {}
    if name == PEER:
        data = json.loads(data["result"])
        if data.get("truncated"):
            raise SystemExit(f"peer cut its answer: {data.get('warning')}")
        return data["columns"], data["rows"]
    if data.get("truncated"):
        raise SystemExit(f"ours cut its answer: {data.get('truncation_reason')}")
    return [c["name"] for c in data["columns"]], data["rows"]


def check_same(answers: dict[str, mcp_types.CallToolResult], rows: int) -> None:
    """Both answers have `rows` rows of the same 8 columns and the same values in the same order (all but the
    timestamps, which each server spells its own way)."""
    shapes = {name: rows_of(name, result) for name, result in answers.items()}
    for name, (columns, body) in shapes.items():
        if len(body) != rows or len(columns) != 8 or any(len(r) != 8 for r in body):
            raise SystemExit(f"{name} answered {len(body)} rows x {len(columns)} columns, not {rows} x 8")
    if shapes[OURS][0] != shapes[PEER][0]:
        raise SystemExit(f"the columns differ: {shapes[OURS][0]} and {shapes[PEER][0]}")
    kept = [i for i, column in enumerate(shapes[OURS][0]) if column != "event_time"]
    values = {name: [[r[i] for i in kept] for r in body] for name, (_, body) in shapes.items()}
    if values[OURS] != values[PEER]:
        raise SystemExit("the two servers answered different rows")


def end_leftovers(tmp: Path) -> None:
    """End what our server left running on this run's files: its trace writer runs in a session of its own and
    outlives the server, writing queued traces to the throw-away store for a minute or more."""
    proc = Path("/proc")
    if not proc.is_dir():
        return
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if str(tmp).encode() in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), signal.SIGTERM)


# --- timing ---------------------------------------------------------------------------------------------------


async def timed_call(name: str, client: Client, rows: int, work: tuple[str, dict[str, Any]],
                     out: dict[str, Any]) -> None:
    """One call, refused answers stopping the run; our server's own statement time kept for the breakdown."""
    result = await client.call_tool(*work)
    if result.is_error:
        raise SystemExit(f"{name}: {result.content}")
    if name == OURS and rows == BIG_ROWS:
        out["statement_ms"].append(result.structured_content["statement_ms"])  # type: ignore[index]


async def run_calls(params: dict[str, StdioServerParameters], errlog: TextIO, calls: int, rounds: int,
                    warmup: int, tmp: Path) -> dict[str, Any]:
    """Connect once to each server, check their answers agree, then time both workloads in interleaved bursts,
    each begun once both servers are idle."""
    out: dict[str, Any] = {"lat": {}, "statement_ms": [], "answers": {}, "schemas": {}, "versions": {}}
    async with contextlib.AsyncExitStack() as stack:
        clients = {name: await stack.enter_async_context(Client(stdio_client(p, errlog=errlog)))
                   for name, p in params.items()}
        for name, client in clients.items():
            tool = calls_for(1)[name][0]
            listed = {t.name: t for t in (await client.list_tools()).tools}
            out["schemas"][name] = listed[tool].output_schema
            out["versions"][name] = client.protocol_version
        for rows in (BIG_ROWS, 1):
            work = calls_for(rows)
            answers = {name: await clients[name].call_tool(*work[name]) for name in clients}
            check_same(answers, rows)
            out["answers"][rows] = answers
            lat = await interleaved({name: functools.partial(timed_call, name, clients[name], rows, work[name], out)
                                     for name in clients}, calls, rounds, tmp, warmup=warmup)
            out["lat"][rows] = lat
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median_ms(fn: Callable[[], Any], reps: int) -> float:
    """Median wall time of one call of fn, in milliseconds."""
    fn()
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


# --- where the time goes --------------------------------------------------------------------------------------


def wire_line(result: mcp_types.CallToolResult) -> str:
    """The JSON-RPC line a server writes for this answer (the SDK's own dump of the result, as sent)."""
    dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True)
    return mcp_types.JSONRPCResponse(jsonrpc="2.0", id=7, result=dumped).model_dump_json(by_alias=True,
                                                                                         exclude_unset=True)


def client_pieces(result: mcp_types.CallToolResult, schema: dict[str, Any] | None, version: str,
                  reps: int) -> dict[str, float]:
    """What the SDK client does with one answer after reading its line, piece by piece (ms)."""
    from jsonschema import exceptions as jsonschema_exceptions
    from jsonschema.validators import validator_for
    from referencing import Registry

    line = wire_line(result)
    raw = json.loads(line)["result"]
    pieces = {
        "parse the JSON-RPC line (validate_json)": median_ms(
            lambda: mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False), reps),
        "check against the protocol surface": median_ms(
            lambda: sdk_methods.validate_server_result("tools/call", version, raw), reps),
        "CallToolResult model validation": median_ms(
            lambda: mcp_types.CallToolResult.model_validate(raw, by_name=False), reps),
    }
    if schema is not None:  # as ClientSession.validate_tool_result: a compiled validator, the best-match error
        validator = validator_for(schema)(schema, registry=Registry())
        pieces["jsonschema against outputSchema"] = median_ms(
            lambda: jsonschema_exceptions.best_match(validator.iter_errors(result.structured_content)), reps)
    return pieces


def server_pieces(workspace: Path, reps: int, profile: bool) -> tuple[dict[str, float], str]:
    """Our server's work for one 1,000-row call, each piece on this thread in the order run_query does it (ms)."""
    import pyarrow as pa
    from pydantic import TypeAdapter

    from insight_mcp.agents.core.tracing import SpanRecord, record_line
    from insight_mcp.agents.ingestion.answer_builder import answer_from_arrow
    from insight_mcp.agents.ingestion.answers import QueryAnswer
    from insight_mcp.agents.ingestion.backend import ColumnInfo, Statement
    from insight_mcp.agents.ingestion.catalog import TABLES
    from insight_mcp.agents.ingestion.duckdb_backend import DuckDBSystemTables
    from insight_mcp.agents.settings import QueryLimits
    from insight_mcp.agents.sql.dialect import databricks_type
    from insight_mcp.agents.sql.guard import guard_query
    from insight_mcp.agents.untrusted import clean_text
    from insight_mcp.servers.common import answer

    limits = QueryLimits(max_chars=MAX_CHARS)
    sql = statement("system.access.audit", BIG_ROWS)
    backend = DuckDBSystemTables(workspace)
    output_adapter = TypeAdapter(QueryAnswer)
    source = "Databricks system tables"
    version = "2026-07-28"

    def guard() -> Any:
        return guard_query(sql, allowed_tables=TABLES.keys(), limit=BIG_ROWS, row_cap=limits.row_cap,
                           max_generator_rows=limits.max_generator_rows)

    guarded = guard()

    def fetch() -> tuple[list[ColumnInfo], pa.Table]:  # the engine part of DuckDBSystemTables._run
        cursor = backend.cursor()
        try:
            relation = cursor.sql(guarded.duckdb_sql)
            columns = [ColumnInfo(name=n, type=databricks_type(str(k))) for n, k in zip(relation.columns,
                                                                                        relation.types, strict=True)]
            return columns, relation.to_arrow_reader(BIG_ROWS + 1).read_all()
        finally:
            backend.release(cursor)

    columns, table = fetch()

    def build() -> Any:
        return answer_from_arrow(columns, table, more=False, max_rows=BIG_ROWS, max_chars=limits.max_chars,
                                 elapsed_ms=1.0)

    result = build()

    def fields() -> dict[str, Any]:  # as run_query builds its answer: QueryAnswer's fields, directly
        return {
            "columns": [{"name": clean_text(c.name), "type": clean_text(c.type)} for c in result.columns],
            "rows": result.rows, "row_count": result.row_count, "truncated": result.truncated,
            "truncation_reason": result.truncation_reason, "statement_ms": result.elapsed_ms,
            "tables": list(guarded.tables), "executed_sql": clean_text(guarded.databricks_sql),
        }

    data = fields()
    tool_result = answer(data, source=source)
    tool_result.meta = {"insight-mcp/call_id": "0" * 16}
    sdk_dumped = tool_result.model_dump(by_alias=True, mode="json", exclude_none=True)
    sieved = sdk_methods.serialize_server_result("tools/call", version, sdk_dumped)
    record = SpanRecord(name="run_query", span_type="TOOL", inputs={"sql": sql, "limit": BIG_ROWS},
                        outputs=tool_result.structured_content, start_ns=0, end_ns=1)
    pieces: dict[str, Callable[[], Any]] = {
        "guard_query (parse, check, transpile; cached)": guard,
        "DuckDB execute + Arrow fetch": fetch,
        "answer_builder.answer_from_arrow (Arrow -> JSON rows, char cap)": build,
        "run_query: the answer's fields (names, types and the statement cleaned)": fields,
        "common.answer: untrusted.fence (JSON of the text for a model)": lambda: answer(data, source=source),
        "SDK func_metadata: structured content validated as QueryAnswer": lambda: output_adapter.validate_python(
            tool_result.structured_content),
        "SDK runner: CallToolResult.model_dump": lambda: tool_result.model_dump(by_alias=True, mode="json",
                                                                                exclude_none=True),
        "SDK runner: serialize_server_result (validate + dump again)": lambda: sdk_methods.serialize_server_result(
            "tools/call", version, sdk_dumped),
        "SDK stdio: JSONRPCResponse.model_dump_json": lambda: mcp_types.JSONRPCResponse(
            jsonrpc="2.0", id=7, result=sieved).model_dump_json(by_alias=True, exclude_unset=True),
        "tracing feeder thread: record_line (same GIL)": lambda: record_line(record),
    }
    timed = {name: median_ms(fn, reps) for name, fn in pieces.items()}

    async def real_path() -> float:  # one loop, as in the server: the backend's own thread does both pieces
        times = []
        for _ in range(reps + 1):
            started = time.perf_counter()
            await backend.execute(Statement(databricks_sql=guarded.databricks_sql, duckdb_sql=guarded.duckdb_sql),
                                  max_rows=BIG_ROWS, max_chars=limits.max_chars,
                                  timeout_seconds=limits.timeout_seconds)
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times[1:])

    timed["(check: DuckDBSystemTables.execute, both pieces above on its thread)"] = asyncio.run(real_path())
    listing = ""
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(reps):
            for name, fn in pieces.items():
                if not name.startswith("tracing"):
                    fn()
        profiler.disable()
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.sort_stats("tottime").print_stats(25)
        listing = f"cProfile of {reps} runs of the server pieces above (tracing excluded), by own time:\n"
        listing += text.getvalue()
    backend.close_sync()
    return timed, listing


# --- the report -----------------------------------------------------------------------------------------------


def report(out: dict[str, Any], workspace: Path, opts: argparse.Namespace) -> None:
    print(f"peer: {PEER_PACKAGE}=={PEER_VERSION} ({PEER_VENV}); both over stdio, the MCP SDK client; protocol "
          f"{out['versions'][OURS]} (ours), {out['versions'][PEER]} (peer); our tracing "
          f"{'on (as shipped)' if opts.tracing else 'off'}")
    for rows, label in ((BIG_ROWS, f"{BIG_ROWS:,} rows x 8 columns"), (1, "one row")):
        lat = out["lat"][rows]
        print(f"\n{label}: {len(lat[OURS])} calls each, {opts.rounds} bursts, turns of five calls")
        for q, qname in ((0.5, "p50"), (0.9, "p90")):
            ours, peer = pct(lat[OURS], q), pct(lat[PEER], q)
            print(f"  {qname}: ours {ours:7.2f} ms, peer {peer:7.2f} ms, ratio {ours / peer:.2f}x (goal <= 1.0x)")

    reps = opts.reps
    big = out["answers"][BIG_ROWS]
    ours_line, peer_line = wire_line(big[OURS]), wire_line(big[PEER])
    p50 = pct(out["lat"][BIG_ROWS][OURS], 0.5)
    statement_ms = statistics.median(out["statement_ms"])
    print(f"\nwhere a {BIG_ROWS:,}-row answer's time goes (medians, ms)")
    print(f"  ours: round trip p50 {p50:.2f}; the server's statement_ms (DuckDB execute + Arrow fetch) "
          f"{statement_ms:.2f}; the rest {p50 - statement_ms:.2f}")
    peer_meta = len(json.dumps(big[PEER].meta or {}))
    print(f"  wire: ours {len(ours_line) / 1000:.0f} kB a line, peer {len(peer_line) / 1000:.0f} kB, of which "
          f"{peer_meta / 1000:.0f} kB its _meta (server info with its icon); each sends the rows twice, as structured "
          "content and as text")
    ours_client = client_pieces(big[OURS], out["schemas"][OURS], out["versions"][OURS], reps)
    peer_client = client_pieces(big[PEER], out["schemas"][PEER], out["versions"][PEER], reps)
    print("  client side, per answer:                              ours     peer")
    for name in ours_client:
        peer_ms = peer_client.get(name)
        peer_text = f"{peer_ms:8.2f}" if peer_ms is not None else "       -"
        print(f"    {name:<48}{ours_client[name]:8.2f} {peer_text}")
    print(f"    {'in all':<48}{sum(ours_client.values()):8.2f} {sum(peer_client.values()):8.2f}")
    timed, listing = server_pieces(workspace, reps, opts.profile)
    print("  our server, per answer, each piece timed in process:")
    for name, ms in timed.items():
        print(f"    {name:<76}{ms:8.2f}")
    on_path = sum(ms for name, ms in timed.items() if not name.startswith(("tracing", "(")))
    print(f"    {'in all on the request path (tracing and the real-path check excluded)':<76}{on_path:8.2f}")
    if listing:
        print("\n" + listing)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300, help="Timed calls per server and workload.")
    parser.add_argument("--rounds", type=int, default=5, help="Bursts the calls are split into.")
    parser.add_argument("--warmup", type=int, default=5, help="Untimed calls to each server before each burst.")
    parser.add_argument("--reps", type=int, default=30, help="Repetitions of each piece in the breakdown.")
    parser.add_argument("--tracing", action=argparse.BooleanOptionalAction, default=True,
                        help="Our server's MLflow tracing (on as shipped).")
    parser.add_argument("--profile", action="store_true", help="Add a cProfile listing of our server's pieces.")
    opts = parser.parse_args()

    if not (PEER_VENV / "bin" / "mcp-server-motherduck").exists():
        print(f"skipped: no peer environment at {PEER_VENV}; run `make bench-peer-env` first "
              f"({PEER_PACKAGE}=={PEER_VERSION} in a virtual environment of its own)")
        return

    tmp = Path(tempfile.mkdtemp(prefix="insight-bench-peer-"))
    workspace, peer_db = build_data(tmp)
    params = server_parameters(tmp, workspace, peer_db, opts.tracing)
    log_path = tmp / "servers.log"
    try:
        with log_path.open("w") as errlog:
            try:
                out = anyio.run(run_calls, params, errlog, opts.calls, opts.rounds, opts.warmup, tmp)
            except BaseException:
                errlog.flush()
                print(f"the servers' stderr, its end:\n{log_path.read_text()[-4000:]}", file=sys.stderr)
                raise
            finally:
                end_leftovers(tmp)
        report(out, workspace, opts)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""The SQL warehouse backend's own overhead: a one-row statement through the backend against the same statement sent
directly with databricks-sdk, both to the local Statement Execution API server the tests use (tests/).

Both sides use one WorkspaceClient configuration, the same warehouse and the same synchronous wait; the backend adds
its read-only check, scope, typed parameters, polling loop, typed values and the capped answer. Calls come in bursts
within which the two take turns every five calls (`bench_roundtrip.interleaved`), so that the machine's drift hits
both alike; prints p50 and p90 of each and the ratio (goal <= 1.2x at p50).

    python benchmarks/bench_warehouse.py [--calls 300] [--rounds 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import anyio
import pyarrow as pa

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_roundtrip import interleaved
from warehouse_emulator import WarehouseEmulator

from insight_mcp.agents.ingestion.backend import Statement
from insight_mcp.agents.ingestion.warehouse_backend import WarehouseSystemTables
from insight_mcp.agents.settings import DatabricksSettings

TOKEN = "dapi-bench-token"
WAREHOUSE = "wh-bench"
SQL = "SELECT event_id, event_time FROM system.access.audit WHERE event_time >= :since LIMIT 1"


def one_row(statement_id: str, sql: str, params: dict[str, Any], catalog: str | None, schema: str | None) -> pa.Table:
    """The warehouse's side, the same for both: one row, as an engine would give it."""
    return pa.table({"event_id": ["e-0001"], "event_time": pa.array([params.get("since")], pa.timestamp("us", "UTC"))})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args()

    from databricks.sdk import WorkspaceClient
    from databricks.sdk.core import Config
    from databricks.sdk.service import sql as dbsql

    since = dt.datetime(2026, 11, 14, tzinfo=dt.UTC)
    with WarehouseEmulator(one_row, tokens=(TOKEN,), warehouses={WAREHOUSE: "RUNNING"}) as server:
        os.environ["DATABRICKS_TOKEN"] = TOKEN
        client = WorkspaceClient(config=Config(host=server.url, token=TOKEN, auth_type="pat"))
        backend = WarehouseSystemTables(DatabricksSettings(host=server.url, warehouse_id=WAREHOUSE))
        parameters = [dbsql.StatementParameterListItem(name="since", value="2026-11-14T00:00:00Z", type="TIMESTAMP")]

        def bare() -> Any:
            response = client.statement_execution.execute_statement(statement=SQL, warehouse_id=WAREHOUSE,
                                                                    parameters=parameters, wait_timeout="10s")
            return response.result.data_array

        statement = Statement(databricks_sql=SQL, params={"since": since})

        async def ours_call() -> None:
            await backend.execute(statement, max_rows=100, max_chars=100_000, timeout_seconds=30)

        async def bare_call() -> None:
            bare()  # synchronous, as databricks-sdk is: on the loop's thread, as a caller without a loop would

        async def threaded_call() -> None:
            await anyio.to_thread.run_sync(bare)  # what an async server pays to call a synchronous SDK at all

        async def measure() -> dict[str, list[float]]:
            return await interleaved({"bare": bare_call, "threaded": threaded_call, "ours": ours_call}, opts.calls,
                                     opts.rounds)

        lat = anyio.run(measure)
        theirs, mine = [ms / 1000 for ms in lat["bare"]], [ms / 1000 for ms in lat["ours"]]
        threaded = [ms / 1000 for ms in lat["threaded"]]
        anyio.run(backend.close)

    def pct(values: list[float], q: float) -> float:
        return statistics.quantiles(values, n=100)[int(q) - 1] * 1000

    ours50, bare50 = statistics.median(mine) * 1000, statistics.median(theirs) * 1000
    print(f"one-row statement, {len(mine)} calls each, to the local Statement Execution API server")
    print(f"  bare databricks-sdk   p50 {bare50:7.2f} ms   p90 {pct(theirs, 90):7.2f} ms")
    print(f"  warehouse backend     p50 {ours50:7.2f} ms   p90 {pct(mine, 90):7.2f} ms")
    print(f"  ratio p50 {ours50 / bare50:.2f}x (goal <= 1.2x), p90 {pct(mine, 90) / pct(theirs, 90):.2f}x")
    # The backend runs the SDK on a worker thread so that a statement never blocks the server's event loop; the
    # same bare call made from a worker thread shows what that hop costs on this machine, apart from the backend.
    threaded50 = statistics.median(threaded) * 1000
    print(f"  bare databricks-sdk on a worker thread p50 {threaded50:7.2f} ms ({threaded50 / bare50:.2f}x bare); "
          f"the backend {ours50 / threaded50:.2f}x that")


if __name__ == "__main__":
    main()

"""The system-tables tools through the SDK's in-memory client, checked against the fixture's known rows."""

from __future__ import annotations

import ipaddress
import statistics
from pathlib import Path

import anyio
import pytest
from workspace_fixture import BASE, audit_rows, query_rows

from insight_mcp.agents.ingestion.backend import QueryResult, Statement
from insight_mcp.agents.ingestion.duckdb_backend import DuckDBSystemTables
from insight_mcp.agents.settings import Settings, load_settings
from insight_mcp.clients.client import ToolAnswer, ToolCallError, connect_in_process
from insight_mcp.servers.system_tables import build_system_tables_server


class OneShotClient:
    """Opens an in-memory session per call: pytest-asyncio runs fixture teardown in another task."""

    def __init__(self, settings: Settings) -> None:
        self.server = build_system_tables_server(settings)

    async def call(self, tool: str, args: dict[str, object] | None = None) -> ToolAnswer:
        async with connect_in_process(self.server) as c:
            return await c.call(tool, args)


@pytest.fixture
def client(settings: Settings) -> OneShotClient:
    return OneShotClient(settings)


async def test_list_tables_counts_rows_and_time_ranges(client: OneShotClient) -> None:
    tables = {t["name"]: t for t in (await client.call("list_tables")).structured["tables"]}
    assert len(tables) == 6
    assert tables["system.access.audit"]["rows"] == 240
    assert tables["system.query.history"]["rows"] == 60
    assert tables["system.billing.usage"]["rows"] == 0
    assert tables["system.access.audit"]["first_event"] == BASE.isoformat() + "Z"


async def test_describe_table_gives_nested_types(client: OneShotClient) -> None:
    described = (await client.call("describe_table", {"table": "system.access.audit"})).structured
    columns = {c["name"]: c["type"] for c in described["columns"]}
    assert columns["request_params"] == "map<string,string>"
    assert columns["user_identity"].startswith("struct<email:string,")
    assert all(c["description"] for c in described["columns"])


async def test_wrong_arguments_are_named_with_what_the_tool_takes(client: OneShotClient) -> None:
    takes = "run_query takes sql (required), limit."
    with pytest.raises(ToolCallError) as misspelt:  # dropped silently, `limt` would cap nothing
        await client.call("run_query", {"sql": "SELECT 1 AS n", "limt": 5})
    assert str(misspelt.value).endswith(f"run_query: no argument 'limt'. {takes}")
    with pytest.raises(ToolCallError) as wrong:
        await client.call("run_query", {"sql": 5, "limit": 0})
    message = str(wrong.value)
    assert "run_query: sql: Input should be a valid string; limit: Input should be greater than or equal to 1." in \
        message and message.endswith(takes)
    assert "pydantic" not in message and "run_queryArguments" not in message and "\n" not in message
    with pytest.raises(ToolCallError, match=r"list_tables: no argument 'x'\. list_tables takes no arguments\."):
        await client.call("list_tables", {"x": 1})


async def test_describe_unknown_table_lists_known_ones(client: OneShotClient) -> None:
    with pytest.raises(ToolCallError, match=r"known tables: system\.access\.audit"):
        await client.call("describe_table", {"table": "system.access.nothing"})


async def test_audit_events_defaults_to_last_day_of_data(client: OneShotClient) -> None:
    page = (await client.call("audit_events", {"page_size": 500})).structured
    latest = max(r["event_time"] for r in audit_rows())
    expected = [r for r in audit_rows() if (latest - r["event_time"]).total_seconds() < 86_400]
    assert len(page["events"]) == len(expected)
    assert page["events"][0]["event_id"] == "e-0239"


async def test_audit_events_filters_match_the_fixture(client: OneShotClient) -> None:
    args = {"since": "2026-11-01", "principal": "ALICE@corp.example", "status": "failure", "page_size": 500}
    events = (await client.call("audit_events", args)).structured["events"]
    expected = {r["event_id"] for r in audit_rows() if r["email"] == "alice@corp.example" and r["status_code"] >= 400}
    assert {e["event_id"] for e in events} == expected and expected


async def test_audit_events_cidr_filter(client: OneShotClient) -> None:
    args = {"since": "2026-11-01", "source_ip": "10.0.0.0/8", "page_size": 500}
    events = (await client.call("audit_events", args)).structured["events"]
    network = ipaddress.ip_network("10.0.0.0/8")
    expected = {r["event_id"] for r in audit_rows() if ipaddress.ip_address(r["source_ip_address"]) in network}
    assert {e["event_id"] for e in events} == expected
    assert len(expected) == 120


async def test_pagination_walks_every_row_once(client: OneShotClient) -> None:
    seen: list[str] = []
    args: dict[str, object] = {"since": "2026-11-01", "service": "secrets", "page_size": 7}
    while True:
        page = (await client.call("audit_events", args)).structured
        seen += [e["event_id"] for e in page["events"]]
        if not page["next_cursor"]:
            break
        args["cursor"] = page["next_cursor"]
    expected = sorted((r["event_id"] for r in audit_rows() if r["service_name"] == "secrets"), reverse=True)
    assert seen == expected


async def test_cursor_with_other_filters_is_refused(client: OneShotClient) -> None:
    page = (await client.call("audit_events", {"since": "2026-11-01", "page_size": 5})).structured
    with pytest.raises(ToolCallError, match="different set of filters"):
        await client.call("audit_events", {"since": "2026-11-01", "page_size": 5, "action": "login",
                                           "cursor": page["next_cursor"]})
    with pytest.raises(ToolCallError, match="cursor is not one this tool returned"):
        await client.call("audit_events", {"cursor": "not-a-cursor!!"})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"since": "yesterday"}, "ISO 8601"),
        ({"since": "2026-11-12", "until": "2026-11-11"}, "earlier than until"),
        ({"source_ip": "10.0.0.300"}, "not an IP address"),
        ({"principal": "x' OR 1=1 --"}, "letters, digits"),
        ({"page_size": 0}, "page_size"),
        ({"status": "maybe"}, "status"),
    ],
)
async def test_bad_arguments_get_clear_errors(client: OneShotClient, args: dict[str, object], message: str) -> None:
    with pytest.raises(ToolCallError, match=message) as caught:
        await client.call("audit_events", args)
    assert "Traceback" not in caught.value.message


async def test_cluster_inventory_flags_risky_settings(client: OneShotClient) -> None:
    inventory = (await client.call("cluster_inventory")).structured
    clusters = {c["cluster_id"]: c for c in inventory["clusters"]}
    assert set(clusters) == {"c-1", "c-2", "c-3"}  # c-4 is deleted
    assert clusters["c-1"]["risks"] == ["no_auto_termination", "no_isolation"]  # its latest change
    assert clusters["c-2"]["risks"] == ["old_runtime"]
    assert clusters["c-3"]["risks"] == []  # job clusters terminate with their run
    with_deleted = (await client.call("cluster_inventory", {"include_deleted": True})).structured
    assert "c-4" in {c["cluster_id"] for c in with_deleted["clusters"]}
    risky = (await client.call("cluster_inventory", {"only_risky": True})).structured
    assert {c["cluster_id"] for c in risky["clusters"]} == {"c-1", "c-2"}


async def test_query_history_summary_per_user(client: OneShotClient) -> None:
    summary = (await client.call("query_history_summary", {"since": "2026-11-01"})).structured
    groups = {g["key"]: g for g in summary["groups"]}
    for user in {r["executed_by"] for r in query_rows()}:
        rows = [r for r in query_rows() if r["executed_by"] == user]
        assert groups[user]["queries"] == len(rows)
        assert groups[user]["failures"] == sum(r["execution_status"] == "FAILED" for r in rows)
        assert groups[user]["read_bytes"] == sum(r["read_bytes"] for r in rows)
        median = statistics.median(r["total_duration_ms"] for r in rows)
        assert groups[user]["p50_duration_ms"] == pytest.approx(median, abs=0.05)  # exact, rounded to 0.1 ms


async def test_query_history_summary_per_warehouse(client: OneShotClient) -> None:
    summary = (await client.call("query_history_summary", {"group_by": "warehouse", "since": "2026-11-01"})).structured
    assert {g["key"]: g["queries"] for g in summary["groups"]} == {"wh-a": 30, "wh-b": 30}


async def test_table_schemas_are_resources(settings: Settings) -> None:
    async with connect_in_process(build_system_tables_server(settings)) as c:
        resources = (await c.raw.list_resources()).resources
        uris = {str(r.uri) for r in resources}
        assert "insight://system-tables/system.access.audit/schema" in uris
        assert len(uris) == 6
        read = await c.raw.read_resource("insight://system-tables/system.query.history/schema")
        assert '"read_bytes"' in read.contents[0].text


async def test_missing_workspace_says_how_to_make_one(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "empty")
    async with connect_in_process(build_system_tables_server(settings)) as c:
        with pytest.raises(ToolCallError, match="insight-mcp workspace generate"):
            await c.call("run_query", {"sql": "SELECT 1 FROM system.access.audit"})


async def test_limit_argument_is_bounded_by_the_row_cap(tmp_path: Path, fixture_workspace: Path) -> None:
    settings = load_settings(home=tmp_path, workspace_file=fixture_workspace, query={"row_cap": 10})
    async with connect_in_process(build_system_tables_server(settings)) as c:
        with pytest.raises(ToolCallError, match="limit"):
            await c.call("run_query", {"sql": "SELECT 1 FROM system.access.audit", "limit": 11})
        answer = (await c.call("run_query", {"sql": "SELECT event_id FROM system.access.audit LIMIT 500",
                                             "limit": 10})).structured
        assert answer["row_count"] == 10 and answer["truncated"] is True


@pytest.mark.parametrize("since", ["2026-11-10T06:00:00", "2026-11-10T06:00:00Z", "2026-11-10T08:00:00+02:00",
                                   "2026-11-10T06:00:00.000+00:00"])
async def test_time_arguments_accept_naive_utc_and_offsets_alike(client: OneShotClient, since: str) -> None:
    """Naive input is read as UTC; an offset is converted; the answer says the window in RFC 3339 with Z."""
    page = (await client.call("audit_events", {"since": since, "until": "2026-11-11", "page_size": 1})).structured
    assert page["since"] == "2026-11-10T06:00:00Z"
    assert page["until"] == "2026-11-11T00:00:00Z"
    assert all(e["event_time"].endswith("Z") for e in page["events"])


async def test_cursor_pages_on_from_the_last_event_of_the_page(client: OneShotClient) -> None:
    first = (await client.call("audit_events", {"since": "2026-11-10", "until": "2026-11-12", "page_size": 2}))
    second = await client.call("audit_events", {"since": "2026-11-10", "until": "2026-11-12", "page_size": 2,
                                                "cursor": first.structured["next_cursor"]})
    assert second.structured["events"][0]["event_time"] <= first.structured["events"][-1]["event_time"]


async def test_run_query_reports_databricks_type_names_like_describe_table(client: OneShotClient) -> None:
    """Types in an answer are spelled as describe_table spells them, so SQL written from one fits the other."""
    answer = (await client.call("run_query", {"sql": "SELECT * FROM system.access.audit", "limit": 1})).structured
    types = {c["name"]: c["type"] for c in answer["columns"]}
    assert types["request_params"] == "map<string,string>"
    assert types["user_identity"].startswith("struct<email:string,")
    assert types["event_time"] == "timestamp" and types["event_id"] == "string"
    described = (await client.call("describe_table", {"table": "system.access.audit"})).structured
    assert types == {c["name"]: c["type"] for c in described["columns"]}
    nested = "SELECT map_keys(request_params) AS k, response.status_code AS code FROM system.access.audit"
    answer = (await client.call("run_query", {"sql": nested, "limit": 1})).structured
    assert [c["type"] for c in answer["columns"]] == ["array<string>", "int"]


async def test_run_query_refuses_a_cross_join_of_huge_generators_before_running_it(client: OneShotClient) -> None:
    with pytest.raises(ToolCallError) as refused:
        await client.call("run_query", {"sql": "SELECT * FROM range(1000000000) a, range(1000000000) b"})
    assert "range(1000000000) would produce 1,000,000,000 rows; at most 1,000,000 per generator" in (
        refused.value.message
    )
    assert "INSIGHT_QUERY__MAX_GENERATOR_ROWS" in refused.value.message
    with pytest.raises(ToolCallError, match=r"range\(1000\) is joined with range\(1000\)"):
        await client.call("run_query", {"sql": "SELECT * FROM range(1000) a CROSS JOIN range(1000) b"})
    answer = (await client.call("run_query", {"sql": "SELECT count(*) AS n FROM range(1000000)"})).structured
    assert answer["rows"] == [[1_000_000]]


class CountingBackend(DuckDBSystemTables):
    """The real backend, counting the statements inside it at once; `door`, when set, holds each one at the door."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.inside = 0
        self.most = 0
        self.entered = anyio.Event()
        self.door: anyio.Event | None = None

    async def execute(
        self, statement: Statement, *, max_rows: int, max_chars: int, timeout_seconds: float
    ) -> QueryResult:
        self.inside += 1
        self.most = max(self.most, self.inside)
        self.entered.set()
        try:
            if self.door is not None:
                await self.door.wait()
            return await super().execute(
                statement, max_rows=max_rows, max_chars=max_chars, timeout_seconds=timeout_seconds
            )
        finally:
            self.inside -= 1


SLOWISH = ("SELECT count(*) AS n FROM system.access.audit a JOIN system.access.audit b "
           "ON a.event_id < b.event_id JOIN system.access.audit c ON b.event_id < c.event_id")


async def test_one_client_runs_at_most_its_limit_of_statements_at_once(tmp_path: Path, fixture_workspace: Path) -> None:
    settings = load_settings(home=tmp_path, workspace_file=fixture_workspace,
                             query={"max_concurrent_per_client": 1})
    backend = CountingBackend(fixture_workspace)
    answers: list[int] = []
    async with connect_in_process(build_system_tables_server(settings, backend)) as c:

        async def ask() -> None:
            answers.append((await c.call("run_query", {"sql": SLOWISH})).structured["rows"][0][0])

        async with anyio.create_task_group() as group:
            for _ in range(4):
                group.start_soon(ask)
    await backend.close()
    assert answers == [answers[0]] * 4 and answers[0] > 0
    assert backend.most == 1


async def test_a_call_past_the_client_limit_is_refused_once_the_wait_is_over(
    tmp_path: Path, fixture_workspace: Path
) -> None:
    """The first call holds the only slot until the second has given up: the second is refused, the first answers."""
    settings = load_settings(home=tmp_path, workspace_file=fixture_workspace,
                             query={"max_concurrent_per_client": 1, "timeout_seconds": 0.5})
    backend = CountingBackend(fixture_workspace)
    backend.door = anyio.Event()
    first: list[int] = []
    async with connect_in_process(build_system_tables_server(settings, backend)) as c:

        async def hold() -> None:
            first.append((await c.call("run_query", {"sql": "SELECT 7 AS n"})).structured["rows"][0][0])

        async with anyio.create_task_group() as group:
            group.start_soon(hold)
            await backend.entered.wait()
            with pytest.raises(ToolCallError) as refused:
                await c.call("run_query", {"sql": "SELECT 8 AS n"})
            backend.door.set()
    await backend.close()
    assert "query refused by rule 'concurrency'" in refused.value.message
    assert "already has 1 queries running" in refused.value.message
    assert "INSIGHT_QUERY__MAX_CONCURRENT_PER_CLIENT" in refused.value.message
    assert first == [7] and backend.most == 1


async def test_run_query_cleans_names_and_sql_the_caller_wrote(client: OneShotClient) -> None:
    """An alias or a literal is the caller's text, maybe copied from a log line: no invisible or control characters
    reach the answer, in its structured data or its fenced text."""
    sql = "SELECT 'x\u202eexe.gnp' AS \"admin\u200b\u202ename\", 1 AS \"n\x1b[2J\" FROM system.access.audit"
    got = await client.call("run_query", {"sql": sql, "limit": 1})
    answer = got.structured
    assert [c["name"] for c in answer["columns"]] == ["adminname", "n[2J"]
    assert answer["rows"] == [["xexe.gnp", 1]]
    assert "\u202e" not in answer["executed_sql"] and "\u200b" not in answer["executed_sql"]
    assert "\x1b" not in answer["executed_sql"]
    assert not any(ch in got.text for ch in ("\u202e", "\u200b", "\x1b"))
    nested = await client.call("run_query", {"sql": "SELECT named_struct('a\u202eb', 1) AS s FROM system.access.audit",
                                             "limit": 1})
    assert nested.structured["columns"] == [{"name": "s", "type": "struct<`ab`:int>"}]  # a struct's field names too
    assert "\u202e" not in nested.text

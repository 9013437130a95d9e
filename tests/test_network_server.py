"""The network server's analyses against a workspace with known traffic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from insight_mcp.agents.ingestion.duckdb_backend import DuckDBSystemTables
from insight_mcp.agents.network.analysis import (
    ReferenceLists,
    classify_destination,
    classify_ip,
    load_reference_lists,
)
from insight_mcp.agents.security.case_workspace import build_workspace
from insight_mcp.agents.security.reference_lists import ipv4_prefix24, ipv4_prefix24_provider
from insight_mcp.agents.settings import load_settings
from insight_mcp.clients.client import ToolAnswer, ToolCallError, connect_in_process
from insight_mcp.servers.network import build_network_server

AUDIT = [
    {"t": "2026-11-10T08:00:00", "email": "ana.ruiz@corp.example", "ip": "198.51.100.20", "action": "login",
     "repeat": 12, "every_seconds": 1800},
    {"t": "2026-11-10T08:00:00", "email": "li.wei@corp.example", "ip": "198.51.100.20", "action": "login",
     "repeat": 6, "every_seconds": 1800},
    {"t": "2026-11-10T09:00:00", "email": "li.wei@corp.example", "ip": "10.9.8.7", "action": "runCommand",
     "service": "notebook", "repeat": 5},
    {"t": "2026-11-10T11:00:00", "email": "ana.ruiz@corp.example", "ip": "192.0.2.66", "action": "IpAccessDenied",
     "status": 403, "repeat": 9, "every_seconds": 5},
]
EGRESS = [
    {"event_time": "2026-11-10T12:00:00", "workspace_id": "1001", "event_id": "eg", "destination": "pastebin.com",
     "access_type": "DENIED", "repeat": 4},
    {"event_time": "2026-11-10T12:30:00", "workspace_id": "1001", "event_id": "eg2",
     "destination": "pypi.org", "access_type": "DENIED", "repeat": 2},
]
QUERIES = [
    {"start_time": f"2026-11-10T{h:02d}:00:00", "statement_id": f"q{h}", "executed_by": "ana.ruiz@corp.example",
     "compute": {"type": "WAREHOUSE", "warehouse_id": "wh-1"}, "read_bytes": 10_000 * (h + 1),
     "produced_rows": 5, "waiting_at_capacity_duration_ms": 4000 if h == 3 else 0, "compilation_duration_ms": 50,
     "total_duration_ms": 900, "spilled_local_bytes": 0}
    for h in range(6)
]
WINDOW = {"since": "2026-11-10T00:00:00", "until": "2026-11-11T00:00:00"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_workspace(tmp_path_factory.mktemp("net") / "ws.duckdb",
                           {"audit": AUDIT, "outbound_network": EGRESS, "query_history": QUERIES})


async def _call(tmp_path: Path, workspace: Path, tool: str, args: dict[str, Any], **extra: Any) -> ToolAnswer:
    settings = load_settings(home=tmp_path, workspace_file=workspace, **extra)
    async with connect_in_process(build_network_server(settings, DuckDBSystemTables(workspace))) as client:
        return await client.call(tool, args)


async def test_external_ips(tmp_path: Path, workspace: Path) -> None:
    ips = {i["ip"]: i for i in (await _call(tmp_path, workspace, "external_ips", WINDOW)).structured["ips"]}
    assert set(ips) == {"198.51.100.20", "192.0.2.66"}  # private 10.9.8.7 left out by default
    assert ips["198.51.100.20"]["principals"] == 2 and ips["198.51.100.20"]["events"] == 18
    assert ips["192.0.2.66"]["failures"] == 9
    trusted = (await _call(tmp_path, workspace, "external_ips", WINDOW,
                           detections={"suppression": {"trusted_cidrs": ["198.51.100.0/24"]}})).structured
    assert {i["ip"]: i["classification"] for i in trusted["ips"]}["198.51.100.20"] == "trusted"


async def test_ip_access_denials(tmp_path: Path, workspace: Path) -> None:
    found = (await _call(tmp_path, workspace, "ip_access_denials", WINDOW)).structured
    assert found["total"] == 9
    assert found["by_ip"][0]["ip"] == "192.0.2.66" and found["by_ip"][0]["principals"] == ["ana.ruiz@corp.example"]


async def test_connection_patterns(tmp_path: Path, workspace: Path) -> None:
    found = (await _call(tmp_path, workspace, "connection_patterns", {**WINDOW, "principal": "li.wei@corp.example"}))
    [pattern] = found.structured["principals"]
    assert pattern["distinct_ips"] == 2 and pattern["public_ips"] == ["198.51.100.20"]
    assert pattern["events"] == 11 and 8 in pattern["active_hours_utc"]


async def test_egress_denials_are_classified(tmp_path: Path, workspace: Path) -> None:
    found = (await _call(tmp_path, workspace, "egress_denials", WINDOW)).structured["destinations"]
    by_name = {d["destination"]: d for d in found}
    assert by_name["pastebin.com"]["denials"] == 4 and by_name["pypi.org"]["denials"] == 2
    assert found[0]["destination"] == "pastebin.com"  # risky classes first


async def test_volume_and_bottlenecks(tmp_path: Path, workspace: Path) -> None:
    volume = (await _call(tmp_path, workspace, "data_volume_insights", WINDOW)).structured
    assert volume["by_user"][0] == {"key": "ana.ruiz@corp.example", "queries": 6, "read_bytes": 210_000,
                                    "produced_rows": 30, "shuffle_read_bytes": 0, "outlier": False}
    hot = (await _call(tmp_path, workspace, "bottlenecks", WINDOW)).structured["hotspots"]
    assert hot[0]["hour"] == "2026-11-10T03:00:00Z" and hot[0]["p95_queue_ms"] == 4000


async def test_bad_window(tmp_path: Path, workspace: Path) -> None:
    with pytest.raises(ToolCallError, match="earlier than until"):
        await _call(tmp_path, workspace, "external_ips", {"since": "2026-11-12", "until": "2026-11-10"})


def test_classifiers() -> None:
    lists = ReferenceLists(anonymizer_prefixes={"185.220.101"}, destinations={"ngrok-free.app": "tunnel"})
    assert classify_ip("185.220.101.7", [], lists) == "anonymizer"
    assert classify_ip("10.0.0.1", [], lists) == "private"
    assert classify_ip("8.8.8.8", ["8.8.8.0/24"], lists) == "trusted"
    assert classify_ip("not-an-ip", [], lists) == "invalid"
    assert classify_destination("abc.ngrok-free.app", lists) == "tunnel"
    assert classify_destination("ngrok-free.app.evil.example", lists) == "other"


def test_the_anonymiser_list_names_providers_and_refuses_a_malformed_line() -> None:
    lines = ["104.244.72.0/23 frantech", "209.141.32.0/24 frantech", "23.129.64.7", "2001:db8::/32 v6only",
             "209.141.32.9 other"]  # inside a listed /24: that /24's entry names it
    assert ipv4_prefix24_provider(lines, "anonymizers.txt") == [
        "104.244.72=frantech", "104.244.73=frantech", "209.141.32=frantech", "23.129.64.7=23.129.64.7"]
    assert ipv4_prefix24(lines, "anonymizers.txt") == ["104.244.72", "104.244.73", "209.141.32", "23.129.64.7"]
    with pytest.raises(ValueError, match=r"anonymizers.txt: '1.2.3.0/24 two words' must be an address or range"):
        ipv4_prefix24(["1.2.3.0/24 two words"], "anonymizers.txt")
    with pytest.raises(ValueError, match=r"'1.2.3.0/24 bad=name' must be"):
        ipv4_prefix24_provider(["1.2.3.0/24 bad=name"], "anonymizers.txt")  # '=' would split the SQL pair
    with pytest.raises(ValueError, match="is not an IP address"):
        ipv4_prefix24(["vpn.example.com provider"], "anonymizers.txt")
    shipped = load_reference_lists()  # the shipped file, with its provider names, still classifies addresses
    assert "185.220.101" in shipped.anonymizer_prefixes and "209.141.40" in shipped.anonymizer_prefixes

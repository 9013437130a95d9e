"""Every tool's published contract is reviewed: a renamed argument breaks every client that learned the old name."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from insight_mcp.agents.settings import load_settings
from insight_mcp.servers.app import SERVER_FACTORIES, build_servers
from insight_mcp.servers.docs import render_all, tool_specs

SNAPS = Path(__file__).parent / "__toolsnaps__"
UPDATE = os.environ.get("UPDATE_TOOLSNAPS") == "1"


async def _all_specs(tmp_path: Path) -> dict[str, list[dict[str, Any]]]:
    settings = load_settings(home=tmp_path)
    return {name: await tool_specs(server) for name, server in build_servers(settings).items()}


@pytest.mark.parametrize("server_name", list(SERVER_FACTORIES))
async def test_tool_schemas_match_snapshots(server_name: str, tmp_path: Path) -> None:
    specs = (await _all_specs(tmp_path))[server_name]
    for spec in specs:
        snap = SNAPS / server_name / f"{spec['name']}.json"
        current = {k: spec[k] for k in ("name", "title", "inputSchema", "outputSchema", "annotations") if k in spec}
        if UPDATE or not snap.exists():
            snap.parent.mkdir(parents=True, exist_ok=True)
            snap.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
            if not UPDATE:
                pytest.fail(f"new snapshot written for {server_name}/{spec['name']}: review and commit it")
        assert json.loads(snap.read_text()) == current, (
            f"{server_name}/{spec['name']} changed its schema; review, then rerun with UPDATE_TOOLSNAPS=1"
        )
    names = {s["name"] for s in specs}
    stale = {p.stem for p in (SNAPS / server_name).glob("*.json")} - names
    assert not stale, f"snapshots for removed tools: {stale}"


async def test_every_tool_sets_all_annotations_and_a_title(tmp_path: Path) -> None:
    for server_name, specs in (await _all_specs(tmp_path)).items():
        for spec in specs:
            hints = spec.get("annotations", {})
            for key in ("readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint"):
                assert isinstance(hints.get(key), bool), f"{server_name}/{spec['name']} leaves {key} unset"
            assert spec.get("title"), f"{server_name}/{spec['name']} has no title"
            assert "outputSchema" in spec, f"{server_name}/{spec['name']} has no output schema"
            assert len(spec.get("description", "")) > 60, f"{server_name}/{spec['name']} needs a real description"


async def test_docs_are_generated_from_the_live_schemas() -> None:
    docs = Path(__file__).parents[1] / "docs"
    for file_name, text in (await render_all()).items():
        page = docs / file_name
        assert page.exists(), f"docs/{file_name} is missing: run `make docs`"
        assert page.read_text(encoding="utf-8") == text, f"docs/{file_name} is stale: run `make docs`"


async def test_read_only_mode_exposes_no_write_tool(tmp_path: Path) -> None:
    writable = {name: {t.name for t in await s.list_tools() if not t.annotations.read_only_hint}
                for name, s in build_servers(load_settings(home=tmp_path)).items()}
    assert writable["evaluation"] >= {"evaluate_detections", "rate_answer", "cancel_evaluation_job"}
    locked = build_servers(load_settings(home=tmp_path, read_only=True))
    for name, server in locked.items():
        tools = await server.list_tools()
        assert tools and all(t.annotations.read_only_hint for t in tools), name
        assert not writable[name] & {t.name for t in tools}, f"{name} still offers a write tool"

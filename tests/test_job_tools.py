"""The job tools over MCP: a handle at once, progress notifications while waiting, the result, cancellation, and
errors that say what to do; each server that starts jobs declares them once through add_job_tools."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import anyio
import pytest
from mcp import Client
from mcp.server.mcpserver.context import Context
from mcp_types import CallToolResult
from pydantic import BaseModel, Field

from insight_mcp.agents.core.jobs import JobRunner, Progress
from insight_mcp.agents.core.state import StateStore
from insight_mcp.clients.client import ToolCallError, connect_in_process
from insight_mcp.servers.common import respond
from insight_mcp.servers.jobs import add_job_tools, caller_of
from insight_mcp.servers.toolset import InsightServer


class Started(BaseModel):
    job_id: str


def counting_server(runner: JobRunner) -> InsightServer:
    server = InsightServer("counter", version="1", instructions="test", open_world=False)

    @server.declare("start_count", title="Start counting", example={"to": 3})
    async def start_count(to: Annotated[int, Field(ge=1, le=1000)], ctx: Context) -> Annotated[CallToolResult, Started]:
        """Count to `to` slowly in the background and return the job handle at once; a probe for the job tools."""

        async def count(progress: Progress) -> dict[str, int]:
            for i in range(1, to + 1):
                progress(i / to, f"counted {i}")
                await anyio.sleep(0.3)
            return {"counted": to}

        job = runner.submit("count", caller_of(ctx), {"to": to}, count)
        return respond(Started(job_id=job.id), source="a test")

    add_job_tools(server, runner, "count", source="a test")
    return server


@pytest.fixture
def runner(tmp_path: Path) -> Any:
    made = JobRunner(StateStore(tmp_path / "state.db"))
    yield made
    made.close()


async def test_start_wait_with_progress_then_result(runner: JobRunner) -> None:
    server = counting_server(runner)
    seen: list[tuple[float, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, message))

    async with Client(server) as client:
        started = await client.call_tool("start_count", {"to": 4})
        job_id = started.structured_content["job_id"]
        waited = await client.call_tool("wait_for_count_job", {"job_id": job_id, "timeout_seconds": 60},
                                        progress_callback=on_progress)
    record = waited.structured_content
    assert record["status"] == "succeeded" and record["result"] == {"counted": 4}
    assert len(seen) >= 3 and seen[-1][0] == 1.0 and [p for p, _ in seen] == sorted(p for p, _ in seen)


async def test_list_get_and_cancel(runner: JobRunner) -> None:
    server = counting_server(runner)
    async with connect_in_process(server) as client:
        job_id = (await client.call("start_count", {"to": 100})).structured["job_id"]
        listed = (await client.call("list_count_jobs")).structured["jobs"]
        assert [j["id"] for j in listed] == [job_id]
        await anyio.sleep(0.5)
        assert (await client.call("get_count_job", {"job_id": job_id})).structured["status"] == "running"
        cancelled = (await client.call("cancel_count_job", {"job_id": job_id})).structured
        assert cancelled["status"] == "cancelled" and 0 < cancelled["progress"] < 1
        with pytest.raises(ToolCallError, match="no job 'job-nope' for this caller"):
            await client.call("get_count_job", {"job_id": "job-nope"})


async def test_job_tools_are_declared_once_with_write_hints(runner: JobRunner) -> None:
    server = counting_server(runner)
    tools = {t.name: t for t in await server.list_tools()}
    assert set(server.declarations) == set(tools)
    assert tools["cancel_count_job"].annotations.read_only_hint is False
    assert tools["get_count_job"].annotations.read_only_hint is True
    read_only = InsightServer("ro", version="1", instructions="t", open_world=False, read_only=True)
    add_job_tools(read_only, runner, "count", source="a test")
    assert "cancel_count_job" not in {t.name for t in await read_only.list_tools()}

"""The MCP face of long work: tools to follow, wait for, list and cancel the jobs a server starts.

A server that starts jobs (evaluation, optimization) adds these with `add_job_tools(server, runner, "evaluation")`,
which declares `get_evaluation_job`, `wait_for_evaluation_job`, `list_evaluation_jobs` and
`cancel_evaluation_job`. A job belongs to its caller, told apart by credentials: the bearer token's holder when
`serve` requires a token. Without one the server answers only this machine (`serve` refuses a public address
without a token), and every local client is the same caller, so a client that reconnects still finds its jobs.
"""

# No `from __future__ import annotations` here: the tools' argument descriptions are built from `noun` at definition.


import hashlib
from typing import Annotated, Any

from mcp.server.mcpserver.context import Context
from mcp_types import CallToolResult
from pydantic import Field

from insight_mcp.agents.core.jobs import JobList, JobRecord, JobRunner
from insight_mcp.servers.common import respond
from insight_mcp.servers.toolset import InsightServer

MAX_WAIT_SECONDS = 300


def caller_of(ctx: Context[Any, Any]) -> str:
    """Who is calling, for binding jobs: the holder of the bearer token, else this machine's clients."""
    headers = ctx.headers
    if headers is None or "authorization" not in headers:  # Starlette's `get` of a missing header raises, then catches
        return "local"
    authorization = headers["authorization"]
    if authorization.lower().startswith("bearer "):
        return "token:" + hashlib.sha256(authorization[7:].strip().encode()).hexdigest()[:24]
    return "local"


def add_job_tools(
    server: InsightServer, runner: JobRunner, noun: str, *, source: str, example_from: dict[str, str] | None = None
) -> None:
    """Declare the four job tools for jobs of one kind (`noun`), answering from `runner`.

    `example_from` names the tool whose answer gives the docs example a live job id (the tool that starts one).
    """
    article = "an" if noun[:1].lower() in "aeiou" else "a"
    example = {"job_id": "job-4Zq1b7W0c9Yd2Xe5Vf8Ug3Th"}
    example_from = example_from or {"job_id": f"list_{noun}_jobs:/jobs/0/id"}

    @server.declare(f"get_{noun}_job", title=f"Get {article} {noun} job", example=example, example_from=example_from)
    async def get_job(
        job_id: Annotated[str, Field(description=f"The handle {article} {noun} tool returned.")], ctx: Context,
    ) -> Annotated[CallToolResult, JobRecord]:
        """The status, progress (0-1), result or error of one job this caller started. Poll it, or use the wait
        tool to be told of progress as it happens.
        """
        return respond(runner.get(job_id.strip(), caller_of(ctx)), source=source)

    @server.declare(f"wait_for_{noun}_job", title=f"Wait for {article} {noun} job",
                    example={**example, "timeout_seconds": 120}, example_from=example_from)
    async def wait_for_job(
        job_id: Annotated[str, Field(description=f"The handle {article} {noun} tool returned.")], ctx: Context,
        timeout_seconds: Annotated[int, Field(ge=1, le=MAX_WAIT_SECONDS, description="Longest wait.")] = 60,
    ) -> Annotated[CallToolResult, JobRecord]:
        """Wait until the job finishes or the timeout passes, sending progress notifications meanwhile; returns
        the job as it then is. A job still running after the timeout goes on: wait again or poll.
        """

        async def tell(record: JobRecord) -> None:
            await ctx.report_progress(record.progress, 1.0, record.message)

        record = await runner.wait(job_id.strip(), caller_of(ctx), timeout=timeout_seconds, on_progress=tell)
        return respond(record, source=source)

    @server.declare(f"list_{noun}_jobs", title=f"List {noun} jobs")
    async def list_jobs(
        ctx: Context, limit: Annotated[int, Field(ge=1, le=200, description="Most jobs, newest first.")] = 20,
    ) -> Annotated[CallToolResult, JobList]:
        """This caller's jobs, newest first, with status and progress; results are left out here, ask
        the get tool for one job's result.
        """
        jobs = [job.model_copy(update={"result": None}) for job in runner.list(caller_of(ctx), limit=limit)]
        return respond(JobList(jobs=jobs), source=source)

    @server.declare(f"cancel_{noun}_job", title=f"Cancel {article} {noun} job", example=example,
                    example_from=example_from, writes=True, idempotent=True)
    async def cancel_job(
        job_id: Annotated[str, Field(description=f"The handle {article} {noun} tool returned.")], ctx: Context,
    ) -> Annotated[CallToolResult, JobRecord]:
        """Stop a running job of this caller's; it ends as `cancelled` and keeps how far it got. A finished job
        is returned as it ended.
        """
        return respond(runner.cancel(job_id.strip(), caller_of(ctx)), source=source)

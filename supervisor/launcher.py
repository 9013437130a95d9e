"""The supervisor's hand on the optimization server: over streamable HTTP with the typed client, never in-process."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from insight_mcp.agents.settings import Settings
from insight_mcp.agents.supervision.config import MonitoredAgent, OnDemandOptimization
from insight_mcp.agents.supervision.interventions import StartRefused
from insight_mcp.clients.client import ToolCallError
from insight_mcp.clients.typed import OptimizationClient
from insight_mcp.supervisor.daemon import JobView
from insight_mcp.supervisor.window import Verdict

T = TypeVar("T")
CLOCK_SKEW = dt.timedelta(seconds=30)


def _view(record: Any) -> JobView:
    return JobView(id=record.id, status=record.status, finished=record.status in ("succeeded", "failed", "cancelled",
                                                                                   "interrupted"),
                   result=record.result, error=record.error)


class McpLauncher:
    """Starts `optimize_prompt` for a tripped agent and reads its job, one short connection per call."""

    def __init__(self, config: OnDemandOptimization, settings: Settings) -> None:
        self.url = config.mcp_server.optimization_url
        self.token = settings.api_token.get_secret_value() if settings.api_token else None
        self.config = config

    def _run(self, work: Callable[[OptimizationClient], Awaitable[T]]) -> T:
        async def call() -> T:
            async with OptimizationClient.connect_http(self.url, token=self.token, timeout=60.0) as client:
                return await work(client)

        return anyio.run(call)

    def start(self, agent: MonitoredAgent, verdict: Verdict, claim: str) -> str:
        """One optimization of the agent's prompt, learning from its traces over the window just judged."""
        arguments = self.config.optimization_arguments(agent, verdict.metrics.since_ms)

        async def work(client: OptimizationClient) -> str:
            try:
                return (await client.optimize_prompt(**arguments)).job_id
            except ToolCallError as exc:  # an answer, not an outage: the server refused this request
                raise StartRefused(str(exc)) from None

        return self._run(work)

    def get(self, job_id: str) -> JobView:
        return self._run(lambda client: self._get(client, job_id))

    @staticmethod
    async def _get(client: OptimizationClient, job_id: str) -> JobView:
        return _view(await client.get_optimization_job(job_id))

    def find_since(self, prompt: str, since: float) -> JobView | None:
        """The job a claim made before a crash started, if the call reached the server: the newest for the prompt
        created after the claim (jobs are bound to this caller's token, so nobody else's is taken)."""
        after = dt.datetime.fromtimestamp(since, dt.UTC).replace(tzinfo=None) - CLOCK_SKEW

        async def work(client: OptimizationClient) -> JobView | None:
            jobs = (await client.list_optimization_jobs(limit=50)).jobs
            mine = [j for j in jobs if j.kind == "prompt_optimization" and j.params.get("prompt") == prompt
                    and j.created_at >= after]
            return _view(max(mine, key=lambda j: j.created_at)) if mine else None

        return self._run(work)

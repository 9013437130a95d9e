"""The request log: one line a tool call, at the level the last configuration set."""

from __future__ import annotations

import json
import logging

import anyio
import pytest
import structlog

from insight_mcp.agents.logs import configure_logging
from insight_mcp.servers.common import guarded


async def _tool(value: int) -> dict[str, int]:
    return {"value": value}


def _lines(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_each_call_logs_one_line_and_a_new_configuration_reaches_the_call_log(
    capsys: pytest.CaptureFixture[str],
) -> None:
    tool = guarded("probe", server="test")(_tool)
    before = structlog.get_config()
    try:
        configure_logging("info", json_logs=True)
        anyio.run(tool, 1)
        anyio.run(tool, 2)
        lines = [line for line in _lines(capsys.readouterr().err) if line["event"] == "tool_called"]
        assert [line["tool"] for line in lines] == ["probe", "probe"]
        assert all(line["level"] == "info" and isinstance(line["ms"], float) for line in lines)

        configure_logging("warning", json_logs=True)  # the logger bound under "info" must not go on writing
        anyio.run(tool, 3)
        assert not [line for line in _lines(capsys.readouterr().err) if line["event"] == "tool_called"]

        configure_logging("info", json_logs=True)
        anyio.run(tool, 4)
        assert [line["event"] for line in _lines(capsys.readouterr().err)] == ["tool_called"]
        # structlog's own configure reaches it too: here a level that filters the line out.
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
        anyio.run(tool, 5)
        assert not [line for line in _lines(capsys.readouterr().err) if line["event"] == "tool_called"]
    finally:
        structlog.configure(**before)

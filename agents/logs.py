"""structlog to stderr: readable on a terminal, JSON lines everywhere else."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


class _CurrentStderr:
    """Whatever sys.stderr is at the moment of writing: test runners and embedding hosts swap it."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "info", *, json_logs: bool | None = None) -> None:
    """Send every log line to stderr, so stdout stays free for answers and the stdio transport."""
    json_logs = (not sys.stderr.isatty()) if json_logs is None else json_logs
    numeric = logging.getLevelName(level.upper())
    renderer = structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, force=True)
    for noisy in ("mcp", "httpx", "httpx2", "uvicorn.access", "sqlglot"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # The Databricks SDK warns when its host discovery falls back to the explicit configuration: the warehouse
    # backend's own error names an unreachable host in words a person can act on.
    logging.getLogger("databricks.sdk").setLevel(max(numeric, logging.ERROR))


class CallLogger:
    """A logger for the line every tool call writes: bound once per configuration, not on every line.

    structlog's module-level loggers bind themselves on each use so that a later configuration reaches them; that
    costs a call 4 us even when its level is filtered out. This one binds again only when structlog's processors,
    wrapper class or logger factory are no longer the ones it was bound with (any `structlog.configure` that sets
    them, `configure_logging` included).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._bound: Any = None
        self._under: tuple[Any, Any, Any] | None = None

    def get(self) -> Any:
        config = structlog.get_config()
        under = (config["processors"], config["wrapper_class"], config["logger_factory"])
        if self._under is None or any(now is not then for now, then in zip(under, self._under, strict=True)):
            self._bound = structlog.get_logger(self.name).bind()
            self._under = under
        return self._bound

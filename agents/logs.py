"""structlog to stderr: readable on a terminal, JSON lines everywhere else."""

from __future__ import annotations

import logging
import sys

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

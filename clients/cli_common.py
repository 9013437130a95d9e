"""What every subcommand module shares: the consoles, clean failure, JSON output, the loaded settings, the progress
bar and quiet libraries."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import typing
from collections.abc import Callable, Iterator
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from insight_mcp.agents.settings import Settings

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
BackendOpt = Annotated[str | None, typer.Option(
    "--backend", help="duckdb (the embedded workspace), spark or databricks; default INSIGHT_BACKEND.")]
BACKENDS: tuple[str, ...] = typing.get_args(Settings.model_fields["backend"].annotation)


def fail(message: str, code: int = 2) -> NoReturn:
    """End the command with a message a person can act on, and no traceback."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    raise typer.Exit(code)


def tag_pairs(pairs: list[str] | None, option: str) -> dict[str, str]:
    """KEY=VALUE options as a tag filter; a malformed one fails with how to write it."""
    tags: dict[str, str] = {}
    for pair in pairs or []:
        key, equals, value = pair.partition("=")
        if not equals or not key.strip():
            fail(f"{option} {pair[:80]!r}: write it as KEY=VALUE, e.g. {option} app=support-bot")
        tags[key.strip()] = value
    return tags


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


def settings_of(ctx: typer.Context, backend: str | None = None) -> Settings:
    """The settings the root command loaded once for the whole invocation, on the backend asked for."""
    settings: Settings = ctx.find_root().obj
    if backend is None or backend == settings.backend:
        return settings
    if backend not in BACKENDS:
        fail(f"--backend must be one of {', '.join(BACKENDS)}")
    return settings.model_copy(update={"backend": backend})


@contextlib.contextmanager
def progress(enabled: bool, title: str) -> Iterator[Callable[[float, str], None] | None]:
    """A progress bar on stderr when it is a terminal; None (silence) when piped or for --json."""
    if not (enabled and err.is_terminal):
        yield None
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TimeElapsedColumn(), console=err,
                  transient=True) as bar:
        task = bar.add_task(title, total=1.0)

        def step(fraction: float, message: str | None = None) -> None:
            bar.update(task, completed=fraction, description=message or title)

        yield step


def quiet_mlflow() -> None:
    """Only warnings from MLflow, Alembic, LiteLLM and httpx: their chatter would bury a command's progress."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported, later
    for name in ("mlflow", "alembic", "LiteLLM", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)

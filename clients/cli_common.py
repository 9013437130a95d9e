"""What every subcommand module shares: the consoles, clean failure, JSON output and the loaded settings."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from insight_mcp.agents.settings import Settings

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def fail(message: str, code: int = 2) -> NoReturn:
    """End the command with a message a person can act on, and no traceback."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


def settings_of(ctx: typer.Context) -> Settings:
    """The settings the root command loaded once for the whole invocation."""
    return ctx.find_root().obj  # type: ignore[no-any-return]

"""`insight-mcp rules`: the detection rules as code a user can own, listed with their SQL or exported as files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from insight_mcp.clients.cli_common import JsonOpt, fail, out, print_json, settings_of

rules_app = typer.Typer(no_args_is_help=True,
                        help="The detection rules: list them with their SQL, export them as Databricks SQL files.")

CategoryOpt = Annotated[str | None, typer.Option("--category", help="Only rules of this category.")]


@rules_app.command("list")
def rules_list(
    ctx: typer.Context,
    category: CategoryOpt = None,
    sql: Annotated[bool, typer.Option("--sql", help="Also show each rule's portable Databricks SQL.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """The enabled rules: id, category, severity, MITRE techniques and title; with --sql, the query each runs."""
    from insight_mcp.agents.security.export import rule_catalog
    from insight_mcp.agents.security.model import CATEGORIES

    if category is not None and category not in CATEGORIES:
        fail(f"unknown category {category!r}; choose from {', '.join(CATEGORIES)}")
    try:
        catalog = rule_catalog(settings_of(ctx), category=category, include_sql=sql)
    except ValueError as exc:  # a rule or config that does not compile, named by file
        fail(str(exc))
    if as_json:
        print_json(catalog.model_dump(mode="json", exclude_none=not sql))
        return
    table = Table(title=f"{len(catalog.rules)} detection rules")
    for name in ("id", "category", "severity", "MITRE", "title"):  # folded, never cut: ids are what --rule takes
        table.add_column(name, overflow="fold")
    for r in catalog.rules:
        table.add_row(r.id, r.category, r.severity, ", ".join(r.mitre) or "-", Text(r.title))
    out.print(table)
    if sql:
        for r in catalog.rules:
            out.print(f"\n-- {r.id}: {r.title}\n{r.sql}", markup=False, highlight=False)


@rules_app.command("export")
def rules_export(
    ctx: typer.Context,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write <rule_id>.sql files into (created).")],
    fmt: Annotated[str, typer.Option("--format", help="Only databricks-sql: the rule's query, ready to schedule "
                                                     "as a Databricks SQL alert.")] = "databricks-sql",
    rule: Annotated[list[str] | None, typer.Option("--rule", help="Only this rule id (repeatable).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write one .sql file per enabled rule: its portable SQL with the configured parameters bound."""
    from insight_mcp.agents.security.export import FORMATS, export_rules

    if fmt not in FORMATS:
        fail(f"--format {fmt!r} is not supported: the accepted format is {', '.join(FORMATS)}")
    try:
        written = export_rules(settings_of(ctx), out_dir, rule_ids=rule, fmt=fmt)
    except ValueError as exc:  # unknown or disabled rules, a rule that does not compile, an unwritable folder
        fail(str(exc))
    if as_json:
        print_json({"format": fmt, "out": str(out_dir), "files": [str(p) for p in written]})
        return
    for path in written:
        out.print(str(path), markup=False, highlight=False)
    out.print(f"{len(written)} rule(s) exported as {fmt} to {out_dir}", markup=False, highlight=False)

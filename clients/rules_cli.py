"""`insight-mcp rules`: the detection rules as code a user can own: listed with their SQL, tested against the cases
beside them, or exported as files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from insight_mcp.clients.cli_common import JsonOpt, fail, out, print_json, progress, settings_of

rules_app = typer.Typer(no_args_is_help=True,
                        help="The detection rules: list them with their SQL, test them against their cases, export "
                             "them as Databricks SQL files.")

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
        techniques = ", ".join(r.mitre) or "-"
        table.add_row(r.id, r.category, r.severity, f"{techniques}\n{', '.join(r.tactics)}".strip(), Text(r.title))
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


STATUS_STYLE = {"passed": "green", "failed": "bold red"}


@rules_app.command("test")
def rules_test(
    ctx: typer.Context,
    folder: Annotated[Path | None, typer.Argument(
        help="A folder of rule files (<id>.yaml) with their cases (<id>.cases.yaml). Default: the built-in rules "
             "and your detections.rules_dir.", show_default=False)] = None,
    rule: Annotated[list[str] | None, typer.Option(help="Only this rule's cases (repeatable): while you write "
                                                        "one.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run each rule's cases: every firing case must raise a finding, every near-miss none.

    Fails (exit 1) when a case fails, or a rule lacks a firing or a near-miss case.
    """
    from insight_mcp.agents.security.rule_cases import check_folders, folders_to_test
    from insight_mcp.agents.security.rules import RuleFileError

    if folder is not None and not folder.is_dir():
        fail(f"{folder} is not a folder: give the folder that holds your rule files (<id>.yaml)")
    folders, detections = folders_to_test(settings_of(ctx).detections.rules_dir, folder)
    try:
        with progress(not as_json, "testing rules") as step:
            report = check_folders(folders, detections, progress=step, only=rule)
    except (RuleFileError, ValueError) as exc:  # a rule file that cannot be read, named by file
        fail(str(exc))
    if not report.rules:
        fail(f"no rule files in {', '.join(report.folders)}: a rule is <id>.yaml, its cases <id>.cases.yaml")
    if as_json:
        print_json(report.model_dump(mode="json"))
        raise typer.Exit(0 if report.passed else 1)
    table = Table(title=f"{len(report.rules)} rule(s), {report.scenarios_run} case(s) run")
    for name in ("rule", "fires", "near-misses", "status"):
        table.add_column(name, overflow="fold")
    for r in report.rules:
        style = STATUS_STYLE.get(r.status, "yellow")
        table.add_row(r.rule_id, f"{r.fires_passed}/{r.fires_total}", f"{r.near_misses_passed}/{r.near_misses_total}",
                      Text(r.status, style=style))
    out.print(table)
    failing = [r for r in report.rules if r.status != "passed"]
    for r in failing:
        for problem in r.problems:
            out.print(f"{r.rule_id}: {problem}", markup=False, highlight=False)
        for s in r.scenarios:
            if not s.passed:
                kind = "fires" if s.kind == "fires" else "near-miss"
                out.print(f"{r.rule_id}: {kind} {s.name!r}: {s.reason}", markup=False, highlight=False)
    if failing:
        out.print(f"{len(failing)} of {len(report.rules)} rule(s) failed: {', '.join(r.rule_id for r in failing)}",
                  markup=False, highlight=False)
        raise typer.Exit(1)
    out.print(f"all {len(report.rules)} rule(s) passed their {report.scenarios_run} case(s)", markup=False,
              highlight=False)

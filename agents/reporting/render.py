"""Rendering a report in each format and writing the files so that a reader never sees half of one."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from pydantic import BaseModel

from insight_mcp.agents.reporting.model import REPORT_FORMATS, Report
from insight_mcp.agents.reporting.templates_env import template_env
from insight_mcp.agents.security.model import SEVERITIES

_MD_SPECIAL = re.compile(r"([\\`*\[\]|~])")
_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029]+")


class ReportFolderError(OSError):
    """The report folder cannot be written; the message names it and says why."""


class ReportTemplateError(ValueError):
    """A report template (usually a custom one) could not be rendered; the message names it and the line."""


def md_text(value: object) -> str:
    """Untrusted text made inert in Markdown: no links, images, HTML, code or table breaks, and one line."""
    if isinstance(value, (list, tuple)):
        value = ", ".join(str(v) for v in value)
    text = _LINE_BREAKS.sub(" ", str(value))
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text).replace("://", ":\\/\\/")  # no autolinks either


def render_markdown(report: Report, templates_dir: Path | None = None) -> str:
    """Executive summary, then findings by severity with evidence and recommendations."""
    env = template_env(templates_dir, html=False)
    env.filters["md"] = md_text
    by_severity = {s: [f for f in report.findings if f.severity == s] for s in reversed(SEVERITIES)}
    return env.get_template("report.md.j2").render(
        report=report, by_severity={s: fs for s, fs in by_severity.items() if fs},
        failed=[a for a in report.agents if a.status == "failed"],
    )


def render_json(report: Report) -> str:
    """The report as versioned JSON (schema: docs/report.schema.json)."""
    return json.dumps(report.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"


def render(report: Report, fmt: str, templates_dir: Path | None = None) -> str:
    """One format's text; a template that fails says which one, where, and why."""
    import jinja2

    if fmt not in REPORT_FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; choose from {', '.join(REPORT_FORMATS)}")
    try:
        if fmt == "md":
            return render_markdown(report, templates_dir)
        if fmt == "html":
            from insight_mcp.agents.reporting.html import render_html

            return render_html(report, templates_dir)
        return render_json(report)
    except jinja2.TemplateError as exc:
        where = f"in {templates_dir}" if templates_dir else "built in"
        name = getattr(exc, "name", None) or f"report.{fmt}.j2"
        line = getattr(exc, "lineno", None)
        at = f" line {line}" if line else ""
        raise ReportTemplateError(f"the {fmt} report template {name} ({where}){at} failed: "
                                  f"{type(exc).__name__}: {exc.message or exc}; fix the template or unset "
                                  "INSIGHT_REPORTS__TEMPLATES_DIR") from None


def check_folder(folder: Path) -> None:
    """Fail before any work if the folder cannot take a report, with a reason a person can act on."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-", delete=True):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ReportFolderError(f"cannot write reports to {folder}: {reason}; choose another folder with --out "
                                "or INSIGHT_REPORTS__OUT_DIR") from None


def _atomic_write(path: Path, text: str) -> None:
    handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.",
                                         delete=False)
    try:
        with handle:
            handle.write(text)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


class WrittenReports(BaseModel):
    """Where each format was written, and the `latest` copies that MCP resources serve."""

    paths: dict[str, str]
    latest: dict[str, str]


def write_reports(
    report: Report, folder: Path, formats: list[str], templates_dir: Path | None = None
) -> WrittenReports:
    """Render every format first, then write each file atomically: a failure leaves no partial report behind."""
    check_folder(folder)
    texts = {fmt: render(report, fmt, templates_dir) for fmt in dict.fromkeys(formats)}
    stem = f"insight-report-{report.generated_at:%Y%m%dT%H%M%SZ}-{report.report_id[:8]}"
    written: list[Path] = []
    paths: dict[str, str] = {}
    latest: dict[str, str] = {}
    try:
        for fmt, text in texts.items():
            path = folder / f"{stem}.{fmt}"
            _atomic_write(path, text)
            written.append(path)
            paths[fmt] = str(path)
        for fmt, text in texts.items():
            path = folder / f"latest.{fmt}"
            _atomic_write(path, text)
            latest[fmt] = str(path)
    except OSError as exc:
        for path in written:
            path.unlink(missing_ok=True)
        raise ReportFolderError(f"cannot write reports to {folder}: {exc.strerror or exc}") from None
    return WrittenReports(paths=paths, latest=latest)


def latest_report(folder: Path, fmt: str) -> str | None:
    """The newest report in one format, or None before the first analysis."""
    if fmt not in REPORT_FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; choose from {', '.join(REPORT_FORMATS)}")
    path = folder / f"latest.{fmt}"
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None

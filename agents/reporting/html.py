"""The HTML report: one self-contained file, readable offline, that fetches nothing even when tampered with."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from markupsafe import Markup

from insight_mcp.agents.core.timestamps import parse_utc
from insight_mcp.agents.reporting.model import Report
from insight_mcp.agents.reporting.templates_env import template_env
from insight_mcp.agents.security.model import SEVERITIES

TEMPLATE = "report.html.j2"
TOP_PRINCIPALS = 10
SEVERITY_COLORS = {"critical": "#7f1d1d", "high": "#dc2626", "medium": "#f59e0b", "low": "#3b82f6", "info": "#94a3b8"}
_MITRE = re.compile(r"T\d{4}(\.\d{3})?")
# Characters that could end a <script> element or an HTML comment, or break JavaScript string literals.
_SCRIPT_UNSAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def render_html(report: Report, templates_dir: Path | None = None) -> str:
    """Render report.html.j2, from `templates_dir` when it has one (settings `reports.templates_dir`), else ours."""
    env = template_env(templates_dir, html=True)
    env.filters.update(when=when, paragraphs=paragraphs, evidence_text=evidence_text, mitre_url=mitre_url,
                       csp_hash=csp_hash, script_json=script_json)
    data = report.model_dump(mode="json")
    return env.get_template(TEMPLATE).render(
        report=data,
        severities=list(reversed(SEVERITIES)),
        severity_rank={name: rank for rank, name in enumerate(SEVERITIES)},
        severity_colors=SEVERITY_COLORS,
        failed_agents=[a for a in data["agents"] if a["status"] == "failed"],
        chart_data=chart_data(data),
    )


def chart_data(data: dict[str, Any]) -> dict[str, Any]:
    """Only what the charts draw, so attacker-controlled finding text is not embedded twice."""
    categories = sorted(((name, n) for name, n in data["counts"]["by_category"].items() if n),
                        key=lambda item: (-item[1], item[0]))
    return {
        "since": data["since"],
        "until": data["until"],
        "severities": list(SEVERITIES),
        "colors": SEVERITY_COLORS,
        "timeline": data["timeline"],
        "principals": [{"principal": p["principal"], "risk_score": p["risk_score"],
                        "max_severity": p["max_severity"], "findings": p["findings"]}
                       for p in data["principals"][:TOP_PRINCIPALS]],
        "categories": [{"category": name, "findings": n} for name, n in categories],
    }


def script_json(value: Any) -> Markup:
    """JSON that is safe inside <script type="application/json">: nothing in it can close the element."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escaped in _SCRIPT_UNSAFE.items():
        text = text.replace(char, escaped)
    return Markup(text)


def csp_hash(script: str) -> Markup:
    """The CSP source that lets exactly this inline script run, and no injected one."""
    digest = base64.b64encode(hashlib.sha256(str(script).encode()).digest()).decode()
    return Markup(f"'sha256-{digest}'")


def when(value: str | None) -> str:
    """An RFC 3339 timestamp as `2026-11-03 14:05 UTC`, readable and unambiguous."""
    if not value:
        return "—"
    try:
        return parse_utc(value).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return value


def paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, so LM or templated prose keeps its shape without trusting any markup."""
    return [part.strip() for part in re.split(r"\n\s*\n", text) if part.strip()]


def evidence_text(value: Any) -> str:
    """An evidence value as text: strings as they are, anything else as compact JSON (escaped later by Jinja)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def mitre_url(technique: str) -> str | None:
    """The ATT&CK page of a technique id, or None for anything that is not one (no attacker-chosen links)."""
    if not _MITRE.fullmatch(technique):
        return None
    return "https://attack.mitre.org/techniques/" + technique.replace(".", "/") + "/"

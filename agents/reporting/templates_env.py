"""Jinja2 environments for the reports: a user's template folder first, the built-in templates behind it."""

from __future__ import annotations

from pathlib import Path

import jinja2

BUILTIN = Path(__file__).parent / "templates"


def template_env(templates_dir: Path | None, *, html: bool) -> jinja2.Environment:
    """An environment that escapes HTML (for .html templates) and fails loudly on a missing variable.

    Audit data is attacker-controlled, so HTML output is always autoescaped; a custom template that marks a
    value `|safe` takes that risk on itself.
    """
    loaders: list[jinja2.BaseLoader] = []
    if templates_dir is not None:
        loaders.append(jinja2.FileSystemLoader(str(templates_dir)))
    loaders.append(jinja2.FileSystemLoader(str(BUILTIN)))
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=html,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )

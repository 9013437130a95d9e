"""The one error every layer of run_query's guard raises: which rule refused a statement, and why."""

from __future__ import annotations

ONLY_READS = "only one read-only SELECT (or WITH ... SELECT) over the system.* tables (see list_tables) is allowed"


class QueryRefused(ValueError):
    """A statement the guard will not run; `rule` names the check that refused it."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"query refused by rule '{rule}': {message}")
        self.rule = rule
        self.detail = message

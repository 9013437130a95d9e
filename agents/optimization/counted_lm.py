"""The one LM an optimization talks to: the configured dspy.LM, with every call counted against the budget first.

This module imports DSPy at the top; import it only inside the functions that optimize.
"""

from __future__ import annotations

import copy
from typing import Any

import dspy

from insight_mcp.agents.optimization.budget import LMBudget


class BudgetedLM(dspy.LM):
    """A dspy.LM that asks the budget before each call; copies (optimizers make them) share the same budget."""

    budget: LMBudget

    def __call__(self, prompt: Any = None, *, messages: Any = None, **kwargs: Any) -> Any:
        self.budget.spend()
        try:
            return super().__call__(prompt, messages=messages, **kwargs)
        except Exception as exc:
            self.budget.failed(exc)
            raise

    async def acall(self, prompt: Any = None, *, messages: Any = None, **kwargs: Any) -> Any:
        self.budget.spend()
        try:
            return await super().acall(prompt, messages=messages, **kwargs)
        except Exception as exc:
            self.budget.failed(exc)
            raise


def budgeted(lm: Any, budget: LMBudget) -> BudgetedLM:
    """The same model, connection and engine as `lm`, counting every call against `budget`."""
    if type(lm) is BudgetedLM:
        lm = copy.copy(lm)
    elif type(lm) is not dspy.LM:
        raise TypeError(f"an optimization needs a dspy.LM, not {type(lm).__name__}")
    counted = copy.copy(lm)  # a shallow runtime copy: the engine and its connections are shared
    counted.__class__ = BudgetedLM
    counted.budget = budget
    return counted


def text_of(output: Any) -> str:
    """The text of one legacy LM output: a string, or a dict with `text`."""
    if isinstance(output, dict):
        return str(output.get("text") or "")
    return str(output or "")


def complete(lm: Any, messages: list[dict[str, Any]], **kwargs: Any) -> str:
    """One raw chat completion through the counted LM: the first choice's text."""
    outputs = lm(messages=messages, **kwargs)
    return text_of(outputs[0]) if outputs else ""

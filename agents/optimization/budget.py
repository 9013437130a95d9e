"""The budget of one optimization: LM calls counted where they are made, and a deadline for the search.

Every LM call an optimization makes goes through one counted LM (`counted_lm.BudgetedLM`, and through it the
TextGrad engine and MLflow's reflection model), which asks the budget first. A call past the limit or the deadline
is refused with BudgetExhausted before it reaches the model, so the budget holds even when an optimizer library
does not know about it. The limit is raised once, after the search, to the total: the calls kept back for scoring
the champion and the candidate on the held-out cases.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class BudgetExhausted(RuntimeError):
    """An LM call the budget does not allow; the optimization stops searching and keeps what it has."""


class LMBudget:
    """A thread-safe count of LM calls against a limit, and a deadline; shared by every copy of the counted LM."""

    def __init__(self, limit: int, *, seconds: float | None = None,
                 on_spend: Callable[[int, int], None] | None = None, cancelled: threading.Event | None = None) -> None:
        self._lock = threading.Lock()
        self.cancelled = cancelled or threading.Event()  # set when the job is cancelled: no call is made after
        self.limit = limit
        self.calls = 0
        self.refused = 0
        self.deadline = time.monotonic() + seconds if seconds is not None else None
        self.on_spend = on_spend  # told (calls, limit) after each call is allowed: progress reports hang off it
        self.failures = 0  # allowed calls the model then failed (counted by the LM wrapper)
        self.last_failure: BaseException | None = None

    def spend(self, calls: int = 1) -> None:
        """Take calls from the budget, or raise BudgetExhausted (the call must then not be made)."""
        with self._lock:
            if self.cancelled.is_set():
                self.refused += 1
                raise BudgetExhausted("the optimization was cancelled")
            if self.deadline is not None and time.monotonic() >= self.deadline:
                self.refused += 1
                raise BudgetExhausted("the optimization's time budget is spent")
            if self.calls + calls > self.limit:
                self.refused += 1
                raise BudgetExhausted(f"the optimization's budget of {self.limit} LM calls is spent")
            self.calls += calls
            spent, limit = self.calls, self.limit
        if self.on_spend is not None:
            self.on_spend(spent, limit)

    def remaining(self) -> int:
        """Calls left under the current limit; 0 once the deadline has passed or the job was cancelled."""
        with self._lock:
            if self.cancelled.is_set() or (self.deadline is not None and time.monotonic() >= self.deadline):
                return 0
            return max(0, self.limit - self.calls)

    def failed(self, exc: BaseException) -> None:
        """Record that an allowed call failed at the model: an optimizer that saw only failures must say so."""
        with self._lock:
            self.failures += 1
            self.last_failure = exc

    @property
    def exhausted(self) -> bool:
        """Whether a call was ever refused."""
        return self.refused > 0

    def restrict(self, limit: int, seconds: float) -> None:
        """Lower the limit to what the search may spend, and start its deadline."""
        with self._lock:
            self.limit = min(self.limit, limit)
            self.deadline = time.monotonic() + seconds

    def extend(self, limit: int, *, clear_deadline: bool = True) -> None:
        """Raise the limit (to the total, after the search) and, by default, lift the search's deadline."""
        with self._lock:
            self.limit = max(self.limit, limit)
            if clear_deadline:
                self.deadline = None

    def __deepcopy__(self, memo: dict[int, Any]) -> LMBudget:
        return self  # optimizers deep-copy programs and LMs: every copy must spend from the one budget

    def __copy__(self) -> LMBudget:
        return self

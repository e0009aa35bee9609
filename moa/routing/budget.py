"""Per-run budgets on tokens, cost and wall time.

Two rules, in this order:

1. Before an escalation, :meth:`Budget.refuses` estimates the escalated call from the mean call
   of that step so far in this run (or of any step, before the step has run) and refuses when the
   estimate would cross a limit: the weak answer is kept and marked unverified (``budget``).
2. Once a limit is reached, :meth:`Budget.exhausted` says so: no new item starts, items not yet
   run get a ``BUDGET_EXCEEDED`` error, everything already computed is kept and the run ends
   with status ``stopped``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from moa.errors import BudgetExceeded, ErrorCode
from moa.settings import Settings
from moa.usage import Usage


class Budget:
    """The spend of one run against its limits (any limit may be ``None``: unlimited)."""

    def __init__(
        self,
        *,
        tokens: int | None = None,
        cost: float | None = None,
        seconds: float | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.tokens_limit = tokens
        self.cost_limit = cost
        self.seconds_limit = seconds
        self._clock = clock or time.perf_counter
        self.started = self._clock()
        self.tokens = 0
        self.cost = 0.0
        self._per_step: dict[str, tuple[int, int, float]] = {}  # step -> (calls, tokens, cost)
        self.stopped: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Budget:
        return cls(tokens=settings.budget_tokens, cost=settings.budget_cost, seconds=settings.budget_seconds)

    @property
    def limited(self) -> bool:
        return any(v is not None for v in (self.tokens_limit, self.cost_limit, self.seconds_limit))

    def add(self, usage: Iterable[Usage]) -> None:
        for u in usage:
            self.tokens += u.tokens
            self.cost += u.cost
            calls, tokens, cost = self._per_step.get(u.tier or "none", (0, 0, 0.0))
            self._per_step[u.tier or "none"] = (calls + 1, tokens + u.tokens, cost + u.cost)

    def carry(self, usage: Iterable[Usage], seconds: float) -> None:
        """Count what earlier attempts of a resumed run spent: their calls and their wall time."""
        self.add(usage)
        self.started -= seconds

    def _estimate(self, step: str) -> tuple[float, float]:
        calls, tokens, cost = self._per_step.get(step, (0, 0, 0.0))
        if calls == 0:
            calls = sum(c for c, _, _ in self._per_step.values())
            tokens = sum(t for _, t, _ in self._per_step.values())
            cost = sum(c for _, _, c in self._per_step.values())
        return (tokens / calls, cost / calls) if calls else (0.0, 0.0)

    def elapsed(self) -> float:
        return self._clock() - self.started

    def exhausted(self) -> str | None:
        """Which limit is reached, in words (``None`` while within budget)."""
        if self.tokens_limit is not None and self.tokens >= self.tokens_limit:
            reason = f"token budget reached ({self.tokens} of {self.tokens_limit} tokens)"
        elif self.cost_limit is not None and self.cost >= self.cost_limit:
            reason = f"cost budget reached (${self.cost:.4f} of ${self.cost_limit:.4f})"
        elif self.seconds_limit is not None and self.elapsed() >= self.seconds_limit:
            reason = f"time budget reached ({self.elapsed():.1f} of {self.seconds_limit:g} s)"
        else:
            return None
        self.stopped = self.stopped or reason
        return reason

    def refuses(self, step: str) -> str | None:
        """Why an escalation to ``step`` would not fit the budget (``None``: it fits)."""
        if (reached := self.exhausted()) is not None:
            return reached
        tokens, cost = self._estimate(step)
        if self.tokens_limit is not None and self.tokens + tokens > self.tokens_limit:
            return f"escalating to {step} (~{tokens:.0f} tokens) would exceed the token budget ({self.tokens} of {self.tokens_limit} used)"
        if self.cost_limit is not None and self.cost + cost > self.cost_limit:
            return f"escalating to {step} (~${cost:.4f}) would exceed the cost budget (${self.cost:.4f} of ${self.cost_limit:.4f} used)"
        return None

    def error(self) -> BudgetExceeded:
        reason = self.exhausted() or self.stopped or "budget reached"
        return BudgetExceeded(
            ErrorCode.BUDGET_EXCEEDED,
            f"not run: {reason}; raise the limit (--budget-tokens / --budget-cost / --budget-seconds) to process the rest",
        )

"""Per-run budgets on tokens, cost and wall time.

Three rules, in this order:

1. Before an escalation, :meth:`Budget.refuses` estimates the escalated call from the mean call
   of that step so far in this run (or of any step, before the step has run) and refuses when the
   estimate, with what the calls in flight have reserved, would cross a limit: the weak answer is
   kept and marked unverified (``budget``).
2. Before every model call (the door, :mod:`moa.agent.calls`), :meth:`Budget.reserve` holds an
   estimate of it: the request's own bound (:func:`request_estimate`: its prompt at ~4
   characters a token, plus its ``max_tokens``, which the answer cannot exceed), or the mean call
   of that step so far when that is larger. A call whose reservation, added to what was spent and
   what the calls in flight hold, would cross a limit does not start while other calls are in
   flight: it waits for them to settle (:meth:`Budget.settle`, with their real usage), then starts
   if it fits, or if it is alone and the limit is not reached yet. So the calls in flight never
   hold more than the limit, except one call started alone: a run stops within the limit plus
   that one call, plus what any call used beyond its reservation (only a prompt denser than ~4
   characters a token, on a step whose mean call is smaller, can do that). See
   ``docs/routing.md#budgets``.
3. Once a limit is reached, :meth:`Budget.exhausted` says so: no new item starts and no call
   goes out, items not yet run get a ``BUDGET_EXCEEDED`` error, everything already computed is
   kept and the run ends with status ``stopped``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from moa.errors import BudgetExceeded, ErrorCode
from moa.models.base import GenerateRequest
from moa.settings import Settings
from moa.usage import Usage

CHARS_PER_TOKEN = 4
"""The prompt's characters per token in :func:`request_estimate` (English text, common tokenizers)."""


def request_estimate(request: GenerateRequest, price_per_1k: tuple[float, float] = (0.0, 0.0)) -> tuple[float, float]:
    """Tokens and cost a request may use before any call of its step has run: its prompt (and
    tools) at :data:`CHARS_PER_TOKEN` characters a token, plus its ``max_tokens``."""
    chars = len(request.prompt or "") + sum(len(m.content) for m in request.messages or [])
    chars += sum(len(t.name) + len(t.description) + len(str(t.parameters)) for t in request.tools or [])
    prompt = math.ceil(chars / CHARS_PER_TOKEN)
    return float(prompt + request.max_tokens), (prompt * price_per_1k[0] + request.max_tokens * price_per_1k[1]) / 1000


@dataclass(frozen=True)
class Reservation:
    """What one call in flight holds of the budget until it is settled."""

    tokens: float = 0.0
    cost: float = 0.0
    held: bool = False
    """Counted among the calls in flight (``False``: the budget has no token or cost limit)."""


UNRESERVED = Reservation()


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
        self.in_flight = 0
        """Calls holding a reservation (:meth:`reserve`) that were not settled yet."""
        self.reserved_tokens = 0.0
        self.reserved_cost = 0.0
        self._waiters: list[asyncio.Future[None]] = []

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

    def _fits(self, tokens: float, cost: float) -> bool:
        if self.tokens_limit is not None and self.tokens + self.reserved_tokens + tokens > self.tokens_limit:
            return False
        return self.cost_limit is None or self.cost + self.reserved_cost + cost <= self.cost_limit

    def _reservation(self, step: str, request: GenerateRequest, price_per_1k: tuple[float, float]) -> tuple[float, float]:
        """The larger of the request's own estimate and the mean call of ``step`` so far (which
        corrects the estimate when the model's tokenizer counts more tokens per character)."""
        tokens, cost = request_estimate(request, price_per_1k)
        calls, spent, paid = self._per_step.get(step, (0, 0, 0.0))
        return (max(tokens, spent / calls), max(cost, paid / calls)) if calls else (tokens, cost)

    async def reserve(self, step: str, request: GenerateRequest, price_per_1k: tuple[float, float] = (0.0, 0.0)) -> Reservation:
        """Hold an estimate of a call on ``step`` until :meth:`settle` (see rule 2 of the module
        docstring); wait while it does not fit and other calls are in flight.

        Raises:
            BudgetExceeded: a limit is reached (now, or once the calls in flight settled)."""
        if self.tokens_limit is None and self.cost_limit is None:  # no estimate can cross a time limit
            if self.seconds_limit is not None and self.exhausted() is not None:
                raise self.error()
            return UNRESERVED
        while True:
            if self.exhausted() is not None:
                raise self.error()
            estimate = self._reservation(step, request, price_per_1k)  # again after a wait: the calls settled meanwhile count
            if self.in_flight == 0 or self._fits(*estimate):
                break
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        self.in_flight += 1
        self.reserved_tokens += estimate[0]
        self.reserved_cost += estimate[1]
        return Reservation(tokens=estimate[0], cost=estimate[1], held=True)

    def settle(self, reservation: Reservation, usage: Iterable[Usage] = ()) -> None:
        """Count a call's real ``usage`` (none when it failed) in place of its reservation, and
        let the calls waiting for room try again."""
        self.add(usage)
        if not reservation.held:
            return
        self.in_flight -= 1
        self.reserved_tokens = max(0.0, self.reserved_tokens - reservation.tokens)
        self.reserved_cost = max(0.0, self.reserved_cost - reservation.cost)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

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
        held = f", {self.reserved_tokens:.0f} held by calls in flight" if self.reserved_tokens else ""
        if self.tokens_limit is not None and self.tokens + self.reserved_tokens + tokens > self.tokens_limit:
            return f"escalating to {step} (~{tokens:.0f} tokens) would exceed the token budget ({self.tokens} of {self.tokens_limit} used{held})"
        if self.cost_limit is not None and self.cost + self.reserved_cost + cost > self.cost_limit:
            return f"escalating to {step} (~${cost:.4f}) would exceed the cost budget (${self.cost:.4f} of ${self.cost_limit:.4f} used)"
        return None

    def error(self) -> BudgetExceeded:
        reason = self.exhausted() or self.stopped or "budget reached"
        return BudgetExceeded(
            ErrorCode.BUDGET_EXCEEDED,
            f"not run: {reason}; raise the limit (--budget-tokens / --budget-cost / --budget-seconds) to process the rest",
        )

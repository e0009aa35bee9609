"""Token budgets: reservations bound the overshoot of calls in flight (``moa.routing.budget``).

Behaviour only: what was spent when the run stopped, which items ran, which were refused; never
how long anything took.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

import moa
from moa.errors import BudgetExceeded, ErrorCode
from moa.models.base import GenerateRequest, Generation, Message
from moa.routing.budget import Budget, request_estimate
from moa.testing import FakeEmbedder, FakeModel
from moa.usage import Usage

PLAN = {"subtasks": [{"id": "s", "agent": "sentiment"}]}
ANSWER = '{"label":"positive","confidence":0.9}'


def sized(*sizes: tuple[int, int]) -> FakeModel:
    """A model whose calls report these (prompt, completion) tokens in turn, and overlap."""
    cycle = itertools.cycle(sizes)

    def answer(_request: GenerateRequest) -> Generation:
        prompt, completion = next(cycle)
        return Generation(text=ANSWER, prompt_tokens=prompt, completion_tokens=completion)

    return FakeModel(answer, delay=0.01)


async def run(slm: FakeModel, tmp_path: Path, *, budget: int, n: int = 16, concurrency: int = 4) -> moa.RunResult:
    settings = moa.load_settings(budget_tokens=budget, slm_concurrency=concurrency, cascade=["slm"], confidence="self", state_dir=tmp_path, cache=False)
    ctx = moa.RunContext.create(settings, models=moa.Models(settings, slm=slm, llm=slm), embedder=FakeEmbedder())
    try:
        return await moa.arun("sentiment", input=[f"item {i}" for i in range(n)], plan=PLAN, context=ctx)
    finally:
        await ctx.aclose()


@pytest.mark.parametrize("sizes", [[(10, 5)], [(4, 2), (16, 8), (6, 3), (20, 10)]], ids=["uniform", "varied"])
async def test_a_40_token_budget_at_concurrency_4_stops_within_one_call_of_the_limit(tmp_path: Path, sizes: list[tuple[int, int]]) -> None:
    """The report: 40 tokens, 4 items at once, stopped at 60 (every call in flight finished).
    Now a run stops within the limit plus one call; the items not run are ``budget_exceeded``."""
    slm = sized(*sizes)
    result = await run(slm, tmp_path, budget=40)
    spent = sum(u.tokens for u in result.usage)
    largest = max(p + c for p, c in sizes)
    assert result.status == "stopped" and "token budget reached" in (result.stopped or "")
    assert 40 <= spent <= 40 + largest
    items = result.results["s"].items
    answered = [i for i in items if i.output is not None]
    refused = [i for i in items if i.error is not None]
    assert len(answered) == len(result.usage) == len(slm.requests) and len(answered) + len(refused) == 16
    assert refused and all(i.error.code == ErrorCode.BUDGET_EXCEEDED for i in refused)  # type: ignore[union-attr]
    assert result.exit_code == 3


async def test_calls_still_run_side_by_side_while_the_budget_has_room(tmp_path: Path) -> None:
    slm = sized((10, 5))
    result = await run(slm, tmp_path, budget=10_000)
    assert result.status == "ok" and slm.max_in_flight == 4  # reservations fit: no call waited for another


def request(words: int = 40, max_tokens: int = 20) -> GenerateRequest:
    return GenerateRequest(messages=[Message(role="user", content="abcd" * words)], max_tokens=max_tokens)


def usage(tokens: int) -> Usage:
    return Usage(model="fake:", tier="slm", prompt_tokens=tokens, completion_tokens=0, latency_s=0.0)


def test_a_request_is_estimated_from_its_prompt_and_its_max_tokens() -> None:
    assert request_estimate(request(words=40, max_tokens=20)) == (60.0, 0.0)  # 160 characters ≈ 40 tokens, + 20
    tokens, cost = request_estimate(request(words=40, max_tokens=20), (1.0, 2.0))
    assert tokens == 60.0 and cost == pytest.approx((40 * 1.0 + 20 * 2.0) / 1000)


async def test_a_call_that_does_not_fit_waits_for_those_in_flight_then_runs_or_is_refused() -> None:
    budget = Budget(tokens=100)
    first = await budget.reserve("slm", request())  # alone; its estimate (60) fits anyway
    assert budget.in_flight == 1 and budget.reserved_tokens == 60
    second = asyncio.ensure_future(budget.reserve("slm", request()))  # 60 held + 60 > 100: waits
    await asyncio.sleep(0)
    assert not second.done()
    budget.settle(first, [usage(30)])  # 30 spent + 60 fits
    held = await second
    assert held.tokens == 60 and budget.in_flight == 1
    third = asyncio.ensure_future(budget.reserve("slm", request()))  # 30 spent + 60 held + 60 > 100: waits
    await asyncio.sleep(0)
    assert not third.done()
    budget.settle(held, [usage(70)])  # 100 spent: the limit is reached
    with pytest.raises(BudgetExceeded):
        await third
    assert budget.in_flight == 0 and budget.reserved_tokens == 0


async def test_the_steps_mean_call_raises_the_reservation_when_the_prompt_is_denser_than_estimated() -> None:
    budget = Budget(tokens=1000)
    budget.settle(await budget.reserve("slm", request()), [usage(200)])  # estimated 60, used 200
    assert (await budget.reserve("slm", request())).tokens == 200
    assert (await budget.reserve("llm", request())).tokens == 60  # another step: its own estimate


async def test_a_lone_call_starts_even_when_its_estimate_crosses_the_limit_and_a_failed_call_frees_its_reservation() -> None:
    budget = Budget(tokens=50)
    lone = await budget.reserve("slm", request(words=100, max_tokens=200))  # 300 > 50, but nothing else is in flight
    assert budget.in_flight == 1
    budget.settle(lone)  # it failed: nothing spent, nothing held
    assert budget.in_flight == 0 and budget.reserved_tokens == 0 and budget.tokens == 0
    assert budget.exhausted() is None


async def test_an_unlimited_budget_holds_nothing() -> None:
    budget = Budget()
    held = await budget.reserve("slm", request())
    assert budget.in_flight == 0 and not held.held
    budget.settle(held, [usage(10)])
    assert budget.tokens == 10

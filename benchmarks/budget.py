"""How far a token budget is overshot: tokens spent when a run stops, with fake models.

The run: the sentiment agent over ``--n`` items (one-subtask plan, cascade ``slm``: one call per
item), ````--concurrency`` items at once (``slm_concurrency``), a fake slm that takes ``--delay`` seconds per call (so calls
overlap) and reports fixed token counts per call. Scenarios:

* ``uniform``: every call 10 prompt + 5 completion tokens (15), the figures of the report that
  found the overshoot (a 40-token budget stopped at 60): calls far smaller than their prompts;
* ``varied``: calls of 6, 24, 9 and 30 tokens in turn (a mean is a poor guess for the next call);
* ``prompt-sized``: what a server would report: the prompt at 4 characters a token (~138 for the
  sentiment agent's) plus 12 completion tokens, under a budget ``--prompt-sized-budget`` (1000).

Reported per scenario: the limit, tokens spent when the run stopped, the overshoot (spent − limit),
the largest single call, items answered and items refused with ``budget_exceeded``, and the most
calls the model had in flight. The promise (``docs/routing.md#budgets``): spent ≤ limit + the
overshoot of one call::

    python benchmarks/budget.py --budget 40 --concurrency 4 --prompt-sized-budget 1000
"""

from __future__ import annotations

import asyncio
import itertools
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import moa  # noqa: E402
from benchmarks._common import describe, finish, machine, parser, report, table  # noqa: E402
from moa.errors import ErrorCode  # noqa: E402
from moa.logs import configure_logging  # noqa: E402
from moa.models.base import GenerateRequest, Generation  # noqa: E402
from moa.testing import FakeEmbedder, FakeModel, prompt_of  # noqa: E402

PLAN = {"subtasks": [{"id": "s", "agent": "sentiment"}]}
ANSWER = '{"label":"positive","confidence":0.9}'
SCENARIOS: dict[str, list[tuple[int, int]] | None] = {"uniform": [(10, 5)], "varied": [(4, 2), (16, 8), (6, 3), (20, 10)], "prompt-sized": None}
"""Per scenario, the (prompt, completion) tokens of successive calls (cycled); ``None``: sized by the prompt."""
COMPLETION = 12


def model(scenario: str, delay: float) -> FakeModel:
    fixed = SCENARIOS[scenario]
    sizes = itertools.cycle(fixed or [(0, 0)])

    def answer(request: GenerateRequest) -> Generation:
        prompt, completion = next(sizes)
        if fixed is None:
            prompt, completion = math.ceil(len(prompt_of(request)) / 4), COMPLETION
        return Generation(text=ANSWER, prompt_tokens=prompt, completion_tokens=completion, latency_s=delay)

    return FakeModel(answer, delay=delay)


async def measure(scenario: str, *, budget: int, concurrency: int, n: int, delay: float, state_dir: Path) -> dict[str, Any]:
    """One run of ``scenario``: what it spent and how its items ended."""
    slm = model(scenario, delay)
    settings = moa.load_settings(budget_tokens=budget, slm_concurrency=concurrency, cascade=["slm"], confidence="self", state_dir=state_dir, cache=False)
    ctx = moa.RunContext.create(settings, models=moa.Models(settings, slm=slm, llm=slm), embedder=FakeEmbedder())
    try:
        result = await moa.arun("sentiment", input=[f"item {i}" for i in range(n)], plan=PLAN, context=ctx)
    finally:
        await ctx.aclose()
    items = result.results["s"].items
    return {
        "scenario": scenario,
        "limit": budget,
        "spent": sum(u.tokens for u in result.usage),
        "overshoot": sum(u.tokens for u in result.usage) - budget,
        "largest_call": max((u.tokens for u in result.usage), default=0),
        "answered": sum(1 for i in items if i.output is not None),
        "refused": sum(1 for i in items if i.error is not None and i.error.code == ErrorCode.BUDGET_EXCEEDED),
        "max_in_flight": slm.max_in_flight,
        "status": result.status,
    }


def render(results: dict[str, Any]) -> str:
    header = ["scenario", "limit", "spent at stop", "overshoot", "largest call", "answered", "refused (budget_exceeded)", "most calls in flight"]
    rows = [[r["scenario"], r["limit"], r["spent"], r["overshoot"], r["largest_call"], r["answered"], r["refused"], r["max_in_flight"]] for r in results["runs"]]
    a = results["args"]
    lines = [f"machine: {describe(results['machine'])}", f"{a['n']} items, concurrency {a['concurrency']}, {a['delay']} s per call", "", table(header, rows)]
    return "\n".join(lines)


async def main() -> None:
    p = parser(__doc__, "budget")
    p.add_argument("--budget", type=int, default=40, help="token budget of the uniform and varied scenarios (default %(default)s)")
    p.add_argument("--prompt-sized-budget", type=int, default=1000, help="token budget of the prompt-sized scenario (default %(default)s)")
    p.add_argument("--concurrency", type=int, default=4, help="items at once (default %(default)s)")
    p.add_argument("--n", type=int, default=16, help="items (default %(default)s)")
    p.add_argument("--delay", type=float, default=0.01, help="seconds per call (default %(default)s)")
    args = p.parse_args()
    if args.report:
        return report(args.report, render)
    configure_logging(json=False, level="error")
    results: dict[str, Any] = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in SCENARIOS:
            budget = args.prompt_sized_budget if SCENARIOS[scenario] is None else args.budget
            kw = {"budget": budget, "concurrency": args.concurrency, "n": args.n, "delay": args.delay}
            results["runs"].append(await measure(scenario, state_dir=Path(tmp) / scenario, **kw))
    finish(results, render, args.json)


if __name__ == "__main__":
    asyncio.run(main())

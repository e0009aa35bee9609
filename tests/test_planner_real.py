"""The LLM and hybrid planners on real shipped chat models (the embedded engine, each GGUF's own
chat template, constrained to the compact plan format).

SmolLM2-135M-Instruct runs in CI (``real``): its plans are not good (the planning benchmark
says how bad), but every plan must be valid and name only known agents. Qwen2.5-Coder-1.5B
(``slow``, skipped unless its extra is installed) must plan a handful of tasks right: the agents
the task asks for, in the right data flow. Quality of the whole set is measured by
``benchmarks/planning.py``, not here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.shipped import require_shipped

from moa import RunContext, Settings
from moa.models.registry import Models
from moa.models.shipped import SHIPPED
from moa.workflow.catalog import builtin_agents
from moa.workflow.plan import INPUT, plan_problems
from moa.workflow.planner import HybridPlanner, LLMPlanner

pytestmark = pytest.mark.real
AGENTS = builtin_agents()


@pytest.fixture
async def ctx(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunContext]:
    spec = SHIPPED[request.param].spec
    settings = Settings(llm=spec, cache=False, timeout=180, memory_dir=tmp_path / "memory", state_dir=tmp_path / "state")
    models = Models(settings)
    try:
        yield RunContext.create(settings, models=models)
    finally:
        await models.aclose()


TASKS = [
    ("Classify the sentiment of each review", True),
    ("Filter out spam, then give the sentiment and the entities of the rest", True),
    ("What do our notes say about the refund policy?", False),
]


@pytest.mark.parametrize("ctx", ["smollm2-135m-instruct"], indirect=True)
async def test_smollm2_plans_are_valid_and_name_known_agents(ctx: RunContext) -> None:
    require_shipped("smollm2-135m-instruct", in_ci=True)
    planner = LLMPlanner(fallback=False)
    for task, has_input in TASKS:
        outcome = await planner.plan(ctx, task, AGENTS, has_input=has_input, reason="test")
        assert plan_problems(outcome.plan, AGENTS) == [] and outcome.info.name == "llm"
        assert {s.agent for s in outcome.plan.subtasks} <= set(AGENTS)


RIGHT = [
    ("Classify the sentiment of each review", True, [("sentiment", INPUT)]),
    ("Remove the spam messages from this list, please", True, [("filtering", INPUT)]),
    ("Filter out spam, then give the sentiment and the entities of the rest", True, [("filtering", INPUT), ("sentiment", "s1"), ("extraction", "s1")]),
    ("Search the knowledge base for reviews of the hotel and classify their sentiment", False, [("retrieval", INPUT), ("sentiment", "s1")]),
]


@pytest.mark.slow
@pytest.mark.parametrize("ctx", ["qwen2.5-coder-1.5b-instruct"], indirect=True)
async def test_qwen_1_5b_plans_a_handful_of_tasks_right(ctx: RunContext) -> None:
    require_shipped("qwen2.5-coder-1.5b-instruct", in_ci=False)
    planner = HybridPlanner()
    for task, has_input, expected in RIGHT:
        outcome = await planner.plan(ctx, task, AGENTS, has_input=has_input, reason="test")
        steps = sorted((s.agent, s.items) for s in outcome.plan.subtasks)
        assert steps == sorted(expected), (task, outcome.plan.subtasks, outcome.info.reason)

"""The compact plan format (moa.workflow.planformat), the mechanical repairs
(moa.workflow.planrepair) and the LLM planner built on them, on fake models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moa.agent.context import RunContext
from moa.errors import ErrorCode, UserError
from moa.models.base import GenerateRequest
from moa.models.registry import Models
from moa.settings import Settings
from moa.testing import FakeEmbedder, FakeModel
from moa.workflow.catalog import builtin_agents
from moa.workflow.plan import Plan, plan_problems
from moa.workflow.planformat import CompactStep, max_plan_tokens, parse_steps, plan_instructions, plan_messages, plan_prompt, plan_schema, step_options, task_prompt, to_plan
from moa.workflow.planner import HybridPlanner, LLMPlanner, PlanOutcome, PlannerInfo, choose_planner
from moa.workflow.planrepair import adopt_flow, closest_agent, drop_agents, repair_plan, repair_steps

AGENTS = builtin_agents()
NAMES = list(AGENTS)


def _plan(*subtasks: dict[str, object]) -> Plan:
    return Plan.model_validate({"subtasks": list(subtasks)})


def test_json_lines_become_a_plan_with_ids_items_and_depends_on() -> None:
    steps = parse_steps('{"plan": ["filtering(drop: spam) <- input", "sentiment(positive, negative) <- 1", "extraction(person, product) <- 1"]}')
    plan = to_plan(steps, AGENTS)
    assert [(s.id, s.agent, s.items, s.depends_on, s.options) for s in plan.subtasks] == [
        ("s1", "filtering", "input", [], {"mode": "drop", "criterion": "spam"}),
        ("s2", "sentiment", "s1", ["s1"], {"labels": ["positive", "negative"]}),
        ("s3", "extraction", "s1", ["s1"], {"types": ["person", "product"]}),
    ]
    assert plan_problems(plan, AGENTS) == []


@pytest.mark.parametrize(
    "text",
    [
        "1. filtering(keep: billing) <- input\n2. sentiment <- 1",
        "```\nfiltering(keep: billing) <- input\nsentiment <- s1\n```",
        'Here is the plan:\n"filtering(keep: billing) <- input",\n"sentiment <- step 1"',
        '{"steps": [{"agent": "filtering", "options": "keep: billing", "from": "input"}, {"agent": "sentiment", "from": 1}]}',
    ],
)
def test_plain_numbered_fenced_and_object_answers_parse_alike(text: str) -> None:
    steps = parse_steps(text)
    assert [(s.agent, s.options, s.source) for s in steps] == [("filtering", "keep: billing", 0), ("sentiment", "", 1)]


def test_a_step_with_no_source_takes_the_input_and_prose_is_skipped() -> None:
    assert [(s.agent, s.source) for s in parse_steps("I would use:\nsentiment\nThat is all.")] == [("sentiment", 0)]
    assert parse_steps("no idea") == [] and parse_steps("") == []


def test_options_are_read_per_agent_kind() -> None:
    assert step_options(AGENTS["filtering"], "keep: reviews about delivery") == {"mode": "keep", "criterion": "reviews about delivery"}
    assert step_options(AGENTS["filtering"], "only: refunds") == {"mode": "keep", "criterion": "refunds"}
    assert step_options(AGENTS["filtering"], "toxic comments") == {"criterion": "toxic comments"}
    assert step_options(AGENTS["sentiment"], "Positive, negative or neutral") == {"labels": ["positive", "negative", "neutral"]}
    assert step_options(AGENTS["extraction"], "person and date") == {"types": ["person", "date"]}
    assert step_options(AGENTS["retrieval"], "refund policy") == {}


def test_the_schema_allows_only_known_agents_and_earlier_style_sources() -> None:
    import re

    schema = plan_schema(NAMES)
    assert schema["type"] == "object" and schema["required"] == ["plan"]  # OpenAI takes no other root
    steps = schema["properties"]["plan"]
    pattern = re.compile(steps["items"]["pattern"])
    assert pattern.match("filtering(drop: spam) <- input") and pattern.match("sentiment <- 2")
    assert not pattern.match("summarise <- input") and not pattern.match("sentiment <- s1") and not pattern.match("sentiment")
    assert steps["maxItems"] >= 4 and max_plan_tokens(4) <= 120


def test_the_prompt_prefix_is_fixed_and_the_task_comes_last() -> None:
    prefix = plan_prompt(AGENTS)
    assert plan_messages(AGENTS, "a", True)[:-1] == plan_messages(AGENTS, "b", False)[:-1]  # the same for every task: the KV cache reuses it
    assert all(f"- {name}:" in prefix for name in AGENTS) and "only the agents the task needs" in prefix
    assert task_prompt("Find  it", has_input=False) == "Task: Find it (no input)\nPlan:"
    only_sentiment = plan_prompt({"sentiment": AGENTS["sentiment"]})
    assert "filtering" not in only_sentiment  # examples that use agents not in the catalogue are left out


def test_unknown_agents_are_mapped_to_the_closest_name_or_dropped() -> None:
    assert closest_agent("sentiment_analysis", NAMES) == "sentiment"
    assert closest_agent("Filter", NAMES) == "filtering"
    assert closest_agent("extractor", NAMES) == "extraction"
    assert closest_agent("summarise", NAMES) is None
    steps, notes = repair_steps([CompactStep("filter", "drop: spam"), CompactStep("summarise", "", 1), CompactStep("sentiment", "", 2)], NAMES)
    # the dropped step 2 took step 1's items, so step 3 (which took step 2's) takes step 1's
    assert [(s.agent, s.source) for s in steps] == [("filtering", 0), ("sentiment", 1)]
    assert any("read as 'filtering'" in n for n in notes) and any("unknown agent 'summarise'" in n for n in notes)


def test_duplicate_steps_are_dropped_and_their_dependants_repointed() -> None:
    steps, notes = repair_steps(
        [CompactStep("filtering", "drop: spam"), CompactStep("filtering", "drop: spam"), CompactStep("sentiment", "", 2), CompactStep("sentiment", "", 1)],
        NAMES,
    )
    assert [(s.agent, s.source) for s in steps] == [("filtering", 0), ("sentiment", 1)]
    assert sum("repeated" in n for n in notes) == 2


def test_sources_on_itself_or_later_steps_take_the_input() -> None:
    steps, notes = repair_steps([CompactStep("sentiment", "", 1), CompactStep("filtering", "", 3), CompactStep("extraction", "", 2)], NAMES)
    assert [(s.agent, s.source) for s in steps] == [("sentiment", 0), ("filtering", 0), ("extraction", 2)]
    assert len(notes) == 2


def test_a_missing_depends_on_implied_by_items_is_added() -> None:
    plan = _plan({"id": "s1", "agent": "filtering"}, {"id": "s2", "agent": "sentiment", "items": "s1"})
    assert plan_problems(plan, AGENTS)
    fixed, notes = repair_plan(plan, NAMES)
    assert fixed.get("s2").depends_on == ["s1"] and plan_problems(fixed, AGENTS) == [] and "added to depends_on" in notes[0]


def test_self_and_dangling_dependencies_are_removed_and_cycles_broken() -> None:
    plan = _plan(
        {"id": "a", "agent": "filtering", "items": "b", "depends_on": ["b", "a"]},
        {"id": "b", "agent": "sentiment_analysis", "items": "a", "depends_on": ["a", "zz"]},
    )
    fixed, notes = repair_plan(plan, NAMES)
    assert plan_problems(fixed, AGENTS) == []
    assert [(s.id, s.agent, s.items, s.depends_on) for s in fixed.subtasks] == [("a", "filtering", "input", []), ("b", "sentiment", "a", ["a"])]
    assert any("cycle" in n for n in notes) and any("'zz'" in n for n in notes)


def test_duplicate_subtasks_are_dropped_and_repeated_ids_renamed() -> None:
    plan = _plan(
        {"id": "s1", "agent": "filtering"},
        {"id": "s2", "agent": "filtering"},
        {"id": "s3", "agent": "sentiment", "items": "s2", "depends_on": ["s2"]},
        {"id": "s3", "agent": "extraction", "items": "s1", "depends_on": ["s1"]},
    )
    fixed, _ = repair_plan(plan, NAMES)
    assert [(s.id, s.agent, s.items) for s in fixed.subtasks] == [("s1", "filtering", "input"), ("s3", "sentiment", "s1"), ("s3_3", "extraction", "s1")]
    assert plan_problems(fixed, AGENTS) == []


def _ctx(llm: FakeModel, tmp_path: Path) -> RunContext:
    settings = Settings(memory_dir=tmp_path / "memory", state_dir=tmp_path / "state", cache=False)
    return RunContext.create(settings, models=Models(settings, slm=llm, llm=llm), embedder=FakeEmbedder())


async def test_the_llm_planner_makes_one_short_constrained_call(tmp_path: Path) -> None:
    answer = json.dumps(["filtering(drop: spam) <- input", "sentiment(happy, sad) <- 1", "extraction <- 1", "extraction <- 1"])
    llm = FakeModel([answer], chat=True)
    task = "Filter out spam, then give the sentiment and the entities of the rest"
    outcome = await LLMPlanner().plan(_ctx(llm, tmp_path), task, AGENTS, has_input=True, reason="test")
    assert [(s.agent, s.items, s.options) for s in outcome.plan.subtasks] == [
        ("filtering", "input", {"mode": "drop", "criterion": "spam"}),
        ("sentiment", "s1", {}),  # labels the task does not name are dropped
        ("extraction", "s1", {}),
    ]
    assert outcome.info.name == "llm" and "repeated step 3" in outcome.info.reason
    (request,) = llm.requests
    assert request.json_schema == plan_schema(NAMES) and request.max_tokens == max_plan_tokens(4)
    assert request.messages == plan_messages(AGENTS, task, True)
    assert request.messages[0].content == plan_instructions(AGENTS) and request.messages[-1].content == f"Task: {task}"
    assert [m.role for m in request.messages[1:3]] == ["user", "assistant"]  # example plans as turns


async def test_the_task_names_the_labels(tmp_path: Path) -> None:
    llm = FakeModel(['["sentiment <- input"]'], chat=True)
    outcome = await LLMPlanner().plan(_ctx(llm, tmp_path), "Is each review positive or negative?", AGENTS, has_input=True, reason="t")
    assert outcome.plan.subtasks[0].options == {"labels": ["positive", "negative"]}


async def test_an_unusable_answer_falls_back_to_the_router_or_raises(tmp_path: Path) -> None:
    def handler(request: GenerateRequest) -> str:
        return "I cannot help with that."

    llm = FakeModel(handler, chat=True)
    outcome = await LLMPlanner(fallback=True).plan(_ctx(llm, tmp_path), "Classify the sentiment of each review", AGENTS, has_input=True, reason="t")
    assert outcome.info.name == "router" and "the router planned the task" in outcome.info.reason and len(llm.requests) == 1
    with pytest.raises(UserError) as caught:
        await LLMPlanner().plan(_ctx(llm, tmp_path), "Classify", AGENTS, has_input=True, reason="t")  # the default: plan_task decides
    assert caught.value.code == ErrorCode.INVALID_PLAN and "no plan steps" in caught.value.message


async def test_a_base_model_gets_a_completion_prompt(tmp_path: Path) -> None:
    llm = FakeModel(['["sentiment <- input"]'], chat=False)
    await LLMPlanner().plan(_ctx(llm, tmp_path), "Classify the sentiment", AGENTS, has_input=True, reason="t")
    (request,) = llm.requests
    assert request.messages is None and request.prompt is not None and request.prompt.endswith("Plan: ")


def test_a_step_chained_after_one_that_passes_items_on_unchanged_runs_in_parallel() -> None:
    steps = [CompactStep("filtering", "drop: spam"), CompactStep("sentiment", "", 1), CompactStep("extraction", "", 2)]
    fixed, notes = repair_steps(steps, NAMES, unchanged=["sentiment", "extraction"])
    assert [(s.agent, s.source) for s in fixed] == [("filtering", 0), ("sentiment", 1), ("extraction", 1)]
    assert "passes on unchanged" in notes[0]


def test_dropping_an_agent_repoints_the_steps_that_took_its_items() -> None:
    plan = _plan(
        {"id": "s1", "agent": "retrieval"},
        {"id": "s2", "agent": "filtering", "items": "s1", "depends_on": ["s1"]},
        {"id": "s3", "agent": "sentiment", "items": "s2", "depends_on": ["s2"]},
    )
    fixed, notes = drop_agents(plan, {"retrieval", "sentiment"})
    assert [(s.id, s.items, s.depends_on) for s in fixed.subtasks] == [("s1", "input", []), ("s3", "s1", ["s1"])]
    assert notes == ["dropped subtask 's2' (filtering): nothing in the task asks for it"]
    assert drop_agents(plan, {"extraction"}) == (plan, [])  # never an empty plan


async def test_the_hybrid_planner_drops_steps_the_router_finds_no_request_for(tmp_path: Path) -> None:
    llm = FakeModel(['["filtering(keep: refund) <- input", "sentiment <- 1"]'], chat=True)
    routed = PlanOutcome(_plan({"id": "s1", "agent": "filtering"}), PlannerInfo(name="router", reason="r"))
    drafted = await LLMPlanner().plan(_ctx(llm, tmp_path), "I only want the tickets that mention a refund", AGENTS, has_input=True, reason="t")
    outcome = HybridPlanner.combine(routed, drafted)
    assert [s.agent for s in outcome.plan.subtasks] == ["filtering"] and outcome.info.name == "hybrid" and "dropped subtask 's2'" in outcome.info.reason
    fallback = PlanOutcome(_plan({"id": "s1", "agent": "sentiment"}), PlannerInfo(name="router", reason="unusable"))
    assert HybridPlanner.combine(routed, fallback) is fallback


def test_with_the_same_agents_the_items_flow_as_the_router_read_the_task() -> None:
    routed = _plan(
        {"id": "s1", "agent": "filtering", "options": {"criterion": "spam"}},
        {"id": "s2", "agent": "sentiment", "items": "s1", "depends_on": ["s1"]},
        {"id": "s3", "agent": "extraction", "items": "s1", "depends_on": ["s1"]},
    )
    drafted = _plan(  # the model's own ids, options and order; sentiment reads the raw input
        {"id": "a", "agent": "filtering", "options": {"mode": "drop", "criterion": "junk mail"}},
        {"id": "b", "agent": "extraction", "items": "a", "depends_on": ["a"], "options": {"types": ["person"]}},
        {"id": "c", "agent": "sentiment"},
    )
    fixed, changed = adopt_flow(drafted, routed)
    assert changed
    assert [(s.agent, s.items, s.depends_on) for s in fixed.subtasks] == [("filtering", "input", []), ("sentiment", "s1", ["s1"]), ("extraction", "s1", ["s1"])]
    assert fixed.subtasks[0].options == {"mode": "drop", "criterion": "junk mail"}  # the model's options win
    assert fixed.subtasks[2].options == {"types": ["person"]}
    same, changed = adopt_flow(_plan({"id": "x", "agent": "filtering"}, {"id": "y", "agent": "sentiment", "items": "x", "depends_on": ["x"]}), routed.model_copy(update={"subtasks": routed.subtasks[:2]}))
    assert not changed and [s.id for s in same.subtasks] == ["s1", "s2"]  # the same flow under other ids
    other = _plan({"id": "s1", "agent": "sentiment"})
    assert adopt_flow(other, routed) == (other, False)  # other agents: the model's plan stays


async def test_the_hybrid_planner_says_when_the_router_rewired_the_plan(tmp_path: Path) -> None:
    llm = FakeModel(['["filtering(drop: spam) <- input", "sentiment <- input"]'], chat=True)
    routed = PlanOutcome(
        _plan({"id": "s1", "agent": "filtering"}, {"id": "s2", "agent": "sentiment", "items": "s1", "depends_on": ["s1"]}),
        PlannerInfo(name="router", reason="r"),
    )
    drafted = await LLMPlanner().plan(_ctx(llm, tmp_path), "Filter out spam, then give the sentiment of the rest", AGENTS, has_input=True, reason="t")
    outcome = HybridPlanner.combine(routed, drafted)
    assert [(s.agent, s.items) for s in outcome.plan.subtasks] == [("filtering", "input"), ("sentiment", "s1")]
    assert outcome.plan.subtasks[0].options.get("criterion") == "spam" and "the items flow as the router read the task" in outcome.info.reason


@pytest.mark.parametrize(
    ("spec", "chat", "planner"),
    [
        ("embedded:", False, "RouterPlanner"),
        ("embedded:smollm2-135m-instruct", True, "RouterPlanner"),
        ("embedded:qwen2.5-coder-0.5b-instruct", True, "RouterPlanner"),
        ("embedded:qwen2.5-coder-1.5b-instruct", True, "HybridPlanner"),
        ("ollama:llama3.2", True, "LLMPlanner"),
    ],
)
async def test_auto_chooses_by_what_the_llm_tier_was_measured_to_do(spec: str, chat: bool, planner: str, tmp_path: Path) -> None:
    chosen, why = await choose_planner(_ctx(FakeModel(chat=chat, spec=spec), tmp_path))
    assert type(chosen).__name__ == planner and spec in why


async def test_labels_the_task_names_beyond_the_known_ones_are_kept(tmp_path: Path) -> None:
    llm = FakeModel(['["sentiment(positive, negative, mixed) <- input"]'], chat=True)
    outcome = await LLMPlanner().plan(_ctx(llm, tmp_path), "Is each of these reviews positive, negative or mixed?", AGENTS, has_input=True, reason="t")
    assert outcome.plan.subtasks[0].options == {"labels": ["positive", "negative", "mixed"]}

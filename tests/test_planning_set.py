"""The planning set (benchmarks/data/planning.jsonl, dev and test splits) and the held-out set
(planning-heldout.jsonl) are consistent, and the scorer of
benchmarks/planning.py gives a right plan 1.0 and a wrong one less; the benchmark loop runs on
fakes. Nothing here plans with a real model."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import planning  # noqa: E402
from benchmarks.planning import HELDOUT, Case, case_problems, cases_of, load_cases, reference_plan, run_cases, score_plan, summarise  # noqa: E402
from moa.errors import ErrorCode, UserError  # noqa: E402
from moa.workflow.catalog import builtin_agents  # noqa: E402
from moa.workflow.plan import Plan  # noqa: E402

AGENTS = builtin_agents()
CASES = load_cases()
HELD_OUT = load_cases(HELDOUT)
QUICKSTART = next(c for c in CASES if c.task == "Filter out spam, then give the sentiment and the entities of the rest")


def _plan(*subtasks: dict[str, Any]) -> Plan:
    return Plan.model_validate({"subtasks": list(subtasks)})


def test_the_set_is_large_and_varied() -> None:
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)
    assert len({c.task.lower() for c in CASES}) == len(CASES)
    sizes = Counter(min(len(c.steps), 3) for c in CASES)
    assert sizes[1] >= 15 and sizes[2] >= 15 and sizes[3] >= 10, sizes
    assert sum(not c.has_input for c in CASES) >= 8
    used = Counter(s.agent for c in CASES for s in c.steps)
    assert set(used) == set(AGENTS), used  # every built-in agent is planned somewhere
    assert any(s.mode == "keep" for c in CASES for s in c.steps) and any(s.mode == "drop" for c in CASES for s in c.steps)
    assert any(len(c.steps) > 1 and not c.edges for c in CASES)  # independent steps
    assert any(any(s.agent == "retrieval" and not c.has_input for s in c.steps) and c.edges for c in CASES)


def test_the_splits_are_stratified_and_the_held_out_set_is_new() -> None:
    assert {c.split for c in CASES} == {"dev", "test"} and {c.split for c in HELD_OUT} == {"heldout"}
    for size in (1, 2, 3):
        group = [c for c in CASES if min(len(c.steps), 3) == size]
        tests = sum(c.split == "test" for c in group)
        assert len(group) // 4 <= tests <= len(group) // 2, (size, tests, len(group))  # about a third of each step count
    assert len(HELD_OUT) >= 30
    assert not {c.id for c in HELD_OUT} & {c.id for c in CASES}
    assert not {c.task.lower() for c in HELD_OUT} & {c.task.lower() for c in CASES}
    sizes = Counter(min(len(c.steps), 3) for c in HELD_OUT)
    assert sizes[1] >= 10 and sizes[2] >= 8 and sizes[3] >= 5 and sum(not c.has_input for c in HELD_OUT) >= 6, sizes
    assert [c.id for c in cases_of("test")] == [c.id for c in CASES if c.split == "test"]
    assert len(cases_of("all")) == len(CASES) + len(HELD_OUT)


@pytest.mark.parametrize("case", CASES + HELD_OUT, ids=[c.id for c in CASES + HELD_OUT])
def test_each_case_is_consistent_and_its_reference_plan_scores_1(case: Case) -> None:
    assert case_problems(case, AGENTS) == []
    scored = score_plan(case, reference_plan(case), AGENTS)
    assert scored == {"valid": True, "agents": True, "agent_f1": 1.0, "edges": True, "options": True if any(s.constraints() for s in case.steps) else None, "score": 1.0}


def test_case_problems_are_found() -> None:
    bad = Case.model_validate(
        {"id": "bad", "split": "dev", "task": "x", "has_input": True, "steps": [
            {"id": "a", "agent": "sentiment", "mode": "keep"},
            {"id": "b", "agent": "summarise", "from": "c"},
            {"id": "d", "agent": "filtering", "criterion": ["Spam"]},
        ]}
    )  # fmt: skip
    problems = "\n".join(case_problems(bad, AGENTS))
    assert "constrains 'mode'" in problems and "unknown agent 'summarise'" in problems and "from 'c'" in problems and "lower case" in problems


def test_wrong_plans_score_less() -> None:
    case = QUICKSTART
    right = score_plan(case, reference_plan(case), AGENTS)["score"]
    input_to_all = _plan(  # the bug the issue saw: the later steps analyse the spam too
        {"id": "s1", "agent": "filtering", "options": {"criterion": "spam"}},
        {"id": "s2", "agent": "sentiment", "depends_on": ["s1"]},
        {"id": "s3", "agent": "extraction", "depends_on": ["s1"]},
    )
    serialised = _plan(
        {"id": "s1", "agent": "filtering"},
        {"id": "s2", "agent": "sentiment", "items": "s1", "depends_on": ["s1"]},
        {"id": "s3", "agent": "extraction", "items": "s1", "depends_on": ["s1", "s2"]},
    )
    kept_spam = _plan(
        {"id": "s1", "agent": "filtering", "options": {"criterion": "spam", "mode": "keep"}},
        {"id": "s2", "agent": "sentiment", "items": "s1", "depends_on": ["s1"]},
        {"id": "s3", "agent": "extraction", "items": "s1", "depends_on": ["s1"]},
    )
    every_agent = _plan(
        {"id": "s1", "agent": "retrieval"},
        {"id": "s2", "agent": "filtering", "items": "s1", "depends_on": ["s1"]},
        {"id": "s3", "agent": "sentiment", "items": "s2", "depends_on": ["s2"]},
        {"id": "s4", "agent": "extraction", "items": "s2", "depends_on": ["s2"]},
    )
    self_loop = _plan({"id": "s1", "agent": "sentiment", "depends_on": ["s1"]})
    assert right == 1.0
    assert score_plan(case, input_to_all, AGENTS) == {"valid": True, "agents": True, "agent_f1": 1.0, "edges": False, "options": True, "score": 0.75}
    assert score_plan(case, serialised, AGENTS)["edges"] is False  # defaults: criterion spam, mode drop
    assert score_plan(case, kept_spam, AGENTS) == {"valid": True, "agents": True, "agent_f1": 1.0, "edges": True, "options": False, "score": 0.75}
    assert score_plan(case, every_agent, AGENTS) == {"valid": True, "agents": False, "agent_f1": 0.857, "edges": False, "options": True, "score": 0.5}
    assert score_plan(case, self_loop, AGENTS)["score"] == 0.0
    assert score_plan(case, None, AGENTS)["score"] == 0.0


def test_options_follow_the_agents_defaults_and_synonyms() -> None:
    case = next(c for c in CASES if c.id == "one-extraction-2")  # people and companies
    assert score_plan(case, _plan({"id": "x", "agent": "extraction"}), AGENTS)["options"] is True  # default types have both
    assert score_plan(case, _plan({"id": "x", "agent": "extraction", "options": {"types": ["Person", "Company"]}}), AGENTS)["options"] is True
    assert score_plan(case, _plan({"id": "x", "agent": "extraction", "options": {"types": ["person"]}}), AGENTS)["options"] is False
    labels = next(c for c in CASES if c.id == "one-sentiment-3")  # positive or negative
    assert score_plan(labels, _plan({"id": "x", "agent": "sentiment"}), AGENTS)["options"] is False  # the default adds neutral
    assert score_plan(labels, _plan({"id": "x", "agent": "sentiment", "options": {"labels": ["Negative", "positive"]}}), AGENTS)["score"] == 1.0


def test_two_steps_of_one_agent_are_matched_either_way() -> None:
    case = next(c for c in CASES if c.id == "three-chain-3")  # drop spam, keep billing, sentiment
    plan = _plan(
        {"id": "b", "agent": "filtering", "options": {"criterion": "billing questions", "mode": "keep"}, "items": "a", "depends_on": ["a"]},
        {"id": "a", "agent": "filtering", "options": {"criterion": "spam"}},
        {"id": "c", "agent": "sentiment", "items": "b", "depends_on": ["b"]},
    )
    assert score_plan(case, plan, AGENTS)["score"] == 1.0
    swapped = _plan(
        {"id": "a", "agent": "filtering", "options": {"criterion": "billing", "mode": "keep"}},
        {"id": "b", "agent": "filtering", "options": {"criterion": "spam"}, "items": "a", "depends_on": ["a"]},
        {"id": "c", "agent": "sentiment", "items": "b", "depends_on": ["b"]},
    )
    assert score_plan(case, swapped, AGENTS)["options"] is False


async def test_the_benchmark_loop_scores_plans_and_errors() -> None:
    cases = [QUICKSTART, next(c for c in CASES if c.id == "one-retrieval-2")]

    async def plan_fn(case: Case) -> tuple[Plan, int]:
        if case is QUICKSTART:
            return reference_plan(case), 42
        raise UserError(ErrorCode.INVALID_PLAN, "the llm tier produced an invalid plan twice")

    rows = await run_cases(cases, plan_fn, AGENTS)
    assert [(r["id"], r["score"], r["tokens"]) for r in rows] == [(QUICKSTART.id, 1.0, 42), ("one-retrieval-2", 0.0, None)]
    assert "invalid_plan" in rows[1]["error"] and rows[0]["plan"]["subtasks"][0]["agent"] == "filtering"
    summary = summarise(rows)
    assert summary["valid"] == 0.5 and summary["score"] == 0.5 and summary["options"] == 1.0
    results = {
        "machine": planning.machine(), "load_after": [0.0, 0.0, 0.0], "planner": "llm", "llm": "fake:", "warmup_s": 0.0,
        "summary": {"all": summary, "3-step": summarise(rows[:1])}, "rows": rows,
    }  # fmt: skip
    text = planning.render(results)
    assert "| all | 2 | 50% |" in text and "one-retrieval-2: [invalid_plan]" in text

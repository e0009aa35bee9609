from __future__ import annotations

import pytest

from moa.errors import ErrorCode, UserError
from moa.workflow.plan import Plan, Subtask, plan_problems, validate_plan

AGENTS = {"filtering", "sentiment", "extraction", "retrieval"}


def _plan(*subtasks: dict[str, object]) -> dict[str, object]:
    return {"subtasks": list(subtasks)}


def test_valid_plan_orders_layers() -> None:
    plan = validate_plan(
        _plan(
            {"id": "s1", "agent": "filtering"},
            {"id": "s2", "agent": "sentiment", "items": "s1", "depends_on": ["s1"]},
            {"id": "s3", "agent": "extraction", "items": "s1", "depends_on": ["s1"]},
        ),
        AGENTS,
    )
    assert plan.order() == [["s1"], ["s2", "s3"]]


@pytest.mark.parametrize(
    ("plan", "fragment"),
    [
        (_plan({"id": "s1", "agent": "poetry"}), "unknown agent 'poetry'"),
        (_plan({"id": "s1", "agent": "sentiment", "depends_on": ["s1"]}), "depends on itself"),
        (_plan({"id": "s1", "agent": "sentiment", "depends_on": ["s9"]}), "'s9', which is not in the plan"),
        (_plan({"id": "s1", "agent": "sentiment", "items": "s7"}), "takes items from 's7', which is not in the plan"),
        (
            _plan({"id": "s1", "agent": "filtering"}, {"id": "s2", "agent": "sentiment", "items": "s1"}),
            "does not list it in depends_on",
        ),
        (
            _plan(
                {"id": "a", "agent": "filtering", "depends_on": ["b"]},
                {"id": "b", "agent": "sentiment", "depends_on": ["a"]},
            ),
            "cycle",
        ),
        (_plan({"id": "s1", "agent": "sentiment"}, {"id": "s1", "agent": "filtering"}), "used twice"),
    ],
)
def test_invalid_plans_are_rejected_with_the_reason(plan: dict[str, object], fragment: str) -> None:
    with pytest.raises(UserError) as info:
        validate_plan(plan, AGENTS)
    assert info.value.code == ErrorCode.INVALID_PLAN
    assert fragment in info.value.message


def test_malformed_plan_json_is_a_user_error() -> None:
    with pytest.raises(UserError) as info:
        validate_plan('{"subtasks": [{"agent": 3}]}', AGENTS)
    assert info.value.code == ErrorCode.INVALID_PLAN
    assert "malformed" in info.value.message


def test_every_problem_is_listed() -> None:
    plan = Plan(subtasks=[Subtask(id="s1", agent="x", depends_on=["s1", "zz"])])
    problems = plan_problems(plan, AGENTS)
    assert len(problems) == 3

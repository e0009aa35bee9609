"""The plan: a DAG of subtasks, each assigned to an agent, and its validation.

A subtask's items come from the run's input (``items="input"``) or from the items an earlier
subtask passed on (``items="<subtask id>"``, e.g. the messages a filter kept). That earlier
subtask must be among its ``depends_on``.

A subtask's ``cascade`` may name only the steps the run allows plans to name
(:func:`moa.routing.policy.plan_models`): a plan must not choose where the items are sent.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from moa.errors import ErrorCode, UserError
from moa.routing.policy import PLAN_STEPS, foreign_step_problem, routing_text

INPUT = "input"


class Subtask(BaseModel):
    """One step of a plan."""

    id: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_\-]+$")
    """Unique id within the plan, e.g. ``s1``."""
    agent: str
    """Name of the agent that runs this step."""
    instruction: str = ""
    """What this step should do, in words (e.g. the filter criterion)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Extra fields of the agent's input model (e.g. ``{"labels": ["pos", "neg"]}``)."""
    items: str = INPUT
    """Where the items come from: ``input`` or the id of an earlier subtask."""
    depends_on: list[str] = Field(default_factory=list)
    """Ids of subtasks that must finish first."""
    cascade: list[str] | None = None
    """This step's own escalation cascade (e.g. ``["llm"]`` to run on the large model only)."""
    threshold: float | None = Field(None, ge=0, le=1)
    """This step's own escalation threshold."""
    approve: bool = False
    """Wait for a person's approval before this subtask starts (see :mod:`moa.routing.approvals`)."""

    def routing(self) -> str:
        """This step's own cascade and threshold in words (``""`` when it sets neither), e.g.
        ``cascade [slm, llm], threshold 0.8``: what the plan shown to a person must say."""
        return routing_text(self.cascade, self.threshold)


class Plan(BaseModel):
    """A DAG of subtasks."""

    subtasks: list[Subtask] = Field(min_length=1)
    rationale: str = ""
    """Why the planner chose these steps."""

    def get(self, subtask_id: str) -> Subtask:
        return next(s for s in self.subtasks if s.id == subtask_id)

    def order(self) -> list[list[str]]:
        """Subtask ids in layers: each layer depends only on earlier layers."""
        remaining = {s.id: set(s.depends_on) for s in self.subtasks}
        layers: list[list[str]] = []
        done: set[str] = set()
        while remaining:
            layer = sorted(i for i, deps in remaining.items() if deps <= done)
            if not layer:
                raise UserError(ErrorCode.INVALID_PLAN, f"the plan has a cycle among {sorted(remaining)}")
            layers.append(layer)
            done.update(layer)
            for i in layer:
                del remaining[i]
        return layers


def with_agent_options(plan: Plan, options: Mapping[str, Mapping[str, Any]]) -> Plan:
    """``plan`` with ``options[agent]`` set on every subtask of that agent, over its own options
    (the run's ``agent_options``: what the user chose wins over what the planner inferred)."""
    if not any(s.agent in options for s in plan.subtasks):
        return plan
    subtasks = [s.model_copy(update={"options": {**s.options, **options[s.agent]}}) if s.agent in options else s for s in plan.subtasks]
    return plan.model_copy(update={"subtasks": subtasks})


def plan_problems(plan: Plan, agents: Collection[str], models: Collection[str] = PLAN_STEPS) -> list[str]:
    """Every reason the plan cannot run (empty when it is valid); ``models`` are the cascade steps
    it may name (:func:`moa.routing.policy.plan_models`; default: specialist, slm, llm)."""
    problems: list[str] = []
    ids = [s.id for s in plan.subtasks]
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            problems.append(f"subtask id {i!r} is used twice")
        seen.add(i)
    for s in plan.subtasks:
        if s.agent not in agents:
            problems.append(f"subtask {s.id!r} uses unknown agent {s.agent!r} (known: {', '.join(sorted(agents))})")
        allowed = getattr(agents.get(s.agent), "plan_options", None) if isinstance(agents, Mapping) else None
        if allowed is not None and (refused := sorted(set(s.options) - allowed)):
            problems.append(
                f"subtask {s.id!r} sets {', '.join(map(repr, refused))} of agent {s.agent!r}, which a plan may not set "
                f"(a plan may set: {', '.join(sorted(allowed)) or 'nothing'}); do it from code, e.g. `moa memory add` to write the memory"
            )
        if s.id in s.depends_on:
            problems.append(f"subtask {s.id!r} depends on itself")
        if s.cascade is not None and not s.cascade:
            problems.append(f"subtask {s.id!r} has an empty cascade; leave it out, or name steps such as ['slm', 'llm']")
        problems += [foreign_step_problem(f"the cascade of subtask {s.id!r}", step) for step in dict.fromkeys(s.cascade or ()) if step.strip() not in models]
        for d in s.depends_on:
            if d not in seen:
                problems.append(f"subtask {s.id!r} depends on {d!r}, which is not in the plan")
        if s.items != INPUT:
            if s.items not in seen:
                problems.append(f"subtask {s.id!r} takes items from {s.items!r}, which is not in the plan")
            elif s.items not in s.depends_on:
                problems.append(f"subtask {s.id!r} takes items from {s.items!r} but does not list it in depends_on")
    if not problems:
        try:
            plan.order()
        except UserError as exc:
            problems.append(exc.message)
    return problems


def validate_plan(plan: Plan | dict[str, Any] | str, agents: Collection[str], models: Collection[str] = PLAN_STEPS) -> Plan:
    """Parse and check a plan; raise :class:`UserError` (``INVALID_PLAN``) listing every problem
    (``models``: the cascade steps it may name, see :func:`plan_problems`)."""
    try:
        if isinstance(plan, str):
            plan = Plan.model_validate_json(plan)
        elif isinstance(plan, dict):
            plan = Plan.model_validate(plan)
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:8])
        raise UserError(ErrorCode.INVALID_PLAN, f"the plan is malformed: {details}") from exc
    problems = plan_problems(plan, agents, models)
    if problems:
        raise UserError(ErrorCode.INVALID_PLAN, "the plan is invalid: " + "; ".join(problems), details={"problems": problems})
    return plan

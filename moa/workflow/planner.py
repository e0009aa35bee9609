"""Planners turn a task into a validated :class:`~moa.workflow.plan.Plan`.

* :class:`RouterPlanner` needs no generative model: it splits the task into clauses, embeds them
  and matches each against every agent's description and example requests (semantic-router
  style), then orders the chosen agents into a DAG by stage (retrieval → filtering → the rest in
  parallel). Each agent's options come from the task's words (the filter criterion from its clause;
  :meth:`~moa.agent.base.Agent.options_from_task`, e.g. sentiment's label set, from the whole task). It is the default with the embedded Gemma 3 270M, whose own plans were measured to
  be schema-valid but meaningless.
* :class:`LLMPlanner` asks the ``llm`` tier for a plan as constrained JSON, validates it (known
  agents, no cycles, no dangling dependencies, resolvable items) and gives the model one repair
  attempt with the problems listed.

:func:`choose_planner` picks one and says why; the run record keeps that reason.
:func:`plan_task` plans with it, and decides what happens when the llm tier cannot plan:

* ``planner = "auto"``: the router planner plans instead, and :attr:`PlannerInfo.warning` says
  why (the run's ``warnings``, the CLI's ``warning`` line, a ``planner_fell_back`` log). It does
  so when the llm tier is unavailable (``model_unreachable``, ``model_timeout``), answers with an
  error or garbage (``model_error``), or gives no valid plan after its repair (``invalid_output``,
  ``invalid_plan``): ``auto`` means "the best planner that works now", and the warning keeps a
  broken llm planner from going unnoticed. A budget that is used up or an approval still waited
  for are never fallen back from.
* ``planner = "llm"``: the error stands (the run stops), and its message says that
  ``--planner router`` plans without the llm tier.
* A person denying the llm planner's call: the router planner plans (either choice).
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from moa.agent.base import Agent
from moa.agent.context import RunContext
from moa.agent.structured import generate_structured
from moa.errors import ApprovalDenied, ErrorCode, InvalidOutput, InvalidPlan, ModelFailed, ModelUnavailable, MoaError, UserError
from moa.logs import get_logger
from moa.models.base import GenerateRequest, Message
from moa.routing.policy import PLAN_STEPS, plan_models
from moa.workflow.limits import DEFAULT_LIMITS, DocumentLimits, load_json
from moa.workflow.plan import INPUT, Plan, Subtask, plan_problems, validate_plan

AgentMap = Mapping[str, Agent]  # type: ignore[type-arg]
log = get_logger(__name__)


class PlannerInfo(BaseModel):
    """Which planner made the plan, and why it was chosen."""

    name: Literal["router", "llm", "given"]
    reason: str
    scores: dict[str, float] = Field(default_factory=dict)
    """Router planner: best similarity of the task's clauses to each agent."""
    warning: str | None = None
    """Set when the planner that was chosen could not plan and another one did (see :func:`plan_task`)."""


@dataclass
class PlanOutcome:
    """A plan and how it was made (the planner's model calls are in the open call scope)."""

    plan: Plan
    info: PlannerInfo


class Planner(ABC):
    @abstractmethod
    async def plan(self, ctx: RunContext, task: str, agents: AgentMap, *, has_input: bool, reason: str) -> PlanOutcome:
        """Make a valid plan for ``task`` using ``agents``."""


# Stage of each built-in agent in a routed DAG; user agents run in the last stage.
STAGES: dict[str, int] = {"retrieval": 0, "filtering": 1, "extraction": 2, "sentiment": 2}
_SPLIT = re.compile(r"[.;,\n]|\bthen\b|\band\b|\balso\b", re.IGNORECASE)
_FILTER_VERBS = re.compile(
    r"^(please\s+)?(filter(\s+out)?|remove|drop|discard|exclude|ignore|skip|keep(\s+only)?|only\s+keep)\s+(the\s+|any\s+|all\s+)?",
    re.IGNORECASE,
)


def _clauses(task: str) -> list[str]:
    parts = [p.strip(" :-") for p in _SPLIT.split(task)]
    return [p for p in parts if len(p) > 2] or [task.strip()]


def _filter_options(instruction: str) -> dict[str, str]:
    mode = "keep" if re.search(r"\b(keep only|only keep)\b", instruction, re.IGNORECASE) else "drop"
    criterion = _FILTER_VERBS.sub("", instruction.strip()).strip() or "spam"
    return {"criterion": criterion, "mode": mode}


class RouterPlanner(Planner):
    """Embedding-based routing of task clauses to agents (no generative model)."""

    def __init__(self, threshold: float = 0.4) -> None:
        self.threshold = threshold

    async def _agent_vectors(self, ctx: RunContext, agents: AgentMap) -> dict[str, np.ndarray]:
        async def compute() -> dict[str, np.ndarray]:
            embedder = ctx.embedder()
            return {
                name: np.asarray(await embedder.aembed([a.description, *a.examples]), dtype=np.float32)
                for name, a in agents.items()
            }

        key = ("router_vectors", tuple(sorted((n, a.description, a.examples) for n, a in agents.items())))
        vectors, _ = await ctx.cached(key, compute)
        return vectors  # type: ignore[no-any-return]

    async def plan(self, ctx: RunContext, task: str, agents: AgentMap, *, has_input: bool, reason: str) -> PlanOutcome:
        clauses = _clauses(task)
        vectors = await self._agent_vectors(ctx, agents)
        clause_vecs = np.asarray(await ctx.embedder().aembed(clauses), dtype=np.float32)
        # scores[agent][clause]: best similarity to the agent's description or examples
        scores = {name: (clause_vecs @ vecs.T).max(axis=1) for name, vecs in vectors.items()}
        names = list(scores)
        matrix = np.stack([scores[n] for n in names])  # agents x clauses
        chosen: dict[str, str] = {}
        for j, clause in enumerate(clauses):
            best = int(matrix[:, j].argmax())
            if matrix[best, j] >= self.threshold and names[best] not in chosen:
                chosen[names[best]] = clause
        best_overall = {n: round(float(scores[n].max()), 3) for n in names}
        note = f"matched {len(chosen)} agent(s) with similarity >= {self.threshold}"
        if not chosen:
            top = max(best_overall, key=best_overall.__getitem__)
            chosen[top] = task
            note = f"no clause reached similarity {self.threshold}; used the closest agent {top!r} ({best_overall[top]})"
        options = {name: _filter_options(clause) if name == "filtering" else agents[name].options_from_task(task) for name, clause in chosen.items()}
        plan = self._order(chosen, has_input, options)
        return PlanOutcome(plan, PlannerInfo(name="router", reason=f"{reason}; {note}", scores=best_overall))

    @staticmethod
    def _order(chosen: Mapping[str, str], has_input: bool, options: Mapping[str, dict[str, Any]]) -> Plan:
        by_stage: dict[int, list[str]] = {}
        for name in chosen:
            by_stage.setdefault(STAGES.get(name, max(STAGES.values())), []).append(name)
        subtasks: list[Subtask] = []
        upstream: str | None = None
        for stage in sorted(by_stage):
            stage_ids: list[str] = []
            for name in sorted(by_stage[stage]):
                sid = f"s{len(subtasks) + 1}"
                instruction = chosen[name]
                chosen_options = options.get(name, {})
                if name == "retrieval" and not has_input:
                    chosen_options = {}
                subtasks.append(
                    Subtask(
                        id=sid,
                        agent=name,
                        instruction=instruction,
                        options=chosen_options,
                        items=upstream or INPUT,
                        depends_on=[upstream] if upstream else [],
                    )
                )
                stage_ids.append(sid)
            upstream = stage_ids[0]
        return Plan(subtasks=subtasks, rationale="router: " + ", ".join(f"{n} ← '{c}'" for n, c in chosen.items()))


class LLMPlanner(Planner):
    """Asks the ``llm`` tier for a plan (constrained JSON), validates it, repairs once."""

    def _prompt(self, task: str, agents: AgentMap, has_input: bool) -> str:
        catalog = "\n".join(
            f"- {name}: {a.description} Options: {sorted(set(a.input_type.model_fields) - {a.text_field})}" for name, a in agents.items()
        )
        return (
            "Decompose the task into subtasks for these agents:\n"
            f"{catalog}\n\n"
            "Each subtask has an id (s1, s2, ...), an agent, an instruction, options for the agent, "
            "`items`: 'input' (the run's input items"
            + ("" if has_input else "; here: the task text itself")
            + ") or the id of an earlier subtask whose output items it processes (then list that id in depends_on), "
            "and depends_on. Independent subtasks must not depend on each other so they run in parallel. "
            "Never make a subtask depend on itself.\n\n"
            f"Task: {task}\n"
        )

    async def plan(self, ctx: RunContext, task: str, agents: AgentMap, *, has_input: bool, reason: str) -> PlanOutcome:
        step = ctx.step("llm")
        backend = ctx.backend_for(step)
        prompt = self._prompt(task, agents, has_input)
        problems: list[str] = []
        approval = f"plan the task with the llm tier ({backend.spec})"
        with ctx.scope() as scope:
            for _ in range(2):
                text = prompt if not problems else prompt + "\nYour previous plan was invalid: " + "; ".join(problems) + "\nFix it.\n"
                if (await backend.acapabilities()).chat:
                    request = GenerateRequest(messages=[Message(role="user", content=text + "Reply with the plan as JSON.")], max_tokens=1024)
                else:
                    request = GenerateRequest(prompt=text + "Plan (JSON): ", max_tokens=512)
                result = await generate_structured(ctx, step, request, Plan, purpose="plan", ask_as="plan", reason=approval)
                problems = plan_problems(result.value, agents, plan_models(ctx.settings))
                if not problems:
                    return PlanOutcome(result.value, PlannerInfo(name="llm", reason=reason))
        raise UserError(
            ErrorCode.INVALID_PLAN,
            f"the llm tier ({backend.spec}) produced an invalid plan twice: {'; '.join(problems)}; use a more capable model (MOA_LLM)",
            details={"problems": problems},
            usage=scope.usage,
        )


async def choose_planner(ctx: RunContext) -> tuple[Planner, str]:
    """The planner for this run and the reason (recorded in the run)."""
    choice = ctx.settings.planner
    if choice == "router":
        return RouterPlanner(), "planner=router was requested"
    if choice == "llm":
        return LLMPlanner(), "planner=llm was requested"
    llm = ctx.models.tier("llm")
    if (await llm.acapabilities()).chat:
        return LLMPlanner(), f"the llm tier ({llm.spec}) is an instruction-tuned chat model"
    return RouterPlanner(), (
        f"the llm tier ({llm.spec}) is a base model with no chat template (its plans were measured to be "
        "meaningless), so tasks are routed by embedding similarity"
    )


FALLS_BACK: tuple[type[MoaError], ...] = (ModelUnavailable, ModelFailed, InvalidOutput, InvalidPlan)
"""What the llm tier failing at planning may raise that ``planner = "auto"`` falls back from."""
ROUTER_HINT = "`--planner router` (planner = \"router\") plans without the llm tier, by embedding similarity"


async def plan_task(ctx: RunContext, task: str, agents: AgentMap, *, has_input: bool) -> PlanOutcome:
    """Plan ``task`` with the planner :func:`choose_planner` picks; when the llm tier cannot plan,
    fall back to the router planner or say how to do without it (see the module docstring)."""
    auto = ctx.settings.planner == "auto"
    try:
        planner, reason = await choose_planner(ctx)
        return await planner.plan(ctx, task, agents, has_input=has_input, reason=reason)
    except ApprovalDenied:
        reason = "a person denied planning with the llm tier, so tasks are routed by embedding similarity"
        return await RouterPlanner().plan(ctx, task, agents, has_input=has_input, reason=reason)
    except FALLS_BACK as exc:
        if not auto:
            raise type(exc)(exc.code, f"{exc.message}; {ROUTER_HINT}", details=exc.details, usage=exc.usage) from exc
        spec = ctx.models.tier("llm").spec
        warning = (
            f"the llm tier ({spec}) could not plan ([{exc.code}] {exc.message}), so the router planner planned instead; "
            "set --planner router to skip the llm tier, or --planner llm to make this an error"
        )
        log.warning("planner_fell_back", code=str(exc.code), error=exc.message[:500], llm=spec)
        reason = f"planner=auto: the llm tier ({spec}) failed to plan ({exc.code}), so tasks are routed by embedding similarity"
        outcome = await RouterPlanner().plan(ctx, task, agents, has_input=has_input, reason=reason)
        return PlanOutcome(outcome.plan, outcome.info.model_copy(update={"warning": warning}))


def plan_from_json(text: str, *, what: str = "the plan", limits: DocumentLimits = DEFAULT_LIMITS) -> dict[str, object]:
    """The JSON object of a plan given as text (``what`` names it in errors), parsed within
    ``limits``; validating it is :func:`given_plan`'s job."""
    try:
        data = load_json(text, what, limits)
    except json.JSONDecodeError as exc:
        raise UserError(ErrorCode.INVALID_PLAN, f"{what} is not valid JSON: {exc}; see docs/concepts.md for the format") from exc
    if not isinstance(data, dict):
        raise UserError(ErrorCode.INVALID_PLAN, f"{what} must be a JSON object with `subtasks`, not a {type(data).__name__}; see docs/concepts.md")
    return data


def given_plan(
    plan: Plan | dict[str, object] | str, agents: AgentMap, *, models: Collection[str] = PLAN_STEPS, limits: DocumentLimits = DEFAULT_LIMITS
) -> PlanOutcome:
    """A plan supplied by the caller, validated like any other: its cascades may name only
    ``models`` (pass :func:`moa.routing.policy.plan_models` of the run's settings; default:
    specialist, slm, llm), and a plan given as JSON text must stay within ``limits`` (size,
    nesting: :mod:`moa.workflow.limits`)."""
    if isinstance(plan, str):
        plan = plan_from_json(plan, limits=limits)
    return PlanOutcome(validate_plan(plan, agents, models), PlannerInfo(name="given", reason="the caller supplied the plan"))


__all__: Sequence[str] = ["LLMPlanner", "PlanOutcome", "Planner", "PlannerInfo", "RouterPlanner", "choose_planner", "given_plan", "plan_from_json", "plan_task"]

"""Planners turn a task into a validated :class:`~moa.workflow.plan.Plan`.

* :class:`RouterPlanner` needs no generative model: it splits the task into clauses, embeds them
  and matches each against every agent's description and example requests (semantic-router
  style), then orders the chosen agents into a DAG by stage (retrieval → filtering → the rest in
  parallel). Each agent's options come from the task's words (the filter criterion from its clause;
  :meth:`~moa.agent.base.Agent.options_from_task`, e.g. sentiment's label set, from the whole task). It is the default with the embedded Gemma 3 270M, whose own plans were measured to
  be schema-valid but meaningless.
* :class:`LLMPlanner` asks the ``llm`` tier for a compact plan (one line a step, agents from the
  catalogue, only the options that matter: :mod:`moa.workflow.planformat`), repairs what code can
  repair (:mod:`moa.workflow.planrepair`), validates it, and falls back to the router when no
  usable plan is left (no second model call).

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
from moa.errors import ApprovalDenied, ErrorCode, InvalidOutput, InvalidPlan, ModelFailed, ModelUnavailable, MoaError, UserError
from moa.logs import get_logger
from moa.models.base import GenerateRequest
from moa.models.shipped import SHIPPED
from moa.routing.policy import PLAN_STEPS, plan_models
from moa.workflow.cues import clause_cues, filter_lead, filter_options, flags_only, negated
from moa.workflow.limits import DEFAULT_LIMITS, DocumentLimits, load_json
from moa.workflow.plan import INPUT, Plan, Subtask, plan_problems, validate_plan
from moa.workflow.planformat import max_plan_tokens, parse_steps, plan_messages, plan_prompt, plan_schema, task_prompt, to_plan
from moa.workflow.planrepair import adopt_flow, drop_agents, repair_plan, repair_steps

AgentMap = Mapping[str, Agent]  # type: ignore[type-arg]
log = get_logger(__name__)


class PlannerInfo(BaseModel):
    """Which planner made the plan, and why it was chosen."""

    name: Literal["router", "llm", "hybrid", "given"]
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
_SPLIT = re.compile(r"[.;,?\n]|\bthen\b|\band\b|\balso\b|(?=\bexcept\b)|(?=\bexcluding\b)", re.IGNORECASE)
def _clauses(task: str) -> list[str]:
    parts = [p.strip(" :-") for p in _SPLIT.split(task)]
    return [p for p in parts if len(p) > 2] or [task.strip()]


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
        excluded: set[str] = set()
        for j, clause in enumerate(clauses):
            best = int(matrix[:, j].argmax())
            matched = [names[best]] if matrix[best, j] >= self.threshold else []
            cued = clause_cues(clause, names)
            if negated(clause):  # "no entity extraction needed": the agent it names is not wanted
                excluded.update(cued or matched)
                continue
            if "filtering" in cued and filter_lead(clause):  # "Keep only the reviews about ...": a filter, whatever it resembles
                matched = ["filtering"]
            for name in [*matched, *cued]:
                chosen.setdefault(name, clause)
        for name in excluded:
            chosen.pop(name, None)
        best_overall = {n: round(float(scores[n].max()), 3) for n in names}
        note = f"matched {len(chosen)} agent(s) with similarity >= {self.threshold} or by their cue words"
        if not chosen:
            top = max((n for n in best_overall if n not in excluded), key=best_overall.__getitem__, default=max(best_overall, key=best_overall.__getitem__))
            chosen[top] = task
            note = f"no clause reached similarity {self.threshold}; used the closest agent {top!r} ({best_overall[top]})"
        options = {name: filter_options(clause) if name == "filtering" else agents[name].options_from_task(task) for name, clause in chosen.items()}
        independent = {n for n, c in chosen.items() if (n == "filtering" and flags_only(c)) or (n == "retrieval" and has_input)}
        plan = self._order(chosen, has_input, options, independent)
        return PlanOutcome(plan, PlannerInfo(name="router", reason=f"{reason}; {note}", scores=best_overall))

    @staticmethod
    def _order(chosen: Mapping[str, str], has_input: bool, options: Mapping[str, dict[str, Any]], independent: Collection[str] = ()) -> Plan:
        """Stages in order, each taking the items of the first step of the stage before; agents in
        ``independent`` (a filter that only flags, a per-item lookup) run in the last stage."""
        last = max(STAGES.values())
        by_stage: dict[int, list[str]] = {}
        for name in chosen:
            by_stage.setdefault(last if name in independent else STAGES.get(name, last), []).append(name)
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
    """Asks the ``llm`` tier for a compact plan (:mod:`moa.workflow.planformat`), repairs it
    mechanically (:mod:`moa.workflow.planrepair`), and takes the options the task's words name.

    One model call per plan: a short fixed prompt (catalogue, rules, example plans) the engine's KV
    cache reuses, the task last, the answer constrained to the format's JSON schema where the
    backend takes one, and a token limit derived from the format. When the answer holds no usable
    plan even after the repairs, ``invalid_plan`` is raised: :func:`plan_task` then lets the router
    plan with a warning (``planner = "auto"``) or stops the run saying how to do without the llm
    tier; ``fallback=True`` makes the planner itself route the task instead, silently (the reason
    says so).
    """

    def __init__(self, *, fallback: bool = False, max_steps: int = 4) -> None:
        self.fallback = fallback
        self.max_steps = max_steps

    def request(self, task: str, agents: AgentMap, *, has_input: bool, chat: bool, json_schema: bool) -> GenerateRequest:
        """The one request that plans ``task`` (chat messages or a completion prompt)."""
        schema = plan_schema(list(agents)) if json_schema else None
        limit = max_plan_tokens(self.max_steps)
        if chat:
            return GenerateRequest(messages=plan_messages(agents, task, has_input), json_schema=schema, max_tokens=limit)
        prompt = plan_prompt(agents) + task_prompt(task, has_input) + " "
        return GenerateRequest(prompt=prompt, json_schema=schema, max_tokens=limit, stop=["\nTask:"])

    def read(self, text: str, task: str, agents: AgentMap, models: Collection[str] = PLAN_STEPS) -> tuple[Plan | None, list[str]]:
        """The plan in a model's answer, repaired, with the task's own options (None: no usable
        plan), and the notes: repairs made, or why there is no plan. An answer in moa's full plan
        format (``{"subtasks": [...]}``) is read too; its cascades may name only ``models``."""
        unchanged = [name for name, agent in agents.items() if type(agent).forward is Agent.forward]
        steps, notes = repair_steps(parse_steps(text), list(agents), unchanged=unchanged)
        if steps:
            plan = to_plan(steps, agents, rationale="llm: " + "; ".join(s.line for s in steps))
        else:
            try:
                plan = Plan.model_validate_json(text.strip() or "null")
            except ValueError:
                return None, [*notes, f"no plan steps in the answer {text[:200]!r}"]
        plan, more = repair_plan(plan, list(agents))
        plan = with_task_options(plan, task, agents)
        problems = plan_problems(plan, agents, models)
        return (None if problems else plan), [*notes, *more, *problems]

    async def plan(self, ctx: RunContext, task: str, agents: AgentMap, *, has_input: bool, reason: str) -> PlanOutcome:
        step = ctx.step("llm")
        backend = ctx.backend_for(step)
        caps = await backend.acapabilities()
        request = self.request(task, agents, has_input=has_input, chat=caps.chat, json_schema=caps.json_schema)
        approval = f"plan the task with the llm tier ({backend.spec})"
        with ctx.scope() as scope:
            generation = await ctx.call(step, request, purpose="plan", ask_as="plan", reason=approval)
        plan, notes = self.read(generation.text, task, agents, plan_models(ctx.settings))
        said = f"; repaired: {'; '.join(notes)}" if notes and plan is not None else ""
        if plan is not None:
            return PlanOutcome(plan, PlannerInfo(name="llm", reason=reason + said))
        if self.fallback:
            routed = await RouterPlanner().plan(ctx, task, agents, has_input=has_input, reason=reason)
            why = f"{reason}; the llm tier's plan was unusable ({'; '.join(notes)}), so the router planned the task"
            return PlanOutcome(routed.plan, routed.info.model_copy(update={"reason": why}))
        raise UserError(
            ErrorCode.INVALID_PLAN,
            f"the llm tier ({backend.spec}) produced no usable plan: {'; '.join(notes)}; use a more capable model (MOA_LLM)",
            details={"problems": notes, "answer": generation.text[:2000]},
            usage=scope.usage,
        )


class HybridPlanner(Planner):
    """The LLM planner's plan, checked by the router: a step whose agent the router did not match
    to any clause of the task (by embedding similarity or cue words) is dropped; when the two
    plans then have the same agents, the items flow as in the router's plan
    (:func:`~moa.workflow.planrepair.adopt_flow`), with the LLM's options.

    Small models add steps nobody asked for ("I only want the tickets about refunds" → a filter,
    then a sentiment step) and chain steps the task runs side by side (or the reverse); the
    router rarely misses an agent the task names and reads "then" / "of the rest" from its words,
    but it phrases options only from fixed cues. The LLM plans, the router vetoes and wires.
    """

    def __init__(self, llm: LLMPlanner | None = None, router: RouterPlanner | None = None) -> None:
        self.llm = llm or LLMPlanner()
        self.router = router or RouterPlanner()

    async def plan(self, ctx: RunContext, task: str, agents: AgentMap, *, has_input: bool, reason: str) -> PlanOutcome:
        routed = await self.router.plan(ctx, task, agents, has_input=has_input, reason=reason)
        drafted = await self.llm.plan(ctx, task, agents, has_input=has_input, reason=reason)
        return self.combine(routed, drafted)

    @staticmethod
    def combine(routed: PlanOutcome, drafted: PlanOutcome) -> PlanOutcome:
        """The LLM planner's plan (``drafted``) without the agents the router's (``routed``) lacks."""
        if drafted.info.name != "llm":  # no usable llm plan: the router planned it
            return drafted
        plan, notes = drop_agents(drafted.plan, {s.agent for s in routed.plan.subtasks})
        plan, reflowed = adopt_flow(plan, routed.plan)
        if reflowed:
            notes.append("the items flow as the router read the task")
        said = f"; the router changed it: {'; '.join(notes)}" if notes else "; the router agreed"
        return PlanOutcome(plan, PlannerInfo(name="hybrid", reason=drafted.info.reason + said, scores=routed.info.scores))


def with_task_options(plan: Plan, task: str, agents: AgentMap) -> Plan:
    """``plan`` without a label set the model invented (labels the task does not name), and with
    the options the task's words choose (:meth:`~moa.agent.base.Agent.options_from_task`, e.g. the
    labels "positive or negative" names) where the model set none: "positive, negative or mixed"
    keeps the model's three labels."""
    words = task.lower()
    subtasks = []
    for s in plan.subtasks:
        agent = agents.get(s.agent)
        if agent is None:
            subtasks.append(s)
            continue
        options = dict(s.options)
        labels = options.get("labels")
        if isinstance(labels, list) and (len(labels) < 2 or not all(str(label).lower() in words for label in labels)):
            del options["labels"]
        types = options.get("types")
        if isinstance(types, list) and not types:
            del options["types"]
        for key, value in agent.options_from_task(task).items():  # the model's own, when the task names them all, stay
            options.setdefault(key, value)
        subtasks.append(s.model_copy(update={"options": options}) if options != s.options else s)
    return plan.model_copy(update={"subtasks": subtasks})


async def choose_planner(ctx: RunContext) -> tuple[Planner, str]:
    """The planner for this run and the reason (recorded in the run).

    ``auto``: the router for a base model (its plans were measured to be meaningless) and for the
    shipped chat models measured to plan worse than the router (SmolLM2-135M, Qwen2.5-Coder-0.5B:
    :attr:`~moa.models.shipped.ShippedModel.plans`); the hybrid planner for the shipped models
    that plan well (Qwen2.5-Coder-1.5B: small models add steps, the router drops them); the LLM
    planner for every other chat model (a server's model, e.g. ``ollama:llama3.2``, ``openai:...``).
    """
    choice = ctx.settings.planner
    if choice == "router":
        return RouterPlanner(), "planner=router was requested"
    if choice == "llm":
        return LLMPlanner(), "planner=llm was requested"
    if choice == "hybrid":
        return HybridPlanner(), "planner=hybrid was requested"
    llm = ctx.models.tier("llm")
    if not (await llm.acapabilities()).chat:
        return RouterPlanner(), (
            f"the llm tier ({llm.spec}) is a base model with no chat template (its plans were measured to be "
            "meaningless), so tasks are routed by embedding similarity"
        )
    shipped = SHIPPED.get(llm.spec.removeprefix("embedded:")) if llm.spec.startswith("embedded:") else None
    if shipped is None:
        return LLMPlanner(), f"the llm tier ({llm.spec}) is an instruction-tuned chat model"
    if not shipped.plans:
        return RouterPlanner(), (
            f"the llm tier ({llm.spec}) is a small chat model measured to plan worse than the router "
            "(benchmarks/planning.py), so tasks are routed by embedding similarity"
        )
    return HybridPlanner(), f"the llm tier ({llm.spec}) is a small chat model that plans well; the router checks its plan's agents"


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


__all__: Sequence[str] = [
    "HybridPlanner", "LLMPlanner", "PlanOutcome", "Planner", "PlannerInfo", "RouterPlanner", "choose_planner", "given_plan", "plan_from_json", "plan_task",
]  # fmt: skip

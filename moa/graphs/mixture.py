"""mixture — layered Mixture-of-Agents: proposers answer in parallel, layer after layer; an aggregator writes the answer.

Together MoA (Wang et al. 2024): each proposer of layer 1 answers the task; each proposer of a
later layer sees every answer of the layer before and gives an improved one; the aggregator
synthesises the last layer's answers into the final answer. Proposers are any model steps
(``slm``, ``llm`` or a model spec), and may be the same model with different instructions and
temperatures. Every proposal is a subtask of the run record (``L1p1``, ``L1p2``...), with its
model, tokens and latency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, Literal

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field

from moa.kit import (
    AgentRun,
    ApprovalDenied,
    ErrorCode,
    GenerateRequest,
    ItemResult,
    Message,
    MoaError,
    Plan,
    PlannerInfo,
    RunContext,
    RunDeps,
    RunGraph,
    RunState,
    Subtask,
    SubtaskResult,
    Usage,
    UserError,
)


class Proposer(BaseModel):
    """One proposer: a model step, an instruction and a temperature."""

    model: str = "slm"
    """``slm``, ``llm`` or a model spec."""
    temperature: float = Field(0.7, ge=0, le=2)
    style: str = ""
    """An instruction that makes this proposer differ from the others."""


class Proposal(BaseModel):
    """A proposer's (or the aggregator's) answer."""

    text: str
    model: str


DEFAULT_PROPOSERS = (
    Proposer(temperature=0.2, style="Answer concisely and precisely."),
    Proposer(temperature=0.7, style="Reason briefly about the question, then answer."),
    Proposer(temperature=1.0, style="Answer from a different angle than the obvious one."),
)
AGGREGATE = (
    "You have been provided with a set of responses from various models to the latest user query. "
    "Synthesize them into a single, high-quality response. Critically evaluate the information: some of it "
    "may be biased or incorrect. Do not simply copy the responses; write a refined, accurate, well-structured answer."
)
MAX_TOKENS = 200


def _question(state: RunState) -> str:
    items = state.get("items") or []
    if not items:
        return state["task"]
    return state["task"] + "\n\nInput:\n" + "\n".join(f"- {i}" for i in items[:50])


async def _ask(
    ctx: RunContext, model: str, question: str, previous: Sequence[str], *, style: str, temperature: float, aggregate: bool, ask_as: str, seed: int | None = None
) -> tuple[str, str]:
    """One answer from ``model`` (chat or completion prompt, chosen from its capabilities), and the
    spec of the model that gave it."""
    step = ctx.step(model)
    backend = ctx.backend_for(step)
    caps = await backend.acapabilities()
    shown = "\n".join(f"{n}. {text}" for n, text in enumerate(previous, 1))
    if caps.chat:
        system = AGGREGATE if aggregate else f"You are one of several experts answering the user. {style}".strip()
        if previous and not aggregate:
            system += f" Responses from other models:\n{shown}\nUse them critically to give a better answer."
        user = question if not aggregate else f"{question}\n\nResponses:\n{shown}"
        request = GenerateRequest(messages=[Message(role="system", content=system), Message(role="user", content=user)], max_tokens=MAX_TOKENS, temperature=temperature)
    else:
        lines = [style] if style and not aggregate else []
        if previous:
            lines.append(("Answers to combine:\n" if aggregate else "Other answers:\n") + shown)
        lines += [f"Question: {question}", "Best combined answer:" if aggregate else "Answer:"]
        request = GenerateRequest(prompt="\n\n".join(lines) + " ", max_tokens=MAX_TOKENS, temperature=temperature, stop=["Question:"])
    purpose: Literal["aggregate", "propose"] = "aggregate" if aggregate else "propose"
    gen = await ctx.call(step, request.model_copy(update={"seed": seed}), purpose=purpose, ask_as=ask_as, reason=f"{purpose} on {model} ({backend.spec})")
    text = gen.text.strip()
    return (text.split("\n\n")[0].strip() if not caps.chat else text), backend.spec  # a base model's answer: its first paragraph


def _layer(index: int, proposers: Sequence[Proposer]) -> Any:
    async def layer(state: RunState, runtime: Runtime[RunDeps]) -> dict[str, Any]:
        ctx = runtime.context.ctx
        question = _question(state)
        previous = [str(i.output.text) for r in state.get("results", {}).values() if r.id.startswith(f"L{index - 1}p") for i in r.items if i.output is not None and i.output.text]  # type: ignore[attr-defined]
        denied: dict[str, ApprovalDenied] = {}
        for n, p in enumerate(proposers, 1):  # approvals one after another, before the proposers run side by side
            try:
                ctx.approve(p.model, ask_as=f"L{index}p{n}", purpose="propose", reason=f"propose an answer on {p.model}")
            except ApprovalDenied as exc:
                denied[f"L{index}p{n}"] = exc

        async def one(n: int, p: Proposer) -> tuple[SubtaskResult, list[Usage]]:
            sid = f"L{index}p{n}"
            started = time.perf_counter()
            ctx.emit("subtask_started", sid, agent="proposer", items=1)
            with ctx.scope(subtask=sid, agent="proposer") as scope:
                try:
                    if sid in denied:
                        raise denied[sid]
                    text, spec = await _ask(
                        ctx, p.model, question, previous, style=p.style, temperature=p.temperature, aggregate=False, ask_as=sid, seed=index * 100 + n
                    )
                except MoaError as exc:
                    ctx.emit("subtask_done", sid, status="failed")
                    item = ItemResult(item=question, run=AgentRun(error=exc.info()))
                    status = "denied" if isinstance(exc, ApprovalDenied) else "failed"
                    return SubtaskResult(id=sid, agent="proposer", status=status, items=[item], reason=exc.message), scope.usage
            ctx.emit("subtask_done", sid, status="ok")
            item = ItemResult(item=question, run=AgentRun(output=Proposal(text=text, model=spec), answered_by=p.model))
            result = SubtaskResult(id=sid, agent="proposer", status="ok", items=[item], seconds=round(time.perf_counter() - started, 3), models=[spec])
            return result, scope.usage

        done = await asyncio.gather(*(one(n, p) for n, p in enumerate(proposers, 1)))
        return {"results": {r.id: r for r, _ in done}, "usage": [u for _, us in done for u in us]}

    return layer


def _aggregator(model: str, layers: int) -> Any:
    async def aggregate(state: RunState, runtime: Runtime[RunDeps]) -> dict[str, Any]:
        ctx = runtime.context.ctx
        answers = [str(i.output.text) for r in state.get("results", {}).values() if r.id.startswith(f"L{layers}p") for i in r.items if i.output is not None and i.output.text]  # type: ignore[attr-defined]
        if not answers:
            return {"answer": None, "synthesizer": "none: every proposer of the last layer failed"}
        with ctx.scope(subtask="aggregate", agent="aggregator") as scope:
            try:
                text, spec = await _ask(ctx, model, _question(state), answers, style="", temperature=0.0, aggregate=True, ask_as="aggregate")
            except MoaError as exc:
                item = ItemResult(item=_question(state), run=AgentRun(error=exc.info()))
                status = "denied" if isinstance(exc, ApprovalDenied) else "failed"
                result = SubtaskResult(id="aggregate", agent="aggregator", status=status, items=[item], reason=exc.message)
                return {"answer": None, "synthesizer": f"none: the aggregator did not run ({exc.message})", "results": {"aggregate": result}, "usage": scope.usage}
        item = ItemResult(item=_question(state), run=AgentRun(output=Proposal(text=text, model=spec), answered_by=model))
        result = SubtaskResult(id="aggregate", agent="aggregator", status="ok", items=[item], models=[spec])
        return {"answer": text, "synthesizer": spec, "results": {"aggregate": result}, "usage": scope.usage}

    return aggregate


def _plan_node(proposers: Sequence[Proposer], layers: int, aggregator: str) -> Any:
    async def plan(state: RunState, runtime: Runtime[RunDeps]) -> dict[str, Any]:
        subtasks = []
        for layer in range(1, layers + 1):
            before = [f"L{layer - 1}p{n}" for n in range(1, len(proposers) + 1)] if layer > 1 else []
            subtasks += [Subtask(id=f"L{layer}p{n}", agent="proposer", instruction=p.style, depends_on=before) for n, p in enumerate(proposers, 1)]
        last = [f"L{layers}p{n}" for n in range(1, len(proposers) + 1)]
        subtasks.append(Subtask(id="aggregate", agent="aggregator", instruction=f"synthesise on {aggregator}", depends_on=last))
        info = PlannerInfo(name="given", reason=f"mixture: {len(proposers)} proposers x {layers} layers, aggregator {aggregator}")
        plan_ = Plan(subtasks=subtasks, rationale=info.reason)
        runtime.context.ctx.emit("planned", plan=plan_, planner=info)
        return {"plan": plan_, "planner": info}

    return plan


def build(proposers: Sequence[Proposer | dict[str, Any]] | None = None, layers: int = 2, aggregator: str = "llm") -> RunGraph:
    """Build a layered Mixture-of-Agents graph.

    Args:
        proposers: the proposers of every layer (default: three on the ``slm`` tier with
            different instructions and temperatures).
        layers: how many proposal layers (each after the first sees the previous answers).
        aggregator: the model step that writes the final answer (``llm``, ``slm`` or a spec).
    """
    chosen = [p if isinstance(p, Proposer) else Proposer.model_validate(p) for p in (DEFAULT_PROPOSERS if proposers is None else proposers)]
    if not chosen:
        raise UserError(ErrorCode.BAD_CONFIG, "a mixture needs at least one proposer; give e.g. proposers=[{'model': 'slm'}, {'model': 'llm'}]")
    if layers < 1:
        raise UserError(ErrorCode.BAD_CONFIG, f"a mixture needs at least one layer, got layers={layers}")
    graph = StateGraph(RunState, context_schema=RunDeps)
    graph.add_node("plan", _plan_node(chosen, layers, aggregator))
    previous = "plan"
    graph.add_edge(START, "plan")
    for layer in range(1, layers + 1):
        graph.add_node(f"layer_{layer}", _layer(layer, chosen))
        graph.add_edge(previous, f"layer_{layer}")
        previous = f"layer_{layer}"
    graph.add_node("aggregate", _aggregator(aggregator, layers))
    graph.add_edge(previous, "aggregate")
    graph.add_edge("aggregate", END)
    return graph.compile(name="mixture")

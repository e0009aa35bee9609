"""rag — retrieval from the shared memory, then an answer with numbered citations, or "I don't know".

Each question (each input item, or the task itself when there are none) is searched in the
shared memory by the retrieval agent. Passages scoring at least ``min_score`` are numbered and
given to the answering model step, which must cite them as ``[1]``, ``[2]``...; the answer keeps
the citations it used, with passage ids and sources. When nothing relevant is found, the answer
is "I don't know" and no model is called.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

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
    Passage,
    Plan,
    PlannerInfo,
    RunDeps,
    RunError,
    RunGraph,
    RunState,
    Subtask,
    SubtaskResult,
    UserError,
)

UNKNOWN = "I don't know: nothing relevant was found in the memory."
_CITE = re.compile(r"\[(\d{1,2})\]")
_SHOT = (  # one demonstration, for base models: how an answer cites
    "Passages:\n[1] The museum opens at 9 am on weekdays and at 10 am on Sundays.\n[2] Adult tickets cost 12 euros; children enter free.\n\n"
    "Question: How much does a ticket cost?\nAnswer (with citations): An adult ticket costs 12 euros, and children enter free [2]."
)


class Citation(BaseModel):
    """A passage an answer cites."""

    n: int
    """The number the answer uses (``[n]``)."""
    id: str
    source: str | None = None
    score: float
    text: str
    explicit: bool = True
    """The answer cites this passage as ``[n]``; False: the answer cites nothing, and this is one
    of the passages it was given (shown so the answer can still be checked)."""


class CitedAnswer(BaseModel):
    """An answer grounded in retrieved passages."""

    answer: str
    known: bool
    """False when nothing relevant was retrieved (the answer is "I don't know")."""
    citations: list[Citation] = Field(default_factory=list)


def _questions(state: RunState) -> list[str]:
    return list(state.get("items") or []) or [state["task"]]


def _prompt(question: str, passages: list[Passage], chat: bool) -> GenerateRequest:
    numbered = "\n".join(f"[{n}] {' '.join(p.text.split())[:700]}" for n, p in enumerate(passages, 1))
    rule = "Answer only from the passages and cite each fact with its number, like [1]. If they do not contain the answer, say you don't know."
    if chat:
        messages = [Message(role="system", content=rule), Message(role="user", content=f"Passages:\n{numbered}\n\nQuestion: {question}")]
        return GenerateRequest(messages=messages, max_tokens=300)
    prompt = f"{rule}\n\n{_SHOT}\n\nPassages:\n{numbered}\n\nQuestion: {question}\nAnswer (with citations): "
    return GenerateRequest(prompt=prompt, max_tokens=160, stop=["\nQuestion:", "\n\n", "Passages:"])


def _cited(text: str, passages: list[Passage]) -> list[Citation]:
    used = sorted({int(n) for n in _CITE.findall(text) if 1 <= int(n) <= len(passages)})
    explicit = bool(used)
    return [
        Citation(n=n, id=p.id, source=p.source, score=round(p.score, 4), text=p.text[:300], explicit=explicit)
        for n in (used or range(1, len(passages) + 1))
        for p in [passages[n - 1]]
    ]


def _retrieve(k: int, min_score: float) -> Any:
    async def retrieve(state: RunState, runtime: Runtime[RunDeps]) -> dict[str, Any]:
        deps = runtime.context
        agent = deps.agents["retrieval"]
        questions = _questions(state)
        started = time.perf_counter()
        deps.ctx.emit("subtask_started", "retrieve", agent=agent.name, items=len(questions))
        runs = await agent.run_batch(deps.ctx, [agent.make_input(q, {"k": k, "min_score": min_score}) for q in questions], subtask="retrieve")
        failed = sum(1 for r in runs if not r.ok)
        status = "ok" if not failed else ("failed" if failed == len(runs) else "partial")
        first = next((r.error for r in runs if r.error), None)
        result = SubtaskResult(
            id="retrieve",
            agent=agent.name,
            status=status,
            items=[ItemResult.of(q, r) for q, r in zip(questions, runs, strict=True)],
            reason=f"{failed} of {len(runs)} searches failed: {first.message}" if first else None,
            seconds=round(time.perf_counter() - started, 3),
        )
        deps.ctx.emit("subtask_done", "retrieve", status=status)
        return {"results": {"retrieve": result}, "usage": [u for r in runs for u in r.usage]}

    return retrieve


def _answer(model: str) -> Any:
    async def answer(state: RunState, runtime: Runtime[RunDeps]) -> dict[str, Any]:
        ctx = runtime.context.ctx
        found = state["results"]["retrieve"]
        started = time.perf_counter()
        ctx.emit("subtask_started", "answer", agent="answer", items=len(found.items))
        step = ctx.step(model)
        backend = ctx.backend_for(step)
        chat = (await backend.acapabilities()).chat
        denied: ApprovalDenied | None = None
        asking = sum(1 for i in found.items if i.output is not None and i.output.model_dump()["passages"])
        if asking:  # one approval for the node, before its calls run side by side
            try:
                ctx.approve(step, ask_as="answer", purpose="answer", reason=f"answer {asking} question(s) from retrieved passages with {model} ({backend.spec})")
            except ApprovalDenied as exc:
                denied = exc

        async def one(item: ItemResult) -> ItemResult:
            if item.output is None:
                return ItemResult(item=item.item, run=AgentRun(error=item.error))
            passages = [Passage.model_validate(p) for p in item.output.model_dump()["passages"]]
            if not passages:
                return ItemResult(item=item.item, run=AgentRun(output=CitedAnswer(answer=UNKNOWN, known=False)))
            if denied is not None:
                return ItemResult(item=item.item, run=AgentRun(error=denied.info()))
            try:
                gen = await ctx.call(step, _prompt(item.item, passages, chat), purpose="answer", ask_as="answer")
            except RunError as exc:
                return ItemResult(item=item.item, run=AgentRun(error=exc.info()))
            text = gen.text.strip() or UNKNOWN
            return ItemResult(item=item.item, run=AgentRun(output=CitedAnswer(answer=text, known=True, citations=_cited(text, passages)), answered_by=model))

        with ctx.scope(subtask="answer", agent="answer") as scope:
            items = list(await asyncio.gather(*(one(i) for i in found.items)))
        failed = sum(1 for i in items if i.output is None)
        status = "ok" if not failed else ("failed" if failed == len(items) else "partial")
        if denied is not None and failed == len(items):
            status = "denied"
        result = SubtaskResult(
            id="answer", agent="answer", status=status, items=items, seconds=round(time.perf_counter() - started, 3), models=[backend.spec],
            reason=denied.message if denied is not None else None,
        )  # fmt: skip
        ctx.emit("subtask_done", "answer", status=status)
        answers = [f"{i.item}\n{i.output.answer}" if len(items) > 1 else i.output.answer for i in items if isinstance(i.output, CitedAnswer)]
        return {"results": {"answer": result}, "usage": scope.usage, "answer": "\n\n".join(answers) or None, "synthesizer": backend.spec}

    return answer


async def _plan(state: RunState, runtime: Runtime[RunDeps]) -> dict[str, Any]:
    subtasks = [Subtask(id="retrieve", agent="retrieval"), Subtask(id="answer", agent="answer", items="retrieve", depends_on=["retrieve"])]
    info = PlannerInfo(name="given", reason="rag: retrieve passages from the shared memory, then answer with citations")
    plan = Plan(subtasks=subtasks, rationale=info.reason)
    runtime.context.ctx.emit("planned", plan=plan, planner=info)
    return {"plan": plan, "planner": info}


def build(k: int = 4, min_score: float = 0.3, model: str = "llm") -> RunGraph:
    """Build the retrieval-augmented answer graph.

    Args:
        k: passages retrieved per question.
        min_score: passages less similar than this (cosine, 0..1) are not used; with none left,
            the answer is "I don't know".
        model: the model step that answers (``llm``, ``slm`` or a spec).
    """
    if k < 1 or not 0 <= min_score <= 1:
        raise UserError(ErrorCode.BAD_CONFIG, f"rag needs k >= 1 and 0 <= min_score <= 1, got k={k}, min_score={min_score}")
    graph = StateGraph(RunState, context_schema=RunDeps)
    graph.add_node("plan", _plan)
    graph.add_node("retrieve", _retrieve(k, min_score))
    graph.add_node("answer", _answer(model))
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "retrieve")
    graph.add_edge("retrieve", "answer")
    graph.add_edge("answer", END)
    return graph.compile(name="rag")

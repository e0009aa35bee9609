"""What an eval runs on each item: an agent (through its cascade) or a graph, and how its output
becomes a prediction comparable with the gold answer.

* classification: the agent's label (:meth:`moa.ModelAgent.label_of`);
* entities: ``[type, start, end]`` of each entity (character offsets); slots: ``[type, text]``;
* retrieval: document ids in rank order (the passages' sources);
* qa: the graph's answer.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from moa.agent.base import Agent
from moa.agent.context import RunContext
from moa.agent.learn import classifier
from moa.agent.model import ModelAgent
from moa.agent.results import AgentRun, Attempt
from moa.errors import ErrorCode, ErrorInfo, MoaError, UserError
from moa.eval.datasets import Example, Kind
from moa.eval.records import ItemRecord, StepRecord
from moa.eval.shots import group_of
from moa.eval.sweep import settle
from moa.routing.policy import SPECIALIST, Step
from moa.workflow.catalog import builtin_graphs
from moa.workflow.graphfile import is_graph_file

#: Passages a retrieval agent returns per query (its most; Recall@10 and nDCG@10 need 10, MRR reads them all).
RETRIEVAL_K = 100


def prediction_of(kind: str, agent: Agent[Any, Any], data: BaseModel, output: BaseModel | None) -> Any:
    """The prediction an agent's output stands for (``None`` without output)."""
    if output is None:
        return None
    if kind == "classification" and isinstance(agent, ModelAgent):
        return agent.label_of(data, output)
    if kind == "entities":
        return [[e.type, e.start, e.end] for e in output.entities]  # type: ignore[attr-defined]
    if kind == "slots":
        return [[e.type, e.text] for e in output.entities]  # type: ignore[attr-defined]
    if kind == "retrieval":
        return [p.source or p.id for p in output.passages]  # type: ignore[attr-defined]
    return None


def check_fits(agent: Agent[Any, Any], kind: Kind) -> None:
    """Refuse an agent whose output cannot be scored on data of ``kind``."""
    if kind == "classification":
        classifier(agent)
        return
    if kind == "qa":
        raise UserError(
            ErrorCode.INVALID_INPUT,
            f"question-answering data is evaluated with a graph, not the agent {agent.name!r}; e.g. `moa eval mixture DATA` (see `moa graphs`)",
        )
    needed = {"entities": "entities", "slots": "entities", "retrieval": "passages"}[kind]
    if needed not in agent.output_type.model_fields:
        raise UserError(
            ErrorCode.INVALID_INPUT,
            f"agent {agent.name!r} gives {agent.output_type.__name__}, which has no {needed!r}: {kind} data needs an agent like "
            f"{'extraction' if needed == 'entities' else 'retrieval'}",
        )


def is_graph(target: str, agents: Mapping[str, Agent[Any, Any]]) -> bool:
    """``target`` names a graph (a built-in one or a YAML file) rather than an agent."""
    if target in agents:
        return False
    if target in builtin_graphs() or is_graph_file(target):
        return True
    raise UserError(
        ErrorCode.UNKNOWN_AGENT,
        f"unknown agent or graph {target!r}; agents: {', '.join(sorted(agents))}; graphs: {', '.join(sorted(builtin_graphs()))} or a .yaml file",
    )


def _error_of(run: AgentRun) -> ErrorInfo | None:
    return run.error if run.output is None else None


def _step_record(kind: str, agent: Agent[Any, Any], data: BaseModel, attempt: Attempt, usage: Sequence[Any]) -> StepRecord:
    return StepRecord(
        step=attempt.step,
        model=attempt.model,
        prediction=prediction_of(kind, agent, data, attempt.output),
        confidence=attempt.confidence,
        raw_confidence=attempt.raw_confidence,
        error=attempt.error,
        usage=list(usage),
    )


@dataclass
class AgentTarget:
    """Runs an agent on each item: its cascade, or (``sweep``) every step of it."""

    agent: Agent[Any, Any]
    kind: Kind
    options: dict[str, Any] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    threshold: float | None = None
    sweep: bool = False
    demonstrations: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Worked examples drawn from the data set, by group of item options (:mod:`moa.eval.shots`);
    they follow any ``examples`` given in :attr:`options`."""
    step_thresholds: dict[str, float] = field(default_factory=dict)
    """The thresholds chosen from data that the agent's cascade uses for this task (by step; over :attr:`threshold`)."""

    def rule(self) -> tuple[float | None, ...] | float | None:
        """The threshold of each step the cascade escalates on (one for all when none was chosen from data)."""
        return tuple(self.step_thresholds.get(s.name, self.threshold) for s in self.steps) if self.step_thresholds else self.threshold

    def drawn_for(self, example: Example) -> list[dict[str, Any]]:
        return self.demonstrations.get(group_of(example.options), [])

    def make_input(self, example: Example) -> BaseModel:
        defaults = {"k": RETRIEVAL_K} if self.kind == "retrieval" else {}
        options = {**defaults, **example.options, **self.options}
        if drawn := self.drawn_for(example):
            options["examples"] = [*options.get("examples", []), *drawn]
        return self.agent.make_input(example.text, options)

    async def __call__(self, ctx: RunContext, example: Example) -> ItemRecord:
        data = self.make_input(example)
        started = time.perf_counter()
        if self.sweep and isinstance(self.agent, ModelAgent):
            attempts = []
            for step in self.steps:
                with ctx.scope() as scope:
                    attempt = await self.agent.attempt(ctx, step, data)
                attempts.append(_step_record(self.kind, self.agent, data, attempt, scope.usage))
            record = ItemRecord(id=example.id, gold=example.gold, attempts=attempts, shots=len(self.drawn_for(example)))
            return settle(record, len(self.steps), self.rule()).model_copy(update={"seconds": round(time.perf_counter() - started, 4)})
        run = await self.agent.run(ctx, data)
        seconds = round(time.perf_counter() - started, 4)
        attempts = [_step_record(self.kind, self.agent, data, a, [u for u in run.usage if u.tier == a.step]) for a in run.attempts]
        output = run.output
        confidence = self.agent.confidence_of(output) if isinstance(self.agent, ModelAgent) and output is not None else None
        return ItemRecord(
            id=example.id,
            gold=example.gold,
            prediction=prediction_of(self.kind, self.agent, data, output),
            confidence=confidence,
            answered_by=run.answered_by,
            escalated=bool(run.escalations),
            unverified=run.unverified,
            error=_error_of(run),
            attempts=attempts,
            usage=run.usage,
            seconds=seconds,
            shots=len(self.drawn_for(example)),
        )


def resolve_steps(agent: ModelAgent[Any, Any, Any], ctx: RunContext, options: Mapping[str, Any], explicit: Sequence[str] | None) -> list[Step]:
    """The cascade steps ``agent`` runs in ``ctx`` (a specialist only when one is trained; an explicit
    ``--cascade`` naming ``specialist`` without one is an error)."""
    policy = agent.policy(ctx)
    if agent.tier == "llm":
        return [Step("llm", ctx.settings.llm)]
    data = agent.make_input("x", dict(options))
    trained = agent.specialist_for(ctx, data) is not None
    if explicit and SPECIALIST in explicit and not trained:
        raise UserError(
            ErrorCode.NOT_TRAINED,
            f"no specialist is trained for {agent.name} ({agent.specialist_key(data)}); run `moa train {agent.name} DATA` first "
            "(on data disjoint from the eval: see `moa eval --rest`), or drop 'specialist' from --cascade",
        )
    steps = [s for s in policy.steps if s.name != SPECIALIST or trained]
    return steps if policy.escalate else steps[:1]


@dataclass
class GraphTarget:
    """Runs a graph on each question and takes its answer."""

    graph: str
    agents: Sequence[Agent[Any, Any]] = ()

    async def __call__(self, ctx: RunContext, example: Example) -> ItemRecord:
        from moa.workflow.driver import arun

        started = time.perf_counter()
        try:
            result = await arun(example.text, graph=self.graph, context=ctx, agents=self.agents)
        except MoaError as exc:
            return ItemRecord(id=example.id, gold=example.gold, error=exc.info(), seconds=round(time.perf_counter() - started, 4))
        error = result.errors[0] if result.answer is None and result.errors else None
        return ItemRecord(
            id=example.id,
            gold=example.gold,
            prediction=result.answer,
            answered_by=result.synthesizer,
            error=error,
            usage=result.usage,
            seconds=round(time.perf_counter() - started, 4),
        )


def graph_name(target: str) -> str:
    return Path(target).stem if is_graph_file(target) else target

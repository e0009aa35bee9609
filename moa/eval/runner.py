"""Running an eval: the items of a data set through an agent (its cascade) or a graph, resumably.

:func:`prepare` checks everything that can be checked before a model runs (the target, the data,
the labels, the limit) and returns a :class:`Prepared` eval; :func:`aevaluate` runs its items and
appends each finished item to ``results.jsonl`` in the output folder (see
:mod:`moa.eval.records`), then writes the report. Items already in the folder are not run again.

When the model is unreachable (or times out), the eval stops at once: what finished is kept,
the report of those items is written, and a :class:`~moa.errors.RunError` says how to continue.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moa.agent.base import Agent
from moa.agent.context import RunContext
from moa.agent.learn import task_for
from moa.agent.model import ModelAgent
from moa.errors import ErrorCode, ErrorInfo, MoaError, RunError, UserError
from moa.eval import shots as demos
from moa.eval.datasets import EvalSet, Example, detect_format, load_eval_set, resolve
from moa.eval.quality import METRIC as REPLAYED
from moa.eval.records import Demonstrations, EvalConfig, ItemRecord, Meta, ResultStore, Session, machine
from moa.eval.report import Report, write_report
from moa.eval.targets import AgentTarget, GraphTarget, check_fits, is_graph, resolve_steps
from moa.logs import get_logger
from moa.memory.chroma import ChromaMemory, Memory
from moa.routing.policy import plan_models
from moa.workflow.catalog import GraphFile, agent_catalog, get_graph
from moa.workflow.limits import DocumentLimits

log = get_logger(__name__)

#: Errors that stop an eval: every later item would fail the same way.
STOP_CODES = {ErrorCode.MODEL_UNREACHABLE, ErrorCode.MODEL_TIMEOUT, ErrorCode.EMBEDDER_UNAVAILABLE, ErrorCode.MEMORY_UNREACHABLE}

Progress = Callable[[int, int], None]


@dataclass
class Prepared:
    """An eval ready to run."""

    config: EvalConfig
    dataset: EvalSet
    examples: list[Example]
    target: AgentTarget | GraphTarget
    demonstrations: list[Demonstrations] = dataclasses.field(default_factory=list)
    """With ``shots``: the items of the data set shown as worked examples, per group of options."""


def prepare(
    target: str,
    data: str | Path,
    *,
    ctx: RunContext,
    format: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    label_map: Mapping[str, str] | None = None,
    cascade: Sequence[str] | None = None,
    threshold: float | None = None,
    sweep: bool = False,
    max_docs: int | None = None,
    data_dir: Path | None = None,
    agents: Sequence[Agent[Any, Any]] = (),
    shots: int = 0,
) -> Prepared:
    """Check and load everything an eval needs; no model is called.

    ``cascade`` and ``threshold`` set the agent's own policy (:meth:`moa.ModelAgent.with_policy`);
    a graph's agents take theirs from the settings. ``shots``: give the agent this many worked
    examples per prompt, drawn from the items the eval leaves out (:mod:`moa.eval.shots`).
    """
    if limit is not None and limit < 1:
        raise UserError(ErrorCode.BAD_CONFIG, f"--limit must be at least 1, got {limit}; leave it out to evaluate every item")
    if not 0 <= shots <= demos.MAX_SHOTS:
        raise UserError(ErrorCode.BAD_CONFIG, f"--shots must be between 0 and {demos.MAX_SHOTS}, got {shots}")
    catalog = agent_catalog(agents)
    graph = is_graph(target, catalog)
    options = dict(options or {})
    path, preset = resolve(str(data), data_dir)
    fmt = format or (preset.format if preset else detect_format(path))
    allowed = None
    agent = None if graph else catalog[target]
    if isinstance(agent, ModelAgent) and (cascade or threshold is not None):
        agent = agent.with_policy(threshold=threshold, cascade=list(cascade) if cascade else None)
    if isinstance(agent, ModelAgent) and fmt in ("tsv", "csv", "jsonl"):
        check_fits(agent, "classification")
        allowed = task_for(agent, options).labels
    dataset = load_eval_set(data, format=fmt, label_map=label_map, allowed=allowed, data_dir=data_dir, max_docs=max_docs)
    examples = dataset.select(limit, seed)
    drawn = _draw_shots(target, None if graph else catalog[target], dataset, examples, shots, seed) if shots else []
    if graph:
        if dataset.kind != "qa":
            raise UserError(
                ErrorCode.INVALID_INPUT,
                f"{target!r} is a graph: graphs are evaluated on question-answering data; {dataset.name} is {dataset.kind} data, evaluate it with an agent",
            )
        source = get_graph(target, DocumentLimits.of(ctx.settings), plan_models(ctx.settings))
        if isinstance(source, GraphFile):
            source.build(catalog)  # a bad YAML file (missing, too large, naming models it may not) fails here, not once per item
        runner: AgentTarget | GraphTarget = GraphTarget(target, agents)
    else:
        assert agent is not None
        check_fits(agent, dataset.kind)
        runner = dataclasses.replace(_agent_target(agent, dataset, ctx, options, cascade, sweep), demonstrations=demos.by_group(dataset, drawn))
        if options or drawn:
            runner.make_input(examples[0])  # bad options (e.g. a malformed 'examples') fail here, not once per item
    config = EvalConfig(
        target=target, target_kind="graph" if graph else "agent", data=str(path), data_name=dataset.name, format=fmt, kind=dataset.kind,
        limit=limit, seed=seed, cascade=list(cascade) if cascade else None, threshold=threshold, options=options,
        label_map=dict(label_map) if label_map else None, sweep=sweep, max_docs=max_docs, shots=shots,
    )  # fmt: skip
    return Prepared(config=config, dataset=dataset, examples=examples, target=runner, demonstrations=drawn)


def _draw_shots(target: str, agent: Agent[Any, Any] | None, dataset: EvalSet, examples: list[Example], shots: int, seed: int) -> list[Demonstrations]:
    """``shots`` worked examples per group of items, from the items the eval leaves out; refuses
    what cannot take them."""
    if agent is None or "examples" not in agent.input_type.model_fields:
        raise UserError(
            ErrorCode.INVALID_INPUT,
            f"--shots gives an agent worked examples through its 'examples' option; {target!r} takes none (e.g. use the extraction agent)",
        )
    if dataset.kind not in demos.KINDS:
        raise UserError(ErrorCode.INVALID_INPUT, f"--shots draws worked examples from entity or slot data; {dataset.name} is {dataset.kind} data")
    drawn = demos.draw(dataset, examples, shots, seed)
    if not any(d.ids for d in drawn):
        raise UserError(
            ErrorCode.BAD_DATA,
            f"--shots {shots} draws worked examples from the items the eval leaves out, and it leaves none out of {dataset.name} "
            f"({len(dataset)} items); give a --limit below {len(dataset)}",
        )
    return drawn


def _agent_target(agent: Agent[Any, Any], dataset: EvalSet, ctx: RunContext, options: dict[str, Any], cascade: Sequence[str] | None, sweep: bool) -> AgentTarget:
    if not isinstance(agent, ModelAgent):
        if sweep:
            raise UserError(ErrorCode.INVALID_INPUT, f"--sweep replays a cascade; agent {agent.name!r} calls no model")
        return AgentTarget(agent, dataset.kind, options)
    task_options = task_for(agent, options, dataset.labels).options if dataset.kind == "classification" else options
    sample = {**(dataset.examples[0].options if dataset.examples else {}), **task_options}
    steps = resolve_steps(agent, ctx, sample, cascade)
    threshold = agent.policy(ctx).threshold
    chosen = agent.chosen_thresholds(ctx, agent.make_input("x", sample), steps) if dataset.kind in REPLAYED else None
    if sweep and (dataset.kind not in REPLAYED or len(steps) < 2):
        raise UserError(
            ErrorCode.INVALID_INPUT,
            f"--sweep needs a classification or extraction agent with at least two cascade steps (here: {dataset.kind}, steps {', '.join(s.name for s in steps)}); "
            "e.g. --cascade specialist,slm after `moa train`",
        )
    return AgentTarget(agent, dataset.kind, task_options, steps, threshold, sweep, step_thresholds=dict(chosen.thresholds) if chosen else {})


def _meta(prepared: Prepared, ctx: RunContext) -> Meta:
    target = prepared.target
    steps = [s.name for s in target.steps] if isinstance(target, AgentTarget) else []
    models = {s.name: s.spec or f"specialist:{target.agent.name}" for s in target.steps} if isinstance(target, AgentTarget) else {}
    models = models or {"slm": ctx.settings.slm, "llm": ctx.settings.llm}
    if prepared.dataset.kind == "retrieval":
        models["embedder"] = ctx.settings.embedder
    return Meta(
        config=prepared.config,
        steps=steps,
        threshold=target.threshold if isinstance(target, AgentTarget) else None,
        step_thresholds=target.step_thresholds if isinstance(target, AgentTarget) else {},
        labels=prepared.dataset.labels,
        models=models,
        machine=machine(),
        demonstrations=prepared.demonstrations,
    )


async def _index_corpus(prepared: Prepared, ctx: RunContext, out: Path, memory: Memory | None) -> RunContext:
    """A context whose memory holds the retrieval corpus (indexed once per output folder)."""
    if prepared.dataset.kind != "retrieval":
        return ctx
    memory = memory or ChromaMemory(out / "memory", collection="eval-corpus", embedder=ctx.embedder())
    docs = prepared.dataset.corpus
    if memory.count() != len(docs):
        log.info("eval_indexing", docs=len(docs))
        await memory.aadd([d.text for d in docs], ids=[d.id for d in docs], sources=[d.id for d in docs])
    return dataclasses.replace(ctx, _memory=memory)


async def aevaluate(prepared: Prepared, out: Path, *, ctx: RunContext, memory: Memory | None = None, on_progress: Progress | None = None) -> Report:
    """Run the items of ``prepared`` not yet in ``out``; return the report of all its items.

    Writes ``out/results.jsonl`` item by item, then the report (``report.md``, ``report.json``,
    plots). Raises :class:`RunError` when the model (or embedder) is unreachable, after keeping
    what finished.
    """
    store = ResultStore(out)
    meta = store.open(_meta(prepared, ctx))
    wanted = {e.id for e in prepared.examples}
    done = {r.id: r for r in store.read() if r.id in wanted}
    todo = [e for e in prepared.examples if e.id not in done]
    total = len(prepared.examples)
    if on_progress:
        on_progress(len(done), total)
    setup = time.perf_counter()
    run_ctx = await _index_corpus(prepared, ctx, out, memory) if todo else ctx  # before the clock: indexing is not per item
    setup_seconds = round(time.perf_counter() - setup, 3)
    stop: list[ErrorInfo] = []
    finished = 0
    started, started_at = time.perf_counter(), time.time()
    target = prepared.target
    workers = 1 if isinstance(target, GraphTarget) else max(1, min(len(todo), target.agent.batch_width(ctx)))
    log.info("eval_started", target=prepared.config.target, data=prepared.config.data_name, items=total, done=len(done), workers=workers)
    pending = iter(todo)

    async def worker(run_ctx: RunContext) -> None:
        nonlocal finished
        for example in pending:
            if stop:
                return
            try:
                record = await target(run_ctx, example)
            except MoaError as exc:  # e.g. an item whose options the agent refuses: record it, go on
                record = ItemRecord(id=example.id, gold=example.gold, error=exc.info())
            if record.error and record.prediction is None and record.error.code in STOP_CODES:
                stop.append(record.error)
                return
            store.append(record)
            done[record.id] = record
            finished += 1
            if on_progress:
                on_progress(len(done), total)

    tasks = [asyncio.ensure_future(worker(run_ctx)) for _ in range(workers)]
    try:
        try:
            await asyncio.gather(*tasks)
        except BaseException:  # interrupted: no item may finish after the folder is closed
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
    finally:
        meta = store.add_session(meta, Session(started=started_at, seconds=round(time.perf_counter() - started, 3), items=finished, workers=workers, setup_seconds=setup_seconds))
        records = [done[e.id] for e in prepared.examples if e.id in done]
        report = write_report(out, meta, records) if records else None
    if stop:
        raise RunError(
            stop[0].code,
            f"{stop[0].message}; the eval stopped: {len(records)} of {total} items are kept in {store.results} "
            "— fix the model (see `moa models`) and run the same command again to continue",
            details={"done": len(records), "total": total, "out": str(out)},
        )
    if report is None:
        raise UserError(ErrorCode.BAD_DATA, f"no item of {prepared.config.data_name} was evaluated; check the data")
    return report

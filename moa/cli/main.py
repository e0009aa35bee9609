"""The ``moa`` command line (typer + rich). All printing in moa happens here."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from moa.agent.context import Event, RunContext
from moa.agent.learn import tags_entities
from moa.agent.model import ModelAgent
from moa.cli import eval as cli_eval
from moa.cli import examples as cli_examples
from moa.cli import learn as cli_learn
from moa.cli import serve as cli_serve
from moa.cli.approvals import Answers, render_handoff, render_pending
from moa.cli.output import err, fail, out
from moa.errors import ErrorCode, MoaError, UserError
from moa.learning.store import learned_summary, thresholds_summary
from moa.logs import configure_logging
from moa.models.registry import Models
from moa.routing.policy import explicit_threshold, plan_models, threshold_for
from moa.settings import Settings, load_settings
from moa.workflow.catalog import agent_catalog, builtin_graphs, get_graph
from moa.workflow.driver import apending, aresume, aresume_settings, arun
from moa.workflow.limits import DocumentLimits, read_document
from moa.workflow.options import RunOptions
from moa.workflow.output import check_output, write_result
from moa.workflow.planner import plan_from_json
from moa.workflow.prune import Removed, parse_age, parse_statuses, prune_runs, remove_runs
from moa.workflow.report import item_table
from moa.workflow.results import RunResult
from moa.workflow.view import RunView, list_runs, load_result, load_view

app = typer.Typer(name="moa", help="Hybrid LLM + small-model agents: plan, run small models in parallel, account.", no_args_is_help=True)
memory_app = typer.Typer(help="The shared vector memory (Chroma).", no_args_is_help=True)
app.add_typer(memory_app, name="memory")
cli_learn.register(app)
cli_examples.register(app)
cli_eval.register(app)
cli_serve.register(app)
runs_app = typer.Typer(help="Recorded runs (see also `moa resume`).", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
graphs_app = typer.Typer(help="The available graphs.")
app.add_typer(graphs_app, name="graphs")

T = TypeVar("T")


class _Options:
    log_json: bool = False
    verbose: bool = False


_opts = _Options()


@app.callback()
def _main(
    log_json: Annotated[bool, typer.Option("--log-json", help="Log JSON lines to stderr.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log info-level events.")] = False,
) -> None:
    _opts.log_json, _opts.verbose = log_json, verbose
    configure_logging(json=log_json, level="info" if verbose else "warning")


_fail = fail


def _await(make: Callable[[], Coroutine[Any, Any, T]], as_json: bool) -> T:
    """Run the coroutine ``make()`` returns; a moa error is printed and exits with its code."""
    try:
        return asyncio.run(make())
    except MoaError as exc:
        _fail(exc, as_json)


def _settings(**overrides: Any) -> Settings:
    return load_settings(**overrides)


class _Progress:
    """A live table of subtasks on stderr, fed by run events."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.started = time.perf_counter()
        self.live: Live | None = None

    def table(self) -> Table:
        t = Table(title=f"moa · {time.perf_counter() - self.started:.1f}s", title_justify="left")
        for col in ("subtask", "agent", "status", "items", "items/s", "ETA", "time"):
            t.add_column(col)
        for sid, row in self.rows.items():
            done, total, seconds = row.get("done", 0), row.get("items"), row.get("seconds", 0.0)
            rate = done / seconds if done and seconds > 0 else None
            eta = (total - done) / rate if rate and isinstance(total, int) and row["status"] == "running" else None
            t.add_row(
                sid,
                row.get("agent", ""),
                row["status"],
                f"{done}/{total if total is not None else '?'}",
                f"{rate:.1f}" if rate else "",
                f"{eta:.0f}s" if eta is not None else "",
                f"{seconds:.1f}s",
            )
        return t

    def __call__(self, event: Event) -> None:
        if event.kind == "planned":
            for s in event.data["plan"].subtasks:
                self.rows[s.id] = {"agent": s.agent, "status": "queued"}
        elif event.subtask is not None:
            self.rows.setdefault(event.subtask, {"status": "queued"})
            row = self.rows[event.subtask]
            if event.kind == "subtask_started":
                row.update(status="running", items=event.data.get("items"), t0=time.perf_counter())
            elif event.kind == "item_done":
                row["done"] = row.get("done", 0) + 1
            elif event.kind == "subtask_done":
                status = {"waiting": "awaiting approval"}.get(event.data.get("status", "done"), event.data.get("status", "done"))
                row.update(status=status + (" (saved)" if event.data.get("reused") else ""))
            if "t0" in row:
                row["seconds"] = time.perf_counter() - row["t0"] if row["status"] == "running" else row.get("seconds", 0)
        if self.live is not None:
            self.live.update(self.table())


def _usage_table(result: RunResult) -> Table:
    s = result.summary
    table = Table(title="Usage", title_justify="left")
    for col in ("tier", "calls", "prompt tok", "completion tok", "cost $", "p50 s", "p95 s", "cache hits"):
        table.add_column(col)
    for tier, t in s.per_tier.items():
        table.add_row(
            tier, str(t.calls), str(t.prompt_tokens), str(t.completion_tokens), f"{t.cost:.4f}", f"{t.latency_p50:.2f}", f"{t.latency_p95:.2f}", str(t.cache_hits)
        )
    return table


def _accounting(result: RunResult) -> str:
    s, e = result.summary, result.escalations
    handled = [f"{sid} " + "+".join(f"{step} {n}" for step, n in r.handled.items()) for sid, r in result.results.items() if r.handled]
    parts = ["answered by: " + ", ".join(handled)] if handled else []
    parts += [f"escalations {e.count}" + (f" ({', '.join(f'{k} {v}' for k, v in e.by_reason.items())})" if e.by_reason else "")]
    if e.unverified:
        parts.append("unverified " + ", ".join(f"{k} {v}" for k, v in e.unverified.items()))
    if s.retries:
        parts.append(f"requests sent again after a broken connection {s.retries}")
    if s.all_llm_cost is not None:
        parts.append(f"all-llm estimate ${s.all_llm_cost:.4f}, saved ${s.saving or 0:.4f} ({s.saving_pct or 0:.0%})")
    else:
        parts.append("saving vs all-llm: n/a (no price for the llm tier; set prices in moa.toml)")
    return " · ".join(parts)


def _render(result: RunResult) -> None:
    if result.plan:
        steps = " → ".join(
            f"{s.id}:{s.agent}" + (f"[{','.join(s.depends_on)}]" if s.depends_on else "") + (f" ({s.routing()})" if s.routing() else "") for s in result.plan.subtasks
        )
        out.print(f"[bold]Plan[/] ({result.planner.name if result.planner else '?'}): {escape(steps)}", highlight=False)
        if result.planner:
            out.print(f"[dim]{escape(result.planner.reason)}[/]", highlight=False)
    header, rows = item_table(result)
    if rows:
        table = Table(title="Results", title_justify="left", show_lines=False)
        for h in header:
            table.add_column(h, overflow="fold")
        for row in rows:
            table.add_row(escape(row[0][:70]), *(escape(c) for c in row[1:]))
        out.print(table)
    if result.answer:
        out.print("[bold]Answer[/]")
        out.print(result.answer, markup=False, highlight=False)
    s = result.summary
    out.print(_usage_table(result))
    out.print(escape(_accounting(result)), highlight=False)
    if result.stopped:
        err.print(f"[yellow]stopped[/] {escape(result.stopped)}", highlight=False, soft_wrap=True)
    reused = f" · {len(result.reused)} subtasks reused from the checkpoint" if result.reused else ""
    out.print(
        f"run {result.run_id} · status [bold]{result.status}[/]{reused} · {result.seconds:.1f}s wall · {s.calls} calls · "
        f"slm share {s.slm_call_share:.0%} of calls, {s.slm_token_share:.0%} of tokens · "
        f"{s.prompt_tokens / max(result.seconds, 1e-9):.0f} prompt + {s.completion_tokens / max(result.seconds, 1e-9):.1f} completion tok/s (wall)",
        highlight=False,
    )
    for e in result.errors:
        line = f"in {e.subtask}: [{e.code}] {e.message}"
        err.print(f"[red]error[/] {escape(line)}", highlight=False, soft_wrap=True)
    for warning in result.warnings:
        err.print(f"[yellow]warning[/] {escape(warning)}", highlight=False, soft_wrap=True)
    if result.handoff:
        render_handoff(result.handoff)
    if result.pending:
        render_pending(result.run_id, result.pending)


def _read_plan(path: Path, settings: Settings) -> dict[str, Any]:
    """The JSON object of a ``--plan`` file, read and parsed within the limits (the driver validates it)."""
    limits = DocumentLimits.of(settings)
    return plan_from_json(read_document(path, f"the plan file {path}", limits), what=f"the plan file {path.name}", limits=limits)


def _csv(value: str | None) -> list[str] | None:
    return None if value is None else [part.strip() for part in value.split(",") if part.strip()]


def _write_json(path: Path, result: RunResult) -> None:
    try:
        path.write_text(result.model_dump_json(indent=2), encoding="utf-8")
    except OSError as exc:
        raise UserError(ErrorCode.INPUT_FILE, f"cannot write {path}: {exc}; choose another --output path") from exc


def _with_agent_options(settings: Settings, pairs: list[str] | None, labels: str | None) -> Settings:
    """``settings`` with ``--option AGENT.KEY=VALUE`` and ``--labels`` over its ``agent_options``."""
    if not pairs and labels is None:
        return settings
    chosen = {agent: dict(options) for agent, options in settings.agent_options.items()}
    if labels is not None:
        label_set = _csv(labels) or []
        takers = [name for name, agent in agent_catalog().items() if "labels" in agent.input_type.model_fields]
        for name in takers:
            chosen.setdefault(name, {})["labels"] = label_set
    for name, value in cli_learn.parse_options(pairs).items():
        agent, dot, key = name.partition(".")
        if not dot or not agent or not key:
            raise UserError(ErrorCode.INVALID_INPUT, f"bad --option {name}=...: name the agent, e.g. --option sentiment.labels=positive,negative")
        chosen.setdefault(agent, {})[key] = value
    return settings.model_copy(update={"agent_options": chosen})


@app.command()
def run(
    task: Annotated[str, typer.Argument(help="What to do, in words.")],
    input: Annotated[Optional[Path], typer.Option("--input", "-i", help="Text file, one item per line.")] = None,
    graph: Annotated[str, typer.Option("--graph", "-g", help="Graph to run (see `moa graphs`), or a YAML graph file.")] = "plan_execute",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON result to stdout.")] = False,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Also write the JSON result here (partial results on Ctrl-C).")] = None,
    slm: Annotated[Optional[str], typer.Option(help="Model spec of the slm tier.")] = None,
    llm: Annotated[Optional[str], typer.Option(help="Model spec of the llm tier.")] = None,
    planner: Annotated[Optional[str], typer.Option(help="auto | router | llm | hybrid")] = None,
    threshold: Annotated[Optional[float], typer.Option(help="Escalate answers whose confidence is below this (0..1), for every agent.")] = None,
    cascade: Annotated[Optional[str], typer.Option(help="Steps answers climb, e.g. specialist,slm,llm or slm,ollama:qwen2.5:7b,llm.")] = None,
    escalate: Annotated[Optional[bool], typer.Option("--escalate/--no-escalate", help="Re-run weak answers on the next step.")] = None,
    confidence: Annotated[Optional[str], typer.Option(help="auto | logprobs | samples | self")] = None,
    budget_tokens: Annotated[Optional[int], typer.Option(help="Most tokens the run may use.")] = None,
    budget_cost: Annotated[Optional[float], typer.Option(help="Most $ the run may spend.")] = None,
    budget_seconds: Annotated[Optional[float], typer.Option(help="Longest wall time of the run.")] = None,
    cache: Annotated[Optional[bool], typer.Option("--cache/--no-cache", help="Use the on-disk model-call cache.")] = None,
    memory_dir: Annotated[Optional[Path], typer.Option(help="Directory of the shared memory.")] = None,
    timeout: Annotated[Optional[float], typer.Option(help="Seconds to wait for one model call.")] = None,
    plan: Annotated[Optional[Path], typer.Option("--plan", help="Run this plan (JSON file) instead of planning.")] = None,
    log_json: Annotated[bool, typer.Option("--log-json", help="Log JSON lines to stderr.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log info-level events.")] = False,
    approval: Annotated[Optional[list[str]], typer.Option("--approval", help="Make steps wait for a person: subtask:ID, agent:NAME, tier:llm, tool:NAME, tools:side_effects (repeatable).")] = None,
    approve_all: Annotated[bool, typer.Option("--approve-all", help="Approve every step that waits for a person, without asking.")] = False,
    deny_all: Annotated[bool, typer.Option("--deny-all", help="Deny every step that waits for a person, without asking.")] = False,
    on_unsure: Annotated[Optional[str], typer.Option(help="keep | needs_human: hand items with no trustworthy answer to a person.")] = None,
    option: Annotated[Optional[list[str]], typer.Option("--option", help="An agent's input option for this run, AGENT.KEY=VALUE (e.g. sentiment.labels=positive,negative); repeatable.")] = None,
    labels: Annotated[Optional[str], typer.Option("--labels", help="The label set of the agents that take one (sentiment), e.g. positive,negative.")] = None,
    store_examples: Annotated[Optional[bool], typer.Option("--store-examples/--no-store-examples", help="Store escalated items a higher step answered (text, label, run, model, time) as examples.")] = None,
    shots_from_examples: Annotated[Optional[int], typer.Option(help="Stored examples added to the small model's few-shot prompt (0: never read the example store).")] = None,
) -> None:
    """Plan TASK, run its subtasks on small models in parallel (escalating weak answers), print the report."""
    if log_json or verbose:
        configure_logging(json=log_json or _opts.log_json, level="info" if verbose or _opts.verbose else "warning")
    try:
        settings = _settings(
            slm=slm, llm=llm, planner=planner, memory_dir=memory_dir, timeout=timeout, threshold=threshold, cascade=_csv(cascade),
            escalate=escalate, confidence=confidence, budget_tokens=budget_tokens, budget_cost=budget_cost,
            budget_seconds=budget_seconds, cache=cache, approve=approval, on_unsure=on_unsure, store_examples=store_examples,
            shots_from_examples=shots_from_examples,
        )  # fmt: skip
        settings = _with_agent_options(settings, option, labels)
        given = _read_plan(plan, settings) if plan is not None else None
        answers = Answers.of(approve_all=approve_all, deny_all=deny_all)
    except MoaError as exc:
        _fail(exc, as_json)
    _execute(lambda ctx: arun(task, input=input, graph=graph, plan=given, context=ctx, output=output), settings, as_json, output, answers)


async def _closing(ctx: RunContext, job: Coroutine[Any, Any, RunResult]) -> RunResult:
    try:
        return await job
    finally:
        await ctx.aclose()


async def _answering(
    ctx: RunContext, start: Callable[[RunContext], Coroutine[Any, Any, RunResult]], answers: Answers, progress: _Progress | None
) -> RunResult:
    """Run, and while the run waits for approvals that this command can answer, answer and go on."""
    result = await start(ctx)
    while result.status == "waiting":
        live = progress.live if progress is not None else None
        reply = answers.reply(result.pending, pause=live.stop if live else lambda: None, go_on=live.start if live else lambda: None)
        if reply is None:
            break
        result = await aresume(result.run_id, approve=reply[0], deny=reply[1], context=ctx)
    return result


def _execute(
    start: Callable[[RunContext], Coroutine[Any, Any, RunResult]],
    settings: Settings,
    as_json: bool,
    output: Path | None = None,
    answers: Answers | None = None,
) -> None:
    """Run (or resume) with a live progress table on a terminal; answer approvals as ``answers``
    says; print the result; exit with its code (4: waiting, 5: needs a person). The run itself
    writes its result to its output file; on Ctrl-C, the finished items are written to ``output``
    (or ``moa-<run_id>.partial.json``)."""
    interrupted: list[RunResult] = []

    def on_event(event: Event) -> None:
        if event.kind == "run_interrupted":
            interrupted.append(event.data["result"])
        elif progress is not None:
            progress(event)

    progress: _Progress | None = None
    try:
        progress = _Progress() if err.is_terminal and not as_json else None
        ctx = RunContext.create(settings, on_event=on_event)
        job = _closing(ctx, _answering(ctx, start, answers or Answers(), progress))
        if progress is not None:
            with Live(progress.table(), console=err, refresh_per_second=4, transient=True) as live:
                progress.live = live
                result = asyncio.run(job)
        else:
            result = asyncio.run(job)
    except MoaError as exc:
        _fail(exc, as_json)
        return
    except KeyboardInterrupt:
        partial = interrupted[-1] if interrupted else None
        if partial is None:
            err.print("[yellow]interrupted[/] before any result", highlight=False)
            raise typer.Exit(130) from None
        path = output or Path(f"moa-{partial.run_id}.partial.json")
        _write_json(path, partial)
        done = sum(len(r.items) for r in partial.results.values())
        err.print(f"[yellow]interrupted[/]: {done} finished items written to {escape(str(path))}", highlight=False)
        raise typer.Exit(130) from None
    if as_json:
        out.print_json(result.model_dump_json(), highlight=False)
        for e in result.errors:
            err.print(f"error in {e.subtask}: [{e.code}] {e.message}", markup=False, highlight=False, soft_wrap=True)
        for warning in result.warnings:
            err.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)
        if result.pending:
            err.print(f"waiting for approval: {', '.join(a.id for a in result.pending)}; answer with: moa resume {result.run_id} --approve ID|all --deny ID|all", markup=False, highlight=False, soft_wrap=True)
    else:
        _render(result)
    raise typer.Exit(result.exit_code)


@app.command()
def agents() -> None:
    """List the available agents."""
    try:
        settings = _settings()
    except MoaError as exc:
        _fail(exc, False)
    table = Table(title="Agents")
    for col in ("name", "tier", "threshold", "learned", "input", "output", "description"):
        table.add_column(col, overflow="fold")
    chosen: list[str] = []
    for name, a in sorted(agent_catalog().items()):
        threshold = threshold_for(settings, name, getattr(a, "threshold", None))
        shipped = a.shipped_learned(settings) if isinstance(a, ModelAgent) else None
        learned = "; ".join(x for x in (learned_summary(settings, name), shipped) if x and x != "-") or "-"
        table.add_row(name, a.tier, "-" if threshold is None else f"{threshold:g}", learned, a.input_type.__name__, a.output_type.__name__, a.description)
        if _classifier(a) or tags_entities(a):
            lines = thresholds_summary(settings, name)
            unused = f" — not used: the settings set {name}'s threshold" if lines and explicit_threshold(settings, name) else ""
            chosen += [f"  {name} {line}{unused}" for line in lines] or [f"  {name}: none (runs use {'-' if threshold is None else f'{threshold:g}'})"]
    out.print(table)
    out.print("Thresholds chosen from data (moa calibrate AGENT DATA --cascade ...):", highlight=False, markup=False)
    out.print("\n".join(chosen), highlight=False, markup=False, soft_wrap=True)


def _classifier(agent: object) -> bool:
    """Whether ``agent`` is a classification agent with a cascade (its thresholds can be chosen from data)."""
    try:
        return isinstance(agent, ModelAgent) and agent.tier != "llm" and agent.choices(agent.make_input("x", {})) is not None
    except MoaError:
        return False


@app.command()
def resume(
    run_id: Annotated[str, typer.Argument(help="The run to continue (see `moa runs list`).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON result to stdout.")] = False,
    slm: Annotated[Optional[str], typer.Option(help="Model spec of the slm tier.")] = None,
    llm: Annotated[Optional[str], typer.Option(help="Model spec of the llm tier.")] = None,
    timeout: Annotated[Optional[float], typer.Option(help="Seconds to wait for one model call.")] = None,
    approve: Annotated[Optional[list[str]], typer.Option("--approve", help="Approve this waiting step (an id from `moa runs show`), or `all` (repeatable).")] = None,
    deny: Annotated[Optional[list[str]], typer.Option("--deny", help="Deny this waiting step, or `all` (repeatable).")] = None,
    approval: Annotated[Optional[list[str]], typer.Option("--approval", help="Add an approval rule for the rest of the run (repeatable; see `moa run --help`).")] = None,
    budget_tokens: Annotated[Optional[int], typer.Option(help="Lower the run's token budget.")] = None,
    budget_cost: Annotated[Optional[float], typer.Option(help="Lower the run's $ budget.")] = None,
    budget_seconds: Annotated[Optional[float], typer.Option(help="Lower the run's wall-time budget.")] = None,
    on_unsure: Annotated[Optional[str], typer.Option(help="needs_human: hand weak answers to a person from now on.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the JSON result here instead of the run's own output file.")] = None,
) -> None:
    """Continue a run that stopped (killed, interrupted, failed, waiting for approval) without redoing its finished subtasks.

    The run keeps the options it was started with (approval rules, budgets, cascade, thresholds, cache,
    memory folder, output file); the flags here may only tighten them."""
    changes = {"approve": approval, "budget_tokens": budget_tokens, "budget_cost": budget_cost, "budget_seconds": budget_seconds, "on_unsure": on_unsure}
    tighten = {k: v for k, v in changes.items() if v is not None}
    try:
        settings, options = asyncio.run(aresume_settings(run_id, _settings(slm=slm, llm=llm, timeout=timeout), tighten=tighten, output=output))
        answers = Answers.of(approve=approve or (), deny=deny or ())
        first = answers.first()
        if first is None and answers.ask:  # a person at a terminal answers what waits, if anything does
            waits = asyncio.run(apending(run_id, settings=settings))
            first = answers.reply(waits) if waits else None
    except MoaError as exc:
        _fail(exc, as_json)
        return
    approve_first, deny_first = first or ([], [])
    _execute(
        lambda ctx: aresume(run_id, approve=approve_first, deny=deny_first, context=ctx, tighten=tighten, output=output),
        settings, as_json, output or options.output, answers,
    )  # fmt: skip


@graphs_app.callback(invoke_without_command=True)
def graphs(context: typer.Context) -> None:
    """List the available graphs (`moa graphs show NAME` draws one)."""
    if context.invoked_subcommand is not None:
        return
    table = Table(title="Graphs")
    table.add_column("name")
    table.add_column("description", overflow="fold")
    for name, module in sorted(builtin_graphs().items()):
        table.add_row(name, (module.__doc__ or "").strip().splitlines()[0])
    out.print(table)


@graphs_app.command("show")
def graphs_show(name: Annotated[str, typer.Argument(help="A graph name from `moa graphs`, or a YAML graph file.")]) -> None:
    """Print a graph's topology as Mermaid text."""
    try:
        settings = _settings()
        compiled = get_graph(name, DocumentLimits.of(settings), plan_models(settings)).build()
    except MoaError as exc:
        _fail(exc, False)
        return
    typer.echo(compiled.get_graph().draw_mermaid(), nl=False)


@runs_app.command("list")
def runs_list(
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many runs, newest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The latest recorded runs."""
    records = _await(lambda: list_runs(_settings(), limit), as_json)
    if as_json:
        out.print_json(json.dumps([r.model_dump(mode="json", exclude={"plan"}) for r in records]))
        return
    table = Table(title="Runs")
    for col in ("run", "status", "graph", "items", "started", "seconds"):
        table.add_column(col, no_wrap=True)
    table.add_column("task", overflow="fold")
    for r in records:
        started = time.strftime("%m-%d %H:%M", time.localtime(r.started))
        status = f"{r.status} ({len(r.pending)})" if r.pending else r.status
        table.add_row(r.run_id, status, r.graph, str(r.items), started, f"{r.seconds:.1f}", escape(r.task[:60]))
    out.print(table)


def _options_line(options: RunOptions) -> str:
    """The options of a run that differ from the defaults, in one line."""
    default = RunOptions(memory_dir=Settings.model_fields["memory_dir"].get_default(call_default_factory=True)).model_dump(mode="json")
    changed = {k: v for k, v in options.model_dump(mode="json").items() if v != default[k]}
    return " · ".join(f"{k} {','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in changed.items()) or "defaults"


def _render_view(view: RunView) -> None:
    r = view.run
    out.print(f"[bold]run {r.run_id}[/] · {r.status} · {r.graph} · {r.items} items · {r.seconds:.1f}s · {r.attempts} attempt(s)", highlight=False)
    out.print(f"Task: {escape(r.task)}", highlight=False)
    if r.options is not None:
        out.print(f"Options: {escape(_options_line(r.options))}", highlight=False)
    for t in r.tightened:
        out.print(f"Tightened by attempt {t.attempt}: {t.option} {t.before!r} -> {t.after!r}", highlight=False, markup=False)
    if not view.planned:
        out.print("no plan yet (the run stopped before planning)")
    table = Table(title="Subtasks", title_justify="left")
    for col in ("subtask", "agent", "status", "items", "calls", "tokens", "s"):
        table.add_column(col, no_wrap=True)
    for col in ("after", "model", "error"):
        table.add_column(col, overflow="fold")
    for s in view.subtasks:
        table.add_row(
            s.id, s.agent, s.status, str(s.items), str(s.calls), f"{s.prompt_tokens}+{s.completion_tokens}", f"{s.seconds:.1f}",
            ",".join(s.depends_on), ", ".join(s.models), escape(s.error or ""),
        )  # fmt: skip
    out.print(table)
    for s in view.subtasks:  # where the plan sends the items (a plan may name only allowed models)
        if s.routing():
            out.print(f"{escape(s.id)}: the plan sets {escape(s.routing())}", highlight=False, soft_wrap=True)
    if r.error:
        line = f"[{r.error.code}] {r.error.message}"
        err.print(f"[red]error[/] {escape(line)}", highlight=False, soft_wrap=True)
    if r.status in ("interrupted", "error"):
        out.print(f"continue it with: moa resume {r.run_id}", highlight=False)
    if r.pending:
        render_pending(r.run_id, r.pending)


@runs_app.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(help="A run id from `moa runs list`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    mermaid: Annotated[bool, typer.Option("--mermaid", help="Print the executed DAG as Mermaid text.")] = False,
) -> None:
    """A recorded run: plan, per-subtask status, models, tokens, time, errors."""
    view = _await(lambda: load_view(_settings(), run_id), as_json)
    if as_json:
        out.print_json(view.model_dump_json(exclude={"run": {"plan"}}))
    elif mermaid:
        typer.echo(view.mermaid(), nl=False)
    else:
        _render_view(view)


@runs_app.command("export")
def runs_export(
    run_id: Annotated[str, typer.Argument(help="A run id from `moa runs list`.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the JSON here instead of printing it.")] = None,
) -> None:
    """A recorded run's full result as JSON (what `moa run --json` printed), rebuilt from its checkpoint."""
    try:
        target = check_output(output) if output is not None else None
        result = asyncio.run(load_result(_settings(), run_id))
        if target is not None:
            write_result(target, result)
    except MoaError as exc:
        _fail(exc, False)
        return
    if target is None:
        out.print_json(result.model_dump_json(), highlight=False)
    else:
        err.print(f"run {run_id} ({result.status}) written to {escape(str(target))}", highlight=False)


def _removed(done: Removed, as_json: bool, dry_run: bool) -> None:
    if as_json:
        out.print_json(done.model_dump_json())
        return
    verb = "would remove" if dry_run else "removed"
    out.print(f"{verb} {len(done.runs)} run(s)" + (f": {', '.join(done.runs)}" if done.runs else ""), highlight=False)
    if done.skipped:
        out.print(f"left alone (a process is working on them): {', '.join(done.skipped)}", highlight=False)
    if done.orphans:
        out.print(f"removed the checkpoints of {done.orphans} run(s) no longer in the index", highlight=False)
    if done.vacuumed:
        out.print("the state database was compacted (VACUUM)", highlight=False)


@runs_app.command("rm")
def runs_rm(
    run_ids: Annotated[list[str], typer.Argument(help="Run ids from `moa runs list`.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be removed; remove nothing.")] = False,
    vacuum: Annotated[bool, typer.Option("--vacuum", help="Give the freed space back to the file system (rewrites the database).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Remove recorded runs: their index rows and checkpoints (a run still running is refused)."""
    done = _await(lambda: remove_runs(_settings(), run_ids, dry_run=dry_run, vacuum=vacuum), as_json)
    _removed(done, as_json, dry_run)


@runs_app.command("prune")
def runs_prune(
    older_than: Annotated[str, typer.Option("--older-than", help="Age of the runs to remove: 90s, 30m, 12h, 7d, 2w.")],
    status: Annotated[str, typer.Option("--status", help="Statuses to remove, comma-separated, or all.")] = "ok,partial,failed,needs_human",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be removed; remove nothing.")] = False,
    vacuum: Annotated[bool, typer.Option("--vacuum", help="Give the freed space back to the file system (rewrites the database).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Remove the runs started before --older-than whose status is one of --status (default: finished runs,
    which cannot be resumed). Runs a process is working on are never removed."""
    try:
        age, statuses = parse_age(older_than), parse_statuses(status)
    except MoaError as exc:
        _fail(exc, as_json)
        return
    done = _await(lambda: prune_runs(_settings(), older_than=age, statuses=statuses, dry_run=dry_run, vacuum=vacuum), as_json)
    _removed(done, as_json, dry_run)


@app.command()
def models(
    check: Annotated[bool, typer.Option("--check/--no-check", help="Contact each backend.")] = True,
) -> None:
    """Show which model each tier uses, and whether its backend is reachable."""
    try:
        settings = _settings()
    except MoaError as exc:
        _fail(exc, False)
        return

    async def probe() -> list[tuple[str, str, str, str]]:
        registry = Models(settings)
        rows = []
        try:
            for tier in ("slm", "llm"):
                spec = settings.tier_spec(tier)  # type: ignore[arg-type]
                try:
                    backend = registry.tier(tier)  # type: ignore[arg-type]
                    status = await backend.check() if check else "not checked"
                    caps = await backend.acapabilities()
                    kind = "chat" if caps.chat else "completion (base model)"
                    rows.append((tier, spec, kind, f"ok: {status}"))
                except MoaError as exc:
                    rows.append((tier, spec, "?", f"[red]{exc.code}[/]: {exc.message}"))
        finally:
            await registry.aclose()
        return rows

    table = Table(title="Models")
    for col in ("tier", "spec", "kind", "status"):
        table.add_column(col, overflow="fold")
    rows = asyncio.run(probe())
    for row in rows:
        table.add_row(*row)
    out.print(table)
    out.print(_shipped_table(settings))
    if any("ok:" not in r[3] for r in rows):
        raise typer.Exit(3)


def _shipped_table(settings: Settings) -> Table:
    """The instruct models that PyPI packages ship: installed? verified? (nothing is hashed here)."""
    from moa.models.shipped import SHIPPED, shipped_status

    table = Table(title="Shipped instruct models (embedded:<name>)")
    for col in ("name", "model", "size", "licence", "sha256", "status"):
        table.add_column(col, overflow="fold")
    for model in SHIPPED.values():
        status = shipped_status(model, settings.model_cache_dir)
        table.add_row(
            model.name, model.title, f"{model.size / 1e6:.0f} MB", model.licence, model.sha256[:12] + "…", escape(status.summary)
        )
    return table


@memory_app.command("add")
def memory_add(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (*.txt, *.md) to add.")],
    memory_dir: Annotated[Optional[Path], typer.Option(help="Directory of the shared memory.")] = None,
    max_chars: Annotated[int, typer.Option(help="Chunk size in characters.")] = 800,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (files, chunks, skipped).")] = False,
) -> None:
    """Chunk files and add them to the shared memory. A folder is never left (links leading out of
    it are skipped); files that cannot be read, are binary or not UTF-8 are skipped and listed, the
    rest is added. Exits 2 when nothing could be added."""
    from moa.memory.chroma import add_files

    try:
        ctx = RunContext.create(_settings(memory_dir=memory_dir))
        report = asyncio.run(add_files(ctx.memory(), paths, max_chars=max_chars))
    except MoaError as exc:
        _fail(exc, as_json)
        return
    if as_json:
        out.print_json(report.model_dump_json(exclude={"ids"}))
    else:
        where = ctx.settings.memory_url or ctx.settings.memory_dir
        out.print(f"added {report.chunks} chunks from {len(report.files)} files to {where}", highlight=False)
    if report.skipped:
        err.print(f"[yellow]skipped[/] {len(report.skipped)} file{'s' * (len(report.skipped) != 1)}:", highlight=False)
        for skip in report.skipped:
            err.print(f"  {escape(skip.path)}: {escape(skip.reason)}", highlight=False, soft_wrap=True)


@memory_app.command("query")
def memory_query(
    text: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option("-k", help="How many passages.")] = 5,
    memory_dir: Annotated[Optional[Path], typer.Option(help="Directory of the shared memory.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Search the shared memory."""
    try:
        ctx = RunContext.create(_settings(memory_dir=memory_dir))
        memory = ctx.memory()
        try:
            passages = asyncio.run(memory.aquery(text, k=k))
        finally:
            memory.close()  # a folder that cannot be written was read from a temporary copy: removed now
    except MoaError as exc:
        _fail(exc, as_json)
        return
    if as_json:
        out.print_json(json.dumps([p.model_dump() for p in passages]))
        return
    table = Table(title=f"Memory: {text}")
    for col in ("score", "source", "text"):
        table.add_column(col, overflow="fold")
    for p in passages:
        table.add_row(f"{p.score:.3f}", escape(p.source or ""), escape(p.text[:300]))
    out.print(table)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (for tests: ``main(["agents"])``). Usage errors exit 2."""
    try:
        app(args=argv if argv is not None else sys.argv[1:], prog_name="moa")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

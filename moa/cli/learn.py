"""``moa calibrate`` and ``moa train``: the CLI of :mod:`moa.agent.learn` and, with ``--cascade``,
of :mod:`moa.eval.thresholds` (thresholds chosen from data)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from moa.agent.context import RunContext
from moa.agent.learn import Task, calibrate_agent, classifier, load_for, load_tagging, tags_entities, task_for, train_agent, train_tagging_agent, used_by
from moa.agent.model import ModelAgent
from moa.cli.output import err, fail, out
from moa.errors import ErrorCode, MoaError, UserError
from moa.eval.metrics import metric_name
from moa.eval.thresholds import acalibrate_thresholds
from moa.learning.labelled import parse_label_map
from moa.learning.store import describe_key
from moa.learning.thresholds import Goal, ThresholdChoice
from moa.routing.policy import Step, explicit_threshold
from moa.settings import load_settings
from moa.workflow.catalog import agent_catalog, get_agent

OptionList = Annotated[Optional[list[str]], typer.Option("--option", help="Agent option KEY=VALUE (e.g. criterion=spam, labels=positive,negative).")]
LabelMap = Annotated[Optional[str], typer.Option("--label-map", help="Map raw labels, e.g. 0=negative,1=positive.")]


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; a value is JSON if it parses, a list if it has commas, else text."""
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(ErrorCode.INVALID_INPUT, f"bad --option {pair!r}; use KEY=VALUE, e.g. --option criterion=spam")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = [v.strip() for v in value.split(",")] if "," in value else value
    return options


def _step(ctx: RunContext, model: str) -> Step:
    return Step(model, ctx.settings.tier_spec(model)) if model in ("slm", "llm") else Step(model, model)  # type: ignore[arg-type]


def register(app: typer.Typer) -> None:
    """Add the learning commands to ``app``."""

    @app.command()
    def calibrate(
        agent: Annotated[str, typer.Argument(help="A classification agent (sentiment, filtering, ...); with --cascade, also extraction.")],
        data: Annotated[Path, typer.Argument(help="Labelled file: TSV/CSV (text and label columns) or JSONL; CoNLL for extraction.")],
        option: OptionList = None,
        label_map: LabelMap = None,
        model: Annotated[Optional[str], typer.Option(help="Tier (slm, llm) or model spec to calibrate (default slm).")] = None,
        cascade: Annotated[Optional[str], typer.Option(help="Choose the escalation thresholds of this cascade instead, e.g. specialist,slm or specialist,slm,llm.")] = None,
        goal: Annotated[str, typer.Option(help="With --cascade: 'accuracy' (the best held-out accuracy; entity F1 for extraction) or 'within=0.01' (the cheapest thresholds within 0.01 of the best).")] = "accuracy",
        folds: Annotated[Optional[int], typer.Option(help="With --cascade: folds of the cross-validation (default up to 5, 20+ items each).")] = None,
        out_dir: Annotated[Optional[Path], typer.Option("--out", help="With --cascade: keep every step's answers here (resumable; choosing again with another goal calls no model).")] = None,
        limit: Annotated[Optional[int], typer.Option(help="Use a stratified sample of this many items.")] = None,
        seed: Annotated[int, typer.Option(help="Seed of the sample (and of the folds).")] = 0,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Measure how often AGENT is right at each confidence on DATA, and store the calibration for
        this label set (later runs of the same label set report calibrated confidences: a threshold
        of 0.8 means ~80% precision).

        With --cascade: run every step of the cascade on every item once,
        choose each step's escalation threshold for --goal by cross-validation,
        and store it for this agent, label set and cascade; later runs of them
        use it unless they set a threshold themselves. For extraction (CoNLL
        data; --label-map renames entity types) the quality is micro entity F1
        and the thresholds are stored for the data's entity types."""
        if cascade is not None:
            if model is not None:
                fail(UserError(ErrorCode.BAD_CONFIG, "give --model (calibrate one model's confidences) or --cascade (choose the cascade's thresholds), not both"), as_json)
            _choose(agent, data, cascade, goal, folds, out_dir, option, label_map, limit, seed, as_json)
            return
        model = model or "slm"
        try:
            settings = load_settings(escalate=False)
            found = classifier(get_agent(agent_catalog(), agent))
            labelled, task = load_for(found, data, parse_options(option), parse_label_map(label_map) if label_map else None)
            if limit is not None:
                if limit < 20:
                    raise UserError(ErrorCode.INVALID_INPUT, f"--limit {limit} is too small to calibrate; use at least 20 items")
                labelled = labelled.sample(min(limit, len(labelled)), seed)
            ctx = RunContext.create(settings)
            step = _step(ctx, model)

            async def go() -> Any:
                try:
                    with Progress(TextColumn("calibrating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err, transient=True) as bar:
                        job = bar.add_task("items", total=len(labelled))
                        return await calibrate_agent(ctx, found, labelled, task, step=step, on_progress=lambda done, _: bar.update(job, completed=done))
                finally:
                    await ctx.aclose()

            calibration, path = asyncio.run(go())
        except MoaError as exc:
            fail(exc, as_json)
        usage = used_by(found, task, calibration.model)
        if as_json:
            out.print_json(json.dumps({"path": str(path), "used_by": usage, **calibration.model_dump()}))
            return
        table = Table(title=f"{found.name} on {calibration.model}: {calibration.n} items, accuracy {calibration.accuracy:.3f}", title_justify="left")
        for col in ("threshold", "coverage", "precision"):
            table.add_column(col)
        for row in calibration.table:
            table.add_row(f"{row.threshold:.2f}", f"{row.coverage:.0%}", "-" if row.precision is None else f"{row.precision:.3f}")
        out.print(table)
        held_out = "" if calibration.ece_held_out is None else f", {calibration.ece_held_out:.3f} on answers left out of the fit (5-fold)"
        out.print(f"ECE {calibration.ece_raw:.3f} → {calibration.ece:.3f} on the fitting answers{held_out} · stored in {path}", highlight=False)
        out.print(usage, highlight=False, markup=False)

    def _choose(
        agent: str, data: Path, cascade: str, goal: str, folds: int | None, out_dir: Path | None, option: list[str] | None,
        label_map: str | None, limit: int | None, seed: int, as_json: bool,
    ) -> None:
        try:
            wanted = Goal.parse(goal)
            steps = [s.strip() for s in cascade.split(",")]
            named = get_agent(agent_catalog(), agent)
            found = named if isinstance(named, ModelAgent) and tags_entities(named) else classifier(named)  # classification (accuracy) or extraction (entity F1)
            ctx = RunContext.create(load_settings())

            async def go() -> tuple[ThresholdChoice, Path]:
                try:
                    with Progress(TextColumn("answering on every step"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err, transient=True) as bar:
                        job = bar.add_task("items", total=None)
                        return await acalibrate_thresholds(
                            agent, data, ctx=ctx, cascade=steps, goal=wanted, folds=folds, limit=limit, seed=seed, options=parse_options(option),
                            label_map=parse_label_map(label_map) if label_map else None, out=out_dir,
                            on_progress=lambda done, total: bar.update(job, completed=done, total=total),
                        )  # fmt: skip
                finally:
                    await ctx.aclose()

            choice, path = asyncio.run(go())
        except MoaError as exc:
            fail(exc, as_json)
        if explicit_threshold(ctx.settings, found.name):
            err.print(
                f"[yellow]warning[/] your settings set {found.name}'s threshold (threshold / thresholds in moa.toml, MOA_THRESHOLD), "
                "which wins over the thresholds chosen here: remove it for runs to use them",
                highlight=False,
                soft_wrap=True,
            )
        usage = (
            f"used by {found.name} runs that ask for ({describe_key(choice.key)}) with the cascade {' → '.join(choice.steps)} and set no threshold "
            f"(--threshold, threshold/thresholds in moa.toml, a plan's): {found.how_to_ask(choice.key)}"
        )
        if as_json:
            out.print_json(json.dumps({"path": str(path), "used_by": usage, **choice.model_dump()}))
            return
        table = Table(title=f"{found.name} ({describe_key(choice.key)}): {choice.n} items, {choice.folds}-fold held-out", title_justify="left")
        for col in ("rule", "thresholds", metric_name(choice.metric), "escalated", "tokens/item"):
            table.add_column(col)
        for row in choice.held_out:
            thresholds = ", ".join(f"{s} {t:g}" for s, t in row.thresholds.items()) or "-"
            table.add_row(row.name, thresholds, f"{row.quality:.3f}", f"{row.escalated:.0%}", f"{row.tokens_per_item:.0f}")
        out.print(table)
        spread = "; ".join(", ".join(f"{t:g}" for t in f.values()) for f in choice.fold_thresholds)
        out.print(f"chose {choice.describe()} (goal {choice.goal}; the folds chose {spread}) · stored in {path}", highlight=False, markup=False)
        out.print(usage, highlight=False, markup=False)

    @app.command()
    def train(
        agent: Annotated[str, typer.Argument(help="A classification agent (sentiment, filtering, ...) or extraction.")],
        data: Annotated[Optional[Path], typer.Argument(help="Labelled file: TSV/CSV or JSONL (optional with --from-escalations); CoNLL for extraction.")] = None,
        from_escalations: Annotated[bool, typer.Option("--from-escalations", help="Also learn from the answers higher steps gave to escalated items.")] = False,
        option: OptionList = None,
        label_map: LabelMap = None,
        limit: Annotated[Optional[int], typer.Option(help="Use a stratified sample of this many items.")] = None,
        seed: Annotated[int, typer.Option(help="Seed of the sample.")] = 0,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Fit a specialist for AGENT (logistic regression on the shared embeddings, milliseconds per
        item; for extraction, an entity tagger on CoNLL data); later runs try it first and escalate
        what it is unsure of."""
        try:
            found_agent = get_agent(agent_catalog(), agent)
            if tags_entities(found_agent):
                _train_tagger(found_agent, data, from_escalations, label_map, limit, seed, as_json)
                return
            if data is None and not from_escalations:
                raise UserError(ErrorCode.INVALID_INPUT, "give a labelled DATA file, or --from-escalations to learn from stored escalations")
            found = classifier(found_agent)
            options = parse_options(option)
            labelled = None
            task = task_for(found, options)
            if data is not None:
                labelled, task = load_for(found, data, options, parse_label_map(label_map) if label_map else None)
                if limit is not None:
                    labelled = labelled.sample(min(limit, len(labelled)), seed)
            ctx = RunContext.create(load_settings())

            async def go() -> Any:
                try:
                    return await train_agent(ctx, found, task, labelled, from_escalations=from_escalations)
                finally:
                    await ctx.aclose()

            _, report, path = asyncio.run(go())
        except MoaError as exc:
            fail(exc, as_json)
        usage = used_by(found, task)
        if as_json:
            out.print_json(json.dumps({"path": str(path), "used_by": usage, **report.model_dump()}))
            return
        accuracy = "n/a" if report.holdout_accuracy is None else f"{report.holdout_accuracy:.3f}"
        out.print(
            f"trained {found.name} specialist ({report.key}) on {report.n} items {report.counts}: "
            f"held-out accuracy {accuracy}, embed {report.embed_seconds:.1f}s, fit {report.fit_seconds:.2f}s · stored in {path}",
            highlight=False,
        )
        out.print(usage, highlight=False, markup=False)


def _train_tagger(agent: Any, data: Path | None, from_escalations: bool, label_map: str | None, limit: int | None, seed: int, as_json: bool) -> None:
    """``moa train extraction DATA.conll``: fit and store an entity tagger."""
    try:
        if data is None or from_escalations:
            raise UserError(ErrorCode.INVALID_INPUT, f"{agent.name} learns from a CoNLL file (token<TAB>BIO-tag): moa train {agent.name} DATA.conll [--label-map corporation=organization]")
        mapping = parse_label_map(label_map) if label_map else None
        sentences = load_tagging(data, mapping, limit, seed)
        ctx = RunContext.create(load_settings())

        async def go() -> Any:
            try:
                return await train_tagging_agent(ctx, agent, sentences, source=str(data), label_map=mapping)
            finally:
                await ctx.aclose()

        _, report, path = asyncio.run(go())
    except MoaError as exc:
        fail(exc, as_json)
    usage = used_by(agent, Task(options={"types": report.types}, labels=report.types, key=report.key))
    usage += " (a request is served when its types are among these, or date)"
    if as_json:
        out.print_json(json.dumps({"path": str(path), "used_by": usage, **report.model_dump()}))
        return
    out.print(
        f"trained {agent.name} entity tagger ({report.key}) on {report.sentences} sentences {report.entities}: "
        f"{report.clusters} word clusters, "
        + (f"span typer on {report.typer_spans} spans, " if report.typer_spans else "")
        + f"embed {report.embed_seconds:.1f}s, fit {report.fit_seconds:.1f}s · stored in {path}",
        highlight=False,
    )
    out.print(usage, highlight=False, markup=False)

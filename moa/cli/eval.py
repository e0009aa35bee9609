"""``moa eval``: the CLI of :mod:`moa.eval`."""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from moa.agent.context import RunContext
from moa.cli.learn import LabelMap, OptionList, parse_options
from moa.cli.output import err, fail, out
from moa.errors import ErrorCode, MoaError, UserError
from moa.eval.compare import compare, compare_markdown
from moa.eval.datasets import FORMATS, PRESETS
from moa.eval.metrics import metric_name
from moa.eval.report import USAGE_HEADER, Report, rerender, usage_rows
from moa.eval.runner import Prepared, aevaluate, prepare
from moa.learning.labelled import parse_label_map
from moa.settings import load_settings


def _default_out(target: str, data: str, cascade: str | None, sweep: bool, shots: int = 0) -> Path:
    name = Path(data).stem if data not in PRESETS else data
    steps = (cascade or "default").replace(",", "-").replace(":", "_").replace("/", "_")
    return Path("moa-eval") / f"{Path(target).stem}-{name}-{steps}{f'-shots{shots}' if shots else ''}{'-sweep' if sweep else ''}"


def _write_rest(prepared: Prepared, path: Path) -> int:
    """The labelled items the eval does not use, as ``text<TAB>label`` (for ``moa train``)."""
    if prepared.dataset.kind != "classification":
        raise UserError(ErrorCode.INVALID_INPUT, f"--rest writes classification data; {prepared.dataset.name} is {prepared.dataset.kind} data")
    rest = prepared.dataset.rest(prepared.config.limit, prepared.config.seed)
    try:
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\", lineterminator="\n")
            writer.writerow(["text", "label"])
            writer.writerows([" ".join(e.text.split()), e.gold] for e in rest)
    except OSError as exc:
        raise UserError(ErrorCode.INPUT_FILE, f"cannot write {path}: {exc.strerror or exc}; choose another --rest path") from exc
    return len(rest)


def _render(report: Report, folder: Path) -> None:
    c = report.config
    title = f"{c.target} on {c.data_name}: {report.items} items · {' → '.join(report.steps) or c.target}" + (f" · {c.shots} worked examples per prompt" if c.shots else "")
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("value")
    for k, v in report.metrics.items():
        table.add_row(k, f"{v:.4f}")
    out.print(table)
    usage = Table(title="Cost and latency", title_justify="left")
    for col in USAGE_HEADER:
        usage.add_column(col)
    for row in usage_rows(report):
        usage.add_row(*row)
    out.print(usage)
    speed = "-" if report.items_per_s is None else f"{report.items_per_s:.2f}"
    answered = ", ".join(f"{k} {v}" for k, v in report.answered_by.items())
    out.print(
        f"items/s {speed} · escalation rate {report.escalation_rate:.0%} · answered by {escape(answered)} · errors {report.errors}"
        + (f" · ECE {report.reliability.ece:.3f}" if report.reliability.ece is not None else ""),
        highlight=False,
    )
    if report.sweep:
        metric = report.headline
        best = max(report.sweep, key=lambda p: p.metrics[metric])
        shown = metric_name(metric)
        out.print(f"sweep: {len(report.sweep)} thresholds; best {shown} {best.metrics[metric]:.3f} at t={best.threshold:.2f} ({best.top_share:.0%} to {report.steps[-1]})", highlight=False)
    for note in report.notes:
        err.print(f"[yellow]note[/] {escape(note)}", highlight=False)
    out.print(f"report: {escape(str(folder / 'report.md'))}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``moa eval`` to ``app``."""

    @app.command("eval")
    def eval_(
        target: Annotated[Optional[str], typer.Argument(help="An agent (sentiment, filtering, extraction, retrieval...) or a graph (mixture, plan_execute, a .yaml file).")] = None,
        data: Annotated[Optional[str], typer.Argument(help=f"A data file or folder, or a public set: {', '.join(PRESETS)}.")] = None,
        format: Annotated[Optional[str], typer.Option("--format", help=f"Data format: {', '.join(FORMATS)} (default: detected).")] = None,
        limit: Annotated[Optional[int], typer.Option(help="Evaluate this many items (a seeded sample; a larger limit keeps the smaller one's items).")] = None,
        seed: Annotated[int, typer.Option(help="Seed of the sample.")] = 0,
        shots: Annotated[int, typer.Option(help="Entities/slots: show the agent this many worked examples per prompt, drawn from the items the eval leaves out (needs --limit).")] = 0,
        cascade: Annotated[Optional[str], typer.Option(help="Steps answers climb, e.g. specialist,slm or slm.")] = None,
        threshold: Annotated[Optional[float], typer.Option(help="Escalate answers whose confidence is below this (0..1).")] = None,
        sweep: Annotated[bool, typer.Option("--sweep", help="Run every cascade step on every item, so the threshold sweep covers every threshold.")] = False,
        out_dir: Annotated[Optional[Path], typer.Option("--out", help="Folder of the results (default moa-eval/<agent>-<data>-<cascade>); running again resumes.")] = None,
        label_map: LabelMap = None,
        option: OptionList = None,
        docs: Annotated[Optional[int], typer.Option("--docs", help="Retrieval: index only the first N documents.")] = None,
        data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Folder of the public data sets (default: MOA_EVAL_DATA, else ../shared/eval).")] = None,
        rest: Annotated[Optional[Path], typer.Option("--rest", help="Also write the labelled items this eval leaves out to this TSV (train a specialist on it).")] = None,
        slm: Annotated[Optional[str], typer.Option(help="Model spec of the slm tier.")] = None,
        llm: Annotated[Optional[str], typer.Option(help="Model spec of the llm tier.")] = None,
        cache: Annotated[Optional[bool], typer.Option("--cache/--no-cache", help="Use the on-disk model-call cache.")] = None,
        report: Annotated[Optional[list[Path]], typer.Option("--report", help="Re-render the report of this eval folder (no model calls); several: compare them into --out.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    ) -> None:
        """Evaluate an agent, a cascade or a graph on labelled data: task metric, cost per tier, latency, escalations."""
        folder = out_dir or Path("moa-eval")
        try:
            if report:
                _report(report, out_dir, as_json)
                return
            if target is None or data is None:
                raise UserError(ErrorCode.INVALID_INPUT, "give an agent or graph and a data set, e.g. `moa eval sentiment sst2 --limit 20`, or --report DIR")
            steps = [s.strip() for s in cascade.split(",") if s.strip()] if cascade else None
            settings = load_settings(slm=slm, llm=llm, cache=cache, cascade=steps, threshold=threshold, durable=False)
            ctx = RunContext.create(settings)
            folder = out_dir or _default_out(target, data, cascade, sweep, shots)
            prepared = prepare(
                target, data, ctx=ctx, format=format, limit=limit, seed=seed, options=parse_options(option),
                label_map=parse_label_map(label_map) if label_map else None, cascade=steps, threshold=threshold,
                sweep=sweep, max_docs=docs, data_dir=data_dir, shots=shots,
            )  # fmt: skip
            if rest is not None:
                n = _write_rest(prepared, rest)
                err.print(f"wrote the {n} items this eval leaves out to {escape(str(rest))}", highlight=False)
            result = asyncio.run(_run(prepared, folder, ctx))
        except MoaError as exc:
            fail(exc, as_json)
        except KeyboardInterrupt:
            err.print(f"[yellow]interrupted[/]: the finished items are kept in {escape(str(folder))}; run the same command again to continue", highlight=False)
            raise typer.Exit(130) from None
        if as_json:
            out.print_json(result.model_dump_json())
        else:
            _render(result, folder)


async def _run(prepared: Prepared, folder: Path, ctx: RunContext) -> Report:
    try:
        columns = (TextColumn(f"eval {prepared.config.target}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=err, transient=True) as bar:
            job = bar.add_task("items", total=len(prepared.examples))
            return await aevaluate(prepared, folder, ctx=ctx, on_progress=lambda done, _: bar.update(job, completed=done))
    finally:
        await ctx.aclose()


def _report(folders: list[Path], out_dir: Path | None, as_json: bool) -> None:
    if len(folders) == 1:
        result = rerender(folders[0])
        if as_json:
            out.print_json(result.model_dump_json())
        else:
            _render(result, folders[0])
        return
    target = out_dir or Path("moa-eval") / "compare"
    rows, _ = compare(folders, target)
    if as_json:
        out.print_json(json.dumps([r.model_dump() for r in rows]))
        return
    out.print(compare_markdown(rows), markup=False, highlight=False)
    out.print(f"written to {escape(str(target / 'compare.md'))}", highlight=False)


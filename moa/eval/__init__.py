"""Evaluation harness: quality, cost and latency of an agent, a cascade or a graph on labelled data.

::

    report = await moa.eval.aevaluate_path("sentiment", "sst2", out=Path("ev/sst2"), limit=200)
    print(report.metrics, report.usage.per_tier, report.items_per_s)

* :mod:`moa.eval.datasets` — loaders per format (TSV/CSV/JSONL classification, CoNLL, SNIPS,
  Cranfield, question answering), format detection, the public sets by name;
* :mod:`moa.eval.metrics` — accuracy, macro-F1, entity and slot F1, nDCG/Recall/MRR, EM/F1;
* :mod:`moa.eval.runner` — the resumable run (``results.jsonl``, one line per item);
* :mod:`moa.eval.shots` — worked examples for the agent drawn from the items the eval leaves out;
* :mod:`moa.eval.sweep` — configurations, the threshold sweep and reliability, replayed from records;
* :mod:`moa.eval.report`, :mod:`moa.eval.compare`, :mod:`moa.eval.plots` — Markdown, JSON, PNG.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from moa.agent.context import RunContext
from moa.errors import check_no_running_loop
from moa.eval.datasets import PRESETS, EvalSet, Example, load_eval_set
from moa.eval.records import EvalConfig, ItemRecord, Meta, StepRecord
from moa.eval.report import Report, build_report, rerender, write_report
from moa.eval.runner import Prepared, Progress, aevaluate, prepare
from moa.settings import Settings, load_settings


async def aevaluate_path(
    target: str,
    data: str | Path,
    *,
    out: Path,
    settings: Settings | None = None,
    context: RunContext | None = None,
    on_progress: Progress | None = None,
    **options: Any,
) -> Report:
    """Evaluate ``target`` (an agent or graph name) on ``data`` (a path or a public set's name) into
    ``out`` and return the report. ``options`` go to :func:`prepare` (``limit``, ``seed``, ``format``,
    ``cascade``, ``threshold``, ``sweep``, ``options``, ``label_map``, ``max_docs``, ``data_dir``, ``agents``, ``shots``).
    Evals are not recorded as runs (``durable`` is off: the folder is the record)."""
    base = settings or (context.settings if context else load_settings())
    policy = {k: v for k, v in (("cascade", options.get("cascade")), ("threshold", options.get("threshold"))) if v is not None}
    settings = base.model_copy(update={"durable": False, **policy})
    ctx = RunContext.create(settings) if context is None else dataclasses.replace(context, settings=settings)
    try:
        prepared = prepare(target, data, ctx=ctx, **options)
        return await aevaluate(prepared, out, ctx=ctx, on_progress=on_progress)
    finally:
        if context is None:
            await ctx.aclose()


def evaluate_path(target: str, data: str | Path, *, out: Path, **kwargs: Any) -> Report:
    """Synchronous :func:`aevaluate_path` (refuses to run inside an event loop)."""
    check_no_running_loop("moa.eval.evaluate_path", "moa.eval.aevaluate_path")
    return asyncio.run(aevaluate_path(target, data, out=out, **kwargs))


__all__ = [
    "PRESETS",
    "EvalConfig",
    "EvalSet",
    "Example",
    "ItemRecord",
    "Meta",
    "Prepared",
    "Report",
    "StepRecord",
    "aevaluate",
    "aevaluate_path",
    "build_report",
    "evaluate_path",
    "load_eval_set",
    "prepare",
    "rerender",
    "write_report",
]

"""Evaluating an agent or graph named by the user on labelled data named by a path or a public
set: settings and run context made for the eval, then :func:`~moa.eval.runner.prepare` and
:func:`~moa.eval.runner.aevaluate`; :func:`evaluate_path` is its synchronous wrapper."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from moa.agent.context import RunContext
from moa.errors import check_no_running_loop
from moa.eval.report import Report
from moa.eval.runner import Progress, aevaluate, prepare
from moa.settings import Settings, load_settings

__all__ = ["aevaluate_path", "evaluate_path"]


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

"""The Python API: :func:`arun` / :func:`aresume` / :func:`apending` (the async core, in
:mod:`moa.workflow.driver`) and :func:`run` / :func:`resume` / :func:`pending`, thin sync wrappers that
refuse to run inside an event loop."""

from __future__ import annotations

import asyncio
from typing import Any

from moa.errors import ErrorCode, UserError
from moa.routing.approvals import Approval
from moa.workflow.driver import apending, aresume, arun
from moa.workflow.results import RunResult

__all__ = ["RunResult", "apending", "aresume", "arun", "pending", "resume", "run"]


def _check_no_running_loop(name: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise UserError(
        ErrorCode.NESTED_EVENT_LOOP,
        f"moa.{name}() cannot be called from a running event loop (e.g. inside async code or Jupyter); use `await moa.a{name}(...)`",
    )


def run(task: str, **kwargs: Any) -> RunResult:
    """Synchronous :func:`arun` (refuses to run inside an event loop)."""
    _check_no_running_loop("run")
    return asyncio.run(arun(task, **kwargs))


def resume(run_id: str, **kwargs: Any) -> RunResult:
    """Synchronous :func:`aresume` (refuses to run inside an event loop)."""
    _check_no_running_loop("resume")
    return asyncio.run(aresume(run_id, **kwargs))


def pending(run_id: str, **kwargs: Any) -> list[Approval]:
    """Synchronous :func:`apending` (refuses to run inside an event loop)."""
    _check_no_running_loop("pending")
    return asyncio.run(apending(run_id, **kwargs))

"""The Python API: :func:`arun` / :func:`aresume` / :func:`apending` (the async core, in
:mod:`moa.workflow.driver`) and :func:`run` / :func:`resume` / :func:`pending`, thin sync wrappers that
refuse to run inside an event loop."""

from __future__ import annotations

import asyncio
from typing import Any

from moa.errors import check_no_running_loop
from moa.routing.approvals import Approval
from moa.workflow.driver import apending, aresume, arun
from moa.workflow.results import RunResult

__all__ = ["RunResult", "apending", "aresume", "arun", "pending", "resume", "run"]


def run(task: str, **kwargs: Any) -> RunResult:
    """Synchronous :func:`arun` (refuses to run inside an event loop)."""
    check_no_running_loop("moa.run", "moa.arun")
    return asyncio.run(arun(task, **kwargs))


def resume(run_id: str, **kwargs: Any) -> RunResult:
    """Synchronous :func:`aresume` (refuses to run inside an event loop)."""
    check_no_running_loop("moa.resume", "moa.aresume")
    return asyncio.run(aresume(run_id, **kwargs))


def pending(run_id: str, **kwargs: Any) -> list[Approval]:
    """Synchronous :func:`apending` (refuses to run inside an event loop)."""
    check_no_running_loop("moa.pending", "moa.apending")
    return asyncio.run(apending(run_id, **kwargs))

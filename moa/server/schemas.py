"""The JSON bodies of the run API (requests are strict: an unknown field is a 422)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from moa.errors import ErrorInfo
from moa.routing.approvals import Approval
from moa.settings import OnUnsure
from moa.workflow.results import RunResult

ServedStatus = Literal["queued", "running", "ok", "partial", "failed", "stopped", "interrupted", "waiting", "needs_human", "error"]
"""``queued`` (waiting for a worker), ``running``, ``waiting`` (for approvals), or how it ended: a
:class:`~moa.workflow.results.RunResult` status, or ``error`` (the run raised: ``error`` says why)."""

FINAL: frozenset[str] = frozenset({"ok", "partial", "failed", "stopped", "interrupted", "needs_human", "error"})


class RunOptionsRequest(BaseModel):
    """What a request may change about its run: only towards stricter values than the server's
    settings (more approval rules, lower budgets, weak answers to a person); a looser value is
    ignored (the server's stays)."""

    model_config = ConfigDict(extra="forbid")

    approve: list[str] = Field(default_factory=list, max_length=50)
    """Approval rules to add (``subtask:s2``, ``agent:NAME``, ``tier:llm``, ``tool:NAME``, ``tools:side_effects``)."""
    budget_tokens: int | None = Field(None, gt=0)
    budget_cost: float | None = Field(None, gt=0)
    budget_seconds: float | None = Field(None, gt=0)
    on_unsure: OnUnsure | None = None

    def given(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None and v != []}


class RunRequest(BaseModel):
    """``POST /v1/runs``."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1)
    """What to do, in words (at most the server's ``max_task_chars``)."""
    input: list[str] | None = None
    """The items to work on (at most the server's ``max_items``); none: the task works on its own text."""
    graph: str = Field("plan_execute", max_length=100)
    """A registered graph (``GET /v1/graphs``); graph files are not accepted over HTTP."""
    options: RunOptionsRequest = Field(default_factory=RunOptionsRequest)


class ApprovalRequest(BaseModel):
    """``POST /v1/runs/{id}/approvals``: ids from the run's ``pending``, or ``true`` for all of them."""

    model_config = ConfigDict(extra="forbid")

    approve: list[str] | bool = Field(default_factory=list)
    deny: list[str] | bool = Field(default_factory=list)


class RunState(BaseModel):
    """A run as the server knows it: ``result`` is the :class:`RunResult` (the JSON of
    ``moa runs export``) once the run ended or paused."""

    run_id: str
    status: ServedStatus
    graph: str
    result: RunResult | None = None
    error: ErrorInfo | None = None
    """Why the run failed (status ``error``)."""
    pending: list[Approval] = Field(default_factory=list)
    """What the run waits for (status ``waiting``): answer with ``POST /v1/runs/{id}/approvals``."""
    events: str
    """Where its events stream (Server-Sent Events)."""

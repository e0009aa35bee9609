"""A recorded run as ``moa runs show`` presents it (index row + checkpoint, per-subtask rows,
Mermaid), and as ``moa runs export`` gives it back (its full :class:`RunResult`).

Read-only: it opens the run index and the checkpointer, reads, and closes them; it works while
the run is still going (SQLite in WAL mode lets readers in beside the writer), and on a state
folder this process cannot write.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, Field

from moa.agent.base import Agent
from moa.errors import ErrorCode, UserError
from moa.routing.policy import routing_text
from moa.settings import Settings
from moa.usage import UsageSummary, summarize
from moa.workflow.catalog import agent_catalog
from moa.workflow.durable import RunSnapshot, checkpoint_location, load_snapshot, open_checkpointer
from moa.workflow.index import RunRecord, open_index, unknown_run
from moa.workflow.results import RunResult, run_result


class SubtaskView(BaseModel):
    """One subtask of a recorded run."""

    id: str
    agent: str
    depends_on: list[str] = Field(default_factory=list)
    status: str
    """``ok``, ``partial``, ``failed``, ``skipped``, ``denied``, ``waiting`` (for approval), or
    ``pending`` (not finished yet)."""
    items: int = 0
    cascade: list[str] | None = None
    """The cascade the plan set for this subtask (``None``: the agent's own or the run's)."""
    threshold: float | None = None
    """The escalation threshold the plan set for this subtask."""
    models: list[str] = Field(default_factory=list)
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    """Wall time of the subtask."""
    model_seconds: float = 0.0
    """Time its model calls took, added up."""
    error: str | None = None

    def routing(self) -> str:
        """The plan's cascade and threshold for this subtask in words (``""`` when it set neither)."""
        return routing_text(self.cascade, self.threshold)


class RunView(BaseModel):
    """What ``moa runs show`` prints (``--json``: this model)."""

    run: RunRecord
    subtasks: list[SubtaskView] = Field(default_factory=list)
    summary: UsageSummary
    answer: str | None = None
    planned: bool = False
    """False while the run has not made its plan yet."""

    def mermaid(self) -> str:
        """The executed DAG as a Mermaid flowchart: subtasks with their status, edges = depends_on."""
        ids = {s.id: f"n{i}" for i, s in enumerate(self.subtasks)}
        lines = ["flowchart TD"]
        for s in self.subtasks:
            detail = f"{s.status} · {s.items} items" if s.status != "pending" else "pending"
            if s.routing():
                detail += f"<br/>{s.routing()}"
            lines.append(f'    {ids[s.id]}["{s.id}: {s.agent}<br/>{detail}"]:::{s.status}')
        for s in self.subtasks:
            lines += [f"    {ids[d]} --> {ids[s.id]}" for d in s.depends_on if d in ids]
        lines += [f"    classDef {name} {style}" for name, style in _STYLES.items()]
        return "\n".join(lines) + "\n"


_STYLES = {
    "ok": "fill:#d1fae5,stroke:#059669",
    "partial": "fill:#fef3c7,stroke:#d97706",
    "failed": "fill:#fee2e2,stroke:#dc2626",
    "skipped": "fill:#e5e7eb,stroke:#6b7280",
    "denied": "fill:#fce7f3,stroke:#be185d",
    "waiting": "fill:#e0f2fe,stroke:#0284c7,stroke-dasharray:4",
    "pending": "fill:#ffffff,stroke:#9ca3af,stroke-dasharray:4",
}


def build_view(record: RunRecord, snapshot: RunSnapshot | None) -> RunView:
    snapshot = snapshot or RunSnapshot()
    rows: list[SubtaskView] = []
    for s in snapshot.plan.subtasks if snapshot.plan else []:
        usage = [u for u in snapshot.usage if u.subtask == s.id]
        row: dict[str, Any] = {
            "id": s.id,
            "agent": s.agent,
            "depends_on": s.depends_on,
            "cascade": s.cascade,
            "threshold": s.threshold,
            "status": "pending",
            "calls": len(usage),
            "prompt_tokens": sum(u.prompt_tokens for u in usage),
            "completion_tokens": sum(u.completion_tokens for u in usage),
            "model_seconds": round(sum(u.latency_s for u in usage), 3),
        }
        result = snapshot.results.get(s.id)
        if result is not None:
            first = next((i.error for i in result.items if i.error), None)
            row.update(
                status=result.status,
                items=len(result.items),
                models=result.models,
                seconds=result.seconds,
                error=result.reason or (first.message if first else None),
            )
        rows.append(SubtaskView.model_validate(row))
    return RunView(run=record, subtasks=rows, summary=summarize(snapshot.usage), answer=snapshot.answer, planned=snapshot.plan is not None)


async def _load(settings: Settings, run_id: str) -> tuple[RunRecord, RunSnapshot | None]:
    async with open_index(settings, write=False) as index:
        record = await index.get(run_id)
    if record is None:
        raise unknown_run(run_id, settings)
    async with open_checkpointer(settings, write=False) as saver:
        return record, await load_snapshot(saver, run_id)


async def load_view(settings: Settings, run_id: str) -> RunView:
    """The recorded run ``run_id`` (``UserError`` ``UNKNOWN_RUN`` when there is none)."""
    return build_view(*await _load(settings, run_id))


async def load_result(settings: Settings, run_id: str, *, agents: Iterable[Agent] | None = None) -> RunResult:  # type: ignore[type-arg]
    """The :class:`RunResult` of the recorded run ``run_id``, rebuilt from its checkpoint and its
    index row: what ``moa run`` returned when it ended (``seconds`` over all its attempts), or, for
    a run that has not ended, what finished so far (status ``interrupted``, ``waiting`` or ``stopped``).

    Args:
        agents: the custom agents the run used, to give their outputs their own types again.
    """
    record, saved = await _load(settings, run_id)
    if saved is None:
        raise UserError(
            ErrorCode.RUN_NOT_RESUMABLE,
            f"run {run_id} has no checkpoint in {checkpoint_location(settings)} (it stopped before its first step, or its checkpoints "
            "went to another checkpoint_url), so it has no result to export; `moa runs show` shows what the index knows",
        )
    state = {k: getattr(saved, k) for k in ("task", "plan", "planner", "results", "usage", "answer", "synthesizer", "reused")}
    price = settings.prices.get(settings.llm)
    ended = record.status in ("ok", "partial", "failed", "needs_human", "stopped", "waiting")
    return run_result(
        state,
        run_id=record.run_id,
        task=record.task,
        graph=record.graph,
        agents=agent_catalog(agents),
        seconds=record.seconds,
        input_items=saved.items if saved.items is not None else record.items,
        llm_price=(price.prompt, price.completion) if price else None,
        stopped=record.stopped or ("stopped" if record.status == "stopped" else None),
        resumed=record.attempts > 1,
        interrupted=not ended,
        pending=record.pending if record.status == "waiting" else None,
        errors=[record.error] if record.error is not None else (),
    )


async def list_runs(settings: Settings, limit: int = 20) -> list[RunRecord]:
    """The latest recorded runs, newest first."""
    async with open_index(settings, write=False) as index:
        return await index.list(limit)

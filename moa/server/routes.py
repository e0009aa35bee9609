"""The run API: start a run, read it, stream its events, answer its approvals, cancel it; and
what the server offers (graphs, agents)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse

from moa.server import sse
from moa.server.runs import RunManager
from moa.server.schemas import ApprovalRequest, RunRequest, RunState
from moa.server.subscribers import Gap
from moa.workflow.catalog import agent_catalog, builtin_graphs

router = APIRouter(prefix="/v1")


def manager(request: Request) -> RunManager:
    found: RunManager = request.app.state.manager
    return found


Manager = Annotated[RunManager, Depends(manager)]


@router.post("/runs", status_code=202, response_model=RunState)
async def start_run(body: RunRequest, runs: Manager, request: Request) -> JSONResponse:
    """Queue a run; its id comes back at once (202), the run goes on in the server."""
    run = runs.start(body, request.state.key)
    return JSONResponse(run.state().model_dump(mode="json"), status_code=202, headers={"Location": f"/v1/runs/{run.run_id}", "x-moa-run-id": run.run_id})


@router.get("/runs/{run_id}", response_model=RunState)
async def get_run(run_id: str, runs: Manager) -> RunState:
    """A run's status, and its result (plan, results, usage: ``moa runs export``'s JSON) once it ended or paused."""
    return (await runs.get(run_id)).state()


@router.get("/runs/{run_id}/events")
async def run_events(run_id: str, runs: Manager, last_event_id: Annotated[int, Header()] = 0) -> StreamingResponse:
    """The run's events as Server-Sent Events (``queued``, ``started``, ``planned``, ``subtask_started``,
    ``item_done``, ``escalated``, ``subtask_done``, ``approval_needed``, ``resumed``, ``finished``);
    the stream ends after ``finished``. ``Last-Event-ID`` skips the events already seen. A ``gap``
    event (``{first, last, missed}``) says events were dropped for a slow subscriber."""
    run = await runs.get(run_id)
    keepalive = runs.config.keepalive_seconds

    async def stream() -> AsyncIterator[bytes]:
        if not run.events:  # read back from the run index (not started by this server process): its state now, once
            kind = "finished" if run.final else "approval_needed" if run.status == "waiting" else "running"
            yield sse.event(_final(run.state()), kind=kind, id=1)
            return
        async for event in run.subscribe(last_event_id, keepalive):
            if event is None:
                yield sse.KEEPALIVE
            elif isinstance(event, Gap):  # no id: a reconnect with Last-Event-ID starts after the last event sent
                yield sse.event(event.data(), kind="gap")
            else:
                yield sse.event(event.data, kind=event.kind, id=event.id)

    return StreamingResponse(stream(), media_type="text/event-stream", headers=sse.HEADERS)


def _final(state: RunState) -> dict[str, Any]:
    return state.model_dump(mode="json", include={"status", "error", "result", "pending"})


@router.post("/runs/{run_id}/approvals", status_code=202, response_model=RunState)
async def answer_approvals(run_id: str, body: ApprovalRequest, runs: Manager) -> JSONResponse:
    """Answer what a waiting run waits for; the run resumes (202) from its checkpoint."""
    run = await runs.answer(run_id, body)
    return JSONResponse(run.state().model_dump(mode="json"), status_code=202)


@router.post("/runs/{run_id}/cancel", response_model=RunState)
async def cancel_run(run_id: str, runs: Manager) -> RunState:
    """Stop a queued or running run (it ends ``interrupted``; ``moa resume`` can continue it). A
    waiting run is stopped by denying what it waits for."""
    return (await runs.cancel(run_id)).state()


@router.get("/graphs")
async def graphs() -> dict[str, Any]:
    """The graphs a run may use; each is also an OpenAI model ``moa/<name>``."""
    found = [
        {"name": name, "model": f"moa/{name}", "description": (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""}
        for name, module in sorted(builtin_graphs().items())
    ]
    return {"graphs": found}


@router.get("/agents")
async def agents() -> dict[str, Any]:
    """The agents a plan may use."""
    return {"agents": [{"name": name, "description": agent.description} for name, agent in sorted(agent_catalog().items())]}

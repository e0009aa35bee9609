"""``moa mcp``: every agent and graph as a Model Context Protocol tool, through the official ``mcp``
SDK (the optional extra ``moa[mcp]``), so assistants and IDE agents that speak MCP can call moa.

* ``agent_<name>`` (e.g. ``agent_sentiment``): the agent's input model is the tool's input schema;
  one agent call, its output model's JSON is the result.
* ``graph_<name>`` (e.g. ``graph_plan_execute``): ``{"task": ..., "input": [...]}`` starts a durable
  run of that graph (recorded in the run index like ``moa run``); the result holds its run id,
  status and answer.

A failed call is a tool result with ``is_error`` set and ``[code] message`` as its text, so the
calling model can read what to do. :class:`McpTools` holds the shared run context (models loaded
once); :func:`mcp_server` wraps it in the SDK's low-level ``Server``, which the stdio transport
(:func:`serve_stdio`) and ``moa serve``'s streamable HTTP mount (:mod:`moa.server.mcp_http`) both
run. Under ``moa serve`` a graph tool's run goes through the server's worker pool (its ``runner``),
on behalf of the API key that called it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from moa.agent.base import Agent
from moa.agent.context import RunContext, new_run_id
from moa.errors import ErrorCode, MoaError, UserError
from moa.logs import get_logger
from moa.workflow.catalog import agent_catalog, builtin_graphs
from moa.workflow.driver import arun
from moa.workflow.report import to_markdown
from moa.workflow.results import RunResult

if TYPE_CHECKING:
    from mcp.server import Server
    from mcp.types import CallToolResult, Tool

log = get_logger(__name__)

AGENT_PREFIX = "agent_"
GRAPH_PREFIX = "graph_"
NOT_INSTALLED = "the MCP server needs the `mcp` package: pip install 'moa[mcp]'"


class GraphInput(BaseModel):
    """A run of a graph: the task, and the items to work on."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1)
    """What to do, in words (e.g. "classify the sentiment of each review")."""
    input: list[str] | None = None
    """The items to work on, one text each; none: the task works on its own text."""


GraphRunner = Callable[[str, GraphInput, str | None], Awaitable[RunResult]]
"""Runs a graph tool's call: ``(graph, request, key name) -> result``; raises a :class:`MoaError`."""


def require_mcp() -> None:
    """Raise ``bad_config`` saying how to install the SDK when ``mcp`` is missing."""
    try:
        import mcp.server  # noqa: F401
    except ImportError as exc:
        raise UserError(ErrorCode.BAD_CONFIG, NOT_INSTALLED) from exc


class McpTools:
    """The agents and graphs of this installation as MCP tools, run on one shared context.

    ``runner`` runs a graph tool's call (``moa serve``: in its worker pool); by default
    :func:`moa.arun` on ``context``."""

    def __init__(
        self,
        context: RunContext,
        agents: Mapping[str, Agent] | None = None,  # type: ignore[type-arg]
        graphs: Mapping[str, Any] | None = None,
        runner: GraphRunner | None = None,
    ) -> None:
        self.context = context
        self.agents = dict(agents) if agents is not None else agent_catalog()
        self.graphs = dict(graphs) if graphs is not None else dict(builtin_graphs())
        self.runner = runner or self._arun

    async def _arun(self, graph: str, request: GraphInput, key: str | None) -> RunResult:
        return await arun(request.task, input=request.input, graph=graph, context=self.context)

    def tools(self) -> list[Tool]:
        from mcp.types import Tool

        found = [
            Tool(name=f"{AGENT_PREFIX}{name}", description=agent.description, input_schema=agent.input_type.model_json_schema())
            for name, agent in sorted(self.agents.items())
        ]
        for name, module in sorted(self.graphs.items()):
            doc = (module.__doc__ or "").strip().splitlines()
            what = doc[0] if doc else f"the {name} graph"
            found.append(
                Tool(
                    name=f"{GRAPH_PREFIX}{name}",
                    description=f"Run moa's {name} graph on a task and its items: {what}",
                    input_schema=GraphInput.model_json_schema(),
                )
            )
        return found

    async def call(self, name: str, arguments: Mapping[str, Any] | None, key: str | None = None) -> CallToolResult:
        """Run the tool ``name`` (for the API key named ``key``, under ``moa serve``); every moa
        error becomes an error result naming its code."""
        args = dict(arguments or {})
        try:
            if name.startswith(AGENT_PREFIX) and name.removeprefix(AGENT_PREFIX) in self.agents:
                return await self._agent(self.agents[name.removeprefix(AGENT_PREFIX)], args)
            if name.startswith(GRAPH_PREFIX) and name.removeprefix(GRAPH_PREFIX) in self.graphs:
                return await self._graph(name.removeprefix(GRAPH_PREFIX), args, key)
            raise UserError(ErrorCode.INVALID_INPUT, f"no tool {name!r}; list the tools to see them (agent_<name>, graph_<name>)")
        except ValidationError as exc:
            where = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors()[:5])
            return _error(ErrorCode.INVALID_INPUT, f"bad arguments for {name}: {where}")
        except MoaError as exc:
            return _error(exc.code, exc.message)

    async def _agent(self, agent: Agent, args: dict[str, Any]) -> CallToolResult:  # type: ignore[type-arg]
        data = agent.input_type.model_validate(args)
        ctx = self.context.for_run(self.context.settings, new_run_id(), None)
        run = await agent.run(ctx, data)
        log.info("mcp_agent_call", agent=agent.name, ok=run.error is None and run.waiting is None)
        if run.waiting is not None:
            return _error(
                ErrorCode.AWAITING_APPROVAL,
                f"agent {agent.name} needs a person's approval ({run.waiting.rule}) and a tool call cannot wait; "
                f"use the graph_ tools (durable runs) or remove the approval rule",
            )
        if run.error is not None:
            return _error(run.error.code, run.error.message)
        output = run.output.model_dump(mode="json") if run.output is not None else {}
        return _result(json.dumps(output, ensure_ascii=False), output)

    async def _graph(self, graph: str, args: dict[str, Any], key: str | None) -> CallToolResult:
        request = GraphInput.model_validate(args)
        result = await self.runner(graph, request, key)
        log.info("mcp_graph_run", graph=graph, run_id=result.run_id, status=result.status)
        structured: dict[str, Any] = {"run_id": result.run_id, "status": result.status, "answer": result.answer}
        if result.status == "failed":
            first = result.errors[0] if result.errors else None
            why = f"[{first.code}] {first.message}" if first else "no subtask succeeded"
            return _error(first.code if first else ErrorCode.SUBTASK_FAILED, f"run {result.run_id} failed: {why}")
        if result.status == "waiting":
            waits = "; ".join(f"{a.id}: {a.reason}" for a in result.pending)
            text = f"run {result.run_id} waits for a person's approval ({waits}); answer it with `moa resume {result.run_id} --approve all` (or --deny)"
            structured["pending"] = [a.id for a in result.pending]
            return _result(text, structured)
        return _result(result.answer or to_markdown(result), structured)


def _result(text: str, structured: dict[str, Any]) -> CallToolResult:
    from mcp.types import CallToolResult, TextContent

    return CallToolResult(content=[TextContent(text=text)], structured_content=structured)


def _error(code: str, message: str) -> CallToolResult:
    from mcp.types import CallToolResult, TextContent

    return CallToolResult(content=[TextContent(text=f"[{code}] {message}")], structured_content={"error": {"code": str(code), "message": message}}, is_error=True)


def mcp_server(tools: McpTools) -> Server:
    """The SDK's low-level server answering ``tools/list`` and ``tools/call`` with ``tools``."""
    require_mcp()
    from mcp.server import Server, ServerRequestContext
    from mcp.types import CallToolRequestParams, CallToolResult, ListToolsResult, PaginatedRequestParams

    import moa

    async def list_tools(_: ServerRequestContext[Any], __: PaginatedRequestParams | None) -> ListToolsResult:
        return ListToolsResult(tools=tools.tools())

    async def call_tool(ctx: ServerRequestContext[Any], params: CallToolRequestParams) -> CallToolResult:
        request = ctx.request  # over HTTP: the request `moa serve` authenticated (its key's name on its state)
        key = getattr(getattr(request, "state", None), "key", None)
        return await tools.call(params.name, params.arguments, key)

    return Server(
        "moa",
        version=moa.__version__,
        instructions="moa's agents (agent_<name>: one call) and graphs (graph_<name>: a durable run of a task over items).",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


async def serve_stdio(tools: McpTools) -> None:
    """Serve ``tools`` over stdin/stdout until the client closes the connection."""
    require_mcp()
    from mcp.server.stdio import stdio_server

    server = mcp_server(tools)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())

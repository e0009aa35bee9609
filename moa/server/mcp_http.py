"""MCP over streamable HTTP under ``moa serve``: ``/mcp`` speaks the Model Context Protocol through
the official SDK's ``StreamableHTTPSessionManager``, behind the same API key check and request
rate as every other route (401 ``unauthorized`` JSON without a valid key).

* The tools are ``moa mcp``'s (:class:`~moa.server.mcp.McpTools`): ``agent_<name>`` and ``graph_<name>``.
* A graph tool's run goes through the server's worker pool like ``POST /v1/runs``: queued,
  journaled until it settles (a restart resumes it), counted against the calling key's limits,
  readable at ``GET /v1/runs/{id}``. The tool call answers once the run ended or waits.
* Stateless: each request stands alone (no session to keep or to take over with another key);
  moa's tools never call back to the client, so nothing needs a session.
* With a loopback ``host``, requests must name a loopback ``Host`` (the SDK's DNS-rebinding guard).

Without the ``mcp`` package (``pip install 'moa[mcp]'``) ``/mcp`` answers 501 ``bad_config`` saying so.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from moa.agent.context import RunContext
from moa.errors import ErrorCode, MoaError, RunError, UserError
from moa.server import errors
from moa.server.auth import Authenticator
from moa.server.config import ServerConfig
from moa.server.mcp import NOT_INSTALLED, GraphInput, GraphRunner, McpTools, mcp_server
from moa.server.runs import RunManager
from moa.server.schemas import RunRequest
from moa.workflow.results import RunResult

if TYPE_CHECKING:
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

PATH = "/mcp"
LOOPBACK = ("127.0.0.1", "localhost", "::1")

Lifespan = Callable[[], AbstractAsyncContextManager[None]]


class McpEndpoint:
    """The ASGI application at ``/mcp``: the API key check (and the key's rate), then the SDK's
    session manager; ``sessions=None`` (no ``mcp`` package) answers 501."""

    def __init__(self, authenticate: Authenticator, sessions: StreamableHTTPSessionManager | None) -> None:
        self.authenticate = authenticate
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            self.authenticate(Request(scope, receive))  # the key's name goes on the request's state, which the tools read
        except MoaError as exc:
            await errors.refusal(exc)(scope, receive, send)
            return
        if self.sessions is None:
            refused = errors.response(UserError(ErrorCode.BAD_CONFIG, f"{NOT_INSTALLED} on the server to serve {PATH}"))
            refused.status_code = 501
            await refused(scope, receive, send)
            return
        await self.sessions.handle_request(scope, receive, send)


def pool_runner(runs: RunManager) -> GraphRunner:
    """Graph tool calls run as server runs (the worker pool, the journal, the key's limits)."""

    async def run(graph: str, request: GraphInput, key: str | None) -> RunResult:
        served = runs.start(RunRequest(task=request.task, input=request.input, graph=graph), key)
        await served.settled.wait()
        if served.status == "error" and served.error is not None:
            raise served.error.error()
        if served.result is None:
            raise RunError(ErrorCode.INTERNAL_ERROR, f"run {served.run_id} ended ({served.status}) without a result; GET /v1/runs/{served.run_id} shows it")
        return served.result

    return run


def mcp_endpoint(context: RunContext, runs: RunManager, authenticate: Authenticator, config: ServerConfig) -> tuple[McpEndpoint, Lifespan]:
    """The ``/mcp`` application and what the server's lifespan runs around it (the SDK's session
    manager; nothing without the ``mcp`` package)."""
    try:
        from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
        from mcp.server.transport_security import TransportSecuritySettings
    except ImportError:
        return McpEndpoint(authenticate, None), nullcontext
    security = None
    if config.host in LOOPBACK:
        security = TransportSecuritySettings(
            allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost"],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*", *config.cors_origins],
        )
    sessions = StreamableHTTPSessionManager(
        mcp_server(McpTools(context, runner=pool_runner(runs))), stateless=True, security_settings=security, max_request_body_size=config.max_body_bytes
    )
    return McpEndpoint(authenticate, sessions), sessions.run

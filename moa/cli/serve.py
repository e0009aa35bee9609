"""``moa serve`` (the HTTP server, :mod:`moa.server`), ``moa keys`` (its API keys) and ``moa mcp``
(agents and graphs as MCP tools over stdio, :mod:`moa.server.mcp`; over HTTP ``moa serve`` has them at ``/mcp``)."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from moa.cli.output import err, fail, out
from moa.errors import ErrorCode, MoaError, UserError
from moa.logs import configure_logging
from moa.server.config import ServerConfig
from moa.server.keys import ENV, Keyring, create_key, keys_path, list_keys, remove_key
from moa.settings import load_settings

keys_app = typer.Typer(help="API keys of `moa serve` (only their sha256 is stored).", no_args_is_help=True)
USER_TEXT = ("task", "item", "items", "prompt", "text", "answer")
"""Log fields that hold what users wrote: redacted in the server's logs unless --log-prompts."""


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(mcp)
    app.add_typer(keys_app, name="keys")


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (put a TLS proxy in front to serve other hosts).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Runs worked on at once; the others wait in the queue.")] = 4,
    max_queued: Annotated[int, typer.Option(help="Most runs waiting for a worker (429 beyond).")] = 1000,
    per_key_runs: Annotated[Optional[int], typer.Option(help="Most runs one API key may have queued or running (429 beyond).")] = None,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body (413 beyond).")] = 1_000_000,
    rate: Annotated[Optional[float], typer.Option(help="Requests per second one API key may send (429 with Retry-After beyond).")] = None,
    burst: Annotated[int, typer.Option(help="Requests a key may send at once before --rate applies.")] = 20,
    cors_origin: Annotated[Optional[list[str]], typer.Option("--cors-origin", help="A browser origin allowed to call the server (repeatable; none by default).")] = None,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Accept requests without an API key (only on a trusted loopback).")] = False,
    slm: Annotated[Optional[str], typer.Option(help="Model spec of the slm tier.")] = None,
    llm: Annotated[Optional[str], typer.Option(help="Model spec of the llm tier.")] = None,
    log_json: Annotated[bool, typer.Option("--log-json", help="Log JSON lines to stderr.")] = False,
    log_prompts: Annotated[bool, typer.Option("--log-prompts", help="Keep tasks and items in the logs (redacted by default).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log info-level events.")] = False,
) -> None:
    """Serve moa over HTTP: the run API, an OpenAI-compatible /v1/chat/completions, MCP tools at /mcp (docs/server.md)."""
    import uvicorn

    from moa.server.app import create_app

    try:
        settings = load_settings(slm=slm, llm=llm)
        config = ServerConfig(
            host=host, port=port, max_runs=workers, max_queued=max_queued, per_key_runs=per_key_runs, max_body_bytes=max_body_bytes,
            rate_per_key=rate, rate_burst=burst,
            auth=not no_auth, cors_origins=cors_origin or [],
        )  # fmt: skip
        keys = Keyring.load(settings) if config.auth else None
        if keys is not None and not len(keys):
            raise UserError(
                ErrorCode.BAD_CONFIG,
                f"no API keys: make one with `moa keys create NAME` (stored in {keys_path(settings)}) or set {ENV} to their sha256; "
                "--no-auth serves without keys (only on a trusted loopback)",
            )
        app = create_app(settings, config=config, keys=keys)
    except MoaError as exc:
        fail(exc, False)
    configure_logging(json=log_json, level="info" if verbose else "warning", redact=() if log_prompts else USER_TEXT)
    where = f"http://{host}:{port}"
    err.print(f"moa serving on {where} (OpenAI base_url {where}/v1, MCP {where}/mcp; {'no API key needed' if no_auth else f'{len(keys or [])} API key(s)'})", highlight=False)
    uvicorn.run(app, host=host, port=port, log_level="info" if verbose else "warning", access_log=verbose, server_header=False)


def mcp(
    slm: Annotated[Optional[str], typer.Option(help="Model spec of the slm tier.")] = None,
    llm: Annotated[Optional[str], typer.Option(help="Model spec of the llm tier.")] = None,
    log_json: Annotated[bool, typer.Option("--log-json", help="Log JSON lines to stderr.")] = False,
    log_prompts: Annotated[bool, typer.Option("--log-prompts", help="Keep tasks and items in the logs (redacted by default).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log info-level events.")] = False,
) -> None:
    """Serve every agent (agent_<name>) and graph (graph_<name>) as a Model Context Protocol tool
    over stdin/stdout, for assistants and IDE agents (needs `pip install 'moa[mcp]'`; docs/server.md)."""
    import asyncio

    from moa.agent.context import RunContext
    from moa.models.registry import Models
    from moa.server.mcp import McpTools, require_mcp, serve_stdio

    try:
        require_mcp()
        settings = load_settings(slm=slm, llm=llm)
    except MoaError as exc:
        fail(exc, False)
    configure_logging(json=log_json, level="info" if verbose else "warning", redact=() if log_prompts else USER_TEXT)

    async def main() -> None:
        context = RunContext.create(settings, models=Models(settings))
        try:
            await serve_stdio(McpTools(context))
        finally:
            await context.aclose()

    asyncio.run(main())


@keys_app.command("create")
def keys_create(name: Annotated[str, typer.Argument(help="A name for the key (who uses it).")]) -> None:
    """Make an API key; it is printed once, only its sha256 is stored."""
    try:
        key, record = create_key(load_settings(), name)
    except MoaError as exc:
        fail(exc, False)
    out.print(key, highlight=False, markup=False)
    err.print(f"key {escape(name)} created; it is shown only now (stored: its sha256 {record.sha256})", highlight=False)


@keys_app.command("list")
def keys_list() -> None:
    """The stored keys (names and hashes, never the keys)."""
    try:
        keys = list_keys(load_settings())
    except MoaError as exc:
        fail(exc, False)
    table = Table(title="API keys")
    for col in ("name", "created", "sha256"):
        table.add_column(col, no_wrap=True)
    for k in keys:
        table.add_row(k.name, time.strftime("%Y-%m-%d %H:%M", time.localtime(k.created)), k.sha256[:16] + "…")
    out.print(table)


@keys_app.command("rm")
def keys_rm(name: Annotated[str, typer.Argument(help="The key's name.")]) -> None:
    """Remove a key (requests with it are refused from the server's next start)."""
    try:
        removed = remove_key(load_settings(), name)
    except MoaError as exc:
        fail(exc, False)
    if not removed:
        fail(UserError(ErrorCode.INVALID_INPUT, f"no key named {name!r}; `moa keys list` shows them"), False)
    out.print(f"removed key {escape(name)}", highlight=False)

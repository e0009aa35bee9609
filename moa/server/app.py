"""The FastAPI application of ``moa serve``: :func:`create_app` wires the run API
(:mod:`moa.server.routes`), the OpenAI-compatible routes (:mod:`moa.server.chat`), health and
readiness, MCP over streamable HTTP at ``/mcp`` (:mod:`moa.server.mcp_http`), API keys, the body
limit, CORS (off unless origins are given) and JSON errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.routing import Route

from moa.agent.context import RunContext
from moa.errors import ErrorCode, MoaError
from moa.models.base import ModelBackend
from moa.models.registry import Models
from moa.server import chat, errors, routes
from moa.server.auth import Authenticator
from moa.server.config import ServerConfig
from moa.server.keys import Keyring
from moa.server.limits import BodyLimit
from moa.server.mcp_http import PATH as MCP_PATH
from moa.server.mcp_http import mcp_endpoint
from moa.server.rate import RateLimiter
from moa.server.runs import RunManager
from moa.settings import Settings, Tier, load_settings

TIERS: tuple[Tier, ...] = ("slm", "llm")


def create_app(
    settings: Settings | None = None,
    *,
    config: ServerConfig | None = None,
    keys: Keyring | None = None,
    slm: ModelBackend | None = None,
    llm: ModelBackend | None = None,
    context: RunContext | None = None,
) -> FastAPI:
    """The server application.

    Args:
        config: listening, pool and limits (default :class:`ServerConfig`).
        keys: the API keys it accepts (default: ``state_dir/api_keys.json`` and ``MOA_API_KEYS``);
            ignored when ``config.auth`` is false.
        slm, llm: backends for the tiers instead of the configured specs (e.g. fakes in tests).
        context: a run context to share between runs (its models stay loaded); made from
            ``settings`` when not given, and closed when the application stops.
    """
    settings = settings or load_settings()
    config = config or ServerConfig()
    keyring = (keys if keys is not None else Keyring.load(settings)) if config.auth else None
    own = context is None
    shared = context or RunContext.create(settings, models=Models(settings, slm=slm, llm=llm))
    runs = RunManager(settings, shared, config)
    limiter = RateLimiter(config.rate_per_key, config.rate_burst) if config.rate_per_key is not None else None
    authenticate = Authenticator(keyring, limiter)
    mcp, mcp_sessions = mcp_endpoint(shared, runs, authenticate, config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with mcp_sessions():  # the MCP SDK's session manager, for /mcp
            await runs.recover()  # the runs a server that died had accepted: resumed, none disappears
            yield
        await runs.aclose()
        if own:
            await shared.aclose()

    app = FastAPI(title="moa", summary="Hybrid LLM + small-model agents over HTTP", lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)
    app.state.manager = runs
    errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type", "Last-Event-ID"]
        )
    auth = [Depends(authenticate)]
    app.include_router(_health())
    app.include_router(_service(app, runs), dependencies=auth, responses=errors.ERROR_RESPONSES)
    app.include_router(routes.router, dependencies=auth, responses=errors.ERROR_RESPONSES)
    app.include_router(chat.router, dependencies=auth, responses=errors.ERROR_RESPONSES)
    app.router.routes.append(Route(MCP_PATH, mcp, include_in_schema=False))  # an ASGI app (any method); it checks the key itself
    return app


def _health() -> APIRouter:
    router = APIRouter()

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process answers (no key needed)."""
        return {"status": "ok"}

    return router


def _service(app: FastAPI, runs: RunManager) -> APIRouter:
    router = APIRouter()

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        """Whether each tier's backend can be reached (``backend.check()``); 503 if one cannot."""
        tiers: dict[str, Any] = {}
        for tier in TIERS:
            try:
                backend = runs.context.models.tier(tier)
                tiers[tier] = {"ok": True, "model": await asyncio.wait_for(backend.check(), runs.settings.timeout)}
            except MoaError as exc:
                tiers[tier] = {"ok": False, "code": str(exc.code), "message": exc.message}
            except TimeoutError:
                tiers[tier] = {"ok": False, "code": str(ErrorCode.MODEL_TIMEOUT), "message": f"the check took more than {runs.settings.timeout:g}s"}
        ready = all(t["ok"] for t in tiers.values())
        return JSONResponse({"status": "ready" if ready else "unavailable", "tiers": tiers, "runs": runs.counts()}, status_code=200 if ready else 503)

    @router.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> dict[str, Any]:
        """The OpenAPI schema of these routes."""
        return app.openapi()

    return router

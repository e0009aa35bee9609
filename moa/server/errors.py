"""Every error the server answers is JSON ``{"error": {"code", "message", "type"}}`` (OpenAI's
shape too, so OpenAI clients raise it as their own ``APIError``), with moa's :class:`ErrorCode`
and the HTTP status :func:`status_of` gives it. Nothing of the request (prompts, keys) is echoed
back or logged."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from moa.errors import ErrorCode, MoaError, RunError, UserError
from moa.logs import get_logger
from moa.server.rate import RateLimited

log = get_logger(__name__)

STATUS: dict[ErrorCode, int] = {
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.UNKNOWN_RUN: 404,
    ErrorCode.UNKNOWN_GRAPH: 404,
    ErrorCode.UNKNOWN_AGENT: 404,
    ErrorCode.UNKNOWN_ROUTE: 404,
    ErrorCode.RUN_ACTIVE: 409,
    ErrorCode.RUN_FINISHED: 409,
    ErrorCode.NOT_WAITING: 409,
    ErrorCode.RUN_EXISTS: 409,
    ErrorCode.RUN_NOT_RESUMABLE: 409,
    ErrorCode.RESUME_LOOSENS: 409,
    ErrorCode.REQUEST_TOO_LARGE: 413,
    ErrorCode.TOO_MANY_RUNS: 429,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.MODEL_UNREACHABLE: 502,
    ErrorCode.MODEL_TIMEOUT: 504,
    ErrorCode.MODEL_ERROR: 502,
    ErrorCode.STATE_LOCKED: 503,
    ErrorCode.STATE_UNAVAILABLE: 503,
    ErrorCode.STATE_CORRUPT: 503,
}


class ErrorDetail(BaseModel):
    """What went wrong and what to do."""

    code: str
    """moa's :class:`~moa.errors.ErrorCode` (e.g. ``unauthorized``, ``unknown_run``, ``too_many_runs``)."""
    message: str
    """What went wrong, and what to do about it."""
    type: str
    """The moa exception class (``UserError``, ``NotFound``, ``RunError``...)."""
    details: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    """Every error response: ``{"error": {...}}`` (OpenAI's shape)."""

    error: ErrorDetail


_MEANING = {
    400: "The body is not JSON (invalid_input).",
    401: "No valid API key (unauthorized).",
    404: "Unknown run, graph, model or route.",
    409: "The run is not in a state for this (not_waiting, run_finished, run_active).",
    413: "The body is over the server's limit (request_too_large).",
    422: "The request breaks the schema or a limit; the message names the field.",
    429: "Too many runs queued or running, or too many requests for this key (Retry-After).",
    500: "A bug in moa or a plugin (internal_error); the server goes on.",
    502: "A model backend failed (chat completions).",
    503: "The run state or a backend is unavailable.",
    504: "A model call timed out (chat completions).",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {status: {"model": ErrorBody, "description": text} for status, text in _MEANING.items()}
"""The error responses of every route that needs a key, for the OpenAPI schema."""


def status_of(error: MoaError) -> int:
    """The HTTP status of a moa error: its code's (``STATUS``), else 422 for a user's mistake and
    500 for a run error."""
    return STATUS.get(error.code, 422 if isinstance(error, UserError) else 500)


def body(code: ErrorCode, message: str, type_: str = "UserError", **details: Any) -> dict[str, Any]:
    error: dict[str, Any] = {"code": str(code), "message": message, "type": type_}
    if details:
        error["details"] = details
    return {"error": error}


def response(error: MoaError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body(error.code, error.message, type(error).__name__), status_code=status_of(error), headers=headers)


def _problems(exc: RequestValidationError) -> tuple[bool, str]:
    """Whether the body is not JSON at all, and the problems in words (no input values echoed)."""
    problems, malformed = [], False
    for e in exc.errors():
        if e.get("type") == "json_invalid":
            malformed = True
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        problems.append(f"{where}: {e.get('msg', 'invalid')}")
    return malformed, "; ".join(problems[:10])


def refusal(exc: MoaError) -> JSONResponse:
    """The answer to a request refused with ``exc``, with the headers its code calls for
    (``WWW-Authenticate`` for a 401, ``Retry-After`` for a rate limit)."""
    headers = {"WWW-Authenticate": "Bearer"} if exc.code == ErrorCode.UNAUTHORIZED else None
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(exc.retry_after)}
    return response(exc, headers)


async def _moa_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MoaError)
    if isinstance(exc, RunError) or exc.code == ErrorCode.INTERNAL_ERROR:
        log.warning("request_failed", path=request.url.path, code=str(exc.code))
    return refusal(exc)


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    malformed, problems = _problems(exc)
    if malformed:
        message = f"the request body is not valid JSON ({problems}); send a JSON object with Content-Type: application/json"
        return JSONResponse(body(ErrorCode.INVALID_INPUT, message), status_code=400)
    message = f"the request does not match the schema ({problems}); see GET /openapi.json or docs/server.md"
    return JSONResponse(body(ErrorCode.INVALID_INPUT, message), status_code=422)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error = body(ErrorCode.UNKNOWN_ROUTE, f"no route {request.url.path}; GET /openapi.json lists the routes")
    elif exc.status_code == 405:
        error = body(ErrorCode.UNKNOWN_ROUTE, f"{request.method} is not allowed on {request.url.path}; GET /openapi.json lists the routes")
    elif exc.status_code == 413:
        error = body(ErrorCode.REQUEST_TOO_LARGE, str(exc.detail))
    else:
        error = body(ErrorCode.INVALID_INPUT, str(exc.detail))
    return JSONResponse(error, status_code=exc.status_code, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("request_crashed", path=request.url.path, error=type(exc).__name__)
    message = f"the server failed on this request ({type(exc).__name__}); it is a bug in moa or a plugin: report it with the server's log"
    return JSONResponse(body(ErrorCode.INTERNAL_ERROR, message, "RunError"), status_code=500)


def install(app: FastAPI) -> None:
    """Answer every error in the JSON shape above."""
    app.add_exception_handler(MoaError, _moa_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)

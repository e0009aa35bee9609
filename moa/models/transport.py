"""Sending a model request again when its connection broke before the server answered.

HTTP clients keep idle connections open and reuse them. A server closes an idle connection once
its keep-alive timeout passes (uvicorn and llama.cpp's server: 5 s, the same as httpx's own
keep-alive expiry). A request sent on a connection just as the server closes it fails although
the server is up: ``ReadError`` (connection reset), ``WriteError`` or ``RemoteProtocolError``
("Server disconnected without sending a response"). The server never answered that request, so
sending it again on a fresh connection is safe and almost always succeeds.

What is sent again (:func:`broke_before_answer`): a request that failed with one of those three
errors (from ``httpx`` or ``httpx2``) before any response arrived. The backends install
:func:`mark_answered` as an httpx response hook, so a request whose status line arrived is
known. Never sent again:

- a refused connection or an unknown host: nothing listens there, so fail fast;
- a timeout: ``timeout`` already bounds the call;
- any HTTP status (429 and 5xx included);
- a connection that broke while the body of an answer was arriving: the server already did the
  work, and sending the request again could cost twice.

:func:`send` makes the attempts: at most ``retries`` re-sends, each given what is left of the
call's ``timeout`` (the setting still bounds one model call), each logged as a
``model_request_resent`` warning and counted in :class:`Attempts`, which the backends report as
``Generation.retries``.

An answer that arrived but cannot be used is never sent again either: :func:`read_body` reads a
successful answer's body into the pydantic model of the reply a backend expects and raises
:class:`UnusableBody` when it is not JSON, or not that reply; each backend's one translation point
turns that into ``model_error``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from moa.logs import get_logger

__all__ = [
    "ANSWERED",
    "Attempts",
    "UnusableBody",
    "broke_before_answer",
    "broken_cause",
    "mark_answered",
    "read_body",
    "root_cause",
    "send",
]

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

log = get_logger(__name__)

ANSWERED: Final = "moa.answered"
"""Key that :func:`mark_answered` sets in ``request.extensions`` once a response has arrived."""


def _broken_types() -> tuple[type[Exception], ...]:
    found: list[type[Exception]] = [httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError]
    try:  # the openai client (3.x) runs on httpx2; the ollama client on httpx
        import httpx2
    except ImportError:
        return tuple(found)
    return (*found, httpx2.ReadError, httpx2.WriteError, httpx2.RemoteProtocolError)


_BROKEN: Final = _broken_types()
"""Errors of a connection that was open and broke (not: refused, timed out)."""


class _Response(Protocol):
    @property
    def request(self) -> Any: ...


@dataclass
class Attempts:
    """How many requests of one model call were sent again (reported as ``Generation.retries``)."""

    retries: int = 0


async def mark_answered(response: _Response) -> None:
    """httpx response hook: the server answered this request (status line and headers arrived)."""
    response.request.extensions[ANSWERED] = True


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the errors behind it, outermost first (suppressed contexts too: httpcore raises
    its ``ReadError`` ``from None`` over the ``ConnectionResetError`` that says what happened)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def broken_cause(exc: BaseException) -> BaseException | None:
    """The broken-connection error (read, write, remote protocol) behind ``exc``, if any."""
    return next((e for e in _chain(exc) if isinstance(e, _BROKEN)), None)


def _request_of(exc: BaseException) -> Any:
    for error in _chain(exc):
        try:
            request = getattr(error, "request", None)
        except RuntimeError:  # httpx: "The .request property has not been set."
            continue
        if request is not None:
            return request
    return None


def broke_before_answer(exc: BaseException) -> bool:
    """True when ``exc`` is a connection that broke before any response to the request arrived."""
    if broken_cause(exc) is None:
        return False
    request = _request_of(exc)
    extensions = getattr(request, "extensions", None) or {}
    return not extensions.get(ANSWERED, False)


def root_cause(exc: BaseException) -> str:
    """The innermost cause with a message, e.g. 'Connection refused' or 'Connection reset by peer'."""
    text = type(exc).__name__
    for error in _chain(exc):
        text = str(error) or text
    return text


async def send(
    attempt: Callable[[float], Awaitable[T]],
    *,
    retries: int,
    timeout: float,
    attempts: Attempts,
    **log_fields: object,
) -> T:
    """``await attempt(seconds_left)``, again up to ``retries`` times while the connection broke
    before an answer (see the module docstring) and time is left.

    The first attempt gets ``timeout``; a re-send gets what is left of it. Every other error, and
    the last one, propagates unchanged for the backend to turn into a :class:`moa.errors.RunError`.
    """
    deadline = time.monotonic() + timeout
    left = timeout
    resent = 0
    while True:
        try:
            return await attempt(left)
        except Exception as exc:
            left = deadline - time.monotonic()
            if resent >= retries or left <= 0 or not broke_before_answer(exc):
                raise
            resent += 1
            attempts.retries += 1
            broken = broken_cause(exc)
            log.warning(
                "model_request_resent",
                error=f"{type(broken).__name__}: {root_cause(exc)}",
                retry=resent,
                retries=retries,
                seconds_left=round(left, 3),
                **log_fields,
            )


class _Body(Protocol):
    """What :func:`read_body` needs of a response (``httpx.Response`` and ``httpx2.Response`` have it)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Any: ...

    @property
    def content(self) -> bytes: ...


class UnusableBody(Exception):
    """A successful answer whose body is not JSON, or is JSON but not the reply that was expected.

    Not a :class:`moa.errors.MoaError`: the backend's translation point turns it into one (``model_error``)
    with its own words and hints.
    """

    def __init__(self, *, status: int, content_type: str, text: str, expected: str, problems: str | None) -> None:
        self.status = status
        self.content_type = content_type
        self.text = text
        """The body as text (cut at 2,000 characters)."""
        self.expected = expected
        """What the body should have been, in words ("an OpenAI chat completion")."""
        self.problems = problems
        """What is wrong with the JSON, in a few words; ``None`` when the body is not JSON at all."""
        super().__init__(self.summary)

    @property
    def summary(self) -> str:
        """``HTTP 200 with a body that is not JSON (text/html): '<html>...'`` or ``... with JSON that is not ...``."""
        if self.problems is None:
            what = f"a body that is not JSON ({self.content_type or 'no content type'})"
        else:
            what = f"JSON that is not {self.expected} ({self.problems})"
        return f"HTTP {self.status} with {what}: {self.text[:200]!r}"

    def details(self) -> dict[str, Any]:
        found: dict[str, Any] = {"status": self.status, "body": self.text}
        if self.problems is not None:
            found["problems"] = self.problems
        return found


def read_body(response: _Body, reply: type[M], expected: str) -> M:
    """``response``'s body as ``reply``; :class:`UnusableBody` when it is not JSON or not that reply."""
    try:
        return reply.model_validate_json(response.content)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        not_json = bool(errors) and errors[0]["type"] == "json_invalid"
        problems = None if not_json else "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in errors[:3])
        raise UnusableBody(
            status=response.status_code,
            content_type=str(response.headers.get("content-type", "")),
            text=response.content[:2000].decode("utf-8", "replace"),
            expected=expected,
            problems=problems,
        ) from exc

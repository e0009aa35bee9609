"""Logging: moa's loggers, and the structlog configuration that only entry points (CLI, server) call.

A library prints nothing unless asked. :func:`get_logger` gives moa's modules a logger that is
structlog's once the application has configured structlog (``configure_logging`` in the CLI, or
the application's own ``structlog.configure``); until then it is quiet: warnings and errors go to
stderr as one line each, nothing below warning is emitted, and nothing ever goes to stdout.
"""

from __future__ import annotations

import functools
import logging
import sys
import traceback
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Any

import structlog


def configure_logging(*, json: bool = False, level: str = "warning", redact: Collection[str] = ()) -> None:
    """Console-pretty logs on a TTY, JSON lines with ``json=True``; always to stderr. The values
    of the fields named in ``redact`` (e.g. ``task``, ``item``: what users wrote) are replaced by
    their length."""
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        *([_redactor(frozenset(redact))] if redact else []),
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso"),
    ]
    renderer: structlog.typing.Processor
    if json:
        renderer = structlog.processors.JSONRenderer()
        processors.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def _redactor(fields: frozenset[str]) -> structlog.typing.Processor:
    def redact(_: Any, __: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
        for name in fields & event.keys():
            event[name] = f"[redacted: {len(str(event[name]))} chars]"
        return event

    return redact


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "msg": logging.INFO, "warning": logging.WARNING, "warn": logging.WARNING}
_LEVELS |= {"error": logging.ERROR, "exception": logging.ERROR, "critical": logging.CRITICAL, "fatal": logging.CRITICAL}


def _quiet(level: int, method: str, name: str, event: str | None = None, *args: Any, **values: Any) -> None:
    """Unconfigured: warnings and errors as one line on stderr; nothing below."""
    if level < logging.WARNING:
        return
    fields = " ".join(f"{k}={v!r}" for k, v in values.items() if k != "exc_info")
    sys.stderr.write(f"[{method}] {name}: {event} {fields}".rstrip() + "\n")
    if method == "exception" or values.get("exc_info"):
        sys.stderr.write(traceback.format_exc())


class _Logger:
    """A module's logger (see the module docstring)."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if structlog.is_configured() or method not in _LEVELS:
            return getattr(structlog.get_logger(self._name), method)  # type: ignore[no-any-return]
        return functools.partial(_quiet, _LEVELS[method], method, self._name)


def get_logger(name: str) -> Any:
    """The logger of a moa module (``log = get_logger(__name__)``)."""
    return _Logger(name)


def enabled(level: int) -> bool:
    """Whether moa's logs at ``level`` are emitted (``True`` when it cannot tell).

    Hot paths ask once per run and skip building log calls nobody sees (each call through
    structlog's lazy logger binds a new logger: ~5 µs)."""
    if not structlog.is_configured():
        return level >= logging.WARNING
    check = getattr(structlog.get_logger().bind(), "is_enabled_for", None)
    return bool(check(level)) if callable(check) else True


@contextmanager
def log_context(**values: Any) -> Iterator[None]:
    """Bind ``values`` to the logs of this context (``run_id``, ``subtask``) and restore the
    previous values after; structlog's ``bound_contextvars`` without its scan of every context
    variable (a third of a subtask's bookkeeping in the overhead benchmark)."""
    tokens = structlog.contextvars.bind_contextvars(**values)
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)

"""The server's own configuration (``moa serve`` flags): where it listens, how many runs it works
on at once, and its request limits. What a run does comes from :class:`moa.Settings` as usual."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ServerConfig(BaseModel):
    """How ``moa serve`` runs. Every limit answers with a JSON error that says what to do."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    """Address to listen on (loopback by default: put a TLS proxy in front to serve others)."""
    port: int = Field(8000, ge=0, le=65535)
    max_runs: int = Field(4, gt=0)
    """Runs worked on at once (the worker pool); the others wait in the queue."""
    max_queued: int = Field(1000, gt=0)
    """Most runs waiting for a worker; beyond it a new run gets 429 ``too_many_runs``."""
    per_key_runs: int | None = Field(None, gt=0)
    """Most runs one API key may have queued or running at once (429 beyond it); ``None``: no limit."""
    rate_per_key: float | None = Field(None, gt=0)
    """Requests per second one API key may send (a token bucket; 429 ``rate_limited`` with
    ``Retry-After`` beyond it); ``None``: no limit."""
    rate_burst: int = Field(20, ge=1)
    """Requests a key may send at once before its rate applies (the bucket's size)."""
    max_body_bytes: int = Field(1_000_000, gt=0)
    """Largest request body (413 ``request_too_large`` beyond it)."""
    auth: bool = True
    """Require ``Authorization: Bearer <key>`` on every route but ``/healthz``."""
    cors_origins: list[str] = Field(default_factory=list)
    """Browser origins allowed to call the server (CORS); none by default."""
    keep_finished: int = Field(1000, gt=0)
    """Finished runs kept in memory for fast reads; older ones are read back from the run index."""
    event_history: int = Field(1000, gt=0)
    """Events of a run kept for late subscribers of ``/v1/runs/{id}/events`` (the latest ones)."""
    subscriber_buffer: int = Field(256, gt=0)
    """Events one subscriber of ``/v1/runs/{id}/events`` may have waiting to be sent; when a slow
    one's buffer is full, its oldest waiting event is dropped and it gets a ``gap`` event."""
    keepalive_seconds: float = Field(15.0, gt=0)
    """Seconds between comment lines on an idle event stream (keeps proxies from closing it)."""

"""API-key authentication: a FastAPI dependency that accepts ``Authorization: Bearer <key>``
for a key of the server's :class:`~moa.server.keys.Keyring` and puts the key's name on the
request (``request.state.key``); anything else is 401 ``unauthorized``. Then the key's request
rate (:mod:`moa.server.rate`), when the server has one."""

from __future__ import annotations

from fastapi import Request

from moa.errors import ErrorCode, UserError
from moa.server.keys import Keyring
from moa.server.rate import RateLimiter


class Authenticator:
    """The dependency; ``keys=None`` turns authentication off (``moa serve --no-auth``). With a
    ``limiter``, each accepted key's requests are counted against its rate (429 beyond it)."""

    def __init__(self, keys: Keyring | None, limiter: RateLimiter | None = None) -> None:
        self.keys = keys
        self.limiter = limiter

    def __call__(self, request: Request) -> str | None:
        name = self._identify(request)
        if self.limiter is not None:
            self.limiter.take(name)
        return name

    def _identify(self, request: Request) -> str | None:
        if self.keys is None:
            request.state.key = None
            return None
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise UserError(ErrorCode.UNAUTHORIZED, "this server needs an API key: send the header `Authorization: Bearer <key>` (`moa keys create` makes one)")
        key = self.keys.find(presented.strip())
        if key is None:
            raise UserError(ErrorCode.UNAUTHORIZED, "the API key is not valid here; check it, or make a new one with `moa keys create` on the server")
        request.state.key = key.name
        return key.name

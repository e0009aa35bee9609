"""Which API key goes to which server: a key is sent only to the base URL it was configured for.

OpenAI-compatible servers (``openai:`` and ``openai+completion:`` specs):

* ``openai_api_key`` (``MOA_OPENAI_API_KEY``), else ``OPENAI_API_KEY``, goes to the *default base
  URL* only: ``openai_base_url`` (``MOA_OPENAI_BASE_URL``), else ``OPENAI_BASE_URL``, else
  ``https://api.openai.com/v1``; with or without an ``@url`` in the spec;
* ``openai_keys`` (``MOA_OPENAI_KEYS``, a JSON object) maps other base URLs to their own keys,
  e.g. ``[openai_keys]`` / ``"http://127.0.0.1:8080/v1" = "..."`` in ``moa.toml``;
* any other base URL gets no key: no ``Authorization`` header (nor the ``OpenAI-Organization`` /
  ``OpenAI-Project`` headers the client would add from ``OPENAI_ORG_ID`` / ``OPENAI_PROJECT_ID``).

Ollama (``ollama:`` specs): the official client sends ``OLLAMA_API_KEY`` to any host; moa lets it go
only to ``ollama_host`` (``MOA_OLLAMA_HOST``, else ``OLLAMA_HOST``, else ``http://127.0.0.1:11434``)
and removes it from requests to any other host.

URLs are compared after :func:`normalize_url` (scheme and host in lower case, the default port
written out, no trailing slash), so ``http://LOCALHOST:80/v1/`` is ``http://localhost/v1``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Coroutine, Mapping
from typing import Any
from urllib.parse import urlsplit

from moa.settings import Settings

__all__ = ["OPENAI_URL", "default_openai_url", "dropping_headers", "normalize_url", "ollama_key", "openai_key", "same_url"]

OPENAI_URL = "https://api.openai.com/v1"
"""OpenAI's own API root (the client's default)."""

OPENAI_ACCOUNT_HEADERS = ("openai-organization", "openai-project")
"""Headers the openai client adds from ``OPENAI_ORG_ID`` / ``OPENAI_PROJECT_ID``: they go where the key goes."""


def normalize_url(url: str) -> str:
    """``url`` in a form two spellings of the same base URL share (``http://`` assumed without a scheme)."""
    text = url.strip()
    parts = urlsplit(text if "://" in text else f"http://{text}")
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # not a number: compare the text as written
        return text.rstrip("/")
    port = port or {"http": 80, "https": 443}.get(scheme)
    host = (parts.hostname or "").lower()
    return f"{scheme}://{host}{f':{port}' if port else ''}{parts.path.rstrip('/')}"


def same_url(a: str | None, b: str | None) -> bool:
    """Whether ``a`` and ``b`` name the same base URL."""
    return a is not None and b is not None and normalize_url(a) == normalize_url(b)


def default_openai_url(settings: Settings) -> str:
    """The base URL of ``openai:`` specs without ``@url``, the one ``openai_api_key`` belongs to."""
    return settings.openai_base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL


def openai_key(settings: Settings, base_url: str) -> str | None:
    """The API key configured for ``base_url`` (``None``: send none), see the module docstring."""
    for url, key in settings.openai_keys.items():
        if same_url(url, base_url):
            return key.get_secret_value()
    if same_url(base_url, default_openai_url(settings)):
        configured = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        return configured or os.environ.get("OPENAI_API_KEY")
    return None


def ollama_key(settings: Settings, host: str) -> str | None:
    """``OLLAMA_API_KEY`` when ``host`` is the configured ``ollama_host``, else ``None``."""
    return os.environ.get("OLLAMA_API_KEY") if same_url(host, settings.ollama_host) else None


def dropping_headers(names: Collection[str]) -> Callable[[Any], Coroutine[Any, Any, None]]:
    """An httpx request hook that removes the headers ``names`` (lower case) from every request,
    whatever the client added from the environment."""
    lowered = tuple(name.lower() for name in names)

    async def drop(request: Any) -> None:
        headers: Mapping[str, str] = request.headers
        for name in lowered:
            if name in headers:
                del request.headers[name]

    return drop

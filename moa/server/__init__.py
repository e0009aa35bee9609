"""``moa serve``: moa over HTTP for bots — a run API with Server-Sent Events and approvals, an
OpenAI-compatible ``/v1/chat/completions`` (each graph a model), API keys and request limits.
See docs/server.md. :func:`create_app` builds the FastAPI application."""

from moa.server.app import create_app
from moa.server.config import ServerConfig
from moa.server.keys import ApiKey, Keyring, create_key

__all__ = ["ApiKey", "Keyring", "ServerConfig", "create_app", "create_key"]

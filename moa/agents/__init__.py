"""The built-in agents (sentiment, filtering, extraction, retrieval), registered like third-party
ones through the ``moa.agents`` entry points; nothing is imported here."""

__all__: list[str] = []

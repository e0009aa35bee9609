"""The built-in graphs (plan_execute, triage, mixture, rag), registered like third-party ones
through the ``moa.graphs`` entry points; each module exposes ``build(...)``; nothing is imported here."""

__all__: list[str] = []

"""Helpers for moa's tests, not tests themselves: protocol-level test servers (Ollama's REST API
and llama.cpp's OpenAI-compatible server over the embedded model, a raw HTTP server that drops
connections on purpose), running the ``moa`` command in a subprocess, and where the public eval
data is. Imported as ``support.<module>`` (pytest puts ``tests/`` on ``sys.path``)."""

__all__: list[str] = []

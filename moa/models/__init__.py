"""Model backends and what they share: the one-method backend interface, the embedded llama.cpp,
Ollama and OpenAI-compatible backends, spec strings and tiers, the model-call cache and the
sentence embedders. Import from the submodules (``moa.models.base``, ``moa.models.registry``...)."""

__all__: list[str] = []

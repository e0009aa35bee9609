"""Spec string → model backend, and tier → backend for one run.

Spec strings::

    embedded:                      the default GGUF (Gemma 3 270M) in-process
    embedded:/path/to/model.gguf   any GGUF in-process
    embedded:smollm2-135m-instruct an instruct GGUF that PyPI packages ship (moa.models.shipped)
    ollama:llama3.2:1b             an Ollama model (host from settings / OLLAMA_HOST)
    ollama:phi3@http://gpu:11434   ... on a given host
    openai:gpt-4o-mini             an OpenAI model (key from OPENAI_API_KEY)
    openai:qwen2.5@http://127.0.0.1:8080/v1   any OpenAI-compatible server
    openai+completion:gemma@http://127.0.0.1:8080/v1   ... serving a base model (completion prompts)

Which API key a backend gets is decided here, from the settings, by :mod:`moa.models.credentials`:
a key goes only to the base URL it was configured for.
"""

from __future__ import annotations

import os
from pathlib import Path

from moa.errors import ErrorCode, UserError
from moa.models.base import ModelBackend
from moa.models.cache import CachedBackend, CallCache
from moa.models.credentials import default_openai_url, ollama_key, openai_key
from moa.models.shipped import SHIPPED, ShippedModel, shipped_model
from moa.settings import Settings, Tier

SPEC_HELP = (
    "use 'embedded:' (or 'embedded:/path/model.gguf', 'embedded:<shipped model>'), 'ollama:<tag>[@host]' "
    "or 'openai:<model>[@base_url]'"
)


def embedded_timeout(settings: Settings, shipped: ShippedModel | None) -> float:
    """The user's ``timeout`` when they set one, else the default raised to what a slow shipped
    model needs (:attr:`~moa.models.shipped.ShippedModel.timeout`)."""
    if shipped is None or shipped.timeout is None or "timeout" in settings.model_fields_set:
        return settings.timeout
    return max(settings.timeout, shipped.timeout)


def embedded_model(rest: str) -> tuple[Path | None, ShippedModel | None]:
    """What ``embedded:<rest>`` names: the default model, a shipped model's short name, or a GGUF path.

    A short name wins over a file of the same name in the working directory; give such a file as
    ``./name``. A bare word that is neither a shipped model nor an existing file raises
    ``bad_model_spec`` listing the shipped names.
    """
    if not rest:
        return None, None
    shipped = shipped_model(rest)
    if shipped is not None:
        return None, shipped
    path = Path(rest).expanduser()
    if "/" not in rest and os.sep not in rest and path.suffix.lower() != ".gguf" and not path.exists():
        raise UserError(
            ErrorCode.BAD_MODEL_SPEC,
            f"embedded model {rest!r} is neither a shipped model nor a .gguf file; shipped models: "
            f"{', '.join(SHIPPED)} (see `moa models`), or give a path: 'embedded:/path/model.gguf'",
        )
    return path, None


def _split_at(rest: str) -> tuple[str, str | None]:
    if "@" in rest:
        name, url = rest.rsplit("@", 1)
        return name, url
    return rest, None


def create_backend(spec: str, settings: Settings) -> ModelBackend:
    """Build the backend a spec string names (no network call happens here)."""
    kind, sep, rest = spec.partition(":")
    if not sep:
        raise UserError(ErrorCode.BAD_MODEL_SPEC, f"model spec {spec!r} has no backend prefix; {SPEC_HELP}")
    price = settings.prices.get(spec)
    price_per_1k = (price.prompt, price.completion) if price else (0.0, 0.0)
    backend: ModelBackend
    if kind == "embedded":
        from moa.models.embedded import EmbeddedBackend

        path, shipped = embedded_model(rest)
        backend = EmbeddedBackend(
            spec,
            model_path=path,
            shipped=shipped,
            n_ctx=settings.embedded_ctx,
            parallel=settings.embedded_parallel,
            threads=settings.embedded_threads,
            cache_dir=settings.model_cache_dir,
            timeout=embedded_timeout(settings, shipped),
        )
    elif kind == "ollama":
        from moa.models.ollama import OllamaBackend

        model, host = _split_at(rest)
        if not model:
            raise UserError(ErrorCode.BAD_MODEL_SPEC, f"model spec {spec!r} names no model; e.g. 'ollama:llama3.2:1b'")
        host = host or settings.ollama_host
        backend = OllamaBackend(
            spec,
            model=model,
            host=host,
            api_key=ollama_key(settings, host),
            timeout=settings.timeout,
            max_concurrency=settings.concurrency,
            connection_retries=settings.connection_retries,
        )
    elif kind in ("openai", "openai+completion"):
        from moa.models.openai import OpenAIBackend

        model, url = _split_at(rest)
        if not model:
            raise UserError(ErrorCode.BAD_MODEL_SPEC, f"model spec {spec!r} names no model; e.g. 'openai:gpt-4o-mini'")
        base_url = url or default_openai_url(settings)
        backend = OpenAIBackend(
            spec,
            model=model,
            base_url=base_url,
            api_key=openai_key(settings, base_url),
            timeout=settings.timeout,
            connection_retries=settings.connection_retries,
            max_concurrency=settings.concurrency,
            chat=kind == "openai",
            completion=kind == "openai+completion",
            price_per_1k=price_per_1k,
        )
    else:
        raise UserError(ErrorCode.BAD_MODEL_SPEC, f"unknown model backend {kind!r} in spec {spec!r}; {SPEC_HELP}")
    backend.price_per_1k = price_per_1k
    return backend


class Models:
    """The backends of one run: resolves tiers to backends, building each spec once.

    Backends built from specs go through the on-disk call cache when ``settings.cache`` is on
    (:mod:`moa.models.cache`). Pass backends directly (e.g. ``moa.testing.FakeModel``) to bypass spec
    strings (and the cache). :meth:`aclose` closes only the backends built here: a backend passed
    in belongs to the caller, who may use it for more runs.
    """

    def __init__(self, settings: Settings, *, slm: ModelBackend | None = None, llm: ModelBackend | None = None) -> None:
        self.settings = settings
        self._cache: CallCache | None = None
        self._by_spec: dict[str, ModelBackend] = {}
        self._tiers: dict[Tier, ModelBackend] = {}
        self._built: list[ModelBackend] = []
        if slm is not None:
            self._tiers["slm"] = slm
        if llm is not None:
            self._tiers["llm"] = llm

    def register(self, backend: ModelBackend) -> None:
        """Use ``backend`` for its spec (e.g. a :class:`moa.testing.FakeModel` in an agent's cascade)."""
        self._by_spec[backend.spec] = backend

    def get(self, spec: str) -> ModelBackend:
        if spec not in self._by_spec:
            backend = create_backend(spec, self.settings)
            if self.settings.cache:
                if self._cache is None:
                    self._cache = CallCache(self.settings.state_dir / "cache.sqlite", self.settings.cache_ttl)
                backend = CachedBackend(backend, self._cache)
            self._by_spec[spec] = backend
            self._built.append(backend)
        return self._by_spec[spec]

    def tier(self, tier: Tier) -> ModelBackend:
        if tier not in self._tiers:
            self._tiers[tier] = self.get(self.settings.tier_spec(tier))
        return self._tiers[tier]

    async def aclose(self) -> None:
        """Close the backends built from specs (not those passed in or registered)."""
        for backend in self._built:
            await backend.aclose()
        if self._cache is not None:
            self._cache.close()
            self._cache = None

"""Structured output: constrained decoding → pydantic validation → one repair → typed error.

Every model answer that moa uses as data goes through :func:`generate_structured`. The backend
is asked to constrain decoding with the output type's JSON schema; the text is validated by
pydantic; on failure the model gets one repair attempt that shows it the validation error; if
that fails too, a :class:`RunError` with code ``INVALID_OUTPUT`` is raised (the raw text is kept
in its details). Nothing downstream ever sees a value of the wrong type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from moa.errors import ErrorCode, RunError
from moa.models.base import GenerateRequest, Generation, Message, ModelBackend
from moa.usage import Usage

T = TypeVar("T", bound=BaseModel)


@dataclass
class Structured(Generic[T]):
    """A validated value, the generation it came from, and the usage of every call made."""

    value: T
    generation: Generation
    usage: list[Usage] = field(default_factory=list)
    repaired: bool = False


@lru_cache(maxsize=512)
def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema, built once per class (shared: callers must not mutate it).

    Building a schema walks the whole model with pydantic's generator (~0.2 ms for a small one);
    agents ask for the same decode model's schema for every item.
    """
    return model.model_json_schema()


def usage_of(backend: ModelBackend, gen: Generation, *, tier: str | None, agent: str | None, subtask: str | None, purpose: str) -> Usage:
    """The accounting record of one call, priced with the backend's $/1k tokens."""
    prompt_price, completion_price = backend.price_per_1k
    return Usage(
        model=backend.spec,
        tier=tier,
        prompt_tokens=gen.prompt_tokens,
        completion_tokens=gen.completion_tokens,
        latency_s=gen.latency_s,
        cost=0.0 if gen.cached else (gen.prompt_tokens * prompt_price + gen.completion_tokens * completion_price) / 1000,
        cached=gen.cached,
        retries=gen.retries,
        agent=agent,
        subtask=subtask,
        purpose=purpose,
    )


def _validate(output_type: type[T], text: str) -> T:
    return output_type.model_validate_json(text.strip() or "null")


def _short(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'output'}: {e['msg']}" for e in exc.errors()[:5])


def _repair_request(request: GenerateRequest, bad: str, error: str) -> GenerateRequest:
    if request.messages is not None:
        messages = [
            *request.messages,
            Message(role="assistant", content=bad),
            Message(role="user", content=f"That output is invalid: {error}. Reply with corrected JSON only."),
        ]
        return request.model_copy(update={"messages": messages})
    prompt = f"{request.prompt}{bad.strip()}\n(invalid: {error})\nCorrected output: "
    return request.model_copy(update={"prompt": prompt})


async def generate_structured(
    backend: ModelBackend,
    request: GenerateRequest,
    output_type: type[T],
    *,
    tier: str | None = None,
    agent: str | None = None,
    subtask: str | None = None,
    purpose: str = "agent",
) -> Structured[T]:
    """Generate a value of ``output_type`` (see module docstring for the policy)."""
    if request.json_schema is None and (await backend.acapabilities()).json_schema:
        request = request.model_copy(update={"json_schema": schema_of(output_type)})
    gen = await backend.agenerate(request)
    usage = [usage_of(backend, gen, tier=tier, agent=agent, subtask=subtask, purpose=purpose)]
    try:
        return Structured(_validate(output_type, gen.text), gen, usage)
    except ValidationError as first:
        error = _short(first)
    repair = await backend.agenerate(_repair_request(request, gen.text, error))
    usage.append(usage_of(backend, repair, tier=tier, agent=agent, subtask=subtask, purpose="repair"))
    try:
        return Structured(_validate(output_type, repair.text), repair, usage, repaired=True)
    except ValidationError as second:
        raise RunError(
            ErrorCode.INVALID_OUTPUT,
            f"{backend.spec} returned output that does not match {output_type.__name__} after one repair "
            f"attempt ({_short(second)}); try a larger model for this tier (MOA_SLM / MOA_LLM)",
            details={"outputs": [gen.text[:2000], repair.text[:2000]], "usage": [u.model_dump() for u in usage]},
        ) from second

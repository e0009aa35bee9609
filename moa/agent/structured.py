"""Structured output: constrained decoding → pydantic validation → one repair → typed error.

Every model answer that moa uses as data goes through :func:`generate_structured`, whose calls go
through the run context's door (:meth:`moa.agent.context.RunContext.call`). The backend is asked
to constrain decoding with the output type's JSON schema; the text is validated by pydantic; on failure the model gets one repair attempt that shows it the validation error; if
that fails too, :class:`~moa.errors.InvalidOutput` is raised with the raw answers (``outputs``) and
the usage of both calls. Nothing downstream ever sees a value of the wrong type.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from moa.errors import ErrorCode, InvalidOutput
from moa.models.base import GenerateRequest, Generation, Message

if TYPE_CHECKING:
    from moa.agent.calls import Purpose
    from moa.agent.context import RunContext
    from moa.routing.policy import Step

T = TypeVar("T", bound=BaseModel)


@dataclass
class Structured(Generic[T]):
    """A validated value and the generation it came from (the calls' usage is in the open
    :class:`~moa.agent.calls.CallScope`)."""

    value: T
    generation: Generation
    repaired: bool = False


@lru_cache(maxsize=512)
def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema, built once per class (shared: callers must not mutate it).

    Building a schema walks the whole model with pydantic's generator (~0.2 ms for a small one);
    agents ask for the same decode model's schema for every item.
    """
    return model.model_json_schema()


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
    ctx: RunContext,
    step: Step | str,
    request: GenerateRequest,
    output_type: type[T],
    *,
    purpose: Purpose = "agent",
    ask_as: str | None = None,
    reason: str | None = None,
) -> Structured[T]:
    """Generate a value of ``output_type`` on ``step`` through the run's door (see the module docstring).

    Raises:
        InvalidOutput: no valid value after the repair (``outputs``: the raw answers; ``usage``: both calls).
    """
    step = ctx.step(step) if isinstance(step, str) else step
    with ctx.scope() as scope:
        if request.json_schema is None and (await ctx.backend_for(step).acapabilities()).json_schema:
            request = request.model_copy(update={"json_schema": schema_of(output_type)})
        gen = await ctx.call(step, request, purpose=purpose, ask_as=ask_as, reason=reason)
        try:
            return Structured(_validate(output_type, gen.text), gen)
        except ValidationError as first:
            error = _short(first)
        repair = await ctx.call(step, _repair_request(request, gen.text, error), purpose="repair", ask_as=ask_as, reason=reason)
        try:
            return Structured(_validate(output_type, repair.text), repair, repaired=True)
        except ValidationError as second:
            raise InvalidOutput(
                ErrorCode.INVALID_OUTPUT,
                f"{ctx.backend_for(step).spec} returned output that does not match {output_type.__name__} after one repair "
                f"attempt ({_short(second)}); try a larger model for this tier (MOA_SLM / MOA_LLM)",
                details={"outputs": [gen.text[:2000], repair.text[:2000]]},
                usage=scope.usage,
            ) from second

"""Structured output: constrained decoding → pydantic validation → one repair → typed error.

Every model answer that moa uses as data goes through :func:`generate_structured`, whose calls go
through the run context's door (:meth:`moa.agent.context.RunContext.call`). The backend is asked
to constrain decoding with the output type's JSON schema; the text is validated by pydantic; on failure the model gets one repair attempt that shows it the validation error; if
that fails too, :class:`~moa.errors.InvalidOutput` is raised with the raw answers (``outputs``) and
the usage of both calls. Nothing downstream ever sees a value of the wrong type.
"""

from __future__ import annotations

import json
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


_CHARS_PER_TOKEN = 2.5
"""Few tokens are shorter than this (JSON punctuation, digits, rare words); the limit assumes it."""
_UNBOUNDED = {"string": 400, "array": 16}
"""What an answer may hold where the schema sets no bound (characters of a string, items of an array)."""


def _json_chars(node: dict[str, Any], defs: dict[str, Any], depth: int = 0) -> int:
    """The most characters a JSON value matching ``node`` takes (compact, before whitespace)."""
    if depth > 20:
        return 100
    if "$ref" in node:
        return _json_chars(defs.get(node["$ref"].rsplit("/", 1)[-1], {}), defs, depth + 1)
    if "enum" in node or "const" in node:
        values = node.get("enum", [node.get("const")])
        return max((len(json.dumps(v, ensure_ascii=False)) for v in values), default=4)
    options = node.get("anyOf") or node.get("oneOf") or node.get("allOf")
    if options:
        return max(_json_chars(o, defs, depth + 1) for o in options)
    kind = node.get("type")
    if isinstance(kind, list):
        return max(_json_chars({**node, "type": k}, defs, depth + 1) for k in kind)
    if kind == "string":
        return int(node.get("maxLength", _UNBOUNDED["string"])) + 2
    if kind in ("number", "integer"):
        return 24
    if kind == "boolean":
        return 5
    if kind == "null":
        return 4
    if kind == "array":
        items = node.get("items") or {}
        return 2 + int(node.get("maxItems", _UNBOUNDED["array"])) * (_json_chars(items, defs, depth + 1) + 1)
    if kind == "object" or "properties" in node:
        fields = node.get("properties", {})
        return 2 + sum(len(name) + 4 + _json_chars(sub, defs, depth + 1) for name, sub in fields.items())
    return 100


@lru_cache(maxsize=512)
def output_token_limit(model: type[BaseModel]) -> int:
    """An output-token limit for answers of ``model`` that no valid answer reaches: the longest
    JSON the schema allows (string ``maxLength``, array ``maxItems``, the longest enum value), plus
    room for whitespace a chat model adds, at 2.5 characters per token. A server that honours
    ``max_tokens`` then never cuts a valid answer (a reason field included)."""
    schema = schema_of(model)
    chars = _json_chars(schema, schema.get("$defs", {}))
    fields = json.dumps(schema).count('"type"')
    return int((chars + 4 * fields) / _CHARS_PER_TOKEN) + 16


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

"""Output-token limits come from the decode schema, so a server that honours ``max_tokens`` never
cuts a valid answer (the filtering agent's reason field included)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from tokenizers import Tokenizer

import moa
from moa.agent.structured import output_token_limit, schema_of
from moa.models.base import Capabilities, GenerateRequest
from moa.testing import FakeModel
from moa.workflow.catalog import builtin_agents

TOKENIZER = Tokenizer.from_file(str(Path(moa.__file__).parent / "data" / "minilm" / "tokenizer.json"))
TOKENIZER.no_padding()
TOKENIZER.no_truncation()
PROSE = "the customer wrote that the parcel arrived late and the box was damaged so they would like a refund soon "


def _longest(node: dict[str, Any], defs: dict[str, Any]) -> Any:
    """The longest value the schema allows, with prose in its strings."""
    if "$ref" in node:
        return _longest(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    if "enum" in node:
        return max(node["enum"], key=lambda v: len(json.dumps(v)))
    if "anyOf" in node:
        return max((_longest(o, defs) for o in node["anyOf"]), key=lambda v: len(json.dumps(v)))
    kind = node.get("type")
    if kind == "string":
        size = node.get("maxLength", 400)
        return (PROSE * (size // len(PROSE) + 1))[:size]
    if kind == "array":
        return [_longest(node["items"], defs) for _ in range(node.get("maxItems", 16))]
    if kind == "object":
        return {k: _longest(v, defs) for k, v in node.get("properties", {}).items()}
    if kind == "number":
        return 0.123456789
    if kind == "integer":
        return 1234567
    return True


CASES = [
    (name, Capabilities(chat=chat, completion=True, json_schema=True, logprobs=logprobs))
    for name in ("sentiment", "filtering", "extraction")
    for chat in (False, True)
    for logprobs in (False, True)
]


@pytest.mark.parametrize(("agent_name", "caps"), CASES, ids=[f"{n}-chat{c.chat}-lp{c.logprobs}" for n, c in CASES])
def test_the_longest_valid_answer_fits_the_limit_even_pretty_printed(agent_name: str, caps: Capabilities) -> None:
    agent = builtin_agents()[agent_name]
    data = agent.make_input("a text", {})
    decode: type[BaseModel] = agent.decode_type(data, caps)
    schema = schema_of(decode)
    longest = decode.model_validate(_longest(schema, schema.get("$defs", {})))  # a valid answer, as long as allowed
    pretty = json.dumps(longest.model_dump(mode="json"), indent=2)
    tokens = len(TOKENIZER.encode(pretty, add_special_tokens=False).ids)
    limit = agent.request(data, caps).max_tokens
    assert limit == output_token_limit(decode) and tokens <= limit, (tokens, limit)


def _cut_at_max_tokens(reply: str) -> Any:
    """A chat server that honours max_tokens (one token ~ one word here): longer replies are cut."""

    def handler(request: GenerateRequest) -> str:
        words = reply.split(" ")
        return " ".join(words[: request.max_tokens])

    return handler


async def test_filtering_on_a_chat_server_that_honours_max_tokens_is_not_cut() -> None:
    reason = "The message promises a prize and asks the reader to call a premium number, which is typical of spam messages."
    reply = json.dumps({"reason": reason, "label": "spam", "confidence": 0.9})
    model = FakeModel(_cut_at_max_tokens(reply), chat=True)
    plan = {"subtasks": [{"id": "f", "agent": "filtering", "options": {"criterion": "spam"}}]}
    result = await moa.arun("filter spam", input=["WIN a prize, call 0900 now"], plan=plan, slm=model, llm=model, settings=moa.load_settings(durable=False, escalate=False))
    (item,) = result.results["f"].items
    assert item.error is None and item.output is not None and item.output.keep is False  # type: ignore[attr-defined]
    assert all(r.max_tokens >= len(reply.split(" ")) for r in model.requests)

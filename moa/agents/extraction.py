"""Extraction agent: named entities with character spans, and schema-driven extraction.

* :class:`ExtractionAgent` finds entities of a configurable set of types. The model names each
  entity's text and type (constrained JSON); moa locates the text in the input to give exact
  character spans, and drops any entity whose text does not occur in the input (a model cannot
  invent an entity).
* :func:`extract_into` fills a user's pydantic model from a text (constrained to its JSON
  schema, validated, one repair).

Demonstrations. A base model copies its few-shot examples, so the prompt only shows examples
that demonstrate the requested types:

* ``examples`` (an input option, settable per subtask in a plan or YAML graph) are the caller's
  own worked examples: ``[{"text": ..., "entities": [{"text": ..., "type": ...}]}]``. Each
  entity must occur in its text and have one of the requested ``types``.
* The built-in examples (people, organizations, locations, products, dates) are shown only for
  requested types that no caller example shows, each with its entities of the requested types;
  a built-in example with none of them is left out, so custom types never see "an empty list"
  demonstrated just because the types do not match. Their one genuinely empty example is shown
  only next to a non-empty one.
* With no demonstration left (e.g. SNIPS slot names and no ``examples``), the prompt is
  zero-shot: it names the types, and constrained decoding gives the answer its shape.

The constant part (instructions, built-in examples, caller examples) comes first and the text
last, so the embedded engine reuses the cached prefix across a batch.

Specialist. The first step of the cascade is an entity tagger (:mod:`moa.learning.tagger`, a CRF
on word features and word clusters, about 1 ms a text once its words are known) when one serves the
request: its task key is the requested type set (``types=date,location,...``), and a tagger serves a
request when every requested type is among its types or is ``date`` (found by the rules of
:mod:`moa.learning.dates`, which no tagger needs to learn). Entities of types not requested are left
out. Taggers trained with ``moa train extraction DATA.conll`` come first (the one trained for exactly
the requested types, else any that serves), then the one shipped with moa
(``moa/agents/data/entities-wnut17.npz``: WNUT-17 train, CC BY 4.0, with corporation and group
mapped to organization; it serves requests within person, organization, location, product,
creative-work and date, which includes the default types). The tagger's confidence (how sure it is
of its least sure token) escalates an item to the slm below the agent's threshold.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

from pydantic import BaseModel, Field, create_model, model_validator

from moa.kit import (
    DATE, Capabilities, GenerateRequest, Generation, Message, ModelAgent, RunContext, Settings, Tagger, Tier, find_dates, generate_structured,
    output_token_limit, schema_of, types_key,
)  # fmt: skip
from moa.logs import get_logger

log = get_logger(__name__)

DEFAULT_TYPES = ("person", "organization", "location", "product", "date")
SHIPPED_TAGGER = Path(__file__).parent / "data" / "entities-wnut17.npz"
"""The entity tagger shipped with moa (provenance and attribution beside it, in ``entities-wnut17.json``)."""
RECOGNISED = (DATE,)
"""Types found by rules, which a tagger need not have been trained for."""
MAX_EXAMPLES = 32
"""The most caller examples one input takes (each one lengthens every prompt)."""

_SHOTS: tuple[tuple[str, list[tuple[str, str]]], ...] = (
    ("Tim Cook presented the new iPhone in Cupertino on Monday.",
     [("Tim Cook", "person"), ("iPhone", "product"), ("Cupertino", "location"), ("Monday", "date")]),
    ("I ordered a Kindle from Amazon and it never arrived.", [("Kindle", "product"), ("Amazon", "organization")]),
    ("The weather was nice.", []),
    ("Maria flew from Lisbon to Berlin with Lufthansa in March 2024.",
     [("Maria", "person"), ("Lisbon", "location"), ("Berlin", "location"), ("Lufthansa", "organization"), ("March 2024", "date")]),
)


def _flat(text: str) -> str:
    return " ".join(text.split())


class ExampleEntity(BaseModel):
    """An entity of a worked example."""

    text: str = Field(min_length=1)
    """The entity's words, as they appear in the example's text."""
    type: str = Field(min_length=1)
    """One of the requested types."""


class WorkedExample(BaseModel):
    """A worked example: a text and every entity of the requested types in it (none is allowed)."""

    text: str = Field(min_length=1)
    entities: list[ExampleEntity] = Field(default_factory=list)

    @model_validator(mode="after")
    def _mentions_occur(self) -> Self:
        flat = _flat(self.text).lower()
        missing = [m.text for m in self.entities if _flat(m.text).lower() not in flat]
        if missing:
            raise ValueError(f"entity {missing[0]!r} does not occur in the example's text {self.text!r}; copy each entity's words from the text")
        return self


class ExtractionInput(BaseModel):
    """A text to find entities in."""

    text: str = Field(min_length=1)
    """The text."""
    types: list[str] = Field(default_factory=lambda: list(DEFAULT_TYPES), min_length=1)
    """Entity types to look for."""
    examples: list[WorkedExample] = Field(default_factory=list, max_length=MAX_EXAMPLES)
    """Worked examples shown to the model before the text, e.g.
    ``[{"text": "play Jazz Hits by Miles Davis", "entities": [{"text": "Jazz Hits", "type": "playlist"},
    {"text": "Miles Davis", "type": "artist"}]}]``. They replace the built-in examples for the
    types they show; give a few that together show every requested type."""

    @model_validator(mode="after")
    def _example_types(self) -> Self:
        for number, example in enumerate(self.examples, start=1):
            unknown = sorted({m.type for m in example.entities} - set(self.types))
            if unknown:
                raise ValueError(
                    f"example {number} ({example.text!r}) has entity type {unknown[0]!r}, which is not among the requested types "
                    f"{self.types}; add it to 'types' or fix the example"
                )
        return self


class Entity(BaseModel):
    """One entity mention."""

    text: str
    """The exact text of the mention."""
    type: str
    """One of the requested types."""
    start: int = Field(ge=0)
    """Character offset where the mention starts in the input."""
    end: int = Field(ge=0)
    """Character offset just past the mention's end."""


class Entities(BaseModel):
    """Entities found in a text."""

    entities: list[Entity] = Field(default_factory=list)


class ExtractionAgent(ModelAgent[ExtractionInput, Entities, BaseModel]):
    name = "extraction"
    description = "Extracts named entities (people, organizations, locations, products, dates) and key facts from each text, with character spans."
    examples = (
        "extract the entities mentioned",
        "which people, companies and places are mentioned",
        "find the product names and dates in these messages",
        "pull out names and key details",
    )
    input_type = ExtractionInput
    output_type = Entities

    def decode_type(self, data: ExtractionInput, caps: Capabilities) -> type[BaseModel]:
        return _mentions(tuple(data.types))

    # --- the specialist: an entity tagger (module docstring) -------------------------------------

    def specialist_key(self, data: ExtractionInput) -> str | None:
        return types_key(data.types)

    def options_for_key(self, key: str) -> dict[str, Any]:
        name, _, value = key.partition("=")
        return {"types": value.split(",")} if name == "types" else super().options_for_key(key)

    def serves_key(self, key: str, data: ExtractionInput) -> bool:
        name, _, value = key.partition("=")
        return name == "types" and set(data.types) <= set(value.split(",")) | set(RECOGNISED)

    def shipped_learned(self, settings: Settings) -> str | None:
        if not settings.shipped_specialists:
            return None
        about = json.loads(SHIPPED_TAGGER.with_suffix(".json").read_text())
        return f"shipped entity tagger (types {', '.join(about['types'])}; {DATE} by rules)"

    def specialist_for(self, ctx: RunContext, data: ExtractionInput) -> Tagger | None:
        key = self.specialist_key(data)
        trained = [i for i in ctx.learned(self.name) if i.kind == "specialist" and i.path.name.startswith("tagger-") and self.serves_key(i.key, data)]
        paths = [i.path for i in sorted(trained, key=lambda i: i.key != key)] + ([SHIPPED_TAGGER] if ctx.settings.shipped_specialists else [])
        embedder = ctx.embedder().name
        for path in paths:
            tagger = ctx.tagger(path)
            if tagger is not None and tagger.serves(data.types, RECOGNISED) and (tagger.centroids is None or tagger.embedder == embedder):
                return tagger
        return None

    async def specialist_answer(self, ctx: RunContext, specialist: Any, data: ExtractionInput) -> tuple[Entities, float | None]:
        tagged = await specialist.atag(data.text, ctx.embedder())
        dates = find_dates(data.text) if DATE in data.types else []
        spans = [(k, s, e) for k, s, e in tagged.entities if k in data.types and all(e <= ds or s >= de for ds, de in dates)]
        spans += [(DATE, s, e) for s, e in dates]
        entities = [Entity(text=data.text[s:e], type=k, start=s, end=e) for k, s, e in sorted(spans, key=lambda span: span[1])]
        return Entities(entities=entities), tagged.confidence

    def demonstrations(self, data: ExtractionInput) -> list[WorkedExample]:
        """The worked examples of the completion prompt, in order: built-in ones for the requested
        types no caller example shows (see the module docstring), then the caller's."""
        shown = {m.type for e in data.examples for m in e.entities}
        wanted = {t for t in data.types if t not in shown}
        if not any(ty in wanted for _, ents in _SHOTS for _, ty in ents):
            return list(data.examples)
        builtin = [
            WorkedExample(text=text, entities=[ExampleEntity(text=t, type=ty) for t, ty in ents if ty in data.types])
            for text, ents in _SHOTS
            if not ents or any(ty in wanted for _, ty in ents)  # the empty one teaches "nothing here", never alone
        ]
        return [*builtin, *data.examples]

    def completion_prompt(self, data: ExtractionInput) -> str:
        shots = self.demonstrations(data)
        # zero-shot: no JSON template in the prompt (a 270M base model copies its placeholders
        # verbatim); constrained decoding gives the answer its shape
        lines = [f"List the named entities in {'each' if shots else 'the'} text. Types: {', '.join(data.types)}.", ""]
        for shot in shots:
            lines += [f"Text: {_flat(shot.text)}", "Output: " + _answer(shot), ""]
        return "\n".join([*lines, f"Text: {_flat(data.text)}", "Output: "])

    def chat_messages(self, data: ExtractionInput) -> list[Message]:
        turns = [
            m
            for example in data.examples
            for m in (Message(role="user", content=example.text), Message(role="assistant", content=_answer(example)))
        ]
        return [
            Message(
                role="system",
                content=f"List the named entities in the user's text. Allowed types: {', '.join(data.types)}. "
                "Copy each entity's text exactly as it appears. Reply with JSON.",
            ),
            *turns,
            Message(role="user", content=data.text),
        ]

    def finish(self, data: ExtractionInput, decoded: BaseModel, gen: Generation, probs: dict[str, float] | None) -> Entities:
        found: list[Entity] = []
        taken: set[tuple[int, int]] = set()
        for mention in decoded.entities:  # type: ignore[attr-defined]
            start = _locate(data.text, mention.text, taken)
            if start is None:
                log.debug("entity_not_in_text", text=mention.text)
                continue
            span = (start, start + len(mention.text))
            taken.add(span)
            found.append(Entity(text=data.text[span[0] : span[1]], type=mention.type, start=span[0], end=span[1]))
        return Entities(entities=sorted(found, key=lambda e: e.start))


def _answer(example: WorkedExample) -> str:
    """The JSON answer a worked example demonstrates."""
    return json.dumps({"entities": [{"text": m.text, "type": m.type} for m in example.entities]}, separators=(",", ":"))


def _locate(text: str, mention: str, taken: set[tuple[int, int]]) -> int | None:
    """First occurrence of ``mention`` in ``text`` (case-insensitive) not already used."""
    lowered, needle = text.lower(), mention.lower().strip()
    if not needle:
        return None
    start = lowered.find(needle)
    while start >= 0:
        if (start, start + len(needle)) not in taken:
            return start
        start = lowered.find(needle, start + 1)
    return None


M = TypeVar("M", bound=BaseModel)


async def extract_into(ctx: RunContext, text: str, schema: type[M], *, tier: Tier = "slm") -> M:
    """Fill ``schema`` (a pydantic model) from ``text``: constrained decoding, validation, one repair.

    Raises :class:`moa.kit.InvalidOutput` when the model cannot produce a valid value.
    """
    backend = ctx.backend_for(ctx.step(tier))
    schema_text = json.dumps(schema_of(schema))
    if (await backend.acapabilities()).chat:
        request = GenerateRequest(
            messages=[
                Message(role="system", content=f"Extract the information from the user's text as JSON matching this schema: {schema_text}"),
                Message(role="user", content=text),
            ],
            max_tokens=output_token_limit(schema),
        )
    else:
        request = GenerateRequest(prompt=f"JSON schema: {schema_text}\n\nText: {' '.join(text.split())}\n\nJSON: ", max_tokens=output_token_limit(schema))
    with ctx.scope(agent="extraction"):
        result = await generate_structured(ctx, tier, request, schema, purpose="extract")
    return result.value


@lru_cache(maxsize=128)
def _mentions(types: tuple[str, ...]) -> type[BaseModel]:
    """The decode model for one set of entity types, built once (pydantic classes are costly to create)."""
    mention = create_model("Mention", text=(str, Field(min_length=1, max_length=80)), type=(Literal[types], ...))  # type: ignore[valid-type,arg-type]
    return create_model("Mentions", entities=(list[mention], Field(max_length=12)))  # type: ignore[valid-type]


agent = ExtractionAgent()

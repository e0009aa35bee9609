"""The extraction agent's prompts: which demonstrations it shows for the requested types, the
caller's own ``examples`` option (validated), and a run through a plan with a fake model."""

from __future__ import annotations

import json
from typing import Any

import pytest

import moa
from moa.agents.extraction import ExtractionInput
from moa.agents.extraction import agent as extraction
from moa.errors import ErrorCode, UserError
from moa.models.base import Capabilities, GenerateRequest
from moa.testing import FakeModel, prompt_of

SLOTS = ["playlist", "artist", "music_item"]
SONG = {
    "text": "add Hey Jude by the Beatles to my Sixties playlist",
    "entities": [{"text": "Hey Jude", "type": "music_item"}, {"text": "the Beatles", "type": "artist"}, {"text": "Sixties", "type": "playlist"}],
}
BASE = Capabilities(chat=False, completion=True, json_schema=True)


def outputs(prompt: str) -> list[str]:
    """The demonstrated answers of a completion prompt (the item's own ``Output: `` is last and empty)."""
    return [line.removeprefix("Output: ") for line in prompt.splitlines() if line.startswith("Output: ")][:-1]


def prompt(**options: Any) -> str:
    return extraction.completion_prompt(extraction.make_input("put Yesterday on my Rainy Day playlist", options))


def test_default_types_keep_the_built_in_examples() -> None:
    shown = outputs(prompt())
    assert len(shown) == 4 and shown[2] == '{"entities":[]}'  # one genuinely empty example among three full ones
    assert prompt().splitlines()[0] == "List the named entities in each text. Types: person, organization, location, product, date."
    wnut = outputs(prompt(types=["person", "location", "group", "creative-work", "corporation", "product"]))
    assert len(wnut) == 4 and wnut[1] == '{"entities":[{"text":"Kindle","type":"product"}]}'  # each example keeps its requested types


def test_custom_types_get_no_empty_demonstrations() -> None:
    text = prompt(types=SLOTS)
    assert outputs(text) == []  # before: four examples, each answering {"entities":[]}
    assert text.startswith("List the named entities in the text. Types: playlist, artist, music_item.\n")
    assert text.endswith("Text: put Yesterday on my Rainy Day playlist\nOutput: ")


def test_built_in_examples_only_for_the_types_they_show() -> None:
    shown = [json.loads(o)["entities"] for o in outputs(prompt(types=["date", "artist"]))]
    assert shown == [[{"text": "Monday", "type": "date"}], [], [{"text": "March 2024", "type": "date"}]]  # the Kindle example shows no date


def test_caller_examples_are_shown_before_the_item() -> None:
    text = prompt(types=SLOTS, examples=[SONG])
    assert outputs(text) == [json.dumps({"entities": SONG["entities"]}, separators=(",", ":"))]
    assert text.index(SONG["text"]) < text.index("Rainy Day") and "Tim Cook" not in text


def test_caller_examples_replace_built_in_ones_only_for_the_types_they_show() -> None:
    oslo = {"text": "a table in Oslo", "entities": [{"text": "Oslo", "type": "location"}]}
    covered = prompt(types=["location"], examples=[oslo])
    assert "Cupertino" not in covered and outputs(covered) == ['{"entities":[{"text":"Oslo","type":"location"}]}']
    partly = prompt(types=["location", "person"], examples=[oslo])
    assert partly.index("Tim Cook") < partly.index("a table in Oslo")  # built-in (constant) first, the caller's next, the item last
    assert '{"text":"Cupertino","type":"location"}' in partly


def test_chat_models_get_the_examples_as_turns() -> None:
    messages = extraction.chat_messages(extraction.make_input("play Help", {"types": SLOTS, "examples": [SONG]}))
    assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
    assert json.loads(messages[2].content)["entities"][1] == {"text": "the Beatles", "type": "artist"}


@pytest.mark.parametrize(
    ("examples", "message"),
    [
        ([{"text": "play Help", "entities": [{"text": "Help", "type": "song"}]}], "example 1 ('play Help') has entity type 'song', which is not among the requested types"),
        ([{"text": "play Help", "entities": [{"text": "Let It Be", "type": "music_item"}]}], "entity 'Let It Be' does not occur in the example's text"),
        ([{"entities": []}], "Field required (at examples.0.text)"),
        ("play Help", "Input should be a valid list (at examples)"),
        ([{"text": "play Help", "entities": [{"text": "Help"}]}], "Field required (at examples.0.entities.0.type)"),
    ],
)
def test_bad_examples_are_a_clear_user_error(examples: Any, message: str) -> None:
    with pytest.raises(UserError) as caught:
        extraction.make_input("play Yesterday", {"types": SLOTS, "examples": examples})
    assert caught.value.code == ErrorCode.INVALID_INPUT
    assert "invalid options for agent 'extraction'" in caught.value.message and message in caught.value.message


def test_whitespace_in_examples_is_folded() -> None:
    data = ExtractionInput(text="x", types=["city"], examples=[{"text": "fly to\nNew  York", "entities": [{"text": "New York", "type": "city"}]}])
    assert "Text: fly to New York\n" in extraction.completion_prompt(data)


async def test_a_plan_option_gives_the_examples(tmp_path: Any) -> None:
    requests: list[GenerateRequest] = []

    def slots(request: GenerateRequest) -> str:
        requests.append(request)
        found = [{"text": "Rainy Day", "type": "playlist"}] if "Rainy Day" in prompt_of(request).rsplit("Text:", 1)[-1] else []
        return json.dumps({"entities": found})

    slm = FakeModel(slots)
    plan = {"subtasks": [{"id": "s", "agent": "extraction", "options": {"types": SLOTS, "examples": [SONG]}}]}
    result = await moa.arun("find the slots", input=["put Yesterday on my Rainy Day playlist"], plan=plan, slm=slm, llm=slm)
    item = result.results["s"].items[0]
    assert [e.model_dump() for e in item.output.entities] == [{"text": "Rainy Day", "type": "playlist", "start": 20, "end": 29}]
    assert SONG["text"] in prompt_of(requests[0]) and "Tim Cook" not in prompt_of(requests[0])
    bad = {"subtasks": [{"id": "s", "agent": "extraction", "options": {"types": SLOTS, "examples": [{"text": "play Help", "entities": [{"text": "Help", "type": "song"}]}]}}]}
    failed = await moa.arun("find the slots", input=["play Yesterday"], plan=bad, slm=slm, llm=slm)
    assert failed.results["s"].status == "failed" and "has entity type 'song'" in (failed.results["s"].reason or "")

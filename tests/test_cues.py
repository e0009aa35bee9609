"""The words the router planner reads besides embedding similarity (moa.workflow.cues)."""

from __future__ import annotations

import pytest

from moa.workflow.cues import clause_cues, filter_lead, filter_options, flags_only, negated

NAMES = ["sentiment", "extraction", "filtering", "retrieval"]


@pytest.mark.parametrize(
    ("clause", "options"),
    [
        ("Filter out spam", {"criterion": "spam", "mode": "drop"}),
        ("Please keep only customer service complaints", {"criterion": "customer service complaints", "mode": "keep"}),
        ("I only want the tickets that mention a refund", {"criterion": "tickets that mention a refund", "mode": "keep"}),
        ("Look only at comments on pricing", {"criterion": "comments on pricing", "mode": "keep"}),
        ("Filter the messages down to those about shipping delays", {"criterion": "about shipping delays", "mode": "keep"}),
        ("except the spam ones", {"criterion": "spam ones", "mode": "drop"}),
        ("First get rid of spam", {"criterion": "spam", "mode": "drop"}),
    ],
)
def test_filter_mode_and_criterion_come_from_the_clause(clause: str, options: dict[str, str]) -> None:
    assert filter_lead(clause)
    assert filter_options(clause) == options


def test_negations_say_what_is_not_wanted() -> None:
    assert negated("no entity extraction needed") and negated("Don't filter anything") and negated("I don't need the sentiment")
    assert not negated("Don't analyse spam") and not negated("Get the sentiment of the reviews that are not spam")


def test_cue_words_name_the_agents_a_clause_asks_for() -> None:
    assert clause_cues("Get the sentiment of the reviews that are not spam", NAMES) == ["sentiment", "filtering"]
    assert clause_cues("Search the knowledge base for reviews of the Berlin hotel", NAMES) == ["retrieval"]
    assert clause_cues("who is mentioned", NAMES) == ["extraction"]
    assert clause_cues("Keep only the reviews about delivery", NAMES) == ["filtering"]
    assert clause_cues("Keep only the reviews about delivery", ["sentiment"]) == []  # only agents in the catalogue
    assert clause_cues("Detect the tone of each comment", NAMES) == ["sentiment"]


def test_a_filter_that_only_asks_which_items_match_removes_none() -> None:
    assert flags_only("whether it is spam") and flags_only("Mark which messages are spam")
    assert not flags_only("Filter out spam") and not flags_only("Skip the spam")

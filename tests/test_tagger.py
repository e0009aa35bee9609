"""moa.learning.tagger (the CRF entity tagger) and moa.learning.dates (the date recogniser): unit tests.

A tiny synthetic corpus (people and cities in fixed frames) trains a tagger in well under a second;
the fake hashing embedder stands in for MiniLM. The real-data tests are in tests/test_tagger_real.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from moa.errors import ErrorCode, UserError
from moa.learning.dates import find_dates
from moa.learning.specialist import Specialist
from moa.learning.tagger import (
    Tagger,
    _crf_items,
    bio_tags,
    cluster_word,
    features,
    fit_tagger,
    kmeans,
    load_sentences,
    spans_of,
    tokenize,
    train_tagger,
    types_key,
)
from moa.testing import FakeEmbedder

PEOPLE = ["Alice", "Bob", "Carmen", "Dmitri", "Esther", "Farouk", "Greta", "Hiro"]
CITIES = ["Paris", "Lagos", "Lima", "Oslo", "Quito", "Hanoi", "Perth", "Tunis"]
FRAMES = ["{p} lives in {c} .", "yesterday {p} flew to {c} again", "{p} said {c} is lovely", "we met {p} near {c} today"]


def corpus() -> list[tuple[str, list[list[object]]]]:
    out: list[tuple[str, list[list[object]]]] = []
    for i, frame in enumerate(FRAMES * 6):
        p, c = PEOPLE[i % len(PEOPLE)], CITIES[(3 * i) % len(CITIES)]
        text = frame.format(p=p, c=c)
        out.append((text, [["person", text.index(p), text.index(p) + len(p)], ["location", text.index(c), text.index(c) + len(c)]]))
    return out


def test_tokens_are_exact_slices_of_tricky_text() -> None:
    text = "Sony's TV 😀😀 at https://x.co/a?b=1, #PayPal @bob_1 U.S. AT&T co-op don't  Sony"
    tokens = tokenize(text)
    assert all(text[t.start : t.end] == t.text for t in tokens)
    words = [t.text for t in tokens]
    assert words[:2] == ["Sony", "'s"]  # the clitic is its own token: an entity span stops at "Sony"
    assert "https://x.co/a?b=1" in words and "," in words  # the comma after a URL is not part of it
    assert "#PayPal" in words and "@bob_1" in words and "AT&T" in words and "co-op" in words
    assert words.count("😀") == 2
    sony = [t for t in tokens if t.text == "Sony"]
    assert [t.start for t in sony] == [0, text.rindex("Sony")]  # a repeated word keeps each occurrence's offset


def test_url_token_takes_the_whole_address() -> None:
    tokens = tokenize("see https://example.com/path?q=1 now")
    assert [t.text for t in tokens] == ["see", "https://example.com/path?q=1", "now"]


def test_bio_round_trip_with_repeated_words() -> None:
    text = "Paris Hilton visited Paris and Paris"
    tokens = tokenize(text)
    spans = [["person", 0, 12], ["location", 21, 26], ["location", 31, 36]]
    tags = bio_tags(tokens, spans)
    assert tags == ["B-person", "I-person", "O", "B-location", "O", "B-location"]
    assert spans_of(tokens, tags) == [("person", 0, 12), ("location", 21, 26), ("location", 31, 36)]


def test_spans_of_starts_an_entity_at_a_stray_inside_tag() -> None:
    tokens = tokenize("a b c d")
    assert spans_of(tokens, ["I-person", "I-location", "I-location", "O"]) == [("person", 0, 1), ("location", 2, 5)]


def test_features_mark_handles_shape_and_neighbours() -> None:
    rows = features(["@Bob", "loves", "#iPhone7", "NOW"], [3, 1, 2, -1])
    assert rows[0]["low"] == "bob" and rows[0]["at"] == 1.0 and rows[0]["first"] == 1.0
    assert rows[2]["hash"] == 1.0 and rows[2]["shape"] == "xXxd" and rows[2]["cluster"] == "2"
    assert rows[1]["-1:low"] == "bob" and rows[1]["1:cluster"] == "2" and rows[1]["-2:edge"] == 1.0
    assert rows[3]["upper"] == 1.0 and rows[3]["last"] == 1.0
    assert cluster_word("#PayPal") == "paypal" and cluster_word("#") == "#"


def test_fit_tags_unseen_names_in_known_frames_with_exact_spans() -> None:
    tagger, report = fit_tagger(corpus(), params={"max_iterations": 60})
    assert report.types == ["location", "person"] and tagger.key == "types=location,person"
    text = "yesterday Zelda flew to Perth again"
    tagged = tagger.tag(text)
    found = {(k, text[s:e]) for k, s, e in tagged.entities}
    assert ("location", "Perth") in found
    assert 0 < tagged.confidence <= 1
    assert tagger.tag("").entities == [] and tagger.tag("").confidence == 1.0


def test_serving_rule_is_requested_types_within_trained_plus_recognised() -> None:
    tagger, _ = fit_tagger(corpus(), params={"max_iterations": 20})
    assert tagger.serves(["person"])
    assert tagger.serves(["person", "location", "date"], recognised=["date"])
    assert not tagger.serves(["person", "date"])
    assert not tagger.serves(["person", "product"], recognised=["date"])
    assert types_key(["b", "a", "a"]) == "types=a,b"


def test_save_load_round_trip_keeps_model_clusters_and_answers(tmp_path: Path) -> None:
    embedder = FakeEmbedder()
    tagger, report = asyncio.run(train_tagger(embedder, corpus(), params={"max_iterations": 40}, clusters=4, label_map={"x": "y"}, source="synthetic"))
    assert report.clusters == 4 and tagger.centroids is not None and tagger.embedder == "hash64"
    path = tmp_path / "tagger.npz"
    tagger.save(path)
    loaded = Tagger.load(path)
    assert loaded.key == tagger.key and loaded.label_map == {"x": "y"} and loaded.vocabulary == tagger.vocabulary
    assert np.allclose(loaded.centroids, tagger.centroids, atol=1e-3)  # type: ignore[arg-type]
    text = "we met Zoran near Oslo today"
    assert loaded.unknown_words(text) == ["zoran"]
    assert asyncio.run(loaded.atag(text, embedder)) == asyncio.run(tagger.atag(text, embedder))
    assert loaded.unknown_words(text) == []  # the new word's cluster is remembered


def test_the_span_typer_is_trained_saved_and_loaded(tmp_path: Path) -> None:
    embedder = FakeEmbedder()
    tagger, report = asyncio.run(train_tagger(embedder, corpus(), params={"max_iterations": 40}, clusters=4))
    assert tagger.typer is not None and tagger.typer.classes == ["location", "person"] and tagger.typer.embedder == "hash64"
    assert report.typer_spans == 2 * len(corpus()) and report.typer_holdout_accuracy is not None
    path = tmp_path / "tagger.npz"
    tagger.save(path)
    loaded = Tagger.load(path)
    assert loaded.typer is not None and loaded.typer.classes == tagger.typer.classes
    assert np.array_equal(loaded.typer.weights, tagger.typer.weights) and np.array_equal(loaded.typer.bias, tagger.typer.bias)
    assert loaded.typer.temperature == tagger.typer.temperature and loaded.typer.trained_on == tagger.typer.trained_on
    for text in ("we met Zoran near Oslo today", "Hiro said Lima is lovely"):
        assert asyncio.run(loaded.atag(text, embedder)) == asyncio.run(tagger.atag(text, embedder))
    untyped, report = asyncio.run(train_tagger(embedder, corpus(), params={"max_iterations": 10}, clusters=4, typer=False))
    assert untyped.typer is None and report.typer_spans == 0
    untyped.save(path)
    assert Tagger.load(path).typer is None


def test_the_span_typer_changes_types_never_spans() -> None:
    embedder = FakeEmbedder()
    tagger, _ = asyncio.run(train_tagger(embedder, corpus(), params={"max_iterations": 40}, clusters=4))
    texts = ["we met Zoran near Oslo today", "yesterday Greta flew to Quito again", "Bob lives in Hanoi ."]
    for text in texts:
        crf, typed = tagger.tag(text), asyncio.run(tagger.atag(text, embedder))
        assert [e[1:] for e in typed.entities] == [e[1:] for e in crf.entities] and crf.entities
    # a typer sure that everything is a location overrules the CRF's types, and keeps its spans
    tagger.typer = Specialist(classes=["location", "person"], weights=np.zeros((64, 2)), bias=np.array([40.0, 0.0]), embedder="hash64")
    for text in texts:
        crf, typed = tagger.tag(text), asyncio.run(tagger.atag(text, embedder))
        assert typed.entities == [("location", s, e) for _, s, e in crf.entities]
    with pytest.raises(ValueError, match="not among"):
        Tagger(tagger.model, types=tagger.types, typer=Specialist(classes=["person", "product"], weights=np.zeros((64, 2)), bias=np.zeros(2)))


def test_a_tagger_refuses_words_embedded_by_another_embedder() -> None:
    tagger, _ = asyncio.run(train_tagger(FakeEmbedder(), corpus(), params={"max_iterations": 10}, clusters=3))

    class Other(FakeEmbedder):
        @property
        def name(self) -> str:
            return "other"

    with pytest.raises(UserError) as info:
        asyncio.run(tagger.atag("Zoran went to Oslo", Other()))
    assert info.value.code == ErrorCode.BAD_CONFIG and "hash64" in info.value.message


def test_corrupt_or_missing_file_says_how_to_fix(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    for path in (bad, tmp_path / "missing.npz"):
        with pytest.raises(UserError) as info:
            Tagger.load(path)
        assert info.value.code == ErrorCode.INPUT_FILE and "moa train extraction" in info.value.message


def test_no_entities_is_an_error() -> None:
    with pytest.raises(UserError) as info:
        fit_tagger([("nothing here", [])])
    assert info.value.code == ErrorCode.BAD_DATA


def test_kmeans_is_deterministic_and_unit_length() -> None:
    x = np.random.default_rng(1).normal(size=(50, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    a, b = kmeans(x, 5, seed=0), kmeans(x, 5, seed=0)
    assert np.array_equal(a, b) and np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)


def test_load_sentences_maps_and_drops_types(tmp_path: Path) -> None:
    path = tmp_path / "d.conll"
    path.write_text("Sony\tB-corporation\nrocks\tO\nin\tO\nTokyo\tB-location\nwith\tO\nHamlet\tB-creative-work\n\n")
    [(text, spans)] = load_sentences(path, {"corporation": "organization", "creative-work": "O"})
    assert text == "Sony rocks in Tokyo with Hamlet"
    assert spans == [["organization", 0, 4], ["location", 14, 19]]


@pytest.mark.parametrize(
    ("text", "dates"),
    [
        ("Maria flew to Berlin in March 2024 and back two days later on Monday.", ["March 2024", "two days", "Monday"]),
        ("It shipped on May 5th, 2023, not the 3rd of March.", ["May 5th, 2023", "3rd of March"]),
        ("Paid 2024-03-05 and 05/03/2024; see you tomorrow, last week I waited 3 weeks.", ["2024-03-05", "05/03/2024", "tomorrow", "last week", "3 weeks"]),
        ("Open since 1998, closed in 2019 for a few months", ["1998", "2019", "a few months"]),
        ("On tuesday: Dec. 5, 2023 or January", ["tuesday", "Dec. 5, 2023", "January"]),
    ],
)
def test_dates_found(text: str, dates: list[str]) -> None:
    assert [text[s:e] for s, e in find_dates(text)] == dates


@pytest.mark.parametrize(
    "text",
    ["You may march with us", "I have 2019 reasons and 300 coins", "The Galaxy phone is URGENT", "Order 12 now", "a day at the beach"],
)
def test_no_date_in_words_that_only_look_like_one(text: str) -> None:
    assert find_dates(text) == []


def test_closed_class_words_are_trimmed_from_entity_edges() -> None:
    from moa.learning.tagger import _trimmed

    text = "The Sony headphones of my"
    tokens = tokenize(text)
    assert _trimmed(tokens, [("product", 0, len(text)), ("person", 20, 25)]) == [("product", 4, 19)]


def test_min_outside_zero_is_the_best_path_and_higher_values_add_entity_tokens() -> None:
    tagger, _ = fit_tagger(corpus(), params={"max_iterations": 30, "min_outside": 0.0})
    text = "we met Zelda near Quito today and Bob said Lima is lovely"
    tokens = tokenize(text)
    tagger._crf.set(_crf_items(features([t.text for t in tokens])))
    best = spans_of(tokens, tagger._crf.tag())
    assert tagger.tag(text).entities == best

    def covered(spans: list[tuple[str, int, int]]) -> int:
        return sum(e - s for _, s, e in spans)

    tagger.params["min_outside"] = 0.999
    assert covered(tagger.tag(text).entities) > covered(best)

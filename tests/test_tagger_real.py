"""The entity tagger on real data: WNUT-17 (tweets; CC BY 4.0) and everyday sentences.

* A tagger trained on 1,500 sentences of ``wnut17_train.conll`` (word features only, so no embedder
  and a quick fit) scores entity F1 0.26 on the first 300 sentences of ``wnut17_dev.conll``
  (measured); the bar, 0.22, is above the slm (Gemma 3 270M: 0.20 on 100 dev sentences), so a
  regression in tokens, features, BIO conversion or decoding fails it.
* The shipped tagger (full train split, 256 MiniLM word clusters, span typer) scores F1 0.447 on the
  whole dev set with the WNUT types mapped as it was trained (corporation and group → organization),
  0.406 on the first 300 sentences; the bar there is 0.33. Its span typer changes types, never spans,
  and types more of the spans the CRF found right than the CRF alone (all of dev: 304 against 291 of
  368; the first 300 sentences 90 against 89 of 110, bar: at most 2 fewer).
* Everyday sentences through the extraction agent's specialist: companies and brands are never
  people, alert words in capitals are no entity, people and cities get their types; well-known
  companies in everyday complaints and news (20 sentences, none from the quickstart) are typed
  organization (measured 10 of 20 with the typer, 11 with the CRF alone; 14 found at all; bar 8) and
  rarely person (measured 1; bar 3).

Skipped when the public data is absent (the everyday sentences need none).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.eval_data import EVAL, needs_eval

from moa import RunContext, Settings
from moa.agents.extraction import SHIPPED_TAGGER
from moa.agents.extraction import agent as extraction
from moa.eval.metrics import entity_prf
from moa.learning.tagger import Tagger, fit_tagger, load_sentences
from moa.models.embeddings import MiniLMEmbedder

pytestmark = pytest.mark.real

WNUT = EVAL / "extraction"
TO_ORGANIZATION = {"corporation": "organization", "group": "organization"}


@needs_eval
def test_a_tagger_trained_on_a_sample_of_wnut_train_beats_the_slm_on_dev() -> None:
    train = load_sentences(WNUT / "wnut17_train.conll")
    dev = load_sentences(WNUT / "wnut17_dev.conll")[:300]
    picked = sorted(np.random.default_rng(0).permutation(len(train))[:1500].tolist())
    tagger, report = fit_tagger([train[i] for i in picked], params={"max_iterations": 100})
    assert report.types == ["corporation", "creative-work", "group", "location", "person", "product"]
    scores = entity_prf([[list(e) for e in tagger.tag(text).entities] for text, _ in dev], [gold for _, gold in dev])
    assert scores["f1"] > 0.22, scores


@needs_eval
async def test_the_shipped_tagger_on_wnut_dev() -> None:
    tagger, embedder = Tagger.load(SHIPPED_TAGGER), MiniLMEmbedder()
    dev = load_sentences(WNUT / "wnut17_dev.conll", TO_ORGANIZATION)[:300]
    predicted = [[list(e) for e in (await tagger.atag(text, embedder)).entities] for text, _ in dev]
    scores = entity_prf(predicted, [gold for _, gold in dev])
    assert scores["f1"] > 0.33, scores
    assert tagger.typer is not None
    crf_only = [[list(e) for e in tagger.tag(text).entities] for text, _ in dev]
    assert [[e[1:] for e in p] for p in predicted] == [[e[1:] for e in p] for p in crf_only]  # the typer changes types only
    typed_right = {"crf": 0, "typer": 0}
    for (_, gold), with_typer, alone in zip(dev, predicted, crf_only, strict=True):
        spans = {(s, e): kind for kind, s, e in gold}
        typed_right["typer"] += sum(spans.get((s, e)) == kind for kind, s, e in with_typer)
        typed_right["crf"] += sum(spans.get((s, e)) == kind for kind, s, e in alone)
    assert typed_right["typer"] >= typed_right["crf"] - 2, typed_right


EVERYDAY = [
    "I bought a Samsung TV and it broke after a week.",
    "PayPal charged me twice for the same order.",
    "Google and Microsoft announced new AI tools in Seattle.",
    "Barack Obama met Angela Merkel in Berlin.",
    "Taylor Swift played a concert in Chicago last night.",
    "Nike shoes are great, way better than Adidas.",
    "URGENT: your Netflix account is on hold, reply NOW to claim a FREE gift!",
    "WINNER!! Call today to claim your prize.",
]
COMPANIES = {"Samsung", "PayPal", "Google", "Microsoft", "Nike", "Adidas", "Netflix"}
PEOPLE = {"Barack Obama", "Angela Merkel", "Taylor Swift"}
CITIES = {"Seattle", "Berlin", "Chicago"}
ALERTS = {"URGENT", "NOW", "FREE", "WINNER"}


async def test_everyday_sentences_get_sensible_types(tmp_path: Path) -> None:
    settings = Settings(memory_dir=tmp_path / "memory", state_dir=tmp_path / "state", cache=False, cascade=["specialist"])
    ctx = RunContext.create(settings)
    runs = await extraction.run_batch(ctx, [extraction.make_input(text, {}) for text in EVERYDAY])
    found = [(e.text, e.type) for run in runs for e in run.output.entities]  # type: ignore[union-attr]
    assert all(run.answered_by == "specialist" for run in runs)
    assert not [f for f in found if f[0] in COMPANIES and f[1] == "person"], found
    assert not [f for f in found if f[0] in ALERTS], found
    assert {f[0] for f in found if f[1] == "person"} >= PEOPLE, found
    assert {f[0] for f in found if f[1] == "location"} >= CITIES, found
    assert ("last night", "date") in found and ("today", "date") in found, found
    await ctx.aclose()


COMPANY_SENTENCES = [
    ("I ordered a laptop from Amazon and it arrived late.", "Amazon"),
    ("Google fined for breaking privacy rules in Europe.", "Google"),
    ("Microsoft is hiring engineers in Dublin.", "Microsoft"),
    ("Walmart cut prices on groceries this week.", "Walmart"),
    ("I called Verizon about my bill and waited an hour.", "Verizon"),
    ("Starbucks opened a new cafe near my office.", "Starbucks"),
    ("Netflix raised its subscription price again.", "Netflix"),
    ("My refund from eBay finally came through.", "eBay"),
    ("Uber charged me for a ride I never took.", "Uber"),
    ("IKEA delivered the wrong wardrobe.", "IKEA"),
    ("The bank told me to contact Visa about the charge.", "Visa"),
    ("Toyota recalled thousands of cars over a brake problem.", "Toyota"),
    ("I have worked at Deloitte for five years.", "Deloitte"),
    ("Facebook deleted my post without explaining why.", "Facebook"),
    ("Shares of Intel fell after the earnings report.", "Intel"),
    ("We flew with Lufthansa and lost our bags.", "Lufthansa"),
    ("FedEx lost my package twice.", "FedEx"),
    ("Apple announced record profits on Thursday.", "Apple"),
    ("Spotify removed my favourite playlist.", "Spotify"),
    ("The CEO of Tesla posted another strange tweet.", "Tesla"),
]


async def test_well_known_companies_in_everyday_sentences_are_mostly_organizations() -> None:
    tagger, embedder = Tagger.load(SHIPPED_TAGGER), MiniLMEmbedder()
    types: dict[str, str] = {}
    for text, company in COMPANY_SENTENCES:
        found = {text[s:e]: kind for kind, s, e in (await tagger.atag(text, embedder)).entities}
        if company in found:
            types[company] = found[company]
    organizations = [c for c, kind in types.items() if kind == "organization"]
    people = [c for c, kind in types.items() if kind == "person"]
    assert len(organizations) >= 8 and len(people) <= 3, types

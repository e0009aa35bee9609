from __future__ import annotations

import math

import pytest

from moa.agent.confidence import calibrate, choice_confidence, choice_probs
from moa.models.base import Generation, TokenLogprob


def _gen() -> Generation:
    # tokens: {"  label  ":  "  pos|itive  "}
    return Generation(
        text='{"label":"positive"}',
        logprobs=[
            TokenLogprob(token='{"', logprob=-0.1),
            TokenLogprob(token="label", logprob=-0.1),
            TokenLogprob(token='":"', logprob=-0.1),
            TokenLogprob(token="positive", logprob=math.log(0.6), top={"positive": math.log(0.6), "negative": math.log(0.2), "good": math.log(0.1)}),
            TokenLogprob(token='"}', logprob=-0.01),
        ],
    )


def test_probability_is_normalised_over_allowed_labels() -> None:
    probs = choice_probs(_gen(), ["positive", "negative"], "positive")
    assert probs == pytest.approx({"positive": 0.75, "negative": 0.25})
    assert choice_confidence(_gen(), ["positive", "negative"], "positive") == pytest.approx(0.75)


def test_label_split_across_tokens_is_matched_by_prefix() -> None:
    gen = Generation(
        text='{"label": "negative"}',
        logprobs=[
            TokenLogprob(token='{"label": "', logprob=0.0),
            TokenLogprob(token="ne", logprob=math.log(0.5), top={"ne": math.log(0.5), "pos": math.log(0.5)}),
            TokenLogprob(token='gative"}', logprob=0.0),
        ],
    )
    assert choice_confidence(gen, ["positive", "negative"], "negative") == pytest.approx(0.5)


def test_no_logprobs_gives_none() -> None:
    assert choice_confidence(Generation(text='{"label":"positive"}'), ["positive"], "positive") is None


def test_calibration_divides_out_the_prior() -> None:
    calibrated = calibrate({"spam": 0.8, "ham": 0.2}, {"spam": 0.9, "ham": 0.1})
    assert calibrated["ham"] > calibrated["spam"]
    assert sum(calibrated.values()) == pytest.approx(1.0)

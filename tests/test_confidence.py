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


def test_the_label_is_found_in_the_tokens_when_the_server_strips_a_fence() -> None:
    """llama.cpp's chat endpoint returns the message without the ```json fence it generated."""
    gen = Generation(
        text='{"label": "yes"}',
        logprobs=[
            TokenLogprob(token="```", logprob=-9.0),
            TokenLogprob(token="json", logprob=-2.0),
            TokenLogprob(token="\n", logprob=0.0),
            TokenLogprob(token='{"label": "', logprob=0.0),
            TokenLogprob(token="yes", logprob=math.log(0.7), top={"yes": math.log(0.7), "no": math.log(0.3)}),
            TokenLogprob(token='"}', logprob=0.0),
        ],
    )
    assert choice_probs(gen, ["yes", "no"], "yes", "label") == pytest.approx({"yes": 0.7, "no": 0.3})


def test_the_label_is_the_fields_value_not_an_earlier_word() -> None:
    """A reason before the label has "no" in "not": the label's token is after ``"label": "``, and a
    longer word is not the label."""
    gen = Generation(
        text='{"reason": "It is not spam", "label": "no"}',
        logprobs=[
            TokenLogprob(token='{"reason": "It is ', logprob=0.0),
            TokenLogprob(token="not", logprob=math.log(0.5), top={"not": math.log(0.5), "no": math.log(0.2), "a": math.log(0.3)}),
            TokenLogprob(token=' spam", "label": "', logprob=0.0),
            TokenLogprob(token="no", logprob=math.log(0.6), top={"no": math.log(0.6), "yes": math.log(0.2), "nothing": math.log(0.2)}),
            TokenLogprob(token='"}', logprob=0.0),
        ],
    )
    assert choice_probs(gen, ["yes", "no"], "no", "label") == pytest.approx({"yes": 0.25, "no": 0.75})
    assert choice_probs(gen, ["yes", "no"], "no") == pytest.approx({"yes": 0.0, "no": 1.0})  # without the field: the first "no"

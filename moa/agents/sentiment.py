"""Sentiment agent: a label from a configurable label set, and a confidence in [0, 1].

Confidence: the probability the model gave the label's first token, normalised over the allowed
labels (token log-probabilities) and, for base models, calibrated against a content-free input
(:mod:`moa.agent.confidence`); the label is the most probable one. Backends without logprobs: the
model's own score (chat models are asked for one).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model, field_validator

from moa.kit import Capabilities, Example, Generation, Message, ModelAgent

DEFAULT_LABELS = ("positive", "negative", "neutral")
_LABEL_WORDS = re.compile(rf"\b({'|'.join(DEFAULT_LABELS)})\b", re.IGNORECASE)
_WORD_LIST = re.compile(r"\b[a-z]+(?:\s*,\s*[a-z]+){0,6}\s*,?\s+(?:or|and)\s+[a-z]+\b|\b[a-z]+(?:\s*/\s*[a-z]+){1,7}\b", re.IGNORECASE)
"""A list of single words: "positive, negative or mixed", "positive/negative/neutral". The
repeats are bounded (a list of labels is short), so a long task is read in linear time."""
_LIST_SEPARATOR = re.compile(r"\s*(?:,|/|\bor\b|\band\b)\s*", re.IGNORECASE)
MAX_NAMED_LABELS = 6

_SHOTS = (
    ("I loved every minute of it, the cast is wonderful.", "positive"),
    ("The service was slow and the food arrived cold.", "negative"),
    ("The package arrived on Tuesday.", "neutral"),
    ("Absolutely brilliant, I would buy it again.", "positive"),
    ("A dull, tedious waste of two hours.", "negative"),
    ("The manual has twelve pages.", "neutral"),
)


class SentimentInput(BaseModel):
    """A text to classify."""

    text: str = Field(min_length=1)
    """The text."""
    labels: list[str] = Field(default_factory=lambda: list(DEFAULT_LABELS), min_length=2)
    """Allowed labels."""

    @field_validator("labels")
    @classmethod
    def _distinct(cls, labels: list[str]) -> list[str]:
        if len(set(labels)) != len(labels):
            raise ValueError("labels must be distinct")
        return labels


class Sentiment(BaseModel):
    """The sentiment of a text."""

    label: str
    """One of the allowed labels."""
    confidence: float = Field(ge=0, le=1)
    """How sure the model is (see the module docstring for how it is computed)."""


class SentimentAgent(ModelAgent[SentimentInput, Sentiment, BaseModel]):
    name = "sentiment"
    description = "Classifies the sentiment or opinion of each text (positive, negative, neutral) with a confidence."
    examples = (
        "what is the sentiment of these reviews",
        "classify the opinion of each message as positive or negative",
        "how do customers feel about the product",
        "detect the tone and mood of the comments",
    )
    input_type = SentimentInput
    output_type = Sentiment
    threshold = 0.7

    def decode_type(self, data: SentimentInput, caps: Capabilities) -> type[BaseModel]:
        return _decision(tuple(data.labels), caps.logprobs)

    def completion_prompt(self, data: SentimentInput) -> str:
        return self.completion_prompt_with(data, ())

    def completion_prompt_with(self, data: SentimentInput, examples: Sequence[Example]) -> str:
        shots = [(t, lab) for t, lab in _SHOTS if lab in data.labels]
        shots += [(" ".join(e.text.split()), e.label) for e in examples if e.label in data.labels]  # after the fixed shots: the shared prefix stays cached
        lines = [f"Classify the sentiment of each text as one of: {', '.join(data.labels)}.", ""]
        for text, label in shots:
            lines += [f"Text: {text}", f'Output: {{"label":"{label}"}}', ""]
        lines += [f"Text: {' '.join(data.text.split())}", "Output: "]
        return "\n".join(lines)

    def chat_messages(self, data: SentimentInput) -> list[Message]:
        return [
            Message(
                role="system",
                content=f"Classify the sentiment of the user's text as one of: {', '.join(data.labels)}. "
                "Answer with JSON: the label and your confidence between 0 and 1.",
            ),
            Message(role="user", content=data.text),
        ]

    def choices(self, data: SentimentInput) -> list[str]:
        return data.labels

    def from_label(self, data: SentimentInput, label: str, confidence: float) -> Sentiment:
        return Sentiment(label=label, confidence=confidence)

    def options_for_labels(self, labels: Sequence[str]) -> dict[str, Any]:
        known = [lab for lab in DEFAULT_LABELS if lab in labels]
        return {"labels": known + sorted(set(labels) - set(known))}

    def options_from_task(self, task: str) -> dict[str, Any]:
        """Two or more of the known labels named in the task choose the label set: "positive or
        negative sentiment of each review" → ``{"labels": ["positive", "negative"]}``. A list of
        words that names two known labels gives its other words too: "positive, negative or
        mixed" → ``["positive", "negative", "mixed"]``."""
        named = {word.lower() for word in _LABEL_WORDS.findall(task)}
        if len(named) < 2:
            return {}
        for found in _WORD_LIST.finditer(task):
            words = [w.lower() for w in _LIST_SEPARATOR.split(found.group()) if w]
            modifies = _LABEL_WORDS.match(task[found.end() :].lstrip())  # "... or very positive": not a list of labels
            longer = task[: found.start()].rstrip().endswith((",", "/"))  # the tail of a list too long to be labels
            if not modifies and not longer and len(set(words) & named) >= 2 and len(words) == len(set(words)) <= MAX_NAMED_LABELS:
                named |= set(words)
        return self.options_for_labels(sorted(named))

    def task_wording(self, options: dict[str, Any]) -> str | None:
        labels = options.get("labels")
        if not isinstance(labels, list) or len(labels) < 2 or not set(labels) <= set(DEFAULT_LABELS):
            return None
        return f"{', '.join(labels[:-1])} or {labels[-1]}"

    def finish(self, data: SentimentInput, decoded: BaseModel, gen: Generation, probs: dict[str, float] | None) -> Sentiment:
        if probs:
            label = max(probs, key=probs.__getitem__)
            return Sentiment(label=label, confidence=round(probs[label], 4))
        return Sentiment(label=str(decoded.label), confidence=float(getattr(decoded, "confidence", 0.5)))  # type: ignore[attr-defined]


@lru_cache(maxsize=128)
def _decision(labels: tuple[str, ...], logprobs: bool) -> type[BaseModel]:
    """The decode model for one label set, built once (pydantic classes are costly to create)."""
    label_type = Literal[labels]  # type: ignore[valid-type]
    if logprobs:
        return create_model("SentimentDecision", label=(label_type, ...))
    return create_model("SentimentDecision", label=(label_type, ...), confidence=(float, Field(ge=0, le=1)))


agent = SentimentAgent()

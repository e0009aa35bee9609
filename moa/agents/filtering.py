"""Filtering agent: keep or drop a text by a criterion given in words (spam, toxic, off-topic...).

The model answers whether the text *matches* the criterion; ``mode="drop"`` (default: "filter out
spam") drops matching texts, ``mode="keep"`` ("keep only questions about billing") keeps only
matching ones.

On base models the answer is a label of a few-shot completion (``spam``/``ham`` for spam,
``yes``/``no`` otherwise); its probabilities come from token log-probabilities and are
calibrated against content-free inputs, because small base models answer "spam" to almost
anything (measured: 89 of 100 SMS before calibration). The confidence is the calibrated
probability of the decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model

from moa.kit import Capabilities, Example, Generation, Message, ModelAgent

_SPAM_SHOTS = (
    ("WINNER!! You have won a £1000 prize. Call 09061701461 now to claim.", True),
    ("Are we still meeting for lunch at noon?", False),
    ("Free entry in a weekly competition! Text WIN to 80086 to receive your reward.", True),
    ("ok i'll call you when i get home", False),
    ("URGENT: your account is suspended, click http://bit.ly/x to verify.", True),
    ("The hotel was clean and the staff were friendly.", False),
    ("Did you see the game last night? Crazy ending", False),
)
_GENERIC_SHOTS = (
    ("Buy cheap watches now!!! Visit our site for 90% off", "advertising", True),
    ("Thanks for the quick delivery.", "advertising", False),
    ("You are an idiot and everyone hates you.", "toxic language", True),
    ("I disagree with your point about pricing.", "toxic language", False),
    ("How do I reset my password?", "questions about accounts", True),
    ("The weather is lovely today.", "questions about accounts", False),
)


class FilterInput(BaseModel):
    """A text and the criterion to filter by."""

    text: str = Field(min_length=1)
    """The text."""
    criterion: str = "spam"
    """What to look for, in words: ``spam``, ``toxic language``, ``off-topic for a cooking forum``..."""
    mode: Literal["drop", "keep"] = "drop"
    """``drop`` texts that match the criterion, or ``keep`` only those that do."""
    pass_unsure: float | None = Field(None, ge=0, le=1)
    """Also pass texts whose decision has a confidence below this (a gate that lets a larger
    model look at what the small one is unsure of; the ``triage`` graph sets it)."""


class FilterDecision(BaseModel):
    """Whether to keep a text, and why."""

    keep: bool
    """True when the text passes the filter."""
    matches: bool
    """True when the text matches the criterion."""
    reason: str
    """Why (the model's reason for chat models without token probabilities; the decision and its confidence otherwise)."""
    confidence: float = Field(ge=0, le=1)
    """How sure the model is of ``matches``."""
    unsure: bool = False
    """Passed although it would have been filtered, because the confidence is below ``pass_unsure``."""


def _decision(data: FilterInput, matches: bool, reason: str, confidence: float) -> FilterDecision:
    keep = matches if data.mode == "keep" else not matches
    unsure = not keep and data.pass_unsure is not None and confidence < data.pass_unsure
    return FilterDecision(keep=keep or unsure, matches=matches, reason=reason, confidence=round(confidence, 4), unsure=unsure)


def _is_spam(criterion: str) -> bool:
    return "spam" in criterion.lower()


class FilteringAgent(ModelAgent[FilterInput, FilterDecision, BaseModel]):
    name = "filtering"
    description = "Filters texts by a criterion given in words: drops spam, toxic or off-topic messages, or keeps only relevant ones."
    examples = (
        "filter out spam",
        "remove spam and junk messages",
        "drop toxic or abusive comments",
        "keep only messages that are about billing",
        "discard off-topic posts",
    )
    input_type = FilterInput
    output_type = FilterDecision
    calibration_inputs = ("N/A", "", "[MASK]")
    threshold = 0.7

    def choices(self, data: FilterInput) -> list[str]:
        return ["spam", "ham"] if _is_spam(data.criterion) else ["yes", "no"]

    def decode_type(self, data: FilterInput, caps: Capabilities) -> type[BaseModel]:
        return _answer(tuple(self.choices(data)), caps.logprobs, caps.chat)

    def completion_prompt(self, data: FilterInput) -> str:
        return self.completion_prompt_with(data, ())

    def completion_prompt_with(self, data: FilterInput, examples: Sequence[Example]) -> str:
        text = " ".join(data.text.split())
        first, second = self.choices(data)
        stored = [(" ".join(e.text.split()), e.label == first) for e in examples if e.label in (first, second)]
        if _is_spam(data.criterion):
            lines = ["Label each message as spam or ham.", ""]
            for shot, spam in [*_SPAM_SHOTS, *stored]:  # stored examples after the fixed shots: the shared prefix stays cached
                lines += [f"Message: {shot}", f'Output: {{"label":"{"spam" if spam else "ham"}"}}', ""]
            return "\n".join([*lines, f"Message: {text}", "Output: "])
        lines = ["Does the message match the criterion? Answer yes or no.", ""]
        shots = [*_GENERIC_SHOTS, *((shot, data.criterion, match) for shot, match in stored)]
        for shot, criterion, match in shots:
            lines += [f"Criterion: {criterion}", f"Message: {shot}", f'Output: {{"label":"{"yes" if match else "no"}"}}', ""]
        return "\n".join([*lines, f"Criterion: {data.criterion}", f"Message: {text}", "Output: "])

    def chat_messages(self, data: FilterInput) -> list[Message]:
        first, second = self.choices(data)
        return [
            Message(
                role="system",
                content=f"Decide whether the user's message matches this criterion: {data.criterion}. "
                f"Answer '{first}' if it matches, '{second}' if not, in the JSON format asked for.",
            ),
            Message(role="user", content=data.text),
        ]

    def specialist_key(self, data: FilterInput) -> str:
        return f"criterion={' '.join(data.criterion.lower().split())}"

    def label_of(self, data: FilterInput, output: BaseModel) -> str:
        first, second = self.choices(data)
        return first if output.matches else second  # type: ignore[attr-defined]

    def from_label(self, data: FilterInput, label: str, confidence: float) -> FilterDecision:
        return _decision(data, label == self.choices(data)[0], f"specialist: {label} (p={confidence:.2f})", confidence)

    def finish(self, data: FilterInput, decoded: BaseModel, gen: Generation, probs: dict[str, float] | None) -> FilterDecision:
        label = max(probs, key=probs.__getitem__) if probs else str(decoded.label)  # type: ignore[attr-defined]
        matches = label == self.choices(data)[0]
        confidence = probs[label] if probs else float(getattr(decoded, "confidence", 0.5))
        reason = getattr(decoded, "reason", None) or (
            f"{'matches' if matches else 'does not match'} '{data.criterion}' (p={confidence:.2f})"
        )
        return _decision(data, matches, reason, confidence)

    def forward(self, item: str, output: BaseModel) -> list[str]:
        return [item] if output.keep else []  # type: ignore[attr-defined]


@lru_cache(maxsize=32)
def _answer(choices: tuple[str, ...], logprobs: bool, chat: bool) -> type[BaseModel]:
    """The decode model for one pair of choices, built once (pydantic classes are costly to create)."""
    label: Any = (Literal[choices], ...)  # type: ignore[valid-type]
    if logprobs:
        # The label comes first and alone: its token's probability is then the model's reading of
        # the message, not of a reason it wrote before (which has decided the label in words), and
        # no reason tokens are paid for (Qwen2.5-Coder 1.5B, 100 offensive-val tweets: AUC 0.77).
        return create_model("FilterAnswer", label=label)
    if chat:
        return create_model("FilterAnswer", reason=(str, Field(max_length=300)), label=label, confidence=(float, Field(ge=0, le=1)))
    return create_model("FilterAnswer", label=label, confidence=(float, Field(ge=0, le=1)))

agent = FilteringAgent()

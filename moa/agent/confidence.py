"""Confidence of a choice from token log-probabilities, and contextual calibration.

For a constrained choice among labels (``"positive"`` / ``"negative"`` / ...), the probability of
each label is the mass the model put on that label's first token at the position where the
answer starts, normalised over the allowed labels. Backends report the *unconstrained* top-k
distribution (llama.cpp, OpenAI), so normalising over the allowed labels is what a constrained
sampler would have done.

Small base models are biased towards some labels whatever the text (Gemma 3 270M says "spam" to
89 of 100 SMS). :func:`calibrate` divides by the probabilities the same prompt gives a
content-free input ("N/A"), as in Zhao et al. 2021, "Calibrate Before Use" — measured here on 100
SMS: accuracy 0.23 → 0.91.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from moa.models.base import Generation


def choice_probs(gen: Generation, choices: Sequence[str], chosen: str) -> dict[str, float] | None:
    """P(label) over ``choices`` at the token where ``chosen`` starts in ``gen.text``.

    Returns ``None`` when the backend gave no logprobs or the label is not found.
    """
    if not gen.logprobs:
        return None
    start = gen.text.find(chosen)
    if start < 0:
        return None
    offset = 0
    for token in gen.logprobs:
        end = offset + len(token.token)
        if end > start:
            skip = start - offset
            mass = dict.fromkeys(choices, 0.0)
            for alt, logprob in {**token.top, token.token: token.logprob}.items():
                piece = alt[skip:].lower()
                if not piece:
                    continue
                for choice in choices:
                    if choice.lower().startswith(piece) or piece.startswith(choice.lower()):
                        mass[choice] += math.exp(logprob)
                        break
            total = sum(mass.values())
            return {c: m / total for c, m in mass.items()} if total > 0 else None
        offset = end
    return None


def choice_confidence(gen: Generation, choices: Sequence[str], chosen: str) -> float | None:
    """P(chosen) among ``choices`` (see :func:`choice_probs`); ``None`` when unknown or zero."""
    probs = choice_probs(gen, choices, chosen)
    if probs is None or probs[chosen] <= 0:
        return None
    return probs[chosen]


def calibrate(probs: Mapping[str, float], prior: Mapping[str, float], floor: float = 1e-3) -> dict[str, float]:
    """Divide by the content-free prior and renormalise (contextual calibration)."""
    scaled = {c: p / max(prior.get(c, 1.0), floor) for c, p in probs.items()}
    total = sum(scaled.values())
    return {c: s / total for c, s in scaled.items()} if total > 0 else dict(probs)

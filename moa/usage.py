"""Accounting of model calls: one :class:`Usage` per call, summed by :func:`summarize`."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, Field



class Usage(BaseModel):
    """One model call."""

    model: str
    """Model spec that served the call."""
    tier: str | None = None
    """Cascade step the call ran on: ``slm``, ``llm``, ``specialist``, or another model spec
    (``None`` for direct, tier-less calls)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cost: float = 0.0
    """Cost in $ (price per 1k tokens x tokens; local models 0)."""
    agent: str | None = None
    subtask: str | None = None
    cached: bool = False
    """Served from the call cache (cost 0, latency of the lookup)."""
    purpose: str = "agent"
    """What the call was for: ``agent``, ``repair``, ``calibrate``, ``extract``, ``plan``, ``synthesize``, ``tool``."""

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class TierTotals(BaseModel):
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    latency_s: float = 0.0


class UsageSummary(BaseModel):
    """Totals of a run, per tier and overall, with the share that ran on the ``slm`` tier."""

    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost: float
    latency_s: float
    per_tier: dict[str, TierTotals] = Field(default_factory=dict)
    slm_call_share: float
    """Share of model calls served by the ``slm`` tier (0..1; 0 when there were no calls)."""
    slm_token_share: float
    """Share of tokens processed by the ``slm`` tier."""


def summarize(records: Iterable[Usage]) -> UsageSummary:
    per_tier: dict[str, TierTotals] = {}
    for r in records:
        t = per_tier.setdefault(r.tier or "none", TierTotals())
        t.calls += 1
        t.prompt_tokens += r.prompt_tokens
        t.completion_tokens += r.completion_tokens
        t.cost += r.cost
        t.latency_s += r.latency_s
    calls = sum(t.calls for t in per_tier.values())
    tokens = sum(t.prompt_tokens + t.completion_tokens for t in per_tier.values())
    slm = per_tier.get("slm", TierTotals())
    return UsageSummary(
        calls=calls,
        prompt_tokens=sum(t.prompt_tokens for t in per_tier.values()),
        completion_tokens=sum(t.completion_tokens for t in per_tier.values()),
        cost=sum(t.cost for t in per_tier.values()),
        latency_s=sum(t.latency_s for t in per_tier.values()),
        per_tier=per_tier,
        slm_call_share=slm.calls / calls if calls else 0.0,
        slm_token_share=(slm.prompt_tokens + slm.completion_tokens) / tokens if tokens else 0.0,
    )

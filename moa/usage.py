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
    retries: int = 0
    """Requests sent again because their connection broke before the server answered."""
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
    """Sum of call latencies (model time; calls overlap, so this exceeds wall time)."""
    latency_p50: float = 0.0
    latency_p95: float = 0.0
    cache_hits: int = 0
    retries: int = 0
    """Requests sent again because their connection broke before the server answered."""


class UsageSummary(BaseModel):
    """Totals of a run, per tier and overall, with the share that ran on the ``slm`` tier and what
    the same calls would have cost on the ``llm`` tier."""

    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost: float
    latency_s: float
    per_tier: dict[str, TierTotals] = Field(default_factory=dict)
    slm_call_share: float
    """Share of model calls served below the ``llm`` tier (slm, specialist, cache: 0..1)."""
    slm_token_share: float
    """Share of tokens processed below the ``llm`` tier."""
    cache_hits: int = 0
    retries: int = 0
    """Requests sent again because their connection broke before the server answered."""
    all_llm_cost: float | None = None
    """Estimated cost had every call gone to the ``llm`` tier at its price: each call's own token
    counts, and for calls that used no tokens (a local specialist) the agent's mean model call.
    ``None`` when the llm tier has no price configured."""
    saving: float | None = None
    """``all_llm_cost - cost`` in $."""
    saving_pct: float | None = None
    """The saving as a share of ``all_llm_cost`` (0..1)."""


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (rank - low), 4)


def _as_llm_calls(records: list[Usage]) -> list[tuple[float, float]]:
    """(prompt, completion) tokens of each call had it gone to the llm tier: its own tokens, or for
    a call that used none (a local specialist) the mean call of the same agent on a model (of any
    agent when that one made none)."""
    def mean(rows: list[Usage]) -> tuple[float, float]:
        return (sum(r.prompt_tokens for r in rows) / len(rows), sum(r.completion_tokens for r in rows) / len(rows)) if rows else (0.0, 0.0)

    model_calls = [r for r in records if r.tokens]
    by_agent: dict[str | None, tuple[float, float]] = {}
    calls: list[tuple[float, float]] = []
    for r in records:
        if r.tokens:
            calls.append((r.prompt_tokens, r.completion_tokens))
            continue
        if r.agent not in by_agent:
            mine = [m for m in model_calls if m.agent == r.agent and m.purpose == "agent"]
            by_agent[r.agent] = mean(mine or model_calls)
        calls.append(by_agent[r.agent])
    return calls


def summarize(records: Iterable[Usage], *, llm_price: tuple[float, float] | None = None) -> UsageSummary:
    """Sum usage per tier. ``llm_price`` ($ per 1k prompt / completion tokens of the ``llm`` tier)
    prices the all-llm counterfactual."""
    records = list(records)
    per_tier: dict[str, TierTotals] = {}
    latencies: dict[str, list[float]] = {}
    for r in records:
        name = r.tier or "none"
        t = per_tier.setdefault(name, TierTotals())
        t.calls += 1
        t.prompt_tokens += r.prompt_tokens
        t.completion_tokens += r.completion_tokens
        t.cost += r.cost
        t.latency_s += r.latency_s
        t.cache_hits += r.cached
        t.retries += r.retries
        latencies.setdefault(name, []).append(r.latency_s)
    for name, t in per_tier.items():
        t.latency_p50 = _percentile(latencies[name], 0.5)
        t.latency_p95 = _percentile(latencies[name], 0.95)
    calls = sum(t.calls for t in per_tier.values())
    tokens = sum(t.prompt_tokens + t.completion_tokens for t in per_tier.values())
    llm = per_tier.get("llm", TierTotals())
    cost = sum(t.cost for t in per_tier.values())
    all_llm = None
    if llm_price is not None and any(llm_price):
        all_llm = sum((p * llm_price[0] + c * llm_price[1]) / 1000 for p, c in _as_llm_calls(records))
    return UsageSummary(
        calls=calls,
        prompt_tokens=sum(t.prompt_tokens for t in per_tier.values()),
        completion_tokens=sum(t.completion_tokens for t in per_tier.values()),
        cost=cost,
        latency_s=sum(t.latency_s for t in per_tier.values()),
        per_tier=per_tier,
        slm_call_share=(calls - llm.calls) / calls if calls else 0.0,
        slm_token_share=(tokens - llm.prompt_tokens - llm.completion_tokens) / tokens if tokens else 0.0,
        cache_hits=sum(t.cache_hits for t in per_tier.values()),
        retries=sum(t.retries for t in per_tier.values()),
        all_llm_cost=all_llm,
        saving=None if all_llm is None else all_llm - cost,
        saving_pct=None if not all_llm else (all_llm - cost) / all_llm,
    )

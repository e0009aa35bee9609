"""`moa serve`'s per-key request rate: a token bucket per API key, 429 ``rate_limited`` with
``Retry-After`` beyond it; other keys and /healthz are not affected."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.server_load import fake  # noqa: E402
from moa.server import ServerConfig, create_app  # noqa: E402
from moa.server.keys import ApiKey, Keyring, hash_key  # noqa: E402
from moa.server.rate import RateLimited, RateLimiter  # noqa: E402
from moa.settings import load_settings  # noqa: E402


def test_a_bucket_refills_at_its_rate_and_says_when_to_retry() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=0.5, burst=2, clock=lambda: now[0])
    limiter.take("a")
    limiter.take("a")
    with pytest.raises(RateLimited) as info:
        limiter.take("a")
    assert info.value.retry_after == 2 and info.value.code == "rate_limited"
    limiter.take("b")  # another key has its own bucket
    now[0] = 2.0  # one token back
    limiter.take("a")
    with pytest.raises(RateLimited):
        limiter.take("a")
    now[0] = 100.0  # never more than the burst
    limiter.take("a")
    limiter.take("a")
    with pytest.raises(RateLimited):
        limiter.take("a")


async def test_a_key_over_its_rate_gets_429_with_retry_after() -> None:
    keys = Keyring([ApiKey(name="bot-a", sha256=hash_key("key-a")), ApiKey(name="bot-b", sha256=hash_key("key-b"))])
    model = fake()
    app = create_app(load_settings(), config=ServerConfig(rate_per_key=0.01, rate_burst=2), keys=keys, slm=model, llm=model)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://moa") as http:
        a = {"Authorization": "Bearer key-a"}
        codes = [(await http.get("/v1/graphs", headers=a)).status_code for _ in range(2)]
        refused = await http.post("/v1/runs", headers=a, json={"task": "classify the sentiment", "input": ["x"]})
        other = await http.get("/v1/graphs", headers={"Authorization": "Bearer key-b"})
        health = [(await http.get("/healthz")).status_code for _ in range(5)]
        bad_key = await http.get("/v1/graphs", headers={"Authorization": "Bearer nope"})
    await app.state.manager.aclose()
    assert codes == [200, 200]
    assert refused.status_code == 429 and refused.headers["retry-after"] == "100"
    assert refused.json()["error"]["code"] == "rate_limited" and "retry after 100 s" in refused.json()["error"]["message"]
    assert other.status_code == 200 and health == [200] * 5
    assert bad_key.status_code == 401  # a wrong key is refused before it could use anyone's tokens
    assert not list((load_settings().state_dir / "server" / "accepted").glob("*.json"))  # the refused run was not accepted

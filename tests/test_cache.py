"""The model-call cache (moa.models.cache): keys, hits, expiry, persistence, and surviving bad files."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from moa.errors import ErrorCode, RunError
from moa.models.base import GenerateRequest, Generation, Message, TokenLogprob, ToolSpec
from moa.models.cache import CachedBackend, CallCache, cacheable
from moa.testing import FakeModel, prompt_of

TTL = 3600.0


class Clock:
    """A settable wall clock for TTL tests."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def gen_for(request: GenerateRequest) -> Generation:
    """A rich generation (logprobs, token counts) so a hit can be compared field by field."""
    text = f"answer to {prompt_of(request)}"
    return Generation(
        text=text,
        prompt_tokens=7,
        completion_tokens=3,
        latency_s=0.25,
        finish_reason="stop",
        logprobs=[TokenLogprob(token="answer", logprob=-0.1, top={"answer": -0.1, "reply": -2.5})],
    )


def req(prompt: str = "hello", **kw: object) -> GenerateRequest:
    return GenerateRequest(prompt=prompt, **kw)  # type: ignore[arg-type]


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[CallCache]:
    c = CallCache(tmp_path / "state" / "cache.sqlite", ttl=TTL)
    yield c
    c.close()


def warnings_named(logs: list[dict[str, object]], event: str) -> list[dict[str, object]]:
    return [entry for entry in logs if entry["event"] == event and entry["log_level"] == "warning"]


# keys and cacheability


def test_key_is_stable_and_ignores_dict_order() -> None:
    a = req(json_schema={"type": "object", "properties": {"x": {"type": "string"}, "y": {"type": "integer"}}})
    b = req(json_schema={"properties": {"y": {"type": "integer"}, "x": {"type": "string"}}, "type": "object"})
    assert CallCache.key("fake:", a) == CallCache.key("fake:", b)
    assert len(CallCache.key("fake:", a)) == 64


@pytest.mark.parametrize(
    "other",
    [
        req("goodbye"),
        GenerateRequest(messages=[Message(role="user", content="hello")]),
        req(json_schema={"type": "object"}),
        req(temperature=0.5),
        req(seed=1),
        req(max_tokens=10),
        req(top_logprobs=5),
        req(stop=["\n"]),
        req(tools=[ToolSpec(name="t", description="d", parameters={"type": "object"})]),
    ],
)
def test_key_changes_with_anything_the_model_sees(other: GenerateRequest) -> None:
    assert CallCache.key("fake:", other) != CallCache.key("fake:", req())


def test_key_changes_with_spec_and_seed_value() -> None:
    assert CallCache.key("ollama:a", req()) != CallCache.key("ollama:b", req())
    assert CallCache.key("fake:", req(seed=1)) != CallCache.key("fake:", req(seed=2))


def test_cacheable_means_deterministic_decoding() -> None:
    assert cacheable(req())
    assert cacheable(req(temperature=0.8, seed=3))
    assert not cacheable(req(temperature=0.8))


# the store


def test_put_get_overwrite_and_counters(cache: CallCache) -> None:
    assert cache.get("k") is None
    cache.put("k", Generation(text="one", cached=True))
    got = cache.get("k")
    assert got is not None and got.text == "one" and got.cached is False  # stored as a model answer
    cache.put("k", Generation(text="two"))
    assert cache.get("k") == Generation(text="two")
    assert (cache.hits, cache.misses) == (2, 1)


def test_ttl_expiry_and_prune(tmp_path: Path) -> None:
    clock = Clock()
    cache = CallCache(tmp_path / "c.sqlite", ttl=10, clock=clock)
    cache.put("old", Generation(text="old"))
    clock.now += 5
    cache.put("new", Generation(text="new"))
    assert cache.get("old") is not None
    clock.now += 6  # old is 11 s old, new 6 s
    assert cache.get("old") is None
    assert cache.get("new") is not None
    assert cache.prune() == 1
    clock.now += 100
    assert cache.prune() == 1
    assert cache.prune() == 0
    cache.close()


def test_prune_on_open_removes_expired_rows(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    clock = Clock()
    with CallCache(path, ttl=10, clock=clock) as cache:
        cache.put("k", Generation(text="x"))
    clock.now += 60
    CallCache(path, ttl=10, clock=clock).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM calls").fetchone()[0] == 0


def test_persists_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "c.sqlite"
    first = CallCache(path, ttl=TTL)
    first.put("k", Generation(text="kept", prompt_tokens=4))
    first.close()
    assert first.get("k") is None  # closed: a miss, no error
    second = CallCache(path, ttl=TTL)
    assert second.get("k") == Generation(text="kept", prompt_tokens=4)
    second.close()


def test_unreadable_entry_is_a_miss(cache: CallCache) -> None:
    cache.put("k", Generation(text="x"))
    assert cache._conn is not None
    cache._conn.execute("UPDATE calls SET generation = ?", ('{"not": "a generation"}',))
    with capture_logs() as logs:
        assert cache.get("k") is None
    assert len(warnings_named(logs, "cache_entry_invalid")) == 1
    cache.put("k", Generation(text="y"))
    assert cache.get("k") == Generation(text="y")


# the backend


async def test_miss_then_hit_through_backend(cache: CallCache) -> None:
    fake = FakeModel(gen_for, spec="fake:a")
    backend = CachedBackend(fake, cache)
    first = await backend.agenerate(req())
    second = await backend.agenerate(req())
    assert len(fake.requests) == 1
    assert first.cached is False and first.latency_s == 0.25
    assert second.cached is True
    assert second.latency_s < 0.25
    assert second.model_dump(exclude={"cached", "latency_s"}) == first.model_dump(exclude={"cached", "latency_s"})
    assert second.logprobs is not None and second.logprobs[0].top == {"answer": -0.1, "reply": -2.5}
    assert (cache.hits, cache.misses) == (1, 1)
    # a hit is a copy: changing it does not change what later hits see
    second.text = "mutated"
    assert (await backend.agenerate(req())).text == first.text


async def test_generate_also_uses_the_cache(cache: CallCache) -> None:
    fake = FakeModel(gen_for)
    backend = CachedBackend(fake, cache)
    await backend.generate(req())
    assert (await backend.generate(req())).cached is True
    assert len(fake.requests) == 1


async def test_spec_separates_entries(cache: CallCache) -> None:
    a, b = FakeModel(["from a"], spec="fake:a"), FakeModel(["from b"], spec="fake:b")
    assert (await CachedBackend(a, cache).agenerate(req())).text == "from a"
    got = await CachedBackend(b, cache).agenerate(req())
    assert got.text == "from b" and got.cached is False
    assert len(b.requests) == 1


async def test_sampling_without_seed_is_not_cached(cache: CallCache) -> None:
    fake = FakeModel(["one", "two", "three"])
    backend = CachedBackend(fake, cache)
    texts = [(await backend.agenerate(req(temperature=0.7))).text for _ in range(3)]
    assert texts == ["one", "two", "three"]
    assert len(fake.requests) == 3
    assert (cache.hits, cache.misses) == (0, 0)  # not even looked up
    # the same request with a seed is cached
    seeded = [await backend.agenerate(req(temperature=0.7, seed=4)) for _ in range(2)]
    assert [g.cached for g in seeded] == [False, True] and len(fake.requests) == 4


async def test_request_that_cannot_be_keyed_passes_through(cache: CallCache) -> None:
    fake = FakeModel(["a", "b"])
    backend = CachedBackend(fake, cache)
    odd = req(json_schema={"default": object()})  # not JSON: no key
    with capture_logs() as logs:
        texts = [(await backend.agenerate(odd)).text for _ in range(2)]
    assert texts == ["a", "b"]
    assert len(warnings_named(logs, "cache_key_failed")) == 1  # once per backend


async def test_errors_are_not_cached(cache: CallCache) -> None:
    down = FakeModel(spec="fake:x", fail_with=RunError(ErrorCode.MODEL_UNREACHABLE, "down"))
    backend = CachedBackend(down, cache)
    for _ in range(2):
        with pytest.raises(RunError):
            await backend.agenerate(req())
    assert len(down.requests) == 2
    up = CachedBackend(FakeModel(["ok"], spec="fake:x"), cache)
    assert (await up.agenerate(req())).cached is False


async def test_backend_mirrors_and_delegates(cache: CallCache) -> None:
    fake = FakeModel(spec="fake:m", chat=True, logprobs=True, max_concurrency=3)
    fake.price_per_1k = (1.0, 2.0)
    backend = CachedBackend(fake, cache)
    assert backend.inner is fake
    assert (backend.spec, backend.max_concurrency, backend.price_per_1k) == ("fake:m", 3, (1.0, 2.0))
    assert backend.capabilities == fake.capabilities
    assert await backend.acapabilities() == fake.capabilities
    assert await backend.check() == "fake:m"
    closed: list[bool] = []

    async def aclose() -> None:
        closed.append(True)

    fake.aclose = aclose  # type: ignore[method-assign]
    await backend.aclose()
    assert closed == [True]
    assert cache.enabled  # the cache belongs to whoever opened it


async def test_concurrency_limit_of_inner_backend_holds(cache: CallCache) -> None:
    fake = FakeModel(gen_for, delay=0.05, max_concurrency=2)
    backend = CachedBackend(fake, cache)
    requests = [req(f"item {i}") for i in range(8)]
    first = await asyncio.gather(*(backend.agenerate(r) for r in requests))
    assert fake.max_in_flight == 2
    assert len(fake.requests) == 8 and not any(g.cached for g in first)
    again = await asyncio.gather(*(backend.agenerate(r) for r in requests))
    assert all(g.cached for g in again) and len(fake.requests) == 8
    assert [g.text for g in again] == [g.text for g in first]


async def test_identical_concurrent_calls_are_coalesced(cache: CallCache) -> None:
    fake = FakeModel(gen_for, delay=0.05)
    backend = CachedBackend(fake, cache)
    results = await asyncio.gather(*(backend.agenerate(req("same")) for _ in range(5)))
    assert len(fake.requests) == 1
    assert sorted(g.cached for g in results) == [False, True, True, True, True]
    assert {g.text for g in results} == {"answer to same"}


async def test_coalesced_waiters_retry_when_the_first_call_fails(cache: CallCache) -> None:
    calls = 0

    def flaky(request: GenerateRequest) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RunError(ErrorCode.MODEL_TIMEOUT, "slow")
        return "fine"

    backend = CachedBackend(FakeModel(flaky, delay=0.02), cache)
    results = await asyncio.gather(*(backend.agenerate(req("same")) for _ in range(3)), return_exceptions=True)
    assert sum(isinstance(r, RunError) for r in results) == 1
    assert [r.text for r in results if isinstance(r, Generation)] == ["fine", "fine"]
    assert calls == 2  # one failure, then one call serves both waiters


# surviving bad files


def test_garbage_file_is_moved_aside_and_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    garbage = b"this is not a database\x00\xff" * 200
    path.write_bytes(garbage)
    with capture_logs() as logs:
        cache = CallCache(path, ttl=TTL)
    [warning] = warnings_named(logs, "cache_rebuilt")
    assert warning["path"] == str(path) and "not a database" in str(warning["error"])
    [aside] = tmp_path.glob("cache.sqlite.corrupt-*")
    assert aside.read_bytes() == garbage
    cache.put("k", Generation(text="fresh"))
    assert cache.get("k") == Generation(text="fresh")
    cache.close()


def test_wrong_schema_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE calls (id INTEGER, payload BLOB)")
    with capture_logs() as logs:
        cache = CallCache(path, ttl=TTL)
    assert len(warnings_named(logs, "cache_rebuilt")) == 1
    assert len(list(tmp_path.glob("cache.sqlite.corrupt-*"))) == 1
    cache.put("k", Generation(text="x"))
    assert cache.get("k") is not None
    cache.close()


def test_corruption_found_at_lookup_time_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    with CallCache(path, ttl=TTL) as cache:
        for i in range(300):
            cache.put(f"k{i}", Generation(text="x" * 100))
    data = bytearray(path.read_bytes())
    data[4096:8192] = os.urandom(4096)  # page 2: the table's root page
    path.write_bytes(bytes(data))
    with capture_logs() as logs:
        cache = CallCache(path, ttl=TTL)
        assert cache.get("k5") is None
        cache.put("k5", Generation(text="again"))
        assert cache.get("k5") == Generation(text="again")
    assert len(warnings_named(logs, "cache_rebuilt")) == 1
    assert len(list(tmp_path.glob("cache.sqlite.corrupt-*"))) == 1
    cache.close()


async def test_locked_database_at_open_is_a_miss_and_calls_succeed(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("CREATE TABLE unrelated (x)")
    other.execute("BEGIN EXCLUSIVE")  # rollback-journal mode: nobody can even read
    try:
        with capture_logs() as logs:
            cache = CallCache(path, ttl=TTL, busy_timeout=0.05)
            fake = FakeModel(gen_for)
            backend = CachedBackend(fake, cache)
            first = await backend.agenerate(req())
            second = await backend.agenerate(req())
        assert first.cached is False and second.cached is False and len(fake.requests) == 2
        assert cache.misses == 2
        assert len(warnings_named(logs, "cache_unavailable")) == 1  # once, not per call
    finally:
        other.execute("COMMIT")
        other.close()
    # the lock is gone: the cache works again without reopening
    await backend.agenerate(req())
    assert (await backend.agenerate(req())).cached is True
    cache.close()


async def test_locked_database_skips_writes(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    with CallCache(path, ttl=TTL) as before:
        before.put("before", Generation(text="b"))
    cache = CallCache(path, ttl=TTL, busy_timeout=0.05)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # WAL: readers still read, writers wait
    try:
        with capture_logs() as logs:
            fake = FakeModel(gen_for)
            backend = CachedBackend(fake, cache)
            assert (await backend.agenerate(req("new"))).text == "answer to new"
            assert (await backend.agenerate(req("new"))).cached is False  # the write was skipped
            assert cache.get("before") is not None
        assert len(warnings_named(logs, "cache_unavailable")) == 1
    finally:
        other.execute("COMMIT")
        other.close()
    cache.close()


def test_read_only_database_skips_writes_with_one_warning(cache: CallCache) -> None:
    cache.put("k", Generation(text="kept"))
    assert cache._conn is not None
    cache._conn.execute("PRAGMA query_only = ON")  # writes now fail as on a read-only file
    with capture_logs() as logs:
        cache.put("k2", Generation(text="lost"))
        cache.put("k3", Generation(text="lost"))
        assert cache.get("k2") is None
        assert cache.get("k") is not None
    [warning] = warnings_named(logs, "cache_unavailable")
    assert warning["op"] == "put"


async def test_uncreatable_directory_disables_the_cache(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    with capture_logs() as logs:
        cache = CallCache(blocker / "state" / "cache.sqlite", ttl=TTL)
    assert len(warnings_named(logs, "cache_disabled")) == 1
    assert not cache.enabled
    cache.put("k", Generation(text="x"))
    assert cache.get("k") is None and cache.misses == 1
    fake = FakeModel(gen_for)
    backend = CachedBackend(fake, cache)
    results = [await backend.agenerate(req()) for _ in range(2)]
    assert [g.cached for g in results] == [False, False] and len(fake.requests) == 2


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
async def test_read_only_directory_disables_the_cache(tmp_path: Path) -> None:
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with capture_logs() as logs:
            cache = CallCache(locked / "cache.sqlite", ttl=TTL)
        assert len(warnings_named(logs, "cache_disabled")) == 1
        fake = FakeModel(gen_for)
        assert (await CachedBackend(fake, cache).agenerate(req())).text == "answer to hello"
    finally:
        locked.chmod(0o700)

"""The model-call cache: deterministic model calls answered from disk instead of the model.

:class:`CallCache` is a small sqlite file (one table ``calls``: ``key``, ``created``,
``generation`` as JSON) shared by processes and threads: WAL journal, a busy timeout, one
connection guarded by a lock. :class:`CachedBackend` wraps any :class:`ModelBackend` with it.

Policy:

* **What is cached.** Only requests whose decoding is deterministic (:func:`cacheable`):
  ``temperature == 0``, or a ``seed`` is set. Everything else goes straight to the model.
  Only successful calls are stored; errors never are.
* **Key.** sha256 over the model spec and the canonical JSON (sorted keys) of the *whole*
  request: prompt or messages, schema, tools, max_tokens, temperature, seed, top_logprobs,
  stop. A request that differs in anything the model sees is a different entry; a field added
  to :class:`GenerateRequest` later changes every key (old entries are simply never hit).
* **Freshness.** An entry older than ``ttl`` seconds is a miss; :meth:`CallCache.prune`
  deletes such rows (run once when the file is opened). ``put`` overwrites.
* **Hits.** A hit returns the stored :class:`Generation` with ``cached=True``, ``retries=0`` and
  ``latency_s`` = the lookup time (usage records then cost 0).
* **Never fail a run because of the cache.** A corrupt file (not a database, malformed, or
  another schema) is moved aside as ``<name>.corrupt-<timestamp>`` and rebuilt; a locked or
  read-only database turns lookups into misses and skips writes (one warning); a directory
  that cannot be created disables the cache (every lookup a miss). Each case logs a warning.
* **Concurrency.** The model's own concurrency limit applies (misses call the inner backend's
  :meth:`~ModelBackend.agenerate`). Identical requests in flight at once on one event loop are
  coalesced: one calls the model, the others wait for it and get its answer as a cache hit.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import ValidationError

from moa.logs import get_logger
from moa.models.base import Capabilities, GenerateRequest, Generation, ModelBackend

log = get_logger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 1
"""Stored in ``PRAGMA user_version``; a file with another version is rebuilt."""
KEY_VERSION = 1
"""Part of every key: bump it to invalidate all entries when the key's meaning changes."""

_TABLE = "calls"
_COLUMNS = ["key", "created", "generation"]
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_CORRUPT, _SQLITE_NOTADB = 5, 6, 11, 26

_Kind = Literal["corrupt", "busy", "other"]


class _WrongSchema(Exception):
    """The file is a database, but not (this version of) a call cache."""


def cacheable(request: GenerateRequest) -> bool:
    """Whether a request's answer is reproducible, so worth caching: greedy decoding or a fixed seed."""
    return request.temperature == 0 or request.seed is not None


class CallCache:
    """Model calls on disk, keyed by :meth:`key`; entries expire after ``ttl`` seconds.

    Args:
        path: the sqlite file (parent directories are created).
        ttl: seconds an entry stays valid.
        busy_timeout: seconds to wait for another process's lock before treating the call as
            a miss (or skipping the write).
        clock: wall-clock time in seconds (``time.time``); entries store it, tests replace it.

    Never raises on I/O or database problems: see the module docstring.
    """

    def __init__(self, path: Path, ttl: float, *, busy_timeout: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.ttl = ttl
        self.busy_timeout = busy_timeout
        self.hits = 0
        self.misses = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._disabled = False
        self._closed = False
        self._warned: set[str] = set()
        with self._lock:
            self._connection()

    @staticmethod
    def key(spec: str, request: GenerateRequest) -> str:
        """sha256 (hex) of the model spec and the canonical JSON of the whole request."""
        payload = {"v": KEY_VERSION, "spec": spec, "request": request.model_dump(mode="json")}
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    @property
    def enabled(self) -> bool:
        """False when the cache could not be created (or was closed): every lookup is a miss."""
        return not (self._disabled or self._closed)

    def get(self, key: str) -> Generation | None:
        """The stored generation, or None when missing, expired or unreadable (a miss)."""

        def read(conn: sqlite3.Connection) -> tuple[float, str] | None:
            row = conn.execute(f"SELECT created, generation FROM {_TABLE} WHERE key = ?", (key,)).fetchone()
            return None if row is None else (float(row[0]), str(row[1]))

        row = self._run("get", read)
        gen: Generation | None = None
        with self._lock:
            if row is not None and self._clock() - row[0] <= self.ttl:
                try:
                    gen = Generation.model_validate_json(row[1])
                except ValidationError as exc:  # written by another version of moa: a miss, overwritten later
                    self._warn_once("cache_entry_invalid", path=str(self.path), error=str(exc).splitlines()[0])
            if gen is None:
                self.misses += 1
            else:
                self.hits += 1
        return gen

    def put(self, key: str, gen: Generation) -> None:
        """Store (or overwrite) an entry; stored with ``cached=False``. Skipped if the database is unwritable."""
        data = gen.model_copy(update={"cached": False}).model_dump_json()
        created = self._clock()

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(f"INSERT OR REPLACE INTO {_TABLE} (key, created, generation) VALUES (?, ?, ?)", (key, created, data))

        self._run("put", write)

    def prune(self) -> int:
        """Delete expired entries; return how many (0 if the database is unavailable)."""
        cutoff = self._clock() - self.ttl

        def delete(conn: sqlite3.Connection) -> int:
            return conn.execute(f"DELETE FROM {_TABLE} WHERE created < ?", (cutoff,)).rowcount

        return self._run("prune", delete) or 0

    def close(self) -> None:
        """Close the database (idempotent); later lookups are misses and writes are skipped."""
        with self._lock:
            self._closed = True
            self._drop_connection()

    def __enter__(self) -> CallCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CallCache({str(self.path)!r}, ttl={self.ttl})"

    # internals: every method below runs with self._lock held

    def _run(self, op: str, fn: Callable[[sqlite3.Connection], T]) -> T | None:
        """``fn(connection)``, or None when the cache is unavailable (rebuilding a corrupt file once)."""
        with self._lock:
            for attempt in range(2):
                conn = self._connection()
                if conn is None:
                    return None
                try:
                    return fn(conn)
                except sqlite3.Error as exc:
                    if _kind(exc) == "corrupt" and attempt == 0:
                        self._drop_connection()
                        if self._move_aside(exc):
                            continue
                        return None
                    self._warn_once("cache_unavailable", path=str(self.path), op=op, error=str(exc))
                    return None
            return None

    def _connection(self) -> sqlite3.Connection | None:
        """The open, initialised connection, opening it if needed; None if unavailable."""
        if self._disabled or self._closed:
            return None
        if self._conn is not None:
            return self._conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._disable(exc)
            return None
        for attempt in range(2):
            try:
                conn = sqlite3.connect(self.path, timeout=self.busy_timeout, check_same_thread=False, isolation_level=None)
            except sqlite3.Error as exc:
                self._disable(exc)
                return None
            try:
                _init_schema(conn)
            except (sqlite3.Error, _WrongSchema) as exc:
                conn.close()
                kind = _kind(exc)
                if kind == "corrupt" and attempt == 0:
                    if self._move_aside(exc):
                        continue
                    return None
                if kind == "busy":  # another process holds the lock: a miss now, try again next call
                    self._warn_once("cache_unavailable", path=str(self.path), op="open", error=str(exc))
                    return None
                self._disable(exc)
                return None
            self._conn = conn
            try:
                conn.execute(f"DELETE FROM {_TABLE} WHERE created < ?", (self._clock() - self.ttl,))
            except sqlite3.Error:
                pass  # read-only or busy: pruning is best effort
            return conn
        return None

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None

    def _move_aside(self, error: BaseException) -> bool:
        """Rename the corrupt file (and its -wal/-shm) to ``<name>.corrupt-<timestamp>``; disable on failure."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        try:
            self.path.replace(target)
            for suffix in ("-wal", "-shm", "-journal"):
                side = self.path.with_name(self.path.name + suffix)
                if side.exists():
                    try:
                        side.replace(target.with_name(target.name + suffix))
                    except OSError:
                        side.unlink()
        except OSError as exc:
            self._disable(exc)
            return False
        log.warning("cache_rebuilt", path=str(self.path), error=str(error), moved_to=str(target))
        return True

    def _disable(self, error: BaseException) -> None:
        self._disabled = True
        self._drop_connection()
        log.warning("cache_disabled", path=str(self.path), error=str(error))

    def _warn_once(self, event: str, **fields: object) -> None:
        if event not in self._warned:
            self._warned.add(event)
            log.warning(event, **fields)


def _init_schema(conn: sqlite3.Connection) -> None:
    """Switch to WAL and create the table, or raise :class:`_WrongSchema` for a foreign database."""
    conn.execute("PRAGMA journal_mode=WAL")  # first read of the file: raises NOTADB on garbage
    conn.execute("PRAGMA synchronous=NORMAL")  # a cache: losing the last writes on power loss is fine
    columns = [row[1] for row in conn.execute(f"PRAGMA table_info({_TABLE})")]
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if (columns and columns != _COLUMNS) or version not in (0, SCHEMA_VERSION):
        raise _WrongSchema(f"not a moa call cache (table {_TABLE} columns {columns}, user_version {version})")
    if not columns:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {_TABLE} (key TEXT PRIMARY KEY, created REAL NOT NULL, generation TEXT NOT NULL)")
        conn.execute(f"CREATE INDEX IF NOT EXISTS {_TABLE}_created ON {_TABLE} (created)")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _kind(exc: BaseException) -> _Kind:
    if isinstance(exc, _WrongSchema):
        return "corrupt"
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        primary = code & 0xFF
        if primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            return "corrupt"
        if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return "busy"
        return "other"
    message = str(exc).lower()
    if "not a database" in message or "malformed" in message:
        return "corrupt"
    if "locked" in message or "busy" in message:
        return "busy"
    return "other"


class _LeaderFailed(Exception):
    """The coalesced call that others waited for did not produce a generation."""


class CachedBackend(ModelBackend):
    """A backend answering deterministic requests from a :class:`CallCache`, else from ``inner``.

    ``spec``, ``price_per_1k`` and ``max_concurrency`` are the inner backend's; capabilities,
    :meth:`check` and :meth:`aclose` delegate to it. :meth:`aclose` closes the inner backend,
    not the cache (its owner closes it).
    """

    def __init__(self, inner: ModelBackend, cache: CallCache) -> None:
        super().__init__(inner.spec, max_concurrency=inner.max_concurrency)
        self.inner = inner
        self.cache = cache
        self._key_warned = False
        self._inflight: dict[asyncio.AbstractEventLoop, dict[str, asyncio.Future[Generation]]] = {}

    @property
    def price_per_1k(self) -> tuple[float, float]:
        return self.inner.price_per_1k

    @price_per_1k.setter
    def price_per_1k(self, value: tuple[float, float]) -> None:
        self.inner.price_per_1k = value

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    async def acapabilities(self) -> Capabilities:
        return await self.inner.acapabilities()

    async def check(self) -> str:
        return await self.inner.check()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def agenerate(self, request: GenerateRequest) -> Generation:
        """From the cache when possible, else ``inner.agenerate`` (the inner concurrency limit applies)."""
        return await self._cached(request, self.inner.agenerate)

    async def generate(self, request: GenerateRequest) -> Generation:
        """From the cache when possible, else ``inner.generate`` (no concurrency limit, like any ``generate``)."""
        return await self._cached(request, self.inner.generate)

    def __repr__(self) -> str:
        return f"CachedBackend({self.inner!r})"

    async def _cached(self, request: GenerateRequest, call: Callable[[GenerateRequest], Awaitable[Generation]]) -> Generation:
        if not cacheable(request) or not self.cache.enabled:
            return await call(request)
        try:
            key = CallCache.key(self.inner.spec, request)
        except (TypeError, ValueError) as exc:  # a schema value JSON cannot encode: just don't cache
            if not self._key_warned:
                self._key_warned = True
                log.warning("cache_key_failed", spec=self.inner.spec, error=str(exc))
            return await call(request)
        inflight = self._inflight_here()
        while (pending := inflight.get(key)) is not None:  # the same call is running: wait for it
            start = time.perf_counter()
            try:
                gen = await asyncio.shield(pending)
            except Exception:  # that call failed or was cancelled: try again (maybe as the caller)
                continue
            return gen.model_copy(update={"cached": True, "latency_s": time.perf_counter() - start, "retries": 0})
        future: asyncio.Future[Generation] = asyncio.get_running_loop().create_future()
        inflight[key] = future
        try:
            gen = await self._lookup_or_call(key, request, call)
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, Exception) else _LeaderFailed(repr(exc)))
            future.exception()  # retrieved: no "exception never retrieved" log when nobody waited
            raise
        else:
            future.set_result(gen)
            return gen
        finally:
            if inflight.get(key) is future:
                del inflight[key]

    async def _lookup_or_call(
        self, key: str, request: GenerateRequest, call: Callable[[GenerateRequest], Awaitable[Generation]]
    ) -> Generation:
        start = time.perf_counter()
        hit = await asyncio.to_thread(self.cache.get, key)  # sqlite may wait on a lock: off the event loop
        if hit is not None:
            return hit.model_copy(update={"cached": True, "latency_s": time.perf_counter() - start, "retries": 0})
        gen = await call(request)
        await asyncio.to_thread(self.cache.put, key, gen)
        return gen

    def _inflight_here(self) -> dict[str, asyncio.Future[Generation]]:
        loop = asyncio.get_running_loop()
        inflight = self._inflight.get(loop)
        if inflight is None:  # one per event loop, like the semaphores: a backend may outlive a loop
            self._inflight = {loop: (inflight := {})}
        return inflight


__all__ = ["CachedBackend", "CallCache", "cacheable"]

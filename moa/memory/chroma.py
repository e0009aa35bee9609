"""Shared vector memory: passages that agents add and later find by meaning.

:class:`Memory` is the interface (async add and query); :class:`ChromaMemory` keeps it in
Chroma, either embedded on disk (``path``) or on a Chroma server (``url``). Vectors come
from an :class:`~moa.models.embeddings.Embedder` (cosine space). :func:`chunk_text` and
:func:`add_files` turn documents into passages.

Passage ids default to a hash of source and text, so adding the same chunk again
updates it instead of duplicating it.

A folder this process cannot write is read from a temporary copy (:mod:`moa.memory.snapshot`:
Chroma writes even to read); adding to it or deleting from it is ``memory_unwritable``.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import re
import stat
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

from moa.errors import ErrorCode, MoaError, RunError, UserError
from moa.logs import get_logger
from moa.memory.snapshot import ReadCopy, writable
from moa.models.embeddings import ChromaEmbeddingFunction, Embedder

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

log = get_logger(__name__)

MetadataValue = str | int | float | bool
"""Types a passage's metadata values may have (what Chroma stores)."""

TEXT_SUFFIXES = frozenset({".txt", ".md"})
"""File suffixes :func:`add_files` picks up when it walks a directory."""

_Row = tuple[str, dict[str, MetadataValue] | None]  # text, metadata
_WRITE_BATCH = 256
_COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,510}[A-Za-z0-9]$")
_UNWRITABLE_HINTS = (
    "readonly",
    "read-only",
    "read only",
    "permission denied",
    "os error 13",
    "os error 30",
    "os error 28",
)


class Passage(BaseModel):
    """A stored piece of text returned by :meth:`Memory.aquery`."""

    id: str
    """Stable id (by default the first 16 hex digits of sha256 over source and text)."""
    text: str
    """The passage text as it was added."""
    score: float
    """Similarity to the query: 1 - cosine distance (1 = same direction, ~0 = unrelated)."""
    source: str | None = None
    """Where the text came from (e.g. a file path), if known."""
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)
    """Any other metadata stored with the passage."""


def passage_id(text: str, source: str | None = None) -> str:
    """The default id of a passage: first 16 hex digits of sha256 over ``source`` and ``text``."""
    return hashlib.sha256(f"{source or ''}\x00{text}".encode()).hexdigest()[:16]


class Memory(ABC):
    """A store of passages searchable by meaning."""

    @abstractmethod
    async def aadd(
        self,
        texts: Sequence[str],
        *,
        sources: Sequence[str | None] | None = None,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, MetadataValue] | None] | None = None,
    ) -> list[str]:
        """Store ``texts`` (upsert) and return their ids, one per text, in order."""

    @abstractmethod
    async def aquery(self, text: str, k: int = 5) -> list[Passage]:
        """The ``k`` passages most similar to ``text``, best first."""

    @abstractmethod
    def count(self) -> int:
        """How many passages are stored."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release what the memory holds open (clients, temporary copies); the next call reopens."""


def _unwritable(path: Path, detail: str = "") -> UserError:
    suffix = f" ({detail})" if detail else ""
    return UserError(
        ErrorCode.MEMORY_UNWRITABLE,
        f"memory directory {path} is not writable{suffix}; "
        "set MOA_MEMORY_DIR or pass --memory-dir to a writable directory",
    )


def ensure_writable_dir(path: Path) -> None:
    """Create ``path`` if needed and prove a file can be written in it, else raise MEMORY_UNWRITABLE.

    A real write is tried because permission bits say nothing when running as root or on
    a read-only mount.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".moa-write-check-"):
            pass
    except OSError as exc:
        raise _unwritable(path, exc.strerror or type(exc).__name__) from exc


def _is_write_failure(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return True
    text = str(exc).lower()
    return any(hint in text for hint in _UNWRITABLE_HINTS)


class ChromaMemory(Memory):
    """Memory in a Chroma collection: on disk under ``path`` or on the server at ``url``.

    Exactly one of ``path`` and ``url`` (``http://host:port``) must be given. The client is
    opened on first use. The collection remembers which embedder filled it; opening it
    with a different one is refused, since the vectors would not be comparable.

    A ``path`` that exists but cannot be written is opened :attr:`read_only`, from a temporary
    copy (``read_copy``, shared by several collections of one folder, else its own).
    """

    def __init__(
        self,
        path: Path | None = None,
        *,
        url: str | None = None,
        collection: str = "moa",
        embedder: Embedder,
        read_copy: ReadCopy | None = None,
    ) -> None:
        if (path is None) == (url is None):
            raise UserError(
                ErrorCode.BAD_CONFIG, "ChromaMemory needs either a directory (path) or a server url, not both"
            )
        if not _COLLECTION_NAME.match(collection) or ".." in collection:
            raise UserError(
                ErrorCode.BAD_CONFIG,
                f"bad collection name {collection!r}: use 3-512 letters, digits, '.', '_' or '-', "
                "starting and ending with a letter or digit",
            )
        self.path = path.expanduser() if path is not None else None
        self.url = url.rstrip("/") if url is not None else None
        self.collection_name = collection
        self.embedder = embedder
        self._lock = threading.Lock()
        self._client: ClientAPI | None = None
        self._collection: Collection | None = None
        self._read_copy: ReadCopy | None = None
        self._owns_copy = False
        if self.path is not None:
            try:
                ensure_writable_dir(self.path)
            except UserError:
                if not self.path.is_dir():  # cannot be created: nothing to read either
                    raise
                self._read_copy, self._owns_copy = read_copy or ReadCopy(self.path), read_copy is None

    @property
    def read_only(self) -> bool:
        """The folder cannot be written: it is read from a temporary copy, and writes are refused."""
        return self._read_copy is not None

    def _refuse_write(self) -> None:
        if self.path is not None and self._read_copy is not None:
            raise _unwritable(self.path, "it can only be read")

    @property
    def location(self) -> str:
        """The directory or server url, for messages."""
        return str(self.path) if self.path is not None else str(self.url)

    def _connect(self) -> ClientAPI:
        import chromadb
        from chromadb.config import Settings

        settings = Settings(anonymized_telemetry=False)
        if self.path is not None:
            where = self._read_copy.path() if self._read_copy is not None else self.path
            try:
                return chromadb.PersistentClient(path=str(where), settings=settings)
            except Exception as exc:
                if _is_write_failure(exc):
                    raise _unwritable(self.path, str(exc)) from exc
                raise
        assert self.url is not None
        parts = urlsplit(self.url if "://" in self.url else f"http://{self.url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UserError(ErrorCode.BAD_CONFIG, f"bad Chroma url {self.url!r}; use http://host:port")
        port = parts.port or (443 if parts.scheme == "https" else 8000)
        try:
            return chromadb.HttpClient(host=parts.hostname, port=port, ssl=parts.scheme == "https", settings=settings)
        except Exception as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: BaseException) -> RunError:
        port = urlsplit(self.url or "").port or 8000
        return RunError(
            ErrorCode.MEMORY_UNREACHABLE,
            f"cannot use the Chroma server at {self.url} ({exc}); start it with "
            f"`chroma run --path <dir> --port {port}` or use a local memory directory",
        )

    def _get_collection(self) -> Collection:
        """Open the client and collection once (blocking; called in a worker thread)."""
        with self._lock:
            if self._collection is not None:
                return self._collection
            ChromaEmbeddingFunction.register()
            client = self._connect()
            identity = self.embedder.name.partition("@")[0]
            try:
                collection = client.get_or_create_collection(
                    self.collection_name,
                    configuration={"hnsw": {"space": "cosine"}},
                    metadata={"moa_embedder": identity},
                    embedding_function=ChromaEmbeddingFunction(self.embedder),  # type: ignore[arg-type]
                )
            except Exception as exc:
                if isinstance(exc, ValueError) and "embedding function" in str(exc).lower():
                    raise UserError(
                        ErrorCode.BAD_CONFIG,
                        f"collection {self.collection_name!r} at {self.location} was not made by moa ({exc}); "
                        "use another collection name",
                    ) from exc
                if (error := self._translate(exc)) is None:
                    raise
                raise error from exc
            stored = (collection.metadata or {}).get("moa_embedder")
            if stored is not None and stored != identity:
                raise UserError(
                    ErrorCode.BAD_CONFIG,
                    f"collection {self.collection_name!r} at {self.location} was filled by embedder {stored}, "
                    f"not {identity}; set MOA_EMBEDDER={stored} (or `embedder` in moa.toml) or use another collection",
                )
            self._client, self._collection = client, collection
            log.debug("memory_opened", location=self.location, collection=self.collection_name, embedder=identity)
            return collection

    def _translate(self, exc: Exception) -> MoaError | None:
        """The moa error for a chroma failure whose cause is known, else None."""
        if self.path is not None and _is_write_failure(exc):
            return _unwritable(self.path, str(exc))
        if self.url is not None:
            import httpx

            if isinstance(exc, httpx.TransportError) or "could not connect" in str(exc).lower():
                return self._unreachable(exc)
        return None

    async def aadd(
        self,
        texts: Sequence[str],
        *,
        sources: Sequence[str | None] | None = None,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, MetadataValue] | None] | None = None,
    ) -> list[str]:
        """Embed and upsert ``texts``; ids default to :func:`passage_id` (idempotent re-adds)."""
        rows = rows_to_add(texts, sources=sources, ids=ids, metadatas=metadatas)
        items, out_ids = [text for _, text, _ in rows], [pid for pid, _, _ in rows]
        unique: dict[str, _Row] = {}
        for pid, text, merged in rows:
            unique[pid] = (text, merged or None)  # a repeated id: the last text wins, as with sequential upserts
        pending = list(unique.items())
        if pending:
            self._refuse_write()
            await asyncio.to_thread(self._get_collection)  # fail on a bad location before embedding anything
        for start in range(0, len(pending), _WRITE_BATCH):
            batch = pending[start : start + _WRITE_BATCH]
            vectors = await self.embedder.aembed([text for _, (text, _) in batch])
            await asyncio.to_thread(self._upsert, batch, vectors)
        log.debug("memory_added", location=self.location, texts=len(items), written=len(pending))
        return out_ids

    def _upsert(self, batch: list[tuple[str, _Row]], vectors: list[list[float]]) -> None:
        collection = self._get_collection()
        try:
            collection.upsert(
                ids=[pid for pid, _ in batch],
                documents=[text for _, (text, _) in batch],
                metadatas=[meta for _, (_, meta) in batch],  # type: ignore[misc]
                embeddings=vectors,  # type: ignore[arg-type]
            )
        except Exception as exc:
            if (error := self._translate(exc)) is None:
                raise
            raise error from exc

    async def aquery(self, text: str, k: int = 5) -> list[Passage]:
        """The ``k`` stored passages closest to ``text`` (cosine), best first."""
        if k < 1:
            raise UserError(ErrorCode.INVALID_INPUT, f"k must be at least 1, got {k}")
        await asyncio.to_thread(self._get_collection)
        vector = (await self.embedder.aembed([text]))[0]
        return await asyncio.to_thread(self._query, vector, k)

    def _query(self, vector: list[float], k: int) -> list[Passage]:
        collection = self._get_collection()
        try:
            result = collection.query(
                query_embeddings=[vector],  # type: ignore[arg-type]
                n_results=k,
                include=["documents", "metadatas", "distances"],
            )
        except Exception as exc:
            if (error := self._translate(exc)) is None:
                raise
            raise error from exc
        docs = (result.get("documents") or [[]])[0]
        metas = (result.get("metadatas") or [[]])[0]
        dists = (result.get("distances") or [[]])[0]
        return [_passage(pid, doc, meta, 1.0 - float(dist)) for pid, doc, meta, dist in zip(result["ids"][0], docs, metas, dists, strict=True)]

    def all(self) -> list[Passage]:
        """Every stored passage (blocking; score 1.0). For small collections such as example stores."""
        collection = self._get_collection()
        try:
            result = collection.get(include=["documents", "metadatas"])
        except Exception as exc:
            if (error := self._translate(exc)) is None:
                raise
            raise error from exc
        metas: Sequence[Mapping[str, Any] | None] = result.get("metadatas") or [None] * len(result["ids"])
        return [_passage(pid, doc, meta, 1.0) for pid, doc, meta in zip(result["ids"], result.get("documents") or [], metas, strict=True)]

    def delete(self, ids: Sequence[str]) -> None:
        """Remove the passages with these ids (blocking; unknown ids are ignored)."""
        if not ids:
            return
        self._refuse_write()
        collection = self._get_collection()
        try:
            collection.delete(ids=list(ids))
        except Exception as exc:
            if (error := self._translate(exc)) is None:
                raise
            raise error from exc

    def count(self) -> int:
        """How many passages the collection holds (blocking)."""
        collection = self._get_collection()
        try:
            return collection.count()
        except Exception as exc:
            if (error := self._translate(exc)) is None:
                raise
            raise error from exc

    def close(self) -> None:
        """Release the Chroma client (files stay on disk); the next call reopens it."""
        with self._lock:
            client, self._client, self._collection = self._client, None, None
        if client is not None and hasattr(client, "close"):
            client.close()
        if self._owns_copy and self._read_copy is not None:
            self._read_copy.close()


def collection_names(path: Path, *, read_copy: ReadCopy | None = None) -> list[str]:
    """The names of the collections in the embedded Chroma at ``path`` (blocking; none when there
    is no Chroma there). A folder that cannot be written is read from ``read_copy`` (else a
    temporary copy of its own)."""
    if not (Path(path) / "chroma.sqlite3").exists():
        return []
    import chromadb
    from chromadb.config import Settings

    own = copy = None
    if not writable(Path(path)):
        copy = read_copy or (own := ReadCopy(Path(path)))
    where = copy.path() if copy is not None else Path(path)
    try:
        try:
            client = chromadb.PersistentClient(path=str(where), settings=Settings(anonymized_telemetry=False))
        except Exception as exc:
            if _is_write_failure(exc):
                raise _unwritable(Path(path), str(exc)) from exc
            raise
        try:
            return sorted(c.name for c in client.list_collections())
        finally:
            if hasattr(client, "close"):
                client.close()
    finally:
        if own is not None:
            own.close()


def _passage(pid: str, doc: str | None, meta: Mapping[str, Any] | None, score: float) -> Passage:
    fields: dict[str, Any] = dict(meta or {})
    source = fields.pop("source", None)
    return Passage(id=pid, text=doc or "", score=score, source=None if source is None else str(source), metadata=fields)


# --- chunking -----------------------------------------------------------------------------

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_SENTENCE_END = re.compile(r"[.!?;:][\"')\]]*\s+|\n")
_SPACE = re.compile(r"\s+")


def chunk_text(text: str, *, max_chars: int = 800, overlap: int = 100) -> list[str]:
    """Split ``text`` into chunks of at most ``max_chars`` characters.

    Paragraphs (separated by blank lines) are packed together while they fit. A paragraph
    longer than ``max_chars`` is split on its own, at the last sentence end (else the last
    whitespace) before the limit, each piece repeating about ``overlap`` characters of the
    previous one, starting at a word.
    """
    if max_chars < 1 or not 0 <= overlap < max_chars:
        raise UserError(
            ErrorCode.BAD_CONFIG,
            f"chunking needs max_chars >= 1 and 0 <= overlap < max_chars, got {max_chars}, {overlap}",
        )
    paragraphs = [p.strip() for p in _PARAGRAPH_BREAK.split(text.replace("\r\n", "\n").replace("\r", "\n"))]
    chunks: list[str] = []
    current = ""
    for paragraph in filter(None, paragraphs):
        if len(paragraph) > max_chars:
            if current:
                chunks.append(current)
                current = ""
            chunks.extend(_split_long(paragraph, max_chars, overlap))
        elif not current:
            current = paragraph
        elif len(current) + 2 + len(paragraph) <= max_chars:
            current = f"{current}\n\n{paragraph}"
        else:
            chunks.append(current)
            current = paragraph
    if current:
        chunks.append(current)
    return chunks


def _cut_point(text: str, start: int, end: int) -> int:
    """Where to end a piece that may not go past ``end``: after a sentence, else at a space."""
    floor = start + (end - start) // 2
    window = text[floor:end]
    cuts = [m.end() for m in _SENTENCE_END.finditer(window)] or [m.end() for m in _SPACE.finditer(window)]
    return floor + cuts[-1] if cuts else end


def _split_long(text: str, max_chars: int, overlap: int) -> list[str]:
    """Hard-split one long paragraph into overlapping pieces of at most ``max_chars``."""
    pieces: list[str] = []
    start = 0
    while start < len(text):
        end = min(start + max_chars, len(text))
        if end < len(text):
            end = _cut_point(text, start, end)
        piece = text[start:end].strip()
        if piece:
            pieces.append(piece)
        if end >= len(text):
            break
        nxt = end - min(overlap, (end - start) // 2)
        if overlap and not text[nxt - 1].isspace():
            space = _SPACE.search(text, nxt, end)
            nxt = space.end() if space else end
        while nxt < len(text) and text[nxt].isspace():
            nxt += 1
        start = nxt
    return pieces


# --- files --------------------------------------------------------------------------------


class SkippedFile(BaseModel):
    """A file :func:`add_files` did not add, and why."""

    path: str
    reason: str


def rows_to_add(
    texts: Sequence[str],
    *,
    sources: Sequence[str | None] | None = None,
    ids: Sequence[str] | None = None,
    metadatas: Sequence[Mapping[str, MetadataValue] | None] | None = None,
) -> list[tuple[str, str, dict[str, MetadataValue]]]:
    """``(id, text, metadata)`` of each text to add: ids default to :func:`passage_id`, the source
    joins the metadata. Any :class:`Memory`'s ``aadd`` takes its arguments through this."""
    items = list(texts)
    src = list(sources) if sources is not None else [None] * len(items)
    extra = list(metadatas) if metadatas is not None else [None] * len(items)
    if (ids is not None and len(ids) != len(items)) or len(src) != len(items) or len(extra) != len(items):
        raise UserError(ErrorCode.INVALID_INPUT, "aadd() needs as many sources, ids and metadatas as texts")
    out_ids = list(ids) if ids is not None else [passage_id(t, s) for t, s in zip(items, src, strict=True)]
    rows = []
    for pid, text, source, meta in zip(out_ids, items, src, extra, strict=True):
        merged: dict[str, MetadataValue] = dict(meta or {})
        if source is not None:
            merged["source"] = source
        rows.append((pid, text, merged))
    return rows


class AddReport(BaseModel):
    """What :func:`add_files` stored, and what it skipped."""

    files: list[str]
    """The files read, in order (directories expanded)."""
    chunks: int
    """How many chunks were written (re-adding the same chunk overwrites it)."""
    ids: list[str]
    """Ids of the chunks, in file and chunk order."""
    skipped: list[SkippedFile] = Field(default_factory=list)
    """Files left out, with the reason: links leading out of the folder, files that are not
    regular files, unreadable, binary or not UTF-8."""


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _walk(folder: Path, skipped: list[SkippedFile]) -> list[Path]:
    """The *.txt / *.md regular files under ``folder`` (sorted), never leaving it: a link (to a
    file or a folder) whose target resolves outside ``folder`` is skipped and reported; a link
    to a file inside is read at its target; a link to a folder inside is not descended (its
    files are found at their own place)."""
    root = folder.resolve()
    found: list[Path] = []
    seen: set[Path] = set()

    def unlisted(exc: OSError) -> None:
        skipped.append(SkippedFile(path=str(exc.filename or folder), reason=f"cannot list this folder: {exc.strerror or exc}"))

    for dirpath, dirnames, filenames in os.walk(folder, onerror=unlisted):  # never follows links to folders
        here = Path(dirpath)
        dirnames.sort()
        for name in dirnames:
            entry = here / name
            if entry.is_symlink() and not _inside(entry.resolve(), root):
                skipped.append(SkippedFile(path=str(entry), reason=f"a link to a folder outside {folder} ({entry.resolve()})"))
        for name in sorted(filenames):
            entry = here / name
            if entry.suffix.lower() not in TEXT_SUFFIXES:
                continue
            if entry.is_symlink():
                target = entry.resolve()
                if not _inside(target, root):
                    skipped.append(SkippedFile(path=str(entry), reason=f"a link to {target}, outside {folder}"))
                    continue
                if not target.exists():
                    skipped.append(SkippedFile(path=str(entry), reason=f"a broken link (to {target})"))
                    continue
                entry = target
            try:
                mode = entry.lstat().st_mode
            except OSError as exc:
                skipped.append(SkippedFile(path=str(entry), reason=f"cannot read it: {exc.strerror or exc}"))
                continue
            if stat.S_ISDIR(mode):  # a link inside the folder to a folder named *.txt: found at its own place
                continue
            if not stat.S_ISREG(mode):
                skipped.append(SkippedFile(path=str(entry), reason="not a regular file (a pipe, socket or device)"))
                continue
            if (real := entry.resolve()) not in seen:  # a file and a link to it: read once
                seen.add(real)
                found.append(entry)
    return found


def _expand(paths: Sequence[Path]) -> tuple[list[Path], list[SkippedFile]]:
    """Files to read: each file as given, each directory's *.txt / *.md files (recursive, sorted,
    never leaving the directory); and the files skipped on the way, with the reason."""
    files: list[Path] = []
    skipped: list[SkippedFile] = []
    for path in paths:
        path = Path(path).expanduser()
        if path.is_dir():
            before = len(skipped)
            found = _walk(path, skipped)
            if not found and len(skipped) == before:
                raise UserError(ErrorCode.INPUT_FILE, f"directory {path} has no .txt or .md files to add")
            files.extend(found)
        elif path.is_file():  # named by the user: a link is followed
            files.append(path)
        elif path.exists():
            skipped.append(SkippedFile(path=str(path), reason="not a regular file (a pipe, socket or device)"))
        else:
            raise UserError(ErrorCode.INPUT_FILE, f"file {path} does not exist; check the path")
    return files, skipped


def _read_bytes(path: Path) -> bytes:
    """The bytes of a regular file; opened without blocking, so a file that turned into a pipe
    since it was listed cannot hang the command."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return handle.read()


class _Unreadable(Exception):
    """Why a file cannot be added (the reason and what to do, without the file's name)."""


def _text_of(path: Path) -> str:
    try:
        data = _read_bytes(path)
    except OSError as exc:
        raise _Unreadable(f"cannot read it ({exc.strerror or exc})") from exc
    if b"\x00" in data:
        raise _Unreadable("a binary file, not text; add only text (.txt, .md) files")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _Unreadable(f"not UTF-8 text (bad byte at offset {exc.start}); convert it, e.g. `iconv -t UTF-8`") from exc


async def add_files(memory: Memory, paths: Sequence[Path], *, max_chars: int = 800, overlap: int = 100) -> AddReport:
    """Chunk text files (directories: their *.txt and *.md files) into ``memory``.

    A directory is never left: links whose target is outside it are skipped. A file that cannot be
    read, is binary or is not UTF-8 is skipped too; the rest is added, and the report lists every
    skipped file with the reason. Every file is read before anything is written; the source of
    each chunk is the file's absolute path.

    Raises:
        UserError: ``input_file`` when a named path does not exist, a directory has no text files,
            or every file was skipped (nothing was added; the error's ``skipped`` lists why).
    """
    files, skipped = _expand(paths)
    read: list[Path] = []
    texts: list[str] = []
    sources: list[str | None] = []
    for file in files:
        try:
            text = _text_of(file)
        except _Unreadable as exc:
            skipped.append(SkippedFile(path=str(file), reason=str(exc)))
            continue
        read.append(file)
        chunks = chunk_text(text, max_chars=max_chars, overlap=overlap)
        texts.extend(chunks)
        sources.extend([str(file.resolve())] * len(chunks))
    skipped.sort(key=lambda s: s.path)
    for skip in skipped:
        log.info("memory_file_skipped", path=skip.path, reason=skip.reason)
    if not read and skipped:
        listed = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:10]) + (f"; and {len(skipped) - 10} more" if len(skipped) > 10 else "")
        raise UserError(
            ErrorCode.INPUT_FILE,
            f"nothing was added: every file was skipped ({listed}); add readable UTF-8 text files inside the folder",
            details={"skipped": [s.model_dump() for s in skipped]},
        )
    ids = await memory.aadd(texts, sources=sources) if texts else []
    log.info("memory_files_added", files=len(read), chunks=len(texts), skipped=len(skipped))
    return AddReport(files=[str(f) for f in read], chunks=len(texts), ids=ids, skipped=skipped)

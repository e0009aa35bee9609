"""moa.memory.chroma: chunking, files, and ChromaMemory on disk and on a real Chroma server."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from moa.errors import ErrorCode, RunError, UserError
from moa.memory.chroma import ChromaMemory, Passage, add_files, chunk_text, ensure_writable_dir, passage_id
from moa.models.embeddings import Embedder, MiniLMEmbedder
from moa.testing import FakeMemory
from support.chroma_server import chroma_server, free_port

REPO = Path(__file__).resolve().parents[1]

CAT = "The cat sleeps on the warm sofa all afternoon."
RATES = "The central bank raised interest rates by half a point."
WINGS = "Aircraft wings generate lift from the pressure difference."


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


class HashEmbedder(Embedder):
    """A different (meaningless) embedder, to check collections refuse mixed vectors."""

    @property
    def name(self) -> str:
        return "hash"

    @property
    def dimension(self) -> int:
        return 8

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [[b / 255 for b in hashlib.sha256(t.encode()).digest()[:8]] for t in texts]


# --- chunk_text -----------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return text.split()


def test_chunk_short_text_is_one_chunk() -> None:
    assert chunk_text("  Hello world.  ") == ["Hello world."]
    assert chunk_text("") == [] and chunk_text(" \n\n \n") == []


def test_chunk_packs_paragraphs_up_to_max_chars() -> None:
    paragraphs = [f"Paragraph {i} " + "word " * 20 for i in range(10)]  # ~115 chars each
    text = "\r\n\r\n".join(paragraphs)
    chunks = chunk_text(text, max_chars=300, overlap=50)
    assert all(len(c) <= 300 for c in chunks)
    assert [len(c.split("\n\n")) for c in chunks] == [2, 2, 2, 2, 2]
    assert _words(" ".join(chunks)) == _words(text)  # nothing lost, nothing repeated


def test_chunk_splits_long_paragraph_at_sentences_with_overlap() -> None:
    sentences = [f"Sentence number {i} talks about topic {i} at some length." for i in range(40)]
    text = " ".join(sentences)
    chunks = chunk_text(text, max_chars=400, overlap=80)
    assert len(chunks) > 5 and all(len(c) <= 400 for c in chunks)
    for chunk in chunks[:-1]:
        assert chunk.endswith(".")  # cut after a sentence
    for prev, nxt in itertools.pairwise(chunks):
        first_word = nxt.split()[0]
        assert re.match(r"\w", first_word)  # starts at a word, not inside one
        assert nxt[:20] in prev  # repeats the end of the previous chunk
    assert set(_words(text)) == set(_words(" ".join(chunks)))


def test_chunk_splits_text_without_sentences_on_whitespace() -> None:
    text = " ".join(f"w{i:04d}" for i in range(500))  # 2,999 chars, no punctuation
    chunks = chunk_text(text, max_chars=200, overlap=30)
    assert all(len(c) <= 200 for c in chunks)
    for chunk in chunks:
        assert all(re.fullmatch(r"w\d{4}", w) for w in chunk.split())  # no word cut in half
    assert set(_words(" ".join(chunks))) == set(_words(text))


def test_chunk_hard_cuts_a_word_longer_than_max_chars() -> None:
    chunks = chunk_text("x" * 250, max_chars=100, overlap=10)
    assert all(len(c) <= 100 for c in chunks) and "".join(chunks).count("x") >= 250


def test_chunk_rejects_bad_limits() -> None:
    for max_chars, overlap in ((0, 0), (100, 100), (100, -1)):
        with pytest.raises(UserError):
            chunk_text("text", max_chars=max_chars, overlap=overlap)


def test_passage_id_is_content_hash() -> None:
    assert passage_id("a", "f.txt") == passage_id("a", "f.txt")
    assert passage_id("a", "f.txt") != passage_id("a", "g.txt") != passage_id("a")
    assert re.fullmatch(r"[0-9a-f]{16}", passage_id("a"))


# --- ChromaMemory on disk -------------------------------------------------------------------


@pytest.mark.real  # real Chroma on disk and the MiniLM embedder
def test_round_trip_on_disk_and_reopen(tmp_path: Path, minilm: MiniLMEmbedder) -> None:
    memory = ChromaMemory(tmp_path / "mem", embedder=minilm)
    ids = asyncio.run(
        memory.aadd([CAT, RATES, WINGS], sources=["pets.md", None, "aero.txt"], metadatas=[{"page": 3}, None, None])
    )
    assert ids == [passage_id(CAT, "pets.md"), passage_id(RATES), passage_id(WINGS, "aero.txt")]
    assert memory.count() == 3
    memory.close()

    reopened = ChromaMemory(tmp_path / "mem", embedder=MiniLMEmbedder())
    assert reopened.count() == 3
    hits = asyncio.run(reopened.aquery("where does the kitten nap?", k=2))
    assert [type(h) for h in hits] == [Passage, Passage]
    assert hits[0] == Passage(id=ids[0], text=CAT, score=hits[0].score, source="pets.md", metadata={"page": 3})
    assert 0.3 < hits[0].score <= 1.0 and hits[0].score > hits[1].score
    assert asyncio.run(reopened.aquery("monetary policy", k=10))[0].text == RATES  # k > count is fine
    reopened.close()


@pytest.mark.real  # real Chroma on disk and the MiniLM embedder
def test_reopen_in_a_fresh_process(tmp_path: Path, minilm: MiniLMEmbedder) -> None:
    memory = ChromaMemory(tmp_path, embedder=minilm)
    asyncio.run(memory.aadd([CAT, RATES, WINGS]))
    memory.close()
    code = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from moa.models.embeddings import make_embedder\n"
        "from moa.memory.chroma import ChromaMemory\n"
        "m = ChromaMemory(Path(sys.argv[1]), embedder=make_embedder('minilm'))\n"
        "print('RESULT', m.count(), asyncio.run(m.aquery('lift on a wing', k=1))[0].text)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert f"RESULT 3 {WINGS}" in out.stdout.splitlines()


@pytest.mark.real  # real Chroma on disk and the MiniLM embedder
def test_re_adding_is_idempotent(tmp_path: Path, minilm: MiniLMEmbedder) -> None:
    memory = ChromaMemory(tmp_path, collection="notes", embedder=minilm)
    first = asyncio.run(memory.aadd([CAT, RATES, CAT], sources=["a", "a", "a"]))
    assert first[0] == first[2] and memory.count() == 2  # duplicates in one call collapse
    again = asyncio.run(memory.aadd([RATES, CAT], sources=["a", "a"]))
    assert again == [first[1], first[0]] and memory.count() == 2
    asyncio.run(memory.aadd([CAT], sources=["b"]))  # same text, other source: another passage
    assert memory.count() == 3
    asyncio.run(memory.aadd(["updated text"], ids=[first[0]]))  # explicit id: upsert replaces
    assert memory.count() == 3
    assert asyncio.run(memory.aquery("updated text", k=1))[0].id == first[0]
    memory.close()


@pytest.mark.real  # real Chroma on disk and the MiniLM embedder
def test_bad_arguments(tmp_path: Path, minilm: MiniLMEmbedder) -> None:
    with pytest.raises(UserError):
        ChromaMemory(embedder=minilm)
    with pytest.raises(UserError):
        ChromaMemory(tmp_path, url="http://127.0.0.1:8000", embedder=minilm)
    with pytest.raises(UserError) as info:
        ChromaMemory(tmp_path, collection="x", embedder=minilm)
    assert info.value.code == ErrorCode.BAD_CONFIG
    memory = ChromaMemory(tmp_path, embedder=minilm)
    with pytest.raises(UserError):
        asyncio.run(memory.aadd(["a", "b"], sources=["only one"]))
    with pytest.raises(UserError):
        asyncio.run(memory.aquery("x", k=0))
    assert asyncio.run(memory.aadd([])) == [] and asyncio.run(memory.aquery("anything")) == []
    memory.close()


@pytest.mark.real  # real Chroma on disk and the MiniLM embedder
def test_collection_refuses_another_embedder(tmp_path: Path, minilm: MiniLMEmbedder) -> None:
    memory = ChromaMemory(tmp_path, embedder=minilm)
    asyncio.run(memory.aadd([CAT]))
    memory.close()
    other = ChromaMemory(tmp_path, embedder=HashEmbedder())
    with pytest.raises(UserError) as info:
        other.count()
    assert info.value.code == ErrorCode.BAD_CONFIG and "minilm" in info.value.message
    separate = ChromaMemory(tmp_path, collection="hashed", embedder=HashEmbedder())
    asyncio.run(separate.aadd([CAT]))
    assert separate.count() == 1
    separate.close()


def test_unwritable_directory_is_reported_before_chroma_runs(tmp_path: Path, minilm: MiniLMEmbedder) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, so nothing can be created below it (works as root too)")
    target = blocker / "memory"
    with pytest.raises(UserError) as info:
        ChromaMemory(target, embedder=minilm)
    assert info.value.code == ErrorCode.MEMORY_UNWRITABLE
    assert str(target) in info.value.message and "MOA_MEMORY_DIR" in info.value.message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_writable_check_leaves_nothing_behind(tmp_path: Path) -> None:
    ensure_writable_dir(tmp_path / "a" / "b")
    assert list((tmp_path / "a" / "b").iterdir()) == []


def test_chroma_write_errors_become_memory_unwritable(tmp_path: Path, minilm: MiniLMEmbedder) -> None:
    from chromadb.errors import InternalError

    memory = ChromaMemory(tmp_path, embedder=minilm)
    error = memory._translate(InternalError("attempt to write a readonly database"))
    assert isinstance(error, UserError) and error.code == ErrorCode.MEMORY_UNWRITABLE
    assert memory._translate(ValueError("something else")) is None


# --- add_files ------------------------------------------------------------------------------


@pytest.mark.real  # real Chroma on disk and the MiniLM embedder
def test_add_files_from_a_directory(tmp_path: Path, minilm: MiniLMEmbedder) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "pets.md").write_text(f"# Pets\n\n{CAT}\n")
    (docs / "sub" / "economy.txt").write_text(("\n\n".join([RATES] * 3) + "\n\n") * 10)
    (docs / "image.png").write_bytes(b"\x89PNG\x00\x00")  # not .txt/.md: skipped
    memory = ChromaMemory(tmp_path / "mem", embedder=minilm)
    report = asyncio.run(add_files(memory, [docs, docs / "pets.md"], max_chars=300))
    assert report.files == [str(docs / "pets.md"), str(docs / "sub" / "economy.txt"), str(docs / "pets.md")]
    assert report.chunks == len(report.ids) and report.chunks >= 6
    assert memory.count() == len(set(report.ids))
    hit = asyncio.run(memory.aquery("kitten", k=1))[0]
    assert hit.source == str((docs / "pets.md").resolve()) and CAT in hit.text
    again = asyncio.run(add_files(memory, [docs], max_chars=300))
    assert again.ids == report.ids[:-1] and memory.count() == len(set(report.ids))  # re-adding is idempotent
    memory.close()


def _unreadable(path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Make ``path`` unreadable: ``chmod 000`` for an ordinary user; root reads any file whatever its
    mode, so then reading that one file raises EACCES (``moa.memory.chroma._read_bytes`` patched).
    Returns which of the two was used."""
    path.chmod(0)
    if os.geteuid() != 0:
        return "chmod 000"
    from moa.memory import chroma

    real = chroma._read_bytes

    def refuse(file: Path) -> bytes:
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real(file)

    monkeypatch.setattr(chroma, "_read_bytes", refuse)
    return "patched read (root ignores permissions)"


def _hostile_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, str]]:
    """A folder with two good files and every kind of file ``memory add`` must skip, and the
    reason each skipped file must be reported with."""
    outside = tmp_path / "outside"
    (outside / "private").mkdir(parents=True)
    (outside / "secret.txt").write_text("The launch code is swordfish.")
    (outside / "private" / "diary.md").write_text("Dear diary, the vault code is 0451.")
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "pets.md").write_text(f"# Pets\n\n{CAT}\n")
    (docs / "sub" / "economy.txt").write_text(RATES)
    (docs / "also-pets.txt").symlink_to(docs / "pets.md")  # a link that stays inside: read once, at its target
    (docs / "secret.txt").symlink_to(outside / "secret.txt")  # leaves the folder: a file
    (docs / "private").symlink_to(outside / "private", target_is_directory=True)  # leaves the folder: a folder
    (docs / "dangling.txt").symlink_to(tmp_path / "gone.txt")
    os.mkfifo(docs / "pipe.txt")  # would block a reader forever
    (docs / "blob.txt").write_bytes(b"text\x00\x01\x02binary")
    (docs / "latin1.txt").write_bytes("caf\u00e9 cr\u00e8me".encode("latin-1"))
    (docs / "locked.txt").write_text("never read")
    _unreadable(docs / "locked.txt", monkeypatch)
    reasons = {
        "secret.txt": "outside",
        "private": "folder outside",
        "dangling.txt": "outside",  # its target is outside too
        "pipe.txt": "not a regular file",
        "blob.txt": "binary",
        "latin1.txt": "not UTF-8",
        "locked.txt": "cannot read it",
    }
    return docs, reasons


async def test_add_files_skips_what_leaves_the_folder_or_cannot_be_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs, reasons = _hostile_folder(tmp_path, monkeypatch)
    memory = FakeMemory()
    report = await add_files(memory, [docs])
    assert report.files == [str(docs / "pets.md"), str(docs / "sub" / "economy.txt")]
    assert {Path(s.path).name: s.reason for s in report.skipped}.keys() == reasons.keys()
    for skip in report.skipped:
        assert reasons[Path(skip.path).name] in skip.reason, skip
    stored = await memory.aquery("code", k=10)
    assert {p.source for p in stored} == {str((docs / "pets.md").resolve()), str((docs / "sub" / "economy.txt").resolve())}
    assert not any("swordfish" in p.text or "0451" in p.text for p in stored)


async def test_add_files_adds_nothing_and_says_why_when_every_file_is_skipped(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "blob.txt").write_bytes(b"\x00\x01")
    (tmp_path / "secret.txt").write_text("secret")
    (docs / "link.txt").symlink_to(tmp_path / "secret.txt")
    memory = FakeMemory()
    with pytest.raises(UserError) as info:
        await add_files(memory, [docs])
    assert info.value.code == ErrorCode.INPUT_FILE and "nothing was added" in info.value.message
    assert {Path(s["path"]).name for s in info.value.details["skipped"]} == {"blob.txt", "link.txt"}
    assert memory.count() == 0


async def test_add_files_named_files_missing_or_bad(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text(CAT)
    with pytest.raises(UserError) as info:  # a typo in a named path: nothing is written
        await add_files(FakeMemory(), [good, tmp_path / "missing.txt"])
    assert info.value.code == ErrorCode.INPUT_FILE and "missing.txt" in info.value.message
    (tmp_path / "blob.txt").write_bytes(b"\x00")
    report = await add_files(memory := FakeMemory(), [good, tmp_path / "blob.txt"])
    assert report.files == [str(good)] and [Path(s.path).name for s in report.skipped] == ["blob.txt"] and memory.count() == 1


@pytest.mark.real  # real Chroma on disk and the MiniLM embedder, through the command
def test_cli_memory_add_reports_skipped_files_and_adds_the_rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from moa.cli.main import app

    docs, reasons = _hostile_folder(tmp_path, monkeypatch)
    result = CliRunner().invoke(app, ["memory", "add", str(docs), "--memory-dir", str(tmp_path / "mem")])
    assert result.exit_code == 0, result.output
    assert "added 2 chunks from 2 files" in result.stdout
    assert f"skipped {len(reasons)} files" in result.stderr
    for name in reasons:
        assert str(docs / name) in result.stderr
    query = CliRunner().invoke(app, ["memory", "query", "launch code vault diary", "-k", "10", "--json", "--memory-dir", str(tmp_path / "mem")])
    passages = json.loads(query.stdout)
    assert len(passages) == 2 and not any("swordfish" in p["text"] or "0451" in p["text"] for p in passages)
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    (nothing / "blob.txt").write_bytes(b"\x00")
    failed = CliRunner().invoke(app, ["memory", "add", str(nothing), "--json", "--memory-dir", str(tmp_path / "mem")])
    assert failed.exit_code == 2 and "nothing was added" in json.loads(failed.stdout)["error"]["message"]


def test_add_files_empty_directory(tmp_path: Path, minilm: MiniLMEmbedder) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError) as info:
        asyncio.run(add_files(ChromaMemory(tmp_path / "mem", embedder=minilm), [tmp_path / "empty"]))
    assert info.value.code == ErrorCode.INPUT_FILE


# --- ChromaMemory on a real Chroma server ---------------------------------------------------


@pytest.mark.real
def test_round_trip_on_a_chroma_server(tmp_path: Path, minilm: MiniLMEmbedder) -> None:
    with chroma_server(tmp_path / "server-data", tmp_path / "chroma.log") as url:
        memory = ChromaMemory(url=url, collection="shared", embedder=minilm)
        ids = asyncio.run(memory.aadd([CAT, RATES, WINGS], sources=["pets.md", "news.txt", "aero.txt"]))
        assert asyncio.run(memory.aadd([CAT], sources=["pets.md"])) == ids[:1]
        memory.close()
        other_client = ChromaMemory(url=url, collection="shared", embedder=MiniLMEmbedder())
        assert other_client.count() == 3
        hit = asyncio.run(other_client.aquery("which party raised borrowing costs", k=1))[0]
        assert (hit.id, hit.text, hit.source) == (ids[1], RATES, "news.txt")
        other_client.close()


@pytest.mark.real  # a real Chroma client
def test_unreachable_chroma_server(minilm: MiniLMEmbedder) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    memory = ChromaMemory(url=url, embedder=minilm)
    with pytest.raises(RunError) as info:
        asyncio.run(memory.aquery("anything"))
    assert info.value.code == ErrorCode.MEMORY_UNREACHABLE
    assert url in info.value.message and "chroma run" in info.value.message

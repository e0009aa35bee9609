"""Reading a memory folder this process cannot write: `moa memory query` and `moa examples list`
work, from a temporary copy (Chroma writes even to read: :mod:`moa.memory.snapshot`), and nothing
in the folder changes; adding to it is ``memory_unwritable``.

Real Chroma and the MiniLM embedder. Root ignores permission bits, so "cannot write" is made real
with ``chattr +i`` (immutable: even root cannot write), skipped with the reason when the file
system or the privileges do not allow it; and simulated (the write check fails) otherwise.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from support.immutable import chattr, immutable  # noqa: F401  (immutable is a fixture)

import moa
from moa.cli.main import app
from moa.errors import ErrorCode, UserError
from moa.learning.store import ExampleStore
from moa.memory import chroma, snapshot
from moa.memory.chroma import ChromaMemory
from moa.memory.snapshot import ReadCopy
from moa.models.embeddings import MiniLMEmbedder

runner = CliRunner()
DOCS = {"cats.txt": "Cats sleep most of the day and purr when they are content.", "rockets.txt": "The rocket launch was delayed by high winds."}


def _freeze(folder: Path, made: list[Path]) -> None:
    for path in [*sorted(p for p in folder.rglob("*")), folder]:
        chattr(path, made)


def _filled(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text)
    memory = tmp_path / "mem"
    added = runner.invoke(app, ["memory", "add", str(docs), "--memory-dir", str(memory)])
    assert added.exit_code == 0, added.output
    return memory


def _contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _copies() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("moa-memory-read-*")}


def _query_works(memory: Path) -> None:
    query = runner.invoke(app, ["memory", "query", "a sleepy pet", "-k", "1", "--json", "--memory-dir", str(memory)])
    assert query.exit_code == 0, query.output
    assert [p["text"] for p in json.loads(query.stdout)] == [DOCS["cats.txt"]]


@pytest.mark.real
def test_a_really_read_only_memory_folder_can_be_queried_and_stays_unchanged(tmp_path: Path, immutable: list[Path]) -> None:
    memory = _filled(tmp_path)
    before, copies = _contents(memory), _copies()
    _freeze(memory, immutable)
    assert not snapshot.writable(memory)

    _query_works(memory)
    more = tmp_path / "more.txt"
    more.write_text("Another passage.")
    refused = runner.invoke(app, ["memory", "add", str(more), "--memory-dir", str(memory)])
    assert refused.exit_code == 2 and "memory_unwritable" in refused.stderr

    assert _contents(memory) == before
    assert _copies() <= copies  # the temporary copy is gone once the command is done


@pytest.mark.real
def test_a_memory_folder_that_fails_the_write_check_is_read_from_a_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same without ``chattr``: the write check fails for the folder; Chroma only ever opens the copy."""
    memory = _filled(tmp_path)
    before = _contents(memory)

    def refuse(path: Path) -> None:
        if Path(path) == memory:
            raise chroma._unwritable(memory, "simulated")

    opened: list[str] = []
    real_client = chroma.ChromaMemory._connect

    def recording(self: ChromaMemory) -> object:
        client = real_client(self)
        opened.append(str(self._read_copy.path() if self._read_copy else self.path))
        return client

    monkeypatch.setattr(chroma, "ensure_writable_dir", refuse)
    monkeypatch.setattr(chroma.ChromaMemory, "_connect", recording)
    _query_works(memory)
    assert opened and all(not path.startswith(str(memory)) for path in opened)
    assert _contents(memory) == before


@pytest.mark.real
def test_stored_examples_of_a_read_only_state_folder_can_be_listed(tmp_path: Path, immutable: list[Path]) -> None:
    settings = moa.load_settings(state_dir=tmp_path / "state")
    store = ExampleStore(settings, MiniLMEmbedder())
    asyncio.run(store.add("sentiment", "labels=positive,negative", "what a lovely day", "positive", "fake:big", run_id="r1"))
    store.close()
    folder = tmp_path / "state" / "examples"
    before = _contents(folder)
    _freeze(folder, immutable)

    listed = runner.invoke(app, ["examples", "list", "--json"], env={"MOA_STATE_DIR": str(tmp_path / "state")})
    assert listed.exit_code == 0, listed.output
    assert [(e["text"], e["label"], e["run_id"]) for e in json.loads(listed.stdout)] == [("what a lovely day", "positive", "r1")]
    assert _contents(folder) == before


def test_a_folder_too_large_to_copy_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "chroma.sqlite3").write_bytes(b"x" * 2048)
    with pytest.raises(UserError) as info:
        ReadCopy(tmp_path, max_bytes=1024).path()
    assert info.value.code == ErrorCode.MEMORY_UNWRITABLE
    assert "too large" in info.value.message and "--memory-dir" in info.value.message


def test_a_copy_is_made_once_and_removed_on_close(tmp_path: Path) -> None:
    (tmp_path / "chroma.sqlite3").write_bytes(b"db")
    copy = ReadCopy(tmp_path)
    first = copy.path()
    assert copy.path() == first and (first / "chroma.sqlite3").read_bytes() == b"db"
    copy.close()
    assert not first.exists() and (tmp_path / "chroma.sqlite3").exists()

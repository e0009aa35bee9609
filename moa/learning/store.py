"""What moa learns, and where it keeps it (under ``settings.state_dir``)::

    agents/<agent>/specialist-<key>.npz            trained specialist (``moa train``)
    agents/<agent>/tagger-<key>.npz                trained entity tagger (``moa train extraction DATA.conll``)
    agents/<agent>/calibration-<model>-<key>.json  confidence calibration (``moa calibrate``)
    agents/<agent>/thresholds-<cascade>-<key>.json thresholds chosen from data (``moa calibrate --cascade``)
    examples/                                      Chroma: answers of higher steps, one collection per agent task

A *key* names an agent's task: its label set (``labels=negative,positive``), filter criterion
(``criterion=spam``) or entity types (``types=location,person``). Specialists, calibrations and
thresholds are kept per agent and key, and a run uses them only for the same key (thresholds: and
the same cascade; an entity tagger: for any subset of its types). Calibrations made before they were kept per key
(``calibration-<model>.json``, no key inside) are never applied.

:class:`ExampleStore` keeps every escalated item that a higher step answered confidently (text,
label, and its provenance: run, model, time, agent, task) unless ``store_examples`` is off.
``moa train AGENT --from-escalations`` refits the specialist on them, and the agent's few-shot
prompt on the small model includes the nearest stored examples (``shots_from_examples``; 0 turns
the reading off). ``moa examples list`` / ``moa examples rm`` show and delete them.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

from moa.errors import MoaError
from moa.memory.snapshot import ReadCopy
from moa.settings import Settings

if TYPE_CHECKING:
    from moa.memory.chroma import ChromaMemory, Passage
    from moa.models.embeddings import Embedder


def _slug(text: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:40] or "x"
    return f"{clean}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def agent_dir(settings: Settings, agent: str) -> Path:
    return settings.state_dir / "agents" / agent


def specialist_path(settings: Settings, agent: str, key: str) -> Path:
    return agent_dir(settings, agent) / f"specialist-{_slug(key)}.npz"


def tagger_path(settings: Settings, agent: str, key: str) -> Path:
    """Where the entity tagger of ``agent`` for the type set ``key`` (``types=...``) is kept."""
    return agent_dir(settings, agent) / f"tagger-{_slug(key)}.npz"


def calibration_path(settings: Settings, agent: str, model: str, key: str) -> Path:
    """Where the calibration of ``agent`` on ``model`` for the task ``key`` (its label set) is kept."""
    return agent_dir(settings, agent) / f"calibration-{_slug(model)}-{_slug(key)}.json"


def thresholds_path(settings: Settings, agent: str, key: str, steps: Sequence[str]) -> Path:
    """Where the thresholds chosen for ``agent`` on the task ``key`` and the cascade ``steps`` are kept."""
    return agent_dir(settings, agent) / f"thresholds-{_slug(','.join(steps))}-{_slug(key)}.json"


def describe_key(key: str) -> str:
    """A task key in words: ``labels=negative,positive`` → ``negative, positive``; ``criterion=spam``
    → ``criterion spam``."""
    name, _, value = key.partition("=")
    if name in ("labels", "types"):
        return ("types " if name == "types" else "") + ", ".join(value.split(","))
    return f"{name} {value}" if value else key


class Learned(BaseModel):
    """A specialist or calibration file of an agent, and the task it was made for."""

    kind: Literal["specialist", "calibration", "thresholds"]
    key: str
    """The task (``labels=...``, ``criterion=...``); empty for a calibration made before moa kept
    calibrations per label set (it is never applied)."""
    model: str | None = None
    """The model a calibration is for."""
    detail: str = ""
    """Thresholds: the chosen thresholds per step in words (``specialist 0.55 → slm``)."""
    path: Path


def learned_files(settings: Settings, agent: str) -> list[Learned]:
    """Every readable specialist and calibration file of ``agent`` (unreadable ones are left out:
    using them already says why)."""
    folder = agent_dir(settings, agent)
    if not folder.is_dir():
        return []
    from moa.learning.calibration import Calibration
    from moa.learning.specialist import Specialist
    from moa.learning.tagger import Tagger
    from moa.learning.thresholds import ThresholdChoice

    found: list[Learned] = []
    for pattern, load in (("specialist-*.npz", Specialist.load), ("tagger-*.npz", Tagger.load)):
        for path in sorted(folder.glob(pattern)):
            try:
                found.append(Learned(kind="specialist", key=load(path).key, path=path))  # type: ignore[operator]
            except MoaError:
                continue
    for path in sorted(folder.glob("calibration-*.json")):
        try:
            calibration = Calibration.load(path)
        except MoaError:
            continue
        found.append(Learned(kind="calibration", key=calibration.key, model=calibration.model, path=path))
    for path in sorted(folder.glob("thresholds-*.json")):
        try:
            choice = ThresholdChoice.load(path)
        except MoaError:
            continue
        found.append(Learned(kind="thresholds", key=choice.key, detail=f"{choice.describe()} (goal {choice.goal}, {choice.n} items)", path=path))
    return found


def learned_summary(settings: Settings, agent: str) -> str:
    """What is stored for ``agent``, in words (for ``moa agents``): each specialist's and
    calibration's task (thresholds: :func:`thresholds_summary`)."""
    parts = []
    for item in learned_files(settings, agent):
        task = f"({describe_key(item.key)})" if item.key else "(no label set: fit it again)"
        if item.kind != "thresholds":
            parts.append(f"specialist {task}" if item.kind == "specialist" else f"calibration on {item.model} {task}")
    return "; ".join(parts) or "-"


def thresholds_summary(settings: Settings, agent: str) -> list[str]:
    """The thresholds chosen from data for ``agent``, one line per task and cascade (for ``moa agents``)."""
    return [f"({describe_key(i.key)}) {i.detail}" for i in learned_files(settings, agent) if i.kind == "thresholds"]


class Example(BaseModel):
    """A labelled example, as a higher step answered it, with where it came from."""

    text: str
    """The item, verbatim: it may later be shown to the small model as a demonstration."""
    label: str
    model: str
    """The model whose answer is the label."""
    time: float
    """When it was stored (seconds since the epoch)."""
    score: float | None = None
    """Similarity to the query (nearest-example lookups only)."""
    id: str = ""
    """The example's id in its collection (``moa examples rm ID``)."""
    agent: str = ""
    key: str = ""
    """The agent's task (label set, or filter criterion) it was answered for; empty for examples
    stored before moa kept provenance."""
    run_id: str | None = None
    """The run that stored it (``None`` for examples stored before moa kept provenance)."""

    @classmethod
    def of(cls, passage: Passage, agent: str, score: float | None = None) -> Example | None:
        meta = passage.metadata
        if "label" not in meta:
            return None
        run = meta.get("run_id")
        return cls(
            text=passage.text, label=str(meta["label"]), model=str(meta.get("model", "")), time=float(meta.get("time", 0)), score=score,
            id=passage.id, agent=str(meta.get("agent", agent)), key=str(meta.get("key", "")), run_id=None if run is None else str(run),
        )  # fmt: skip


_COLLECTION = "ex-{agent}-{digest}"


class ExampleStore:
    """Labelled examples per agent task (``key``), in Chroma collections under ``state_dir/examples``.

    Each example keeps its provenance: the run that stored it, the model that answered, the time,
    the agent and the task. :meth:`stored` lists them and :meth:`remove` deletes them (``moa
    examples list`` / ``moa examples rm``)."""

    def __init__(self, settings: Settings, embedder: Embedder) -> None:
        self.path = settings.state_dir / "examples"
        self.embedder = embedder
        self._memories: dict[str, ChromaMemory] = {}
        self._counts: dict[str, int] = {}
        self._exists: bool | None = None  # looked at once per store (a run): examples another process adds later are for later runs
        self._lock = asyncio.Lock()
        self._read_copy = ReadCopy(self.path)
        """Shared by the collections when the folder cannot be written (copied only then: :mod:`moa.memory.snapshot`)."""

    def _open(self, name: str) -> ChromaMemory:
        from moa.memory.chroma import ChromaMemory

        if name not in self._memories:
            self._memories[name] = ChromaMemory(self.path, collection=name, embedder=self.embedder, read_copy=self._read_copy)
        return self._memories[name]

    def _memory(self, agent: str, key: str) -> ChromaMemory:
        return self._open(_COLLECTION.format(agent=agent, digest=hashlib.sha256(key.encode()).hexdigest()[:16]))

    def forget(self) -> None:
        """Look at the disk again (a new run): examples other processes stored since count now."""
        self._exists = None
        self._counts.clear()

    async def add(self, agent: str, key: str, text: str, label: str, model: str, *, run_id: str | None = None) -> str:
        """Store one example with its provenance; returns its id (the same text again replaces it)."""
        memory = self._memory(agent, key)
        example_id = hashlib.sha256(text.encode()).hexdigest()[:16]
        meta: dict[str, str | float] = {"label": label, "model": model, "time": time.time(), "agent": agent, "key": key}
        if run_id is not None:
            meta["run_id"] = run_id
        await memory.aadd([text], ids=[example_id], metadatas=[meta])
        self._counts.pop(memory.collection_name, None)
        self._exists = True
        return example_id

    async def count(self, agent: str, key: str) -> int:
        if self._exists is None:
            self._exists = self.path.exists()
        if not self._exists:  # nothing stored yet: don't open Chroma
            return 0
        memory = self._memory(agent, key)
        if memory.collection_name not in self._counts:
            self._counts[memory.collection_name] = await asyncio.to_thread(memory.count)
        return self._counts[memory.collection_name]

    async def nearest(self, agent: str, key: str, text: str, k: int) -> list[Example]:
        if k < 1 or await self.count(agent, key) == 0:
            return []
        passages = await self._memory(agent, key).aquery(text, k=k)
        return [e for p in passages if (e := Example.of(p, agent, p.score)) is not None]

    async def all(self, agent: str, key: str) -> list[Example]:
        if await self.count(agent, key) == 0:
            return []
        rows = await asyncio.to_thread(self._memory(agent, key).all)
        return [e for p in rows if (e := Example.of(p, agent)) is not None]

    def _collections(self, agent: str | None) -> list[tuple[str, ChromaMemory]]:
        """Every example collection on disk (of ``agent`` only, if given), with its agent's name."""
        from moa.memory.chroma import collection_names

        if not self.path.exists():
            return []
        found = []
        for name in collection_names(self.path, read_copy=self._read_copy):
            match = re.fullmatch(r"ex-(.+)-([0-9a-f]{16})", name)
            if match and (agent is None or match.group(1) == agent):
                found.append((match.group(1), self._open(name)))
        return found

    async def stored(self, agent: str | None = None) -> list[Example]:
        """Every stored example (of ``agent``, if given), oldest first."""

        def read() -> list[Example]:
            return [e for owner, memory in self._collections(agent) for p in memory.all() if (e := Example.of(p, owner)) is not None]

        return sorted(await asyncio.to_thread(read), key=lambda e: (e.time, e.agent, e.id))

    async def remove(self, *, ids: Sequence[str] = (), run_id: str | None = None, everything: bool = False, agent: str | None = None) -> list[Example]:
        """Delete the examples with these ``ids``, or stored by run ``run_id``, or ``everything``
        (of ``agent`` only, if given). Returns what was deleted."""
        wanted = set(ids)

        def delete() -> list[Example]:
            gone: list[Example] = []
            for owner, memory in self._collections(agent):
                doomed = [
                    e for p in memory.all() if (e := Example.of(p, owner)) is not None and (everything or e.id in wanted or (run_id is not None and e.run_id == run_id))
                ]
                memory.delete([e.id for e in doomed])
                gone += doomed
            return gone

        removed = await asyncio.to_thread(delete)
        self.forget()
        return removed

    def close(self) -> None:
        for memory in self._memories.values():
            memory.close()
        self._read_copy.close()

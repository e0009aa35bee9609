"""What moa learns, and where it keeps it (under ``settings.state_dir``)::

    agents/<agent>/specialist-<key>.npz   trained specialist (``moa train``)
    agents/<agent>/calibration-<model>.json  confidence calibration (``moa calibrate``)
    examples/                              Chroma: answers of higher steps, one collection per agent task

:class:`ExampleStore` keeps every escalated item that a higher step answered (text, label, model,
time). ``moa train AGENT --from-escalations`` refits the specialist on them, and the agent's
few-shot prompt on the small model includes the nearest stored examples.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from moa.settings import Settings

if TYPE_CHECKING:
    from moa.memory.chroma import ChromaMemory
    from moa.models.embeddings import Embedder


def _slug(text: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:40] or "x"
    return f"{clean}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def agent_dir(settings: Settings, agent: str) -> Path:
    return settings.state_dir / "agents" / agent


def specialist_path(settings: Settings, agent: str, key: str) -> Path:
    return agent_dir(settings, agent) / f"specialist-{_slug(key)}.npz"


def calibration_path(settings: Settings, agent: str, model: str) -> Path:
    return agent_dir(settings, agent) / f"calibration-{_slug(model)}.json"


def learned_summary(settings: Settings, agent: str) -> str:
    """What is stored for ``agent``, in words (for ``moa agents``)."""
    folder = agent_dir(settings, agent)
    specialists = len(list(folder.glob("specialist-*.npz"))) if folder.is_dir() else 0
    calibrations = len(list(folder.glob("calibration-*.json"))) if folder.is_dir() else 0
    parts = [f"{specialists} specialist{'s' * (specialists != 1)}"] if specialists else []
    parts += [f"{calibrations} calibration{'s' * (calibrations != 1)}"] if calibrations else []
    return ", ".join(parts) or "-"


class Example(BaseModel):
    """A labelled example, as a higher step answered it."""

    text: str
    label: str
    model: str
    time: float
    score: float | None = None
    """Similarity to the query (nearest-example lookups only)."""


class ExampleStore:
    """Labelled examples per agent task (``key``), in Chroma collections under ``state_dir/examples``."""

    def __init__(self, settings: Settings, embedder: Embedder) -> None:
        self.path = settings.state_dir / "examples"
        self.embedder = embedder
        self._memories: dict[str, ChromaMemory] = {}
        self._counts: dict[str, int] = {}
        self._exists: bool | None = None  # looked at once per store (a run): examples another process adds later are for later runs
        self._lock = asyncio.Lock()

    def _memory(self, agent: str, key: str) -> ChromaMemory:
        from moa.memory.chroma import ChromaMemory

        name = f"ex-{agent}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
        if name not in self._memories:
            self._memories[name] = ChromaMemory(self.path, collection=name, embedder=self.embedder)
        return self._memories[name]

    def forget(self) -> None:
        """Look at the disk again (a new run): examples other processes stored since count now."""
        self._exists = None
        self._counts.clear()

    async def add(self, agent: str, key: str, text: str, label: str, model: str) -> None:
        memory = self._memory(agent, key)
        await memory.aadd([text], ids=[hashlib.sha256(text.encode()).hexdigest()[:16]], metadatas=[{"label": label, "model": model, "time": time.time()}])
        self._counts.pop(memory.collection_name, None)
        self._exists = True

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
        return [
            Example(text=p.text, label=str(p.metadata["label"]), model=str(p.metadata.get("model", "")), time=float(p.metadata.get("time", 0)), score=p.score)
            for p in passages
            if "label" in p.metadata
        ]

    async def all(self, agent: str, key: str) -> list[Example]:
        if await self.count(agent, key) == 0:
            return []
        rows = await asyncio.to_thread(self._memory(agent, key).all)
        return [
            Example(text=p.text, label=str(p.metadata["label"]), model=str(p.metadata.get("model", "")), time=float(p.metadata.get("time", 0)))
            for p in rows
            if "label" in p.metadata
        ]

    def close(self) -> None:
        for memory in self._memories.values():
            memory.close()

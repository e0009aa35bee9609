"""Shared vector memory: a Chroma collection (embedded ``PersistentClient`` or a Chroma server via
``memory_url``) that agents search and write, with moa's own offline embedder."""

from moa.memory.chroma import ChromaMemory, Memory, Passage

__all__ = ["ChromaMemory", "Memory", "Passage"]

"""Retrieval agent: search the shared memory (Chroma) and return passages; can also write to it.

No generative model is involved: the query is embedded with the run's embedder (the same one the
router planner uses) and matched by cosine similarity.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from moa.kit import FunctionAgent, Passage, RunContext


class RetrievalInput(BaseModel):
    """A query over the shared memory."""

    query: str = Field(min_length=1)
    """What to look for."""
    k: int = Field(5, ge=1, le=100)
    """How many passages to return."""
    min_score: float = Field(0.0, ge=0, le=1)
    """Drop passages less similar than this (cosine similarity)."""
    add: list[str] = Field(default_factory=list)
    """Texts to store in memory before searching."""
    source: str | None = None
    """Source label of the added texts."""


class Passages(BaseModel):
    """Passages found in memory, most similar first."""

    passages: list[Passage] = Field(default_factory=list)


async def retrieve(ctx: RunContext, data: RetrievalInput) -> Passages:
    memory = ctx.memory()
    if data.add:
        await memory.aadd(data.add, sources=[data.source] * len(data.add))
    found = await memory.aquery(data.query, k=data.k)
    return Passages(passages=[p for p in found if p.score >= data.min_score])


class RetrievalAgent(FunctionAgent[RetrievalInput, Passages]):
    name = "retrieval"
    description = "Searches the shared memory (documents added with `moa memory add`) for passages relevant to a query, with ids, scores and sources."
    examples = (
        "search the knowledge base for",
        "find documents about",
        "look up what our notes say about",
        "retrieve relevant passages from memory",
        "according to the documentation",
    )
    input_type = RetrievalInput
    output_type = Passages
    text_field = "query"
    plan_options = frozenset({"k", "min_score"})  # `add` writes the shared memory: code only, never a plan

    def forward(self, item: str, output: BaseModel) -> list[str]:
        return [p.text for p in output.passages]  # type: ignore[attr-defined]


agent = RetrievalAgent(retrieve)

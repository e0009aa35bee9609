"""Retrieval over the shared memory: add documents, then ask questions routed to the retrieval agent.

    python examples/memory_retrieval.py [MEMORY_DIR]

Uses a throwaway memory directory by default (pass one to keep it). The embedder is the shipped
all-MiniLM-L6-v2 (int8 ONNX), so this works offline.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import moa
from moa.memory.chroma import add_files

DOCS = Path(__file__).parent / "data" / "handbook.md"
QUESTIONS = ["how many days do I have to return an item?", "which countries do you ship to?"]


async def amain(memory_dir: Path) -> moa.RunResult:
    settings = moa.load_settings(memory_dir=memory_dir)
    ctx = moa.RunContext.create(settings)
    try:
        report = await add_files(ctx.memory(), [DOCS])
        sys.stdout.write(f"memory: {report.chunks} chunks from {report.files} file(s)\n")
        result = await moa.arun("search the knowledge base for passages about each question", input=QUESTIONS, context=ctx)
    finally:
        await ctx.aclose()
    for sub in result.results.values():
        for item in sub.items:
            best = item.output.passages[0] if item.output and item.output.passages else None  # type: ignore[attr-defined]
            sys.stdout.write(f"Q: {item.item}\n  -> {best.text if best else 'nothing found'} ({best.score:.2f} from {best.source})\n" if best else f"Q: {item.item}\n  -> nothing found\n")
    return result


def main(memory_dir: Path | None = None) -> moa.RunResult:
    if memory_dir is not None:
        return asyncio.run(amain(memory_dir))
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(amain(Path(tmp)))


if __name__ == "__main__":
    from moa.logs import configure_logging

    configure_logging()
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else None)

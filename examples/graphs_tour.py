"""The built-in graphs on the embedded default model: triage, mixture-of-agents and RAG.

    python examples/graphs_tour.py

* ``triage``: a spam gate on the small model over the reviews; what passes goes to the llm tier;
* ``mixture``: two layers of proposers and an aggregator answer a question;
* ``rag``: the handbook goes into a temporary memory; questions are answered with citations,
  and a question the handbook cannot answer gets "I don't know".

Each graph is built from Python here; ``examples/graphs/*.yaml`` declare the same graphs.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import moa
from moa.graphs import mixture, rag, triage
from moa.memory.chroma import add_files
from moa.workflow.report import to_markdown

DATA = Path(__file__).parent / "data"


def run_triage(reviews: Path = DATA / "reviews.txt") -> moa.RunResult:
    return moa.run("Filter out spam, then give the sentiment of the rest", input=reviews, graph=triage.build(criterion="spam"))


def run_mixture(question: str = "Why do small language models help keep data private?") -> moa.RunResult:
    return moa.run(question, graph=mixture.build(layers=2))


async def _fill(memory_dir: Path) -> None:
    ctx = moa.RunContext.create(moa.load_settings(memory_dir=memory_dir))
    await add_files(ctx.memory(), [DATA / "handbook.md"])
    await ctx.aclose()


def run_rag(memory_dir: Path, questions: list[str] | None = None) -> moa.RunResult:
    import asyncio

    asyncio.run(_fill(memory_dir))
    questions = questions or ["How many days do I have to return an item?", "What is the airspeed of an unladen swallow?"]
    return moa.run("answer from the handbook", input=questions, graph=rag.build(k=3, min_score=0.3), settings=moa.load_settings(memory_dir=memory_dir))


def main(memory_dir: Path | None = None) -> dict[str, moa.RunResult]:
    with tempfile.TemporaryDirectory() as tmp:
        results = {"triage": run_triage(), "mixture": run_mixture(), "rag": run_rag(memory_dir or Path(tmp) / "memory")}
    for name, result in results.items():
        sys.stdout.write(f"\n## {name}\n\n{to_markdown(result)}")
    return results


if __name__ == "__main__":
    from moa.logs import configure_logging

    configure_logging()
    main()

"""moa inside an existing asyncio app, without `moa serve`: a FastAPI route, a streaming route, and
a bot loop, all sharing one run context (the models load once).

    uvicorn --factory examples.embedding_asyncio:make_app   # POST /classify, POST /classify/stream
    python examples/embedding_asyncio.py                    # the bot loop on three messages

Uses the configured tiers (MOA_SLM / MOA_LLM; the embedded default model otherwise). See
docs/embedding.md.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

import moa


class Classify(BaseModel):
    texts: list[str]


def make_app(slm: moa.ModelBackend | None = None, llm: moa.ModelBackend | None = None) -> FastAPI:
    """The app; ``slm``/``llm`` replace the configured models (tests pass fakes)."""
    settings = moa.load_settings()
    context = moa.RunContext.create(settings, models=moa.Models(settings, slm=slm, llm=llm))  # shared by every request

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await context.aclose()

    app = FastAPI(lifespan=lifespan)

    @app.post("/classify")
    async def classify(body: Classify) -> dict[str, object]:
        # A client that disconnects cancels this handler; the run then ends `interrupted` and
        # `await moa.aresume(run_id)` (or `moa resume RUN_ID`) can finish it.
        result = await moa.arun("classify the sentiment", input=body.texts, context=context)
        labels = [item.output.label if item.output is not None else None for r in result.results.values() for item in r.items]  # type: ignore[attr-defined]
        return {"run_id": result.run_id, "status": result.status, "labels": labels, "answer": result.answer}

    @app.post("/classify/stream")
    async def classify_stream(body: Classify) -> StreamingResponse:
        async def lines() -> AsyncIterator[str]:  # one JSON line per event, the result last
            async for event in moa.stream("classify the sentiment", input=body.texts, context=context):
                if isinstance(event, moa.RunResult):
                    yield json.dumps({"result": {"run_id": event.run_id, "status": event.status, "answer": event.answer}}) + "\n"
                else:
                    yield json.dumps({"event": event.kind, "subtask": event.subtask}) + "\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    return app


async def bot_loop(inbox: asyncio.Queue[str | None], context: moa.RunContext, replies: list[str]) -> None:
    """A chat bot's loop: each message is a run; progress could update a "typing..." indicator."""
    while (message := await inbox.get()) is not None:
        done = 0
        async for event in moa.stream("classify the sentiment", input=[message], context=context):
            if isinstance(event, moa.RunResult):
                replies.append(f"{message!r}: {event.answer or event.status} ({done} item(s))")
            elif event.kind == "item_done":
                done += 1


async def amain(messages: list[str], slm: moa.ModelBackend | None = None, llm: moa.ModelBackend | None = None) -> list[str]:
    settings = moa.load_settings()
    context = moa.RunContext.create(settings, models=moa.Models(settings, slm=slm, llm=llm))
    inbox: asyncio.Queue[str | None] = asyncio.Queue()
    replies: list[str] = []
    try:
        bot = asyncio.create_task(bot_loop(inbox, context, replies))
        for message in [*messages, None]:
            await inbox.put(message)
        await bot
    finally:
        await context.aclose()
    return replies


if __name__ == "__main__":
    for reply in asyncio.run(amain(["I love it", "it broke after a day", "fine, I guess"])):
        sys.stdout.write(reply + "\n")

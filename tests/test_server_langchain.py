"""LangChain's ``ChatOpenAI`` (``langchain-openai``) pointed at `moa serve` the way a bot would:
``base_url=<server>/v1``, the API key, ``model="moa/plan_execute"``; ``invoke``, ``ainvoke`` and
``stream`` against a real uvicorn server on 127.0.0.1 with fake models: the answer and the run's
real token usage come through.

There is no internet here: ``tiktoken`` (a dependency of ``langchain-openai``) downloads its
encodings on first use, but ``ChatOpenAI`` only uses it to count tokens locally
(``get_num_tokens*``), never to invoke or stream; ``get_num_tokens`` takes a tokenizer of one's own
(``custom_get_token_ids``). The tests make any encoding load fail, so they would notice one."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tiktoken
from langchain_core.messages import AIMessageChunk, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.server_load import fake, serving  # noqa: E402
from moa.server import ServerConfig, create_app  # noqa: E402
from moa.server.keys import ApiKey, Keyring, hash_key  # noqa: E402
from moa.settings import load_settings  # noqa: E402
from moa.workflow.view import load_result  # noqa: E402

KEY = "moa-langchain-test-key"
TASK = "classify the sentiment\n---\ngreat phone\nawful battery"


@pytest.fixture(autouse=True)
def no_encoding_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("tiktoken was asked for an encoding (a download from the internet)")

    monkeypatch.setattr(tiktoken, "get_encoding", refuse)
    monkeypatch.setattr(tiktoken, "encoding_for_model", refuse)


@pytest.fixture
def base_url() -> Iterator[str]:
    model = fake()
    app = create_app(load_settings(), config=ServerConfig(), keys=Keyring([ApiKey(name="langchain", sha256=hash_key(KEY))]), slm=model, llm=model)
    with serving(app) as url:
        yield f"{url}/v1"


def chat(base_url: str, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(base_url=base_url, api_key=KEY, model="moa/plan_execute", max_retries=0, **kwargs)


def test_invoke_gives_the_answer_and_the_runs_usage(base_url: str) -> None:
    reply = chat(base_url).invoke([SystemMessage("You are a support bot."), HumanMessage(TASK)])
    assert reply.content == "Every item is positive."
    run_id = reply.response_metadata["id"].removeprefix("chatcmpl-")  # the completion's id is moa's run id
    result = asyncio.run(load_result(load_settings(), run_id))
    assert [i.item for i in result.results["s1"].items] == ["great phone", "awful battery"]
    usage = reply.usage_metadata
    assert usage is not None
    assert usage["input_tokens"] == result.summary.prompt_tokens > 0
    assert usage["output_tokens"] == result.summary.completion_tokens > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert reply.response_metadata["model_name"] == "moa/plan_execute" and reply.response_metadata["finish_reason"] == "stop"


def test_stream_gives_the_answer_in_chunks_then_the_usage(base_url: str) -> None:
    chunks = list(chat(base_url, stream_usage=True).stream(TASK))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole += chunk
    assert whole.content == "Every item is positive."
    assert whole.usage_metadata is not None and whole.usage_metadata["input_tokens"] > 0 and whole.usage_metadata["output_tokens"] > 0


async def test_ainvoke_and_astream(base_url: str) -> None:
    model = chat(base_url, stream_usage=True)
    reply = await model.ainvoke(TASK)
    assert reply.content == "Every item is positive." and reply.usage_metadata is not None and reply.usage_metadata["total_tokens"] > 0
    text = "".join([str(c.content) async for c in model.astream("classify the sentiment")])
    assert text == "Every item is positive."


def test_counting_tokens_offline_with_a_tokenizer_of_ones_own(base_url: str) -> None:
    model = chat(base_url, custom_get_token_ids=lambda text: [len(word) for word in text.split()])
    assert model.get_num_tokens("classify the sentiment") == 3
    with pytest.raises(AssertionError, match="tiktoken was asked"):  # what would download an encoding
        chat(base_url).get_num_tokens("classify the sentiment")

"""A bot written against the OpenAI API uses `moa serve` by changing only ``base_url`` and the
key: the official ``openai`` client (sync and async, streaming and not) against a real uvicorn
server on 127.0.0.1, fake models behind it. (LangChain's ``ChatOpenAI``: tests/test_server_langchain.py.)"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.server_load import fake, serving  # noqa: E402
from moa.server import ServerConfig, create_app  # noqa: E402
from moa.server.keys import ApiKey, Keyring, hash_key  # noqa: E402
from moa.settings import load_settings  # noqa: E402
from moa.testing import FakeModel  # noqa: E402
from moa.workflow.view import load_result  # noqa: E402

KEY = "moa-openai-test-key"


@pytest.fixture
def model() -> FakeModel:
    return fake()


@pytest.fixture
def base_url(model: FakeModel) -> Iterator[str]:
    app = create_app(load_settings(), config=ServerConfig(), keys=Keyring([ApiKey(name="bot", sha256=hash_key(KEY))]), slm=model, llm=model)
    with serving(app) as url:
        yield f"{url}/v1"


def test_models_are_the_graphs(base_url: str) -> None:
    models = [m.id for m in openai.OpenAI(base_url=base_url, api_key=KEY).models.list()]
    assert {"moa/plan_execute", "moa/triage", "moa/mixture", "moa/rag"} <= set(models)


def test_chat_completion_with_the_official_client(base_url: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key=KEY)
    raw = client.chat.completions.with_raw_response.create(
        model="moa/plan_execute",
        messages=[{"role": "system", "content": "You are a bot."}, {"role": "user", "content": "classify the sentiment\n---\ngreat phone\nawful battery"}],
        temperature=0.2,
        max_tokens=100,
    )
    completion = raw.parse()
    run_id = raw.headers["x-moa-run-id"]
    result = load_result_sync(run_id)
    assert completion.choices[0].message.content == "Every item is positive." == result.answer
    assert completion.choices[0].finish_reason == "stop" and completion.model == "moa/plan_execute"
    assert completion.usage is not None and completion.usage.prompt_tokens == result.summary.prompt_tokens > 0
    assert completion.usage.completion_tokens == result.summary.completion_tokens > 0
    assert [i.item for i in result.results["s1"].items] == ["great phone", "awful battery"]
    assert result.task == "classify the sentiment"


def load_result_sync(run_id: str) -> Any:
    import asyncio

    return asyncio.run(load_result(load_settings(), run_id))


def test_streaming_with_the_official_client(base_url: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key=KEY)
    stream = client.chat.completions.create(
        model="moa/plan_execute",
        messages=[{"role": "user", "content": "classify the sentiment"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"input": ["great phone"]},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Every item is positive."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


async def test_async_client_streaming_and_not(base_url: str) -> None:
    client = openai.AsyncOpenAI(base_url=base_url, api_key=KEY)
    completion = await client.chat.completions.create(model="moa/plan_execute", messages=[{"role": "user", "content": "classify the sentiment"}])
    assert completion.choices[0].message.content == "Every item is positive."
    stream = await client.chat.completions.create(model="plan_execute", messages=[{"role": "user", "content": "classify the sentiment"}], stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Every item is positive."
    await client.close()


def test_errors_reach_the_client_as_openai_errors(base_url: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as bad_key:
        openai.OpenAI(base_url=base_url, api_key="nope", max_retries=0).models.list()
    assert bad_key.value.code == "unauthorized"
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert unknown.value.code == "unknown_graph" and "GET /v1/models" in unknown.value.message
    with pytest.raises(openai.UnprocessableEntityError) as no_user:
        client.chat.completions.create(model="moa/plan_execute", messages=[{"role": "system", "content": "hi"}])
    assert no_user.value.code == "empty_task"


def test_a_failed_run_is_an_error_streaming_or_not(tmp_path: Path) -> None:
    down = FakeModel(fail_with=openai_unreachable())
    app = create_app(load_settings(planner="llm"), config=ServerConfig(), keys=Keyring([ApiKey(name="bot", sha256=hash_key(KEY))]), slm=down, llm=down)
    with serving(app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        with pytest.raises(openai.APIStatusError) as plain:
            client.chat.completions.create(model="moa/plan_execute", messages=[{"role": "user", "content": "classify the sentiment"}])
        assert plain.value.status_code == 502 and plain.value.code == "model_unreachable"
        with pytest.raises(openai.APIError) as streamed:
            list(client.chat.completions.create(model="moa/plan_execute", messages=[{"role": "user", "content": "classify"}], stream=True))
        assert "cannot reach the model server" in streamed.value.message
        assert client.models.list().data  # the server stays up


def openai_unreachable() -> Any:
    from moa.testing import unreachable

    return unreachable().fail_with

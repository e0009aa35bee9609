"""A key goes only to the base URL it was configured for (moa.models.credentials).

The unit tests check which key each backend is built with; the ``real`` ones send requests to
recording HTTP servers on 127.0.0.1 and look at the ``Authorization`` header that arrived.
"""

from __future__ import annotations

import pytest
from support.recording_server import recording_server

import moa
from moa.models.credentials import normalize_url, ollama_key, openai_key, same_url
from moa.models.openai import OpenAIBackend
from moa.models.registry import create_backend


@pytest.fixture(autouse=True)
def _keys_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys as a developer's shell has them: a leak would carry them to the test servers."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-env")
    monkeypatch.setenv("OLLAMA_API_KEY", "ollama-env")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OLLAMA_HOST", raising=False)


def test_urls_are_compared_in_one_spelling() -> None:
    assert normalize_url("HTTP://LocalHost:80/v1/") == "http://localhost:80/v1"
    assert same_url("https://api.openai.com/v1", "https://API.openai.com:443/v1/")
    assert same_url("127.0.0.1:11434", "http://127.0.0.1:11434")
    assert not same_url("http://127.0.0.1:8080/v1", "http://127.0.0.1:8081/v1")
    assert not same_url("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v2")


def test_the_openai_key_goes_to_the_default_base_url_only() -> None:
    settings = moa.load_settings()
    assert openai_key(settings, "https://api.openai.com/v1") == "sk-env"
    assert openai_key(settings, "http://evil.example/v1") is None
    own = moa.load_settings(openai_base_url="http://127.0.0.1:8080/v1", openai_api_key="sk-own")
    assert openai_key(own, "http://127.0.0.1:8080/v1/") == "sk-own"
    assert openai_key(own, "https://api.openai.com/v1") is None  # the key is for the configured URL, not OpenAI's


def test_other_servers_get_the_keys_configured_for_them() -> None:
    settings = moa.load_settings(openai_keys={"http://127.0.0.1:9000/v1": "sk-nine"})
    assert openai_key(settings, "http://127.0.0.1:9000/v1") == "sk-nine"
    assert openai_key(settings, "http://127.0.0.1:9001/v1") is None
    assert "sk-nine" not in repr(settings) and "sk-nine" not in settings.model_dump_json()


def test_keys_from_moa_openai_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOA_OPENAI_KEYS", '{"http://127.0.0.1:9000/v1": "sk-nine"}')
    assert openai_key(moa.load_settings(), "http://127.0.0.1:9000/v1") == "sk-nine"


def test_backends_built_from_specs_carry_a_key_only_for_their_url() -> None:
    settings = moa.load_settings(openai_keys={"http://127.0.0.1:9000/v1": "sk-nine"})
    assert isinstance(hosted := create_backend("openai:gpt-4o-mini", settings), OpenAIBackend) and hosted.sends_key
    foreign = create_backend("openai:evil@http://host.example/v1", settings)
    assert isinstance(foreign, OpenAIBackend) and not foreign.sends_key
    assert isinstance(nine := create_backend("openai:m@http://127.0.0.1:9000/v1", settings), OpenAIBackend) and nine.sends_key
    assert not OpenAIBackend("openai:m@http://host.example/v1", model="m", base_url="http://host.example/v1").sends_key


def test_the_ollama_key_goes_to_ollama_host_only() -> None:
    settings = moa.load_settings(ollama_host="http://127.0.0.1:11434")
    assert ollama_key(settings, "http://127.0.0.1:11434/") == "ollama-env"
    assert ollama_key(settings, "http://evil.example:11434") is None


# --- what arrives at real servers -------------------------------------------------------------


@pytest.mark.real
async def test_the_configured_base_url_gets_the_key() -> None:
    with recording_server() as server:
        settings = moa.load_settings(openai_base_url=server.v1, openai_api_key="sk-configured", cache=False)
        for spec in ("openai:m", f"openai:m@{server.v1}"):
            backend = create_backend(spec, settings)
            await backend.agenerate(moa.GenerateRequest(messages=[moa.Message(role="user", content="hi")], max_tokens=4))
            await backend.aclose()
    assert server.authorizations() == ["Bearer sk-configured", "Bearer sk-configured"]


@pytest.mark.real
async def test_another_url_gets_no_authorization_header_unless_configured() -> None:
    with recording_server() as bare, recording_server() as keyed:
        settings = moa.load_settings(openai_keys={keyed.v1: "sk-keyed"}, cache=False)
        for url in (bare.v1, keyed.v1):
            backend = create_backend(f"openai:m@{url}", settings)
            await backend.agenerate(moa.GenerateRequest(messages=[moa.Message(role="user", content="hi")], max_tokens=4))
            await backend.aclose()
    (seen,) = bare.requests
    assert "authorization" not in seen.headers and "openai-organization" not in seen.headers
    (got,) = keyed.requests
    assert got.headers["authorization"] == "Bearer sk-keyed" and "openai-organization" not in got.headers


@pytest.mark.real
async def test_ollama_key_is_not_sent_to_another_host() -> None:
    with recording_server() as configured, recording_server() as other:
        settings = moa.load_settings(ollama_host=configured.url, cache=False)
        for spec in ("ollama:m", f"ollama:m@{other.url}"):
            backend = create_backend(spec, settings)
            await backend.agenerate(moa.GenerateRequest(messages=[moa.Message(role="user", content="hi")], max_tokens=4))
            await backend.aclose()
    assert configured.requests and set(configured.authorizations()) == {"Bearer ollama-env"}
    assert other.requests and set(other.authorizations()) == {None}


@pytest.mark.real
async def test_an_allowed_model_in_a_plan_gets_items_but_no_key() -> None:
    """allowed_models lets a plan send items to another server; the key still stays with its own."""
    with recording_server() as own, recording_server() as other:
        spec = f"openai:big@{other.v1}"
        settings = moa.load_settings(
            slm=f"openai:small@{own.v1}", llm=f"openai:small@{own.v1}", openai_keys={own.v1: "sk-own"}, allowed_models=[spec], cache=False
        )
        plan = {"subtasks": [{"id": "s", "agent": "sentiment", "cascade": [spec]}]}
        result = await moa.arun("classify", input=["fine", "great"], plan=plan, settings=settings)
    assert result.results["s"].status == "ok" and {i.answered_by for i in result.results["s"].items} == {spec}
    # 2 items; the recording server gives no logprobs, so an item in flight before the backend
    # noticed is asked once more (tests/test_logprobs_fallback.py)
    assert 2 <= len(other.requests) <= 4 and set(other.authorizations()) == {None}
    assert own.requests and set(own.authorizations()) == {"Bearer sk-own"}  # the synthesizer, on the llm tier

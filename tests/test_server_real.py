"""`moa serve` on the real embedded default model: the official openai client gets a completion
whose usage is the run's real tokens, and the server is ready (its tiers' backends checked)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import openai
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.server_load import serving  # noqa: E402
from moa.models.embedded import EmbeddedBackend  # noqa: E402
from moa.server import ServerConfig, create_app  # noqa: E402
from moa.server.keys import ApiKey, Keyring, hash_key  # noqa: E402
from moa.settings import load_settings  # noqa: E402
from moa.workflow.view import load_result  # noqa: E402

KEY = "moa-real-key"


@pytest.mark.real
def test_openai_client_against_the_embedded_model(embedded: EmbeddedBackend) -> None:
    app = create_app(load_settings(), config=ServerConfig(), keys=Keyring([ApiKey(name="real", sha256=hash_key(KEY))]), slm=embedded, llm=embedded)
    with serving(app) as url:
        ready = httpx.get(f"{url}/readyz", headers={"Authorization": f"Bearer {KEY}"}, timeout=120)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=600)
        raw = client.chat.completions.with_raw_response.create(
            model="moa/plan_execute", messages=[{"role": "user", "content": "classify the sentiment\n---\nI love this phone"}]
        )
    assert ready.status_code == 200 and ready.json()["tiers"]["slm"]["ok"] is True
    completion = raw.parse()
    result = asyncio.run(load_result(load_settings(), raw.headers["x-moa-run-id"]))
    assert result.status in ("ok", "partial", "needs_human") and completion.choices[0].message.content  # it plans badly; the plan ran
    assert completion.usage is not None and completion.usage.prompt_tokens == result.summary.prompt_tokens > 0
    assert completion.usage.completion_tokens == result.summary.completion_tokens > 0

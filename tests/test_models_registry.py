"""moa.models.registry.Models: who owns (and closes) which backend."""

from __future__ import annotations

import moa
from moa.models.registry import Models
from moa.testing import FakeModel


class Closable(FakeModel):
    def __init__(self) -> None:
        super().__init__(['{"label":"positive","confidence":0.9}'])
        self.closed = 0

    async def aclose(self) -> None:
        self.closed += 1


async def test_backends_passed_in_stay_open_for_the_next_run() -> None:
    model = Closable()
    plan = {"subtasks": [{"id": "s", "agent": "sentiment"}]}
    for _ in range(2):
        result = await moa.arun("sentiment", input=["great"], plan=plan, slm=model, llm=model)
        assert result.status == "ok"
    assert model.closed == 0


async def test_backends_built_from_specs_are_closed() -> None:
    models = Models(moa.load_settings(cache=False), slm=Closable())
    built = models.get("openai:bench@http://127.0.0.1:9/v1")
    closed: list[str] = []

    async def aclose() -> None:
        closed.append(built.spec)

    built.aclose = aclose  # type: ignore[method-assign]
    await models.aclose()
    assert closed == ["openai:bench@http://127.0.0.1:9/v1"]


def test_a_slow_shipped_model_gets_a_longer_timeout_unless_the_user_set_one() -> None:
    from moa.models.registry import embedded_timeout
    from moa.models.shipped import SHIPPED
    from moa.settings import Settings

    qwen, smol = SHIPPED["qwen2.5-coder-1.5b-instruct"], SHIPPED["smollm2-135m-instruct"]
    assert embedded_timeout(Settings(), qwen) == qwen.timeout and (qwen.timeout or 0) > Settings().timeout
    assert embedded_timeout(Settings(), smol) == Settings().timeout  # fast enough for the default
    assert embedded_timeout(Settings(), None) == Settings().timeout  # the default model or a GGUF path
    assert embedded_timeout(Settings(timeout=20), qwen) == 20  # the user's choice wins, even a shorter one
    assert embedded_timeout(Settings(timeout=900), qwen) == 900

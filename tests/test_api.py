"""Bad input to the Python API: clear, coded errors before any model call."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import moa
from moa.errors import ErrorCode, UserError
from moa.testing import FakeModel

ANSWER = '{"label":"positive","confidence":0.9}'
PLAN = {"subtasks": [{"id": "s1", "agent": "sentiment"}]}


@pytest.mark.parametrize("task", ["", "   \n"])
def test_empty_task(task: str) -> None:
    with pytest.raises(UserError) as info:
        moa.run(task, slm=FakeModel(), llm=FakeModel())
    assert info.value.code == ErrorCode.EMPTY_TASK


def test_task_over_the_configured_size() -> None:
    settings = moa.load_settings(max_task_chars=10)
    with pytest.raises(UserError) as info:
        moa.run("x" * 11, settings=settings, slm=FakeModel(), llm=FakeModel())
    assert info.value.code == ErrorCode.TASK_TOO_LARGE
    assert "MOA_MAX_TASK_CHARS" in info.value.message


def test_missing_input_file(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        moa.run("sentiment", input=tmp_path / "nope.txt", slm=FakeModel(), llm=FakeModel())
    assert info.value.code == ErrorCode.INPUT_FILE and "does not exist" in info.value.message


@pytest.mark.parametrize(("content", "fragment"), [(b"\x00\x01binary", "binary"), (b"caf\xe9\n", "not UTF-8")])
def test_input_file_not_text(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(content)
    with pytest.raises(UserError) as info:
        moa.run("sentiment", input=path, slm=FakeModel(), llm=FakeModel())
    assert fragment in info.value.message


def test_input_file_lines_are_items(tmp_path: Path) -> None:
    path = tmp_path / "items.txt"
    path.write_text("first\n\n  second  \n")
    result = moa.run("sentiment", input=path, plan=PLAN, slm=FakeModel([ANSWER]), llm=FakeModel())
    assert [i.item for i in result.results["s1"].items] == ["first", "second"]


def test_unknown_graph() -> None:
    with pytest.raises(UserError) as info:
        moa.run("x", graph="nope", slm=FakeModel(), llm=FakeModel())
    assert info.value.code == ErrorCode.UNKNOWN_GRAPH and "plan_execute" in info.value.message


def test_unknown_agent_in_plan() -> None:
    with pytest.raises(UserError) as info:
        moa.run("x", plan={"subtasks": [{"id": "s1", "agent": "poet"}]}, slm=FakeModel(), llm=FakeModel())
    assert "unknown agent 'poet'" in info.value.message


def test_sync_run_refuses_a_running_loop() -> None:
    async def inside() -> None:
        moa.run("x", slm=FakeModel(), llm=FakeModel())

    with pytest.raises(UserError) as info:
        asyncio.run(inside())
    assert info.value.code == ErrorCode.NESTED_EVENT_LOOP and "await moa.arun(" in info.value.message


def test_sync_evaluate_path_refuses_a_running_loop(tmp_path: Path) -> None:
    import moa.eval

    async def inside() -> None:
        moa.eval.evaluate_path("sentiment", tmp_path / "none.tsv", out=tmp_path / "ev")

    with pytest.raises(UserError) as info:
        asyncio.run(inside())
    assert info.value.code == ErrorCode.NESTED_EVENT_LOOP and "await moa.eval.aevaluate_path(" in info.value.message


def test_bad_settings_are_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOA_TIMEOUT", "-1")
    with pytest.raises(UserError) as info:
        moa.load_settings()
    assert info.value.code == ErrorCode.BAD_CONFIG and "timeout" in info.value.message


def test_settings_from_toml_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "moa.toml"
    config.write_text('slm = "ollama:llama3.2:1b"\nllm = "openai:gpt-4o-mini"\n[prices."openai:gpt-4o-mini"]\nprompt = 0.15\ncompletion = 0.6\n')
    monkeypatch.setenv("MOA_CONFIG", str(config))
    monkeypatch.setenv("MOA_LLM", "openai:gpt-4o")
    settings = moa.load_settings()
    assert settings.slm == "ollama:llama3.2:1b"
    assert settings.llm == "openai:gpt-4o"  # env beats the file
    assert settings.prices["openai:gpt-4o-mini"].completion == 0.6


@pytest.mark.parametrize("spec", ["nothing", "mystery:model", "ollama:", "openai:"])
def test_bad_model_specs(spec: str) -> None:
    with pytest.raises(UserError) as info:
        moa.create_backend(spec, moa.load_settings())
    assert info.value.code == ErrorCode.BAD_MODEL_SPEC


def test_costs_use_configured_prices() -> None:
    settings = moa.load_settings(prices={"fake:": {"prompt": 1.0, "completion": 2.0}})
    model = FakeModel([ANSWER])
    model.price_per_1k = (1.0, 2.0)
    result = moa.run("sentiment", input=["good"], plan=PLAN, settings=settings, slm=model, llm=model)
    usage = result.usage[0]
    assert usage.cost == pytest.approx((usage.prompt_tokens * 1.0 + usage.completion_tokens * 2.0) / 1000)
    assert result.summary.cost == pytest.approx(usage.cost)


def test_custom_agent_defined_in_python() -> None:
    from pydantic import BaseModel

    class Words(BaseModel):
        text: str

    class Count(BaseModel):
        words: int

    class WordCount(moa.FunctionAgent[Words, Count]):
        name = "wordcount"
        description = "Counts the words of each text."
        input_type = Words
        output_type = Count

    async def count(ctx: moa.RunContext, data: Words) -> Count:
        return Count(words=len(data.text.split()))

    plan = {"subtasks": [{"id": "w", "agent": "wordcount"}]}
    result = moa.run("count words", input=["a b c", "d"], plan=plan, agents=[WordCount(count)], slm=FakeModel(), llm=FakeModel())
    assert [i.output.words for i in result.results["w"].items] == [3, 1]  # type: ignore[union-attr]
    assert result.summary.calls == 0

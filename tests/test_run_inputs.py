"""An input without items is an error (exit 2) that runs nothing; no input at all runs the task
on its own text. Fake models, real SQLite state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import moa
from moa.cli.main import app
from moa.errors import ErrorCode, UserError
from moa.testing import FakeModel

GOOD = '{"label":"positive","confidence":0.9}'
PLAN = {"subtasks": [{"id": "s", "agent": "sentiment"}]}
runner = CliRunner()


def _runs() -> list[dict[str, Any]]:
    return json.loads(runner.invoke(app, ["runs", "list", "--json"]).stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("content", ["", "\n\n", "  \n\t\n   "])
def test_an_input_file_without_items_is_an_error_and_runs_nothing(cli_model: FakeModel, tmp_path: Path, content: str) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text(content)
    result = runner.invoke(app, ["run", "classify the sentiment", "--input", str(empty), "--json"])
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "input_file" and "has no items" in error["message"] and str(empty) in error["message"]
    assert cli_model.requests == [] and _runs() == []


def test_an_empty_input_list_is_an_error_but_no_input_runs_the_task_itself() -> None:
    model = FakeModel([GOOD])
    with pytest.raises(UserError) as info:
        moa.run("classify", input=[], plan=PLAN, slm=model, llm=model)
    assert info.value.code == ErrorCode.INVALID_INPUT and model.requests == []
    result = moa.run("a lovely day", plan=PLAN, slm=model, llm=model)
    assert [i.item for i in result.results["s"].items] == ["a lovely day"]

"""The output file checked before a run starts, and a finished run's full result exported again
(`moa runs export`). Fake models, real SQLite state."""

from __future__ import annotations

import json
import os
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


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(PLAN))
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("lovely room\nrude staff\n")
    return plan, reviews


def _runs() -> list[dict[str, Any]]:
    return json.loads(runner.invoke(app, ["runs", "list", "--json"]).stdout)  # type: ignore[no-any-return]


# --- the output file ---------------------------------------------------------------------


def test_an_output_in_a_missing_folder_is_refused_before_the_run_starts(cli_model: FakeModel, files: tuple[Path, Path], tmp_path: Path) -> None:
    plan, reviews = files
    target = tmp_path / "missing" / "out.json"
    result = runner.invoke(app, ["run", "rate", "--input", str(reviews), "--plan", str(plan), "-o", str(target)])
    assert result.exit_code == 2 and "output_file" in result.stderr and "does not exist" in result.stderr
    assert cli_model.requests == [] and _runs() == [] and not target.parent.exists()


def test_an_output_that_is_a_directory_or_the_input_is_refused(cli_model: FakeModel, files: tuple[Path, Path], tmp_path: Path) -> None:
    plan, reviews = files
    folder = runner.invoke(app, ["run", "rate", "--input", str(reviews), "--plan", str(plan), "-o", str(tmp_path)])
    assert folder.exit_code == 2 and "is a directory" in folder.stderr
    same = runner.invoke(app, ["run", "rate", "--input", str(reviews), "--plan", str(plan), "-o", str(reviews)])
    assert same.exit_code == 2 and "is the input file" in same.stderr
    os.link(reviews, tmp_path / "hardlink.txt")
    linked = runner.invoke(app, ["run", "rate", "--input", str(reviews), "--plan", str(plan), "-o", str(tmp_path / "hardlink.txt")])
    assert linked.exit_code == 2 and "is the input file" in linked.stderr
    assert reviews.read_text() == "lovely room\nrude staff\n" and cli_model.requests == [] and _runs() == []


def test_an_output_that_cannot_be_written_is_refused(cli_model: FakeModel, files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan, reviews = files
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path) == locked else real_access(path, mode, **kw))
    result = runner.invoke(app, ["run", "rate", "--input", str(reviews), "--plan", str(plan), "-o", str(locked / "out.json")])
    assert result.exit_code == 2 and "permission denied" in result.stderr and cli_model.requests == []


def test_the_output_file_is_written_by_the_run(files: tuple[Path, Path], tmp_path: Path) -> None:
    plan, reviews = files
    model = FakeModel([GOOD])
    result = moa.run("rate", input=reviews, plan=json.loads(plan.read_text()), slm=model, llm=model, output=tmp_path / "out.json")
    assert json.loads((tmp_path / "out.json").read_text()) == json.loads(result.model_dump_json())


def test_an_output_that_fails_at_the_end_keeps_the_result_for_export(files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan, reviews = files
    model = FakeModel([GOOD])
    target = tmp_path / "out" / "result.json"
    target.parent.mkdir()

    def vanishing(*args: Any, **kwargs: Any) -> None:
        raise UserError(ErrorCode.BAD_CONFIG, f"cannot write the run's result to {target}: No such file or directory; set MOA_STATE_DIR")

    with monkeypatch.context() as patched, pytest.raises(UserError) as info:
        patched.setattr("moa.workflow.output.atomic_write", vanishing)
        moa.run("rate", input=reviews, plan=json.loads(plan.read_text()), slm=model, llm=model, output=target, run_id="gone")
    assert info.value.code == ErrorCode.OUTPUT_FILE and "moa runs export gone -o FILE" in info.value.message
    exported = runner.invoke(app, ["runs", "export", "gone"])
    assert exported.exit_code == 0 and json.loads(exported.stdout)["status"] == "ok"


# --- export ------------------------------------------------------------------------------


def test_export_gives_back_a_finished_runs_full_result(cli_model: FakeModel, files: tuple[Path, Path], tmp_path: Path) -> None:
    plan, reviews = files
    ran = runner.invoke(app, ["run", "rate", "--input", str(reviews), "--plan", str(plan), "--json"])
    assert ran.exit_code == 0, ran.output
    printed = json.loads(ran.stdout)
    resumed = runner.invoke(app, ["resume", printed["run_id"]])
    assert resumed.exit_code == 2 and "run_finished" in resumed.stderr

    exported = runner.invoke(app, ["runs", "export", printed["run_id"]])

    assert exported.exit_code == 0, exported.output
    again = json.loads(exported.stdout)
    assert again["results"] == printed["results"] and again["usage"] == printed["usage"] and again["summary"] == printed["summary"]
    assert {k: again[k] for k in ("run_id", "task", "graph", "status", "plan", "planner", "input_items", "errors")} == {
        k: printed[k] for k in ("run_id", "task", "graph", "status", "plan", "planner", "input_items", "errors")
    }
    written = runner.invoke(app, ["runs", "export", printed["run_id"], "-o", str(tmp_path / "again.json")])
    assert written.exit_code == 0 and json.loads((tmp_path / "again.json").read_text())["results"] == printed["results"]
    refused = runner.invoke(app, ["runs", "export", printed["run_id"], "-o", str(tmp_path / "nope" / "x.json")])
    assert refused.exit_code == 2 and "does not exist" in refused.stderr


async def test_export_of_a_run_that_has_not_ended_gives_what_finished() -> None:
    from moa.workflow.view import load_result

    def answer(request: moa.GenerateRequest) -> str:
        if "calm, urgent" in moa.testing.prompt_of(request):
            raise RuntimeError("simulated crash")
        return GOOD

    model = FakeModel(answer)
    # c runs after a (a crash while a still ran would cancel a: what finished is what the test reads)
    plan = {"subtasks": [{"id": "a", "agent": "sentiment"}, {"id": "c", "agent": "sentiment", "depends_on": ["a"], "items": "input", "options": {"labels": ["calm", "urgent"]}}]}
    with pytest.raises(RuntimeError):
        await moa.arun("rate", input=["x"], plan=plan, slm=model, llm=model, run_id="half")
    result = await load_result(moa.load_settings(), "half")
    assert result.status == "interrupted" and list(result.results) == ["a"] and result.results["a"].items[0].output.label == "positive"  # type: ignore[union-attr]
    assert result.errors[0].code == ErrorCode.INTERNAL_ERROR and "simulated crash" in result.errors[0].message


def test_export_of_an_unknown_run_exits_2() -> None:
    result = runner.invoke(app, ["runs", "export", "nope"])
    assert result.exit_code == 2 and "unknown_run" in result.stderr


def test_a_relative_output_is_written_to_the_same_file_when_resumed_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = FakeModel([GOOD])
    (tmp_path / "first").mkdir(), (tmp_path / "later").mkdir()
    monkeypatch.chdir(tmp_path / "first")
    plan = {"subtasks": [{"id": "a", "agent": "sentiment", "approve": True}]}
    waiting = moa.run("rate", input=["x"], plan=plan, slm=model, llm=model, output="out.json")
    monkeypatch.chdir(tmp_path / "later")
    moa.resume(waiting.run_id, approve=True, slm=model, llm=model)
    assert json.loads((tmp_path / "first" / "out.json").read_text())["status"] == "ok" and not (tmp_path / "later" / "out.json").exists()


async def test_export_of_a_run_without_a_checkpoint_says_so() -> None:
    from moa.workflow.index import RunRecord, open_index
    from moa.workflow.view import load_result

    async with open_index(moa.load_settings()) as index:
        await index.start(RunRecord(run_id="bare", task="t", graph="plan_execute", status="running", started=0.0))
    with pytest.raises(UserError) as info:
        await load_result(moa.load_settings(), "bare")
    assert info.value.code == ErrorCode.RUN_NOT_RESUMABLE and "no result to export" in info.value.message

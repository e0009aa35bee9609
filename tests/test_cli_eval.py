"""``moa eval``: bad input exits 2 with what to do; reports re-render and compare without a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_eval_runner import LABELS, context, oracle, reviews
from typer.testing import CliRunner

from moa.cli.eval import _write_rest
from moa.cli.main import app
from moa.eval import aevaluate, prepare
from moa.testing import FakeModel

runner = CliRunner()


def error_of(args: list[str]) -> tuple[int, str]:
    result = runner.invoke(app, ["eval", *args, "--json"])
    return result.exit_code, json.loads(result.stdout)["error"]["message"]


def test_unknown_data_format(tmp_path: Path) -> None:
    data = tmp_path / "d.parquet"
    data.write_bytes(b"PAR1")
    code, message = error_of(["sentiment", str(data)])
    assert code == 2 and "unknown data format '.parquet'" in message and "--format" in message
    code, message = error_of(["sentiment", str(reviews(tmp_path)), "--format", "xml"])
    assert code == 2 and "unknown --format 'xml'" in message


def test_mismatched_label_set_lists_the_unknown_labels(tmp_path: Path) -> None:
    code, message = error_of(["sentiment", str(reviews(tmp_path)), "--out", str(tmp_path / "ev")])
    assert code == 2 and "unknown labels '0' (6), '1' (6)" in message and "--label-map 0=negative,1=positive" in message
    assert not (tmp_path / "ev").exists()


def test_empty_data_set_and_limit_zero(tmp_path: Path) -> None:
    empty = tmp_path / "empty.tsv"
    empty.write_text("sentence\tlabel\n")
    code, message = error_of(["sentiment", str(empty)])
    assert code == 2 and "no labelled rows" in message
    code, message = error_of(["sentiment", str(reviews(tmp_path)), "--label-map", "0=negative,1=positive", "--limit", "0"])
    assert code == 2 and "--limit must be at least 1" in message


def test_missing_arguments_and_unknown_public_set(tmp_path: Path) -> None:
    code, message = error_of(["sentiment"])
    assert code == 2 and "moa eval sentiment sst2" in message
    code, message = error_of(["sentiment", "sst3"])
    assert code == 2 and "sst2, sms, wnut17, snips, cranfield, parallelqa" in message


@pytest.fixture
async def two_evals(tmp_path: Path) -> list[Path]:
    folders = []
    for n, limit in enumerate((4, 8)):
        ctx = context(FakeModel(oracle))
        out = tmp_path / f"ev{n}"
        await aevaluate(prepare("sentiment", reviews(tmp_path), ctx=ctx, cascade=["slm"], limit=limit, **LABELS), out, ctx=ctx)
        folders.append(out)
    return folders


def test_report_rerenders_and_compares_without_a_model(two_evals: list[Path], tmp_path: Path) -> None:
    first, second = two_evals
    (first / "report.md").unlink()
    result = runner.invoke(app, ["eval", "--report", str(first), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["items"] == 4 and (first / "report.md").is_file()
    result = runner.invoke(app, ["eval", "--report", str(first), "--report", str(second), "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| ev0 | sentiment | reviews | slm | 4 |" in table and "| ev1 | sentiment | reviews | slm | 8 |" in table
    assert (tmp_path / "cmp" / "compare.png").read_bytes().startswith(b"\x89PNG")


def test_report_of_a_folder_without_an_eval(tmp_path: Path) -> None:
    code, message = error_of(["--report", str(tmp_path)])
    assert code == 2 and "holds no eval" in message


def test_rest_holds_the_items_the_eval_leaves_out(tmp_path: Path) -> None:
    prepared = prepare("sentiment", reviews(tmp_path), ctx=context(FakeModel(oracle)), limit=5, **LABELS)
    path = tmp_path / "rest.tsv"
    assert _write_rest(prepared, path) == 7
    lines = path.read_text().splitlines()
    assert lines[0] == "text\tlabel" and len(lines) == 8
    assert not {line.split("\t")[0] for line in lines[1:]} & {e.text for e in prepared.examples}

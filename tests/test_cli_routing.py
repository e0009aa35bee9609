"""CLI of the routing features: flags and the learning commands' errors (no model calls)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moa.cli.learn import parse_options
from moa.cli.main import app
from moa.errors import UserError

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--threshold", "1.5"], "threshold"),
        (["--budget-tokens", "0"], "budget_tokens"),
        (["--budget-cost", "0"], "budget_cost"),
        (["--cascade", "slm,gpt5"], "unknown cascade step 'gpt5'"),
        (["--confidence", "vibes"], "confidence"),
    ],
)
def test_bad_routing_flags_exit_2_before_any_model_runs(args: list[str], needle: str) -> None:
    result = runner.invoke(app, ["run", "classify the sentiment", *args, "--json"])
    assert result.exit_code == 2, result.output
    assert needle in json.loads(result.stdout)["error"]["message"]


def test_train_needs_data_or_escalations() -> None:
    result = runner.invoke(app, ["train", "sentiment"])
    assert result.exit_code == 2 and "--from-escalations" in result.stderr


def test_train_and_calibrate_refuse_non_classification_agents(tmp_path: Path) -> None:
    data = tmp_path / "d.tsv"
    data.write_text("text\tlabel\na\tx\nb\ty\n")
    for command, agent in (("train", "retrieval"), ("calibrate", "retrieval"), ("calibrate", "extraction")):
        result = runner.invoke(app, [command, agent, str(data)])
        assert result.exit_code == 2 and "not a classification agent" in result.stderr
    tagger = runner.invoke(app, ["train", "extraction", str(data)])  # extraction trains an entity tagger, on CoNLL data
    assert tagger.exit_code == 2 and "CoNLL" in tagger.stderr


def test_train_reports_unknown_labels_with_a_label_map_hint(tmp_path: Path) -> None:
    data = tmp_path / "sst.tsv"
    data.write_text("sentence\tlabel\ngood film\t1\nbad film\t0\n")
    result = runner.invoke(app, ["train", "sentiment", str(data), "--json"])
    assert result.exit_code == 2
    message = json.loads(result.stdout)["error"]["message"]
    assert "unknown labels" in message and "--label-map" in message


def test_unknown_agent_and_missing_file(tmp_path: Path) -> None:
    assert runner.invoke(app, ["train", "poet", str(tmp_path / "x.tsv")]).exit_code == 2
    missing = runner.invoke(app, ["calibrate", "sentiment", str(tmp_path / "missing.tsv")])
    assert missing.exit_code == 2 and "missing.tsv" in missing.stderr


def test_calibrate_limit_too_small(tmp_path: Path) -> None:
    data = tmp_path / "d.tsv"
    data.write_text("text\tlabel\n" + "".join(f"t{i}\t{'positive' if i % 2 else 'negative'}\n" for i in range(30)))
    result = runner.invoke(app, ["calibrate", "sentiment", str(data), "--limit", "5"])
    assert result.exit_code == 2 and "at least 20" in result.stderr


def test_parse_options() -> None:
    assert parse_options(["criterion=toxic language", "labels=positive,negative", "n=3", 'x=["a"]']) == {
        "criterion": "toxic language",
        "labels": ["positive", "negative"],
        "n": 3,
        "x": ["a"],
    }
    with pytest.raises(UserError):
        parse_options(["novalue"])

"""Thresholds chosen from public data with the real models: a specialist trained on SST-2 (MiniLM),
the embedded slm, then ``moa calibrate --cascade specialist,slm`` on other SST-2 items and a run
that uses what it chose. About a minute of model time on 2 cores. Skipped when the data is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.eval_data import EVAL, needs_eval
from typer.testing import CliRunner

from moa.cli.main import app

pytestmark = [pytest.mark.real, needs_eval]

runner = CliRunner()
SST2 = EVAL / "sentiment" / "sst2_dev.tsv"
LABEL_MAP = "0=negative,1=positive"


@pytest.fixture(autouse=True)
def _patient(monkeypatch: pytest.MonkeyPatch) -> None:
    """These machines are shared: a slow call is waited for rather than failed."""
    monkeypatch.setenv("MOA_TIMEOUT", "600")


def _split(tmp_path: Path, train: int, calibrate: int) -> tuple[Path, Path]:
    """The first ``train`` rows of SST-2 dev to train on and the next ``calibrate`` to choose thresholds on (disjoint)."""
    header, *rows = SST2.read_text().splitlines()
    first, second = tmp_path / "train.tsv", tmp_path / "calibrate.tsv"
    first.write_text("\n".join([header, *rows[:train]]) + "\n")
    second.write_text("\n".join([header, *rows[train : train + calibrate]]) + "\n")
    return first, second


def test_thresholds_chosen_on_sst2_beat_never_escalating_and_a_run_uses_them(tmp_path: Path) -> None:
    train, calibrate = _split(tmp_path, 200, 60)
    trained = runner.invoke(app, ["train", "sentiment", str(train), "--label-map", LABEL_MAP, "--json"])
    assert trained.exit_code == 0, trained.output
    chosen = runner.invoke(
        app, ["calibrate", "sentiment", str(calibrate), "--label-map", LABEL_MAP, "--cascade", "specialist,slm", "--folds", "3", "--json"]
    )
    assert chosen.exit_code == 0, chosen.output
    body = json.loads(chosen.stdout)
    assert body["steps"] == ["specialist", "slm"] and body["key"] == "labels=negative,positive" and body["n"] == 60 and body["folds"] == 3
    assert set(body["thresholds"]) == {"specialist"} and 0 <= body["thresholds"]["specialist"] <= 1
    assert Path(body["path"]).is_file()
    scores = {s["name"]: s for s in body["held_out"]}
    assert set(scores) == {"chosen", "default (0.7)", "never escalate", "always slm"}
    # measured on 200 such items: chosen 0.89 (5-fold held out), default 0.86, never escalating 0.765, always slm 0.90
    assert scores["chosen"]["accuracy"] >= scores["never escalate"]["accuracy"] - 0.05
    assert scores["chosen"]["accuracy"] >= scores["default (0.7)"]["accuracy"] - 0.05
    listed = runner.invoke(app, ["agents"])
    assert f"sentiment (negative, positive) specialist {body['thresholds']['specialist']:g} → slm" in listed.stdout

    # a run of that task and cascade uses the chosen threshold, and has nothing to warn about
    items = tmp_path / "items.txt"
    items.write_text("a gorgeous, witty, seductive movie .\nthe plot is nothing but boilerplate clichés .\nit 's a bit long .\n")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"subtasks": [{"id": "s", "agent": "sentiment", "options": {"labels": ["positive", "negative"]}}]}))
    ran = runner.invoke(app, ["run", "t", "--plan", str(plan), "--input", str(items), "--no-store-examples", "--json"])
    assert ran.exit_code == 0, ran.output
    result = json.loads(ran.stdout)
    assert result["warnings"] == []
    threshold = body["thresholds"]["specialist"]
    for item in result["results"]["s"]["items"]:
        first = item["run"]["attempts"][0] if item["run"]["attempts"] else {"step": "specialist", **item["run"]["output"]}
        assert first["step"] == "specialist"
        assert (item["run"]["answered_by"] == "specialist") == (first["confidence"] >= threshold), item

"""Quality on the tweet sets of ``../shared/eval`` (filtering by a criterion in words, three-way
sentiment), measured with ``moa eval`` on small seeded samples, against the baselines a reader
would try first (always the majority class, always neutral).

The bounds sit below what three seeds gave (see each test), so they hold on a busy machine and
still fail if the path regresses to the baseline: issue 14 found the slm saying "offensive" for
289 of 300 tweets, and three-way sentiment predicting neutral for 4.5% of neutral tweets.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.eval_data import EVAL, needs_eval
from typer.testing import CliRunner

from moa.cli.main import app
from moa.eval.datasets import load_eval_set

pytestmark = [pytest.mark.real, needs_eval]

runner = CliRunner()
OFFENSIVE = ["--option", "criterion=offensive language", "--label-map", "not-offensive=no,offensive=yes"]


@pytest.fixture(autouse=True)
def _patient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOA_TIMEOUT", "600")


def moa(*args: str) -> dict[str, Any]:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def majority(report: dict[str, Any]) -> float:
    return max(b["accuracy"] for b in report["baselines"].values())


def test_a_filtering_specialist_is_kept_per_criterion_and_beats_always_no(tmp_path: Path) -> None:
    """Trained on 600 tweets of the train split for "offensive language", on 80 val tweets: seeds
    0-2 gave AUC 0.69 / 0.73 / 0.81 and accuracy 0.09-0.18 above always-no (the slm: AUC 0.47,
    accuracy 0.29 below always-no on 200)."""
    train = EVAL / "filtering" / "tweet_offensive_train.tsv"
    trained = moa("train", "filtering", str(train), *OFFENSIVE, "--limit", "600")
    assert trained["key"] == "criterion=offensive language"
    val = EVAL / "filtering" / "tweet_offensive_val.tsv"
    report = moa("eval", "filtering", str(val), *OFFENSIVE, "--limit", "80", "--cascade", "specialist", "--out", str(tmp_path / "ev"))
    assert report["answered_by"] == {"specialist": 80}
    assert report["metrics"]["auc"] > 0.65
    assert report["metrics"]["accuracy"] > majority(report) and report["baselines"]["always no"]["accuracy"] == majority(report)
    default = moa("eval", "filtering", str(val), *OFFENSIVE, "--limit", "10", "--threshold", "0.5", "--out", str(tmp_path / "default"))
    assert default["steps"][:2] == ["specialist", "slm"] and default["answered_by"] == {"specialist": 10}  # the default cascade uses it
    other = runner.invoke(
        app, ["eval", "filtering", str(val), "--option", "criterion=spam", "--label-map", "not-offensive=ham,offensive=spam",
              "--limit", "5", "--cascade", "specialist", "--out", str(tmp_path / "other")],
    )
    assert other.exit_code != 0 and "no specialist is trained for filtering (criterion=spam)" in other.output


def test_three_way_sentiment_specialist_predicts_neutral_and_beats_always_neutral(tmp_path: Path) -> None:
    """Keyed by the three labels; trained on 1,000 tweets the eval leaves out, on 200. Seeds 0-2
    gave accuracy 0.575 / 0.555 / 0.515 against always-neutral 0.48 / 0.45 / 0.515, macro-F1
    0.48-0.57 (always-neutral: 0.22), neutral recall 0.46-0.51 (the slm: 0.04)."""
    rest = tmp_path / "rest.tsv"
    left_out = load_eval_set(str(EVAL / "sentiment" / "tweet_sentiment_val.tsv")).rest(200, seed=0)
    rest.write_text("text\tlabel\n" + "".join(f"{' '.join(e.text.split())}\t{e.gold}\n" for e in left_out))
    trained = moa("train", "sentiment", str(rest), "--limit", "1000")
    assert trained["key"] == "labels=negative,neutral,positive"
    val = EVAL / "sentiment" / "tweet_sentiment_val.tsv"
    report = moa("eval", "sentiment", str(val), "--limit", "200", "--cascade", "specialist", "--out", str(tmp_path / "ev"))
    assert report["answered_by"] == {"specialist": 200}
    assert "auc" not in report["metrics"]  # three classes
    assert report["per_class"]["neutral"]["recall"] > 0.3
    assert report["metrics"]["macro_f1"] > 0.42
    assert report["metrics"]["accuracy"] >= report["baselines"]["always neutral"]["accuracy"] - 0.03
    two_labels = runner.invoke(
        app, ["eval", "sentiment", "sst2", "--data-dir", str(EVAL), "--limit", "5", "--cascade", "specialist", "--out", str(tmp_path / "sst2")]
    )
    assert two_labels.exit_code != 0 and "no specialist is trained for sentiment (labels=negative,positive)" in two_labels.output

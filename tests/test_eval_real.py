"""``moa eval`` on the public data of ``../shared/eval`` with the embedded model, MiniLM and Chroma.

Small limits keep the whole file to a few minutes on 2 cores. Skipped when the data is absent.
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
from moa.eval.records import ResultStore

pytestmark = [
    pytest.mark.real,
    needs_eval,
]

runner = CliRunner()


@pytest.fixture(autouse=True)
def _patient(monkeypatch: pytest.MonkeyPatch) -> None:
    """These machines are shared: give a slow extraction call time rather than stop the eval (a
    timeout stops an eval on purpose, see test_an_unreachable_model_is_a_clear_error)."""
    monkeypatch.setenv("MOA_TIMEOUT", "600")


def moa_eval(*args: str) -> dict[str, Any]:
    result = runner.invoke(app, ["eval", *args, "--data-dir", str(EVAL), "--json"])
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_sentiment_sst2(tmp_path: Path) -> None:
    report = moa_eval("sentiment", "sst2", "--limit", "20", "--cascade", "slm", "--out", str(tmp_path / "ev"))
    assert report["items"] == 20 and report["errors"] == 0
    assert report["metrics"]["accuracy"] >= 0.7  # measured 0.9+ on SST-2 with the embedded model; chance is 0.5
    assert report["usage"]["per_tier"]["slm"]["calls"] >= 20 and report["items_per_s"] > 0
    assert report["reliability"]["items"] == 20
    assert {"report.md", "report.json", "results.jsonl", "reliability.png"} <= {p.name for p in (tmp_path / "ev").iterdir()}


def test_filtering_sms(tmp_path: Path) -> None:
    report = moa_eval("filtering", "sms", "--limit", "20", "--cascade", "slm", "--out", str(tmp_path / "ev"))
    assert report["items"] == 20 and report["errors"] == 0
    records = ResultStore(tmp_path / "ev").read()
    assert {r.prediction for r in records} <= {"spam", "ham"} and {r.gold for r in records} <= {"spam", "ham"}
    assert all(r.confidence is not None and 0.5 <= r.confidence <= 1 for r in records)


def test_extraction_wnut17(tmp_path: Path) -> None:
    report = moa_eval("extraction", "wnut17", "--limit", "10", "--out", str(tmp_path / "ev"))
    assert report["items"] == 10 and set(report["metrics"]) == {"precision", "recall", "f1"}
    # the 270M model's answer is invalid now and then (1-3 in 100 items): an error, no prediction
    assert set(report["error_codes"]) <= {"invalid_output"}
    types = {"person", "location", "group", "creative-work", "corporation", "product"}
    records = ResultStore(tmp_path / "ev").read()
    assert sum(r.prediction is not None for r in records) >= 7
    for record in records:
        for kind, start, end in record.prediction or []:
            assert kind in types and 0 <= start < end


def test_extraction_snips(tmp_path: Path) -> None:
    report = moa_eval("extraction", "snips", "--limit", "10", "--out", str(tmp_path / "ev"))
    # zero-shot (no example shows these slots): the 270M base model sometimes repeats the whole
    # utterance until the token limit, an invalid output (28 of 100 items), which a cascade escalates
    assert report["items"] == 10 and set(report["error_codes"]) <= {"invalid_output"}
    store = ResultStore(tmp_path / "ev")
    slots = set(store.read_meta().labels)
    assert len(slots) == 39  # the slot names of the 7 intents
    assert all(kind in slots and isinstance(value, str) for r in store.read() for kind, value in r.prediction or [])


def test_extraction_snips_with_worked_examples_from_the_data(tmp_path: Path) -> None:
    report = moa_eval("extraction", "snips", "--limit", "10", "--shots", "3", "--out", str(tmp_path / "ev"))
    assert report["items"] == 10 and report["shots_per_item"] == 3
    assert report["metrics"]["f1"] > 0  # without examples of the slots: 0.000 (the model copied empty demonstrations)
    meta = ResultStore(tmp_path / "ev").read_meta()
    shown = {i for d in meta.demonstrations for i in d.ids}
    assert shown and shown.isdisjoint(r.id for r in ResultStore(tmp_path / "ev").read())


def test_retrieval_cranfield(tmp_path: Path) -> None:
    report = moa_eval("retrieval", "cranfield", "--limit", "25", "--docs", "300", "--out", str(tmp_path / "ev"))
    assert report["items"] <= 25 and report["metrics"]["ndcg@10"] > 0.2  # MiniLM: 0.38 on all 1,400 documents
    assert report["metrics"]["mrr"] >= report["metrics"]["ndcg@10"] * 0.5


def test_a_graph_on_parallelqa(tmp_path: Path) -> None:
    report = moa_eval("plan_execute", "parallelqa", "--limit", "2", "--out", str(tmp_path / "ev"))
    assert report["items"] == 2 and set(report["metrics"]) == {"exact_match", "f1"}


def test_specialist_cascade_sweep_on_data_disjoint_from_the_eval(tmp_path: Path) -> None:
    rest = tmp_path / "rest.tsv"
    out = tmp_path / "ev"
    left_out = load_eval_set("sst2", data_dir=EVAL).rest(20, seed=0)
    rest.write_text("text\tlabel\n" + "".join(f"{' '.join(e.text.split())}\t{e.gold}\n" for e in left_out))
    trained = runner.invoke(app, ["train", "sentiment", str(rest), "--limit", "200"])
    assert trained.exit_code == 0, trained.output
    report = moa_eval("sentiment", "sst2", "--limit", "20", "--cascade", "specialist,slm", "--threshold", "0.8", "--sweep", "--out", str(out))
    assert [c["name"] for c in report["configs"]] == ["specialist", "slm", "specialist→slm @0.8"]
    assert len(report["sweep"]) == 21 and report["sweep"][0]["top_share"] == 0.0
    assert report["answered_by"].get("specialist", 0) + report["answered_by"].get("slm", 0) == 20


def test_an_unreachable_model_is_a_clear_error(tmp_path: Path, free_port: int) -> None:
    result = runner.invoke(
        app, ["eval", "sentiment", "sst2", "--limit", "3", "--cascade", "slm", "--slm", f"openai:m@http://127.0.0.1:{free_port}/v1", "--out", str(tmp_path / "ev"), "--data-dir", str(EVAL), "--json"]
    )
    assert result.exit_code == 3, result.output
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "model_unreachable" and "0 of 3 items are kept" in error["message"] and "run the same command again" in error["message"]

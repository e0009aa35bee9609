"""Hybrid routing against the real parts: the embedded model, the shipped embedder, Chroma, the CLI."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.eval_data import EVAL, needs_eval

import moa
from moa.agent.learn import calibrate_agent, task_for, train_agent
from moa.learning.labelled import load_labelled
from moa.learning.store import calibration_path
from moa.models.embedded import EmbeddedBackend
from moa.routing.policy import Step
from moa.workflow.catalog import builtin_agents

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[1]
BINARY = {"labels": ["positive", "negative"]}


def _settings(tmp_path: Path, **kw: object) -> moa.Settings:
    return moa.load_settings(state_dir=tmp_path / "state", **kw)


@needs_eval
async def test_specialist_first_then_the_embedded_slm(tmp_path: Path, embedded: EmbeddedBackend) -> None:
    data = load_labelled(EVAL / "sentiment" / "sst2_dev.tsv", label_map={"1": "positive", "0": "negative"})
    train, test = data.split(0.3, seed=0)
    settings = _settings(tmp_path, threshold=0.9, cascade=["specialist", "slm"])
    ctx = moa.RunContext.create(settings, models=moa.Models(settings, slm=embedded, llm=embedded))
    agent = builtin_agents()["sentiment"]
    task = task_for(agent, {}, train.classes)
    _, report, _ = await train_agent(ctx, agent, task, train)
    assert report.holdout_accuracy is not None and report.holdout_accuracy > 0.65
    sample = test.sample(16, seed=1)
    plan = {"subtasks": [{"id": "s", "agent": "sentiment", "options": task.options}]}
    result = await moa.arun("sentiment", input=sample.texts, plan=plan, context=ctx)
    items = result.results["s"].items
    assert all(i.output is not None for i in items)
    by = {i.answered_by for i in items}
    assert "specialist" in by  # confident items never reach the model
    escalated = [i for i in items if i.escalations]
    for item in escalated:
        assert [a.step for a in item.attempts] == ["specialist", "slm"] and item.attempts[1].tokens > 0
    assert result.summary.per_tier["specialist"].calls == len(items)
    assert result.escalations.count == len(escalated)
    stored = await ctx.examples().all("sentiment", task.key)
    assert len(stored) == sum(1 for i in escalated if i.unverified is None)  # confident slm answers were kept as examples
    await ctx.aclose()


async def test_a_repeated_run_is_served_from_the_cache(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    plan = {"subtasks": [{"id": "s", "agent": "sentiment"}]}
    items = ["The food was cold.", "Lovely staff, would come back."]
    first = await moa.arun("sentiment", input=items, plan=plan, settings=settings)
    second = await moa.arun("sentiment", input=items, plan=plan, settings=settings)
    assert first.summary.cache_hits == 0 and first.summary.calls > 0
    assert second.summary.cache_hits == second.summary.calls == first.summary.calls
    assert [i.output for i in second.results["s"].items] == [i.output for i in first.results["s"].items]
    assert all(u.cached and u.cost == 0 for u in second.usage)
    uncached = await moa.arun("sentiment", input=items, plan=plan, settings=_settings(tmp_path, cache=False))
    assert uncached.summary.cache_hits == 0


@needs_eval
async def test_calibrate_the_embedded_model_on_sst2(tmp_path: Path, embedded: EmbeddedBackend) -> None:
    data = load_labelled(EVAL / "sentiment" / "sst2_dev.tsv", label_map={"1": "positive", "0": "negative"}).sample(40, seed=0)
    settings = _settings(tmp_path)
    ctx = moa.RunContext.create(settings, models=moa.Models(settings, slm=embedded, llm=embedded))
    agent = builtin_agents()["sentiment"]
    task = task_for(agent, {}, data.classes)
    calibration, path = await calibrate_agent(ctx, agent, data, task, step=Step("slm", "embedded:"))
    assert path == calibration_path(settings, "sentiment", embedded.spec, task.key) and path.exists()
    assert calibration.n == 40 and 0.5 < calibration.accuracy <= 1.0 and calibration.key == task.key
    fresh = moa.RunContext.create(settings, models=moa.Models(settings, slm=embedded, llm=embedded))
    attempt = await agent.attempt(fresh, Step("slm", "embedded:"), agent.make_input(data.texts[0], task.options))
    assert attempt.raw_confidence is not None
    assert attempt.output.confidence == pytest.approx(round(calibration.apply(attempt.raw_confidence), 4))  # type: ignore[union-attr]
    three = await agent.attempt(fresh, Step("slm", "embedded:"), agent.make_input(data.texts[0], {}))  # another label set: not calibrated
    assert three.raw_confidence is None
    await ctx.aclose()
    await fresh.aclose()


def _moa(*args: str, tmp_path: Path, **popen: object) -> subprocess.Popen[str]:
    env = {**os.environ, "MOA_MEMORY_DIR": str(tmp_path / "memory"), "MOA_TIMEOUT": "600"}
    return subprocess.Popen([sys.executable, "-m", "moa", *args], text=True, env=env, cwd=tmp_path, **popen)  # type: ignore[call-overload]


@needs_eval
def test_cli_train_then_run_uses_the_specialist(tmp_path: Path) -> None:
    train = _moa("train", "filtering", str(EVAL / "filtering" / "sms_spam.tsv"), "--limit", "600", "--json", tmp_path=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, errors = train.communicate(timeout=600)
    assert train.returncode == 0, errors
    report = json.loads(out)
    assert report["key"] == "criterion=spam" and report["n"] == 600 and Path(report["path"]).exists()
    messages = tmp_path / "sms.txt"
    messages.write_text("WINNER!! Claim your free prize now, text WIN to 80086\nsee you at lunch tomorrow?\n")
    run = _moa("run", "filter out spam", "--input", str(messages), "--json", tmp_path=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, errors = run.communicate(timeout=600)
    assert run.returncode == 0, errors
    result = json.loads(out)
    (subtask,) = result["results"].values()
    assert result["summary"]["per_tier"]["specialist"]["calls"] == 2
    assert [i["run"]["output"]["keep"] for i in subtask["items"]] == [False, True]


REVIEWS = (
    "A wonderful, moving film; I loved every minute of it.",
    "Dreadful, boring and far too long; a waste of time.",
    "An utterly charming and delightful comedy.",
    "The plot was fine.",
)


@needs_eval
def test_train_two_labels_then_a_run_that_asks_for_two_labels_uses_the_specialist(tmp_path: Path) -> None:
    """The documented train-then-run: a 2-label specialist serves a run whose task says "positive or
    negative" (the real MiniLM embedder, real Chroma, the embedded slm for what it is unsure of)."""
    train = _moa(
        "train", "sentiment", str(EVAL / "sentiment" / "sst2_dev.tsv"), "--label-map", "0=negative,1=positive", "--limit", "40", "--json",
        tmp_path=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, errors = train.communicate(timeout=600)
    assert train.returncode == 0, errors
    report = json.loads(out)
    assert report["key"] == "labels=negative,positive" and report["n"] == 40
    assert "--option sentiment.labels=positive,negative" in report["used_by"] and "'positive or negative'" in report["used_by"]
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("\n".join(REVIEWS) + "\n")
    run = _moa("run", "positive or negative sentiment of each review", "--input", str(reviews), "--json", tmp_path=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, errors = run.communicate(timeout=600)
    assert run.returncode == 0, errors
    result = json.loads(out)
    (subtask,) = result["plan"]["subtasks"]
    assert subtask["agent"] == "sentiment" and subtask["options"] == {"labels": ["positive", "negative"]}
    items = result["results"][subtask["id"]]["items"]
    assert result["summary"]["per_tier"]["specialist"]["calls"] == len(REVIEWS)
    (uncalibrated,) = result["warnings"]  # the specialist fits; its cascade escalates on the agent's default threshold
    assert uncalibrated.startswith("sentiment (negative, positive): no calibrated threshold for the cascade specialist → slm, using 0.7")
    for item in items:
        first = item["run"]["attempts"][0] if item["run"]["attempts"] else {"step": "specialist", **item["run"]["output"]}
        assert first["step"] == "specialist"
        assert (item["run"]["answered_by"] == "specialist") == (first["confidence"] >= 0.7), item  # confident items stop at the specialist
    assert sum(i["run"]["answered_by"] == "specialist" for i in items) >= 1
    # a task that does not choose the label set asks for three labels: the run says why the specialist is not used
    other = _moa("run", "the sentiment of each review", "--input", str(reviews), "--cascade", "specialist", "--json", tmp_path=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, errors = other.communicate(timeout=600)
    (warning,) = json.loads(out)["warnings"]
    assert "a specialist for sentiment (negative, positive) exists but this task asks for (negative, neutral, positive)" in warning
    assert "a specialist for sentiment (negative, positive) exists" in " ".join(errors.split())


def test_bad_training_files_exit_2_with_line_numbers(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_text("text\tlabel\ngood\tpositive\nno label here\nfine\tnegative\n")
    one = tmp_path / "one.tsv"
    one.write_text("text\tlabel\ngood\tpositive\ngreat\tpositive\n")
    for path, needle in ((bad, "line 3"), (one, "one class")):
        proc = _moa("train", "sentiment", str(path), tmp_path=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, errors = proc.communicate(timeout=120)
        assert proc.returncode == 2, errors
        assert needle in " ".join(errors.split()), errors


def _cached_calls(path: Path) -> int:
    """Model calls stored in the call cache so far (each finished item stores its call)."""
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=1) as db:
            return int(db.execute("select count(*) from calls").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_ctrl_c_writes_the_finished_items(tmp_path: Path) -> None:
    texts = tmp_path / "many.txt"
    texts.write_text("\n".join(f"Review number {i}: the room was {'great' if i % 2 else 'dirty'}." for i in range(400)) + "\n")
    out = tmp_path / "out.json"
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"subtasks": [{"id": "s", "agent": "sentiment"}]}))
    proc = _moa(
        "run", "sentiment", "--input", str(texts), "--plan", str(plan), "-o", str(out), tmp_path=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        # as on a terminal: a shell without job control starts background jobs (e.g. a test run
        # started with `&`) with SIGINT ignored, and the child would inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    cache = Path(os.environ["MOA_STATE_DIR"]) / "cache.sqlite"
    started = time.monotonic()
    # a few items finished (seen in the call cache), or long enough that some must have: the
    # 400 items take a minute or more, and a full-suite run once saw no cache rows before the end
    while _cached_calls(cache) < 3 and proc.poll() is None and time.monotonic() - started < 20:
        time.sleep(0.5)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    output, errors = proc.communicate(timeout=300)
    assert proc.returncode == 130, (errors, output[-2000:], _cached_calls(cache))
    partial = json.loads(out.read_text())
    assert partial["status"] == "interrupted"
    items = partial["results"]["s"]["items"]
    assert 0 < len(items) < 400 and all(i["run"]["output"] for i in items)
    assert "interrupted" in errors and str(out) in " ".join(errors.split())

"""Benchmark of hybrid routing: accuracy, items/s and cost of each cascade, and how a specialist
learns from escalations.

For sentiment (SST-2 dev, ``../shared/eval/sentiment/sst2_dev.tsv``) and spam filtering (SMS spam,
``../shared/eval/filtering/sms_spam.tsv``), the data is split (stratified, seeded) into a training
part and a test sample. Configurations, each a moa run of the built-in agent over the test sample:

a. ``slm``: the embedded SLM alone (Gemma 3 270M, few-shot, logprob confidence);
b. ``specialist``: logistic regression on MiniLM embeddings, trained on the training part (``moa train``);
c. ``specialist→slm``: the specialist, escalating answers below the threshold to the SLM;
d. ``llm`` and e. ``specialist→slm→llm``: only when ``MOA_LLM`` names a different model.

Then the learning loop: a specialist trained on a small seed (``--seed-size`` items) answers
batches of unseen items, escalating unsure ones to the SLM (the teacher here — no large model runs
on this machine); after each batch it is refitted with ``--from-escalations``, and its accuracy
alone on a fixed evaluation sample is measured, with the escalation rate of the batch.

Prints the tables and writes JSON (``--json``). The model-call cache is off, so times are real::

    python benchmarks/routing.py --n 100 --json benchmarks/results/routing.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "eval"

import moa  # noqa: E402
from moa.agent.learn import Task, task_for, train_agent  # noqa: E402
from moa.learning.labelled import LabelledSet, load_labelled  # noqa: E402
from moa.logs import configure_logging  # noqa: E402
from moa.workflow.catalog import builtin_agents  # noqa: E402

TASKS = {
    "sentiment": (DATA / "sentiment" / "sst2_dev.tsv", {"1": "positive", "0": "negative"}),
    "filtering": (DATA / "filtering" / "sms_spam.tsv", None),
}


def _settings(state: Path, **kw: Any) -> moa.Settings:
    return moa.load_settings(state_dir=state, cache=False, **kw)


async def _run(name: str, task: Task, test: LabelledSet, settings: moa.Settings) -> dict[str, Any]:
    agent = builtin_agents()[name]
    ctx = moa.RunContext.create(settings)
    plan = {"subtasks": [{"id": "s", "agent": name, "options": task.options}]}
    started = time.perf_counter()
    try:
        result = await moa.arun(name, input=test.texts, plan=plan, context=ctx)
    finally:
        await ctx.aclose()
    seconds = time.perf_counter() - started
    items = result.results["s"].items
    inputs = [agent.make_input(t, task.options) for t in test.texts]
    predicted = [agent.label_of(x, i.output) if i.output is not None else None for x, i in zip(inputs, items, strict=True)]
    correct = sum(p == g for p, g in zip(predicted, test.labels, strict=True))
    handled: dict[str, int] = {}
    for i in items:
        handled[i.answered_by or "error"] = handled.get(i.answered_by or "error", 0) + 1
    return {
        "accuracy": round(correct / len(test), 4),
        "items_per_s": round(len(test) / seconds, 2),
        "seconds": round(seconds, 2),
        "cost": round(result.summary.cost, 6),
        "calls": result.summary.calls,
        "tokens": result.summary.prompt_tokens + result.summary.completion_tokens,
        "escalation_rate": round(result.escalations.items / len(test), 4),
        "handled": handled,
    }


async def compare(name: str, n: int, threshold: float, seed: int, state: Path) -> dict[str, Any]:
    path, label_map = TASKS[name]
    data = load_labelled(path, label_map=label_map)
    train, rest = data.split(0.3, seed=seed)
    test = rest.sample(min(n, len(rest)), seed=seed)
    agent = builtin_agents()[name]
    task = task_for(agent, {}, data.classes)
    settings = _settings(state)
    ctx = moa.RunContext.create(settings)
    _, report, _ = await train_agent(ctx, agent, task, train)
    await ctx.aclose()
    configs: dict[str, list[str]] = {"slm": ["slm"], "specialist": ["specialist"], "specialist→slm": ["specialist", "slm"]}
    if settings.llm != settings.slm:
        configs |= {"llm": ["llm"], "specialist→slm→llm": ["specialist", "slm", "llm"]}
    rows = {}
    for label, cascade in configs.items():
        rows[label] = await _run(name, task, test, _settings(state, cascade=cascade, threshold=threshold))
        print(f"  {name:10} {label:20} {json.dumps(rows[label])}", file=sys.stderr)
    return {"train": len(train), "test": len(test), "specialist_holdout_accuracy": report.holdout_accuracy, "configs": rows}


async def learning_curve(name: str, seed_size: int, batch: int, rounds: int, n_eval: int, threshold: float, seed: int, state: Path) -> list[dict[str, Any]]:
    path, label_map = TASKS[name]
    data = load_labelled(path, label_map=label_map)
    pool, held = data.split(0.3, seed=seed)
    evaluation = held.sample(min(n_eval, len(held)), seed=seed)
    seed_set = pool.sample(seed_size, seed=seed)
    stream = pool.subset([i for i, t in enumerate(pool.texts) if t not in set(seed_set.texts)])
    agent = builtin_agents()[name]
    task = task_for(agent, {}, data.classes)
    curve_state = state / f"curve-{name}"
    settings = _settings(curve_state, cascade=["specialist", "slm"], threshold=threshold)
    rows = []
    ctx = moa.RunContext.create(settings)
    await train_agent(ctx, agent, task, seed_set)
    for round_ in range(rounds + 1):
        alone = await _run(name, task, evaluation, _settings(curve_state, cascade=["specialist"]))
        stored = len(await ctx.examples().all(agent.name, task.key))
        row = {"round": round_, "escalated_examples": stored, "specialist_accuracy": alone["accuracy"]}
        if round_ < rounds:
            chunk = stream.subset(list(range(round_ * batch, (round_ + 1) * batch)))
            cascade = await _run(name, task, chunk, settings)
            row |= {"batch_escalation_rate": cascade["escalation_rate"], "batch_accuracy": cascade["accuracy"]}
            await ctx.aclose()
            ctx = moa.RunContext.create(settings)  # a fresh store handle sees the new examples
            await train_agent(ctx, agent, task, seed_set, from_escalations=True)
        rows.append(row)
        print(f"  {name:10} curve {json.dumps(row)}", file=sys.stderr)
    await ctx.aclose()
    return rows


def _machine() -> dict[str, Any]:
    versions = {p: metadata.version(p) for p in ("xllamacpp", "onnxruntime", "chromadb", "numpy")}
    return {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(), "versions": versions}


def _table(results: dict[str, Any]) -> str:
    lines = ["| task | config | accuracy | items/s | cost $ | calls | escalation rate | answered by |", "|---|---|---|---|---|---|---|---|"]
    for name, res in results["compare"].items():
        for label, row in res["configs"].items():
            handled = ", ".join(f"{k} {v}" for k, v in row["handled"].items())
            lines.append(f"| {name} | {label} | {row['accuracy']:.3f} | {row['items_per_s']:.1f} | {row['cost']:.4f} | {row['calls']} | {row['escalation_rate']:.0%} | {handled} |")
    lines += ["", "| task | round | escalated examples | specialist accuracy | batch escalation rate | batch accuracy |", "|---|---|---|---|---|---|"]
    for name, rows in results["curve"].items():
        for r in rows:
            rate = f"{r['batch_escalation_rate']:.0%}" if "batch_escalation_rate" in r else "-"
            acc = f"{r['batch_accuracy']:.3f}" if "batch_accuracy" in r else "-"
            lines.append(f"| {name} | {r['round']} | {r['escalated_examples']} | {r['specialist_accuracy']:.3f} | {rate} | {acc} |")
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="test items per task")
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seed-size", type=int, default=16, help="labelled items the learning-curve specialist starts from")
    parser.add_argument("--batch", type=int, default=40, help="items per learning-curve round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", default="sentiment,filtering")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--report", type=Path, help="print the table of a saved JSON and exit")
    args = parser.parse_args()
    configure_logging(json=False, level="warning")
    if args.report:
        print(_table(json.loads(args.report.read_text())))
        return
    if not DATA.is_dir():
        sys.exit(f"the public eval data is not at {DATA} (../shared/eval)")
    results: dict[str, Any] = {"machine": _machine(), "args": {k: str(v) for k, v in vars(args).items()}, "compare": {}, "curve": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.tasks.split(","):
            results["compare"][name] = await compare(name, args.n, args.threshold, args.seed, Path(tmp))
            results["curve"][name] = await learning_curve(name, args.seed_size, args.batch, args.rounds, args.n, args.threshold, args.seed, Path(tmp))
    print(f"machine: {results['machine']}")
    print(_table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())

"""The report of an eval, built from its folder alone (``meta.json`` + ``results.jsonl``), so it can
be re-rendered at any time without a model: ``report.json``, ``report.md`` and PNG plots.

Quality is the task metric (:mod:`moa.eval.metrics`); cost is per tier (calls, tokens, $, call
latency p50/p95, cache hits, from :func:`moa.usage.summarize`), plus items/s over the wall time of
the eval's sessions, the escalation rate, and moa's overhead per item (the item's wall time minus
the time its model calls took, so it includes waiting for a free model slot). Classification evals
add the configurations and the threshold sweep replayed from the records (:mod:`moa.eval.sweep`)
and the reliability of the confidences.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from moa.errors import ErrorCode, UserError
from moa.eval.metrics import HEADLINE, constant_baselines, metric_name, per_class, score
from moa.eval.quality import METRIC as REPLAYED
from moa.eval.records import EvalConfig, ItemRecord, Meta, ResultStore
from moa.eval.sweep import ConfigRow, Reliability, SweepPoint, cascade_at, reliability_of, step_alone, threshold_sweep
from moa.files import atomic_write
from moa.usage import UsageSummary, summarize


class Report(BaseModel):
    """Everything an eval measured."""

    config: EvalConfig
    steps: list[str] = Field(default_factory=list)
    threshold: float | None = None
    models: dict[str, str] = Field(default_factory=dict)
    machine: dict[str, Any] = Field(default_factory=dict)
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    items: int
    errors: int
    error_codes: dict[str, int] = Field(default_factory=dict)
    metrics: dict[str, float]
    headline: str
    per_class: dict[str, dict[str, float]] = Field(default_factory=dict)
    baselines: dict[str, dict[str, float]] = Field(default_factory=dict)
    """Classification: accuracy and macro-F1 of answering one class for every item (``always <class>``);
    the best accuracy among them is the majority baseline."""
    answered_by: dict[str, int] = Field(default_factory=dict)
    escalation_rate: float = 0.0
    unverified: dict[str, int] = Field(default_factory=dict)
    usage: UsageSummary
    wall_seconds: float = 0.0
    setup_seconds: float = 0.0
    """Time spent before the items (indexing a retrieval corpus), over all sessions."""
    items_per_s: float | None = None
    item_seconds_p50: float = 0.0
    item_seconds_p95: float = 0.0
    overhead_ms_p50: float | None = None
    model_seconds_per_item: float = 0.0
    reliability: Reliability = Field(default_factory=Reliability)
    configs: list[ConfigRow] = Field(default_factory=list)
    sweep: list[SweepPoint] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    plots: list[str] = Field(default_factory=list)
    shots_per_item: float = 0.0
    """Mean number of worked examples drawn from the data set per item's prompt (``--shots``; the
    agent's own built-in examples are not counted)."""
    demonstration_items: int = 0
    """Distinct items of the data set shown as worked examples (none of them evaluated)."""


def _model_seconds(record: ItemRecord) -> float:
    """Latency of every call the item made (with --sweep, also the calls the cascade did not use)."""
    usage = [u for a in record.attempts for u in a.usage] if record.attempts else record.usage
    return sum(u.latency_s for u in usage)


def build_report(meta: Meta, records: list[ItemRecord]) -> Report:
    """The report of ``records`` (no model call)."""
    config = meta.config
    labels = meta.labels
    confidence = [r.confidence for r in records] if config.kind == "classification" else None
    scores = score(config.kind, [r.prediction for r in records], [r.gold for r in records], labels, confidence)
    codes = Counter(str(r.error.code) for r in records if r.error and r.prediction is None)
    sessions = [s for s in meta.sessions if s.items]
    wall = sum(s.seconds for s in sessions)
    seconds = [r.seconds for r in records]
    overhead = [max(0.0, r.seconds - _model_seconds(r)) for r in records]
    notes: list[str] = []
    configs: list[ConfigRow] = []
    sweep: list[SweepPoint] = []
    if config.kind in REPLAYED and meta.steps:
        configs = step_alone(records, meta.steps, labels, config.kind)
        if len(meta.steps) > 1:
            rule = tuple(meta.step_thresholds.get(s, meta.threshold) for s in meta.steps) if meta.step_thresholds else meta.threshold
            configs.append(cascade_at(records, meta.steps, rule, labels, config.kind))
            if meta.step_thresholds:
                chosen = ", ".join(f"{s} {t:g}" for s, t in meta.step_thresholds.items())
                notes.append(f"The cascade escalated on the thresholds chosen from data for this task and cascade ({chosen}; `moa agents`), not on {meta.threshold}.")
            sweep = threshold_sweep(records, meta.steps, labels, kind=config.kind)
            if not config.sweep:
                notes.append(
                    "The sweep is replayed from the steps the cascade tried, so it covers thresholds up to the eval's own "
                    f"({meta.threshold}); run with --sweep for every threshold."
                )
    fewer = sum(r.shots < config.shots for r in records)
    if config.shots and fewer:
        notes.append(
            f"{fewer} of {len(records)} items were shown fewer than {config.shots} worked examples: the items left out of the eval "
            "with the same options (e.g. the same slot names) ran short."
        )
    if config.kind == "retrieval":
        notes.append("Retrieval calls no generative model; the query embeddings (and the corpus indexing, done once per folder) are not in the usage table.")
    return Report(
        config=config,
        steps=meta.steps,
        threshold=meta.threshold,
        models=meta.models,
        machine=meta.machine,
        items=len(records),
        errors=sum(codes.values()),
        error_codes=dict(codes),
        metrics=scores,
        headline=HEADLINE[config.kind],
        per_class=per_class([r.prediction for r in records], [r.gold for r in records], labels) if config.kind == "classification" else {},
        baselines=constant_baselines([r.gold for r in records], labels) if config.kind == "classification" and records else {},
        answered_by=dict(Counter(r.answered_by or ("error" if r.error else "-") for r in records)),
        escalation_rate=sum(r.escalated for r in records) / len(records) if records else 0.0,
        unverified=dict(Counter(r.unverified.split(":")[0] for r in records if r.unverified)),
        usage=summarize([u for r in records for u in r.usage]),
        wall_seconds=round(wall, 3),
        setup_seconds=round(sum(s.setup_seconds for s in meta.sessions), 3),
        items_per_s=round(sum(s.items for s in sessions) / wall, 3) if wall > 0 else None,
        item_seconds_p50=round(float(np.percentile(seconds, 50)), 4) if seconds else 0.0,
        item_seconds_p95=round(float(np.percentile(seconds, 95)), 4) if seconds else 0.0,
        overhead_ms_p50=round(1000 * float(np.percentile(overhead, 50)), 2) if overhead else None,
        model_seconds_per_item=round(sum(u.latency_s for r in records for u in r.usage) / len(records), 4) if records else 0.0,
        reliability=reliability_of(records) if config.kind == "classification" else Reliability(),
        configs=configs,
        sweep=sweep,
        notes=notes,
        shots_per_item=round(sum(r.shots for r in records) / len(records), 3) if records else 0.0,
        demonstration_items=len({i for d in meta.demonstrations for i in d.ids}),
    )


def _shots_line(report: Report) -> list[str]:
    if not report.config.shots:
        return []
    return [
        f"Worked examples: {report.config.shots} per prompt requested (--shots), {report.shots_per_item:g} shown per item on average, "
        f"drawn from {report.demonstration_items} items of the data set outside the eval (ids in meta.json).",
        "",
    ]


_QUALITY = {"classification": ("accuracy", "macro_f1", "auc"), "entities": ("precision", "recall", "f1")}
"""The quality columns of the replayed configurations and the sweep, by data kind."""


def _f(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows), ""]


def usage_rows(report: Report) -> list[list[str]]:
    return [
        [tier, str(t.calls), str(t.prompt_tokens), str(t.completion_tokens), f"{t.cost:.4f}", f"{t.latency_p50:.3f}", f"{t.latency_p95:.3f}", str(t.cache_hits)]
        for tier, t in report.usage.per_tier.items()
    ]


USAGE_HEADER = ["tier", "calls", "prompt tok", "completion tok", "cost $", "latency p50 s", "latency p95 s", "cache hits"]


def to_markdown(report: Report) -> str:
    """The report as Markdown: configuration, quality, cost per tier, replayed configurations, sweep, reliability, plots."""
    c = report.config
    steps = " → ".join(report.steps) or c.target
    models = ", ".join(f"{k} = `{v}`" for k, v in report.models.items())
    m = report.machine
    lines = [
        f"# Eval: {c.target} on {c.data_name}",
        "",
        f"{report.items} items of `{c.data}` ({c.kind}, format {c.format}; limit {c.limit or 'none'}, seed {c.seed}). "
        f"Cascade {steps}, threshold {report.threshold if report.threshold is not None else '-'}" + (", every step on every item (--sweep)" if c.sweep else "") + ".",
        "",
        *_shots_line(report),
        f"Models: {models}. Machine: {m.get('cores', '?')} cores, {m.get('cpu') or '?'}, {m.get('platform', '?')}, Python {m.get('python', '?')}; "
        f"load average {_f(m.get('load_1m'), 2)} at the start. Created {report.created}.",
        "",
        "## Quality",
        "",
        *_table(["metric", "value"], [[k, f"{v:.4f}"] for k, v in report.metrics.items()] + [["items with an error", str(report.errors)]]),
    ]
    if report.per_class:
        rows = [[k, _f(v["precision"]), _f(v["recall"]), _f(v["f1"]), str(int(v["support"]))] for k, v in report.per_class.items()]
        lines += _table(["class", "precision", "recall", "F1", "support"], rows)
    if report.baselines:
        rows = [[name, _f(b["accuracy"]), _f(b["macro_f1"])] for name, b in report.baselines.items()]
        lines += ["Baselines (one answer for every item; the best accuracy is the majority baseline):", ""]
        lines += _table(["baseline", "accuracy", "macro-F1"], rows)
    if report.error_codes:
        lines += ["Errors: " + ", ".join(f"{k} {v}" for k, v in report.error_codes.items()), ""]
    lines += ["## Cost and latency", "", *_table(USAGE_HEADER, usage_rows(report))]
    answered = ", ".join(f"{k} {v}" for k, v in report.answered_by.items())
    lines += [
        f"Items/s {_f(report.items_per_s, 2)} over {report.wall_seconds:.1f} s of wall time"
        + (f" (+ {report.setup_seconds:.1f} s indexing the corpus)" if report.setup_seconds >= 0.05 else "")
        + f" · item latency p50 {report.item_seconds_p50:.3f} s, "
        f"p95 {report.item_seconds_p95:.3f} s · model time {report.model_seconds_per_item:.3f} s per item · moa overhead p50 "
        f"{_f(report.overhead_ms_p50, 1)} ms per item · escalation rate {report.escalation_rate:.1%} · answered by: {answered}"
        + (" · unverified: " + ", ".join(f"{k} {v}" for k, v in report.unverified.items()) if report.unverified else ""),
        "",
    ]
    names = _QUALITY.get(report.config.kind, _QUALITY["classification"])
    if report.configs:
        lines += ["## Configurations (replayed from the per-item records)", ""]
        rows = [
            [r.name, *(_f(r.metrics.get(m)) for m in names), f"{r.cost:.4f}", str(r.tokens), f"{r.model_seconds_per_item:.3f}", f"{r.top_share:.0%}"]
            for r in report.configs
        ]
        header = ["configuration", *map(metric_name, names), "cost $", "tokens", "model s/item", f"answered by {report.steps[-1]}"]
        lines += _table(header, rows)
    if report.sweep:
        lines += [f"## Threshold sweep ({' → '.join(report.steps)}, no model calls)", ""]
        shown = names[:2] if report.config.kind == "classification" else names
        rows = [[f"{p.threshold:.2f}", f"{p.top_share:.1%}", *(_f(p.metrics.get(m)) for m in shown), f"{p.model_seconds_per_item:.3f}"] for p in report.sweep]
        lines += _table(["threshold", f"share to {report.steps[-1]}", *map(metric_name, shown), "model s/item"], rows)
    if report.reliability.items:
        lines += [f"## Reliability of the confidence (ECE {report.reliability.ece:.3f} over {report.reliability.items} items)", ""]
        rows = [[f"{b.lo:.1f}–{b.hi:.1f}", _f(b.confidence), _f(b.accuracy), str(b.count)] for b in report.reliability.bins if b.count]
        lines += _table(["confidence bin", "mean confidence", "accuracy", "items"], rows)
    lines += [f"- {n}" for n in report.notes] + ([""] if report.notes else [])
    lines += [f"![{Path(p).stem}]({p})" for p in report.plots]
    return "\n".join(lines).rstrip() + "\n"


def _write(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()), path.name)


def write_report(out: Path, meta: Meta, records: list[ItemRecord]) -> Report:
    """Build the report and write ``report.json``, ``report.md`` and the plots into ``out``."""
    from moa.eval.plots import eval_plots

    report = build_report(meta, records)
    plots, note = eval_plots(out, report)
    report = report.model_copy(update={"plots": plots, "notes": [*report.notes, *([note] if note else [])]})
    _write(out / "report.json", report.model_dump_json(indent=2) + "\n")
    _write(out / "report.md", to_markdown(report))
    return report


def rerender(out: Path) -> Report:
    """Rebuild the report of the eval in ``out`` from its files (no model call)."""
    store = ResultStore(out)
    meta = store.read_meta()
    records = list({r.id: r for r in store.read()}.values())
    if not records:
        raise UserError(ErrorCode.INPUT_FILE, f"{store.results} has no item records yet; run the eval first")
    return write_report(out, meta, records)

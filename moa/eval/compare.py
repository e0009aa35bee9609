"""Comparing evals: one row per eval folder (its headline metric, speed and cost) and, when they
share a metric, a plot of quality against cost. Read from the folders' records; no model call."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from moa.errors import ErrorCode, UserError
from moa.eval.plots import compare_plot
from moa.eval.report import Report, rerender
from moa.files import atomic_write


class CompareRow(BaseModel):
    """One eval, summarised."""

    name: str
    target: str
    data: str
    steps: str
    items: int
    headline: str
    value: float
    metrics: dict[str, float]
    items_per_s: float | None
    model_seconds_per_item: float
    cost_per_item: float
    tokens_per_item: float
    escalation_rate: float
    answered_by: dict[str, int]


def row_of(name: str, report: Report) -> CompareRow:
    n = max(report.items, 1)
    return CompareRow(
        name=name,
        target=report.config.target,
        data=report.config.data_name,
        steps="→".join(report.steps) or report.config.target,
        items=report.items,
        headline=report.headline,
        value=report.metrics[report.headline],
        metrics=report.metrics,
        items_per_s=report.items_per_s,
        model_seconds_per_item=report.model_seconds_per_item,
        cost_per_item=report.usage.cost / n,
        tokens_per_item=(report.usage.prompt_tokens + report.usage.completion_tokens) / n,
        escalation_rate=report.escalation_rate,
        answered_by=report.answered_by,
    )


def compare_markdown(rows: Sequence[CompareRow], plot: str | None = None) -> str:
    header = ["eval", "agent / graph", "data", "steps", "items", "metrics", "items/s", "model s/item", "tokens/item", "$ /item", "escalated", "answered by"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in r.metrics.items())
        answered = ", ".join(f"{k} {v}" for k, v in r.answered_by.items())
        speed = "-" if r.items_per_s is None else f"{r.items_per_s:.2f}"
        lines.append(
            f"| {r.name} | {r.target} | {r.data} | {r.steps} | {r.items} | {metrics} | {speed} | {r.model_seconds_per_item:.3f} | "
            f"{r.tokens_per_item:.0f} | {r.cost_per_item:.4f} | {r.escalation_rate:.0%} | {answered} |"
        )
    if plot:
        lines += ["", f"![quality vs cost]({plot})"]
    return "\n".join(lines) + "\n"


def compare(folders: Sequence[Path], out: Path) -> tuple[list[CompareRow], str | None]:
    """Re-render each folder's report and write ``compare.md`` / ``compare.json`` / ``compare.png`` into ``out``."""
    if not folders:
        raise UserError(ErrorCode.INVALID_INPUT, "give at least one eval folder to compare (--report DIR)")
    rows = [row_of(Path(f).name, rerender(Path(f))) for f in folders]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(ErrorCode.INPUT_FILE, f"cannot create {out}: {exc.strerror or exc}; choose another --out") from exc
    plot = compare_plot(out / "compare.png", rows)
    atomic_write(out / "compare.md", lambda f: f.write(compare_markdown(rows, plot).encode()), "compare.md")
    payload = "[\n" + ",\n".join(r.model_dump_json() for r in rows) + "\n]\n"
    atomic_write(out / "compare.json", lambda f: f.write(payload.encode()), "compare.json")
    return rows, plot

"""Turning a :class:`~moa.workflow.results.RunResult` into a report: one row per input item, one column per
subtask, plus a usage summary. Used by the CLI (rich) and available as Markdown."""

from __future__ import annotations

import json

from pydantic import BaseModel

from moa.errors import ErrorInfo
from moa.workflow.results import RunResult, SubtaskResult


def brief(output: BaseModel | None, error: ErrorInfo | None = None, width: int = 60) -> str:
    """A one-line view of an agent output."""
    if output is None:
        return f"error: {error.code}" if error else "-"
    data = output.model_dump()
    if "keep" in data:
        text = "passed, unsure" if data.get("unsure") else ("kept" if data["keep"] else "dropped")
        return f"{text} ({data.get('confidence', 0):.2f})"
    if "label" in data and "confidence" in data:
        return f"{data['label']} ({data['confidence']:.2f})"
    if "entities" in data:
        return ", ".join(f"{e['text']} [{e['type']}]" for e in data["entities"]) or "none"
    if "passages" in data:
        ps = data["passages"]
        return f"{len(ps)} passages" + (f", best {ps[0]['score']:.2f}: {ps[0]['text'][:width // 2]}" if ps else "")
    text = json.dumps(data, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def item_table(result: RunResult) -> tuple[list[str], list[list[str]]]:
    """Header and rows: each distinct item, with each subtask's brief output for it."""
    subtasks: list[SubtaskResult] = [result.results[s.id] for s in (result.plan.subtasks if result.plan else []) if s.id in result.results]
    header = ["item", *[f"{r.id} {r.agent}" for r in subtasks]]
    order: list[str] = []
    cells: dict[str, dict[str, str]] = {}
    for r in subtasks:
        for item in r.items:
            if item.item not in cells:
                order.append(item.item)
                cells[item.item] = {}
            if item.handoff:
                cells[item.item][r.id] = "needs a person"
            elif item.waiting:
                cells[item.item][r.id] = f"waiting ({item.waiting})"
            else:
                cells[item.item][r.id] = brief(item.output, item.error)
    rows = [[item, *[cells[item].get(r.id, "·") for r in subtasks]] for item in order]
    return header, rows


def to_markdown(result: RunResult) -> str:
    """The run as a Markdown report."""
    lines = [f"# moa run {result.run_id}: {result.status}", "", f"Task: {result.task}", ""]
    if result.planner:
        lines += [f"Planner: {result.planner.name} ({result.planner.reason})", ""]
    if result.answer:
        lines += ["## Answer", "", result.answer, ""]
    header, rows = item_table(result)
    if rows:
        lines += ["## Results", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
        lines.append("")
    s = result.summary
    lines += [
        "## Usage",
        "",
        f"{s.calls} model calls, {s.prompt_tokens} prompt + {s.completion_tokens} completion tokens, ${s.cost:.4f}; "
        f"slm share: {s.slm_call_share:.0%} of calls, {s.slm_token_share:.0%} of tokens.",
    ]
    for err in result.errors:
        lines.append(f"- error in {err.subtask or '?'}: [{err.code}] {err.message}")
    return "\n".join(lines) + "\n"

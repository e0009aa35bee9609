"""triage — the small model filters every item; only what passes (or what it is unsure of) reaches the llm tier.

The "classify and filter on the SLM, send the rest to the LLM" pattern: the task is planned as
usual, then a filtering *gate* is put in front of it. The gate runs on the cheap steps only
(``specialist`` → ``slm``) over every input item; items it keeps, and items it would drop but is
unsure of (confidence below ``pass_unsure``), go on; every later subtask runs on the ``llm`` step.
Each subtask's ``handled`` counts show how many items each tier answered.
"""

from __future__ import annotations

from collections.abc import Sequence

from moa.kit import INPUT, Plan, RunGraph, Subtask, compile_plan_execute, make_plan_node

GATE_STEPS = ("specialist", "slm")


def gate(plan: Plan, *, criterion: str, mode: str, pass_unsure: float | None, later: Sequence[str] = ("llm",)) -> Plan:
    """``plan`` with a filtering gate in front: the planner's own root filter, or a new one."""
    subtasks = list(plan.subtasks)
    found = next((s for s in subtasks if s.agent == "filtering" and s.items == INPUT and not s.depends_on), None)
    gate_step = found or Subtask(id="gate", agent="filtering", instruction=f"filter: {criterion}", options={"criterion": criterion, "mode": mode})
    options = {**gate_step.options, "pass_unsure": pass_unsure}
    rest = []
    for s in subtasks:
        if s is found:
            continue
        if s.items == INPUT:
            s = s.model_copy(update={"items": gate_step.id, "depends_on": sorted({*s.depends_on, gate_step.id})})
        rest.append(s.model_copy(update={"cascade": s.cascade or list(later)}))
    why = f"triage: {gate_step.id} gates every item on {' → '.join(GATE_STEPS)}; what passes goes to {' → '.join(later)}"
    return Plan(
        subtasks=[gate_step.model_copy(update={"options": options, "cascade": list(GATE_STEPS)}), *rest],
        rationale="; ".join(r for r in (plan.rationale, why) if r),
    )


def build(criterion: str = "spam", mode: str = "drop", pass_unsure: float | None = 0.7, plan: Plan | None = None) -> RunGraph:
    """Build the triage graph.

    Args:
        criterion: what the gate filters when the task names no filter of its own.
        mode: ``drop`` items matching the criterion, or ``keep`` only those.
        pass_unsure: items the gate would drop with a confidence below this pass anyway
            (``None``: trust every decision).
        plan: a fixed DAG to gate instead of planning each task.
    """
    gated = make_plan_node(fixed=plan, transform=lambda p: gate(p, criterion=criterion, mode=mode, pass_unsure=pass_unsure))
    return compile_plan_execute(gated, "triage")

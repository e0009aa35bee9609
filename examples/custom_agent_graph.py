"""A custom agent and a custom graph, defined in Python with moa's public API.

* ``UrgencyAgent`` — a new model agent: is a support message urgent? (few-shot completion prompt
  for base models, chat prompt for instruction-tuned ones, constrained JSON, logprob confidence).
* ``build()`` — a custom LangGraph graph: a ``dedupe`` node drops repeated messages, then the
  standard planner → parallel agents → synthesizer nodes run a fixed DAG (filter spam, then
  urgency ∥ sentiment on what is left).

    python examples/custom_agent_graph.py
"""

from __future__ import annotations

import sys
from typing import Any, Literal

from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel, Field, create_model

import moa
from moa.workflow.nodes import synthesize
from moa.workflow.planner import given_plan
from moa.workflow.report import to_markdown
from moa.workflow.scheduler import execute
from moa.workflow.state import RunDeps, RunState

MESSAGES = [
    "My card was charged twice and I need the money back today!",
    "WINNER! Claim your free cruise now, call 0800 555 0199",
    "Could you tell me your opening hours on Saturday?",
    "My card was charged twice and I need the money back today!",
    "The app crashes every time I try to pay, I can't order anything.",
]


class UrgencyInput(BaseModel):
    text: str = Field(min_length=1)
    """A support message."""


class Urgency(BaseModel):
    urgent: bool
    """True when the sender needs help quickly."""
    confidence: float = Field(ge=0, le=1)
    """Probability of the decision (from token logprobs when the backend has them)."""


_SHOTS = [
    ("I was locked out of my account and my payroll run is due in an hour.", "urgent"),
    ("Do you have this jacket in blue?", "routine"),
    ("The site is down and customers cannot check out!", "urgent"),
    ("Thanks, the parcel arrived.", "routine"),
]


class UrgencyAgent(moa.ModelAgent[UrgencyInput, Urgency, BaseModel]):
    name = "urgency"
    description = "Decides whether a support message is urgent."
    examples = ("which messages are urgent", "prioritise the tickets")
    input_type = UrgencyInput
    output_type = Urgency
    max_tokens = 16

    def choices(self, data: UrgencyInput) -> list[str]:
        return ["urgent", "routine"]

    def decode_type(self, data: UrgencyInput, caps: moa.Capabilities) -> type[BaseModel]:
        return create_model("UrgencyDecision", label=(Literal["urgent", "routine"], ...))

    def completion_prompt(self, data: UrgencyInput) -> str:
        shots = "".join(f'Message: {t}\nOutput: {{"label":"{lab}"}}\n\n' for t, lab in _SHOTS)
        return f"Label each support message as urgent or routine.\n\n{shots}Message: {' '.join(data.text.split())}\nOutput: "

    def chat_messages(self, data: UrgencyInput) -> list[moa.Message]:
        return [
            moa.Message(role="system", content="Label the user's support message as urgent or routine. Reply with JSON."),
            moa.Message(role="user", content=data.text),
        ]

    def finish(self, data: UrgencyInput, decoded: BaseModel, gen: moa.Generation, probs: dict[str, float] | None) -> Urgency:
        label = max(probs, key=probs.__getitem__) if probs else str(decoded.label)  # type: ignore[attr-defined]
        return Urgency(urgent=label == "urgent", confidence=round(probs[label], 4) if probs else 0.5)


PLAN = {
    "subtasks": [
        {"id": "spam", "agent": "filtering", "options": {"criterion": "spam"}},
        {"id": "urgency", "agent": "urgency", "items": "spam", "depends_on": ["spam"]},
        {"id": "mood", "agent": "sentiment", "items": "spam", "depends_on": ["spam"]},
    ]
}


def dedupe(state: RunState) -> dict[str, Any]:
    """Drop repeated items (keeps the first of each)."""
    return {"items": list(dict.fromkeys(state.get("items", [])))}


async def fixed_plan(state: RunState, runtime: Any) -> dict[str, Any]:
    deps: RunDeps = runtime.context
    outcome = given_plan(PLAN, deps.agents)
    return {"plan": outcome.plan, "planner": outcome.info}


def build() -> Any:
    graph = StateGraph(RunState, context_schema=RunDeps)
    graph.add_node("dedupe", dedupe)
    graph.add_node("plan", fixed_plan)
    graph.add_node("execute", execute)
    graph.add_node("synthesize", synthesize)
    graph.add_edge(START, "dedupe")
    graph.add_edge("dedupe", "plan")
    graph.add_edge("plan", "execute")
    graph.add_edge("execute", "synthesize")
    graph.add_edge("synthesize", END)
    return graph.compile(name="support_triage")


def main(messages: list[str] = MESSAGES) -> moa.RunResult:
    result = moa.run("triage support messages", input=messages, graph=build(), agents=[UrgencyAgent()])
    sys.stdout.write(to_markdown(result))
    return result


if __name__ == "__main__":
    from moa.logs import configure_logging

    configure_logging()
    main()

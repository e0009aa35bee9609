"""urgency — a template agent to copy: is a support message urgent?

A complete model agent written with :mod:`moa.kit` only: a few-shot completion prompt for base
models, a chat prompt for instruction-tuned ones, a constrained JSON decision, and a confidence
from token logprobs when the backend gives them. To ship it in your own package, copy this file
and register the instance in your ``pyproject.toml``::

    [project.entry-points."moa.agents"]
    urgency = "your_package.urgency:agent"

``moa agents`` then lists it and every planner can assign subtasks to it. Or pass it to a run:
``moa.run(task, agents=[UrgencyAgent()])`` (``examples/custom_agent_graph.py``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, create_model

from moa.kit import Capabilities, Generation, Message, ModelAgent


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


class UrgencyAgent(ModelAgent[UrgencyInput, Urgency, BaseModel]):
    name = "urgency"
    description = "Decides whether a support message is urgent."
    examples = ("which messages are urgent", "prioritise the tickets")
    input_type = UrgencyInput
    output_type = Urgency

    def choices(self, data: UrgencyInput) -> list[str]:
        return ["urgent", "routine"]

    def decode_type(self, data: UrgencyInput, caps: Capabilities) -> type[BaseModel]:
        return create_model("UrgencyDecision", label=(Literal["urgent", "routine"], ...))

    def completion_prompt(self, data: UrgencyInput) -> str:
        shots = "".join(f'Message: {t}\nOutput: {{"label":"{lab}"}}\n\n' for t, lab in _SHOTS)
        return f"Label each support message as urgent or routine.\n\n{shots}Message: {' '.join(data.text.split())}\nOutput: "

    def chat_messages(self, data: UrgencyInput) -> list[Message]:
        return [
            Message(role="system", content="Label the user's support message as urgent or routine. Reply with JSON."),
            Message(role="user", content=data.text),
        ]

    def finish(self, data: UrgencyInput, decoded: BaseModel, gen: Generation, probs: dict[str, float] | None) -> Urgency:
        label = max(probs, key=probs.__getitem__) if probs else str(decoded.label)  # type: ignore[attr-defined]
        return Urgency(urgent=label == "urgent", confidence=round(probs[label], 4) if probs else 0.5)


agent = UrgencyAgent()

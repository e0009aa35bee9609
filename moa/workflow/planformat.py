"""The compact plan format small chat models write, and its conversion to a :class:`Plan`.

A model plans best in a format with nothing to invent (LLMCompiler and ReWOO plan in short
numbered lines). One step is one line::

    filtering(drop: spam) <- input
    sentiment(positive, negative) <- 1
    extraction(person, product) <- 1

* the agent, from the catalogue (constrained to its names where the backend takes a JSON schema);
* its options in brackets, only those that matter: ``keep: X`` / ``drop: X`` for an agent with a
  ``criterion`` and ``mode`` (filtering), a comma-separated list for an agent with ``labels``
  (sentiment) or ``types`` (extraction); nothing for the others;
* ``<- input`` (the run's items, or the task text when there is none) or ``<- N``: the items
  step N passed on. Steps are numbered by position, so no ids, cascades or thresholds.

The model answers with ``{"plan": [lines]}`` (:func:`plan_schema`: each line's agent and source
are constrained by a pattern; an object at the top, as OpenAI's structured outputs require) or,
without constrained decoding, with a bare list or plain lines;
:func:`parse_steps` reads both and :func:`to_plan` builds the :class:`Plan` (ids ``s1, s2, ...``,
``depends_on`` = the source). Fixing what a model gets wrong is :mod:`moa.workflow.planrepair`'s
job; the prompt is :func:`plan_prompt`, whose fixed prefix (catalogue, rules, example plans) comes
first so the engine's KV cache reuses it from one task to the next.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from moa.agent.base import Agent
from moa.models.base import Message
from moa.workflow.plan import INPUT, Plan, Subtask

AgentMap = Mapping[str, Agent]  # type: ignore[type-arg]

MAX_STEPS = 6
"""The most steps a compact plan may have (the schema's ``maxItems``)."""
_OPTIONS_CHARS = 60
_LINE = re.compile(
    r"^\s*(?:\d+\s*[.):]\s*)?(?P<agent>[A-Za-z_][\w\-]*)\s*(?:\((?P<options>[^()]*)\))?\s*(?:(?:<-|←|<=|from)\s*(?P<source>(?:step\s*)?[\w\-]+))?\s*[.,;]?\s*$"
)
_SOURCE = re.compile(r"^(?:s|step)?\s*(\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class CompactStep:
    """One step as the model wrote it (before repairs)."""

    agent: str
    options: str = ""
    """The text in brackets (``"drop: spam"``, ``"positive, negative"``), stripped."""
    source: int = 0
    """0: the run's input; N: the items of step N (1-based)."""
    line: str = field(default="", compare=False)
    """The line as written."""


def option_kind(agent: Agent) -> str | None:  # type: ignore[type-arg]
    """Which options the compact format gives ``agent``: ``filter`` (criterion and mode),
    ``labels``, ``types``, or None."""
    fields = agent.input_type.model_fields
    if "criterion" in fields and "mode" in fields:
        return "filter"
    for name in ("labels", "types"):
        if name in fields:
            return name
    return None


def plan_schema(agents: Sequence[str]) -> dict[str, Any]:
    """JSON schema of a compact plan: ``{"plan": [...]}``, 1 to :data:`MAX_STEPS` lines, each
    starting with a known agent and ending with ``<- input`` or ``<- N``."""
    names = "|".join(re.escape(n) for n in sorted(agents, key=len, reverse=True))
    line = rf"^({names})(\([^()]{{1,{_OPTIONS_CHARS}}}\))? <- (input|[1-{MAX_STEPS - 1}])$"
    steps = {"type": "array", "items": {"type": "string", "pattern": line}, "minItems": 1, "maxItems": MAX_STEPS}
    # an object at the top: OpenAI's structured outputs and JSON mode take no other root
    return {"title": "Plan", "type": "object", "properties": {"plan": steps}, "required": ["plan"], "additionalProperties": False}


def max_plan_tokens(steps: int = 4) -> int:
    """An output-token limit for a compact plan of up to ``steps`` lines (a line with options is
    at most ~25 tokens); generation stops at the closing bracket well before it."""
    return 8 + 25 * steps


def parse_steps(text: str) -> list[CompactStep]:
    """The steps in a model's answer: a JSON array of lines, or plain lines (numbered or not, in a
    code fence or not). Lines that are not steps are skipped; an empty list means none was found."""
    stripped = text.strip()
    lines: list[str]
    try:
        data = json.loads(stripped)
    except ValueError:
        data = None
    if isinstance(data, dict):
        data = data.get("steps", data.get("plan"))
    if isinstance(data, list):
        lines = [_line_of(x) if isinstance(x, dict) else str(x) for x in data]
    else:
        lines = [ln.strip().strip('",') for ln in stripped.replace("```", "\n").splitlines()]
    steps = []
    for ln in lines:
        match = _LINE.match(ln)
        if match is None:
            continue
        source = match["source"] or INPUT
        number = _SOURCE.match(source)
        steps.append(CompactStep(match["agent"], (match["options"] or "").strip(), int(number[1]) if number else 0, ln.strip()))
    return steps


def _line_of(step: Mapping[str, Any]) -> str:
    """A JSON object step (``{"agent": ..., "options": ..., "from": ...}``) as a line."""
    options = step.get("options")
    text = ", ".join(map(str, options)) if isinstance(options, list) else str(options or "")
    source = step.get("from", step.get("source", INPUT))
    return f"{step.get('agent', '')}" + (f"({text})" if text else "") + f" <- {source}"


def _split_list(text: str) -> list[str]:
    parts = re.split(r"\s*(?:,|;|/|\bor\b|\band\b)\s*", text)
    return list(dict.fromkeys(p.strip(" .'\"").lower() for p in parts if p.strip(" .'\"")))


def step_options(agent: Agent, text: str) -> dict[str, Any]:  # type: ignore[type-arg]
    """The agent's options from the text in a step's brackets (empty when there are none or the
    agent takes none in the compact format)."""
    kind = option_kind(agent)
    text = text.strip()
    if not text or kind is None:
        return {}
    if kind == "filter":
        match = re.match(r"^(keep|drop|remove|exclude|only)\s*[:=]?\s*(.*)$", text, re.IGNORECASE)
        if match is None:
            return {"criterion": text}
        mode = "keep" if match[1].lower() in ("keep", "only") else "drop"
        return {"mode": mode, **({"criterion": match[2].strip()} if match[2].strip() else {})}
    values = _split_list(text)
    return {kind: values} if values else {}


def to_plan(steps: Sequence[CompactStep], agents: AgentMap, *, rationale: str = "") -> Plan:
    """A :class:`Plan` of ``steps`` (ids ``s1, s2, ...``; a step's source is its items and its one
    dependency). Steps must name known agents and earlier sources: repair them first
    (:func:`moa.workflow.planrepair.repair_steps`)."""
    subtasks = []
    for number, step in enumerate(steps, start=1):
        source = f"s{step.source}" if step.source else INPUT
        subtasks.append(
            Subtask(
                id=f"s{number}",
                agent=step.agent,
                instruction=step.line or step.agent,
                options=step_options(agents[step.agent], step.options),
                items=source,
                depends_on=[source] if step.source else [],
            )
        )
    return Plan(subtasks=subtasks, rationale=rationale)


def _catalogue_line(name: str, agent: Agent) -> str:  # type: ignore[type-arg]
    kind = option_kind(agent)
    syntax = {
        "filter": f"{name}(keep: X) keeps only the items about X; {name}(drop: X) removes the items that are X",
        "labels": f"{name} or {name}(label, label, ...) with the labels only when the task names them",
        "types": f"{name} or {name}(type, type, ...) with the types only when the task names them",
        None: name,
    }[kind]
    return f"- {name}: {agent.description} Write: {syntax}."


# Example plans shown to the model (the built-in agents' only). They are not cases of the planning
# set; each shows one thing small models get wrong.
_EXAMPLES: tuple[tuple[str, bool, tuple[str, ...], frozenset[str]], ...] = (
    ("Classify the mood of each post", True, ("sentiment <- input",), frozenset({"sentiment"})),
    ("List the people and dates in these letters", True, ("extraction(person, date) <- input",), frozenset({"extraction"})),
    ("Remove the spam and the ads", True, ("filtering(drop: spam or ads) <- input",), frozenset({"filtering"})),
    ("I just want the posts about pricing", True, ("filtering(keep: pricing) <- input",), frozenset({"filtering"})),
    ("What do our stored notes say about shipping costs?", False, ("retrieval <- input",), frozenset({"retrieval"})),
    (
        "Only keep the emails about invoices, then say if each is positive or negative",
        True,
        ("filtering(keep: invoices) <- input", "sentiment(positive, negative) <- 1"),
        frozenset({"filtering", "sentiment"}),
    ),
    (
        "Skip the ads; give the sentiment and the entities of the other messages",
        True,
        ("filtering(drop: ads) <- input", "sentiment <- 1", "extraction <- 1"),
        frozenset({"filtering", "sentiment", "extraction"}),
    ),
    ("Give the tone of each comment and the products it names", True, ("sentiment <- input", "extraction(product) <- input"), frozenset({"sentiment", "extraction"})),
    (
        "Search our notes for feedback on the app, keep only the bug reports, and extract the companies in them",
        False,
        ("retrieval <- input", "filtering(keep: bug reports) <- 1", "extraction(organization) <- 2"),
        frozenset({"retrieval", "filtering", "extraction"}),
    ),
    ("Just the sentiment, no entities needed", True, ("sentiment <- input",), frozenset({"sentiment"})),
)
def _shots(agents: AgentMap) -> list[tuple[str, str]]:
    """(task line, plan) of the example plans whose agents are all in the catalogue."""
    return [(task_prompt(task, has_input).removesuffix("\nPlan:"), json.dumps({"plan": list(lines)})) for task, has_input, lines, needs in _EXAMPLES if needs <= set(agents)]


def plan_instructions(agents: AgentMap) -> str:
    """The catalogue and the rules of the format (the system message of a chat plan request)."""
    catalogue = "\n".join(_catalogue_line(name, agent) for name, agent in agents.items())
    return (
        "You turn a task into a plan of steps for these agents:\n"
        f"{catalogue}\n\n"
        'Answer with the plan only: {"plan": [lines]}, one line a step: agent(options) <- source. The source is '
        "`input` (the items the user gave, or the task text when there are none) or the number of an "
        "earlier step whose remaining items this step takes. Use only the agents the task needs, each once "
        "unless the task filters twice. Steps that both work on the same items take the same source."
    )


def plan_messages(agents: AgentMap, task: str, has_input: bool) -> list[Message]:
    """A chat plan request: the instructions, each example plan as a user and assistant turn, then
    the task. Everything before the task is the same for every task (the KV cache reuses it)."""
    messages = [Message(role="system", content=plan_instructions(agents))]
    for shot_task, plan in _shots(agents):
        messages += [Message(role="user", content=shot_task), Message(role="assistant", content=plan)]
    return [*messages, Message(role="user", content=task_prompt(task, has_input).removesuffix("\nPlan:"))]


def plan_prompt(agents: AgentMap) -> str:
    """The fixed prefix of a completion plan request (for models with no chat template); the task
    follows it (:func:`task_prompt`)."""
    shots = [f"{shot_task}\nPlan: {plan}" for shot_task, plan in _shots(agents)]
    return plan_instructions(agents) + "\n\n" + "\n\n".join(shots) + "\n\n"


def task_prompt(task: str, has_input: bool) -> str:
    """The part of a completion plan request that changes with the task (after :func:`plan_prompt`)."""
    return f"Task: {' '.join(task.split())}{'' if has_input else ' (no input)'}\nPlan:"


__all__: Sequence[str] = ["MAX_STEPS", "CompactStep", "max_plan_tokens", "option_kind", "parse_steps", "plan_instructions", "plan_messages", "plan_prompt", "plan_schema", "step_options", "task_prompt", "to_plan"]

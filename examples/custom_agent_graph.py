"""A custom agent and a custom graph, from the templates in the repository's agents/ and graphs/.

* ``agents/urgency.py`` — a new model agent: is a support message urgent? (few-shot completion
  prompt for base models, chat prompt for instruction-tuned ones, constrained JSON, logprob confidence).
* ``graphs/support_triage.py`` — a custom LangGraph graph: a ``dedupe`` node drops repeated
  messages, then the standard planner → parallel agents → synthesizer nodes run a fixed DAG (filter
  spam, then urgency ∥ sentiment on what is left).

Both are written with ``moa.kit`` only, as a plugin package would; here they are loaded from their
files instead of being installed.

    python examples/custom_agent_graph.py
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import moa
from moa.kit import to_markdown

ROOT = Path(__file__).resolve().parents[1]


def _template(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"moa_template_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


urgency = _template(ROOT / "agents" / "urgency.py")
support_triage = _template(ROOT / "graphs" / "support_triage.py")

MESSAGES = [
    "My card was charged twice and I need the money back today!",
    "WINNER! Claim your free cruise now, call 0800 555 0199",
    "Could you tell me your opening hours on Saturday?",
    "My card was charged twice and I need the money back today!",
    "The app crashes every time I try to pay, I can't order anything.",
]


def main(messages: list[str] = MESSAGES) -> moa.RunResult:
    result = moa.run("triage support messages", input=messages, graph=support_triage.build(), agents=[urgency.agent])
    sys.stdout.write(to_markdown(result))
    return result


if __name__ == "__main__":
    from moa.logs import configure_logging

    configure_logging()
    main()

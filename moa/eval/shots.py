"""Demonstrations drawn from an eval's own data (``moa eval --shots K``), never from its items.

An agent that takes worked examples (an ``examples`` input option, like the extraction agent)
can be evaluated with ``K`` of them per prompt, taken from the labelled items the eval leaves
out. Items that share their options (a SNIPS intent's slot names, a CoNLL file's entity types)
share their demonstrations, so the prompt's prefix stays constant for the engine's cache.

The draw is deterministic: candidates are scanned from the *end* of the permutation that
:meth:`~moa.eval.datasets.EvalSet.select` takes its items from the start of, so a larger
``--limit`` with the same ``--seed`` keeps the same demonstrations (until the eval reaches them).
Within a group, items showing a type not shown yet come first, then items with any entity, then
items with none.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from moa.eval.datasets import EvalSet, Example
from moa.eval.records import Demonstrations

#: Data kinds whose gold answers are entities, so they can be shown as worked examples.
KINDS = ("entities", "slots")
MAX_SHOTS = 16


def group_of(options: Mapping[str, Any]) -> str:
    """The key of the items that share demonstrations: their options."""
    return json.dumps(dict(options), sort_keys=True)


def as_demonstration(example: Example, kind: str) -> dict[str, Any]:
    """A labelled item as an ``examples`` entry: ``{"text", "entities": [{"text", "type"}]}``."""
    if kind == "entities":
        entities = [{"text": example.text[start:end], "type": type_} for type_, start, end in example.gold]
    else:
        entities = [{"text": value, "type": slot} for slot, value in example.gold]
    return {"text": example.text, "entities": entities}


def _types(example: Example, kind: str) -> set[str]:
    return {str(e["type"]) for e in as_demonstration(example, kind)["entities"]}


def _pick(candidates: Sequence[Example], k: int, kind: str) -> list[Example]:
    """Up to ``k`` candidates: new types first, then any entity, then none (order kept within each pass)."""
    chosen: dict[str, Example] = {}
    shown: set[str] = set()
    for example in candidates:
        if len(chosen) < k and _types(example, kind) - shown:
            chosen[example.id] = example
            shown |= _types(example, kind)
    for with_entities in (True, False):
        for example in candidates:
            if len(chosen) < k and example.id not in chosen and bool(_types(example, kind)) == with_entities:
                chosen[example.id] = example
    return list(chosen.values())


def draw(dataset: EvalSet, evaluated: Sequence[Example], k: int, seed: int) -> list[Demonstrations]:
    """``k`` demonstrations for each group of evaluated items, none of them an evaluated item."""
    taken = {e.id for e in evaluated}
    pool: dict[str, list[Example]] = {}
    for index in reversed(dataset.order(seed)):
        example = dataset.examples[index]
        if example.id not in taken:
            pool.setdefault(group_of(example.options), []).append(example)
    groups = {group_of(e.options): e.options for e in evaluated}
    return [Demonstrations(options=dict(groups[key]), ids=[e.id for e in _pick(pool.get(key, []), k, dataset.kind)]) for key in sorted(groups)]


def by_group(dataset: EvalSet, drawn: Sequence[Demonstrations]) -> dict[str, list[dict[str, Any]]]:
    """The ``examples`` option per group of options, from the drawn ids."""
    index = {e.id: e for e in dataset.examples}
    return {group_of(d.options): [as_demonstration(index[i], dataset.kind) for i in d.ids] for d in drawn}

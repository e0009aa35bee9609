"""Learning from labelled data and from the large model: ``moa calibrate`` and ``moa train``.

* :func:`calibrate_agent` runs a classification agent on one model over labelled data, fits an
  isotonic map from its raw confidence to the observed precision (:mod:`moa.learning.calibration`) and
  stores it per agent, model and label set; later runs of that label set report calibrated
  confidences, so a threshold of 0.8 means about 80% precision on that data.
* :func:`train_agent` fits a specialist (:mod:`moa.learning.specialist`) on labelled data and/or on the
  examples the escalation store collected (answers of higher steps), and stores it per agent and
  label set; later runs try it first in the cascade.
* :func:`train_tagging_agent` fits an entity tagger (:mod:`moa.learning.tagger`) on CoNLL data for an
  agent whose task is a set of entity types (the extraction agent), and stores it per type set
  (after the label map); later runs that ask for types it covers try it first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from moa.agent.context import RunContext
from moa.agent.model import ModelAgent
from moa.errors import ErrorCode, UserError
from moa.learning.calibration import Calibration
from moa.learning.labelled import LabelledSet, load_labelled
from moa.learning.specialist import Specialist, TrainReport, train_specialist
from moa.learning.store import calibration_path, describe_key, specialist_path, tagger_path
from moa.learning.tagger import Sentence, Tagger, TagReport, load_sentences, train_tagger
from moa.routing.policy import Step

Progress = Callable[[int, int], None]


class Task(BaseModel):
    """A classification agent's task as set by options: its label set and specialist key."""

    options: dict[str, Any]
    labels: list[str]
    key: str


def used_by(agent: ModelAgent[Any, Any, Any], task: Task, model: str | None = None) -> str:
    """Which runs will use what was learned for ``task`` (a specialist, or a calibration on
    ``model``), and how a run asks for that task, in words (``moa train`` / ``moa calibrate`` print it)."""
    on = f" when {model} answers" if model else ""
    return f"used by {agent.name} runs that ask for ({describe_key(task.key)}){on}: {agent.how_to_ask(task.key)}"


def classifier(agent: object) -> ModelAgent[Any, Any, Any]:
    """``agent`` if it is a classification agent (it has choices), else a :class:`UserError`."""
    if not isinstance(agent, ModelAgent) or agent.choices(agent.make_input("x", {})) is None:
        name = getattr(agent, "name", agent)
        raise UserError(ErrorCode.INVALID_INPUT, f"agent {name!r} is not a classification agent; calibrate and train work for agents with labels (e.g. sentiment, filtering)")
    return agent


def task_for(agent: ModelAgent[Any, Any, Any], options: Mapping[str, Any], labels: list[str] | None = None) -> Task:
    """The agent's task for ``options``, choosing among ``labels`` (the data's classes) if given."""
    merged = {**(agent.options_for_labels(labels) if labels else {}), **options}
    data = agent.make_input("x", merged)
    return Task(options=merged, labels=list(agent.choices(data) or []), key=agent.specialist_key(data) or "")


def load_for(
    agent: ModelAgent[Any, Any, Any], path: Path, options: Mapping[str, Any], label_map: Mapping[str, str] | None = None, **columns: Any
) -> tuple[LabelledSet, Task]:
    """Load labelled data for ``agent``: labels must be the agent's (after ``label_map``)."""
    allowed = task_for(agent, options).labels
    data = load_labelled(path, label_map=label_map, allowed=allowed, **columns)
    return data, task_for(agent, options, data.classes)


async def calibrate_agent(
    ctx: RunContext, agent: ModelAgent[Any, Any, Any], data: LabelledSet, task: Task, *, step: Step, on_progress: Progress | None = None
) -> tuple[Calibration, Path]:
    """Run ``agent`` on ``step``'s model over ``data``; fit and store the calibration."""
    backend = ctx.backend_for(step)
    done = 0

    async def one(text: str) -> tuple[float | None, str | None]:
        nonlocal done
        item = agent.make_input(text, task.options)
        attempt = await agent.attempt(ctx, step, item)
        done += 1
        if on_progress:
            on_progress(done, len(data))
        if attempt.output is None:
            return None, None
        raw = attempt.raw_confidence if attempt.raw_confidence is not None else attempt.confidence
        return raw, agent.label_of(item, attempt.output)

    answers = await asyncio.gather(*(one(t) for t in data.texts))
    pairs = [(conf, label == gold) for (conf, label), gold in zip(answers, data.labels, strict=True) if conf is not None]
    if not pairs:
        raise UserError(ErrorCode.BAD_DATA, f"{backend.spec} answered none of {len(answers)} items; check the model (`moa models`)")
    calibration = Calibration.fit([c for c, _ in pairs], [ok for _, ok in pairs], agent=agent.name, model=backend.spec, key=task.key)
    path = calibration_path(ctx.settings, agent.name, backend.spec, task.key)
    calibration.save(path)
    return calibration, path


async def train_agent(
    ctx: RunContext, agent: ModelAgent[Any, Any, Any], task: Task, data: LabelledSet | None, *, from_escalations: bool = False
) -> tuple[Specialist, TrainReport, Path]:
    """Fit and store the specialist of ``agent`` for ``task`` on ``data`` plus, with
    ``from_escalations``, every example the escalation store holds for the task."""
    texts = list(data.texts) if data else []
    labels = list(data.labels) if data else []
    sources = [data.source] if data else []
    if from_escalations:
        examples = await ctx.examples().all(agent.name, task.key)
        if not examples and data is None:
            raise UserError(
                ErrorCode.NOT_TRAINED,
                f"no escalated examples are stored for {agent.name} ({task.key}) yet; run it with an llm tier "
                "(answers of higher steps are stored), or give a labelled DATA file",
            )
        known = set(texts)
        fresh = [e for e in examples if e.text not in known]
        texts += [e.text for e in fresh]
        labels += [e.label for e in fresh]
        sources.append(f"{len(fresh)} escalated examples")
    combined = LabelledSet(texts=texts, labels=labels, source=" + ".join(sources))
    if len(combined.classes) < 2:
        raise UserError(
            ErrorCode.BAD_DATA,
            f"only one class ({', '.join(combined.classes) or 'none'}) in {combined.source}: a classifier needs examples of at least two labels",
        )
    specialist, report = await train_specialist(ctx.embedder(), combined, key=task.key, source=combined.source)
    path = specialist_path(ctx.settings, agent.name, task.key)
    specialist.save(path)
    return specialist, report, path


def tags_entities(agent: object) -> bool:
    """Whether ``agent``'s task is a set of entity types (its specialist is an entity tagger)."""
    if not isinstance(agent, ModelAgent):
        return False
    try:
        key = agent.specialist_key(agent.make_input("x", {}))
    except UserError:
        return False
    return (key or "").startswith("types=")


def load_tagging(path: Path, label_map: Mapping[str, str] | None = None, limit: int | None = None, seed: int = 0) -> list[Sentence]:
    """Sentences of a CoNLL file for :func:`train_tagging_agent` (a random sample of ``limit``)."""
    if path.suffix.lower() not in (".conll", ".bio", ".iob"):
        raise UserError(ErrorCode.INPUT_FILE, f"{path.name}: an entity tagger trains on CoNLL data (token<TAB>BIO-tag lines, .conll/.bio/.iob)")
    sentences = load_sentences(path, label_map)
    if limit is not None and limit < len(sentences):
        import numpy as np

        picked = sorted(np.random.default_rng(seed).permutation(len(sentences))[:limit].tolist())
        sentences = [sentences[i] for i in picked]
    return sentences


async def train_tagging_agent(
    ctx: RunContext, agent: ModelAgent[Any, Any, Any], sentences: list[Sentence], *, source: str, label_map: Mapping[str, str] | None = None
) -> tuple[Tagger, TagReport, Path]:
    """Fit and store the entity tagger of ``agent`` on ``sentences`` (keyed by their entity types)."""
    tagger, report = await train_tagger(ctx.embedder(), sentences, label_map=label_map, source=source)
    path = tagger_path(ctx.settings, agent.name, tagger.key)
    tagger.save(path)
    return tagger, report, path

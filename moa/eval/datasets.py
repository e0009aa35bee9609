"""Evaluation data sets: one loader per format, format detection, and the public data by name.

An :class:`EvalSet` is a list of :class:`Example` (an id, the text an agent sees, the gold answer
and per-item agent options) of one *kind*:

==============  ======================================  =========================================
kind            gold                                    formats
==============  ======================================  =========================================
classification  the label                               ``tsv``, ``csv``, ``jsonl`` (:mod:`moa.learning.labelled`)
entities        ``[[type, start, end], ...]``           ``conll`` (BIO tags)
slots           ``[[slot, value], ...]``                ``snips``
retrieval       ``{doc id: gain}``                      ``cranfield`` (with a corpus of documents)
qa              accepted answers                        ``qa`` (JSON list / JSONL of question, answer)
==============  ======================================  =========================================

The format is detected from the path (a folder with ``cran.all.1400`` is Cranfield; ``.conll``
is CoNLL; a ``.json`` with intents is SNIPS, one with questions is QA; ``.tsv/.csv/.txt`` and
other ``.jsonl`` are classification) or given explicitly. The public data of ``../shared/eval``
can be named: ``sst2``, ``sms``, ``wnut17``, ``snips``, ``cranfield``, ``parallelqa``
(:data:`PRESETS`; the name wins over a file of that name in the working directory, ``./sst2`` is the file).

:meth:`EvalSet.select` draws the items of an eval deterministically: the first ``limit`` of a
permutation seeded by ``seed``, so a larger limit with the same seed keeps every item of a smaller
one (a resumed eval can grow).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from moa.errors import ErrorCode, UserError
from moa.eval import formats
from moa.eval.formats import Doc
from moa.learning.labelled import load_labelled
from moa.learning.tagger import load_sentences

Kind = Literal["classification", "entities", "slots", "retrieval", "qa"]
Format = Literal["tsv", "csv", "jsonl", "conll", "snips", "cranfield", "qa"]
FORMATS: tuple[str, ...] = ("tsv", "csv", "jsonl", "conll", "snips", "cranfield", "qa")
KIND_OF: dict[str, Kind] = {
    "tsv": "classification", "csv": "classification", "jsonl": "classification",
    "conll": "entities", "snips": "slots", "cranfield": "retrieval", "qa": "qa",
}  # fmt: skip
_SUFFIX_FORMAT = {".tsv": "tsv", ".txt": "tsv", ".csv": "csv", ".conll": "conll", ".bio": "conll", ".iob": "conll"}


class Example(BaseModel):
    """One item to evaluate."""

    id: str
    text: str
    """What the agent (or graph) is given."""
    gold: Any
    """The expected answer (its shape depends on the kind, see the module docstring)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Agent options for this item (e.g. the entity types or slot names to look for)."""


class EvalSet(BaseModel):
    """A labelled data set of one kind, in file order."""

    name: str
    kind: Kind
    format: str
    source: str
    examples: list[Example]
    labels: list[str] = Field(default_factory=list)
    """Classes (classification), entity types (entities) or slot names (slots)."""
    corpus: list[Doc] = Field(default_factory=list)
    """The documents searched (retrieval)."""

    def __len__(self) -> int:
        return len(self.examples)

    def select(self, limit: int | None, seed: int) -> list[Example]:
        """The items of an eval: the first ``limit`` of a permutation seeded by ``seed``, in file order."""
        if limit is not None and limit < 1:
            raise UserError(ErrorCode.BAD_CONFIG, f"--limit must be at least 1, got {limit}; leave it out to evaluate every item")
        order = self.order(seed)
        chosen = sorted(order[:limit]) if limit is not None else list(range(len(self.examples)))
        return [self.examples[i] for i in chosen]

    def order(self, seed: int) -> list[int]:
        """The seeded permutation of item indices that :meth:`select` takes its items from the start of
        (worked examples for ``--shots`` come from its end, :mod:`moa.eval.shots`)."""
        return [int(i) for i in np.random.default_rng(seed).permutation(len(self.examples))]

    def rest(self, limit: int | None, seed: int) -> list[Example]:
        """The items :meth:`select` leaves out (to train on data disjoint from the eval)."""
        taken = {e.id for e in self.select(limit, seed)}
        return [e for e in self.examples if e.id not in taken]


@dataclass(frozen=True)
class Preset:
    """A public data set of ``../shared/eval`` by name."""

    path: str
    format: str
    label_map: Mapping[str, str] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    "sst2": Preset("sentiment/sst2_dev.tsv", "tsv", {"0": "negative", "1": "positive"}),
    "sms": Preset("filtering/sms_spam.tsv", "tsv"),
    "wnut17": Preset("extraction/wnut17_dev.conll", "conll"),
    "snips": Preset("extraction/snips", "snips"),
    "cranfield": Preset("retrieval/cranfield", "cranfield"),
    "parallelqa": Preset("planning/parallelqa.json", "qa"),
}


def default_data_dirs() -> list[Path]:
    """Where the public data is looked for: ``MOA_EVAL_DATA``, ``../shared/eval`` from here, then from the repository."""
    repo = Path(__file__).resolve().parents[2]
    chosen = [Path(os.environ["MOA_EVAL_DATA"]).expanduser()] if os.environ.get("MOA_EVAL_DATA") else []
    return [*chosen, Path.cwd().parent / "shared" / "eval", Path.cwd() / "shared" / "eval", repo.parent / "shared" / "eval"]


def resolve(data: str, data_dir: Path | None = None) -> tuple[Path, Preset | None]:
    """The path of ``data`` (a preset name, or a path) and its preset, if it is one.

    A preset name wins over a file or folder of the same name in the working directory; write
    ``./sst2`` for that one.
    """
    path = Path(data).expanduser()
    if data not in PRESETS:
        if not path.exists():
            names = ", ".join(PRESETS)
            raise UserError(ErrorCode.INPUT_FILE, f"data {data} does not exist; give a file or folder, or one of the public sets: {names}")
        return path, None
    preset = PRESETS[data]
    dirs = [data_dir] if data_dir is not None else default_data_dirs()
    for folder in dirs:
        if (folder / preset.path).exists():
            return folder / preset.path, preset
    tried = ", ".join(str(d) for d in dirs)
    raise UserError(
        ErrorCode.INPUT_FILE,
        f"the public data set {data!r} ({preset.path}) is not in {tried}; give its folder with --data-dir or MOA_EVAL_DATA, or a file path",
    )


def detect_format(path: Path) -> str:
    """The format of ``path`` from its name and first bytes (see the module docstring)."""
    if path.is_dir():
        if formats.is_cranfield(path):
            return "cranfield"
        files = sorted(path.glob("*.json"))
        if files and all(formats.looks_like_snips(p) for p in files):
            return "snips"
        raise UserError(
            ErrorCode.INPUT_FILE,
            f"cannot tell the format of the folder {path}: it has neither cran.all.1400/cran.qry/cranqrel (cranfield) nor SNIPS *.json files; "
            f"give a data file, or --format one of {', '.join(FORMATS)}",
        )
    suffix = path.suffix.lower()
    if suffix in _SUFFIX_FORMAT:
        return _SUFFIX_FORMAT[suffix]
    if suffix == ".jsonl":
        return "qa" if formats.looks_like_qa(path) else "jsonl"
    if suffix == ".json":
        if formats.looks_like_qa(path):
            return "qa"
        if formats.looks_like_snips(path):
            return "snips"
    raise UserError(
        ErrorCode.INPUT_FILE,
        f"unknown data format {suffix or '(no suffix)'!r} of {path.name}; use .tsv/.csv/.jsonl (text, label), .conll (BIO tags), "
        f"SNIPS .json, a question/answer .json, a Cranfield folder, or give --format one of {', '.join(FORMATS)}",
    )


def load_eval_set(
    data: str | Path,
    *,
    format: str | None = None,
    label_map: Mapping[str, str] | None = None,
    allowed: Sequence[str] | None = None,
    data_dir: Path | None = None,
    max_docs: int | None = None,
) -> EvalSet:
    """Load ``data`` (a path or a preset name) as an :class:`EvalSet`.

    Args:
        format: one of :data:`FORMATS` (default: detected).
        label_map: raw label → label (classification; a preset's map is the default), or entity
            type → type (CoNLL, e.g. ``corporation=organization``; a type mapped to ``O`` is dropped).
        allowed: the labels an agent knows (classification): others are an error listing them.
        max_docs: retrieval: index only the first ``max_docs`` documents (judgements on others are dropped).
    """
    path, preset = resolve(str(data), data_dir)
    if format is not None and format not in FORMATS:
        raise UserError(ErrorCode.BAD_CONFIG, f"unknown --format {format!r}; use one of {', '.join(FORMATS)}")
    fmt = format or (preset.format if preset else detect_format(path))
    name = next((n for n, p in PRESETS.items() if p is preset), path.stem or path.name)
    if fmt in ("tsv", "csv", "jsonl"):
        loaded = _classification(path, fmt, label_map if label_map is not None else (preset.label_map if preset else None), allowed)
    elif fmt == "conll":
        loaded = _conll(path, label_map)
    else:
        loaded = _LOADERS[fmt](path, max_docs)
    if not loaded.examples:
        raise UserError(ErrorCode.INPUT_FILE, f"{path} has no items to evaluate; give a file with at least one labelled item")
    return loaded.model_copy(update={"name": name, "format": fmt, "source": str(path)})


def _classification(path: Path, fmt: str, label_map: Mapping[str, str] | None, allowed: Sequence[str] | None) -> EvalSet:
    if path.is_dir():
        raise UserError(ErrorCode.INPUT_FILE, f"{path} is a folder; --format {fmt} reads one file")
    if fmt != "jsonl" and path.suffix.lower() not in (".tsv", ".txt", ".csv"):
        suffix = ".csv" if fmt == "csv" else ".tsv"
        raise UserError(ErrorCode.INPUT_FILE, f"--format {fmt} reads {suffix} files, not {path.name}; rename it or pick another --format")
    data = load_labelled(path, label_map=label_map, allowed=allowed, min_classes=1)
    examples = [Example(id=str(i), text=t, gold=lab) for i, (t, lab) in enumerate(zip(data.texts, data.labels, strict=True))]
    return EvalSet(name="", kind="classification", format=fmt, source=str(path), examples=examples, labels=data.classes)


def _conll(path: Path, label_map: Mapping[str, str] | None) -> EvalSet:
    sentences = load_sentences(path, label_map)  # entity types renamed by the map (one mapped to O is dropped)
    types = sorted({span[0] for _, spans in sentences for span in spans})
    examples = [Example(id=str(i), text=text, gold=spans, options={"types": types}) for i, (text, spans) in enumerate(sentences)]
    return EvalSet(name="", kind="entities", format="conll", source=str(path), examples=examples, labels=types)


def _snips(path: Path, _: int | None) -> EvalSet:
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    utterances = [u for f in files for u in formats.parse_snips(f)]
    slots_of: dict[str, set[str]] = {}
    for intent, _text, _spans, slots in utterances:
        slots_of.setdefault(intent, set()).update(s for s, _value in slots)
    examples = [
        Example(id=f"{intent}-{index}", text=text, gold=slots, options={"types": sorted(slots_of[intent]) or ["none"]})
        for intent, index, text, slots in utterances
    ]
    labels = sorted(set().union(*slots_of.values())) if slots_of else []
    return EvalSet(name="", kind="slots", format="snips", source=str(path), examples=examples, labels=labels)


def _cranfield(path: Path, max_docs: int | None) -> EvalSet:
    if not formats.is_cranfield(path):
        raise UserError(ErrorCode.INPUT_FILE, f"{path} is not a Cranfield folder: it needs cran.all.1400, cran.qry and cranqrel")
    if max_docs is not None and max_docs < 1:
        raise UserError(ErrorCode.BAD_CONFIG, f"the number of documents must be at least 1, got {max_docs}")
    docs = formats.cranfield_docs(path)[:max_docs]
    kept = {d.id for d in docs}
    queries = formats.cranfield_queries(path)
    qrels = formats.cranfield_qrels(path, len(queries))
    examples = []
    for number, text in enumerate(queries, start=1):
        gains = {doc: g for doc, g in qrels.get(number, {}).items() if doc in kept}
        if gains and text:  # a query with no relevant document among those indexed cannot be scored
            examples.append(Example(id=str(number), text=text, gold=gains))
    return EvalSet(name="", kind="retrieval", format="cranfield", source=str(path), examples=examples, corpus=docs)


def _qa(path: Path, _: int | None) -> EvalSet:
    rows = formats.parse_qa(path)
    seen: set[str] = set()
    examples = []
    for n, (qid, question, answers) in enumerate(rows, start=1):
        uid = qid if qid not in seen else f"{qid}#{n}"
        seen.add(uid)
        examples.append(Example(id=uid, text=question, gold=answers))
    return EvalSet(name="", kind="qa", format="qa", source=str(path), examples=examples)


_LOADERS = {"snips": _snips, "cranfield": _cranfield, "qa": _qa}

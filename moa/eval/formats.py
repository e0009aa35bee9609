"""Parsers of the evaluation formats that are not plain ``text, label`` rows.

* **CoNLL / BIO** (``.conll``, ``.bio``, ``.iob``; parsed by :mod:`moa.learning.conll`): one ``token<TAB>tag`` (or space-separated)
  per line, a blank line between sentences, tags ``B-type`` / ``I-type`` / ``O``. A sentence's
  text is its tokens joined by single spaces; each entity becomes ``[type, start, end]`` in
  character offsets of that text. An ``I-`` tag that does not continue an entity of its type
  starts one (the lenient conlleval reading).
* **SNIPS** (the ``nlu-benchmark`` JSON): ``{"Intent": [{"data": [{"text": ..., "entity": ...},
  ...]}, ...]}``; an utterance's text is its pieces concatenated; pieces with an ``entity`` are
  its slots ``[slot, value]``.
* **Cranfield** (SMART): ``cran.all.1400`` (``.I/.T/.A/.B/.W`` records), ``cran.qry``
  (``.I/.W``) and ``cranqrel`` (``query doc code``). The trap: ``cran.qry`` numbers its queries
  001..365 with gaps, but ``cranqrel`` numbers them 1..225 *in file order*; the ``.I`` ids of the
  queries are ignored and query ``n`` is the n-th of the file. Codes 1..4 are degrees of relevance
  (1 = most relevant; gain ``5 - code``); code -1 means not relevant.
* **Question answering**: a JSON list (or JSON lines) of objects with ``question`` and
  ``answer`` (a string or a list of accepted strings) and optionally ``id``.

Every problem is a :class:`~moa.errors.UserError` naming the file and the line or entry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moa.errors import ErrorCode, UserError
from moa.learning.conll import Problems as Problems  # CoNLL lives in moa.learning (moa train reads it too)
from moa.learning.conll import parse_conll as parse_conll
from moa.learning.conll import problems_error as _fail
from moa.learning.labelled import _read_text

@dataclass(frozen=True)
class Doc:
    """A document of a retrieval corpus."""

    id: str
    text: str


# --- SNIPS -------------------------------------------------------------------------------------


def _json(path: Path) -> Any:
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(ErrorCode.INPUT_FILE, f"{path.name} is not valid JSON ({exc.msg} on line {exc.lineno}); fix it") from exc


def parse_snips(path: Path) -> list[tuple[str, int, str, list[list[str]]]]:
    """Utterances of one SNIPS file as ``(intent, index, text, [[slot, value], ...])``."""
    data = _json(path)
    if not isinstance(data, dict) or not data or not all(isinstance(v, list) for v in data.values()):
        raise UserError(
            ErrorCode.INPUT_FILE, f"{path.name} is not SNIPS data: expected {{\"<Intent>\": [{{\"data\": [...]}}, ...]}}; check the file"
        )
    out: list[tuple[str, int, str, list[list[str]]]] = []
    problems: Problems = []
    for intent, utterances in data.items():
        for index, utterance in enumerate(utterances, start=1):
            pieces = utterance.get("data") if isinstance(utterance, dict) else None
            if not isinstance(pieces, list) or not all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in pieces):
                problems.append((f"{intent} utterance {index}", "expected a 'data' list of {\"text\": ...} pieces"))
                continue
            text = "".join(p["text"] for p in pieces)
            slots = [[str(p["entity"]), p["text"].strip()] for p in pieces if p.get("entity") and p["text"].strip()]
            if text.strip():
                out.append((intent, index, text.strip(), slots))
    if problems:
        raise _fail(path, problems, "each utterance needs a 'data' list of text pieces, some with an 'entity'")
    return out


def looks_like_snips(path: Path) -> bool:
    """A ``.json`` file whose top level maps intents to lists of ``{"data": [...]}`` objects."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return (
        isinstance(data, dict)
        and bool(data)
        and all(isinstance(v, list) and v and all(isinstance(u, dict) and isinstance(u.get("data"), list) for u in v) for v in data.values())
    )


# --- Cranfield ---------------------------------------------------------------------------------


def _records(path: Path) -> list[dict[str, str]]:
    """SMART records: ``.I <id>`` starts a record, ``.T/.A/.B/.W`` start its fields."""
    records: list[dict[str, str]] = []
    field = ""
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if line.startswith(".I"):
            records.append({"I": line[2:].strip()})
            field = ""
        elif len(line.rstrip()) == 2 and line[0] == "." and line[1] in "TABW":
            if not records:
                raise UserError(ErrorCode.INPUT_FILE, f"{path.name} line {number}: a {line.strip()} field before any .I record; check the file")
            field = line[1]
            records[-1][field] = ""
        elif records and field:
            records[-1][field] += line.strip() + " "
    return [{k: " ".join(v.split()) for k, v in r.items()} for r in records]


def cranfield_docs(folder: Path) -> list[Doc]:
    """The documents (title and body) by their ``.I`` id."""
    return [Doc(r["I"], f"{r.get('T', '')}\n{r.get('W', '')}".strip()) for r in _records(folder / "cran.all.1400")]


def cranfield_queries(folder: Path) -> list[str]:
    """Query texts in file order: query ``n`` of ``cranqrel`` is ``queries[n - 1]``."""
    return [r.get("W", "") for r in _records(folder / "cran.qry")]


def cranfield_qrels(folder: Path, n_queries: int) -> dict[int, dict[str, int]]:
    """``{query number: {doc id: gain}}`` with gain ``5 - code`` for codes 1..4; -1 is dropped."""
    path = folder / "cranqrel"
    qrels: dict[int, dict[str, int]] = {}
    problems: Problems = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            query, doc, code = (int(p) for p in parts)
        except ValueError:
            problems.append((f"line {number}", "expected three integers: query, document, relevance code"))
            continue
        if not 1 <= query <= n_queries:
            problems.append((f"line {number}", f"query {query} is not among the {n_queries} queries of cran.qry (numbered 1..{n_queries} in file order)"))
        elif 1 <= code <= 4:
            qrels.setdefault(query, {})[str(doc)] = 5 - code
        elif code not in (-1, 5):
            problems.append((f"line {number}", f"relevance code {code} is not 1..4 or -1"))
    if problems:
        raise _fail(path, problems, "each line is 'query document code'")
    return qrels


def is_cranfield(folder: Path) -> bool:
    return all((folder / name).is_file() for name in ("cran.all.1400", "cran.qry", "cranqrel"))


# --- question answering ------------------------------------------------------------------------


def parse_qa(path: Path) -> list[tuple[str, str, list[str]]]:
    """``(id, question, accepted answers)`` from a JSON list or JSON lines file."""
    if path.suffix.lower() == ".jsonl":
        rows: list[tuple[str, Any]] = []
        for number, line in enumerate(_read_text(path).splitlines(), start=1):
            if line.strip():
                try:
                    rows.append((f"line {number}", json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise UserError(ErrorCode.INPUT_FILE, f"{path.name} line {number} is not valid JSON ({exc.msg}); fix it") from exc
    else:
        data = _json(path)
        if not isinstance(data, list):
            raise UserError(ErrorCode.INPUT_FILE, f"{path.name} is not a JSON list of {{question, answer}} objects; check the file")
        rows = [(f"entry {i}", obj) for i, obj in enumerate(data, start=1)]
    out: list[tuple[str, str, list[str]]] = []
    problems: Problems = []
    for position, (where, obj) in enumerate(rows, start=1):
        if not isinstance(obj, dict) or not isinstance(obj.get("question"), str) or not obj["question"].strip():
            problems.append((where, "no 'question' text"))
            continue
        answer = obj.get("answer", obj.get("answers"))
        answers = [answer] if isinstance(answer, str | int | float) else answer
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str | int | float) for a in answers):
            problems.append((where, "no 'answer' (a string or a list of strings)"))
            continue
        out.append((str(obj.get("id", position)), obj["question"].strip(), [str(a) for a in answers]))
    if problems:
        raise _fail(path, problems, "each entry needs a 'question' and an 'answer'")
    return out


def looks_like_qa(path: Path) -> bool:
    """A JSON/JSONL file whose first object has a ``question`` key."""
    try:
        head = path.read_text(encoding="utf-8-sig", errors="replace")[:4000]
    except OSError:
        return False
    return '"question"' in head

"""CoNLL / BIO files: one ``token<TAB>tag`` (or space-separated) per line, a blank line between
sentences, tags ``B-type`` / ``I-type`` / ``O``.

A sentence's text is its tokens joined by single spaces; each entity becomes ``[type, start, end]``
in character offsets of that text. An ``I-`` tag that does not continue an entity of its type
starts one (the lenient conlleval reading). Used by ``moa eval`` (:mod:`moa.eval.formats`) and by
``moa train extraction`` (:mod:`moa.learning.tagger`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moa.errors import ErrorCode, UserError
from moa.learning.labelled import MAX_EXAMPLES, _read_text

Problems = list[tuple[str, str]]


def problems_error(path: Path, problems: Problems, fix: str) -> UserError:
    shown = "; ".join(f"{where}: {why}" for where, why in problems[:MAX_EXAMPLES])
    more = f"; and {len(problems) - MAX_EXAMPLES} more" if len(problems) > MAX_EXAMPLES else ""
    return UserError(ErrorCode.INPUT_FILE, f"{len(problems)} problem(s) in {path.name}: {shown}{more}; {fix}")


def _close(spans: list[list[Any]], current: list[Any] | None) -> None:
    if current is not None:
        spans.append(current)


def parse_conll(path: Path) -> list[tuple[str, list[list[Any]]]]:
    """Sentences as ``(text, [[type, start, end], ...])`` (see the module docstring)."""
    sentences: list[tuple[str, list[list[Any]]]] = []
    problems: Problems = []
    tokens: list[str] = []
    spans: list[list[Any]] = []
    current: list[Any] | None = None
    offset = 0

    def finish() -> None:
        nonlocal tokens, spans, current, offset
        _close(spans, current)
        if tokens:
            sentences.append((" ".join(tokens), spans))
        tokens, spans, current, offset = [], [], None, 0

    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip() or line.startswith("-DOCSTART-"):
            finish()
            continue
        cells = line.split("\t") if "\t" in line else line.split()
        if len(cells) < 2 or not cells[0].strip():
            problems.append((f"line {number}", "expected a token and a tag separated by a tab"))
            continue
        token, tag = cells[0].strip(), cells[-1].strip()
        prefix, _, kind = tag.partition("-")
        if tag != "O" and (prefix not in ("B", "I") or not kind):
            problems.append((f"line {number}", f"tag {tag!r} is not O, B-<type> or I-<type>"))
            continue
        start = offset + (1 if tokens else 0)
        end = start + len(token)
        if tag == "O":
            _close(spans, current)
            current = None
        elif prefix == "I" and current is not None and current[0] == kind:
            current[2] = end
        else:
            _close(spans, current)
            current = [kind, start, end]
        tokens.append(token)
        offset = end
    finish()
    if problems:
        raise problems_error(path, problems, "write one 'token<TAB>BIO-tag' per line and a blank line between sentences")
    return sentences

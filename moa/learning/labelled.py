"""Labelled classification data: reading ``text, label`` files for training and evaluation.

Formats, chosen by suffix:

* ``.tsv`` / ``.txt``: one row per line, cells separated by tabs (no quoting, so quotes in
  a text stay as they are); ``.csv``: comma-separated, read with the :mod:`csv` module
  (quoted cells may span lines).
* ``.jsonl``: one JSON object per line, keys ``text`` and ``label`` (or the names given).

The first row of a TSV/CSV file is a header when one of its cells is a known column name
(case-insensitive): ``text, sentence, sms, message, review, content, document`` for the
text and ``label, class, category, sentiment, target`` for the label. Columns are chosen
by explicit name or 0-based index, else by header names, else, for two columns, the one
with fewer distinct values (at most 20) is the label, so ``sentence<TAB>label`` and
``label<TAB>text`` files both work without options.

Raw labels go through ``label_map`` (e.g. ``{"1": "positive", "0": "negative"}``); labels
not in the map stay as they are, and ``allowed`` (an agent's labels) rejects the rest with
a message listing them and a ``--label-map`` to fix them. Every problem is a
:class:`~moa.errors.UserError` naming the file and the 1-based line numbers.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, model_validator

from moa.errors import ErrorCode, UserError
from moa.logs import get_logger

log = get_logger(__name__)

SUPPORTED_SUFFIXES = (".tsv", ".txt", ".csv", ".jsonl")
TEXT_NAMES = ("text", "sentence", "sms", "message", "review", "content", "document")
LABEL_NAMES = ("label", "class", "category", "sentiment", "target")
#: A column with more distinct values than this is not taken for the label by the heuristic.
MAX_HEURISTIC_LABELS = 20
#: How many examples an error message lists before "and N more".
MAX_EXAMPLES = 5

Column = str | int | None


class LabelledSet(BaseModel):
    """Texts with one label each, in file order; ``source`` says where they came from."""

    texts: list[str]
    labels: list[str]
    source: str

    @model_validator(mode="after")
    def _same_length(self) -> LabelledSet:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")
        return self

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def classes(self) -> list[str]:
        """The distinct labels, sorted."""
        return sorted(set(self.labels))

    def counts(self) -> dict[str, int]:
        """How many items each class has, by class name (sorted)."""
        counts = Counter(self.labels)
        return {c: counts[c] for c in sorted(counts)}

    def subset(self, indices: Sequence[int], source: str | None = None) -> LabelledSet:
        """The items at ``indices`` (in that order)."""
        return LabelledSet(
            texts=[self.texts[i] for i in indices],
            labels=[self.labels[i] for i in indices],
            source=self.source if source is None else source,
        )

    def split(self, test_fraction: float, seed: int) -> tuple[LabelledSet, LabelledSet]:
        """A stratified ``(train, test)`` split; the same ``seed`` gives the same split.

        Each class contributes about ``test_fraction`` of its items to the test set (largest
        remainder rounding), and a class of two or more items has at least one on each side.
        Both parts keep file order.
        """
        if not 0 < test_fraction < 1:
            raise UserError(ErrorCode.BAD_CONFIG, f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
        if len(self) < 2:
            raise UserError(ErrorCode.BAD_CONFIG, f"{self.source} has {len(self)} item(s); a split needs at least 2")
        test = _stratified_pick(self.labels, round(len(self) * test_fraction), seed, both_sides=True)
        chosen = set(test)
        train = [i for i in range(len(self)) if i not in chosen]
        return self.subset(train, f"{self.source}:train"), self.subset(sorted(test), f"{self.source}:test")

    def sample(self, n: int, seed: int) -> LabelledSet:
        """``n`` items drawn without replacement, stratified by class; deterministic for a ``seed``.

        Returns every item when ``n`` is at least the size of the set. Keeps file order.
        """
        if n < 1:
            raise UserError(ErrorCode.BAD_CONFIG, f"sample size must be at least 1, got {n}")
        if n >= len(self):
            return self.subset(range(len(self)))
        picked = _stratified_pick(self.labels, n, seed, both_sides=False)
        return self.subset(sorted(picked), f"{self.source}:sample{n}")


def _stratified_pick(labels: Sequence[str], n_pick: int, seed: int, *, both_sides: bool) -> list[int]:
    """Indices of ``n_pick`` items, each class represented in proportion (largest remainder).

    With ``both_sides``, a class of two or more items gets at least one picked and one left.
    """
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    classes = sorted(by_class)
    total = len(labels)
    quotas = {c: len(by_class[c]) * n_pick / total for c in classes}
    counts = {c: int(quotas[c]) for c in classes}
    leftover = n_pick - sum(counts.values())
    for c in sorted(classes, key=lambda c: (-(quotas[c] - counts[c]), c))[:leftover]:
        counts[c] += 1
    picked: list[int] = []
    for c in classes:
        members = by_class[c]
        k = counts[c]
        if both_sides and len(members) >= 2:
            k = min(max(k, 1), len(members) - 1)
        order = rng.permutation(len(members))
        picked.extend(members[j] for j in order[:k])
    return picked


def parse_label_map(text: str) -> dict[str, str]:
    """Parse ``"0=negative,1=positive"`` (the ``--label-map`` syntax) into a dict.

    Pairs are separated by commas, raw and agent label by ``=``; spaces around them are ignored.
    """
    usage = "write it as raw=label pairs separated by commas, e.g. --label-map 0=negative,1=positive"
    result: dict[str, str] = {}
    if not text.strip():
        raise UserError(ErrorCode.BAD_CONFIG, f"the label map is empty; {usage}")
    for part in text.split(","):
        raw, sep, label = part.partition("=")
        raw, label = raw.strip(), label.strip()
        if not sep or not raw or not label or "=" in label:
            raise UserError(ErrorCode.BAD_CONFIG, f"cannot read {part.strip()!r} in the label map {text!r}; {usage}")
        if raw in result and result[raw] != label:
            raise UserError(
                ErrorCode.BAD_CONFIG, f"the label map {text!r} maps {raw!r} twice ({result[raw]!r} and {label!r}); keep one"
            )
        result[raw] = label
    return result


def load_labelled(
    path: Path,
    *,
    text_column: Column = None,
    label_column: Column = None,
    label_map: Mapping[str, str] | None = None,
    allowed: Sequence[str] | None = None,
    min_classes: int = 2,
) -> LabelledSet:
    """Read a labelled file (TSV, CSV, TXT or JSONL; see the module docstring)."""
    path = Path(path)
    if min_classes < 1:
        raise UserError(ErrorCode.BAD_CONFIG, f"min_classes must be at least 1, got {min_classes}")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise UserError(
            ErrorCode.INPUT_FILE,
            f"cannot read labelled data from {path}: unknown format {suffix or '(no suffix)'!r}; "
            f"use one of {', '.join(SUPPORTED_SUFFIXES)} (tab- or comma-separated text,label rows, or JSON lines)",
        )
    content = _read_text(path)
    if suffix == ".jsonl":
        rows = _jsonl_rows(path, content, text_column, label_column)
    else:
        rows = _table_rows(path, content, "," if suffix == ".csv" else "\t", text_column, label_column)
    if not rows:
        raise UserError(ErrorCode.INPUT_FILE, f"{path.name} has no labelled rows; give a file with one text and label per row")
    mapping = dict(label_map or {})
    texts = [text for _, text, _ in rows]
    labels = [mapping.get(raw, raw) for _, _, raw in rows]
    if allowed is not None:
        _check_allowed(path, labels, list(allowed))
    data = LabelledSet(texts=texts, labels=labels, source=str(path))
    _check_classes(path, data, min_classes)
    log.debug("labelled_loaded", source=str(path), n=len(data), classes=data.counts())
    return data


# --- reading ----------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    if not path.exists():
        raise UserError(ErrorCode.INPUT_FILE, f"labelled data file {path} does not exist; check the path")
    if not path.is_file():
        raise UserError(ErrorCode.INPUT_FILE, f"{path} is not a file; give a .tsv, .csv, .txt or .jsonl file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(ErrorCode.INPUT_FILE, f"cannot read {path}: {exc.strerror or exc}; check its permissions") from exc
    if b"\x00" in data[:8192]:
        raise UserError(ErrorCode.INPUT_FILE, f"{path} is binary, not text; give a UTF-8 text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserError(
            ErrorCode.INPUT_FILE, f"{path} is not UTF-8 text ({exc.reason} on line {line}); convert it to UTF-8"
        ) from exc


def _malformed(path: Path, problems: list[tuple[int, str]]) -> UserError:
    shown = "; ".join(f"line {line}: {why}" for line, why in problems[:MAX_EXAMPLES])
    more = f"; and {len(problems) - MAX_EXAMPLES} more" if len(problems) > MAX_EXAMPLES else ""
    rows = "row" if len(problems) == 1 else "rows"
    return UserError(
        ErrorCode.INPUT_FILE,
        f"{len(problems)} malformed {rows} in {path.name}: {shown}{more}; fix or remove them",
        details={"lines": [line for line, _ in problems]},
    )


def _split_rows(content: str, delimiter: str) -> list[tuple[int, list[str]]]:
    """Non-blank rows with the 1-based line each starts on."""
    if delimiter == "\t":
        return [(i, line.split("\t")) for i, line in enumerate(content.splitlines(), start=1) if line.strip()]
    reader = csv.reader(io.StringIO(content, newline=""))
    rows: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for cells in reader:
            if any(c.strip() for c in cells):
                rows.append((start, cells))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise UserError(ErrorCode.INPUT_FILE, f"cannot parse CSV on line {reader.line_num}: {exc}; check the quoting") from exc
    return rows


def _is_header(cells: Sequence[str], text_column: Column, label_column: Column) -> bool:
    names = {c.strip().lower() for c in cells}
    explicit = {c.lower() for c in (text_column, label_column) if isinstance(c, str)}
    return bool(names & (set(TEXT_NAMES) | set(LABEL_NAMES) | explicit))


def _find(header: Sequence[str], name: str) -> int | None:
    lowered = [h.strip().lower() for h in header]
    return lowered.index(name.lower()) if name.lower() in lowered else None


def _table_rows(
    path: Path, content: str, delimiter: str, text_column: Column, label_column: Column
) -> list[tuple[int, str, str]]:
    rows = _split_rows(content, delimiter)
    if not rows:
        return []
    header: list[str] | None = None
    if _is_header(rows[0][1], text_column, label_column):
        header = [h.strip() for h in rows[0][1]]
        rows = rows[1:]
        if not rows:
            return []
    width = len(header) if header is not None else Counter(len(cells) for _, cells in rows).most_common(1)[0][0]
    problems = [(line, f"{len(cells)} column(s), expected {width}") for line, cells in rows if len(cells) != width]
    good = [(line, cells) for line, cells in rows if len(cells) == width]
    if width < 2:
        raise UserError(
            ErrorCode.INPUT_FILE,
            f"{path.name} has one column; each row needs a text and a label separated by "
            f"{'a tab' if delimiter == chr(9) else 'a comma'}",
        )
    text_idx, label_idx = _choose_columns(path, header, width, good, text_column, label_column)
    out: list[tuple[int, str, str]] = []
    empty: list[int] = []
    for line, cells in good:
        text, label = cells[text_idx].strip(), cells[label_idx].strip()
        if not text:
            empty.append(line)
        elif not label:
            problems.append((line, "empty label"))
        else:
            out.append((line, text, label))
    if problems:
        raise _malformed(path, sorted(problems))
    _skip_empty(path, empty)
    return out


def _skip_empty(path: Path, lines: list[int]) -> None:
    """Rows whose text is empty have nothing to classify or learn from: they are left out and
    named (public sets have a few, e.g. TweetEval hate), never a reason to refuse the file."""
    if lines:
        shown = ", ".join(str(n) for n in lines[:MAX_EXAMPLES]) + (f" and {len(lines) - MAX_EXAMPLES} more" if len(lines) > MAX_EXAMPLES else "")
        log.warning("labelled_rows_skipped", file=path.name, rows=len(lines), reason="empty text", lines=shown)


def _column_index(path: Path, header: list[str] | None, width: int, column: str | int, what: str) -> int:
    if isinstance(column, int):
        if not 0 <= column < width:
            raise UserError(
                ErrorCode.BAD_CONFIG, f"{what} column {column} is out of range: {path.name} has columns 0..{width - 1}"
            )
        return column
    found = _find(header, column) if header is not None else None
    if found is None:
        where = f"its header has {', '.join(repr(h) for h in header)}" if header else "it has no header line"
        raise UserError(
            ErrorCode.BAD_CONFIG,
            f"{what} column {column!r} is not in {path.name}: {where}; give a column name from the header or a 0-based index",
        )
    return found


def _choose_columns(
    path: Path,
    header: list[str] | None,
    width: int,
    rows: list[tuple[int, list[str]]],
    text_column: Column,
    label_column: Column,
) -> tuple[int, int]:
    text_idx = _column_index(path, header, width, text_column, "text") if text_column is not None else None
    label_idx = _column_index(path, header, width, label_column, "label") if label_column is not None else None
    if header is not None:
        if text_idx is None:
            text_idx = next((i for n in TEXT_NAMES if (i := _find(header, n)) is not None and i != label_idx), None)
        if label_idx is None:
            label_idx = next((i for n in LABEL_NAMES if (i := _find(header, n)) is not None and i != text_idx), None)
    if width == 2 and text_idx is None and label_idx is not None:
        text_idx = 1 - label_idx
    elif width == 2 and label_idx is None and text_idx is not None:
        label_idx = 1 - text_idx
    if text_idx is None and label_idx is None and width == 2:
        distinct = [len({cells[i].strip() for _, cells in rows}) for i in range(2)]
        mean_len = [sum(len(cells[i]) for _, cells in rows) / max(len(rows), 1) for i in range(2)]
        label_idx = min(range(2), key=lambda i: (distinct[i], mean_len[i]))
        if distinct[label_idx] > MAX_HEURISTIC_LABELS or distinct[0] == distinct[1] and mean_len[0] == mean_len[1]:
            raise UserError(
                ErrorCode.INPUT_FILE,
                f"cannot tell which column of {path.name} holds the labels ({distinct[0]} and {distinct[1]} distinct "
                "values); add a header line such as 'text<TAB>label' or name the text and label columns",
            )
        text_idx = 1 - label_idx
    if text_idx is None or label_idx is None:
        columns = f"its header has {', '.join(repr(h) for h in header)}" if header else f"it has {width} columns and no header"
        raise UserError(
            ErrorCode.INPUT_FILE,
            f"cannot tell the text and label columns of {path.name}: {columns}; "
            f"name them (text: {', '.join(TEXT_NAMES)}; label: {', '.join(LABEL_NAMES)}) or give the column names or indices",
        )
    if text_idx == label_idx:
        raise UserError(ErrorCode.BAD_CONFIG, f"the text and label columns of {path.name} are the same column ({text_idx}); choose two")
    return text_idx, label_idx


def _jsonl_key(first: Mapping[str, Any] | None, column: Column, default: str, names: Sequence[str], what: str) -> str:
    if isinstance(column, int):
        raise UserError(ErrorCode.BAD_CONFIG, f"JSONL rows are objects: give the {what} key by name, not index {column}")
    if column is not None:
        return column
    if first is not None and default not in first:
        lowered = {k.lower(): k for k in first}
        for name in names:
            if name in lowered:
                return lowered[name]
    return default


def _jsonl_rows(path: Path, content: str, text_column: Column, label_column: Column) -> list[tuple[int, str, str]]:
    parsed: list[tuple[int, Any]] = []
    problems: list[tuple[int, str]] = []
    for line_no, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            parsed.append((line_no, json.loads(line)))
        except json.JSONDecodeError as exc:
            problems.append((line_no, f"invalid JSON ({exc.msg})"))
    first = next((obj for _, obj in parsed if isinstance(obj, dict)), None)
    text_key = _jsonl_key(first, text_column, "text", TEXT_NAMES, "text")
    label_key = _jsonl_key(first, label_column, "label", LABEL_NAMES, "label")
    out: list[tuple[int, str, str]] = []
    empty: list[int] = []
    for line_no, obj in parsed:
        if not isinstance(obj, dict):
            problems.append((line_no, f"a JSON {type(obj).__name__}, not an object"))
            continue
        missing = [k for k in (text_key, label_key) if k not in obj]
        if missing:
            problems.append((line_no, f"no {' or '.join(repr(k) for k in missing)} key"))
            continue
        text, label = obj[text_key], obj[label_key]
        if text is None or isinstance(text, str) and not text.strip():
            empty.append(line_no)
            continue
        if not isinstance(text, str):
            problems.append((line_no, "text is not a string"))
            continue
        if isinstance(label, bool):
            label = "true" if label else "false"
        if not isinstance(label, str | int | float) or not str(label).strip():
            problems.append((line_no, "empty label" if label in (None, "") else "label is not a string or number"))
            continue
        out.append((line_no, text.strip(), str(label).strip()))
    if problems:
        raise _malformed(path, sorted(problems))
    _skip_empty(path, empty)
    return out


# --- label checks -----------------------------------------------------------------------------


def _guess_label(raw: str, allowed: Sequence[str]) -> str | None:
    """A plausible agent label for ``raw``: same word ignoring case, a prefix, or 0/1 for negative/positive."""
    low = raw.lower()
    for label in allowed:
        if label.lower() == low:
            return label
    prefixed = [label for label in allowed if label.lower().startswith(low) or low.startswith(label.lower())]
    if len(prefixed) == 1:
        return prefixed[0]
    binary = {"0": "negative", "-1": "negative", "1": "positive", "false": "negative", "true": "positive"}
    if low in binary and binary[low] in allowed:
        return binary[low]
    return None


def _check_allowed(path: Path, labels: list[str], allowed: list[str]) -> None:
    known = set(allowed)
    unknown = Counter(label for label in labels if label not in known)
    if not unknown:
        return
    names = sorted(unknown)
    listed = ", ".join(f"{name!r} ({unknown[name]})" for name in names[:MAX_EXAMPLES])
    more = f" and {len(names) - MAX_EXAMPLES} more" if len(names) > MAX_EXAMPLES else ""
    example = ",".join(f"{name}={_guess_label(name, allowed) or '<label>'}" for name in names[:MAX_EXAMPLES])
    word = "label" if len(names) == 1 else "labels"
    raise UserError(
        ErrorCode.INPUT_FILE,
        f"unknown {word} {listed}{more} in {path.name}; the agent's labels are {', '.join(allowed)}; "
        f"map them, e.g. --label-map {example}",
        details={"unknown_labels": {name: unknown[name] for name in names}},
    )


def _check_classes(path: Path, data: LabelledSet, min_classes: int) -> None:
    classes = data.classes
    if len(classes) >= min_classes:
        return
    if len(classes) == 1:
        message = f"only one class {classes[0]!r} in {path.name}: a classifier needs at least {_count_word(min_classes)}"
    else:
        names = ", ".join(repr(c) for c in classes)
        message = f"only {len(classes)} classes ({names}) in {path.name}: this needs at least {min_classes}"
    raise UserError(ErrorCode.INPUT_FILE, f"{message}; add labelled examples of the other classes")


def _count_word(n: int) -> str:
    return {2: "two", 3: "three", 4: "four"}.get(n, str(n))

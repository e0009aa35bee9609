"""moa.learning.labelled: reading labelled TSV/CSV/JSONL files, label maps, splits and samples."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from support.eval_data import EVAL, needs_eval

from moa.errors import ErrorCode, UserError
from moa.learning.labelled import LabelledSet, load_labelled, parse_label_map


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error(path: Path, **kwargs: object) -> UserError:
    with pytest.raises(UserError) as info:
        load_labelled(path, **kwargs)  # type: ignore[arg-type]
    return info.value


# --- formats and columns ----------------------------------------------------------------------


def test_tsv_with_sentence_label_header(tmp_path: Path) -> None:
    path = write(tmp_path, "s.tsv", "sentence\tlabel\na fine film \t1\nawful\t0\nsuperb\t1\n")
    data = load_labelled(path, label_map={"1": "positive", "0": "negative"})
    assert data.texts == ["a fine film", "awful", "superb"]
    assert data.labels == ["positive", "negative", "positive"]
    assert data.classes == ["negative", "positive"]
    assert len(data) == 3
    assert data.source == str(path)


def test_tsv_with_label_first_header_in_any_case(tmp_path: Path) -> None:
    path = write(tmp_path, "spam.tsv", "Label\tSMS\nham\tsee you at 5\nspam\tWIN a prize \"now\"\nham\tok\n")
    data = load_labelled(path)
    assert data.texts == ["see you at 5", 'WIN a prize "now"', "ok"]
    assert data.labels == ["ham", "spam", "ham"]


@pytest.mark.parametrize("label_first", [False, True])
def test_headerless_two_columns_label_is_the_column_with_fewer_values(tmp_path: Path, label_first: bool) -> None:
    rows = [(f"message number {i} with words", "spam" if i % 3 == 0 else "ham") for i in range(12)]
    lines = [f"{label}\t{text}" if label_first else f"{text}\t{label}" for text, label in rows]
    data = load_labelled(write(tmp_path, "d.tsv", "\n".join(lines) + "\n"))
    assert data.texts == [text for text, _ in rows]
    assert data.labels == [label for _, label in rows]


def test_headerless_tie_is_broken_by_length(tmp_path: Path) -> None:
    # two rows, two distinct values in each column: the shorter cells are the labels
    data = load_labelled(write(tmp_path, "d.txt", "a long sentence here\tpos\nanother long sentence\tneg\n"))
    assert data.labels == ["pos", "neg"]


def test_headerless_columns_that_cannot_be_told_apart(tmp_path: Path) -> None:
    lines = [f"first text {i}\tsecond text {i}" for i in range(30)]
    err = error(write(tmp_path, "d.tsv", "\n".join(lines)))
    assert err.code == ErrorCode.INPUT_FILE
    assert "cannot tell which column of d.tsv holds the labels" in err.message
    assert "header" in err.message


def test_explicit_columns_by_name_and_index(tmp_path: Path) -> None:
    path = write(tmp_path, "multi.tsv", "id\tbody\tverdict\n1\thello there\tgood\n2\tgo away\tbad\n")
    by_name = load_labelled(path, text_column="body", label_column="VERDICT")
    assert by_name.texts == ["hello there", "go away"]
    assert by_name.labels == ["good", "bad"]
    headerless = write(tmp_path, "multi2.tsv", "1\thello there\tgood\n2\tgo away\tbad\n")
    by_index = load_labelled(headerless, text_column=1, label_column=2)
    assert by_index.texts == by_name.texts
    assert by_index.labels == by_name.labels


def test_one_explicit_column_of_two_implies_the_other(tmp_path: Path) -> None:
    path = write(tmp_path, "d.tsv", "good\thello there\nbad\tgo away\n")
    data = load_labelled(path, label_column=0)
    assert data.labels == ["good", "bad"]
    assert data.texts == ["hello there", "go away"]


def test_bad_explicit_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "d.tsv", "text\tlabel\nhi\ta\nho\tb\n")
    err = error(path, text_column=5)
    assert err.code == ErrorCode.BAD_CONFIG and "out of range" in err.message and "0..1" in err.message
    err = error(path, label_column="verdict")
    assert err.code == ErrorCode.BAD_CONFIG and "'verdict' is not in d.tsv" in err.message and "'text'" in err.message
    err = error(path, text_column=0, label_column=0)
    assert err.code == ErrorCode.BAD_CONFIG and "same column" in err.message


def test_three_columns_without_names_asks_for_them(tmp_path: Path) -> None:
    err = error(write(tmp_path, "d.tsv", "1\thello\tgood\n2\tbye\tbad\n"))
    assert "cannot tell the text and label columns of d.tsv" in err.message
    assert "3 columns and no header" in err.message


def test_csv_with_quotes_spanning_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", 'review,sentiment\n"great, really great",pos\n"line one\nline two",neg\nmeh,neg\n')
    data = load_labelled(path)
    assert data.texts == ["great, really great", "line one\nline two", "meh"]
    assert data.labels == ["pos", "neg", "neg"]


def test_csv_line_numbers_count_physical_lines_and_rows_without_text_are_skipped(tmp_path: Path) -> None:
    """A row with no text has nothing to classify: it is left out and named by its physical line
    (public sets have a few: TweetEval hate), never a reason to refuse the whole file."""
    path = write(tmp_path, "d.csv", 'text,label\n"a\nb",x\n,y\nok,z\n')
    with capture_logs() as logs:
        data = load_labelled(path)
    assert data.texts == ["a\nb", "ok"] and data.labels == ["x", "z"]
    (skipped,) = [e for e in logs if e["event"] == "labelled_rows_skipped"]
    assert skipped["rows"] == 1 and skipped["lines"] == "4" and skipped["reason"] == "empty text"


def test_utf8_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "bom.tsv"
    path.write_bytes("\ufefftext\tlabel\r\ncafé\tyes\r\nthé\tno\r\n".encode())
    data = load_labelled(path)
    assert data.texts == ["café", "thé"]
    assert data.labels == ["yes", "no"]


def test_jsonl(tmp_path: Path) -> None:
    lines = [{"text": "good stuff", "label": "pos"}, {"text": "bad stuff", "label": "neg", "extra": 1}, {"text": "x", "label": 1}]
    data = load_labelled(write(tmp_path, "d.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n"))
    assert data.texts == ["good stuff", "bad stuff", "x"]
    assert data.labels == ["pos", "neg", "1"]


def test_jsonl_known_and_explicit_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "d.jsonl", '{"Sentence": "hi", "Sentiment": "pos"}\n{"Sentence": "ho", "Sentiment": "neg"}\n')
    assert load_labelled(path).labels == ["pos", "neg"]
    path = write(tmp_path, "e.jsonl", '{"body": "hi", "y": true}\n{"body": "ho", "y": false}\n')
    data = load_labelled(path, text_column="body", label_column="y")
    assert data.labels == ["true", "false"]
    err = error(path, text_column=0)
    assert err.code == ErrorCode.BAD_CONFIG and "by name" in err.message


def test_jsonl_malformed_lines_are_listed(tmp_path: Path) -> None:
    text = '{"text": "a", "label": "x"}\n{not json}\n[1, 2]\n{"text": "b"}\n{"text": "  ", "label": "y"}\n{"text": 3, "label": "y"}\n'
    err = error(write(tmp_path, "d.jsonl", text))
    assert err.code == ErrorCode.INPUT_FILE
    assert err.message.startswith("4 malformed rows in d.jsonl: line 2: invalid JSON")
    assert "line 3: a JSON list, not an object" in err.message
    assert "line 4: no 'label' key" in err.message
    assert "line 5" not in err.message  # no text: skipped, not malformed
    assert "line 6: text is not a string" in err.message
    assert err.details["lines"] == [2, 3, 4, 6]


# --- malformed tables, empty files, bad files -------------------------------------------------


def test_malformed_rows_name_lines_and_cap_examples(tmp_path: Path) -> None:
    lines = ["text\tlabel"] + [f"row {i}\tpos" for i in range(10)]
    bad = {3: "no tab here", 5: "a\tb\tc", 7: "\tneg", 8: "x\t ", 9: "only", 10: "only", 11: "only"}
    for line_no, row in bad.items():
        lines[line_no - 1] = row
    err = error(write(tmp_path, "d.tsv", "\n".join(lines) + "\n"))
    assert err.code == ErrorCode.INPUT_FILE
    assert err.message.startswith("6 malformed rows in d.tsv: line 3: 1 column(s), expected 2; line 5: 3 column(s), expected 2")
    assert "line 7" not in err.message and "line 8: empty label" in err.message  # no text: skipped
    assert "and 1 more" in err.message
    assert "fix or remove them" in err.message
    assert err.details["lines"] == sorted(set(bad) - {7})


def test_single_malformed_row(tmp_path: Path) -> None:
    err = error(write(tmp_path, "d.tsv", "text\tlabel\nhello\tpos\nbroken\nbye\tneg\n"))
    assert err.message.startswith("1 malformed row in d.tsv: line 3: 1 column(s), expected 2")
    assert "more" not in err.message


@pytest.mark.parametrize("content", ["", "\n\n  \n", "text\tlabel\n"])
def test_no_rows(tmp_path: Path, content: str) -> None:
    err = error(write(tmp_path, "empty.tsv", content))
    assert err.code == ErrorCode.INPUT_FILE
    assert "empty.tsv has no labelled rows" in err.message


def test_one_column_file(tmp_path: Path) -> None:
    err = error(write(tmp_path, "d.txt", "just text\nmore text\n"))
    assert "has one column" in err.message and "a tab" in err.message


def test_missing_file_directory_binary_and_non_utf8(tmp_path: Path) -> None:
    err = error(tmp_path / "nope.tsv")
    assert err.code == ErrorCode.INPUT_FILE and "does not exist" in err.message and "nope.tsv" in err.message
    (tmp_path / "dir.tsv").mkdir()
    assert "is not a file" in error(tmp_path / "dir.tsv").message
    (tmp_path / "bin.tsv").write_bytes(b"\x00\x01\x02")
    assert "binary" in error(tmp_path / "bin.tsv").message
    (tmp_path / "latin.tsv").write_bytes("text\tlabel\nok\ta\ncaf\xe9\tb\n".encode("latin-1"))
    err = error(tmp_path / "latin.tsv")
    assert "not UTF-8" in err.message and "line 3" in err.message and "convert it to UTF-8" in err.message


def test_unknown_suffix_lists_the_supported_ones(tmp_path: Path) -> None:
    err = error(write(tmp_path, "d.xlsx", "whatever"))
    assert err.code == ErrorCode.INPUT_FILE
    assert "unknown format '.xlsx'" in err.message
    for suffix in (".tsv", ".txt", ".csv", ".jsonl"):
        assert suffix in err.message


# --- labels -----------------------------------------------------------------------------------


def test_one_class(tmp_path: Path) -> None:
    err = error(write(tmp_path, "pos.tsv", "text\tlabel\ngood\tpositive\ngreat\tpositive\n"))
    assert err.code == ErrorCode.INPUT_FILE
    assert "only one class 'positive' in pos.tsv: a classifier needs at least two" in err.message
    assert load_labelled(tmp_path / "pos.tsv", min_classes=1).classes == ["positive"]


def test_min_classes_above_two(tmp_path: Path) -> None:
    err = error(write(tmp_path, "d.tsv", "text\tlabel\na\tx\nb\ty\n"), min_classes=3)
    assert "only 2 classes ('x', 'y') in d.tsv: this needs at least 3" in err.message


def test_unknown_labels_are_listed_with_counts_and_a_label_map(tmp_path: Path) -> None:
    rows = ["sentence\tlabel"] + ["good\t1"] * 4 + ["bad\t0"] * 3
    path = write(tmp_path, "sst.tsv", "\n".join(rows))
    err = error(path, allowed=["negative", "positive", "neutral"])
    assert err.code == ErrorCode.INPUT_FILE
    assert err.message == (
        "unknown labels '0' (3), '1' (4) in sst.tsv; the agent's labels are negative, positive, neutral; "
        "map them, e.g. --label-map 0=negative,1=positive"
    )
    assert err.details["unknown_labels"] == {"0": 3, "1": 4}
    mapped = load_labelled(path, allowed=["negative", "positive", "neutral"], label_map=parse_label_map("0=negative,1=positive"))
    assert Counter(mapped.labels) == {"positive": 4, "negative": 3}


def test_unknown_label_suggestions(tmp_path: Path) -> None:
    path = write(tmp_path, "d.tsv", "text\tlabel\na\tPositive\nb\tneg\nc\tham\nd\tspam\n")
    err = error(path, allowed=["negative", "positive", "spam"])
    assert "unknown labels 'Positive' (1), 'ham' (1), 'neg' (1) in d.tsv" in err.message
    assert "--label-map Positive=positive,ham=<label>,neg=negative" in err.message


def test_partial_label_map_keeps_other_labels(tmp_path: Path) -> None:
    path = write(tmp_path, "d.tsv", "text\tlabel\na\t1\nb\tneutral\nc\t0\n")
    data = load_labelled(path, label_map={"1": "positive", "0": "negative"}, allowed=["negative", "neutral", "positive"])
    assert data.labels == ["positive", "neutral", "negative"]


def test_parse_label_map() -> None:
    assert parse_label_map("0=negative,1=positive") == {"0": "negative", "1": "positive"}
    assert parse_label_map(" ham = not_spam , spam=spam ") == {"ham": "not_spam", "spam": "spam"}
    assert parse_label_map("a=x,a=x") == {"a": "x"}


@pytest.mark.parametrize("text", ["", "   ", "0", "0=", "=neg", "0=negative,", "0=a=b", "0:negative", "a=x,a=y"])
def test_parse_label_map_rejects_bad_syntax(text: str) -> None:
    with pytest.raises(UserError) as info:
        parse_label_map(text)
    assert info.value.code == ErrorCode.BAD_CONFIG
    assert "--label-map" in info.value.message or "twice" in info.value.message


# --- LabelledSet ------------------------------------------------------------------------------


def make_set(counts: dict[str, int]) -> LabelledSet:
    labels = [label for label, n in counts.items() for _ in range(n)]
    return LabelledSet(texts=[f"t{i}" for i in range(len(labels))], labels=labels, source="mem")


def test_lengths_must_match() -> None:
    with pytest.raises(ValueError, match="2 texts but 1 labels"):
        LabelledSet(texts=["a", "b"], labels=["x"], source="mem")


def test_split_is_stratified_deterministic_and_disjoint() -> None:
    data = make_set({"a": 70, "b": 20, "c": 10})
    train, test = data.split(0.3, seed=0)
    assert Counter(test.labels) == {"a": 21, "b": 6, "c": 3}
    assert Counter(train.labels) == {"a": 49, "b": 14, "c": 7}
    assert set(train.texts).isdisjoint(test.texts) and set(train.texts) | set(test.texts) == set(data.texts)
    assert train.texts == sorted(train.texts, key=data.texts.index)  # file order kept
    again_train, again_test = data.split(0.3, seed=0)
    assert again_test.texts == test.texts and again_train.texts == train.texts
    assert data.split(0.3, seed=1)[1].texts != test.texts
    assert train.source == "mem:train" and test.source == "mem:test"


def test_split_keeps_small_classes_on_both_sides() -> None:
    train, test = make_set({"a": 50, "b": 2, "c": 1}).split(0.2, seed=3)
    assert Counter(test.labels)["b"] == 1 and Counter(train.labels)["b"] == 1
    assert Counter(train.labels)["c"] == 1 and "c" not in test.labels


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_rejects_bad_fractions(fraction: float) -> None:
    with pytest.raises(UserError) as info:
        make_set({"a": 5, "b": 5}).split(fraction, seed=0)
    assert info.value.code == ErrorCode.BAD_CONFIG


def test_sample_is_stratified_and_deterministic() -> None:
    data = make_set({"ham": 870, "spam": 130})
    sample = data.sample(100, seed=0)
    assert len(sample) == 100
    assert Counter(sample.labels) == {"ham": 87, "spam": 13}
    assert sample.texts == data.sample(100, seed=0).texts
    assert sample.texts != data.sample(100, seed=1).texts
    assert len(data.sample(5000, seed=0)) == 1000
    with pytest.raises(UserError):
        data.sample(0, seed=0)


# --- the public eval files --------------------------------------------------------------------


@needs_eval
def test_sst2_dev_file() -> None:
    data = load_labelled(EVAL / "sentiment" / "sst2_dev.tsv", label_map={"1": "positive", "0": "negative"})
    assert Counter(data.labels) == {"positive": 444, "negative": 428}
    assert data.texts[0] == "it 's a charming and often affecting journey ."
    err = error(EVAL / "sentiment" / "sst2_dev.tsv", allowed=["negative", "positive", "neutral"])
    assert "unknown labels '0' (428), '1' (444) in sst2_dev.tsv" in err.message
    assert "--label-map 0=negative,1=positive" in err.message


@needs_eval
def test_sms_spam_file() -> None:
    data = load_labelled(EVAL / "filtering" / "sms_spam.tsv")
    assert Counter(data.labels) == {"ham": 4827, "spam": 747}
    assert data.texts[1] == "Ok lar... Joking wif u oni..."

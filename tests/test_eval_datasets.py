"""Eval data loaders: one small fixture per format, detection, the public sets by name, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moa.errors import ErrorCode, UserError
from moa.eval.datasets import EvalSet, Example, default_data_dirs, detect_format, load_eval_set, resolve


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_tsv_with_a_header_and_a_label_map(tmp_path: Path) -> None:
    data = write(tmp_path / "sst.tsv", "sentence\tlabel\ngood film \t1\nbad film\t0\n")
    loaded = load_eval_set(data, label_map={"1": "positive", "0": "negative"})
    assert (loaded.kind, loaded.format, loaded.labels) == ("classification", "tsv", ["negative", "positive"])
    assert [(e.id, e.text, e.gold) for e in loaded.examples] == [("0", "good film", "positive"), ("1", "bad film", "negative")]


def test_label_first_tsv_csv_and_jsonl(tmp_path: Path) -> None:
    sms = load_eval_set(write(tmp_path / "sms.tsv", "Label\tSMS\nham\thi there\nspam\tWIN now\n"))
    assert [(e.text, e.gold) for e in sms.examples] == [("hi there", "ham"), ("WIN now", "spam")]
    csv = load_eval_set(write(tmp_path / "d.csv", 'text,label\n"a, b",x\nc,y\n'))
    assert [e.text for e in csv.examples] == ["a, b", "c"]
    jsonl = load_eval_set(write(tmp_path / "d.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n'))
    assert (jsonl.format, [e.gold for e in jsonl.examples]) == ("jsonl", ["x", "y"])


def test_mismatched_labels_are_listed_with_a_label_map_hint(tmp_path: Path) -> None:
    data = write(tmp_path / "d.tsv", "text\tlabel\na\tpos\nb\tneg\nc\tmeh\n")
    with pytest.raises(UserError) as caught:
        load_eval_set(data, allowed=["positive", "negative", "neutral"])
    assert caught.value.details["unknown_labels"] == {"meh": 1, "neg": 1, "pos": 1}
    assert "--label-map" in caught.value.message


def test_conll_bio_spans_in_character_offsets(tmp_path: Path) -> None:
    text = "-DOCSTART-\tO\n\nI\tO\nlove\tO\nNew\tB-location\nYork\tI-location\nand\tO\nApple\tI-corporation\n\nfine\tO\n"
    loaded = load_eval_set(write(tmp_path / "d.conll", text))
    first, second = loaded.examples
    assert first.text == "I love New York and Apple"
    assert first.gold == [["location", 7, 15], ["corporation", 20, 25]]  # an I- without a B- starts an entity
    assert first.text[7:15] == "New York" and first.text[20:25] == "Apple"
    assert (second.text, second.gold) == ("fine", [])
    assert loaded.labels == ["corporation", "location"] and first.options == {"types": ["corporation", "location"]}
    mapped = load_eval_set(tmp_path / "d.conll", label_map={"corporation": "organization", "location": "O"})
    assert mapped.examples[0].gold == [["organization", 20, 25]] and mapped.labels == ["organization"]  # renamed; mapped to O: dropped


def test_conll_errors_name_the_lines(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="line 2: tag 'X-foo'") as caught:
        load_eval_set(write(tmp_path / "d.conll", "a\tO\nb\tX-foo\nlonely\n"))
    assert "line 3" in caught.value.message


def snips(intent: str, utterances: list[list[tuple[str, str | None]]]) -> str:
    data = [{"data": [{"text": t, **({"entity": e} if e else {})} for t, e in u]} for u in utterances]
    return json.dumps({intent: data})


def test_snips_slots_and_per_intent_types(tmp_path: Path) -> None:
    write(tmp_path / "snips" / "validate_GetWeather.json", snips("GetWeather", [[("Weather in ", None), ("Paris", "city"), (" tomorrow", None)]]))
    write(tmp_path / "snips" / "validate_PlayMusic.json", snips("PlayMusic", [[("play ", None), ("Abba ", "artist")]]))
    loaded = load_eval_set(tmp_path / "snips")
    assert (loaded.kind, loaded.format, loaded.labels) == ("slots", "snips", ["artist", "city"])
    weather, music = loaded.examples
    assert (weather.id, weather.text, weather.gold, weather.options) == ("GetWeather-1", "Weather in Paris tomorrow", [["city", "Paris"]], {"types": ["city"]})
    assert (music.gold, music.options) == ([["artist", "Abba"]], {"types": ["artist"]})
    assert detect_format(tmp_path / "snips" / "validate_PlayMusic.json") == "snips"


def cranfield(folder: Path, qrels: str) -> Path:
    write(folder / "cran.all.1400", ".I 1\n.T\nwings\n.A\nsmith\n.W\nlift of wings .\n.I 2\n.T\nheat\n.W\nheat transfer .\n.I 3\n.T\nflutter\n.W\npanel flutter .\n")
    write(folder / "cran.qry", ".I 001\n.W\nwing lift\n.I 004\n.W\nheat in slabs\n")
    write(folder / "cranqrel", qrels)
    return folder


def test_cranfield_numbers_queries_in_file_order_and_drops_minus_one(tmp_path: Path) -> None:
    folder = cranfield(tmp_path / "cran", "1 1 2\n1 3 -1\n2 2 1 \n2 3 4\n")
    loaded = load_eval_set(folder)
    assert (loaded.kind, loaded.format) == ("retrieval", "cranfield")
    assert [d.id for d in loaded.corpus] == ["1", "2", "3"] and loaded.corpus[0].text == "wings\nlift of wings ."
    # qrel query 2 is the second query of cran.qry (its .I is 004), not query "002"
    assert [(e.id, e.text, e.gold) for e in loaded.examples] == [("1", "wing lift", {"1": 3}), ("2", "heat in slabs", {"2": 4, "3": 1})]


def test_cranfield_max_docs_drops_judgements_and_unscorable_queries(tmp_path: Path) -> None:
    loaded = load_eval_set(cranfield(tmp_path / "cran", "1 1 2\n2 2 1\n2 3 4\n"), max_docs=1)
    assert [d.id for d in loaded.corpus] == ["1"]
    assert [(e.id, e.gold) for e in loaded.examples] == [("1", {"1": 3})]


def test_cranfield_query_beyond_the_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="query 3 is not among the 2 queries"):
        load_eval_set(cranfield(tmp_path / "cran", "3 1 2\n"))


def test_qa_json_list_and_jsonl(tmp_path: Path) -> None:
    items = [{"id": "7", "question": "Which is faster?", "answer": "falcon", "branch": 2}, {"question": "Two?", "answer": ["2", "two"]}]
    loaded = load_eval_set(write(tmp_path / "qa.json", json.dumps(items)))
    assert (loaded.kind, [(e.id, e.text, e.gold) for e in loaded.examples]) == ("qa", [("7", "Which is faster?", ["falcon"]), ("2", "Two?", ["2", "two"])])
    lines = write(tmp_path / "qa.jsonl", "\n".join(json.dumps(i) for i in items))
    assert detect_format(lines) == "qa" and len(load_eval_set(lines)) == 2
    with pytest.raises(UserError, match="entry 1: no 'answer'"):
        load_eval_set(write(tmp_path / "bad.json", json.dumps([{"question": "q?"}])), format="qa")


def test_unknown_format_says_which_formats_exist(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown data format '.xml'") as caught:
        load_eval_set(write(tmp_path / "d.xml", "<a/>"))
    assert caught.value.code == ErrorCode.INPUT_FILE and "--format" in caught.value.message
    with pytest.raises(UserError, match="unknown --format 'parquet'"):
        load_eval_set(write(tmp_path / "d.tsv", "text\tlabel\na\tb\n"), format="parquet")
    with pytest.raises(UserError, match="cannot tell the format of the folder"):
        load_eval_set(tmp_path)


def test_empty_data_sets(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no labelled rows"):
        load_eval_set(write(tmp_path / "empty.tsv", "text\tlabel\n"))
    with pytest.raises(UserError, match="no items to evaluate"):
        load_eval_set(write(tmp_path / "empty.conll", "\n\n"))
    with pytest.raises(UserError, match="no items to evaluate"):
        load_eval_set(write(tmp_path / "qa.json", "[]"), format="qa")


def test_public_sets_by_name(tmp_path: Path) -> None:
    write(tmp_path / "shared" / "sentiment" / "sst2_dev.tsv", "sentence\tlabel\ngood\t1\nbad\t0\n")
    loaded = load_eval_set("sst2", data_dir=tmp_path / "shared")
    assert loaded.name == "sst2" and [e.gold for e in loaded.examples] == ["positive", "negative"]  # the preset's label map
    with pytest.raises(UserError, match="--data-dir"):
        resolve("wnut17", tmp_path / "shared")
    with pytest.raises(UserError, match="does not exist"):
        resolve(str(tmp_path / "nope.tsv"))


def test_moa_eval_data_points_the_python_api_at_the_public_sets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "elsewhere" / "sentiment" / "sst2_dev.tsv", "sentence\tlabel\ngood\t1\n")
    monkeypatch.chdir(tmp_path)  # no ../shared/eval from here
    monkeypatch.setenv("MOA_EVAL_DATA", str(tmp_path / "elsewhere"))
    assert resolve("sst2")[0] == tmp_path / "elsewhere" / "sentiment" / "sst2_dev.tsv"
    monkeypatch.setenv("MOA_EVAL_DATA", str(tmp_path / "missing"))
    assert default_data_dirs()[0] == tmp_path / "missing"  # looked in first, then the usual places
    monkeypatch.delenv("MOA_EVAL_DATA")
    assert tmp_path / "missing" not in default_data_dirs()


def test_select_is_deterministic_and_a_larger_limit_keeps_the_smaller_sample() -> None:
    data = EvalSet(name="d", kind="qa", format="qa", source="s", examples=[Example(id=str(i), text=str(i), gold=[]) for i in range(50)])
    small, again, large = data.select(5, seed=3), data.select(5, seed=3), data.select(20, seed=3)
    assert [e.id for e in small] == [e.id for e in again]
    assert {e.id for e in small} <= {e.id for e in large} and len(large) == 20
    assert [e.id for e in data.select(5, seed=4)] != [e.id for e in small]
    assert {e.id for e in data.rest(5, seed=3)} == {e.id for e in data.examples} - {e.id for e in small}
    assert len(data.select(None, seed=0)) == 50
    with pytest.raises(UserError, match="--limit must be at least 1"):
        data.select(0, seed=0)


def test_a_preset_name_wins_over_a_folder_of_that_name_and_eval_folders_are_not_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cranfield(tmp_path / "shared" / "retrieval" / "cranfield", "1 1 2\n")
    write(tmp_path / "cranfield" / "meta.json", json.dumps({"config": {"data": "somewhere"}}))  # an eval's output folder
    write(tmp_path / "cranfield" / "report.json", json.dumps({"items": 3}))
    monkeypatch.chdir(tmp_path)
    assert load_eval_set("cranfield", data_dir=tmp_path / "shared").kind == "retrieval"
    with pytest.raises(UserError, match="cannot tell the format of the folder"):
        load_eval_set("./cranfield")

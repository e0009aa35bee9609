"""Graph files and plans are read within limits of size, nesting and YAML alias expansion
(moa.workflow.limits); the CLI cases are in test_hostile_inputs.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moa.errors import ErrorCode, UserError
from moa.workflow.limits import DocumentLimits, load_json, load_yaml, read_document

SMALL = DocumentLimits(max_bytes=1000, max_depth=6, max_nodes=50)


def billion_laughs(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def refused(call: object) -> UserError:
    with pytest.raises(UserError) as info:
        call()  # type: ignore[operator]
    assert info.value.code == ErrorCode.INVALID_INPUT
    return info.value


def test_the_billion_laughs_is_refused_without_being_expanded() -> None:
    text = billion_laughs()
    assert len(text) < 600  # ~10^9 values once written out
    error = refused(lambda: load_yaml(text, "the graph file b.yaml", DocumentLimits()))
    assert "b.yaml" in error.message and "aliases" in error.message and "max_plan_nodes" in error.message


def test_a_few_aliases_are_fine() -> None:
    text = "opts: &o {criterion: spam}\nnodes:\n  - {id: a, agent: filtering, options: *o}\n  - {id: b, agent: filtering, options: *o}\n"
    data, root = load_yaml(text, "g.yaml", SMALL)
    assert data["nodes"][1]["options"] == {"criterion": "spam"} and root is not None


def test_an_alias_inside_its_own_node_is_refused() -> None:
    error = refused(lambda: load_yaml("a: &a [1, *a]\n", "g.yaml", SMALL))
    assert "never ends" in error.message


def test_nesting_is_counted_while_composing() -> None:
    error = refused(lambda: load_yaml("x: " + "[" * 50_000 + "]" * 50_000 + "\n", "g.yaml", DocumentLimits()))
    assert "32 levels" in error.message and "max_plan_depth" in error.message


def test_nesting_through_aliases_counts_too() -> None:
    text = "a: &a [[[[1]]]]\nb: [[*a]]\n"  # 5 levels of mappings and lists written, 7 once *a is written out
    load_yaml(text, "g.yaml", DocumentLimits(max_depth=7))
    refused(lambda: load_yaml(text, "g.yaml", DocumentLimits(max_depth=6)))
    load_yaml("a: [[[[1]]]]\n", "g.yaml", DocumentLimits(max_depth=5))
    refused(lambda: load_yaml("a: [[[[1]]]]\n", "g.yaml", DocumentLimits(max_depth=4)))
    assert load_json('{"a": [[[[1]]]]}', "p", DocumentLimits(max_depth=5)) and refused(lambda: load_json('{"a": [[[[1]]]]}', "p", DocumentLimits(max_depth=4)))


def test_an_integer_python_cannot_read_is_refused() -> None:
    error = refused(lambda: load_yaml("x: " + "9" * 5000 + "\n", "g.yaml", DocumentLimits()))
    assert "cannot read" in error.message


def test_json_nesting_is_checked_before_parsing() -> None:
    deep = '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"
    error = refused(lambda: load_json(deep, "the plan", DocumentLimits()))
    assert "the plan" in error.message and "32 levels" in error.message
    assert load_json('{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', "the plan", SMALL) == {"a": "[" * 40}  # brackets in strings


def test_size_is_checked_for_text_and_files(tmp_path: Path) -> None:
    refused(lambda: load_json(json.dumps({"x": "y" * 2000}), "the plan", SMALL))
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * 5000)
    error = refused(lambda: read_document(big, "the graph file big.yaml", SMALL))
    assert "5,000 bytes" in error.message and "max_plan_bytes" in error.message


def test_a_device_is_read_no_further_than_the_limit() -> None:
    error = refused(lambda: read_document(Path("/dev/zero"), "the plan file /dev/zero", SMALL))
    assert "more than 1,000 bytes" in error.message


def test_binary_is_input_file(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(UserError) as info:
        read_document(path, "the graph file g.yaml", SMALL)
    assert info.value.code == ErrorCode.INPUT_FILE and "not UTF-8" in info.value.message

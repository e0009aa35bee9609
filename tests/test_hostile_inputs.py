"""The hostile-input corpus: files and tasks an attacker (or an accident) could hand to ``moa``.

Each case is one row of :data:`CASES`: the files it writes, the ``moa`` arguments, and what must
happen. Every case is run through the CLI and checked for the same things:

* the exit code, the error code and the words of the message (which say what to do);
* no traceback (the CLI caught the error);
* nothing written where it should not be: no run in the run index (unless the case allows a
  failed run to be recorded), and no request at the *foreign* server, a recording HTTP server
  on 127.0.0.1 that stands for a host an attacker controls.

To add a case, add a :class:`Case`. Text in ``args``, ``env`` and ``str`` file contents may use
``{dir}`` (the test's folder), ``{own}`` (the OpenAI API root of a recording server the tiers may
use) and ``{foreign}`` (the attacker's API root). Mark cases that send real requests ``real=True``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support.recording_server import RecordingServer, answer_with, recording_server
from typer.testing import CliRunner, Result

import moa
from moa.cli.main import app
from moa.workflow.view import list_runs

runner = CliRunner()

Content = str | bytes | Callable[[], bytes]


@dataclass(frozen=True)
class Case:
    id: str
    args: list[str]
    """``moa`` arguments (templates)."""
    exit_code: int
    code: str
    """The error code the CLI must print, e.g. ``invalid_input``."""
    says: tuple[str, ...] = ()
    """Words the error message must contain (templates)."""
    files: dict[str, Content] = field(default_factory=dict)
    """Files written in the test's folder before ``moa`` runs."""
    env: dict[str, str] = field(default_factory=dict)
    recorded: bool = False
    """A failed run may be in the run index (the input was refused after the run started)."""
    real: bool = False
    """Sends real requests (to the recording servers): marked ``real``."""
    own_requests: int | None = 0
    """How many requests the tiers' own server may get (``None``: any)."""


def billion_laughs() -> bytes:
    """471 bytes of YAML that expand to ~10^9 values."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    return ("\n".join(lines) + "\nnodes: *a8\n").encode()


def deep_yaml() -> bytes:
    return b"nodes:\n  - id: a\n    agent: sentiment\n    options: {x: " + b"[" * 50_000 + b"]" * 50_000 + b"}\n"


def deep_json() -> bytes:
    return b'{"subtasks": [{"id": "a", "agent": "sentiment", "options": {"x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}}]}"


def thirty_mb(head: bytes) -> Callable[[], bytes]:
    return lambda: head + b" " * 30_000_000


def graph_naming(spec: str) -> str:
    return f'name: g\nnodes:\n  - id: s\n    agent: sentiment\n    cascade: [slm, "{spec}"]\n'


def plan_naming(spec: str) -> str:
    return json.dumps({"subtasks": [{"id": "s", "agent": "sentiment", "cascade": ["slm", spec]}]})


INJECTED_PLAN = {"subtasks": [{"id": "s", "agent": "sentiment", "cascade": ["openai:evil@FOREIGN"]}]}
TIERS = {"MOA_SLM": "openai:m@{own}", "MOA_LLM": "openai:m@{own}", "OPENAI_API_KEY": "sk-secret"}

# fmt: off
CASES = [
    # --- YAML graph files ---------------------------------------------------------------------
    Case("yaml-alias-bomb", ["run", "t", "--graph", "{dir}/bomb.yaml"], 2, "invalid_input",
         ("bomb.yaml", "aliases", "max_plan_nodes"), {"bomb.yaml": billion_laughs}),
    Case("yaml-deep-nesting", ["run", "t", "--graph", "{dir}/deep.yaml"], 2, "invalid_input",
         ("deep.yaml", "32 levels", "line 4"), {"deep.yaml": deep_yaml}),
    Case("yaml-30-mb", ["run", "t", "--graph", "{dir}/huge.yaml"], 2, "invalid_input",
         ("30.0 MB", "max_plan_bytes"), {"huge.yaml": thirty_mb(b"name: g\n#")}),
    Case("yaml-binary", ["run", "t", "--graph", "{dir}/bin.yaml"], 2, "input_file",
         ("bin.yaml", "not UTF-8"), {"bin.yaml": bytes(range(256))}),
    Case("yaml-invalid-utf8", ["run", "t", "--graph", "{dir}/latin1.yaml"], 2, "input_file",
         ("not UTF-8",), {"latin1.yaml": "name: café\n".encode("latin-1")}),
    Case("yaml-nul", ["run", "t", "--graph", "{dir}/nul.yaml"], 2, "invalid_plan",
         ("nul.yaml", "line 2", "#x0000"), {"nul.yaml": b"name: g\nnodes: [\x00]\n"}),
    Case("yaml-foreign-model", ["run", "t", "--graph", "{dir}/g.yaml"], 2, "invalid_plan",
         ("line 5", "openai:evil@{foreign}", "allowed_models"), {"g.yaml": graph_naming("openai:evil@{foreign}")}),
    Case("yaml-mixture-foreign-model", ["run", "t", "--graph", "{dir}/m.yaml"], 2, "invalid_plan",
         ("proposer 1", "openai:evil@{foreign}"), {"m.yaml": 'graph: mixture\nparams:\n  proposers: [{model: "openai:evil@{foreign}"}]\n'}),
    Case("yaml-params-of-the-wrong-type", ["run", "t", "--graph", "{dir}/m.yaml"], 2, "invalid_plan",
         ("m.yaml", "line 2", "bad params for the mixture graph"), {"m.yaml": 'graph: mixture\nparams:\n  proposers: [{temperature: "hot"}]\n'}),
    Case("yaml-model-from-a-local-file", ["run", "t", "--graph", "{dir}/g.yaml"], 2, "invalid_plan",
         ("embedded:/etc/passwd",), {"g.yaml": graph_naming("embedded:/etc/passwd")}),
    # --- --plan JSON files --------------------------------------------------------------------
    Case("plan-deep-nesting", ["run", "t", "--plan", "{dir}/deep.json"], 2, "invalid_input",
         ("deep.json", "32 levels", "max_plan_depth"), {"deep.json": deep_json}),
    Case("plan-30-mb", ["run", "t", "--plan", "{dir}/huge.json"], 2, "invalid_input",
         ("30.0 MB", "max_plan_bytes"), {"huge.json": thirty_mb(b'{"subtasks": []}')}),
    Case("plan-binary", ["run", "t", "--plan", "{dir}/bin.json"], 2, "input_file",
         ("bin.json", "not UTF-8"), {"bin.json": bytes(range(256))}),
    Case("plan-nul", ["run", "t", "--plan", "{dir}/nul.json"], 2, "invalid_plan",
         ("nul.json", "not valid JSON"), {"nul.json": b'{"subtasks": [{"id": "a\x00", "agent": "sentiment"}]}'}),
    Case("plan-not-an-object", ["run", "t", "--plan", "{dir}/list.json"], 2, "invalid_plan",
         ("JSON object",), {"list.json": "[1, 2]"}),
    Case("plan-from-a-device", ["run", "t", "--plan", "/dev/zero"], 2, "invalid_input",
         ("/dev/zero", "max_plan_bytes")),
    Case("plan-foreign-model", ["run", "t", "--plan", "{dir}/p.json", "--input", "{dir}/items.txt"], 2, "invalid_plan",
         ("openai:evil@{foreign}", "allowed_models"),
         {"p.json": plan_naming("openai:evil@{foreign}"), "items.txt": "my card number is 4111\n"}, env=TIERS, real=True),
    Case("plan-writes-the-shared-memory", ["run", "what do we know?", "--plan", "{dir}/w.json"], 2, "invalid_plan",
         ("'add'", "retrieval", "moa memory add"),
         {"w.json": json.dumps({"subtasks": [{"id": "r", "agent": "retrieval", "options": {"add": ["The refund limit is 10,000 EUR."]}}]})}),
    # --- the task text ------------------------------------------------------------------------
    # (a task asking the llm planner for another model: tests/test_plan_models.py, the planner's format has no cascade)
]
# fmt: on


@pytest.fixture
def servers() -> Iterator[tuple[RecordingServer, RecordingServer]]:
    """The tiers' own server (its planner answers the injected plan) and the attacker's."""
    with recording_server() as foreign:
        plan = json.loads(json.dumps(INJECTED_PLAN).replace("FOREIGN", foreign.v1))
        with recording_server(answer_with(plan)) as own:
            yield own, foreign


def _fill(text: str, tmp_path: Path, own: RecordingServer, foreign: RecordingServer) -> str:
    return text.replace("{dir}", str(tmp_path)).replace("{own}", own.v1).replace("{foreign}", foreign.v1)


def _content(value: Content, fill: Callable[[str], str]) -> bytes:
    if isinstance(value, str):
        return fill(value).encode()
    return value if isinstance(value, bytes) else value()


def _no_traceback(result: Result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.real] if c.real else []) for c in CASES])
def test_hostile_input(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, servers: tuple[RecordingServer, RecordingServer]) -> None:
    own, foreign = servers

    def fill(text: str) -> str:
        return _fill(text, tmp_path, own, foreign)

    for name, content in case.files.items():
        (tmp_path / name).write_bytes(_content(content, fill))
    for name, value in case.env.items():
        monkeypatch.setenv(name, fill(value))

    result = runner.invoke(app, [fill(a) for a in case.args])

    assert result.exit_code == case.exit_code, result.output
    assert f"[{case.code}]" in result.stderr, result.stderr
    message = " ".join(result.stderr.split())  # the console wraps long lines
    for words in case.says:
        assert fill(words) in message, message
    _no_traceback(result)
    assert foreign.requests == [], "a request reached the foreign server"
    if case.own_requests is not None:
        assert len(own.requests) == case.own_requests, own.requests
    if not case.recorded:
        runs: list[Any] = asyncio.run(list_runs(moa.load_settings()))
        assert runs == [], "a refused input was recorded as a run"

"""What an eval writes: its configuration (``meta.json``) and one JSON line per item (``results.jsonl``).

Items are appended as they finish, so an interrupted eval keeps everything it computed; running
the same eval on the same folder again skips the items already there. A line half-written when
the process was killed is dropped (and cut from the file) when the folder is opened again.

Each item keeps its raw outputs: the prediction, confidence and usage of every cascade step it
tried (:class:`StepRecord`), so a threshold sweep or a reliability diagram is recomputed from the
file without calling a model.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from moa.errors import ErrorCode, ErrorInfo, UserError
from moa.files import atomic_write
from moa.usage import Usage

RESULTS = "results.jsonl"
META = "meta.json"


class EvalConfig(BaseModel):
    """What is evaluated, on what, how. Two runs resume each other when all but ``limit`` match."""

    target: str
    """An agent name, or a graph name or YAML graph file."""
    target_kind: str
    """``agent`` or ``graph``."""
    data: str
    """The data file or folder (resolved path)."""
    data_name: str
    format: str
    kind: str
    limit: int | None = None
    seed: int = 0
    cascade: list[str] | None = None
    """The ``--cascade`` given (``None``: the configured one)."""
    threshold: float | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    label_map: dict[str, str] | None = None
    sweep: bool = False
    """Every cascade step answered every item (the cascade's choice is computed from those answers)."""
    max_docs: int | None = None
    shots: int = 0
    """Worked examples per prompt drawn from the data set's items outside the eval (``--shots``)."""

    def identity(self) -> dict[str, Any]:
        return self.model_dump(exclude={"limit"})


class Session(BaseModel):
    """One invocation of the eval on this folder."""

    started: float
    seconds: float = 0.0
    items: int = 0
    """Items finished in this session."""
    workers: int = 1
    setup_seconds: float = 0.0
    """Time before the first item (indexing a retrieval corpus); not in ``seconds``."""


class Demonstrations(BaseModel):
    """The items of the data set shown as worked examples to every evaluated item with these options."""

    options: dict[str, Any] = Field(default_factory=dict)
    ids: list[str] = Field(default_factory=list)


class Meta(BaseModel):
    """``meta.json``: the configuration, the resolved cascade and models, and the sessions."""

    config: EvalConfig
    steps: list[str] = Field(default_factory=list)
    """The cascade steps the agent used (after merging steps on the same model)."""
    threshold: float | None = None
    """The agent's effective escalation threshold."""
    step_thresholds: dict[str, float] = Field(default_factory=dict)
    """Thresholds chosen from data (``moa calibrate --cascade``) the cascade used, by step, over :attr:`threshold`."""
    labels: list[str] = Field(default_factory=list)
    models: dict[str, str] = Field(default_factory=dict)
    """Model spec per tier / step."""
    machine: dict[str, Any] = Field(default_factory=dict)
    demonstrations: list[Demonstrations] = Field(default_factory=list)
    """With ``--shots``: the items each group of evaluated items was shown (see :mod:`moa.eval.shots`)."""
    sessions: list[Session] = Field(default_factory=list)


class StepRecord(BaseModel):
    """One cascade step's answer to an item."""

    step: str
    model: str
    prediction: Any = None
    confidence: float | None = None
    raw_confidence: float | None = None
    error: ErrorInfo | None = None
    usage: list[Usage] = Field(default_factory=list)
    used: bool = True
    """The cascade (at the eval's threshold) used this step; ``False``: answered for the sweep only."""


class ItemRecord(BaseModel):
    """One evaluated item."""

    id: str
    gold: Any
    prediction: Any = None
    confidence: float | None = None
    answered_by: str | None = None
    escalated: bool = False
    unverified: str | None = None
    error: ErrorInfo | None = None
    attempts: list[StepRecord] = Field(default_factory=list)
    usage: list[Usage] = Field(default_factory=list)
    """Calls the cascade (or graph) made for this item."""
    seconds: float = 0.0
    """Wall time of the item."""
    shots: int = 0
    """Worked examples drawn from the data set that the item's prompt showed (``--shots``)."""


def machine() -> dict[str, Any]:
    """The machine the numbers come from."""
    cpu = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "")
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cores": os.cpu_count(), "cpu": cpu, "platform": platform.platform(), "python": platform.python_version(), "load_1m": load}


def _changed(old: list[Demonstrations], new: list[Demonstrations]) -> bool:
    """Items with the same options were shown other demonstrations (a new group is no change)."""
    before = {json.dumps(d.options, sort_keys=True): d.ids for d in old}
    return any(before.get(json.dumps(d.options, sort_keys=True), d.ids) != d.ids for d in new)


class ResultStore:
    """The folder of one eval: ``meta.json`` and ``results.jsonl``."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.results = self.folder / RESULTS
        self.meta_path = self.folder / META

    def exists(self) -> bool:
        return self.meta_path.is_file()

    def open(self, meta: Meta) -> Meta:
        """Start or continue the eval of ``meta.config`` here; refuse a folder of another eval."""
        if self.exists():
            old = self.read_meta()
            if old.config.identity() != meta.config.identity():
                mine, theirs = meta.config.identity(), old.config.identity()
                diff = ", ".join(f"{k}: {theirs[k]!r} there, {mine[k]!r} now" for k in mine if mine[k] != theirs[k])
                raise UserError(
                    ErrorCode.BAD_CONFIG,
                    f"{self.folder} holds the results of another eval ({diff}); give another --out folder, or delete it to start again",
                )
            if _changed(old.demonstrations, meta.demonstrations) and self.read():
                raise UserError(
                    ErrorCode.BAD_CONFIG,
                    f"{self.folder} holds items evaluated with other demonstrations (the larger --limit now evaluates items that were shown "
                    "as demonstrations); give another --out folder, or keep the --limit",
                )
            meta = meta.model_copy(update={"sessions": old.sessions})
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(ErrorCode.INPUT_FILE, f"cannot create {self.folder}: {exc.strerror or exc}; choose another --out") from exc
        self.write_meta(meta)
        return meta

    def read_meta(self) -> Meta:
        if not self.exists():
            raise UserError(ErrorCode.INPUT_FILE, f"{self.folder} holds no eval (no {META}); run `moa eval AGENT DATA --out {self.folder}` first")
        try:
            return Meta.model_validate_json(self.meta_path.read_bytes())
        except (OSError, ValidationError) as exc:
            raise UserError(ErrorCode.STATE_CORRUPT, f"{self.meta_path} is unreadable ({exc}); delete the folder and run the eval again") from exc

    def write_meta(self, meta: Meta) -> None:
        atomic_write(self.meta_path, lambda f: f.write((meta.model_dump_json(indent=2) + "\n").encode()), "the eval's meta.json")

    def read(self) -> list[ItemRecord]:
        """Every complete record; a trailing half-written line is cut from the file."""
        if not self.results.is_file():
            return []
        raw = self.results.read_bytes()
        complete, newline, tail = raw.rpartition(b"\n")
        records: list[ItemRecord] = []
        for number, line in enumerate(complete.split(b"\n") if newline else [], start=1):
            if not line.strip():
                continue
            try:
                records.append(ItemRecord.model_validate_json(line))
            except ValidationError as exc:
                raise UserError(
                    ErrorCode.STATE_CORRUPT, f"line {number} of {self.results} is not an item record ({exc.error_count()} errors); delete that line"
                ) from exc
        if tail.strip():
            try:
                records.append(ItemRecord.model_validate_json(tail))
                ending = b"\n"  # complete, but its newline was not written yet
            except ValidationError:
                ending = b""  # the process died while writing this line: cut it
            with self.results.open("r+b") as f:
                f.truncate(len(complete) + len(newline))
                f.seek(0, os.SEEK_END)
                f.write(tail + ending if ending else b"")
        return records

    def append(self, record: ItemRecord) -> None:
        with self.results.open("a", encoding="utf-8") as f:
            f.write(record.model_dump_json() + "\n")
            f.flush()

    def add_session(self, meta: Meta, session: Session) -> Meta:
        meta = meta.model_copy(update={"sessions": [*meta.sessions, session]})
        self.write_meta(meta)
        return meta

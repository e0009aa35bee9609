"""The server's journal of accepted runs, so that none disappears when the server dies.

A run is written here (``state_dir/server/accepted/<run_id>.json``, mode 0600) before ``POST
/v1/runs`` answers 202, and again when its approvals are answered; it is removed once the run has
settled (ended, or waits for approvals) or was cancelled by a client. What is still here when a
server starts was accepted by a server that died (or stopped) before the run settled: the new
server resumes it (:meth:`moa.server.runs.RunManager.recover`).

An entry holds what is needed to start the run again if it never got to its first checkpoint:
the task, items, graph and the request's options, the answers to approvals if any, the API key's
name, and how many times a server has already picked it up (``recoveries``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from moa.files import atomic_write
from moa.logs import get_logger
from moa.settings import Settings
from moa.workflow.index import process_alive

log = get_logger(__name__)


class Accepted(BaseModel):
    """One accepted run that has not settled yet."""

    run_id: str
    graph: str
    task: str
    items: list[str] | None = None
    options: dict[str, Any] = {}
    """The request's options (``RunOptionsRequest.given()``), applied again on a fresh start."""
    key: str | None = None
    answers: dict[str, Any] | None = None
    """``{"approve": ..., "deny": ...}`` when the run was resuming after its approvals were answered."""
    pid: int = 0
    """The server process that holds it now."""
    recoveries: int = 0
    """How many times a restarted server picked the run up."""


class Spool:
    """The folder of :class:`Accepted` entries of one state directory."""

    def __init__(self, settings: Settings) -> None:
        self.folder = Path(settings.state_dir) / "server" / "accepted"

    def _path(self, run_id: str) -> Path:
        return self.folder / f"{run_id}.json"

    def put(self, entry: Accepted) -> None:
        """Write (or rewrite) ``entry``, held by this process (atomic; ``bad_config`` when the
        state directory cannot be written, so the request is refused instead of accepted unsafely)."""
        data = entry.model_copy(update={"pid": os.getpid()}).model_dump_json().encode()

        def write(f: Any) -> None:
            os.fchmod(f.fileno(), 0o600)
            f.write(data)

        atomic_write(self._path(entry.run_id), write, "the server's journal of accepted runs")

    def get(self, run_id: str) -> Accepted | None:
        try:
            return Accepted.model_validate_json(self._path(run_id).read_bytes())
        except (OSError, ValidationError):
            return None

    def drop(self, run_id: str) -> None:
        """Forget a run that settled (nothing to do if it is not there)."""
        try:
            self._path(run_id).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("spool_not_removed", run_id=run_id, error=exc.strerror or str(exc))

    def orphans(self) -> list[Accepted]:
        """Entries whose server process is gone (not this one, not another live one), oldest first."""
        if not self.folder.is_dir():
            return []
        found: list[tuple[float, Accepted]] = []
        for path in self.folder.glob("*.json"):
            try:
                entry = Accepted.model_validate_json(path.read_bytes())
                mtime = path.stat().st_mtime
            except (OSError, ValidationError) as exc:
                log.warning("spool_entry_unreadable", path=str(path), error=str(exc)[:200])
                continue
            if entry.pid == os.getpid() or not process_alive(entry.pid):
                found.append((mtime, entry))
        return [entry for _, entry in sorted(found, key=lambda pair: pair[0])]


"""Shared memory across hosts: two moa processes at once on one Chroma server (``MOA_MEMORY_URL``).

A real ``chroma run`` on 127.0.0.1 (a free port, a tmp folder). Each process runs the retrieval
agent: it adds its own fact, then searches until it finds the other's; neither can finish unless
what one adds the other finds. Then ``moa memory query`` (a third process) sees both, and once
the server is stopped it fails with ``memory_unreachable``, saying how to start one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.chroma_server import chroma_server
from support.moa_process import moa_env

FACTS = {
    "a": ("The refund window for annual plans is thirty days.", "how long do customers have to ask for a refund"),
    "b": ("Support tickets about passwords go to the identity team.", "who handles password problems"),
}

WORKER = """
import asyncio, json, sys
import moa
from moa.agents.retrieval import RetrievalInput, agent

mine, wanted, query = sys.argv[1], sys.argv[2], sys.argv[3]

async def main() -> None:
    ctx = moa.RunContext.create(moa.load_settings())
    try:
        run = await agent.run(ctx, RetrievalInput(query=query, k=3, add=[mine], source=sys.argv[4]))
        for attempt in range(600):  # until the other process's fact is there (bounded)
            found = [p.text for p in run.output.passages] if run.output is not None else []
            if wanted in found:
                print(json.dumps({"found": found, "attempts": attempt + 1, "error": None}))
                return
            await asyncio.sleep(0.1)
            run = await agent.run(ctx, RetrievalInput(query=query, k=3))
        print(json.dumps({"found": found, "attempts": attempt + 1, "error": run.error.model_dump() if run.error else None}))
    finally:
        await ctx.aclose()

asyncio.run(main())
"""


@pytest.mark.real  # a real Chroma server and the MiniLM embedder, in three processes
def test_two_moa_processes_share_one_chroma_server(tmp_path: Path) -> None:
    with chroma_server(tmp_path / "chroma-data", tmp_path / "chroma.log") as url:
        procs = {}
        for me, other in (("a", "b"), ("b", "a")):
            home = tmp_path / me  # each its own state and memory folder: only the server is shared
            home.mkdir()
            env = {**moa_env(home), "MOA_MEMORY_URL": url}
            procs[me] = subprocess.Popen(
                [sys.executable, "-c", WORKER, FACTS[me][0], FACTS[other][0], FACTS[other][1], f"host-{me}"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=home,
            )
        outputs = {}
        for me, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=600)
            assert proc.returncode == 0, stderr[-3000:]
            outputs[me] = json.loads(stdout.strip().splitlines()[-1])
        for me, other in (("a", "b"), ("b", "a")):
            assert outputs[me]["error"] is None
            assert FACTS[other][0] in outputs[me]["found"], outputs[me]
        assert not (tmp_path / "a" / "memory").exists() and not (tmp_path / "b" / "memory").exists()

        query = subprocess.run(
            [sys.executable, "-m", "moa", "memory", "query", "refund window", "-k", "5", "--json"],
            capture_output=True, text=True, env={**moa_env(tmp_path), "MOA_MEMORY_URL": url}, timeout=300, cwd=tmp_path,
        )  # fmt: skip
        assert query.returncode == 0, query.stderr
        passages = json.loads(query.stdout)
        assert {p["text"] for p in passages} == {FACTS["a"][0], FACTS["b"][0]}
        assert {p["source"] for p in passages} == {"host-a", "host-b"}

    down = subprocess.run(
        [sys.executable, "-m", "moa", "memory", "query", "refund window", "--json"],
        capture_output=True, text=True, env={**moa_env(tmp_path), "MOA_MEMORY_URL": url}, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert down.returncode != 0
    error = json.loads(down.stdout)["error"]
    assert error["code"] == "memory_unreachable"
    assert url in error["message"] and "chroma run" in error["message"]

"""The built-in agents and graphs ship inside the moa namespace, never as top-level packages."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

import moa
from moa.workflow.catalog import builtin_agents, builtin_graphs

ROOT = Path(__file__).resolve().parents[1]
PROBE = (
    "import importlib.util, moa, moa.agents.sentiment, moa.graphs.plan_execute;"
    "from moa.workflow.catalog import builtin_agents, builtin_graphs;"
    "print(sorted(builtin_agents()), sorted(builtin_graphs()), importlib.util.find_spec('agents') is None,"
    " importlib.util.find_spec('graphs') is None, moa.agents.sentiment.__file__)"
)


def test_this_install_finds_builtins_in_the_moa_namespace() -> None:
    assert sorted(builtin_agents()) == ["extraction", "filtering", "retrieval", "sentiment"]
    assert "plan_execute" in builtin_graphs()
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, cwd="/").stdout
    assert "True True" in out  # no top-level `agents` / `graphs`


@pytest.mark.slow
def test_built_wheel_in_a_fresh_venv_finds_builtins(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)], check=True, capture_output=True)
    wheel = next(dist.glob("moa-*.whl"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # Dependencies come from this environment (a path entry only: its editable hook is not run);
    # moa itself is installed from the wheel alone.
    site = Path(subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)], check=True)
    out = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True, check=True, cwd="/").stdout
    assert "['extraction', 'filtering', 'retrieval', 'sentiment'] ['mixture', 'plan_execute', 'rag', 'triage'] True True" in out
    assert str(site / "moa" / "agents" / "sentiment.py") in out  # from the wheel, not the checkout
    assert moa.__file__ not in out

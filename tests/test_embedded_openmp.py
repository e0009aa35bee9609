"""The embedded engine's OpenMP default: short spinning unless the user chose a wait policy."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from moa.models.embedded import SPINCOUNT, openmp_defaults


def test_spincount_is_set_when_the_user_chose_nothing() -> None:
    environ: dict[str, str] = {"PATH": "/bin"}
    assert openmp_defaults(environ) is True
    assert environ["GOMP_SPINCOUNT"] == SPINCOUNT == "1000"


@pytest.mark.parametrize("chosen", [{"OMP_WAIT_POLICY": "ACTIVE"}, {"OMP_WAIT_POLICY": "PASSIVE"}, {"GOMP_SPINCOUNT": "300000"}])
def test_a_users_choice_is_left_alone(chosen: dict[str, str]) -> None:
    environ = dict(chosen)
    assert openmp_defaults(environ) is False
    assert environ == chosen


_LOAD = (
    "import asyncio, os; from moa.models.embedded import EmbeddedBackend; "
    "b = EmbeddedBackend(); b._load(); print(os.environ.get('GOMP_SPINCOUNT')); asyncio.run(b.aclose())"
)


@pytest.mark.real
@pytest.mark.parametrize(("extra", "expected"), [({}, "1000"), ({"OMP_WAIT_POLICY": "PASSIVE"}, "None")])
def test_loading_the_engine_applies_the_default_before_openmp_starts(extra: dict[str, str], expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")} | extra
    out = subprocess.run([sys.executable, "-c", _LOAD], env=env, capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == expected
    # and the engine's libgomp was loaded only then (so it read the setting)
    probe = "import sys, moa.models.embedded; print('xllamacpp' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120, check=True).stdout.strip() == "False"


@pytest.mark.real
def test_an_engine_closed_right_after_loading_lets_the_process_exit() -> None:
    # the engine's HTTP listener thread, stopped before it reached its accept loop, kept the
    # destructor waiting forever: 7-11 of 30 such processes hung before the fix
    script = "import asyncio; from moa.models.embedded import EmbeddedBackend; b = EmbeddedBackend(); b._load(); asyncio.run(b.aclose())"
    for _ in range(6):
        subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60, check=True)

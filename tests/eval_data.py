"""Where the tests find the public labelled data: ``MOA_EVAL_DATA``, else ``../shared/eval``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

EVAL = Path(os.environ.get("MOA_EVAL_DATA") or Path(__file__).resolve().parents[2] / "shared" / "eval")

needs_eval = pytest.mark.skipif(
    not EVAL.is_dir(), reason=f"the public eval data is not at {EVAL} (../shared/eval, or set MOA_EVAL_DATA); this test needs it"
)

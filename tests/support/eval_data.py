"""Where the tests find the public labelled data: where ``moa eval`` looks (``MOA_EVAL_DATA``, else ``../shared/eval``)."""

from __future__ import annotations

import pytest

from moa.eval.datasets import default_data_dirs

EVAL = next((d for d in default_data_dirs() if d.is_dir()), default_data_dirs()[-1])

needs_eval = pytest.mark.skipif(
    not EVAL.is_dir(), reason=f"the public eval data is not at {EVAL} (../shared/eval, or set MOA_EVAL_DATA); this test needs it"
)

"""The quality of a cascade's answers as score components that add up over items.

A threshold is chosen on the quality of many items at once. Accuracy is a mean, but entity F1 is
micro: true positives, false positives and false negatives are summed over the items and F1 is taken
once. So each answer is scored as components (:func:`components`) that add, and the quality of a set
of items is :func:`quality` of their summed components:

* classification: ``(correct, 1)`` → accuracy, ``correct / items``;
* entities: ``(tp, fp, fn)`` of :func:`moa.eval.metrics.entity_counts` → micro F1
  (:func:`moa.eval.metrics.f1_of_counts`, as :func:`moa.eval.metrics.entity_prf` computes it).

A missing answer (``None``: the item failed) is wrong: no label, no entities.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from moa.eval.metrics import HEADLINE, entity_counts, f1_of_counts

#: The metric thresholds are chosen on, by data kind (the kinds whose thresholds can be chosen).
METRIC = {kind: HEADLINE[kind] for kind in ("classification", "entities")}
#: How many components an answer of each kind is scored with.
WIDTH = {"classification": 2, "entities": 3}


def components(kind: str, prediction: Any, gold: Any) -> tuple[float, ...]:
    """One answer's score components (see the module docstring); ``prediction`` ``None``: no answer."""
    if kind == "entities":
        return tuple(float(c) for c in entity_counts(prediction, gold))
    return (float(prediction is not None and prediction == gold), 1.0)


def quality(kind: str, summed: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The quality of components summed over items (last axis: the components), one per leading index."""
    flat = summed.reshape(-1, summed.shape[-1])
    if kind == "entities":
        values = [f1_of_counts(*row) for row in flat]
    else:
        values = [row[0] / row[1] if row[1] else 0.0 for row in flat]
    return np.asarray(values, dtype=np.float64).reshape(summed.shape[:-1])

"""Task metrics, each a pure function of predictions and gold answers.

* classification: accuracy and macro-F1 (the mean over classes of each class's F1; a class never
  predicted and never gold is left out, one with no true positive scores 0); with two classes and
  confidences, ROC AUC of the probability of one class (``confidence`` of the predicted label,
  ``1 - confidence`` for the other; an item without either scores 0.5); the baselines that answer
  one class for every item (the best of them is the majority baseline);
* entities: micro precision / recall / F1 over exact ``(type, start, end)`` matches;
* slots: micro precision / recall / F1 over ``(slot, value)`` pairs, values compared after
  lower-casing and folding white space (a multiset: a pair given twice counts twice);
* retrieval: nDCG@k (linear gains, log2 discount, ideal from every judged relevant document),
  Recall@k and MRR (1 / rank of the first relevant document in the ranking returned);
* question answering: exact match and token F1 after SQuAD normalisation (lower case, no
  punctuation, no articles ``a/an/the``, folded white space), the best over the accepted answers.

A missing prediction (``None``: the item failed) is wrong: no label, no entities, an empty ranking.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np


def accuracy(predicted: Sequence[str | None], gold: Sequence[str]) -> float:
    """Share of items whose prediction equals the gold label."""
    if not gold:
        return 0.0
    return sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)


def per_class(predicted: Sequence[str | None], gold: Sequence[str], labels: Iterable[str] = ()) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of each class (gold classes, predicted ones and ``labels``)."""
    classes = sorted({*gold, *(p for p in predicted if p is not None), *labels})
    out: dict[str, dict[str, float]] = {}
    for c in classes:
        tp = sum(p == c and g == c for p, g in zip(predicted, gold, strict=True))
        n_pred = sum(p == c for p in predicted)
        n_gold = sum(g == c for g in gold)
        if not n_pred and not n_gold:
            continue
        out[c] = {**_prf(tp, n_pred, n_gold), "support": float(n_gold)}
    return out


def macro_f1(predicted: Sequence[str | None], gold: Sequence[str], labels: Iterable[str] = ()) -> float:
    """Unweighted mean F1 over the classes (see the module docstring)."""
    scores = per_class(predicted, gold, labels)
    return float(np.mean([s["f1"] for s in scores.values()])) if scores else 0.0


def _prf(tp: float, n_pred: float, n_gold: float) -> dict[str, float]:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def _micro(pairs: Iterable[tuple[Counter[Any], Counter[Any]]]) -> dict[str, float]:
    tp = n_pred = n_gold = 0
    for predicted, gold in pairs:
        tp += sum((predicted & gold).values())
        n_pred += sum(predicted.values())
        n_gold += sum(gold.values())
    return _prf(tp, n_pred, n_gold)


def _spans(entities: Sequence[Sequence[Any]] | None) -> Counter[Any]:
    return Counter(tuple(s[:3]) for s in entities or [])


def entity_counts(predicted: Sequence[Sequence[Any]] | None, gold: Sequence[Sequence[Any]]) -> tuple[int, int, int]:
    """One item's true positives, false positives and false negatives over exact ``(type, start, end)``
    spans (summed over items, they give :func:`entity_prf`)."""
    p, g = _spans(predicted), _spans(gold)
    tp = sum((p & g).values())
    return tp, sum(p.values()) - tp, sum(g.values()) - tp


def f1_of_counts(tp: float, fp: float, fn: float) -> float:
    """Micro F1 of summed counts: ``2tp / (2tp + fp + fn)`` (0 without a true positive), as :func:`entity_prf`."""
    return _prf(tp, tp + fp, tp + fn)["f1"]


def entity_prf(predicted: Sequence[Sequence[Sequence[Any]] | None], gold: Sequence[Sequence[Sequence[Any]]]) -> dict[str, float]:
    """Micro precision/recall/F1 over exact ``(type, start, end)`` spans, per item then summed."""
    return _micro((_spans(p), _spans(g)) for p, g in zip(predicted, gold, strict=True))


def _value(text: Any) -> str:
    return " ".join(str(text).lower().split())


def slot_prf(predicted: Sequence[Sequence[Sequence[Any]] | None], gold: Sequence[Sequence[Sequence[Any]]]) -> dict[str, float]:
    """Micro precision/recall/F1 over ``(slot, value)`` pairs (values normalised)."""
    return _micro(
        (Counter((str(s[0]), _value(s[1])) for s in p or []), Counter((str(s[0]), _value(s[1])) for s in g))
        for p, g in zip(predicted, gold, strict=True)
    )


def ndcg_at_k(ranked: Sequence[str], gains: Mapping[str, float], k: int = 10) -> float:
    """nDCG@k with linear gains and log2 discount; the ideal ranking uses every judged relevant doc."""
    dcg = sum(gains.get(doc, 0) / math.log2(rank + 2) for rank, doc in enumerate(ranked[:k]))
    ideal = sum(g / math.log2(rank + 2) for rank, g in enumerate(sorted(gains.values(), reverse=True)[:k]))
    return dcg / ideal if ideal else 0.0


def recall_at_k(ranked: Sequence[str], gains: Mapping[str, float], k: int = 10) -> float:
    """Share of the relevant documents found in the top ``k``."""
    return len(set(ranked[:k]) & gains.keys()) / len(gains) if gains else 0.0


def reciprocal_rank(ranked: Sequence[str], gains: Mapping[str, float]) -> float:
    """1 / rank of the first relevant document (0 when none is returned)."""
    return next((1.0 / (rank + 1) for rank, doc in enumerate(ranked) if doc in gains), 0.0)


def retrieval_scores(predicted: Sequence[Sequence[str] | None], gold: Sequence[Mapping[str, float]], k: int = 10) -> dict[str, float]:
    """Mean nDCG@k, Recall@k and MRR over the queries."""
    if not gold:
        return {f"ndcg@{k}": 0.0, f"recall@{k}": 0.0, "mrr": 0.0}
    ranked = [list(p or []) for p in predicted]
    return {
        f"ndcg@{k}": float(np.mean([ndcg_at_k(r, g, k) for r, g in zip(ranked, gold, strict=True)])),
        f"recall@{k}": float(np.mean([recall_at_k(r, g, k) for r, g in zip(ranked, gold, strict=True)])),
        "mrr": float(np.mean([reciprocal_rank(r, g) for r, g in zip(ranked, gold, strict=True)])),
    }


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def exact_match(predicted: str | None, answers: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised accepted answer."""
    if predicted is None:
        return 0.0
    return float(any(normalize_answer(predicted) == normalize_answer(a) for a in answers))


def token_f1(predicted: str | None, answers: Sequence[str]) -> float:
    """The best token-overlap F1 of the prediction against the accepted answers."""
    tokens = normalize_answer(predicted or "").split()
    best = 0.0
    for answer in answers:
        truth = normalize_answer(answer).split()
        common = sum((Counter(tokens) & Counter(truth)).values())
        if not tokens or not truth:
            best = max(best, float(tokens == truth))
        elif common:
            best = max(best, _prf(common, len(tokens), len(truth))["f1"])
    return best


def qa_scores(predicted: Sequence[str | None], gold: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean exact match and token F1."""
    if not gold:
        return {"exact_match": 0.0, "f1": 0.0}
    return {
        "exact_match": float(np.mean([exact_match(p, g) for p, g in zip(predicted, gold, strict=True)])),
        "f1": float(np.mean([token_f1(p, g) for p, g in zip(predicted, gold, strict=True)])),
    }


def roc_auc(scores: Sequence[float], positive: Sequence[bool]) -> float | None:
    """Probability that a random positive item scores above a random negative one (ties count
    half); ``None`` without both kinds of items."""
    pos = np.asarray([s for s, p in zip(scores, positive, strict=True) if p], dtype=float)
    neg = np.asarray([s for s, p in zip(scores, positive, strict=True) if not p], dtype=float)
    if not len(pos) or not len(neg):
        return None
    ranks = _average_ranks(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing their mean rank."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=float)
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def binary_auc(
    predicted: Sequence[str | None], confidence: Sequence[float | None], gold: Sequence[str], labels: Iterable[str] = ()
) -> float | None:
    """ROC AUC of a two-class classifier from its predictions and their confidences (see the
    module docstring); ``None`` unless there are exactly two classes. Which class is called
    positive does not matter: the AUC of one class's probability is that of the other's."""
    classes = sorted({*gold, *labels})
    if len(classes) != 2:
        return None
    first = classes[0]
    scores = [
        0.5 if p is None or c is None else (c if p == first else 1.0 - c) for p, c in zip(predicted, confidence, strict=True)
    ]
    return roc_auc(scores, [g == first for g in gold])


def constant_baselines(gold: Sequence[str], labels: Iterable[str] = ()) -> dict[str, dict[str, float]]:
    """Accuracy and macro-F1 of answering one class for every item, per class (``always <class>``)."""
    classes = sorted({*gold, *labels})
    return {f"always {c}": classification_scores([c] * len(gold), gold, classes) for c in classes}


def classification_scores(
    predicted: Sequence[str | None], gold: Sequence[str], labels: Iterable[str] = (), confidence: Sequence[float | None] | None = None
) -> dict[str, float]:
    """Accuracy and macro-F1; with ``confidence`` on two-class data, also ``auc``."""
    labels = list(labels)
    scores = {"accuracy": accuracy(predicted, gold), "macro_f1": macro_f1(predicted, gold, labels)}
    auc = binary_auc(predicted, confidence, gold, labels) if confidence is not None else None
    return scores if auc is None else {**scores, "auc": auc}


def score(
    kind: str, predicted: Sequence[Any], gold: Sequence[Any], labels: Iterable[str] = (), confidence: Sequence[float | None] | None = None
) -> dict[str, float]:
    """The task metrics of ``kind`` (see :mod:`moa.eval.datasets`); ``confidence`` (classification) adds the AUC."""
    if kind == "classification":
        return classification_scores(predicted, gold, labels, confidence)
    if kind == "entities":
        return entity_prf(predicted, gold)
    if kind == "slots":
        return slot_prf(predicted, gold)
    if kind == "retrieval":
        return retrieval_scores(predicted, gold)
    return qa_scores(predicted, gold)


HEADLINE = {"classification": "accuracy", "entities": "f1", "slots": "f1", "retrieval": "ndcg@10", "qa": "exact_match"}

_METRIC_NAMES = {"accuracy": "accuracy", "macro_f1": "macro-F1", "auc": "AUC", "precision": "precision", "recall": "recall", "f1": "F1"}


def metric_name(metric: str) -> str:
    """A metric's name in tables and messages (``f1`` → ``F1``, ``macro_f1`` → ``macro-F1``)."""
    return _METRIC_NAMES.get(metric, metric)
"""The one metric each kind is summarised by (plots, comparisons)."""

"""Eval metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest

from moa.eval import metrics


def test_accuracy_and_macro_f1() -> None:
    gold = ["pos", "pos", "pos", "neg"]
    predicted = ["pos", "neg", None, "neg"]  # None: the item failed
    # pos: P 1/1, R 1/3 -> F1 0.5; neg: P 1/2, R 1/1 -> F1 2/3
    scores = metrics.classification_scores(predicted, gold)
    assert scores["accuracy"] == pytest.approx(0.5)
    assert scores["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    classes = metrics.per_class(predicted, gold, labels=["pos", "neg", "neutral"])
    assert set(classes) == {"pos", "neg"}  # neither gold nor predicted: left out
    assert classes["neg"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1.0})


def test_auc_ranks_the_probability_of_one_class_with_ties_counting_half() -> None:
    assert metrics.roc_auc([0.9, 0.8, 0.3, 0.1], [True, True, False, False]) == 1.0
    assert metrics.roc_auc([0.1, 0.3, 0.8, 0.9], [True, True, False, False]) == 0.0
    assert metrics.roc_auc([0.5, 0.5], [True, False]) == 0.5
    assert metrics.roc_auc([0.9, 0.4, 0.4, 0.1], [True, True, False, False]) == pytest.approx(0.875)  # 3.5 of 4 pairs
    assert metrics.roc_auc([0.9, 0.8], [True, True]) is None


def test_binary_auc_from_predictions_and_confidences() -> None:
    gold = ["yes", "yes", "no", "no"]
    # P(yes): 0.9, 0.6, 1 - 0.7 = 0.3, and 0.5 for the failed item
    predicted = ["yes", "yes", "no", None]
    confidence = [0.9, 0.6, 0.7, None]
    assert metrics.binary_auc(predicted, confidence, gold) == 1.0
    assert metrics.binary_auc(predicted, confidence, gold, labels=["a"]) is None  # three classes: no AUC
    scores = metrics.classification_scores(predicted, gold, confidence=confidence)
    assert scores["auc"] == 1.0
    assert "auc" not in metrics.classification_scores(predicted, gold)


def test_constant_baselines_answer_one_class_for_every_item() -> None:
    baselines = metrics.constant_baselines(["neutral", "neutral", "positive", "negative"], labels=["negative", "neutral", "positive"])
    assert baselines["always neutral"] == pytest.approx({"accuracy": 0.5, "macro_f1": (2 / 3) / 3})
    assert baselines["always negative"]["accuracy"] == 0.25
    assert max(b["accuracy"] for b in baselines.values()) == 0.5  # the majority baseline


def test_a_class_predicted_but_never_gold_lowers_macro_f1() -> None:
    assert metrics.macro_f1(["a", "b"], ["a", "a"]) == pytest.approx((2 / 3 + 0.0) / 2)


def test_entity_prf_needs_exact_type_and_span() -> None:
    gold = [[["person", 0, 4], ["location", 10, 15]], [["product", 3, 8]]]
    predicted = [[["person", 0, 4], ["location", 10, 14]], [["corporation", 3, 8], ["product", 20, 22]]]
    # 1 true positive of 4 predicted, 3 gold
    assert metrics.entity_prf(predicted, gold) == pytest.approx({"precision": 0.25, "recall": 1 / 3, "f1": 2 * 0.25 * (1 / 3) / (0.25 + 1 / 3)})
    assert metrics.entity_prf([None], [[["person", 0, 1]]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_slot_prf_normalises_values_and_counts_pairs() -> None:
    gold = [[["city", "New  York"], ["date", "tomorrow"]]]
    predicted = [[["city", "new york"], ["date", "today"], ["date", "tomorrow"]]]
    assert metrics.slot_prf(predicted, gold) == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8})


def test_retrieval_metrics() -> None:
    gains = {"a": 3, "b": 1}
    ranked = ["x", "a", "y", "b"]
    dcg = 3 / math.log2(3) + 1 / math.log2(5)
    ideal = 3 / math.log2(2) + 1 / math.log2(3)
    assert metrics.ndcg_at_k(ranked, gains) == pytest.approx(dcg / ideal)
    assert metrics.recall_at_k(ranked, gains, k=2) == 0.5
    assert metrics.reciprocal_rank(ranked, gains) == 0.5
    assert metrics.reciprocal_rank(["x"], gains) == 0.0
    scores = metrics.retrieval_scores([ranked, None], [gains, {"z": 1}])
    assert scores["mrr"] == pytest.approx(0.25) and scores["recall@10"] == pytest.approx(0.5)


def test_qa_exact_match_and_f1() -> None:
    assert metrics.normalize_answer("The  Peregrine Falcon!") == "peregrine falcon"
    assert metrics.exact_match("the peregrine falcon.", ["Peregrine falcon"]) == 1.0
    assert metrics.exact_match(None, ["x"]) == 0.0
    # "falcon flies" vs "peregrine falcon": 1 common token, P 1/2, R 1/2
    assert metrics.token_f1("falcon flies", ["peregrine falcon"]) == pytest.approx(0.5)
    assert metrics.token_f1("falcon", ["nope", "peregrine falcon"]) == pytest.approx(2 / 3)
    assert metrics.qa_scores(["Mariana Trench", "no idea"], [["Mariana Trench"], ["Sonoran Desert"]]) == {"exact_match": 0.5, "f1": 0.5}

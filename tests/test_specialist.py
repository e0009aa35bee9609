"""moa.learning.specialist: softmax regression on embeddings, temperature scaling, save/load, training.

Unit tests use a bag-of-words hashing embedder (64 dims) and synthetic vectors; the tests
marked ``real`` train on the public SST-2 and SMS spam data with the shipped MiniLM model.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from support.eval_data import EVAL, needs_eval

from moa.errors import ErrorCode, UserError
from moa.learning.calibration import expected_calibration_error
from moa.learning.labelled import LabelledSet, load_labelled
from moa.learning.specialist import Specialist, TrainReport, _fit_temperature, macro_f1, train_specialist
from moa.models.embeddings import Embedder, make_embedder
from moa.testing import FakeEmbedder

HashEmbedder = FakeEmbedder


POSITIVE = ["great", "wonderful", "superb", "lovely", "delightful", "brilliant"]
NEGATIVE = ["awful", "terrible", "boring", "dreadful", "dull", "horrible"]
FILLER = ["the", "film", "was", "a", "plot", "actors", "story", "really", "quite", "and", "movie", "scenes"]


def synthetic_reviews(n: int, seed: int) -> LabelledSet:
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        label = "positive" if i % 2 else "negative"
        words = list(rng.choice(FILLER, size=6)) + list(rng.choice(POSITIVE if i % 2 else NEGATIVE, size=2))
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return LabelledSet(texts=texts, labels=labels, source=f"synthetic:{seed}")


def gaussian_blobs(
    counts: dict[str, int], *, dim: int = 16, spread: float = 1.0, seed: int = 0, draw: int = 0
) -> tuple[np.ndarray, list[str]]:
    """Overlapping Gaussian classes around centres chosen by ``seed``; ``draw`` picks the sample.

    Not normalised: the specialist does that.
    """
    centres = np.random.default_rng(seed).normal(size=(len(counts), dim))
    rng = np.random.default_rng([seed, draw])
    xs, labels = [], []
    for centre, (label, n) in zip(centres, counts.items(), strict=True):
        xs.append(centre + spread * rng.normal(size=(n, dim)))
        labels += [label] * n
    return np.vstack(xs), labels


def embed(embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
    return np.asarray(embedder.embed(list(texts)))


# --- fitting and predicting -------------------------------------------------------------------


def test_fit_and_predict_on_bag_of_words() -> None:
    embedder = HashEmbedder()
    train, test = synthetic_reviews(300, seed=0), synthetic_reviews(100, seed=1)
    specialist = Specialist.fit(embed(embedder, train.texts), train.labels, embedder="hash64", key="sentiment:test")
    assert specialist.classes == ["negative", "positive"]
    predictions = specialist.predict(embed(embedder, test.texts))
    accuracy = np.mean([p == y for (p, _), y in zip(predictions, test.labels, strict=True)])
    assert accuracy > 0.9
    assert all(0.5 <= conf <= 1.0 for _, conf in predictions)
    assert specialist.trained_on == 300
    assert specialist.holdout_accuracy is not None and specialist.holdout_accuracy > 0.85
    assert specialist.holdout_n == 60
    assert specialist.embedder == "hash64" and specialist.key == "sentiment:test"


def test_probabilities_sum_to_one_and_match_predict() -> None:
    x, labels = gaussian_blobs({"a": 60, "b": 50, "c": 40})
    specialist = Specialist.fit(x, labels)
    probs = specialist.predict_proba(x)
    assert probs.shape == (150, 3)
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert np.all(probs >= 0)
    predictions = specialist.predict(x)
    assert [p for p, _ in predictions] == [specialist.classes[i] for i in probs.argmax(axis=1)]
    assert [c for _, c in predictions] == pytest.approx(probs.max(axis=1).tolist())
    single = specialist.predict_proba(x[0])  # one vector is one row
    assert single.shape == (1, 3) and np.allclose(single, probs[:1])
    assert specialist.predict([]) == []
    assert specialist.predict_proba(np.zeros((0, 16))).shape == (0, 3)


def test_inputs_are_normalised() -> None:
    x, labels = gaussian_blobs({"a": 30, "b": 30})
    specialist = Specialist.fit(x, labels)
    assert np.allclose(specialist.predict_proba(x), specialist.predict_proba(x * 17.0))


def test_fit_is_deterministic_and_optimal() -> None:
    x, labels = gaussian_blobs({"a": 80, "b": 40}, spread=2.0)
    a = Specialist.fit(x, labels, l2=1e-2, calibrate=False)
    b = Specialist.fit(x, labels, l2=1e-2, calibrate=False)
    assert np.array_equal(a.weights, b.weights) and np.array_equal(a.bias, b.bias)

    # an independent evaluation of the objective: no small step in any direction lowers it
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = np.array([a.classes.index(label) for label in labels])
    weight = np.where(y == 0, 120 / (2 * 80), 120 / (2 * 40))
    weight = weight / weight.sum()

    def objective(w: np.ndarray, bias: np.ndarray) -> float:
        z = xn @ w + bias
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-(weight * logp[np.arange(len(y)), y]).sum() + 0.5 * 1e-2 * (w * w).sum())

    best = objective(a.weights, a.bias)
    rng = np.random.default_rng(0)
    for _ in range(20):
        dw, db = rng.normal(size=a.weights.shape), rng.normal(size=a.bias.shape)
        for eps in (1e-2, 1e-3):
            assert objective(a.weights + eps * dw, a.bias + eps * db) >= best - 1e-9


def test_balanced_class_weights_raise_minority_recall() -> None:
    x, labels = gaussian_blobs({"ham": 950, "spam": 50}, dim=8, spread=2.5, seed=4)
    x_test, labels_test = gaussian_blobs({"ham": 950, "spam": 50}, dim=8, spread=2.5, seed=4, draw=1)

    def spam_recall(specialist: Specialist) -> float:
        predicted = [p for p, _ in specialist.predict(x_test)]
        spam = [i for i, label in enumerate(labels_test) if label == "spam"]
        return float(np.mean([predicted[i] == "spam" for i in spam]))

    balanced = spam_recall(Specialist.fit(x, labels, l2=1e-2))
    plain = spam_recall(Specialist.fit(x, labels, l2=1e-2, balanced=False))
    assert balanced > plain + 0.2
    assert balanced > 0.6


def test_temperature_is_recovered_from_known_logits() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=4.0, size=(5000, 3))
    true_t = 2.5
    p = np.exp(logits / true_t)
    p /= p.sum(axis=1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in p])
    assert _fit_temperature(logits, y) == pytest.approx(true_t, rel=0.1)


def test_temperature_fitted_only_with_enough_data() -> None:
    x, labels = gaussian_blobs({"a": 15, "b": 15})
    small = Specialist.fit(x, labels)
    assert small.temperature == 1.0 and small.holdout_accuracy is None and small.holdout_n == 0
    x, labels = gaussian_blobs({"a": 200, "b": 200}, spread=3.0)
    large = Specialist.fit(x, labels)
    assert large.temperature != 1.0 and large.holdout_accuracy is not None and large.holdout_n == 80


def test_calibrated_probabilities_are_not_overconfident() -> None:
    # noisy overlapping classes: the unscaled model is over-confident, the temperature fixes it
    x, labels = gaussian_blobs({"a": 400, "b": 400}, dim=64, spread=6.0, seed=2)
    x_test, labels_test = gaussian_blobs({"a": 1000, "b": 1000}, dim=64, spread=6.0, seed=2, draw=1)
    scaled = Specialist.fit(x, labels, l2=1e-4)
    raw = Specialist.fit(x, labels, l2=1e-4, calibrate=False)
    assert scaled.temperature > 1.0

    def ece(specialist: Specialist) -> float:
        predictions = specialist.predict(x_test)
        return expected_calibration_error([c for _, c in predictions], [p == y for (p, _), y in zip(predictions, labels_test, strict=True)])

    assert ece(scaled) < ece(raw)


def test_macro_f1() -> None:
    assert macro_f1([0, 0, 1, 1], [0, 0, 1, 1], 2) == 1.0
    # class 0: p=1 r=0.5 f1=2/3; class 1: p=2/3 r=1 f1=0.8
    assert macro_f1([0, 0, 1, 1], [0, 1, 1, 1], 2) == pytest.approx((2 / 3 + 0.8) / 2)


def test_fit_errors() -> None:
    x, labels = gaussian_blobs({"a": 10, "b": 10})
    with pytest.raises(UserError, match="only one class 'a'"):
        Specialist.fit(x[:10], labels[:10])
    with pytest.raises(UserError, match="20 embeddings but 19 labels"):
        Specialist.fit(x, labels[:-1])
    with pytest.raises(UserError, match="l2 must be positive"):
        Specialist.fit(x, labels, l2=0)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(UserError, match="NaN"):
        Specialist.fit(bad, labels)


def test_dimension_mismatch_says_to_retrain() -> None:
    x, labels = gaussian_blobs({"a": 10, "b": 10}, dim=16)
    specialist = Specialist.fit(x, labels, embedder="hash16", key="k")
    with pytest.raises(UserError) as info:
        specialist.predict(np.ones((2, 384)))
    assert info.value.code == ErrorCode.BAD_CONFIG
    assert "takes 16-d embeddings (embedder hash16) but got 384-d" in info.value.message
    assert "moa train" in info.value.message


# --- persistence ------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path: Path) -> None:
    x, labels = gaussian_blobs({"neg": 60, "pos": 50, "neu": 30})
    specialist = Specialist.fit(x, labels, embedder="hash64", source="data.tsv", key="sentiment:labels=neg,neu,pos")
    path = tmp_path / "specialists" / "sentiment.npz"
    specialist.save(path)
    assert path.is_file() and not list(path.parent.glob(".*tmp"))
    loaded = Specialist.load(path)
    assert loaded.predict(x) == specialist.predict(x)
    assert np.array_equal(loaded.predict_proba(x), specialist.predict_proba(x))
    assert loaded.metadata() == specialist.metadata()
    assert loaded.classes == ["neg", "neu", "pos"]
    with np.load(path, allow_pickle=False) as data:
        assert set(data.files) == {"weights", "bias", "meta"}
        assert json.loads(str(data["meta"]))["key"] == "sentiment:labels=neg,neu,pos"


def test_save_keeps_the_given_name(tmp_path: Path) -> None:
    x, labels = gaussian_blobs({"a": 10, "b": 10})
    Specialist.fit(x, labels).save(tmp_path / "model.bin")
    assert (tmp_path / "model.bin").is_file() and not (tmp_path / "model.bin.npz").exists()


def test_save_to_unwritable_place(tmp_path: Path) -> None:
    x, labels = gaussian_blobs({"a": 10, "b": 10})
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(UserError, match="cannot write the specialist"):
        Specialist.fit(x, labels).save(tmp_path / "file" / "s.npz")


def test_load_missing_or_corrupt(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        Specialist.load(tmp_path / "none.npz")
    assert "no specialist at" in info.value.message and "moa train" in info.value.message

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip file")
    x, labels = gaussian_blobs({"a": 10, "b": 10})
    good = tmp_path / "good.npz"
    Specialist.fit(x, labels).save(good)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    wrong_version = tmp_path / "v99.npz"
    with np.load(good) as data:
        meta = json.loads(str(data["meta"]))
        np.savez(wrong_version, weights=data["weights"], bias=data["bias"], meta=np.array(json.dumps({**meta, "format": 99})))
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, weights=np.array([object()], dtype=object), bias=np.zeros(2), meta=np.array("{}"))
    for path in (garbage, truncated, wrong_version, pickled):
        with pytest.raises(UserError) as info:
            Specialist.load(path)
        assert info.value.code == ErrorCode.INPUT_FILE
        assert "corrupt" in info.value.message and "re-run `moa train`" in info.value.message, path


# --- training from a LabelledSet --------------------------------------------------------------


async def test_train_specialist_embeds_in_batches() -> None:
    embedder = HashEmbedder()
    data = synthetic_reviews(250, seed=0)
    specialist, report = await train_specialist(embedder, data, key="sentiment", source="synthetic", batch_size=100)
    assert embedder.calls == [100, 100, 50]
    assert isinstance(report, TrainReport)
    assert report.n == 250 and report.classes == ["negative", "positive"]
    assert report.counts == {"negative": 125, "positive": 125}
    assert report.holdout_n == 50
    assert report.holdout_accuracy is not None and report.holdout_accuracy > 0.85
    assert report.holdout_macro_f1 is not None and report.holdout_macro_f1 > 0.85
    assert report.embed_seconds >= 0 and report.fit_seconds >= 0
    assert specialist.embedder == "hash64" and specialist.source == "synthetic" and specialist.key == "sentiment"
    assert specialist.temperature == report.temperature


async def test_train_specialist_checks_the_embedder() -> None:
    class Short(HashEmbedder):
        def embed(self, texts: Sequence[str]) -> list[list[float]]:
            return super().embed(texts)[:-1]

    with pytest.raises(UserError, match="returned 9 vectors for 10 texts"):
        await train_specialist(Short(), synthetic_reviews(10, seed=0), key="k", source="s")


# --- real: MiniLM on public data --------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm() -> Embedder:
    return make_embedder("minilm")


async def train_and_test(embedder: Embedder, data: LabelledSet, key: str) -> tuple[list[tuple[str, float]], LabelledSet, TrainReport]:
    train, test = data.split(0.3, seed=0)
    specialist, report = await train_specialist(embedder, train, key=key, source=data.source)
    predictions = specialist.predict(np.asarray(await embedder.aembed(test.texts)))
    return predictions, test, report


def accuracy(predictions: list[tuple[str, float]], truth: Sequence[str]) -> float:
    return float(np.mean([p == y for (p, _), y in zip(predictions, truth, strict=True)]))


@pytest.mark.real
@needs_eval
async def test_real_sst2_sentiment(minilm: Embedder) -> None:
    data = load_labelled(EVAL / "sentiment" / "sst2_dev.tsv", label_map={"1": "positive", "0": "negative"})
    predictions, test, report = await train_and_test(minilm, data, "sentiment:labels=negative,positive")
    assert len(test) == 262
    assert accuracy(predictions, test.labels) > 0.7
    assert report.holdout_accuracy is not None and report.holdout_accuracy > 0.7
    assert report.fit_seconds < 10
    correct = [p == y for (p, _), y in zip(predictions, test.labels, strict=True)]
    assert expected_calibration_error([c for _, c in predictions], correct) < 0.1


@pytest.mark.real
@needs_eval
async def test_real_sms_spam(minilm: Embedder) -> None:
    data = load_labelled(EVAL / "filtering" / "sms_spam.tsv").sample(1500, seed=0)
    assert Counter(data.labels) == {"ham": 1299, "spam": 201}
    predictions, test, report = await train_and_test(minilm, data, "filtering:labels=ham,spam")
    assert accuracy(predictions, test.labels) > 0.9
    spam = [i for i, label in enumerate(test.labels) if label == "spam"]
    recall = float(np.mean([predictions[i][0] == "spam" for i in spam]))
    assert recall > 0.6
    assert report.holdout_macro_f1 is not None and report.holdout_macro_f1 > 0.8

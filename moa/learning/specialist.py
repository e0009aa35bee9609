"""Specialists: small classifiers trained on the shared sentence embeddings.

A :class:`Specialist` is multinomial logistic regression (softmax) on L2-normalised
embeddings, fitted with numpy only:

* Objective: class-weighted mean cross-entropy + ``l2 / 2 * ||W||^2`` (the bias is not
  penalised). Class weights are "balanced" by default (``n / (k * n_class)``), so a rare
  class (13% spam in the SMS collection) is not drowned by the common one.
* Optimiser: L-BFGS (10 pairs of history) with a backtracking Armijo line search, started
  from zero weights. The problem is strictly convex, so the result is unique and
  deterministic; a few hundred cheap iterations on a few thousand 384-d vectors take well
  under a second.
* Calibration: temperature scaling (Guo et al. 2017). With enough data (>= 40 items and >= 5
  per class) a stratified 20% is held out, a model fitted on the rest, and the temperature
  ``T`` that minimises the held-out negative log-likelihood of ``softmax(z / T)`` is found by
  golden-section search over ``log(1/T)`` (the NLL is convex in ``1/T``). The held-out
  accuracy and macro-F1 are kept; then the final model is refitted on all the data and
  keeps ``T``. Without enough data, ``T = 1`` and there is no held-out score.

Prediction is one matrix product: microseconds per item once the texts are embedded.

A specialist is saved as one ``.npz`` file (weights, bias and a JSON metadata string), read
back with ``allow_pickle=False``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from moa.errors import ErrorCode, UserError
from moa.files import atomic_write, load_npz
from moa.logs import get_logger

if TYPE_CHECKING:
    from moa.learning.labelled import LabelledSet
    from moa.models.embeddings import Embedder

log = get_logger(__name__)

FloatArray = npt.NDArray[np.float64]

FORMAT_VERSION = 1
#: Held-out share used to fit the temperature and score the model.
HOLDOUT_FRACTION = 0.2
#: Fewest items, and fewest items per class, for a held-out split (else T = 1).
MIN_HOLDOUT_ITEMS = 40
MIN_HOLDOUT_PER_CLASS = 5


class TrainReport(BaseModel):
    """What :func:`train_specialist` did and how well the result did on its held-out split."""

    key: str
    source: str
    embedder: str
    n: int
    classes: list[str]
    counts: dict[str, int]
    holdout_n: int
    holdout_accuracy: float | None
    holdout_macro_f1: float | None
    temperature: float
    embed_seconds: float
    fit_seconds: float


class Specialist:
    """Softmax regression on normalised embeddings, with a fitted temperature and metadata."""

    def __init__(
        self,
        *,
        classes: Sequence[str],
        weights: FloatArray,
        bias: FloatArray,
        temperature: float = 1.0,
        embedder: str = "",
        trained_on: int = 0,
        created: str | None = None,
        source: str = "",
        holdout_accuracy: float | None = None,
        holdout_macro_f1: float | None = None,
        holdout_n: int = 0,
        key: str = "",
    ) -> None:
        self.classes: list[str] = list(classes)
        self.weights: FloatArray = np.asarray(weights, dtype=np.float64)
        self.bias: FloatArray = np.asarray(bias, dtype=np.float64)
        if self.weights.ndim != 2 or self.weights.shape[1] != len(self.classes) or self.bias.shape != (len(self.classes),):
            raise ValueError(
                f"weights {self.weights.shape} and bias {self.bias.shape} do not fit {len(self.classes)} classes"
            )
        self.temperature = float(temperature)
        self.embedder = embedder
        self.trained_on = trained_on
        self.created = created or datetime.now(UTC).isoformat(timespec="seconds")
        self.source = source
        self.holdout_accuracy = holdout_accuracy
        self.holdout_macro_f1 = holdout_macro_f1
        self.holdout_n = holdout_n
        self.key = key

    def __repr__(self) -> str:
        return (
            f"Specialist(key={self.key!r}, classes={self.classes}, dimension={self.dimension}, "
            f"trained_on={self.trained_on}, temperature={self.temperature:.3g})"
        )

    @property
    def dimension(self) -> int:
        """Length of the embeddings this specialist takes."""
        return int(self.weights.shape[0])

    # --- fitting ------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        embeddings: npt.ArrayLike,
        labels: Sequence[str],
        *,
        l2: float = 1e-3,
        seed: int = 0,
        balanced: bool = True,
        calibrate: bool = True,
        embedder: str = "",
        source: str = "",
        key: str = "",
    ) -> Specialist:
        """Fit on ``embeddings`` (n x d) with one label each; see the module docstring.

        ``seed`` only chooses the held-out split; the optimisation itself is deterministic.
        """
        x = _normalise(_as_matrix(embeddings, None))
        labels = [str(label) for label in labels]
        if x.shape[0] != len(labels):
            raise UserError(ErrorCode.BAD_CONFIG, f"{x.shape[0]} embeddings but {len(labels)} labels; give one label per embedding")
        if l2 <= 0:
            raise UserError(ErrorCode.BAD_CONFIG, f"l2 must be positive, got {l2}")
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise UserError(
                ErrorCode.INPUT_FILE,
                f"only one class {classes[0]!r} in the training data: a classifier needs at least two"
                if classes
                else "no training data: give labelled examples of at least two classes",
            )
        y = np.array([classes.index(label) for label in labels])
        counts = np.bincount(y, minlength=len(classes))

        temperature, holdout_acc, holdout_f1, holdout_n = 1.0, None, None, 0
        if calibrate and len(y) >= MIN_HOLDOUT_ITEMS and counts.min() >= MIN_HOLDOUT_PER_CLASS:
            test = _stratified_holdout(y, HOLDOUT_FRACTION, seed)
            train = np.setdiff1d(np.arange(len(y)), test)
            w, b = _fit_softmax(x[train], y[train], len(classes), l2=l2, balanced=balanced)
            logits = x[test] @ w + b
            temperature = _fit_temperature(logits, y[test])
            predicted = logits.argmax(axis=1)
            holdout_acc = float((predicted == y[test]).mean())
            holdout_f1 = macro_f1(y[test], predicted, len(classes))
            holdout_n = len(test)
        w, b = _fit_softmax(x, y, len(classes), l2=l2, balanced=balanced)
        return cls(
            classes=classes,
            weights=w,
            bias=b,
            temperature=temperature,
            embedder=embedder,
            trained_on=len(y),
            source=source,
            holdout_accuracy=holdout_acc,
            holdout_macro_f1=holdout_f1,
            holdout_n=holdout_n,
            key=key,
        )

    # --- prediction ---------------------------------------------------------------------------

    def logits(self, embeddings: npt.ArrayLike) -> FloatArray:
        """Raw class scores (before the temperature), n x classes."""
        x = _normalise(_as_matrix(embeddings, self))
        scores: FloatArray = x @ self.weights + self.bias
        return scores

    def predict_proba(self, embeddings: npt.ArrayLike) -> FloatArray:
        """Calibrated class probabilities, n x classes (columns in :attr:`classes` order)."""
        return _softmax(self.logits(embeddings) / self.temperature)

    def predict(self, embeddings: npt.ArrayLike) -> list[tuple[str, float]]:
        """The most probable class of each embedding and its probability."""
        probs = self.predict_proba(embeddings)
        best = probs.argmax(axis=1)
        return [(self.classes[int(i)], float(probs[row, i])) for row, i in enumerate(best)]

    # --- persistence --------------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        """Everything but the arrays, as JSON-ready values."""
        return {
            "format": FORMAT_VERSION,
            "classes": self.classes,
            "temperature": self.temperature,
            "embedder": self.embedder,
            "trained_on": self.trained_on,
            "created": self.created,
            "source": self.source,
            "holdout_accuracy": self.holdout_accuracy,
            "holdout_macro_f1": self.holdout_macro_f1,
            "holdout_n": self.holdout_n,
            "key": self.key,
        }

    def save(self, path: Path) -> None:
        """Write one ``.npz`` file (atomically: a temporary file, then a rename)."""
        atomic_write(path, lambda f: np.savez(f, weights=self.weights, bias=self.bias, meta=np.array(json.dumps(self.metadata()))), "the specialist")
        log.debug("specialist_saved", path=str(path), key=self.key, classes=self.classes)

    @classmethod
    def from_arrays(cls, meta: dict[str, Any], weights: FloatArray, bias: FloatArray) -> Specialist:
        """A specialist from the metadata :meth:`metadata` wrote and its weights (what a file holds)."""
        return cls(
            classes=[str(c) for c in meta["classes"]],
            weights=weights,
            bias=bias,
            temperature=float(meta["temperature"]),
            embedder=str(meta["embedder"]),
            trained_on=int(meta["trained_on"]),
            created=str(meta["created"]),
            source=str(meta["source"]),
            holdout_accuracy=_optional_float(meta.get("holdout_accuracy")),
            holdout_macro_f1=_optional_float(meta.get("holdout_macro_f1")),
            holdout_n=int(meta.get("holdout_n", 0)),
            key=str(meta["key"]),
        )

    @classmethod
    def load(cls, path: Path) -> Specialist:
        """Read a file written by :meth:`save`."""

        def build(data: Any, meta: dict[str, Any]) -> Specialist:
            return cls.from_arrays(meta, data["weights"], data["bias"])

        return load_npz(path, "specialist", "re-run `moa train` to train it again", build, FORMAT_VERSION)


async def train_specialist(
    embedder: Embedder,
    data: LabelledSet,
    *,
    key: str,
    source: str,
    batch_size: int = 256,
    l2: float = 1e-3,
    seed: int = 0,
    balanced: bool = True,
) -> tuple[Specialist, TrainReport]:
    """Embed ``data`` with ``embedder`` (``batch_size`` texts per ``aembed`` call) and fit a specialist."""
    if batch_size < 1:
        raise UserError(ErrorCode.BAD_CONFIG, f"batch_size must be at least 1, got {batch_size}")
    start = time.perf_counter()
    vectors: list[list[float]] = []
    for i in range(0, len(data.texts), batch_size):
        batch = data.texts[i : i + batch_size]
        got = await embedder.aembed(batch)
        if len(got) != len(batch):
            raise UserError(
                ErrorCode.EMBEDDER_UNAVAILABLE, f"embedder {embedder.name} returned {len(got)} vectors for {len(batch)} texts"
            )
        vectors.extend(got)
    embed_seconds = time.perf_counter() - start
    x = np.asarray(vectors, dtype=np.float64).reshape(len(vectors), -1)
    start = time.perf_counter()
    fit = functools.partial(
        Specialist.fit, x, data.labels, l2=l2, seed=seed, balanced=balanced, embedder=embedder.name, source=source, key=key
    )
    specialist = await asyncio.to_thread(fit)
    fit_seconds = time.perf_counter() - start
    counts = data.counts()
    report = TrainReport(
        key=key,
        source=source,
        embedder=embedder.name,
        n=len(data),
        classes=specialist.classes,
        counts=counts,
        holdout_n=specialist.holdout_n,
        holdout_accuracy=specialist.holdout_accuracy,
        holdout_macro_f1=specialist.holdout_macro_f1,
        temperature=specialist.temperature,
        embed_seconds=round(embed_seconds, 3),
        fit_seconds=round(fit_seconds, 3),
    )
    log.info(
        "specialist_trained",
        key=key,
        n=report.n,
        classes=report.classes,
        holdout_accuracy=report.holdout_accuracy,
        temperature=round(report.temperature, 3),
        embed_seconds=report.embed_seconds,
        fit_seconds=report.fit_seconds,
    )
    return specialist, report


# --- numerics ---------------------------------------------------------------------------------


def macro_f1(y_true: npt.ArrayLike, y_pred: npt.ArrayLike, n_classes: int) -> float:
    """Unweighted mean of the per-class F1 scores (a class never true nor predicted scores 0)."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    scores = []
    for c in range(n_classes):
        tp = float(np.sum((t == c) & (p == c)))
        denominator = float(np.sum(t == c) + np.sum(p == c))
        scores.append(2 * tp / denominator if denominator else 0.0)
    return float(np.mean(scores))


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _as_matrix(embeddings: npt.ArrayLike, specialist: Specialist | None) -> FloatArray:
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim == 1 and x.size == 0:  # no embeddings at all
        x = x.reshape(0, specialist.dimension if specialist is not None else 0)
    elif x.ndim == 1:  # one embedding
        x = x.reshape(1, -1)
    if x.ndim != 2:
        raise UserError(ErrorCode.INVALID_INPUT, f"embeddings must be a matrix (n x d), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise UserError(ErrorCode.INVALID_INPUT, "embeddings contain NaN or infinite values; check the embedder")
    if specialist is not None and x.shape[0] and x.shape[1] != specialist.dimension:
        raise UserError(
            ErrorCode.BAD_CONFIG,
            f"the specialist{f' {specialist.key!r}' if specialist.key else ''} takes {specialist.dimension}-d embeddings "
            f"(embedder {specialist.embedder or 'unknown'}) but got {x.shape[1]}-d ones; "
            "use the same embedder or re-run `moa train` with this one",
        )
    return x


def _normalise(x: FloatArray) -> FloatArray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: FloatArray = x / np.clip(norms, 1e-12, None)
    return out


def _softmax(z: FloatArray) -> FloatArray:
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    out: FloatArray = e / e.sum(axis=1, keepdims=True)
    return out


def _log_softmax(z: FloatArray) -> FloatArray:
    shifted = z - z.max(axis=1, keepdims=True)
    out: FloatArray = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return out


def _stratified_holdout(y: npt.NDArray[np.int_], fraction: float, seed: int) -> npt.NDArray[np.int_]:
    """Indices of a stratified held-out sample: ``round(fraction * n_c)`` of each class (>= 1, < n_c)."""
    rng = np.random.default_rng(seed)
    picked: list[npt.NDArray[np.int_]] = []
    for c in range(int(y.max()) + 1):
        members = np.flatnonzero(y == c)
        k = min(max(round(len(members) * fraction), 1), len(members) - 1)
        picked.append(members[rng.permutation(len(members))[:k]])
    return np.sort(np.concatenate(picked))


def _fit_softmax(
    x: FloatArray, y: npt.NDArray[np.int_], n_classes: int, *, l2: float, balanced: bool
) -> tuple[FloatArray, FloatArray]:
    """Minimise weighted mean cross-entropy + l2/2 ||W||^2 with L-BFGS; returns (W: d x k, b: k)."""
    n, d = x.shape
    k = n_classes
    onehot = np.zeros((n, k))
    onehot[np.arange(n), y] = 1.0
    counts = np.bincount(y, minlength=k).astype(np.float64)
    if balanced:
        class_weight = np.where(counts > 0, n / (k * np.clip(counts, 1, None)), 0.0)
    else:
        class_weight = np.ones(k)
    sample_weight = class_weight[y]
    sample_weight = sample_weight / sample_weight.sum()

    def objective(theta: FloatArray) -> tuple[float, FloatArray]:
        w = theta[: d * k].reshape(d, k)
        b = theta[d * k :]
        z = x @ w + b
        logp = _log_softmax(z)
        loss = -float(np.sum(sample_weight * np.sum(onehot * logp, axis=1))) + 0.5 * l2 * float(np.sum(w * w))
        residual = (np.exp(logp) - onehot) * sample_weight[:, None]
        grad_w = x.T @ residual + l2 * w
        grad_b = residual.sum(axis=0)
        return loss, np.concatenate([grad_w.ravel(), grad_b])

    theta = _lbfgs(objective, np.zeros(d * k + k))
    return theta[: d * k].reshape(d, k).copy(), theta[d * k :].copy()


def _lbfgs(
    objective: Callable[[FloatArray], tuple[float, FloatArray]],
    theta: FloatArray,
    *,
    history: int = 10,
    max_iter: int = 2000,
    gtol: float = 1e-6,
    ftol: float = 1e-12,
) -> FloatArray:
    """Limited-memory BFGS with a backtracking (Armijo) line search; deterministic."""
    loss, grad = objective(theta)
    s_list: list[FloatArray] = []
    y_list: list[FloatArray] = []
    for iteration in range(max_iter):
        if float(np.max(np.abs(grad))) < gtol:
            break
        # two-loop recursion: direction = -H grad
        q = grad.copy()
        alphas: list[float] = []
        for s, yv in zip(reversed(s_list), reversed(y_list), strict=True):
            a = float(s @ q) / float(yv @ s)
            alphas.append(a)
            q -= a * yv
        if s_list:
            q *= float(s_list[-1] @ y_list[-1]) / float(y_list[-1] @ y_list[-1])
        else:
            q /= max(float(np.linalg.norm(grad)), 1e-12)
        for s, yv, a in zip(s_list, y_list, reversed(alphas), strict=True):
            beta = float(yv @ q) / float(yv @ s)
            q += (a - beta) * s
        direction = -q
        slope = float(grad @ direction)
        if slope >= 0:  # not a descent direction: restart from steepest descent
            s_list.clear()
            y_list.clear()
            direction = -grad / max(float(np.linalg.norm(grad)), 1e-12)
            slope = float(grad @ direction)
        step = 1.0
        for _ in range(50):
            candidate = theta + step * direction
            new_loss, new_grad = objective(candidate)
            if new_loss <= loss + 1e-4 * step * slope:
                break
            step *= 0.5
        else:
            log.debug("lbfgs_line_search_failed", iteration=iteration)
            break
        s_vec, y_vec = candidate - theta, new_grad - grad
        if float(s_vec @ y_vec) > 1e-12:
            s_list.append(s_vec)
            y_list.append(y_vec)
            if len(s_list) > history:
                s_list.pop(0)
                y_list.pop(0)
        improvement = loss - new_loss
        theta, loss, grad = candidate, new_loss, new_grad
        if improvement <= ftol * max(abs(loss), 1.0):
            break
    return theta


def _fit_temperature(logits: FloatArray, y: npt.NDArray[np.int_]) -> float:
    """The T minimising mean NLL of softmax(logits / T): golden-section search on log(1/T) in [-5, 5]."""

    def nll(log_beta: float) -> float:
        logp = _log_softmax(logits * np.exp(log_beta))
        return -float(np.mean(logp[np.arange(len(y)), y]))

    lo, hi = -5.0, 5.0
    ratio = (np.sqrt(5.0) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(80):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(b)
    return float(np.exp(-(lo + hi) / 2))

"""Entity taggers: a linear-chain CRF over word features (python-crfsuite), the extraction specialist.

A :class:`Tagger` finds entity mentions in a text with exact character spans:

* Tokens: :func:`tokenize` splits a text into URLs, ``@user`` / ``#tag`` handles, words (with inner
  ``-``, ``.``, ``&``), clitics (``'s``) and single other characters, each with its offsets, so a
  span is always a slice of the input (repeated words, emoji and URLs included).
* Labels: BIO per token (:func:`bio_tags` from character spans, :func:`spans_of` back).
* Features (:func:`features`): the word lowercased, its prefixes and suffixes, shape, casing, digits,
  ``@``/``#``/URL markers, sentence-level casing (tweets in all capitals), and the same for the
  neighbours two tokens either side. No gazetteer.
* Word clusters (optional, on by default): each word (lowercased, without ``@``/``#``) is embedded
  alone with the shared embedder and mapped to the nearest of ``k`` k-means centroids fitted on the
  training words; the cluster id is a feature of the token and its neighbours. Words never seen
  in training get a cluster too, which is what lets the tagger generalise to new names (WNUT-17 dev
  F1 0.31 → 0.41; docs/results.md). The training words' clusters are kept in the model file; other
  words are embedded when first met (one batch per text) and remembered.
* Model: CRF trained with L-BFGS and elastic-net regularisation (``c1`` L1 prunes features: the
  model stays small). Training is deterministic for the same data and parameters.
* Decoding: the best (Viterbi) path, except that a token it leaves outside every entity whose
  marginal probability of being outside is below ``min_outside`` takes its most probable entity
  label (recall: the CRF alone finds few of the new entities tweets are full of); closed-class words
  (``the``, ``my``, ``of``, ...) at the edges of an entity are left out of it.
* Span typer (optional, on by default with an embedder): the CRF decides where the entities are;
  the type of each span it found is then decided again by a product of two distributions over the
  types, normalised: the CRF's (its type marginals ``P(B-type) + P(I-type)``, normalised, averaged
  over the span's tokens) and a small classifier's on the span's text alone, embedded with the
  shared embedder (:class:`moa.learning.specialist.Specialist`: softmax regression with its
  defaults, trained on the gold spans of the training data). A word's context is the CRF's business;
  what the name itself looks like (``Amazon``, ``Galaxy``) is the embedding's. The typer changes
  types, never spans (WNUT-17 dev F1 0.428 → 0.447, organization 0.16 → 0.18, product 0.08 → 0.10;
  docs/results.md). Only :meth:`Tagger.atag` (which has the embedder) retypes; :meth:`Tagger.tag`
  gives the CRF's types.
* Confidence: how sure the tagger is of its least sure decision, over the tokens: whether the token
  is in an entity (``max(P(O), 1 - P(O))``) and, for an entity token, its type given that it is in
  one (``P(B-type) + P(I-type)`` over ``1 - P(O)``; with a typer, the span's combined probability of
  its type instead). An item below the agent's threshold escalates.

A tagger is trained for a set of entity types (after an optional label map, e.g.
``corporation=organization``) and serves a request whose types are all among them (and ``date``,
which :mod:`moa.learning.dates` recognises); entities of types not requested are left out.

Saved as one ``.npz`` (the CRF model's bytes, the clusters, the typer's weights and a JSON metadata string), read with
``allow_pickle=False``, like :mod:`moa.learning.specialist`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pycrfsuite
from pydantic import BaseModel

from moa.errors import ErrorCode, UserError
from moa.files import atomic_write, load_npz
from moa.learning.conll import parse_conll
from moa.learning.specialist import Specialist
from moa.logs import get_logger

if TYPE_CHECKING:
    from moa.models.embeddings import Embedder

log = get_logger(__name__)

FloatArray = npt.NDArray[np.float32]

FORMAT_VERSION = 1
KIND = "crf-tagger"

#: CRF training parameters (L-BFGS, elastic net); chosen on WNUT-17 dev, see docs/results.md.
DEFAULT_PARAMS: dict[str, float | int] = {"c1": 0.05, "c2": 0.05, "max_iterations": 150}
#: Decoding: a token the best path leaves outside every entity, but whose probability of being
#: outside is below this, takes its most probable entity label (the CRF alone is precise but misses
#: most entities of tweets; docs/results.md).
DEFAULT_MIN_OUTSIDE = 0.8
_CRF_PARAMS = ("c1", "c2", "max_iterations")
#: Word clusters (k-means centroids of the training words' embeddings); 0: none.
DEFAULT_CLUSTERS = 256
#: Words met after training whose clusters a loaded tagger remembers (then it starts again).
MAX_SEEN_WORDS = 200_000

_TOKEN = re.compile(
    r"""(?P<url>(?:https?://|www\.)\S*[^\s.,;:!?)\]'"])  # a URL, without the punctuation after it
      | (?P<handle>[@#]\w+)
      | (?P<clitic>['’](?i:s|t|re|ve|ll|d|m)\b)
      | (?P<word>\w+(?:[-&.]\w+)*)
      | (?P<other>[^\w\s])""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    """A token of a text and where it is: ``text[start:end] == token.text``."""

    text: str
    start: int
    end: int


Span = tuple[str, int, int]
"""An entity: ``(type, start, end)`` in character offsets."""


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text`` with their character offsets (see the module docstring)."""
    return [Token(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def bio_tags(tokens: Sequence[Token], spans: Sequence[Sequence[Any]]) -> list[str]:
    """BIO tags of ``tokens`` for entity ``spans`` (``[type, start, end]``): a token belongs to the
    entity it overlaps; the first token of each entity is ``B-``."""
    tags = ["O"] * len(tokens)
    for kind, start, end in spans:
        inside = [i for i, t in enumerate(tokens) if t.start < end and t.end > start]
        for n, i in enumerate(inside):
            tags[i] = f"{'B' if n == 0 else 'I'}-{kind}"
    return tags


def spans_of(tokens: Sequence[Token], tags: Sequence[str]) -> list[Span]:
    """Entities from BIO ``tags`` (an ``I-`` that continues no entity of its type starts one)."""
    found: list[Span] = []
    current: list[Any] | None = None
    for token, tag in zip(tokens, tags, strict=True):
        prefix, _, kind = tag.partition("-")
        if tag == "O" or not kind:
            current = None
        elif prefix == "I" and current is not None and current[0] == kind:
            current[2] = token.end
            found[-1] = (kind, current[1], token.end)
        else:
            current = [kind, token.start, token.end]
            found.append((kind, token.start, token.end))
    return found


# --- features --------------------------------------------------------------------------------


def _shape(word: str) -> str:
    """``Xxxx`` → ``Xx``, ``iPhone7`` → ``xXxd``: character classes with runs collapsed."""
    out: list[str] = []
    for ch in word:
        c = "X" if ch.isupper() else "x" if ch.isalpha() else "d" if ch.isdigit() else ch
        if not out or out[-1] != c:
            out.append(c)
    return "".join(out)[:8]


def _word_features(token: str) -> dict[str, str | float]:
    word = token[1:] if token[:1] in "@#" and len(token) > 1 else token
    low = word.lower()
    return {
        "low": low,
        "p2": low[:2],
        "p3": low[:3],
        "s2": low[-2:],
        "s3": low[-3:],
        "s4": low[-4:],
        "shape": _shape(word),
        "title": float(word[:1].isupper() and word[1:].islower()),
        "upper": float(word.isupper()),
        "mixed": float(any(c.isupper() for c in word[1:]) and any(c.islower() for c in word)),
        "digit": float(any(c.isdigit() for c in word)),
        "alpha": float(word.isalpha()),
        "len": str(min(len(word), 8)),
        "at": float(token.startswith("@")),
        "hash": float(token.startswith("#")),
        "url": float(token.startswith(("http", "www."))),
    }


_NEIGHBOUR_KEYS = ("low", "shape", "title", "upper", "at", "hash", "cluster")


def cluster_word(token: str) -> str:
    """The form of a token that is embedded for its word cluster: lowercased, without ``@``/``#``."""
    return token.lower().lstrip("@#") or token


def features(tokens: Sequence[str], clusters: Sequence[int] | None = None) -> list[dict[str, str | float]]:
    """The CRF features of each token of a sentence (its own and its neighbours', see the module
    docstring); ``clusters``: each token's word cluster, if the tagger uses them."""
    own = [_word_features(t) for t in tokens]
    if clusters is not None:
        for f, cluster in zip(own, clusters, strict=True):
            f["cluster"] = str(cluster)
    letters = [t for t in tokens if any(c.isalpha() for c in t)]
    shouting = float(bool(letters) and sum(t.isupper() for t in letters) / len(letters) > 0.6)
    titled = float(bool(letters) and sum(t[:1].isupper() for t in letters) / len(letters) > 0.6)
    out: list[dict[str, str | float]] = []
    for i, f in enumerate(own):
        row: dict[str, str | float] = {"bias": 1.0, "shouting": shouting, "titled": titled, **f}
        if i == 0:
            row["first"] = 1.0
        if i == len(own) - 1:
            row["last"] = 1.0
        for offset in (-2, -1, 1, 2):
            j = i + offset
            if 0 <= j < len(own):
                for key in _NEIGHBOUR_KEYS:
                    if key in own[j]:
                        row[f"{offset}:{key}"] = own[j][key]
            else:
                row[f"{offset}:edge"] = 1.0
        if i > 0:
            row["-1:low|low"] = f"{own[i - 1]['low']}|{f['low']}"
        if i < len(own) - 1:
            row["low|+1:low"] = f"{f['low']}|{own[i + 1]['low']}"
        out.append(row)
    return out


def _crf_items(rows: list[dict[str, str | float]]) -> pycrfsuite.ItemSequence:
    # crfsuite features are name -> weight; a string value becomes the feature "name=value" with weight 1
    return pycrfsuite.ItemSequence([{k: 1.0 if isinstance(v, str) else v for k, v in _named(r).items()} for r in rows])


def _named(row: Mapping[str, str | float]) -> dict[str, str | float]:
    return {(f"{k}={v}" if isinstance(v, str) else k): v for k, v in row.items() if not (isinstance(v, float) and v == 0.0)}


# --- the tagger ------------------------------------------------------------------------------


class Tagged(BaseModel):
    """What a tagger found in one text."""

    entities: list[Span]
    """``(type, start, end)``, in order of ``start``."""
    confidence: float
    """How sure the tagger is of its least sure token (module docstring; 1.0 for a text with no tokens)."""


class TagReport(BaseModel):
    """What :func:`train_tagger` did."""

    key: str
    source: str
    sentences: int
    entities: dict[str, int]
    types: list[str]
    label_map: dict[str, str]
    params: dict[str, float | int]
    fit_seconds: float
    size_bytes: int
    """Of the CRF model (the saved file adds the word clusters, compressed)."""
    clusters: int = 0
    embed_seconds: float = 0.0
    typer_spans: int = 0
    """Gold spans the span typer was trained on (0: no typer)."""
    typer_holdout_accuracy: float | None = None
    """The typer's accuracy on a held-out fifth of those spans (gold spans, the typer alone)."""


class Tagger:
    """A CRF entity tagger and its metadata (types, label map, word clusters, provenance)."""

    def __init__(self, model: bytes, *, types: Sequence[str], key: str = "", label_map: Mapping[str, str] | None = None,
                 source: str = "", trained_on: int = 0, params: Mapping[str, float | int] | None = None, created: str | None = None,
                 centroids: npt.ArrayLike | None = None, vocabulary: Mapping[str, int] | None = None, embedder: str = "",
                 typer: Specialist | None = None) -> None:  # fmt: skip
        self.model = bytes(model)
        self.types: list[str] = sorted(types)
        self.key = key or types_key(self.types)
        self.label_map = dict(label_map or {})
        self.source = source
        self.trained_on = trained_on
        self.params = dict(params or {})
        self.created = created or datetime.now(UTC).isoformat(timespec="seconds")
        self.centroids: FloatArray | None = None if centroids is None else np.asarray(centroids, dtype=np.float32)
        """k x d centroids of the word clusters (``None``: the tagger uses no clusters)."""
        self.vocabulary: dict[str, int] = dict(vocabulary or {})
        """The training words' clusters (saved with the model)."""
        self.embedder = embedder
        """The embedder the clusters were made with (their words must be embedded with it)."""
        self.typer = typer
        """Re-decides the type of each span found (module docstring); ``None``: the CRF's types."""
        if typer is not None and not set(typer.classes) <= set(self.types):
            raise ValueError(f"the span typer's classes {typer.classes} are not among the tagger's types {self.types}")
        self._seen: dict[str, int] = {}
        self._crf = pycrfsuite.Tagger()
        try:
            self._crf.open_inmemory(self.model)
        except (ValueError, OSError) as exc:
            raise ValueError(f"not a CRF model ({exc})") from exc
        self._labels: list[str] = list(self._crf.labels())

    def __repr__(self) -> str:
        return (f"Tagger(key={self.key!r}, trained_on={self.trained_on}, size={len(self.model)}, "
                f"clusters={0 if self.centroids is None else len(self.centroids)}, typer={self.typer is not None})")

    def serves(self, types: Sequence[str], recognised: Sequence[str] = ()) -> bool:
        """Whether this tagger can answer a request for ``types``: each is among its types or among
        ``recognised`` (types another component finds, e.g. ``date``)."""
        return set(types) <= set(self.types) | set(recognised)

    # --- word clusters -------------------------------------------------------------------------

    def _cluster(self, word: str) -> int | None:
        return self.vocabulary.get(word, self._seen.get(word))

    def unknown_words(self, text: str) -> list[str]:
        """Words of ``text`` whose cluster is not known yet (to embed before :meth:`tag`)."""
        if self.centroids is None:
            return []
        return sorted({w for t in tokenize(text) if self._cluster(w := cluster_word(t.text)) is None})

    def add_words(self, words: Sequence[str], vectors: npt.ArrayLike) -> None:
        """Remember the clusters of ``words`` from their embeddings (``vectors``, one per word)."""
        if self.centroids is None or not words:
            return
        if len(self._seen) > MAX_SEEN_WORDS:
            self._seen.clear()
        for word, cluster in zip(words, nearest(self.centroids, vectors), strict=True):
            self._seen[word] = cluster

    def _check_embedder(self, embedder: Embedder) -> None:
        if embedder.name != self.embedder:
            raise UserError(
                ErrorCode.BAD_CONFIG,
                f"the entity tagger {self.key!r} was trained with embedder {self.embedder!r}, not {embedder.name!r}; "
                "use that embedder or re-run `moa train extraction DATA.conll` with this one",
            )

    async def atag(self, text: str, embedder: Embedder) -> Tagged:
        """:meth:`tag`, embedding the words whose clusters are not known first (one ``aembed`` call),
        then, with a span typer, the text of each span found (one more) to decide its type again."""
        words = self.unknown_words(text)
        if words:
            self._check_embedder(embedder)
            self.add_words(words, await embedder.aembed(words))
        entities, sure, typed, crf_types = self._decode(text)
        if self.typer is not None and entities:
            self._check_embedder(embedder)
            entities, typed = self.retype(entities, crf_types, await embedder.aembed([text[s:e] for _, s, e in entities]))
        return _tagged(entities, sure + typed)

    def retype(self, entities: Sequence[Span], crf_types: npt.ArrayLike, vectors: npt.ArrayLike) -> tuple[list[Span], list[float]]:
        """The ``entities`` with the types the span typer and the CRF agree on (module docstring) and
        the probability of each: ``crf_types`` holds the CRF's distribution over :attr:`types` for
        each entity, ``vectors`` the embedding of each entity's text. Spans are never changed."""
        if self.typer is None or not entities:
            return list(entities), []
        crf = np.asarray(crf_types, dtype=np.float64).reshape(len(entities), len(self.types))
        typer = np.full((len(entities), len(self.types)), 1e-6)
        probs = self.typer.predict_proba(np.asarray(vectors, dtype=np.float64).reshape(len(entities), -1))
        for column, kind in enumerate(self.typer.classes):
            typer[:, self.types.index(kind)] = probs[:, column]
        joint = np.log(np.maximum(crf, 1e-9)) + np.log(np.maximum(typer, 1e-9))
        joint = np.exp(joint - joint.max(axis=1, keepdims=True))
        joint /= joint.sum(axis=1, keepdims=True)
        best = joint.argmax(axis=1)
        retyped = [(self.types[int(b)], start, end) for b, (_, start, end) in zip(best, entities, strict=True)]
        return retyped, [float(joint[i, b]) for i, b in enumerate(best)]

    # --- tagging ---------------------------------------------------------------------------------

    def tag(self, text: str) -> Tagged:
        """Entities in ``text`` with exact character spans and the CRF's types, and the confidence
        (module docstring). A word whose cluster is unknown (not embedded: see :meth:`atag`) gets no
        cluster feature; the span typer needs the embedder too (:meth:`atag`)."""
        entities, sure, typed, _ = self._decode(text)
        return _tagged(entities, sure + typed)

    def _decode(self, text: str) -> tuple[list[Span], list[float], list[float], FloatArray]:
        """The CRF's entities; how sure it is, per token, whether the token is in an entity, and of
        each entity token's type; and its distribution over :attr:`types` for each entity."""
        tokens = tokenize(text)
        if not tokens:
            return [], [], [], np.zeros((0, len(self.types)), dtype=np.float32)
        words = [t.text for t in tokens]
        clusters = None if self.centroids is None else [_or_none(self._cluster(cluster_word(w))) for w in words]
        crf = self._crf
        crf.set(_crf_items(features(words, clusters)))
        best = crf.tag()
        entity_labels = [label for label in self._labels if label != "O"]
        has_outside = "O" in self._labels
        min_outside = float(self.params.get("min_outside", 0.0))  # 0: the best path as it is
        tags: list[str] = []
        sure: list[float] = []
        typed: list[float] = []
        promoted = False  # the previous token was taken into an entity by the recall rule
        for i, label in enumerate(best):
            outside = crf.marginal("O", i) if has_outside else 0.0
            if label == "O" and outside < min_outside and entity_labels:
                kind = max(entity_labels, key=lambda candidate: crf.marginal(candidate, i))[2:]
                label = ("I-" if tags and tags[-1][2:] == kind else "B-") + kind
                promoted = True
            else:
                if promoted and label.startswith("B-") and tags[-1][2:] == label[2:]:
                    label = "I-" + label[2:]  # the best path's entity starts one token earlier: "Barack Obama", not two names
                promoted = False
            tags.append(label)
            sure.append(max(outside, 1.0 - outside))  # how sure it is whether the token is in an entity
            if label != "O":  # ... and of its type, given it is in one
                typed.append(self._type_marginal(label[2:], i) / max(1.0 - outside, 1e-9))
        entities = _trimmed(tokens, spans_of(tokens, tags))
        dists = np.zeros((len(entities), len(self.types)), dtype=np.float32)
        for row, (_, start, end) in enumerate(entities):
            inside = [i for i, t in enumerate(tokens) if t.start >= start and t.end <= end]
            marginals = np.array([[self._type_marginal(kind, i) for kind in self.types] for i in inside], dtype=np.float32)
            marginals /= np.maximum(marginals.sum(axis=1, keepdims=True), 1e-9)  # each token's type, given it is in an entity
            dists[row] = marginals.mean(axis=0)
        return entities, sure, typed, dists

    def _type_marginal(self, kind: str, i: int) -> float:
        """``P(B-kind) + P(I-kind)`` at token ``i`` of the sentence the CRF was last set to."""
        return float(sum(self._crf.marginal(f"{p}-{kind}", i) for p in "BI" if f"{p}-{kind}" in self._labels))

    # --- persistence -----------------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION, "kind": KIND, "types": self.types, "key": self.key, "label_map": self.label_map,
            "source": self.source, "trained_on": self.trained_on, "params": self.params, "created": self.created,
            "embedder": self.embedder, "vocabulary": self.vocabulary, "typer": None if self.typer is None else self.typer.metadata(),
        }  # fmt: skip

    def save(self, path: Path) -> None:
        """Write one compressed ``.npz`` (atomically)."""
        arrays: dict[str, Any] = {"model": np.frombuffer(self.model, dtype=np.uint8), "meta": np.array(json.dumps(self.metadata()))}
        if self.centroids is not None:
            arrays["centroids"] = self.centroids.astype(np.float16)  # cluster ids need no more precision
        if self.typer is not None:
            arrays["typer_weights"], arrays["typer_bias"] = self.typer.weights, self.typer.bias
        atomic_write(path, lambda f: np.savez_compressed(f, **arrays), "the tagger")
        log.debug("tagger_saved", path=str(path), key=self.key)

    @classmethod
    def load(cls, path: Path) -> Tagger:
        """Read a file written by :meth:`save`."""

        def build(data: Any, meta: dict[str, Any]) -> Tagger:
            centroids = data["centroids"].astype(np.float32) if "centroids" in data.files else None
            typer = None
            if "typer_weights" in data.files and meta.get("typer"):
                typer = Specialist.from_arrays(meta["typer"], data["typer_weights"], data["typer_bias"])
            return cls(
                data["model"].tobytes(), types=[str(t) for t in meta["types"]], key=str(meta["key"]),
                label_map={str(k): str(v) for k, v in meta["label_map"].items()}, source=str(meta["source"]),
                trained_on=int(meta["trained_on"]), params=meta["params"], created=str(meta["created"]), centroids=centroids,
                vocabulary={str(k): int(v) for k, v in meta["vocabulary"].items()}, embedder=str(meta["embedder"]), typer=typer,
            )  # fmt: skip

        return load_npz(path, "entity tagger", "re-run `moa train extraction DATA.conll` to train it again", build, FORMAT_VERSION, KIND)


#: English closed-class words (articles, pronouns, prepositions, conjunctions, auxiliaries): an
#: entity neither starts nor ends with one ("The Sony headphones" → "Sony headphones").
CLOSED_CLASS = frozenset(
    ["a", "an", "the", "this", "that", "these", "those", "my", "your", "his", "her", "its", "our", "their", "i", "you", "he", "she", "it", "we", "they", "me", "him", "us", "them", "of", "in", "on", "at", "to", "for", "from", "with", "by", "and", "or", "but", "is", "are", "was", "were", "be", "been", "am", "do", "does", "did", "not", "no"]
)


def _trimmed(tokens: Sequence[Token], spans: list[Span]) -> list[Span]:
    """``spans`` without closed-class words at their edges (a span of only such words is dropped)."""
    out: list[Span] = []
    for kind, start, end in spans:
        inside = [t for t in tokens if t.start >= start and t.end <= end]
        while inside and inside[0].text.lower() in CLOSED_CLASS:
            inside.pop(0)
        while inside and inside[-1].text.lower() in CLOSED_CLASS:
            inside.pop()
        if inside:
            out.append((kind, inside[0].start, inside[-1].end))
    return out


def _tagged(entities: list[Span], sure: list[float]) -> Tagged:
    return Tagged(entities=entities, confidence=round(min(1.0, float(min(sure))), 4) if sure else 1.0)


def _or_none(cluster: int | None) -> int:
    return -1 if cluster is None else cluster


def nearest(centroids: FloatArray, vectors: npt.ArrayLike) -> list[int]:
    """The index of the nearest centroid (largest dot product: vectors and centroids are unit length) of each vector."""
    x = np.asarray(vectors, dtype=np.float32).reshape(-1, centroids.shape[1])
    return [int(i) for i in (x @ centroids.T).argmax(axis=1)]


def kmeans(vectors: npt.ArrayLike, k: int, *, seed: int = 0, iterations: int = 25) -> FloatArray:
    """Spherical k-means (cosine): ``k`` unit centroids of unit ``vectors``; deterministic for a seed."""
    x = np.asarray(vectors, dtype=np.float32)
    k = min(k, len(x))
    rng = np.random.default_rng(seed)
    centroids = x[rng.choice(len(x), k, replace=False)].copy()
    for _ in range(iterations):
        assigned = (x @ centroids.T).argmax(axis=1)
        for c in range(k):
            members = x[assigned == c]
            if len(members):
                mean = members.mean(axis=0)
                centroids[c] = mean / max(float(np.linalg.norm(mean)), 1e-9)
    return centroids


def types_key(types: Sequence[str]) -> str:
    """The task key of an entity type set: ``types=location,person`` (sorted, so order does not matter)."""
    return "types=" + ",".join(sorted(set(types)))


Sentence = tuple[str, list[list[Any]]]
"""A text and its entities ``[[type, start, end], ...]`` (what :func:`moa.learning.conll.parse_conll` reads)."""


def load_sentences(path: Path, label_map: Mapping[str, str] | None = None) -> list[Sentence]:
    """Sentences of a CoNLL file with entity types mapped by ``label_map`` (a type mapped to ``O``
    or ``-`` is dropped)."""
    mapping = dict(label_map or {})
    out: list[Sentence] = []
    for text, spans in parse_conll(path):
        kept = [[mapping.get(k, k), s, e] for k, s, e in spans]
        out.append((text, [span for span in kept if span[0] not in ("O", "-", "")]))
    return out


def fit_tagger(sentences: Sequence[Sentence], *, params: Mapping[str, float | int] | None = None, label_map: Mapping[str, str] | None = None,
               source: str = "", centroids: npt.ArrayLike | None = None, vocabulary: Mapping[str, int] | None = None,
               embedder: str = "") -> tuple[Tagger, TagReport]:  # fmt: skip
    """Train a CRF tagger on ``sentences`` (deterministic); see the module docstring. With
    ``centroids``, ``vocabulary`` must give the cluster of every training word (:func:`train_tagger`
    embeds them)."""
    counts: dict[str, int] = {}
    for _, spans in sentences:
        for kind, _, _ in spans:
            counts[kind] = counts.get(kind, 0) + 1
    if not counts:
        raise UserError(ErrorCode.BAD_DATA, f"no entities in {source or 'the training data'}: a tagger needs sentences with tagged entities (B-type / I-type)")
    chosen = {**DEFAULT_PARAMS, "min_outside": DEFAULT_MIN_OUTSIDE, **(params or {})}
    words = dict(vocabulary or {})
    started = time.perf_counter()
    trainer = pycrfsuite.Trainer(verbose=False)
    for text, spans in sentences:
        tokens = tokenize(text)
        if tokens:
            clusters = None if centroids is None else [_or_none(words.get(cluster_word(t.text))) for t in tokens]
            trainer.append(_crf_items(features([t.text for t in tokens], clusters)), bio_tags(tokens, spans))
    trainer.set_params({"feature.possible_transitions": True, **{k: v for k, v in chosen.items() if k in _CRF_PARAMS}})
    with tempfile.TemporaryDirectory(prefix="moa-tagger-") as folder:
        target = Path(folder) / "model.crfsuite"
        trainer.train(str(target))
        model = target.read_bytes()
    tagger = Tagger(model, types=sorted(counts), label_map=label_map, source=source, trained_on=len(sentences), params=chosen,
                    centroids=centroids, vocabulary=words if centroids is not None else None, embedder=embedder if centroids is not None else "")  # fmt: skip
    report = TagReport(
        key=tagger.key, source=source, sentences=len(sentences), entities=dict(sorted(counts.items())), types=tagger.types,
        label_map=tagger.label_map, params=chosen, fit_seconds=round(time.perf_counter() - started, 2), size_bytes=len(model),
        clusters=0 if centroids is None else len(tagger.centroids),  # type: ignore[arg-type]
    )  # fmt: skip
    log.info("tagger_trained", key=tagger.key, sentences=len(sentences), fit_seconds=report.fit_seconds, size_bytes=len(model))
    return tagger, report


async def train_tagger(
    embedder: Embedder | None, sentences: Sequence[Sentence], *, params: Mapping[str, float | int] | None = None,
    label_map: Mapping[str, str] | None = None, source: str = "", clusters: int = DEFAULT_CLUSTERS, seed: int = 0, batch_size: int = 512,
    typer: bool = True,
) -> tuple[Tagger, TagReport]:  # fmt: skip
    """Embed the training words with ``embedder``, fit ``clusters`` word clusters (k-means, ``seed``)
    and train the CRF (in a thread); with ``typer`` (and at least two types), embed the text of each
    gold span and fit the span typer on them (:meth:`Specialist.fit` with its defaults and ``seed``).
    ``clusters=0`` or no embedder: a tagger on word features only (and no typer)."""
    centroids: FloatArray | None = None
    vocabulary: dict[str, int] = {}
    embed_seconds = 0.0
    if clusters > 0 and embedder is not None:
        started = time.perf_counter()
        words = sorted({cluster_word(t.text) for text, _ in sentences for t in tokenize(text)})
        vectors: list[list[float]] = []
        for i in range(0, len(words), batch_size):
            vectors += await embedder.aembed(words[i : i + batch_size])
        matrix = np.asarray(vectors, dtype=np.float32)
        centroids = await asyncio.to_thread(kmeans, matrix, clusters, seed=seed)
        vocabulary = dict(zip(words, nearest(centroids, matrix), strict=True))
        embed_seconds = time.perf_counter() - started
    fit = functools.partial(
        fit_tagger, sentences, params=params, label_map=label_map, source=source, centroids=centroids, vocabulary=vocabulary,
        embedder=embedder.name if embedder is not None else "",
    )  # fmt: skip
    tagger, report = await asyncio.to_thread(fit)
    update: dict[str, Any] = {}
    spans = [(text[start:end], kind) for text, found in sentences for kind, start, end in found]
    if typer and embedder is not None and tagger.centroids is not None and len({kind for _, kind in spans}) >= 2:
        started = time.perf_counter()
        span_vectors: list[list[float]] = []
        for i in range(0, len(spans), batch_size):
            span_vectors += await embedder.aembed([t for t, _ in spans[i : i + batch_size]])
        fit_typer = functools.partial(Specialist.fit, np.asarray(span_vectors), [kind for _, kind in spans], seed=seed, embedder=embedder.name,
                                      source=source, key=f"span-typer:{tagger.key}")  # fmt: skip
        tagger.typer = await asyncio.to_thread(fit_typer)
        embed_seconds += time.perf_counter() - started
        update = {"typer_spans": len(spans), "typer_holdout_accuracy": tagger.typer.holdout_accuracy}
        log.info("span_typer_trained", key=tagger.key, spans=len(spans), holdout_accuracy=tagger.typer.holdout_accuracy)
    return tagger, report.model_copy(update={"embed_seconds": round(embed_seconds, 2), **update})

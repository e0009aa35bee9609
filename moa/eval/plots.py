"""PNG plots of eval reports (matplotlib, imported only here and only when plotting).

* ``cost.png``: quality against cost, one point per configuration. The cost axis is $ per item
  when any configuration costs money, else model seconds per item (local models cost $0);
* ``sweep.png``: the threshold sweep: quality against the share of items the last cascade step
  answered (the RouteLLM curve), thresholds annotated;
* ``reliability.png``: accuracy per confidence bin against the diagonal of perfect calibration.

Without matplotlib (``pip install 'moa[plots]'``) no PNG is written and the report says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moa.eval.compare import CompareRow
    from moa.eval.report import Report

NO_MATPLOTLIB = "Plots skipped: matplotlib is not installed (pip install 'moa[plots]')."


def _pyplot() -> Any | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _save(plt: Any, fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def cost_axis(costs: Sequence[float], seconds: Sequence[float]) -> tuple[list[float], str]:
    """$ per item when anything costs money, else model seconds per item."""
    if any(c > 0 for c in costs):
        return list(costs), "cost per item ($)"
    return list(seconds), "model time per item (s; local models cost $0)"


def scatter(path: Path, points: Sequence[tuple[str, float, float]], xlabel: str, ylabel: str, title: str) -> str | None:
    """Labelled points ``(name, x, y)``; returns the file name (``None`` without matplotlib)."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, x, y in points:
        ax.scatter([x], [y], s=40)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return _save(plt, fig, path)


def eval_plots(out: Path, report: Report) -> tuple[list[str], str | None]:
    """The plots of one eval report (those its data allows); returns file names and a note."""
    plt = _pyplot()
    wanted = report.configs or report.sweep or report.reliability.items
    if plt is None:
        return [], NO_MATPLOTLIB if wanted else None
    names: list[str] = []
    metric = report.headline if report.headline in ("accuracy", "f1") else "accuracy"
    if report.configs:
        per_item = [r.cost / max(r.items, 1) for r in report.configs]
        xs, xlabel = cost_axis(per_item, [r.model_seconds_per_item for r in report.configs])
        points = [(r.name, x, r.metrics[metric]) for r, x in zip(report.configs, xs, strict=True)]
        name = scatter(out / "cost.png", points, xlabel, metric, f"{report.config.target} on {report.config.data_name}: {metric} vs cost")
        names += [name] if name else []
    if report.sweep:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        xs = [p.top_share for p in report.sweep]
        ys = [p.metrics[metric] for p in report.sweep]
        ax.plot(xs, ys, marker="o", ms=3)
        last = -1.0
        for p in report.sweep:  # label the thresholds where the curve moves on, not the pile-ups
            if p.top_share - last >= 0.08:
                ax.annotate(f"t={p.threshold:.2f}", (p.top_share, p.metrics[metric]), textcoords="offset points", xytext=(4, -10), fontsize=7)
                last = p.top_share
        ax.set_xlabel(f"share of items answered by {report.steps[-1]}")
        ax.set_ylabel(metric)
        ax.set_title(f"threshold sweep {' → '.join(report.steps)} ({report.config.data_name})", fontsize=10)
        ax.grid(alpha=0.3)
        names.append(_save(plt, fig, out / "sweep.png"))
    if report.reliability.items:
        bins = [b for b in report.reliability.bins if b.count]
        fig, ax = plt.subplots(figsize=(4.8, 4.4))
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
        ax.bar([(b.lo + b.hi) / 2 for b in bins], [b.accuracy or 0.0 for b in bins], width=0.09, alpha=0.7, label="accuracy per bin")
        ax.plot([b.confidence for b in bins], [b.accuracy for b in bins], marker="o", color="black", lw=1, label="accuracy at the mean confidence")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.set_title(f"reliability (ECE {report.reliability.ece:.3f}, {report.reliability.items} items)", fontsize=10)
        ax.legend(fontsize=8)
        names.append(_save(plt, fig, out / "reliability.png"))
    return names, None


def compare_plot(path: Path, rows: Sequence[CompareRow]) -> str | None:
    """Headline metric against cost, one point per eval folder (evals of one metric only)."""
    if not rows or len({r.headline for r in rows}) != 1:
        return None
    xs, xlabel = cost_axis([r.cost_per_item for r in rows], [r.model_seconds_per_item for r in rows])
    points = [(r.name, x, r.value) for r, x in zip(rows, xs, strict=True)]
    return scatter(path, points, xlabel, rows[0].headline, f"{rows[0].headline} vs cost per configuration")

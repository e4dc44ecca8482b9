"""compare.png, drawn by matplotlib from the comparison (compare.json's dict): validation
accuracy and loss by epoch, each seed's test accuracy, and test accuracy by text length.

matplotlib is optional (`pip install 'bilstm[compare]'`): `write` says so when it is missing.
Its object API draws on a figure of its own (no pyplot, no global backend change).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bilstm_cli.compare import stats
from bilstm_cli.runs import write_atomic


def write(report: dict[str, Any], path: Path) -> str | None:
    """Draw the picture into `path`; None when written, else why not."""
    if not stats.available("matplotlib"):
        return stats.missing("compare.png", "matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 8), layout="constrained")
    FigureCanvasAgg(figure)
    top_left, top_right, bottom_left, bottom_right = figure.subplots(2, 2).flat
    colors = [f"C{i}" for i in range(len(report["variants"]))]
    _curves(top_left, report, colors, "val_accuracy", "validation accuracy")
    _curves(top_right, report, colors, "val_loss", "validation loss (solid), training loss "
            "(dashed)", dashed="loss")
    _test_accuracy(bottom_left, report, colors)
    _by_length(bottom_right, report, colors)
    test = report["test"]
    figure.suptitle(f"bilstm compare: {', '.join(v['name'] for v in report['variants'])} on "
                    f"{Path(test['source']).name} ({test['texts']:,} test texts)")
    write_atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110))
    return None


def _curves(axes: Any, report: dict[str, Any], colors: list[str], key: str, title: str,
            dashed: str | None = None) -> None:
    """Each seed thin, the variant's mean thick."""
    for color, variant in zip(colors, report["variants"]):
        for run in variant["runs"]:
            rows = [r for r in run["history"] if key in r]
            axes.plot([r["epoch"] for r in rows], [r[key] for r in rows], color=color,
                      alpha=0.3, linewidth=0.8)
        mean = variant["curve"][key]
        axes.plot(range(1, len(mean) + 1), mean, color=color, linewidth=2.2,
                  label=variant["name"], marker="o", markersize=3)
        if dashed:
            axes.plot(range(1, len(variant["curve"][dashed]) + 1), variant["curve"][dashed],
                      color=color, linewidth=1.5, linestyle="--")
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set(title=title, xlabel="epoch")
    axes.legend()
    axes.grid(alpha=0.3)


def _test_accuracy(axes: Any, report: dict[str, Any], colors: list[str]) -> None:
    """Each seed a dot; the mean a line, with the standard deviation."""
    for index, (color, variant) in enumerate(zip(colors, report["variants"])):
        scores = [run["test"]["accuracy"] for run in variant["runs"]]
        summary = variant["test_accuracy"]
        axes.errorbar(index, summary["mean"], yerr=summary["sd"] or 0, color=color, fmt="_",
                      markersize=40, capsize=8, linewidth=1.5)
        axes.scatter([index] * len(scores), scores, color=color, alpha=0.7, zorder=3)
    scores = [run["test"]["accuracy"] for v in report["variants"] for run in v["runs"]]
    margin = max(0.01, (max(scores) - min(scores)) * 0.3)
    axes.set_ylim(max(0.0, min(scores) - margin), min(1.0, max(scores) + margin) + 0.005)
    axes.set_xlim(-0.6, len(report["variants"]) - 0.4)
    axes.set_xticks(range(len(report["variants"])), [v["name"] for v in report["variants"]])
    axes.set(title="test accuracy (dots: seeds; line: mean ± sd)")
    axes.grid(alpha=0.3, axis="y")


def _by_length(axes: Any, report: dict[str, Any], colors: list[str]) -> None:
    parts = report["by_length"]["parts"]
    width = 0.8 / len(report["variants"])
    for index, (color, variant) in enumerate(zip(colors, report["variants"])):
        values = [s["mean"] if s else 0.0 for s in report["by_length"]["accuracy"][variant["name"]]]
        bars = axes.bar([p + index * width for p in range(len(parts))], values, width,
                        color=color, label=variant["name"])
        axes.bar_label(bars, fmt="%.3f", fontsize=8)
    axes.set_xticks([p + 0.4 - width / 2 for p in range(len(parts))],
                    [f"{p['name']}\n{p['words'][0]}-{p['words'][1]} words" if p["words"]
                     else p["name"] for p in parts])
    axes.set(title="test accuracy by text length", ylim=(0, 1.15))
    axes.legend(loc="upper center", ncols=len(report["variants"]))
    axes.grid(alpha=0.3, axis="y")

"""The comparison: the measured runs of each variant summed up (compare.json; tables.py shows
it).

Variants are compared with the first one (the baseline): differences are the other's test
accuracy minus the baseline's, paired seed by seed (the i-th run of each, by seed). No
TensorFlow here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from bilstm_cli.compare import stats
from bilstm_cli.compare.measure import Measured
from bilstm_cli.errors import UserError

PARTS = ("short", "medium", "long")
DISAGREEMENTS = 5
SIGNIFICANCE = 0.05


@dataclass
class Group:
    """A variant and its runs, in seed order."""

    name: str
    settings: list[str]
    runs: list[Measured]


def build(groups: list[Group], notes: list[str], command: list[str] | None = None
          ) -> dict[str, Any]:
    """compare.json: each variant's runs and summary, the comparisons with the baseline,
    accuracy by text length and disagreements. `notes`: what was left out, and why."""
    _check_same_test_sets(groups)
    test = groups[0].runs[0].test
    if min(len(group.runs) for group in groups) < stats.ASO_MIN_SEEDS:
        notes.append(f"ASO over seeds: left out, it needs {stats.ASO_MIN_SEEDS} or more seeds "
                     "per variant (--seeds 3)")
    elif not stats.available("deepsig"):
        notes.append(stats.missing("ASO over seeds", "deepsig"))
    if not stats.available("scipy"):
        notes.append(stats.missing("McNemar's test", "scipy"))
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "test": {"source": test.source, "texts": len(test), "fingerprint": test.fingerprint()},
        "baseline": groups[0].name,
        "variants": [_variant(group) for group in groups],
        "comparisons": [_comparison(groups[0], group, len(groups) - 1) for group in groups[1:]],
        "by_length": _by_length(groups),
        "disagreements": _disagreements(groups),
        "notes": notes,
    }


def _check_same_test_sets(groups: list[Group]) -> None:
    """The i-th runs of all variants (paired in the tests) must have scored the same texts."""
    for position in range(max(len(group.runs) for group in groups)):
        runs = [group.runs[position] for group in groups if len(group.runs) > position]
        first = runs[0]
        for other in runs[1:]:
            if other.test.fingerprint() != first.test.fingerprint():
                raise UserError(
                    f"{first.folder} and {other.folder} were tested on different data "
                    f"({first.test.source}: {len(first.test)} texts; {other.test.source}: "
                    f"{len(other.test)} texts): compare pairs runs on the same test set; "
                    "give runs trained with the same data.test (and data.max_examples)")


def _summary(values: list[Any]) -> dict[str, float | None] | None:
    known = [v for v in values if v is not None]
    return stats.mean_sd(known) if known else None


def _variant(group: Group) -> dict[str, Any]:
    runs = [run.facts for run in group.runs]
    # The mean over seeds up to the last epoch every seed trained: past it (a seed stopped
    # early) the mean would be of other seeds and jump; the plot draws each seed in full.
    epochs = min(len(run["history"]) for run in runs)
    curve = {}
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        curve[key] = [float(np.mean(at)) if len(at) == len(runs) else None for at in (
            [run["history"][e][key] for run in runs if key in run["history"][e]]
            for e in range(epochs))]
    return {
        "name": group.name, "settings": group.settings,
        "seeds": [run["seed"] for run in runs],
        "parameters": runs[0]["parameters"],
        **{key: _summary([run[key] for run in runs]) for key in (
            "seconds_per_epoch", "examples_per_second", "latency_ms",
            "predictions_per_second")},
        **{f"{split}_{metric}": _summary([run[split][metric] for run in runs])
           for split in ("validation", "test") for metric in ("accuracy", "macro_f1")},
        "curve": curve,
        "runs": runs,
    }


def _comparison(base: Group, other: Group, comparisons: int) -> dict[str, Any]:
    pairs = list(zip(base.runs, other.runs))
    seeds, differences, test_sets = [], [], []
    for first, second in pairs:
        difference = second.right.astype(float) - first.right.astype(float)
        differences.append(difference)
        test_sets.append(first.test.fingerprint())
        seeds.append({
            "seeds": [first.config.training.seed, second.config.training.seed],
            "accuracy": [float(first.right.mean()), float(second.right.mean())],
            "difference": float(difference.mean()),
            "interval": stats.bootstrap_interval([difference], test_sets[-1:]),
            "mcnemar": stats.mcnemar(first.right, second.right),
        })
    interval = stats.bootstrap_interval(differences, test_sets)
    base_scores = [run.facts["test"]["accuracy"] for run in base.runs]
    other_scores = [run.facts["test"]["accuracy"] for run in other.runs]
    better = stats.aso(other_scores, base_scores, comparisons)
    return {
        "baseline": base.name, "variant": other.name,
        "difference": float(np.mean([s["difference"] for s in seeds])),
        "interval": interval,
        "verdict": ("better" if interval[0] > 0 else "worse" if interval[1] < 0
                    else "no clear difference"),
        "mcnemar_significant_seeds": sum(
            1 for s in seeds if s["mcnemar"] and s["mcnemar"]["p_value"] < SIGNIFICANCE),
        "aso": None if better is None else {
            "variant_better": better,
            "baseline_better": stats.aso(base_scores, other_scores, comparisons)},
        "seeds": seeds,
    }


def _by_length(groups: list[Group]) -> dict[str, Any]:
    """Accuracy on the test texts cut in three equal parts by length in words (ties in text
    order), each variant's mean over its runs."""
    def parts(run: Measured) -> list[np.ndarray]:
        words = np.array([len(text.split()) for text in run.test.texts])
        return np.array_split(np.argsort(words, kind="stable"), len(PARTS))

    first = groups[0].runs[0]
    words = np.array([len(text.split()) for text in first.test.texts])
    accuracy = {}
    for group in groups:
        per_run = [[float(run.right[part].mean()) if len(part) else None for part in parts(run)]
                   for run in group.runs]
        accuracy[group.name] = [_summary(list(column)) for column in zip(*per_run)]
    return {
        "parts": [{"name": name, "words": [int(words[part].min()), int(words[part].max())],
                   "texts": len(part)} if len(part) else {"name": name, "words": None,
                                                          "texts": 0}
                  for name, part in zip(PARTS, parts(first))],
        "accuracy": accuracy,
    }


def _disagreements(groups: list[Group]) -> list[dict[str, Any]]:
    """The first seed's test texts where the variants' labels differ most confidently (by the
    spread of their probabilities of the true label)."""
    runs = [group.runs[0] for group in groups]
    test = runs[0].test
    labels = np.array([run.predicted for run in runs])
    differ = np.flatnonzero((labels != labels[0]).any(axis=0))
    truth = [[run.probabilities[i, run.labels.index(test.labels[i])] for run in runs]
             for i in differ]
    spread = [max(p) - min(p) for p in truth]
    chosen = [int(differ[k]) for k in np.argsort(spread, kind="stable")[::-1][:DISAGREEMENTS]]
    return [{"text": test.texts[i], "label": test.labels[i],
             "predictions": {group.name: dict(zip(("label", "probability"),
                                                  run.probability_of(i)))
                             for group, run in zip(groups, runs)}} for i in chosen]

"""Whether a difference in test accuracy between two variants is real.

- McNemar's exact test on one seed's paired predictions: of the test texts exactly one of the
  two gets right, is the split between them a fair coin's? `scipy.stats.binomtest`.
- The paired bootstrap interval of the accuracy difference: the test texts resampled with
  replacement, both variants scored on the same resample, 95% of the differences between the
  2.5th and 97.5th percentiles. NumPy, here (a percentile of resampled means).
- Almost Stochastic Order over the seeds' test accuracies (Dror et al., 2019; Ulmer et al.,
  2022), what the deep-significance work recommends for comparing neural networks over
  seeds: `deepsig.aso`, with 3 or more seeds per variant.

scipy and deepsig come with `pip install 'bilstm[compare]'`; without one, its statistic is
left out (None) and `missing` says how to get it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

import numpy as np

INSTALL = "pip install 'bilstm[compare]'"
BOOTSTRAP_SAMPLES = 2000
ASO_MIN_SEEDS = 3
# Resampled test sets scored at a time (memory: chunk x texts indices).
_CHUNK = 100


def available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def missing(what: str, module: str) -> str:
    return f"{what}: left out, {module} is not installed ({INSTALL})"


def mcnemar(first_right: np.ndarray, second_right: np.ndarray) -> dict[str, Any] | None:
    """McNemar's exact test (two-sided) of two classifiers' right/wrong on the same texts;
    None without scipy."""
    if not available("scipy"):
        return None
    from scipy.stats import binomtest

    only_first = int(np.sum(first_right & ~second_right))
    only_second = int(np.sum(~first_right & second_right))
    discordant = only_first + only_second
    p_value = binomtest(only_second, discordant, 0.5).pvalue if discordant else 1.0
    return {"only_first_right": only_first, "only_second_right": only_second,
            "p_value": float(p_value)}


def bootstrap_interval(differences: Sequence[np.ndarray], groups: Sequence[str],
                       samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> list[float]:
    """The 95% interval of the mean over seeds of the accuracy difference. `differences[i]`:
    per test text, second right minus first right (-1, 0, 1) for seed i; `groups[i]` names its
    test set (a fingerprint): seeds on the same test set share each resample, so the interval
    counts the test texts once, not once per seed."""
    rng = np.random.default_rng(seed)
    means = np.zeros(samples)
    for group in dict.fromkeys(groups):
        members = [d for d, g in zip(differences, groups) if g == group]
        per_text = np.mean(members, axis=0)  # the seeds on this test set, text by text
        total = np.zeros(samples)
        for start in range(0, samples, _CHUNK):
            count = min(_CHUNK, samples - start)
            draws = rng.integers(0, len(per_text), size=(count, len(per_text)))
            total[start:start + count] = per_text[draws].mean(axis=1)
        means += total * len(members) / len(differences)
    low, high = np.percentile(means, [2.5, 97.5])
    return [float(low), float(high)]


def aso(better: Sequence[float], worse: Sequence[float], comparisons: int = 1,
        seed: int = 0) -> float | None:
    """deepsig's ε_min for "`better` is stochastically better than `worse`" (below 0.5: it is,
    almost; 0: always), at 95% confidence, Bonferroni-corrected for `comparisons`. None without
    deepsig or with fewer than ASO_MIN_SEEDS scores a side."""
    if min(len(better), len(worse)) < ASO_MIN_SEEDS or not available("deepsig"):
        return None
    from deepsig import aso as almost_stochastic_order

    return float(almost_stochastic_order(
        list(better), list(worse), confidence_level=0.95, num_comparisons=comparisons,
        seed=seed, show_progress=False))


def mean_sd(values: Sequence[float]) -> dict[str, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()),
            "sd": float(array.std(ddof=1)) if len(array) > 1 else None}

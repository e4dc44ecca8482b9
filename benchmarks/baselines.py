"""TF-IDF + logistic regression on the tokens a trained run reads, beside the run itself.

    BILSTM_DATA_DIR=../shared/data python benchmarks/baselines.py RUN_FOLDER [RUN_FOLDER ...]
        [--markdown FILE]

For each run folder (`bilstm train` on a two-class data set with a test split), the baseline
people reach for instead, on the same footing: the run's split (its config.yaml and seed), its
tokenizer (tokenizer.json: the same vocabulary and truncation), unigrams and hashed bigrams,
TF-IDF (sublinear term frequency, smoothed idf, rows of length 1), and an L2-regularized logistic
regression fit by L-BFGS, its C chosen on the validation split. The table gives both models'
test accuracy, how often they agree, the accuracy of their averaged probabilities (what the
LSTM adds to the bag of words), and the accuracy of each by text length in tokens.

Needs SciPy (sparse matrices and L-BFGS): pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

try:
    import scipy.sparse as sparse
    from scipy.optimize import minimize
except ImportError:
    raise SystemExit("benchmarks/baselines.py needs SciPy: pip install -e '.[bench]'") from None

from report import emit  # benchmarks/report.py

from bilstm_cli.config import load_config
from bilstm_cli.data import load_splits
from bilstm_cli.predict import Classifier
from bilstm_cli.text import encode

BIGRAM_BUCKETS = 1 << 21
C_GRID = (3.0, 10.0, 30.0, 100.0)
LENGTH_EDGES = (0, 100, 200, 400, 800, 10**9)


def features(ids: list[np.ndarray], vocabulary: int) -> sparse.csr_matrix:
    """Counts of each token id and of each pair of adjacent ids (hashed into BIGRAM_BUCKETS)."""
    rows, columns = [], []
    for row, text in enumerate(ids):
        text = text.astype(np.int64)
        bigrams = vocabulary + (text[:-1] * vocabulary + text[1:]) % BIGRAM_BUCKETS
        terms = np.concatenate([text, bigrams])
        rows.append(np.full(len(terms), row))
        columns.append(terms)
    row_index, column_index = np.concatenate(rows), np.concatenate(columns)
    counts = sparse.csr_matrix((np.ones(len(row_index)), (row_index, column_index)),
                               shape=(len(ids), vocabulary + BIGRAM_BUCKETS))
    counts.sum_duplicates()
    return counts


def tfidf(counts: sparse.csr_matrix, idf: np.ndarray) -> sparse.csr_matrix:
    weighted = counts.copy()
    weighted.data = 1.0 + np.log(weighted.data)
    weighted = weighted.multiply(idf).tocsr()
    norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
    return sparse.diags(1.0 / np.maximum(norms, 1e-12)) @ weighted


def fit_logistic(x: sparse.csr_matrix, y: np.ndarray, c: float,
                 start: np.ndarray | None) -> np.ndarray:
    """Weights (bias last) minimizing the log loss summed over examples + |w|^2 / (2C)."""

    def loss_and_gradient(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = logits(x, w)
        p = 1.0 / (1.0 + np.exp(-z))
        loss = np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 / c * np.sum(w[:-1] ** 2)
        gradient = np.append(x.T @ (p - y) + w[:-1] / c, np.sum(p - y))
        return float(loss), gradient

    w0 = np.zeros(x.shape[1] + 1) if start is None else start
    result = minimize(loss_and_gradient, w0, jac=True, method="L-BFGS-B",
                      options={"maxiter": 500})
    return result.x


def logits(x: sparse.csr_matrix, w: np.ndarray) -> np.ndarray:
    return x @ w[:-1] + w[-1]


def probability(x: sparse.csr_matrix, w: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits(x, w)))


def compare(run_dir: Path) -> tuple[str, list[str]]:
    """The summary row and the by-length rows for one run folder."""
    config = load_config(run_dir / "config.yaml")
    splits = load_splits(config.data, config.training.seed)
    classifier = Classifier(run_dir)
    if len(classifier.labels) != 2 or splits.test is None:
        raise SystemExit(f"{run_dir}: needs a two-class run with a test split")
    positive = classifier.labels[1]
    tokenizer = classifier.tokenizer  # the run's own: the same vocabulary and truncation
    vocabulary = tokenizer.get_vocab_size()
    data_name = config.data.dataset or run_dir.name

    start = time.perf_counter()
    parts = {"train": splits.train, "validation": splits.validation, "test": splits.test}
    ids = {name: encode(tokenizer, data.texts) for name, data in parts.items()}
    labels = {name: np.array([label == positive for label in data.labels], dtype=np.float64)
              for name, data in parts.items()}
    counts = {name: features(texts, vocabulary) for name, texts in ids.items()}
    # Smoothed idf: ln((1 + documents) / (1 + documents with the term)) + 1.
    documents_with = np.asarray((counts["train"] > 0).sum(axis=0)).ravel()
    idf = np.log((1 + len(ids["train"])) / (1 + documents_with)) + 1.0
    matrices = {name: tfidf(c, idf) for name, c in counts.items()}
    weights, best = None, (-1.0, 0.0, None)
    for c in C_GRID:  # each fit starts from the last: the path is cheap
        weights = fit_logistic(matrices["train"], labels["train"], c, weights)
        accuracy = np.mean((probability(matrices["validation"], weights) >= 0.5)
                           == labels["validation"])
        print(f"{run_dir.name}: C {c:g}, validation accuracy {accuracy:.4f}", file=sys.stderr)
        if accuracy > best[0]:
            best = (accuracy, c, weights.copy())
    baseline_seconds = time.perf_counter() - start
    validation_accuracy, chosen_c, chosen = best
    baseline = probability(matrices["test"], chosen)

    start = time.perf_counter()
    lstm = classifier.predict_ids(ids["test"])[:, 1]
    lstm_seconds = time.perf_counter() - start
    truth = labels["test"].astype(bool)

    def accuracy_of(p: np.ndarray, where: np.ndarray | None = None) -> float:
        right = (p >= 0.5) == truth
        return float(right[where].mean() if where is not None else right.mean())

    lengths = np.array([len(text) for text in ids["test"]])
    model = f"{'BiLSTM' if config.model.bidirectional else 'LSTM'}, seed {config.training.seed}"
    summary = (
        f"| {data_name} | {model} | {accuracy_of(lstm):.4f} | "
        f"{accuracy_of(baseline):.4f} (C {chosen_c:g}, validation {validation_accuracy:.4f}) | "
        f"{np.mean((lstm >= 0.5) == (baseline >= 0.5)):.4f} | "
        f"{accuracy_of((lstm + baseline) / 2):.4f} | {baseline_seconds:.0f} | "
        f"{lstm_seconds:.0f} |")
    by_length = []
    for low, high in zip(LENGTH_EDGES, LENGTH_EDGES[1:]):
        where = (lengths >= low) & (lengths < high)
        if where.any():
            span = f"{low}+" if high == LENGTH_EDGES[-1] else f"{low}-{high - 1}"
            by_length.append(
                f"| {data_name} | {model} | {span} | "
                f"{int(where.sum())} | "
                f"{accuracy_of(lstm, where):.4f} | {accuracy_of(baseline, where):.4f} |")
    return summary, by_length


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="trained run folders")
    parser.add_argument("--markdown", type=Path, help="append the tables to this file")
    args = parser.parse_args()
    summaries, by_length = [], []
    for run_dir in args.runs:
        summary, lengths = compare(run_dir.resolve())
        summaries.append(summary)
        by_length += lengths
    lines = [
        "| data | run | run's test accuracy | TF-IDF + LR test accuracy | agree | "
        "average of the two | LR s (features + fits) | run's predict s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *summaries,
        "",
        "| data | run | tokens | texts | run's accuracy | TF-IDF + LR accuracy |",
        "| --- | --- | --- | --- | --- | --- |",
        *by_length,
    ]
    emit("\n".join(lines) + "\n", args.markdown)


if __name__ == "__main__":
    main()

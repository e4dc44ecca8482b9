"""Classification metrics with scikit-learn's definitions, computed with NumPy alone.

Precision, recall and F1 of a class with no predicted (or no true) examples are 0, as
scikit-learn reports them with its default `zero_division`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return matrix


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.zeros_like(numerator, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def classification_report(
    y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support, macro and weighted averages, confusion."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    matrix = confusion_matrix(y_true, y_pred, len(labels))
    true_positive = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    precision = _divide(true_positive, predicted.astype(np.float64))
    recall = _divide(true_positive, support.astype(np.float64))
    f1 = _divide(2 * precision * recall, precision + recall)
    total = int(support.sum())
    weights = support / total if total else np.zeros_like(precision)
    per_class = {
        label: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(labels)
    }
    return {
        "examples": total,
        "accuracy": float(true_positive.sum() / total) if total else 0.0,
        "per_class": per_class,
        "macro_avg": {
            "precision": float(precision.mean()),
            "recall": float(recall.mean()),
            "f1": float(f1.mean()),
            "support": total,
        },
        "weighted_avg": {
            "precision": float((precision * weights).sum()),
            "recall": float((recall * weights).sum()),
            "f1": float((f1 * weights).sum()),
            "support": total,
        },
        "labels": list(labels),
        "confusion_matrix": matrix.tolist(),
    }


def log_loss(y_true: Sequence[int], probabilities: np.ndarray) -> float:
    """Mean cross-entropy of the true class (probabilities clipped as Keras does)."""
    p = np.clip(probabilities[np.arange(len(y_true)), np.asarray(y_true)], 1e-7, 1.0)
    return float(-np.log(p).mean())


def evaluate_dataset(classifier: Any, dataset: Any, batch_size: int = 256) -> dict[str, Any]:
    """Predict a labelled data set with a `predict.Classifier` and report its metrics."""
    from bilstm_cli.errors import UserError

    unseen = sorted(set(dataset.labels) - set(classifier.labels))
    if unseen:
        raise UserError(
            f"{dataset.source}: label(s) {', '.join(map(repr, unseen))} are not among the "
            f"model's labels ({', '.join(classifier.labels)})"
        )
    index = {label: i for i, label in enumerate(classifier.labels)}
    y_true = np.array([index[label] for label in dataset.labels])
    probabilities = classifier.predict(dataset.texts, batch_size)
    report = classification_report(y_true, classifier.decide(probabilities), classifier.labels)
    report["loss"] = log_loss(y_true, probabilities)
    report["source"] = dataset.source
    return report

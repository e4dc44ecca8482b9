"""One finished run as `bilstm compare` sees it: what its folder records (config, parameters,
training time and speed, validation metrics, the learning curve, the splits it trained on) and
what is measured here on its test set (each text's probabilities, latency and throughput).

The test set is read again from the run's own config.yaml and seed (`test_set`), as training
read it. Prediction runs on the classifier the caller loads (api.load: ONNX Runtime for a
finished run, so no TensorFlow). No TensorFlow here.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bilstm_cli.architecture import describe, parameter_count
from bilstm_cli.config import Config
from bilstm_cli.data import Dataset
from bilstm_cli.errors import UserError
from bilstm_cli.evaluate import classification_report
from bilstm_cli.runs import (
    DATA_SUMMARY_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    RUN_FILE,
    member_dirs,
    read_config,
)
from bilstm_cli.runstate import read_history, read_json

LATENCY_TEXTS = 20  # single-text predictions timed, of typical length
CURVE_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


@dataclass
class Measured:
    folder: Path
    config: Config
    facts: dict[str, Any]  # what compare.json says about the run
    test: Dataset
    probabilities: np.ndarray  # (texts, classes), in `labels` order
    labels: list[str]
    predicted: list[str]  # each test text's label
    right: np.ndarray  # whether it is the true one

    def probability_of(self, index: int) -> tuple[str, float]:
        """The run's label for test text `index`, and its probability."""
        best = int(self.probabilities[index].argmax())
        return self.labels[best], float(self.probabilities[index, best])


def finished_run(folder: Path) -> Config:
    """The config of a run that finished training; a UserError naming the folder otherwise."""
    if not folder.is_dir():
        raise UserError(f"{folder}: no such run folder (give folders that `bilstm train` or "
                        "`bilstm compare` made)")
    config = read_config(folder)  # a UserError when it is missing or invalid
    state = (read_json(folder / RUN_FILE) or {}).get("state", "unknown")
    if state != "finished" or not (folder / METRICS_FILE).is_file():
        raise UserError(f"{folder} has not finished training (state: {state}): finish it "
                        f"first (bilstm train --resume {folder})")
    return config


def test_key(config: Config) -> str:
    """What a run's test split follows from: its data settings and its seed."""
    from bilstm_cli.config import with_absolute_data_paths

    data = with_absolute_data_paths(config).data
    return json.dumps([data.model_dump(mode="json"), config.training.seed])


def test_set(folder: Path, config: Config, cache: dict[str, Dataset]) -> Dataset:
    """The run's test split, read as its training read it (`cache`: by test_key, so the same
    test set is read once)."""
    from bilstm_cli.data import load_splits

    key = test_key(config)
    if key not in cache:
        splits = load_splits(config.data, config.training.seed)
        if splits.test is None:
            raise UserError(f"{folder} has no test data (its config gives no data.test): "
                            "compare scores the variants on a test set")
        cache[key] = splits.test
    return cache[key]


def measure(folder: Path, config: Config, classifier: Any, test: Dataset) -> Measured:
    """Predict the test set with the run's classifier and gather what its folder records."""
    started = time.perf_counter()
    probabilities = classifier.predict(test.texts)
    seconds = time.perf_counter() - started
    labels = list(classifier.labels)
    metrics = read_json(folder / METRICS_FILE) or {}
    summary = read_json(folder / DATA_SUMMARY_FILE) or {}
    index = {label: i for i, label in enumerate(labels)}
    unseen = sorted(set(test.labels) - set(labels))
    if unseen:
        raise UserError(f"{test.source}: label(s) {', '.join(map(repr, unseen))} are not among "
                        f"the labels of {folder} ({', '.join(labels)})")
    report = classification_report([index[label] for label in test.labels],
                                   probabilities.argmax(axis=1), labels)
    validation = metrics.get("validation") or {}
    members = metrics.get("members") or [metrics]
    arch = describe(config.model, classifier.tokenizer.get_vocab_size(), len(labels))
    facts = {
        "run": str(folder),
        "seed": config.training.seed,
        "parameters": parameter_count(arch, config.model.ensemble),
        "epochs_run": sum(int(m.get("epochs_run", 0)) for m in members),
        "best_epoch": [m.get("best_epoch") for m in members],
        "seconds_per_epoch": metrics.get("seconds_per_epoch"),
        "examples_per_second": metrics.get("examples_per_second"),
        "training_seconds": metrics.get("training_seconds"),
        "validation": {"accuracy": validation.get("accuracy"),
                       "macro_f1": (validation.get("macro_avg") or {}).get("f1")},
        "test": {"accuracy": report["accuracy"], "macro_f1": report["macro_avg"]["f1"]},
        "engine": getattr(classifier.engine, "name", "?"),
        "predictions_per_second": len(test) / max(seconds, 1e-9),
        "latency_ms": _latency_ms(classifier, test.texts),
        "splits": {name: split.get("fingerprint")
                   for name, split in (summary.get("splits") or {}).items()},
        "history": history(folder),
    }
    predicted = [labels[i] for i in probabilities.argmax(axis=1)]
    right = np.array([p == t for p, t in zip(predicted, test.labels)])
    return Measured(folder, config, facts, test, probabilities, labels, predicted, right)


def _latency_ms(classifier: Any, texts: list[str]) -> float:
    """The median time of one text's prediction, over texts around the median length (after
    one call to warm up)."""
    by_length = sorted(texts, key=len)
    middle = len(by_length) // 2
    sample = by_length[max(0, middle - LATENCY_TEXTS // 2):][:LATENCY_TEXTS]
    classifier.predict(sample[:1])
    times = []
    for text in sample:
        started = time.perf_counter()
        classifier.predict([text])
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000)


def history(folder: Path) -> list[dict[str, float]]:
    """The learning curve, epoch by epoch: loss, accuracy, val_loss, val_accuracy; an
    ensemble's is its members' mean at each epoch."""
    curves = [read_history(member / HISTORY_FILE) for member in member_dirs(folder)] or [
        read_history(folder / HISTORY_FILE)]
    rows = []
    for epoch in range(max(len(curve) for curve in curves)):
        at = [curve[epoch] for curve in curves if len(curve) > epoch]
        rows.append({"epoch": epoch + 1, **{key: float(np.mean([row[key] for row in at]))
                                            for key in CURVE_KEYS if all(key in r for r in at)}})
    return rows

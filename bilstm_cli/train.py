"""Training: data, tokenizer and model from a config, the fit loop, and the run folder it fills.

Importing this module imports TensorFlow (seconds): the CLI imports it only to train.

The order of work in `train` is the order of the run folder's files: config and data summary
first, tokenizer and labels, then the model after every improvement, history after every epoch,
and metrics at the end. Only a finished run becomes `latest`.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bilstm_cli import __version__
from bilstm_cli.backend import configure_threads, keras, tf
from bilstm_cli.config import Config, config_to_yaml
from bilstm_cli.console import TrainingDisplay
from bilstm_cli.data import Splits, load_splits, summarize
from bilstm_cli.data.splits import class_weights
from bilstm_cli.export import export_model
from bilstm_cli.model import build_model
from bilstm_cli.runs import (
    CONFIG_FILE,
    DATA_SUMMARY_FILE,
    HISTORY_FILE,
    LABELS_FILE,
    METRICS_FILE,
    MODEL_FILE,
    ONNX_FILE,
    TOKENIZER_FILE,
    mark_latest,
    new_run_dir,
    write_atomic,
    write_json_atomic,
    write_text_atomic,
)
from bilstm_cli.text import build_tokenizer, encode, length_batches, pad, save_tokenizer

Log = Callable[[str], None]


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, Any]


def run_name(config: Config) -> str:
    data = config.data.dataset or Path(config.data.train or "data").stem
    return config.output.name or f"{data}-{'bilstm' if config.model.bidirectional else 'lstm'}"


def _label_array(labels: list[str], names: list[str], binary: bool) -> np.ndarray:
    index = {name: i for i, name in enumerate(names)}
    y = np.array([index[label] for label in labels], dtype=np.int32)
    return y.astype(np.float32).reshape(-1, 1) if binary else y


def _batch_dataset(ids: list[np.ndarray], y: np.ndarray, batch_size: int,
                   seed: int | None, bucket: bool,
                   weights: np.ndarray | None = None) -> tuple[Any, int]:
    """A tf.data pipeline of padded batches; with a seed, reshuffled (reproducibly) per epoch.
    With `weights` (one per example: training.class_weight), batches carry sample weights, which
    Keras multiplies into each example's loss (the loss is their sum over the batch size)."""
    lengths = np.array([len(x) for x in ids])
    epoch = [0]

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng([seed, epoch[0]]) if seed is not None else None
        epoch[0] += 1
        for batch in length_batches(lengths, batch_size, rng, bucket):
            if weights is None:
                yield pad([ids[i] for i in batch]), y[batch]
            else:
                yield pad([ids[i] for i in batch]), y[batch], weights[batch]

    label_shape = (None, 1) if y.ndim == 2 else (None,)
    signature: tuple[Any, ...] = (
        tf.TensorSpec((None, None), tf.int32), tf.TensorSpec(label_shape, y.dtype))
    if weights is not None:
        signature += (tf.TensorSpec((None,), tf.float32),)
    dataset = tf.data.Dataset.from_generator(batches, output_signature=signature)
    steps = -(-len(ids) // batch_size)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(steps))
    return dataset.prefetch(2), steps


def train(
    config: Config,
    log: Log,
    run_dir: Path | None = None,
    command: list[str] | None = None,
    splits: Splits | None = None,
    summary: dict[str, Any] | None = None,
) -> TrainResult:
    started = datetime.now(timezone.utc)
    configure_threads(config.model.bidirectional, config.training.threads)

    keras.utils.set_random_seed(config.training.seed)
    splits = splits or load_splits(config.data, config.training.seed)
    labels = splits.labels or sorted(set(splits.train.labels))
    binary = len(labels) == 2

    run_dir = run_dir or new_run_dir(config.output.dir, run_name(config))
    run_dir.mkdir(parents=True, exist_ok=True)
    log(f"run folder: {run_dir}")
    write_text_atomic(run_dir / CONFIG_FILE, config_to_yaml(config))
    write_json_atomic(run_dir / LABELS_FILE, {"labels": labels})
    # What was trained on: counts per split and class, skipped bad rows, class weights.
    write_json_atomic(run_dir / DATA_SUMMARY_FILE, summary or summarize(splits, config))
    weights = class_weights(config.training.class_weight, labels, splits.train.labels)
    if weights:
        log("class weights: " + ", ".join(f"{k} {v:.4g}" for k, v in weights.items()))

    tokenizer = build_tokenizer(
        splits.train.texts, config.data.max_tokens, config.data.min_frequency,
        config.data.lowercase, config.data.max_length, config.data.truncate,
    )
    save_tokenizer(tokenizer, run_dir / TOKENIZER_FILE)
    train_ids = encode(tokenizer, splits.train.texts)
    val_ids = encode(tokenizer, splits.validation.texts)
    log(f"vocabulary: {tokenizer.get_vocab_size()} tokens; labels: {', '.join(labels)}")

    model = build_model(config.model, tokenizer.get_vocab_size(), len(labels))
    model.compile(
        optimizer=keras.optimizers.Adam(config.training.learning_rate,
                                        clipnorm=config.training.clipnorm),
        loss="binary_crossentropy" if binary else "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    train_data, steps = _batch_dataset(
        train_ids, _label_array(splits.train.labels, labels, binary),
        config.training.batch_size, config.training.seed, config.training.bucket_by_length,
        None if weights is None else
        np.array([weights[label] for label in splits.train.labels], dtype=np.float32))
    val_data, _ = _batch_dataset(
        val_ids, _label_array(splits.validation.labels, labels, binary),
        config.training.batch_size, None, config.training.bucket_by_length)

    display = TrainingDisplay(config.training.epochs)
    recorder = EpochRecorder(config, run_dir, display, steps, len(train_ids))
    callbacks: list[Any] = [recorder]
    if config.training.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard")))
    with display:
        model.fit(train_data, validation_data=val_data, epochs=config.training.epochs,
                  callbacks=callbacks, verbose=0, shuffle=False)
    if recorder.best_weights is not None:
        model.set_weights(recorder.best_weights)
    # The best model for ONNX Runtime too, so `predict` runs without TensorFlow.
    export_model(model, run_dir / ONNX_FILE)

    from bilstm_cli.evaluate import evaluate_dataset
    from bilstm_cli.predict import Classifier, TensorFlowEngine

    classifier = Classifier(run_dir, TensorFlowEngine(model))
    metrics: dict[str, Any] = {
        "best_epoch": recorder.best_epoch,
        "epochs_run": len(recorder.rows),
        "stopped_early": recorder.stopped_early,
        "monitor": config.training.monitor,
        "validation": evaluate_dataset(classifier, splits.validation),
        "test": evaluate_dataset(classifier, splits.test) if splits.test is not None else None,
        "seconds_per_epoch": float(np.median([r["seconds"] for r in recorder.rows])),
        "examples_per_second": float(np.median([r["examples_per_second"]
                                                 for r in recorder.rows])),
    }
    write_json_atomic(run_dir / METRICS_FILE, metrics)
    write_json_atomic(run_dir / "run.json", {
        "command": command or sys.argv,
        "seed": config.training.seed,
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "state": "finished",
        "versions": {"bilstm": __version__, "tensorflow": tf.__version__,
                     "keras": keras.__version__, "python": platform.python_version()},
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "gpus": [d.name for d in tf.config.list_physical_devices("GPU")]},
    })
    mark_latest(run_dir)
    return TrainResult(run_dir, metrics)


class EpochRecorder(keras.callbacks.Callback):
    """Per batch: progress. Per epoch: the table row, history.csv, the best model so far (kept in
    memory and saved as model.keras), and early stopping on the monitored metric."""

    def __init__(self, config: Config, run_dir: Path, display: TrainingDisplay, steps: int,
                 examples: int) -> None:
        super().__init__()
        self.monitor = config.training.monitor
        self.patience = config.training.early_stopping_patience
        self.batch_size = config.training.batch_size
        self.run_dir = run_dir
        self.display = display
        self.steps = steps
        self.examples = examples
        self.rows: list[dict[str, Any]] = []
        self.best: float | None = None
        self.best_epoch = 0
        self.best_weights: list[np.ndarray] | None = None
        self.stopped_early = False
        self.epoch_start = self.train_end = 0.0

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        return value < self.best if self.monitor == "val_loss" else value > self.best

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_start = self.train_end = time.perf_counter()
        self.display.start_epoch(epoch + 1, self.steps)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.train_end = time.perf_counter()
        done = min((batch + 1) * self.batch_size, self.examples)
        self.display.update(batch + 1, done, logs or {})

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        now = time.perf_counter()
        train_seconds = max(self.train_end - self.epoch_start, 1e-9)
        value = float(logs[self.monitor])
        best = self._improved(value)
        if best:
            self.best, self.best_epoch = value, epoch + 1
            self.best_weights = [w.copy() for w in self.model.get_weights()]
            write_atomic(self.run_dir / MODEL_FILE, lambda tmp: self.model.save(tmp))
        row = {
            "epoch": epoch + 1,
            "loss": float(logs["loss"]),
            "accuracy": float(logs["accuracy"]),
            "val_loss": float(logs["val_loss"]),
            "val_accuracy": float(logs["val_accuracy"]),
            "seconds": now - self.epoch_start,
            "train_seconds": train_seconds,
            "validation_seconds": now - self.train_end,
            "examples_per_second": self.examples / train_seconds,
            "best": best,
        }
        self.rows.append(row)
        self.display.end_epoch(row)
        columns = list(row)
        lines = [",".join(columns)] + [
            ",".join(f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c]) for c in columns)
            for r in self.rows
        ]
        write_text_atomic(self.run_dir / HISTORY_FILE, "\n".join(lines) + "\n")
        if self.patience and epoch + 1 - self.best_epoch >= self.patience:
            self.stopped_early = True
            self.model.stop_training = True


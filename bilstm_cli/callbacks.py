"""The training loop's callbacks, one job each, sharing one `TrainingState` (checkpoint.py).

`model.fit` calls them in list order for every event, so `callbacks()` puts them in the order
their work depends on: the step count first; the divergence guard before anything is saved; the
best model before the history row that marks it; the history before the progress display
shows the row; early stopping before the checkpoint that records it; the signal stop last, once
the checkpoint it promises is written.

The progress display is passed in (the CLI's rich table, or `QuietProgress` when the library is
used from Python): nothing here prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import keras
import numpy as np
import tensorflow as tf

from bilstm_cli.checkpoint import (
    Checkpoint,
    TrainingState,
    add_metric_state,
    read_state,
    save_best,
    save_last,
)
from bilstm_cli.errors import UserError
from bilstm_cli.interrupt import StopSignals, TrainingInterrupted
from bilstm_cli.runs import HISTORY_FILE, MODEL_FILE, write_atomic, write_text_atomic
from bilstm_cli.runstate import RunRecord


class Progress(Protocol):
    """What training shows while it runs (console.TrainingDisplay is the CLI's)."""

    def __enter__(self) -> Progress: ...
    def __exit__(self, *exc: object) -> None: ...
    def start_epoch(self, epoch: int, batches: int) -> None: ...
    def update(self, batches_done: int, examples: int, logs: Mapping[str, float]) -> None: ...
    def end_epoch(self, row: Mapping[str, Any]) -> None: ...


class QuietProgress:
    """No display: for training from Python (the history is in the run folder and the result)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def __enter__(self) -> QuietProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def start_epoch(self, epoch: int, batches: int) -> None:
        return None

    def update(self, batches_done: int, examples: int, logs: Mapping[str, float]) -> None:
        return None

    def end_epoch(self, row: Mapping[str, Any]) -> None:
        return None


class TrainingDiverged(UserError):
    """The loss became NaN or infinite: the weights are ruined, the last checkpoint is not."""


class Clock(keras.callbacks.Callback):
    """Counts the epoch's batches into the state (a resumed epoch starts after its checkpoint)
    and times the epoch's training and validation."""

    def __init__(self, state: TrainingState) -> None:
        super().__init__()
        self.state = state
        self.skip = 0
        self.epoch_start = self.train_end = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.skip = self.state.step
        self.epoch_start = self.train_end = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.train_end = time.perf_counter()
        self.state.step = self.skip + batch + 1


class DivergenceGuard(keras.callbacks.Callback):
    """Stops on a NaN or infinite loss or monitored value, before it can reach a checkpoint."""

    def __init__(self, state: TrainingState, run_dir: Path, monitor: str) -> None:
        super().__init__()
        self.state, self.run_dir, self.monitor = state, run_dir, monitor

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = float((logs or {}).get("loss", 0.0))
        if not np.isfinite(loss):
            raise diverged(self.run_dir, f"the training loss became {loss}", self.state.epoch,
                           self.state.step)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = float((logs or {})[self.monitor])
        if not np.isfinite(value):
            raise diverged(self.run_dir, f"{self.monitor} became {value}", epoch,
                           self.state.steps_per_epoch)


def diverged(run_dir: Path, what: str, epoch: int, step: int) -> TrainingDiverged:
    """The error for weights gone bad in epoch `epoch` (from 0) at batch `step`."""
    saved = read_state(run_dir)
    kept = "no checkpoint had been written yet" if saved is None else (
        f"the last good checkpoint (epoch {saved.epoch}"
        f"{f', batch {saved.step}' if saved.step else ''}) is kept in "
        f"{run_dir / 'checkpoints' / 'last'}")
    return TrainingDiverged(
        f"{what} in epoch {epoch + 1} at batch {step}: training stopped and {kept}. Try a lower "
        "learning rate (e.g. --set training.learning_rate=0.0005) or gradient clipping "
        "(--set training.clipnorm=1.0)")


class BestModel(keras.callbacks.Callback):
    """Keeps the best epoch's weights (by the monitored metric) in memory, and writes them as
    model.keras (plain Keras layers: `saved_model()`) and checkpoints/best."""

    def __init__(self, state: TrainingState, run_dir: Path, monitor: str,
                 best_weights: list[np.ndarray] | None,
                 saved_model: Callable[[], keras.Model]) -> None:
        super().__init__()
        self.state, self.run_dir, self.monitor = state, run_dir, monitor
        self.best_weights = best_weights
        self.saved_model = saved_model

    def _improved(self, value: float) -> bool:
        if self.state.best is None:
            return True
        return value < self.state.best if self.monitor == "val_loss" else value > self.state.best

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = float((logs or {})[self.monitor])
        if not self._improved(value):
            return
        self.state.best, self.state.best_epoch = value, epoch + 1
        self.best_weights = [w.copy() for w in self.model.get_weights()]
        saved = self.saved_model()
        write_atomic(self.run_dir / MODEL_FILE, lambda tmp: saved.save(tmp))
        save_best(self.run_dir, epoch + 1, self.monitor, value, self.run_dir / MODEL_FILE)


class History(keras.callbacks.Callback):
    """One row per epoch in the state and in history.csv: losses, accuracies, times, speed, and
    whether it is the best epoch so far."""

    def __init__(self, state: TrainingState, run_dir: Path, clock: Clock, examples: int,
                 resumed: bool) -> None:
        super().__init__()
        self.state, self.run_dir, self.clock, self.examples = state, run_dir, clock, examples
        if resumed:
            self.write()  # a kill may have left a row the checkpoint does not have

    def write(self) -> None:
        rows = self.state.history
        if not rows:
            (self.run_dir / HISTORY_FILE).unlink(missing_ok=True)
            return
        columns = list(rows[0])
        lines = [",".join(columns)] + [
            ",".join(f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c]) for c in columns)
            for r in rows
        ]
        write_text_atomic(self.run_dir / HISTORY_FILE, "\n".join(lines) + "\n")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs, clock, steps = logs or {}, self.clock, self.state.steps_per_epoch
        now = time.perf_counter()
        train_seconds = max(clock.train_end - clock.epoch_start, 1e-9)
        self.state.history.append({
            "epoch": epoch + 1,
            "loss": float(logs["loss"]),
            "accuracy": float(logs["accuracy"]),
            "val_loss": float(logs["val_loss"]),
            "val_accuracy": float(logs["val_accuracy"]),
            "seconds": now - clock.epoch_start,
            "train_seconds": train_seconds,
            "validation_seconds": now - clock.train_end,
            "examples_per_second": (steps - clock.skip) / steps * self.examples / train_seconds,
            "best": self.state.best_epoch == epoch + 1,
        })
        self.write()


class ShowProgress(keras.callbacks.Callback):
    """Feeds the progress display: the epoch's bar, and its history row when it ends."""

    def __init__(self, state: TrainingState, display: Progress, batch_size: int,
                 examples: int) -> None:
        super().__init__()
        self.state, self.display = state, display
        self.batch_size, self.examples = batch_size, examples

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.display.start_epoch(epoch + 1, self.state.steps_per_epoch)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        done = min(self.state.step * self.batch_size, self.examples)
        self.display.update(self.state.step, done, logs or {})

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.display.end_epoch(self.state.history[-1])


class EarlyStop(keras.callbacks.Callback):
    """Stops when the monitored metric has not improved for `patience` epochs (0: never)."""

    def __init__(self, state: TrainingState, patience: int) -> None:
        super().__init__()
        self.state, self.patience = state, patience

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.patience and epoch + 1 - self.state.best_epoch >= self.patience:
            self.state.stopped_early = True
            self.model.stop_training = True


class Checkpoints(keras.callbacks.Callback):
    """checkpoints/last after every epoch, every `every` steps (None: only per epoch) and when a
    stop is requested mid-epoch; run.json's progress after every epoch. A resumed mid-epoch
    checkpoint's running metric sums are added after the first batch. Without
    `mid_epoch_metrics` (several workers: reading the sums is a collective, which a worker that
    alone got a signal would wait on for ever) a mid-epoch checkpoint leaves them out."""

    def __init__(self, state: TrainingState, run_dir: Path, best: BestModel, every: int | None,
                 stop: StopSignals, record: RunRecord, resumed: Checkpoint | None,
                 mid_epoch_metrics: bool = True) -> None:
        super().__init__()
        self.state, self.run_dir, self.best, self.every = state, run_dir, best, every
        self.stop, self.record = stop, record
        self.mid_epoch_metrics = mid_epoch_metrics
        self.pending_metrics = resumed if resumed is not None and state.step else None
        self.saved_at: tuple[int, int] | None = None  # (epoch, step) of the last one written

    def _save(self, mid_epoch: bool) -> None:
        # Keras reports a batch's loss from before its update, so a finite loss can come with
        # weights that the update just made inf or nan: never keep those as the last good state.
        # (A reduction per variable: no host copy besides the one save_last makes.)
        if not all(bool(tf.reduce_all(tf.math.is_finite(v)))
                   for v in self.model.trainable_variables):
            step = self.state.step if mid_epoch else self.state.steps_per_epoch
            raise diverged(self.run_dir, "the weights became inf or nan", self.state.epoch, step)
        save_last(self.run_dir, self.state, self.model, self.best.best_weights,
                  metric_state=mid_epoch and self.mid_epoch_metrics)
        self.saved_at = (self.state.epoch, self.state.step)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.pending_metrics is not None:
            add_metric_state(self.pending_metrics, self.model)
            self.pending_metrics = None
        step, steps = self.state.step, self.state.steps_per_epoch
        if step >= steps:
            return  # the epoch's end writes the checkpoint (after validation)
        if self.stop.requested or (
                self.every and (self.state.epoch * steps + step) % self.every == 0):
            self._save(mid_epoch=True)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.state.epoch, self.state.step = epoch + 1, 0
        self._save(mid_epoch=False)
        self.record.update(epochs_done=self.state.epoch, best_epoch=self.state.best_epoch,
                           stopped_early=self.state.stopped_early)


class SignalStop(keras.callbacks.Callback):
    """Ctrl-C or SIGTERM: stops after the batch (or epoch) whose checkpoint is written. (A
    signal that comes after the checkpoint's check and before this one waits a batch.)"""

    def __init__(self, state: TrainingState, stop: StopSignals, checkpoints: Checkpoints) -> None:
        super().__init__()
        self.state, self.stop, self.checkpoints = state, stop, checkpoints

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step, steps = self.state.step, self.state.steps_per_epoch
        saved = self.checkpoints.saved_at == (self.state.epoch, step)
        if self.stop.requested and saved and step < steps:
            raise TrainingInterrupted(self.stop.signum or 2, f"in epoch {self.state.epoch + 1} "
                                      f"after batch {step} of {steps}")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.stop.requested:
            raise TrainingInterrupted(self.stop.signum or 2, f"after epoch {epoch + 1}")


def callbacks(state: TrainingState, run_dir: Path, *, monitor: str, patience: int,
              checkpoint_every: int | None, batch_size: int, examples: int, display: Progress,
              stop: StopSignals, record: RunRecord, resumed: Checkpoint | None,
              best_weights: list[np.ndarray] | None,
              saved_model: Callable[[], keras.Model],
              mid_epoch_metrics: bool = True) -> tuple[list[Any], BestModel]:
    """The training loop's callbacks in the order their work depends on, and the one that holds
    the best weights."""
    clock = Clock(state)
    best = BestModel(state, run_dir, monitor, best_weights, saved_model)
    checkpoints = Checkpoints(state, run_dir, best, checkpoint_every, stop, record, resumed,
                              mid_epoch_metrics)
    return [
        clock,
        DivergenceGuard(state, run_dir, monitor),
        best,
        History(state, run_dir, clock, examples, resumed is not None),
        ShowProgress(state, display, batch_size, examples),
        EarlyStop(state, patience),
        checkpoints,
        SignalStop(state, stop, checkpoints),
    ], best

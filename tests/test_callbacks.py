"""The training loop's callbacks (callbacks.py), each job on a tiny Keras model of its own."""

from __future__ import annotations

import csv
from pathlib import Path

import keras
import numpy as np
import pytest

from bilstm_cli.callbacks import TrainingDiverged, callbacks
from bilstm_cli.checkpoint import TrainingState, read_state
from bilstm_cli.interrupt import StopSignals, TrainingInterrupted
from bilstm_cli.runstate import RunRecord


class Recorder:
    """A progress display that writes down what it was shown."""

    def __init__(self, epochs: int) -> None:
        self.events: list[tuple] = []

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def start_epoch(self, epoch: int, batches: int) -> None:
        self.events.append(("start", epoch, batches))

    def update(self, batches_done: int, examples: int, logs) -> None:
        self.events.append(("update", batches_done, examples))

    def end_epoch(self, row) -> None:
        self.events.append(("end", row["epoch"], row["best"]))


def _setup(tmp_path: Path, y: np.ndarray | None = None, patience: int = 0,
           every: int | None = None):
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(40, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("float32") if y is None else y
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    state = TrainingState(steps_per_epoch=4)
    display, stop = Recorder(3), StopSignals(lambda message: None)
    record = RunRecord.start(tmp_path, ["test"], 0, False, False, {}, {})
    loop, best = callbacks(
        state, tmp_path, monitor="val_loss", patience=patience, checkpoint_every=every,
        batch_size=10, examples=40, display=display, stop=stop, record=record, resumed=None,
        best_weights=None, saved_model=lambda: model)
    return model, (x, y), state, display, stop, loop, best


def _fit(model, data, loop, epochs: int = 3) -> None:
    x, y = data
    model.fit(x, y, batch_size=10, epochs=epochs, validation_data=(x, y), callbacks=loop,
              verbose=0, shuffle=False)


def test_each_epoch_leaves_its_row_best_model_and_checkpoint(tmp_path):
    model, data, state, display, _, loop, best = _setup(tmp_path)
    _fit(model, data, loop)
    rows = list(csv.DictReader(open(tmp_path / "history.csv")))
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]
    assert state.best_epoch == 3 and rows[-1]["best"] == "True"  # the loss falls every epoch
    assert best.best_weights is not None and (tmp_path / "model.keras").is_file()
    saved = read_state(tmp_path)
    assert saved is not None and (saved.epoch, saved.step) == (3, 0)
    # The display saw each epoch start, its four batches, and its row (with the best mark).
    assert display.events[:6] == [("start", 1, 4), ("update", 1, 10), ("update", 2, 20),
                                  ("update", 3, 30), ("update", 4, 40), ("end", 1, True)]
    assert [e for e in display.events if e[0] == "end"] == [("end", n, True) for n in (1, 2, 3)]


def test_a_nan_loss_stops_before_a_checkpoint_and_names_where(tmp_path):
    y = np.full(40, np.nan, dtype="float32")
    model, data, _, _, _, loop, _ = _setup(tmp_path, y=y)
    with pytest.raises(TrainingDiverged, match="epoch 1 at batch 1: .*no checkpoint"):
        _fit(model, data, loop)
    assert read_state(tmp_path) is None


def test_a_stop_request_saves_the_batch_then_stops(tmp_path):
    model, data, _, _, stop, loop, _ = _setup(tmp_path)
    stop.signum = 15  # as the SIGTERM handler sets it
    with pytest.raises(TrainingInterrupted, match="after batch 1 of 4"):
        _fit(model, data, loop)
    saved = read_state(tmp_path)
    assert saved is not None and (saved.epoch, saved.step) == (0, 1)


def test_step_checkpoints_and_early_stopping(tmp_path):
    # Labels the model cannot learn: the validation loss soon stops improving.
    y = np.random.default_rng(1).integers(0, 2, 40).astype("float32")
    model, data, state, _, _, loop, _ = _setup(tmp_path, y=y, patience=1, every=2)
    model.optimizer.learning_rate.assign(0.5)
    _fit(model, data, loop, epochs=30)
    assert state.stopped_early and len(state.history) == state.best_epoch + 1
    saved = read_state(tmp_path)
    assert saved is not None and saved.stopped_early and saved.epoch == len(state.history)

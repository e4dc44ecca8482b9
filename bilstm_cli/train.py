"""Training: data, tokenizer and model from a config, the fit loop, and the run folder it fills.

Importing this module imports TensorFlow (seconds): the CLI imports it only to train.

The order of work in `train` is the order of the run folder's files: config and data summary
first, tokenizer and labels, then the model after every improvement, history after every epoch,
and metrics at the end. Only a finished run becomes `latest`.

Training can stop at any moment and continue exactly where it was (checkpoint.py): the fit loop
runs one `model.fit` call per epoch on that epoch's batches (minus those a mid-epoch checkpoint
already did), and the EpochRecorder callback writes `checkpoints/last` after every epoch (and
every `training.checkpoint_every` steps), stops cleanly on Ctrl-C/SIGTERM, and stops on a NaN
loss before it can reach a checkpoint.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tokenizers import Tokenizer

from bilstm_cli import accel, regularizers
from bilstm_cli.architecture import Architecture, describe
from bilstm_cli.backend import configure_threads
from bilstm_cli.checkpoint import (
    Checkpoint,
    TrainingState,
    add_metric_state,
    load_last,
    read_state,
    restore,
    save_best,
    save_last,
)
from bilstm_cli.config import Config, TrainingConfig, config_to_yaml, with_absolute_data_paths
from bilstm_cli.console import TrainingDisplay
from bilstm_cli.data import Splits, load_splits, summarize
from bilstm_cli.data.splits import class_weights
from bilstm_cli.errors import UserError
from bilstm_cli.export import export_model
from bilstm_cli.interrupt import StopSignals, TrainingInterrupted
from bilstm_cli.model import build_model, ensemble_model, keras_copy
from bilstm_cli.runs import (
    CONFIG_FILE,
    DATA_SUMMARY_FILE,
    HISTORY_FILE,
    LABELS_FILE,
    MEMBERS_DIR,
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
from bilstm_cli.runstate import RUN_FILE, RunLock, RunRecord, command_line, versions
from bilstm_cli.text import encode, length_batches, pad, save_tokenizer, tokenizer_for
from bilstm_cli.word_vectors import cooccurrence_vectors

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
                   weights: np.ndarray | None = None, epoch: int = 0,
                   skip: int = 0) -> tuple[Any, int]:
    """A tf.data pipeline of padded batches; with a seed, reshuffled (reproducibly) per epoch.
    With `weights` (one per example: training.class_weight), batches carry sample weights, which
    Keras multiplies into each example's loss (the loss is their sum over the batch size).
    The batch order of `epoch` depends only on (seed, epoch); `skip` leaves out the first batches
    (done before a mid-epoch checkpoint). Returns the dataset and the full epoch's steps."""
    lengths = np.array([len(x) for x in ids])

    def batches() -> Iterator[tuple[np.ndarray, ...]]:
        rng = np.random.default_rng([seed, epoch]) if seed is not None else None
        for batch in length_batches(lengths, batch_size, rng, bucket)[skip:]:
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
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(steps - skip))
    return dataset.prefetch(2), steps


def train(
    config: Config,
    log: Log,
    run_dir: Path | None = None,
    command: list[str] | None = None,
    splits: Splits | None = None,
    summary: dict[str, Any] | None = None,
    resume: bool = False,
    warn: Log | None = None,
    tokenizer: Tokenizer | None = None,
) -> TrainResult:
    """Train into `run_dir` (default: a new run folder). With `resume`, continue from its
    `checkpoints/last` (the caller has checked the config: checkpoint.check_resume); without, any
    earlier training in the folder is started over. The folder is locked meanwhile, and run.json
    follows the run: running, then finished, interrupted or failed."""
    warn = warn or log
    run_dir = run_dir or new_run_dir(config.output.dir, run_name(config))
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the run folder {run_dir}: {exc.strerror}") from None
    with RunLock(run_dir, warn), StopSignals(warn) as stop:
        record = RunRecord.start(
            run_dir, command or command_line(), config.training.seed,
            config.training.deterministic, resume, _machine(),
            versions(tf.__version__, keras.__version__))
        try:
            return _train_in_folder(config, log, run_dir, splits, summary, resume, stop,
                                    record, tokenizer)
        except BaseException as exc:
            record.end_for(exc)
            if isinstance(exc, TrainingInterrupted):
                exc.run_dir = run_dir
            raise


def _learning_rate(training: TrainingConfig, steps_per_epoch: int) -> Any:
    """The rate, or a schedule of it by step: `cosine` falls from the rate to zero over all
    `epochs` (Keras' optimizer step counter drives it, so a resumed run continues the curve)."""
    if training.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            training.learning_rate, decay_steps=training.epochs * steps_per_epoch)
    return training.learning_rate


def _machine() -> dict[str, Any]:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "gpus": [d.name for d in tf.config.list_physical_devices("GPU")]}


def _start_over(run_dir: Path) -> None:
    """A fresh training in a folder that may hold an earlier one (`--force`): its checkpoints,
    history, model, metrics and ensemble members go; nothing of it may leak into the new run."""
    import shutil

    from bilstm_cli.checkpoint import clear

    clear(run_dir)
    shutil.rmtree(run_dir / MEMBERS_DIR, ignore_errors=True)
    for name in (HISTORY_FILE, METRICS_FILE, MODEL_FILE, ONNX_FILE):
        (run_dir / name).unlink(missing_ok=True)


@dataclass
class Fit:
    """One trained model (the best epoch's weights) and how its training went."""

    model: keras.Model
    summary: dict[str, Any]


@dataclass
class Prepared:
    """What every model of a run shares: the split, labels, tokenizer and token ids."""

    splits: Splits
    labels: list[str]
    tokenizer: Tokenizer
    train_ids: list[np.ndarray]
    val_ids: list[np.ndarray]
    example_weights: np.ndarray | None
    arch: Architecture
    kinds: accel.Layers  # the layer classes training builds with
    summary: dict[str, Any]
    # model.embedding_init: cooccurrence, made by the first model that needs them: an
    # ensemble's members start from the same table.
    word_vectors: np.ndarray | None = None


def _write_run_files(run_dir: Path, config: Config, data: Prepared,
                     summary: dict[str, Any]) -> None:
    """What `predict` and `evaluate` read besides the model, and what was trained on."""
    write_text_atomic(run_dir / CONFIG_FILE, config_to_yaml(with_absolute_data_paths(config)))
    write_json_atomic(run_dir / LABELS_FILE, {"labels": data.labels})
    write_json_atomic(run_dir / DATA_SUMMARY_FILE, summary)
    save_tokenizer(data.tokenizer, run_dir / TOKENIZER_FILE)


def _train_in_folder(
    config: Config,
    log: Log,
    run_dir: Path,
    splits: Splits | None,
    summary: dict[str, Any] | None,
    resume: bool,
    stop: StopSignals,
    record: RunRecord,
    tokenizer: Tokenizer | None = None,
) -> TrainResult:
    configure_threads(config.model.bidirectional, config.training.threads)
    kinds = accel.select(config.training.kernel, log)
    keras.utils.set_random_seed(config.training.seed)
    if config.training.deterministic:
        tf.config.experimental.enable_op_determinism()
    log(f"run folder: {run_dir}")
    data = _prepare(config, log, run_dir, kinds, splits, summary, resume, tokenizer)
    # From here a signal stops at the next safe point: after a batch, or between the steps of
    # the final phase (the epochs are saved by then; `--resume` does what is left).
    stop.graceful = True
    try:
        # The accel layers' custom gradients are released once a model's functions are built.
        with kinds.tracing():
            if config.model.ensemble > 1:
                fits = _fit_members(config, log, run_dir, data, resume, stop, record)
            else:
                fits = [_fit(config, log, run_dir, data, resume, stop, record)]
            stop.final_phase = True
            return _finish(config, log, run_dir, data, fits, stop, record)
    finally:
        stop.graceful = False


def _prepare(config: Config, log: Log, run_dir: Path, kinds: accel.Layers,
             splits: Splits | None, summary: dict[str, Any] | None, resume: bool,
             tokenizer: Tokenizer | None) -> Prepared:
    """The split, tokenizer, ids and run files every model of the run shares."""
    splits = splits or load_splits(config.data, config.training.seed)
    labels = splits.labels or sorted(set(splits.train.labels))
    if not resume:
        _start_over(run_dir)
    # What was trained on: counts per split and class, skipped bad rows, class weights.
    tokenizer = tokenizer or tokenizer_for(config.data, splits.train.texts)
    summary = summary or summarize(splits, config, tokenizer)
    weights = class_weights(config.training.class_weight, labels, splits.train.labels)
    if weights:
        log("class weights: " + ", ".join(f"{k} {v:.4g}" for k, v in weights.items()))
    data = Prepared(
        splits, labels, tokenizer, encode(tokenizer, splits.train.texts),
        encode(tokenizer, splits.validation.texts),
        None if weights is None else
        np.array([weights[label] for label in splits.train.labels], dtype=np.float32),
        describe(config.model, tokenizer.get_vocab_size(), len(labels)), kinds, summary)
    _write_run_files(run_dir, config, data, summary)
    log(f"vocabulary: {tokenizer.get_vocab_size()} tokens; labels: {', '.join(labels)}")
    return data


def _finish(config: Config, log: Log, run_dir: Path, data: Prepared, fits: list[Fit],
            stop: StopSignals, record: RunRecord) -> TrainResult:
    """The final phase: the run's model.keras (an ensemble's), model.onnx, the validation and
    test reports, run.json and `latest`. A signal stops it between steps."""
    model = fits[0].model if len(fits) == 1 else ensemble_model([fit.model for fit in fits])
    if len(fits) > 1:  # a single model's model.keras is written at its best epoch
        saved = ensemble_model([keras_copy(fit.model, data.arch) for fit in fits])
        write_atomic(run_dir / MODEL_FILE, lambda tmp: saved.save(tmp))
        del saved
    # Every model is built: the vectors' [vocab, dim] floats (41 MB for IMDB) need not be held
    # through the final phase, where the run's memory peaks.
    data.word_vectors = None
    stop.check("in the final phase, before the ONNX export")
    # The best model for ONNX Runtime too, so `predict` runs without TensorFlow.
    export_model(model, data.arch, run_dir / ONNX_FILE)
    stop.check("in the final phase, before the evaluation")

    from bilstm_cli.evaluate import evaluate_dataset
    from bilstm_cli.predict import Classifier, TensorFlowEngine

    classifier = Classifier(run_dir, TensorFlowEngine(model))
    splits = data.splits
    metrics: dict[str, Any] = {**_summaries(fits),
                               "validation": evaluate_dataset(classifier, splits.validation)}
    stop.check("in the final phase, during the evaluation")
    metrics["test"] = evaluate_dataset(classifier, splits.test) \
        if splits.test is not None else None
    stop.check("in the final phase, after the evaluation")
    write_json_atomic(run_dir / METRICS_FILE, metrics)
    if len(fits) == 1:
        record.end("finished", epochs_done=metrics["epochs_run"],
                   best_epoch=metrics["best_epoch"], stopped_early=metrics["stopped_early"])
    else:
        record.end("finished", members_done=len(fits),
                   epochs_done=sum(fit.summary["epochs_run"] for fit in fits))
    try:
        mark_latest(run_dir)
    except UserError as exc:  # the run itself is complete: say so, and go on
        log(f"warning: {exc}")
    return TrainResult(run_dir, metrics)


def _summaries(fits: list[Fit]) -> dict[str, Any]:
    """metrics.json's account of the training: the one model's, or each member's and the
    totals."""
    if len(fits) == 1:
        return fits[0].summary
    members = [fit.summary for fit in fits]
    return {
        "members": members,
        "monitor": members[0]["monitor"],
        "training_seconds": sum(m["training_seconds"] for m in members),
        "seconds_per_epoch": float(np.median([m["seconds_per_epoch"] for m in members])),
        "examples_per_second": float(np.median([m["examples_per_second"] for m in members])),
    }


def member_config(config: Config, index: int) -> Config:
    """Member `index` (from 0) of an ensemble: a single model with its own seed. The split is
    the ensemble's (made once from training.seed), so every member validates on the same texts."""
    return config.model_copy(update={
        "model": config.model.model_copy(update={"ensemble": 1}),
        "training": config.training.model_copy(
            update={"seed": config.training.seed + 1000 * index}),
    })


def _fit_members(config: Config, log: Log, run_dir: Path, data: Prepared, resume: bool,
                 stop: StopSignals, record: RunRecord) -> list[Fit]:
    """Train an ensemble's members one after the other, each in its own run folder
    (members/1, ...) with its own checkpoints: a resumed ensemble keeps the finished members and
    continues the one that was interrupted."""
    from bilstm_cli.checkpoint import has_checkpoint
    from bilstm_cli.predict import load_keras_model
    from bilstm_cli.runstate import read_json

    count = config.model.ensemble
    fits: list[Fit] = []
    for index in range(count):
        member = member_config(config, index)
        member_dir = run_dir / MEMBERS_DIR / str(index + 1)
        member_dir.mkdir(parents=True, exist_ok=True)
        log(f"ensemble member {index + 1} of {count} (seed {member.training.seed}): "
            f"{MEMBERS_DIR}/{index + 1}")
        saved = read_json(member_dir / RUN_FILE) or {}
        metrics = read_json(member_dir / METRICS_FILE)
        if resume and saved.get("state") == "finished" and metrics and \
                (member_dir / MODEL_FILE).is_file() and \
                (metrics["stopped_early"] or metrics["epochs_run"] >= member.training.epochs):
            log(f"member {index + 1} finished before: kept")
            fits.append(Fit(_weights_only(load_keras_model(member_dir / MODEL_FILE), data),
                            metrics))
            continue
        continuing = resume and has_checkpoint(member_dir)
        # This session's command (a resumed record's first one is the original).
        command = (record.data.get("resumed") or [record.data])[-1]["command"]
        member_record = RunRecord.start(
            member_dir, command, member.training.seed,
            member.training.deterministic, continuing, record.data["machine"],
            record.data["versions"])
        try:
            if not continuing:
                _start_over(member_dir)
            _write_run_files(member_dir, member, data, data.summary)
            fit = _fit(member, log, member_dir, data, continuing, stop, member_record)
            # a member predicts on its own too
            export_model(fit.model, data.arch, member_dir / ONNX_FILE)
            write_json_atomic(member_dir / METRICS_FILE, fit.summary)
        except BaseException as exc:
            member_record.end_for(exc)
            if isinstance(exc, TrainingInterrupted):
                exc.member_dir = member_dir
            raise
        member_record.end("finished", epochs_done=fit.summary["epochs_run"],
                          best_epoch=fit.summary["best_epoch"],
                          stopped_early=fit.summary["stopped_early"])
        record.update(members_done=index + 1)
        fits.append(Fit(_weights_only(fit.model, data), fit.summary))
        del fit  # the trained model and its optimizer's state, before the next member trains
    return fits


def _weights_only(model: keras.Model, data: Prepared) -> keras.Model:
    """The model rebuilt with its weights but no optimizer or regularizer around it, for the
    ensemble's evaluation (members/<i>/ keep their training state)."""
    copy = build_model(data.arch, data.kinds)
    copy.set_weights(model.get_weights())
    return copy


def _fit(config: Config, log: Log, run_dir: Path, data: Prepared, resume: bool,
         stop: StopSignals, record: RunRecord) -> Fit:
    """Build, compile and fit one model in `run_dir` (its checkpoints, history and
    model.keras), from `checkpoints/last` when resuming; the best epoch's weights at the end."""
    keras.utils.set_random_seed(config.training.seed)
    splits, labels = data.splits, data.labels
    binary = len(labels) == 2
    checkpoint = load_last(run_dir) if resume else None
    steps = -(-len(data.train_ids) // config.training.batch_size)
    model = _build(config, log, data, fresh=checkpoint is None)
    trainer = regularizers.trainer(model, data.arch, config.training)
    trainer.compile(
        optimizer=data.kinds.adam(_learning_rate(config.training, steps),
                                  clipnorm=config.training.clipnorm,
                                  weight_decay=config.training.weight_decay or None),
        loss="binary_crossentropy" if binary else "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    train_data = partial(
        _batch_dataset, data.train_ids, _label_array(splits.train.labels, labels, binary),
        config.training.batch_size, config.training.seed, config.training.bucket_by_length,
        data.example_weights)
    val_data, _ = _batch_dataset(
        data.val_ids, _label_array(splits.validation.labels, labels, binary),
        config.training.batch_size, None, config.training.bucket_by_length)
    state, best_weights = TrainingState(steps_per_epoch=steps), None
    if checkpoint is not None:
        best_weights = restore(checkpoint, trainer, steps)
        state = checkpoint.state
        where = f", {state.step} of {steps} batches into epoch {state.epoch + 1}" \
            if state.step else ""
        log(f"resuming from {checkpoint.path.name}: {state.epoch} epochs done{where}")

    display = TrainingDisplay(config.training.epochs)
    recorder = EpochRecorder(config, run_dir, display, state, best_weights,
                             len(data.train_ids), stop, record, checkpoint,
                             partial(keras_copy, model, data.arch))
    callbacks: list[Any] = [recorder]
    if config.training.tensorboard:
        callbacks.append(_tensorboard(run_dir))
    # Once fitted, the model's training functions are built: the accel kernel's custom
    # gradients (and through them this model) need not be kept.
    with display, data.kinds.tracing():
        for row in state.history:  # the epochs done before a resume
            display.end_epoch(row)
        # One fit call per epoch: each epoch's batches are built for that epoch alone, so a
        # resumed epoch can start at the batch after its checkpoint.
        while state.epoch < config.training.epochs and not state.stopped_early:
            batches, _ = train_data(epoch=state.epoch, skip=state.step)
            trainer.fit(batches, validation_data=val_data, initial_epoch=state.epoch,
                        epochs=state.epoch + 1, callbacks=callbacks, verbose=0, shuffle=False)
    if recorder.best_weights is not None:
        model.set_weights(recorder.best_weights)
    rows = recorder.rows
    best = rows[recorder.best_epoch - 1]
    return Fit(model, {
        "seed": config.training.seed,
        "best_epoch": recorder.best_epoch,
        "epochs_run": len(rows),
        "stopped_early": recorder.stopped_early,
        "monitor": config.training.monitor,
        "best_val_loss": best["val_loss"],
        "best_val_accuracy": best["val_accuracy"],
        "training_seconds": float(sum(r["seconds"] for r in rows)),
        "seconds_per_epoch": float(np.median([r["seconds"] for r in rows])),
        "examples_per_second": float(np.median([r["examples_per_second"] for r in rows])),
    })


def _build(config: Config, log: Log, data: Prepared, fresh: bool) -> keras.Model:
    """The model to train, with the accel layers where they run. A `fresh` one (not resumed)
    with `model.embedding_init: cooccurrence` starts from the training texts' word vectors,
    made by the first model that needs them: an ensemble's members start from the same."""
    vectors = None
    if config.model.embedding_init == "cooccurrence" and fresh:
        if data.word_vectors is None:
            started = time.monotonic()
            data.word_vectors = cooccurrence_vectors(
                data.train_ids, data.arch.vocab_size, config.model.embedding_dim,
                config.training.seed)
            log(f"initial word vectors from the training texts' co-occurrences: "
                f"{time.monotonic() - started:.1f} s")
        vectors = data.word_vectors
    return build_model(data.arch, data.kinds, vectors, config.model.embedding_init_scale)


def _tensorboard(run_dir: Path) -> Any:
    """TensorBoard logs in the run folder; TensorFlow no longer brings the package along."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise UserError("training.tensorboard is true but the tensorboard package is not "
                        "installed: pip install tensorboard (or set training.tensorboard=false)")
    return keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard"))


class TrainingDiverged(UserError):
    """The loss became NaN or infinite: the weights are ruined, the last checkpoint is not."""


class EpochRecorder(keras.callbacks.Callback):
    """Per batch: progress, the NaN/inf guard, step checkpoints and the stop signal. Per epoch:
    the table row, history.csv, the best model so far (kept in memory, saved as model.keras and
    checkpoints/best), early stopping on the monitored metric, and checkpoints/last."""

    def __init__(self, config: Config, run_dir: Path, display: TrainingDisplay,
                 state: TrainingState, best_weights: list[np.ndarray] | None, examples: int,
                 stop: StopSignals, record: RunRecord, resumed: Checkpoint | None,
                 saved_model: Callable[[], keras.Model]) -> None:
        super().__init__()
        # What model.keras holds: the model in Keras' own layers, without a regularizer.
        self.saved_model = saved_model
        self.monitor = config.training.monitor
        self.patience = config.training.early_stopping_patience
        self.batch_size = config.training.batch_size
        every = config.training.checkpoint_every
        self.checkpoint_every = None if every == "epoch" else int(every)
        self.run_dir = run_dir
        self.display = display
        self.state = state
        self.steps = state.steps_per_epoch
        self.examples = examples
        self.best_weights = best_weights
        self.stop = stop
        self.record = record
        # A mid-epoch checkpoint's running loss/accuracy sums, added after the first batch.
        self.pending_metrics = resumed if resumed is not None and state.step else None
        self.epoch = state.epoch
        self.skip = 0
        self.epoch_start = self.train_end = 0.0
        if resumed is not None:
            self._write_history()  # a kill may have left a row the checkpoint does not have

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.state.history

    @property
    def best_epoch(self) -> int:
        return self.state.best_epoch

    @property
    def stopped_early(self) -> bool:
        return self.state.stopped_early

    def _improved(self, value: float) -> bool:
        if self.state.best is None:
            return True
        return value < self.state.best if self.monitor == "val_loss" else value > self.state.best

    def _save_last(self, mid_epoch: bool) -> None:
        # Keras reports a batch's loss from before its update, so a finite loss can come with
        # weights that the update just made inf or nan: never keep those as the last good state.
        # (A reduction per variable: no host copy besides the one save_last makes.)
        if not all(bool(tf.reduce_all(tf.math.is_finite(v)))
                   for v in self.model.trainable_variables):
            step = self.state.step if mid_epoch else self.steps
            raise TrainingDiverged(self._diverged_message("the weights became inf or nan", step))
        save_last(self.run_dir, self.state, self.model, self.best_weights, metric_state=mid_epoch)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch, self.skip = epoch, self.state.step
        self.epoch_start = self.train_end = time.perf_counter()
        self.display.start_epoch(epoch + 1, self.steps)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        self.train_end = time.perf_counter()
        if self.pending_metrics is not None:
            add_metric_state(self.pending_metrics, self.model)
            self.pending_metrics = None
        loss = float(logs.get("loss", 0.0))
        step = self.skip + batch + 1
        if not np.isfinite(loss):
            raise TrainingDiverged(self._diverged_message(f"the training loss became {loss}", step))
        self.state.step = step
        done = min(step * self.batch_size, self.examples)
        self.display.update(step, done, logs)
        if step >= self.steps:
            return  # the epoch's end writes the checkpoint (after validation)
        if self.stop.requested:
            self._save_last(mid_epoch=True)
            raise TrainingInterrupted(
                self.stop.signum or 2, f"in epoch {self.epoch + 1} after batch {step} of "
                f"{self.steps}")
        every = self.checkpoint_every
        if every and (self.epoch * self.steps + step) % every == 0:
            self._save_last(mid_epoch=True)

    def _diverged_message(self, what: str, step: int) -> str:
        saved = read_state(self.run_dir)
        kept = "no checkpoint had been written yet" if saved is None else (
            f"the last good checkpoint (epoch {saved.epoch}"
            f"{f', batch {saved.step}' if saved.step else ''}) is kept in "
            f"{self.run_dir / 'checkpoints' / 'last'}")
        return (f"{what} in epoch {self.epoch + 1} at batch {step}: "
                f"training stopped and {kept}. Try a lower learning rate (e.g. --set "
                "training.learning_rate=0.0005) or gradient clipping (--set training.clipnorm=1.0)")

    def _write_history(self) -> None:
        if not self.rows:
            (self.run_dir / HISTORY_FILE).unlink(missing_ok=True)
            return
        columns = list(self.rows[0])
        lines = [",".join(columns)] + [
            ",".join(f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c]) for c in columns)
            for r in self.rows
        ]
        write_text_atomic(self.run_dir / HISTORY_FILE, "\n".join(lines) + "\n")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        now = time.perf_counter()
        train_seconds = max(self.train_end - self.epoch_start, 1e-9)
        value = float(logs[self.monitor])
        if not np.isfinite(value):
            raise TrainingDiverged(self._diverged_message(
                f"{self.monitor} became {value}", self.steps))
        best = self._improved(value)
        if best:
            self.state.best, self.state.best_epoch = value, epoch + 1
            self.best_weights = [w.copy() for w in self.model.get_weights()]
            saved = self.saved_model()
            write_atomic(self.run_dir / MODEL_FILE, lambda tmp: saved.save(tmp))
            save_best(self.run_dir, epoch + 1, self.monitor, value, self.run_dir / MODEL_FILE)
        row = {
            "epoch": epoch + 1,
            "loss": float(logs["loss"]),
            "accuracy": float(logs["accuracy"]),
            "val_loss": float(logs["val_loss"]),
            "val_accuracy": float(logs["val_accuracy"]),
            "seconds": now - self.epoch_start,
            "train_seconds": train_seconds,
            "validation_seconds": now - self.train_end,
            "examples_per_second": (self.steps - self.skip) / self.steps * self.examples
            / train_seconds,
            "best": best,
        }
        self.rows.append(row)
        self.display.end_epoch(row)
        self._write_history()
        if self.patience and epoch + 1 - self.state.best_epoch >= self.patience:
            self.state.stopped_early = True
            self.model.stop_training = True
        self.state.epoch, self.state.step = epoch + 1, 0
        self._save_last(mid_epoch=False)
        self.record.update(epochs_done=self.state.epoch, best_epoch=self.state.best_epoch,
                           stopped_early=self.state.stopped_early)
        if self.stop.requested:
            raise TrainingInterrupted(self.stop.signum or 2, f"after epoch {epoch + 1}")

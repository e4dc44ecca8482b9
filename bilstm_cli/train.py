"""Training: data, tokenizer and model from a config, the fit loop, and the run folder it fills.

Importing this module imports TensorFlow (seconds): the CLI imports it only to train.

The order of work in `train` is the order of the run folder's files: config and data summary
first, tokenizer and labels, then the model after every improvement, history after every epoch,
and metrics at the end. Only a finished run becomes `latest`.

Training can stop at any moment and continue exactly where it was (checkpoint.py): the fit loop
runs one `model.fit` call per epoch on that epoch's batches (minus those a mid-epoch checkpoint
already did), and the callbacks (callbacks.py, one job each) write `checkpoints/last` after
every epoch (and every `training.checkpoint_every` steps), stop cleanly on Ctrl-C/SIGTERM, and
stop on a NaN loss before it can reach a checkpoint. `progress` is the display they feed (the
CLI's table; none from Python).
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

from bilstm_cli import accel, auto, distribute, ensemble, regularizers
from bilstm_cli.architecture import Architecture, describe
from bilstm_cli.backend import configure_threads
from bilstm_cli.callbacks import Progress, QuietProgress, callbacks
from bilstm_cli.checkpoint import (
    Checkpoint,
    TrainingState,
    load_last,
    restore,
)
from bilstm_cli.config import Config, TrainingConfig, config_to_yaml, with_absolute_data_paths
from bilstm_cli.data import Splits, load_splits, summarize
from bilstm_cli.data.cache import Tokens
from bilstm_cli.data.splits import class_weights
from bilstm_cli.errors import UserError
from bilstm_cli.export import export_model
from bilstm_cli.interrupt import StopSignals, TrainingInterrupted
from bilstm_cli.model import build_model, keras_copy
from bilstm_cli.quantize import quantize_model
from bilstm_cli.runs import (
    CONFIG_FILE,
    DATA_SUMMARY_FILE,
    HISTORY_FILE,
    INT8_ONNX_FILE,
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
from bilstm_cli.runstate import RunLock, RunRecord, command_line, versions
from bilstm_cli.text import encode, length_batches, pad, save_tokenizer, tokenizer_for
from bilstm_cli.word_vectors import cooccurrence_vectors

Log = Callable[[str], None]
# Makes the display for a training of so many epochs: console.TrainingDisplay in the CLI.
ProgressFactory = Callable[[int], Progress]


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
    # No autotuning: the pipeline has nothing to tune (one generator, a fixed prefetch), and
    # tf.data's autotune thread sleeps up to a minute between passes, while the iterator's
    # destructor waits for it: fit returned up to 34 s after an IMDB epoch ended
    # (benchmarks/RESULTS.md).
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(2).with_options(options), steps


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
    progress: ProgressFactory | None = None,
    tokens: Tokens | None = None,
) -> TrainResult:
    """Train into `run_dir` (default: a new run folder). With `resume`, continue from its
    `checkpoints/last` (the caller has checked the config: checkpoint.check_resume); without, any
    earlier training in the folder is started over. The folder is locked meanwhile, and run.json
    follows the run: running, then finished, interrupted or failed. `tokens`: the token ids of
    `splits` by `tokenizer` (api.prepare), and the word vectors' cache."""
    warn = warn or log
    if auto.has_auto(config):  # api.prepare resolved them already, from the same data
        splits = splits or load_splits(config.data, config.training.seed)
        config, notes = auto.resolve(config, splits.train.texts)
        for note in notes:
            log(note)
    place = distribute.cluster(config.training.distribute)  # multi_worker: this process's
    with distribute.worker_folder(place) as temporary:  # not the chief: a folder of its own
        run_dir = temporary or run_dir or new_run_dir(config.output.dir, run_name(config))
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
                with distribute.lost_workers(place, run_dir):
                    return _train_in_folder(config, log, run_dir, splits, summary, resume,
                                            stop, record, tokenizer, progress or QuietProgress,
                                            tokens)
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
    for name in (HISTORY_FILE, METRICS_FILE, MODEL_FILE, ONNX_FILE, INT8_ONNX_FILE):
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
    plan: distribute.Plan  # the tf.distribute strategy it trains under
    # model.embedding_init: cooccurrence, made by the first model that needs them: an
    # ensemble's members start from the same table.
    word_vectors: np.ndarray | None = None
    tokens: Tokens | None = None  # where the word vectors are cached


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
    tokenizer: Tokenizer | None,
    progress: ProgressFactory,
    tokens: Tokens | None = None,
) -> TrainResult:
    configure_threads(config.model.bidirectional, config.training.threads)
    plan = distribute.start(config.training.distribute, log, config.training.batch_size)
    record.update(distribute=plan.record())
    with plan.scope():  # the speed-ups say whether they run under it
        kinds = accel.select(config.training.kernel, log)
    keras.utils.set_random_seed(config.training.seed)
    if config.training.deterministic:
        tf.config.experimental.enable_op_determinism()
    log(f"run folder: {run_dir}")
    data = _prepare(config, log, run_dir, kinds, splits, summary, resume, tokenizer, plan,
                    tokens)
    distribute.agree(plan, distribute.job(config, data.tokenizer.to_str(), {
        "train": len(data.train_ids), "validation": len(data.val_ids)}), resume)
    # From here a signal stops at the next safe point: after a batch, or between the steps of
    # the final phase (the epochs are saved by then; `--resume` does what is left).
    stop.graceful = True
    try:
        # The accel layers' custom gradients are released once a model's functions are built.
        with kinds.tracing():
            if config.model.ensemble > 1:
                fits = ensemble.fit_members(
                    config, run_dir, resume, log,
                    partial(_train_member, config, log, run_dir, data, stop, record, progress),
                    partial(_keep_member, data))
            else:
                fits = [_fit(config, log, run_dir, data, resume, stop, record, progress)]
            stop.final_phase = True
            if not plan.chief:  # its folder goes: the chief writes the run's files
                return _follow_chief(plan, log)
            result = _finish(config, log, run_dir, data, fits, stop, record)
            distribute.share_result(plan, result.run_dir, result.metrics)
            return result
    finally:
        stop.graceful = False


def _prepare(config: Config, log: Log, run_dir: Path, kinds: accel.Layers,
             splits: Splits | None, summary: dict[str, Any] | None, resume: bool,
             tokenizer: Tokenizer | None, plan: distribute.Plan,
             tokens: Tokens | None = None) -> Prepared:
    """The split, tokenizer, ids and run files every model of the run shares (`tokens`:
    the ids made already, api.prepare)."""
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
    if tokens is None or tokens.tokenizer is not tokenizer:
        tokens = Tokens(tokenizer, summary, encode(tokenizer, splits.train.texts),
                        encode(tokenizer, splits.validation.texts))
    data = Prepared(
        splits, labels, tokenizer, tokens.train_ids, tokens.validation_ids,
        None if weights is None else
        np.array([weights[label] for label in splits.train.labels], dtype=np.float32),
        describe(config.model, tokenizer.get_vocab_size(), len(labels)), kinds, summary, plan,
        tokens=tokens)
    _write_run_files(run_dir, config, data, summary)
    log(f"vocabulary: {tokenizer.get_vocab_size()} tokens; labels: {', '.join(labels)}")
    return data


def _finish(config: Config, log: Log, run_dir: Path, data: Prepared, fits: list[Fit],
            stop: StopSignals, record: RunRecord) -> TrainResult:
    """The final phase: the run's model.keras (an ensemble's), model.onnx, the validation and
    test reports, run.json and `latest`. A signal stops it between steps."""
    model = fits[0].model if len(fits) == 1 else ensemble.average([fit.model for fit in fits])
    if len(fits) > 1:  # a single model's model.keras is written at its best epoch
        saved = ensemble.average([keras_copy(fit.model, data.arch) for fit in fits])
        write_atomic(run_dir / MODEL_FILE, lambda tmp: saved.save(tmp))
        del saved
    # Every model is built: the vectors' [vocab, dim] floats (41 MB for IMDB) need not be held
    # through the final phase, where the run's memory peaks.
    data.word_vectors = None
    stop.check("in the final phase, before the ONNX export")
    # The best model for ONNX Runtime too, so `predict` runs without TensorFlow; its int8 twin
    # when asked for, or when a resumed run has an older one.
    export_model(model, data.arch, run_dir / ONNX_FILE)
    if config.output.quantize or (run_dir / INT8_ONNX_FILE).is_file():
        quantize_model(run_dir / ONNX_FILE, run_dir / INT8_ONNX_FILE)
    stop.check("in the final phase, before the evaluation")

    from bilstm_cli.evaluate import evaluate_dataset
    from bilstm_cli.predict import Classifier, TensorFlowEngine

    classifier = Classifier(run_dir, TensorFlowEngine(model))
    splits = data.splits
    summary = fits[0].summary if len(fits) == 1 else \
        ensemble.summaries([fit.summary for fit in fits])
    metrics: dict[str, Any] = {**summary,
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


def _follow_chief(plan: distribute.Plan, log: Log) -> TrainResult:
    """multi_worker, a worker other than the chief: the run's folder and metrics, once the
    chief has written them."""
    run_dir, metrics = distribute.share_result(plan, None, None)
    log(f"training done; the chief wrote the run folder {run_dir}")
    return TrainResult(run_dir, metrics)


def _train_member(config: Config, log: Log, run_dir: Path, data: Prepared, stop: StopSignals,
                  record: RunRecord, progress: ProgressFactory, member: Config, folder: Path,
                  continuing: bool) -> Fit:
    """One member of an ensemble, trained as an ordinary run in its own folder (ensemble.py)."""
    # This session's command (a resumed record's first one is the original).
    command = (record.data.get("resumed") or [record.data])[-1]["command"]
    member_record = RunRecord.start(
        folder, command, member.training.seed, member.training.deterministic, continuing,
        record.data["machine"], record.data["versions"])
    try:
        if not continuing:
            _start_over(folder)
        _write_run_files(folder, member, data, data.summary)
        fit = _fit(member, log, folder, data, continuing, stop, member_record, progress)
        export_model(fit.model, data.arch, folder / ONNX_FILE)  # a member predicts on its own
        write_json_atomic(folder / METRICS_FILE, fit.summary)
    except BaseException as exc:
        member_record.end_for(exc)
        if isinstance(exc, TrainingInterrupted):
            exc.member_dir = folder
        raise
    member_record.end("finished", epochs_done=fit.summary["epochs_run"],
                      best_epoch=fit.summary["best_epoch"],
                      stopped_early=fit.summary["stopped_early"])
    record.update(members_done=int(folder.name))
    # The trained model's optimizer state goes before the next member trains.
    return Fit(_weights_only(fit.model, data), fit.summary)


def _keep_member(data: Prepared, folder: Path, metrics: dict[str, Any]) -> Fit:
    """A member an earlier session finished: its model.keras, as it was."""
    from bilstm_cli.predict import load_keras_model

    return Fit(_weights_only(load_keras_model(folder / MODEL_FILE), data), metrics)


def _weights_only(model: keras.Model, data: Prepared) -> keras.Model:
    """The model rebuilt with its weights but no optimizer or regularizer around it, for the
    ensemble's evaluation (members/<i>/ keep their training state)."""
    copy = build_model(data.arch, data.kinds)
    copy.set_weights(model.get_weights())
    return copy


def _compile(config: Config, model: keras.Model, data: Prepared, steps: int) -> keras.Model:
    """The model wrapped by its regularizer (regularizers/), compiled with Adam; under a
    strategy, its variables made in the strategy's scope and the model that fits outside it
    (distribute.py)."""
    trainer = data.plan.trainer(regularizers.trainer(model, data.arch, config.training))
    with data.plan.scope():
        trainer.compile(optimizer=data.plan.optimizer(
            data.kinds.adam, learning_rate=_learning_rate(config.training, steps),
            clipnorm=config.training.clipnorm,
            weight_decay=config.training.weight_decay or None),
            loss="binary_crossentropy" if len(data.labels) == 2
            else "sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
    data.plan.build(trainer)
    return trainer


def _fit(config: Config, log: Log, run_dir: Path, data: Prepared, resume: bool,
         stop: StopSignals, record: RunRecord, progress: ProgressFactory) -> Fit:
    """Build, compile and fit one model in `run_dir` (its checkpoints, history and
    model.keras), from `checkpoints/last` when resuming; the best epoch's weights at the end."""
    keras.utils.set_random_seed(config.training.seed)
    training, splits, binary = config.training, data.splits, len(data.labels) == 2
    steps = -(-len(data.train_ids) // training.batch_size)
    model, trainer, checkpoint, best_weights = _start(config, log, run_dir, data, resume, steps)
    state = checkpoint.state if checkpoint is not None else TrainingState(steps_per_epoch=steps)
    display = progress(training.epochs)
    every = training.checkpoint_every
    loop, best = callbacks(
        state, run_dir, monitor=training.monitor, patience=training.early_stopping_patience,
        checkpoint_every=None if every == "epoch" else int(every),
        batch_size=training.batch_size, examples=len(data.train_ids), display=display,
        stop=stop, record=record, resumed=checkpoint, best_weights=best_weights,
        saved_model=partial(keras_copy, model, data.arch),
        mid_epoch_metrics=data.plan.workers == 1)
    if training.tensorboard:
        loop.append(_tensorboard(run_dir))
    train_data = partial(
        _batch_dataset, data.train_ids, _label_array(splits.train.labels, data.labels, binary),
        training.batch_size, training.seed, training.bucket_by_length, data.example_weights)
    val_data, _ = _batch_dataset(
        data.val_ids, _label_array(splits.validation.labels, data.labels, binary),
        training.batch_size, None, training.bucket_by_length)
    # Once fitted, the model's training functions are built: the accel kernel's custom
    # gradients (and through them this model) need not be kept.
    with display, data.kinds.tracing(), data.plan.scope():
        for row in state.history:  # the epochs done before a resume
            display.end_epoch(row)
        # One fit call per epoch: each epoch's batches are built for that epoch alone, so a
        # resumed epoch can start at the batch after its checkpoint.
        while state.epoch < training.epochs and not state.stopped_early:
            batches, _ = train_data(epoch=state.epoch, skip=state.step)
            trainer.fit(data.plan.input(batches), validation_data=data.plan.input(val_data),
                        initial_epoch=state.epoch, epochs=state.epoch + 1, callbacks=loop,
                        verbose=0, shuffle=False)
    if best.best_weights is not None:
        model.set_weights(best.best_weights)
    return Fit(data.plan.plain(model, partial(keras_copy, arch=data.arch)),
               _fit_summary(config, state))


def _start(config: Config, log: Log, run_dir: Path, data: Prepared, resume: bool,
           steps: int) -> tuple[keras.Model, keras.Model, Checkpoint | None,
                                list[np.ndarray] | None]:
    """The model, the compiled model that trains it, the checkpoint it continues from
    (`checkpoints/last` when resuming; under multi_worker, every worker's is the chief's) with
    its variables restored, and the best epoch's weights so far."""
    checkpoint = load_last(run_dir) if resume else None
    with data.plan.scope():
        model = _build(config, log, data, fresh=checkpoint is None)
    trainer = _compile(config, model, data, steps)
    best_weights = None
    with data.plan.scope():
        checkpoint = distribute.from_chief(data.plan, checkpoint, model)
        if checkpoint is not None:
            best_weights, state = restore(checkpoint, trainer, steps), checkpoint.state
            where = f", {state.step} of {steps} batches into epoch {state.epoch + 1}" \
                if state.step else ""
            log(f"resuming from {checkpoint.path.name}: {state.epoch} epochs done{where}")
    return model, trainer, checkpoint, best_weights


def _fit_summary(config: Config, state: TrainingState) -> dict[str, Any]:
    """metrics.json's account of one model's training."""
    rows = state.history
    best = rows[state.best_epoch - 1]
    return {
        "seed": config.training.seed,
        "best_epoch": state.best_epoch,
        "epochs_run": len(rows),
        "stopped_early": state.stopped_early,
        "monitor": config.training.monitor,
        "best_val_loss": best["val_loss"],
        "best_val_accuracy": best["val_accuracy"],
        "training_seconds": float(sum(r["seconds"] for r in rows)),
        "seconds_per_epoch": float(np.median([r["seconds"] for r in rows])),
        "examples_per_second": float(np.median([r["examples_per_second"] for r in rows])),
    }


def _build(config: Config, log: Log, data: Prepared, fresh: bool) -> keras.Model:
    """The model to train, with the accel layers where they run. A `fresh` one (not resumed)
    with `model.embedding_init: cooccurrence` starts from the training texts' word vectors,
    made by the first model that needs them: an ensemble's members start from the same."""
    vectors = None
    if config.model.embedding_init == "cooccurrence" and fresh:
        if data.word_vectors is None:
            data.word_vectors = _word_vectors(config, log, data)
        vectors = data.word_vectors
    return build_model(data.arch, data.kinds, vectors, config.model.embedding_init_scale)


def _word_vectors(config: Config, log: Log, data: Prepared) -> np.ndarray:
    """The co-occurrence vectors of the training ids: from the data cache, or made (and
    cached)."""
    started = time.monotonic()
    made: list[bool] = []

    def build() -> np.ndarray:
        made.append(True)
        return cooccurrence_vectors(data.train_ids, data.arch.vocab_size,
                                    config.model.embedding_dim, config.training.seed)

    if data.tokens is None:
        vectors = build()
    else:
        vectors = data.tokens.word_vectors(config.model.embedding_dim, config.training.seed,
                                           (tf.__version__,), build)
    how = "from the training texts' co-occurrences" if made else "from the data cache"
    log(f"initial word vectors {how}: {time.monotonic() - started:.1f} s")
    return vectors


def _tensorboard(run_dir: Path) -> Any:
    """TensorBoard logs in the run folder; TensorFlow no longer brings the package along."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise UserError("training.tensorboard is true but the tensorboard package is not "
                        "installed: pip install tensorboard (or set training.tensorboard=false)")
    return keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard"))

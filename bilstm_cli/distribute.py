"""Training on several devices or machines (`training.distribute`), on TensorFlow's own engine.

The plain Keras path (model.py's layers, keras.optimizers.Adam, `model.fit`) is what runs under a
strategy; the accel package's speed-ups say they are off (accel.select).

- `none`: one device. `auto`: `mirrored` when more than one GPU is visible, else `none`.
- `mirrored`: tf.distribute.MirroredStrategy over this machine's GPUs (without a GPU, over its
  logical CPU devices: the tests split the CPU in two).
- `multi_worker`: tf.distribute.MultiWorkerMirroredStrategy, the cluster from `TF_CONFIG`.
  Every worker runs the same training. The chief (the `chief` task, else worker 0) writes the
  run folder; every other worker writes into a temporary folder, removed at the end. Before
  training, the workers check that they train the same job (`agree`), and each model starts
  from the chief's state (`from_chief`: its fresh weights, or the checkpoint it resumes from),
  so a worker needs neither the run folder nor a shared file system.

The global batch is `training.batch_size`: tf.data splits each batch among the replicas (and,
with several workers, shards it by worker: `Plan.input`), and Keras averages the replicas'
gradients. The learning rate is left as configured.

Keras 3 pitfalls met here, checked on TensorFlow 2.21.0 with Keras 3.15.1, and what we do:
- `clipnorm` clips each replica's share of the gradient before the shares are summed, not the
  batch's gradient (`training.clipnorm` is 1.0 by default): `summed_clipping` sums, clips, then
  lets the optimizer apply it.
- `model.fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585): its symbolic
  build reduces the first batch, a tuple, across workers, and every step reduces its scalar logs
  along an axis they lack. `Plan.trainer` makes the model that fits outside the strategy's scope
  (its layers and variables are made inside: Keras then builds what is left as it traces) and
  has its steps return one-element logs; `Plan.fit_scope` puts the strategy around the fit.
- The logs of a batch are the mean of the replicas' running means (the progress display's); the
  logs of an epoch (history.csv, early stopping, the best model) are the metrics summed over all
  replicas, exact.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bilstm_cli.errors import UserError

MODES = ("auto", "none", "mirrored", "multi_worker")
Log = Callable[[str], None]
HELP = "see docs/distribute.md"
# One strategy per mode and process, made once: a second MirroredStrategy over the same devices
# starts its collectives' keys over and meets the first one's (TensorFlow: "Shape mismatch in
# the collective instance"), and MultiWorkerMirroredStrategy can only be made at start-up.
STRATEGIES: dict[str, Any] = {}


@dataclass(frozen=True)
class Cluster:
    """This process's place in the cluster TF_CONFIG describes (read without TensorFlow)."""

    workers: int
    rank: int  # 0: the chief, which writes the run folder
    task: str  # as TF_CONFIG names it: "worker 1", "chief 0"

    @property
    def chief(self) -> bool:
        return self.rank == 0


def cluster(mode: str, environ: Any = None) -> Cluster | None:
    """The cluster for `multi_worker` (None for the other modes), from TF_CONFIG; one UserError
    saying what is wrong with it."""
    if mode != "multi_worker":
        return None
    text = (os.environ if environ is None else environ).get("TF_CONFIG")
    if not text:
        raise UserError("training.distribute: multi_worker needs the TF_CONFIG environment "
                        "variable: the cluster's workers and this one's task, e.g. "
                        '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": '
                        f'{{"type": "worker", "index": 0}}}} ({HELP})')
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise UserError(f"TF_CONFIG is not valid JSON ({exc}) ({HELP})") from None
    jobs = document.get("cluster") if isinstance(document, dict) else None
    task = document.get("task") if isinstance(document, dict) else None
    if not isinstance(jobs, dict) or not isinstance(task, dict):
        raise UserError('TF_CONFIG must be a JSON object with "cluster" (the jobs and their '
                        f'host:port addresses) and "task" (this one\'s type and index) ({HELP})')
    for name, addresses in jobs.items():
        if name not in ("chief", "worker"):
            raise UserError(f"TF_CONFIG: the cluster's job {name!r} is not one bilstm runs: "
                            f"give chief (optional) and worker jobs ({HELP})")
        if not isinstance(addresses, list) or not addresses or not all(
                isinstance(a, str) and ":" in a for a in addresses):
            raise UserError(f"TF_CONFIG: cluster.{name} must be a list of host:port addresses "
                            f"(got {addresses!r})")
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in jobs or isinstance(index, bool) or not isinstance(index, int) \
            or not 0 <= index < len(jobs[kind]):
        raise UserError(f"TF_CONFIG: the task {task!r} is not in the cluster "
                        f"({', '.join(f'{k}: {len(v)}' for k, v in jobs.items())})")
    chiefs = len(jobs.get("chief", []))
    rank = index if kind == "chief" else chiefs + index
    return Cluster(chiefs + len(jobs.get("worker", [])), rank, f"{kind} {index}")


def check(mode: str, resume: bool) -> None:
    """What can be checked before the data is read: TF_CONFIG, and that `--resume` goes to the
    chief only (the other workers follow it)."""
    place = cluster(mode)
    if place is not None and resume and not place.chief:
        raise UserError(f"--resume goes to the chief only; this is {place.task} of the "
                        "cluster: start it with the command it was first started with (no "
                        "--resume), and it continues from the chief's checkpoint")


@contextlib.contextmanager
def worker_folder(place: Cluster | None) -> Iterator[Path | None]:
    """A temporary folder for a worker that is not the chief (removed at the end, whatever
    happens), or None: the run folder is the chief's."""
    if place is None or place.chief:
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix=f"bilstm-{place.task.replace(' ', '')}-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def lost_workers(place: Cluster | None, run_dir: Path) -> Iterator[None]:
    """A worker that dies aborts every collective of the others: one UserError that says how
    to go on, instead of TensorFlow's traceback."""
    if place is None or place.workers < 2:
        yield
        return
    import tensorflow as tf

    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.AbortedError,
            tf.errors.CancelledError, tf.errors.DeadlineExceededError) as exc:
        folder = run_dir if place.chief else None
        how = (f"restart every worker: this one with `bilstm train --resume {folder}`, the "
               "others with their first command" if folder else
               "restart every worker (the chief with `bilstm train --resume RUN_DIR`, the "
               "others with their first command)")
        said = re.sub(r"\{\{[^}]*\}\}\s*", "", str(exc)).strip().split("\n")[0][:200]
        raise UserError(f"multi_worker ({place.task}): a worker of the cluster stopped "
                        f"({type(exc).__name__}: {said or '-'}); training continues from the "
                        f"chief's last checkpoint (if one was written): {how}") from None


@dataclass
class Plan:
    """The strategy training runs under (none: one device)."""

    mode: str  # none | mirrored | multi_worker
    strategy: Any = None  # tf.distribute.Strategy
    place: Cluster | None = None
    replicas: int = 1

    @property
    def chief(self) -> bool:
        return self.place is None or self.place.chief

    @property
    def workers(self) -> int:
        return 1 if self.place is None else self.place.workers

    def record(self) -> dict[str, Any]:
        """run.json's account: the strategy, its replicas (and workers)."""
        return {"strategy": self.mode, "replicas": self.replicas, "workers": self.workers}

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        """Where the model's variables and optimizer are made (and the fit runs)."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def input(self, dataset: Any) -> Any:
        """A batch dataset as the strategy splits it: each global batch among the replicas, and
        with several workers shard by shard of the data (tf.data's DATA policy: every worker
        reads the batches and keeps its replicas' shares). A last, smaller batch is split as far
        as it goes; a replica left without texts adds nothing to the step."""
        if self.strategy is None:
            return dataset
        import tensorflow as tf

        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = \
            tf.data.experimental.AutoShardPolicy.DATA
        return dataset.with_options(options)

    def trainer(self, model: Any) -> Any:
        """The model to compile and fit over `model`'s layers (the same variables): as it is
        without a strategy; under one, a new model made outside the scope, whose steps return
        one-element logs when there are several workers (the multi-worker pitfall above)."""
        if self.strategy is None:
            return model
        import keras

        from bilstm_cli.regularizers.base import Regularizer

        base = type(model) if isinstance(model, Regularizer) else keras.Model
        kind = _replicated(base) if self.workers > 1 else base
        made = kind(model.inputs, model.outputs, name=model.name)
        if hasattr(model, "strength"):  # a regularizer's
            made.strength = model.strength
        return made

    def build(self, trainer: Any) -> None:
        """Under a strategy, make what Keras' symbolic build would have made (which it skips for
        a model made outside the scope) in the scope, before the fit: the compiled metrics and
        loss, and the optimizer's variables. Made while tracing a replica's step instead, they
        fail (TensorFlow asks for a placeholder's value)."""
        if self.strategy is None:
            return
        outputs = trainer.outputs[0].shape[-1]
        y = np.zeros((1, 1) if outputs == 1 else (1,), "float32" if outputs == 1 else "int32")
        y_pred = np.full((1, outputs), 1.0 / max(outputs, 2), "float32")
        with self.scope():
            trainer.compute_loss(y=y, y_pred=y_pred)
            trainer.compute_metrics(None, y, y_pred)
            trainer.reset_metrics()
            trainer.optimizer.build(trainer.trainable_variables)

    def optimizer(self, adam: type, **options: Any) -> Any:
        """`adam(**options)`; under a strategy, with `clipnorm` applied to the summed gradient
        (the clipping pitfall above)."""
        if self.strategy is None or not options.get("clipnorm"):
            return adam(**options)
        return summed_clipping(adam)(**options)

    def plain(self, model: Any, copy: Callable[[Any], Any]) -> Any:
        """A trained model as one device uses it (`copy`: rebuilt with its weights outside the
        strategy), for what comes after training: export, evaluation, the ensemble."""
        return model if self.strategy is None else copy(model)


def start(mode: str, log: Log, batch_size: int = 0) -> Plan:
    """The plan for `training.distribute`. Creates the strategy, so call it before anything
    else runs on TensorFlow (the thread pools aside). Says so when `batch_size` does not split
    evenly among the replicas."""
    plan = _start(mode, log)
    if plan.mode != "multi_worker" and os.environ.get("TF_CONFIG"):
        log(f"TF_CONFIG is set, but training.distribute is {mode}: this process trains alone "
            "(set training.distribute=multi_worker to train with the cluster)")
    if batch_size % plan.replicas:
        log(f"training.batch_size {batch_size} does not split evenly among {plan.replicas} "
            "replicas: Keras averages the replicas' mean losses, so in a batch the texts of a "
            "smaller share weigh more than on one device (docs/distribute.md)")
    return plan


def _start(mode: str, log: Log) -> Plan:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if mode == "auto":
        mode = "mirrored" if len(gpus) > 1 else "none"
    if mode == "none":
        return Plan("none")
    if mode == "mirrored":
        devices = None if gpus else [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = STRATEGIES.get(mode) or tf.distribute.MirroredStrategy(devices)
        STRATEGIES[mode] = strategy
        plan = Plan("mirrored", strategy, None, strategy.num_replicas_in_sync)
        where = f"{len(gpus)} GPU(s)" if gpus else f"{plan.replicas} CPU device(s)"
        log(f"training.distribute: mirrored on {where}: {plan.replicas} replica(s), each "
            f"batch split among them")
        return plan
    place = cluster(mode)
    assert place is not None
    strategy = STRATEGIES.get(mode) or tf.distribute.MultiWorkerMirroredStrategy()
    STRATEGIES[mode] = strategy
    plan = Plan("multi_worker", strategy, place, strategy.num_replicas_in_sync)
    writes = "writes the run folder" if place.chief else "writes a temporary folder"
    log(f"training.distribute: multi_worker, {place.task} (rank {place.rank} of "
        f"{place.workers} workers, {writes}): {plan.replicas} replica(s) in all")
    return plan


@functools.cache
def _replicated(base: type) -> type:
    """`base` (keras.Model or a regularizer) with steps that return one-element logs: under
    MultiWorkerMirroredStrategy Keras reduces each log along axis 0 (keras/src/backend/
    tensorflow/trainer.py, reduce_per_replica), which a scalar lacks."""
    import tensorflow as tf

    def as_vectors(logs: dict[str, Any]) -> dict[str, Any]:
        return {name: tf.reshape(value, [1]) for name, value in logs.items()}

    class Replicated(base):  # type: ignore[valid-type, misc]
        def train_step(self, data: Any) -> dict[str, Any]:
            return as_vectors(super().train_step(data))

        def test_step(self, data: Any) -> dict[str, Any]:
            return as_vectors(super().test_step(data))

    Replicated.__name__ = Replicated.__qualname__ = f"Replicated{base.__name__}"
    return Replicated


@functools.cache
def summed_clipping(adam: type) -> type:
    """`adam` with `clipnorm` applied as on one device: to each variable's gradient summed over
    the replicas. Keras clips each replica's share before the optimizer sums the shares; here
    the shares are summed first (an all-reduce), clipped, and the first replica hands the result
    to the optimizer's own sum while the others hand it nothing (zeros, or no rows of a sparse
    embedding gradient). Costs one more all-reduce of the gradients per step."""
    import tensorflow as tf

    class SummedClipping(adam):  # type: ignore[valid-type, misc]
        def __init__(self, *args: Any, clipnorm: float | None = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.summed_clipnorm = clipnorm

        def apply(self, grads: Any, trainable_variables: Any = None) -> Any:
            context = tf.distribute.get_replica_context()
            if context is not None and context.num_replicas_in_sync > 1:
                grads = _clip_summed(context, list(grads), self.summed_clipnorm)
            return super().apply(grads, trainable_variables)

    SummedClipping.__name__ = SummedClipping.__qualname__ = f"SummedClipping{adam.__name__}"
    return SummedClipping


def _clip_summed(context: Any, grads: list[Any], clipnorm: float) -> list[Any]:
    import tensorflow as tf

    present = [i for i, g in enumerate(grads) if g is not None]
    summed = context.all_reduce(tf.distribute.ReduceOp.SUM, [grads[i] for i in present])
    first = tf.equal(context.replica_id_in_sync_group, 0)
    for i, gradient in zip(present, summed):
        clipped = tf.clip_by_norm(gradient, clipnorm)
        if isinstance(clipped, tf.IndexedSlices):
            rows = tf.where(first, tf.shape(clipped.indices)[0], 0)
            grads[i] = tf.IndexedSlices(clipped.values[:rows], clipped.indices[:rows],
                                        clipped.dense_shape)
        else:
            grads[i] = tf.where(first, clipped, tf.zeros_like(clipped))
    return grads


# ---- multi_worker: what the chief tells the others --------------------------------------------


def _sum_over_workers(plan: Plan, array: np.ndarray) -> np.ndarray:
    """`array` of each worker (one replica each), summed: a collective every worker joins."""
    import tensorflow as tf

    first = [True]

    def value(context: Any) -> Any:  # called once per replica of this worker, in order
        mine = array if first[0] else np.zeros_like(array)
        first[0] = False
        return tf.constant(mine)

    values = plan.strategy.experimental_distribute_values_from_function(value)
    return plan.strategy.reduce(tf.distribute.ReduceOp.SUM, values, axis=None).numpy()


def _broadcast(plan: Plan, payload: bytes | None) -> bytes:
    """The chief's bytes on every worker (the others pass None)."""
    size = int(_sum_over_workers(plan, np.array([len(payload or b"")], np.int32))[0])
    buffer = np.zeros(-(-size // 4), np.int32)
    if payload is not None:
        buffer.view(np.uint8)[:size] = np.frombuffer(payload, np.uint8)
    return _sum_over_workers(plan, buffer).view(np.uint8)[:size].tobytes()


def _check_same(plan: Plan, problem: str | None, what: str) -> None:
    """Every worker raises when any one has a `problem` (one collective: none is left waiting
    for the others)."""
    problems = int(_sum_over_workers(plan, np.array([problem is not None], np.int32))[0])
    if problems:
        assert plan.place is not None
        raise UserError(f"multi_worker ({plan.place.task}): {what}"
                        + (f": {problem}" if problem else " (see the other workers' errors)"))


def job(config: Any, tokenizer_json: str, examples: dict[str, int]) -> dict[str, Any]:
    """What every worker must share to train together: the config (except where files are and
    go, and the thread count), the tokenizer, the number of texts per split."""
    dump = config.model_dump(mode="json")
    for key in ("train", "validation", "test"):
        dump["data"].pop(key, None)
    dump.pop("output", None)
    dump["training"].pop("threads", None)
    digest = hashlib.sha256(json.dumps(dump, sort_keys=True).encode()).hexdigest()[:16]
    vocabulary = hashlib.sha256(tokenizer_json.encode()).hexdigest()[:16]
    return {"config": digest, "tokenizer": vocabulary, "examples": examples,
            "ensemble": config.model.ensemble}


def agree(plan: Plan, mine: dict[str, Any], resumed: bool) -> None:
    """multi_worker: every worker checks it trains the chief's job (config, tokenizer, data
    sizes), and none resumes an ensemble (each member's start is the chief's to say, and a
    worker does not know which members the chief kept)."""
    if plan.workers < 2:
        return
    sent = json.dumps({**mine, "resumed": resumed}) if plan.chief else None
    chief = json.loads(_broadcast(plan, sent.encode() if sent else None))
    differing = [key for key in mine if mine[key] != chief[key]]
    problem = None
    if differing:
        problem = (f"its {', '.join(differing)} differ from the chief's: start every worker "
                   "with the same config and data")
    elif chief["resumed"] and chief["ensemble"] > 1:
        problem = ("resuming an ensemble (model.ensemble > 1) is not supported under "
                   "multi_worker; resume it with training.distribute: none or mirrored")
    _check_same(plan, problem, "the workers cannot train this job together")


def from_chief(plan: Plan, checkpoint: Any, model: Any) -> Any:
    """multi_worker: the state every worker starts a model from, the chief's: the checkpoint it
    resumes from (returned to every worker, to restore as the chief does), or else its freshly
    built weights (assigned here; None is returned). Otherwise `checkpoint` as it is."""
    if plan.workers < 2:
        return checkpoint
    from bilstm_cli.checkpoint import Checkpoint, TrainingState

    payload = None
    if plan.chief:
        arrays = dict(checkpoint.arrays) if checkpoint is not None else \
            {f"model/{i:04d}": np.asarray(v) for i, v in enumerate(model.variables)}
        document = {**checkpoint.document, "path": str(checkpoint.path)} if checkpoint else None
        payload = _pack(arrays, document)
    arrays, document = _unpack(_broadcast(plan, payload))
    if plan.chief:
        return checkpoint
    if document is None:
        for i, variable in enumerate(model.variables):
            variable.assign(arrays[f"model/{i:04d}"])
        return None
    fields = {k: v for k, v in document.items() if k in TrainingState.__dataclass_fields__}
    return Checkpoint(TrainingState(**fields), arrays, Path(document.pop("path")), document)


def share_result(plan: Plan, run_dir: Path | None, metrics: dict[str, Any] | None
                 ) -> tuple[Path, dict[str, Any]]:
    """multi_worker, at the end: the chief's run folder and metrics on every worker (the others
    wait for the chief's final phase: a worker that left early would look lost to it)."""
    if plan.workers < 2:
        assert run_dir is not None and metrics is not None
        return run_dir, metrics
    sent = json.dumps({"run_dir": str(Path(str(run_dir)).absolute()), "metrics": metrics}) \
        if plan.chief else None
    shared = json.loads(_broadcast(plan, sent.encode() if sent else None))
    return Path(shared["run_dir"]), shared["metrics"]


def _pack(arrays: dict[str, np.ndarray], document: dict[str, Any] | None) -> bytes:
    text = np.frombuffer(json.dumps(document).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays, **{"document/json": text})
    return buffer.getvalue()


def _unpack(payload: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
    with np.load(io.BytesIO(payload)) as npz:
        arrays = {key: npz[key] for key in npz.files}
    document = json.loads(arrays.pop("document/json").tobytes().decode())
    return arrays, document

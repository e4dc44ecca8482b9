"""An ensemble (`model.ensemble: N`): N ordinary member runs plus one averaging step, all here.

Member i (from 0) is a single model with seed `training.seed + 1000 * i`, trained like any run in
its own folder `members/<i+1>` (checkpoints, history, model.keras, model.onnx, metrics.json), on
the ensemble's split, tokenizer and word vectors. The ensemble's model is one Keras model whose
output is the mean of the members' probabilities (`average`): predict, evaluate and export take
it like any other model (export.py writes the same mean as an ONNX Mean node). A resumed ensemble
keeps its finished members and continues the one that was interrupted.

Importing this module does not import TensorFlow (the resume check runs before it is loaded).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from bilstm_cli.errors import UserError
from bilstm_cli.runs import MEMBERS_DIR, METRICS_FILE, MODEL_FILE

if TYPE_CHECKING:
    import keras

    from bilstm_cli.checkpoint import TrainingState
    from bilstm_cli.config import Config

Fitted = TypeVar("Fitted")
SEED_STEP = 1000


def member_config(config: Config, index: int) -> Config:
    """Member `index` (from 0): a single model with its own seed. The split is the ensemble's
    (made once from training.seed), so every member validates on the same texts."""
    return config.model_copy(update={
        "model": config.model.model_copy(update={"ensemble": 1}),
        "training": config.training.model_copy(
            update={"seed": config.training.seed + SEED_STEP * index}),
    })


def member_dir(run_dir: Path, index: int) -> Path:
    return run_dir / MEMBERS_DIR / str(index + 1)


def finished_before(folder: Path, config: Config) -> dict[str, Any] | None:
    """A member's metrics when an earlier session finished it (all its epochs, or stopped
    early), else None."""
    from bilstm_cli.runstate import RUN_FILE, read_json

    saved = read_json(folder / RUN_FILE) or {}
    metrics = read_json(folder / METRICS_FILE)
    if saved.get("state") != "finished" or not metrics or not (folder / MODEL_FILE).is_file():
        return None
    if metrics["stopped_early"] or metrics["epochs_run"] >= config.training.epochs:
        return metrics
    return None


def fit_members(config: Config, run_dir: Path, resume: bool, log: Callable[[str], None],
                train_member: Callable[[Config, Path, bool], Fitted],
                keep_member: Callable[[Path, dict[str, Any]], Fitted]) -> list[Fitted]:
    """Train the members one after the other: `train_member(member config, folder, continuing)`
    trains one as an ordinary run; `keep_member(folder, metrics)` loads one finished before."""
    from bilstm_cli.checkpoint import has_checkpoint

    count, fits = config.model.ensemble, []
    for index in range(count):
        member, folder = member_config(config, index), member_dir(run_dir, index)
        folder.mkdir(parents=True, exist_ok=True)
        log(f"ensemble member {index + 1} of {count} (seed {member.training.seed}): "
            f"{MEMBERS_DIR}/{index + 1}")
        kept = finished_before(folder, member) if resume else None
        if kept is not None:
            log(f"member {index + 1} finished before: kept")
            fits.append(keep_member(folder, kept))
        else:
            fits.append(train_member(member, folder, resume and has_checkpoint(folder)))
    return fits


def summaries(members: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """metrics.json's account of an ensemble's training: each member's, and the totals."""
    return {
        "members": list(members),
        "monitor": members[0]["monitor"],
        "training_seconds": sum(m["training_seconds"] for m in members),
        "seconds_per_epoch": float(np.median([m["seconds_per_epoch"] for m in members])),
        "examples_per_second": float(np.median([m["examples_per_second"] for m in members])),
    }


def average(members: list[keras.Model]) -> keras.Model:
    """One model whose output is the mean of the members' probabilities: what an ensemble's
    model.keras holds. The members are renamed member_1, member_2, ... (a model's layer names
    must differ)."""
    import keras

    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    for index, member in enumerate(members):
        member.name = f"member_{index + 1}"
    outputs = keras.layers.Average(name="average")([member(ids) for member in members])
    return keras.Model(ids, outputs, name="ensemble")


def members_of(model: keras.Model) -> list[keras.Model]:
    """The members of an `average` model (nested models and their Average, nothing else), or
    [model] for a single one."""
    import keras

    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    others = [layer for layer in model.layers
              if not isinstance(layer, (keras.Model, keras.layers.InputLayer))]
    is_ensemble = nested and len(others) == 1 and isinstance(others[0], keras.layers.Average)
    return nested if is_ensemble else [model]


def check_resume(run_dir: Path, states: list[TrainingState | None], epochs: int,
                 finished: bool, longer: str) -> None:
    """`train --resume` of an ensemble (run_dir's members' checkpoint states, in order): each
    member resumes on its own; refused when one has done more than `epochs`, or when the run
    finished and no member has epochs left."""
    done = max((s.epoch for s in states if s is not None), default=0)
    if done > epochs:
        raise UserError(f"cannot resume {run_dir} with {epochs} epochs: a member has done "
                        f"{done} already")
    if finished and not any(s is not None and s.epoch < epochs and not s.stopped_early
                            for s in states):
        raise UserError(f"{run_dir} has already finished (all its ensemble members): "
                        f"nothing to resume. {longer}")


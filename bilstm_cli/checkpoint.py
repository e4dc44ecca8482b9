"""Checkpoints: the whole training state, saved so that a resumed run ends exactly where an
uninterrupted one would.

`checkpoints/last` is written after every epoch (and every `training.checkpoint_every` steps);
`checkpoints/best` after every improvement of the monitored metric. Each is a symlink to a
folder of its own: the folder is written and fsynced under a fresh name, then the symlink is
swapped in with `os.replace` (atomic), then older folders are deleted. Killing the process at
any instant leaves `last` pointing at a complete, loadable checkpoint.

A `last` folder holds `state.json` (epoch, step, history, early-stopping state, Python's random
state) and `arrays.npz`: every model variable (weights *and* the dropout seed-generator states,
which `model.save` does not write), the optimizer's variables (Adam's step count and moments),
the epoch's metric accumulators (for a mid-epoch checkpoint), the best epoch's weights and
NumPy's global random state. Keras objects are passed in, so this module does not import
TensorFlow: `bilstm runs` and the resume checks use it without it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bilstm_cli.errors import UserError

CHECKPOINTS = "checkpoints"
LAST = "last"
BEST = "best"
STATE_FILE = "state.json"
ARRAYS_FILE = "arrays.npz"
FORMAT = 1

# Keys that may differ between a run and its resumption without changing the result:
# where files go, threads, logging, how often to checkpoint, and training for longer. And the
# devices it trains on (training.distribute), so a job can go on with fewer machines: from the
# resume on, its numbers are those of the other strategy (docs/distribute.md).
RESUME_SAFE_KEYS = frozenset({
    "training.epochs", "training.threads", "training.tensorboard",
    "training.checkpoint_every", "training.distribute", "output.dir", "output.name",
    "output.quantize",
})


@dataclass
class TrainingState:
    """Where training stands: `epoch` epochs are complete, plus `step` batches of the next."""

    epoch: int = 0
    step: int = 0
    steps_per_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: float | None = None
    best_epoch: int = 0
    stopped_early: bool = False


@dataclass
class Checkpoint:
    state: TrainingState
    arrays: dict[str, np.ndarray]
    path: Path
    document: dict[str, Any]


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / CHECKPOINTS


def _variable_arrays(prefix: str, variables: list[Any]) -> dict[str, np.ndarray]:
    return {f"{prefix}/{i:04d}": np.asarray(v) for i, v in enumerate(variables)}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_folder(run_dir: Path, name: str, tag: str, files: dict[str, Any]) -> Path:
    """Write `files` (name -> bytes, or a callable taking the path) into a new folder, fsync it,
    then point the `name` symlink at it atomically. Returns the folder."""
    folder = checkpoint_dir(run_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        target = Path(tempfile.mkdtemp(prefix=f".{name}-{tag}-", dir=folder))
        try:
            for filename, content in files.items():
                path = target / filename
                if callable(content):
                    content(path)
                else:
                    path.write_bytes(content)
                _fsync(path)
            final = target.with_name(target.name[1:])  # visible name once complete
            os.replace(target, final)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        link_tmp = folder / f".{name}.link.{os.getpid()}"
        link_tmp.unlink(missing_ok=True)
        os.symlink(final.name, link_tmp)
        os.replace(link_tmp, folder / name)
        _fsync(folder)
    except OSError as exc:
        raise UserError(
            f"cannot write the checkpoint in {folder}: {exc.strerror or exc} "
            f"({exc.filename or folder}); earlier checkpoints are intact"
        ) from None
    _remove_unreferenced(folder)
    return final


def _remove_unreferenced(folder: Path) -> None:
    """Delete checkpoint folders that neither `last` nor `best` points at (left by a swap or a
    kill in the middle of a write)."""
    keep = {os.readlink(folder / n) for n in (LAST, BEST) if (folder / n).is_symlink()}
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink() and entry.name not in keep:
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.startswith(".") and entry.is_symlink():
            entry.unlink(missing_ok=True)


def save_last(run_dir: Path, state: TrainingState, model: Any,
              best_weights: list[np.ndarray] | None, metric_state: bool) -> Path:
    """The full state to resume from. `metric_state`: also the epoch's running loss/accuracy
    sums (a checkpoint in the middle of an epoch)."""
    arrays = _variable_arrays("model", model.variables)
    arrays.update(_variable_arrays("optimizer", model.optimizer.variables))
    if metric_state:
        arrays.update(_variable_arrays("metrics", model.metrics_variables))
    if best_weights is not None:
        arrays.update({f"best/{i:04d}": w for i, w in enumerate(best_weights)})
    name, keys, position, has_gauss, cached = np.random.get_state()
    arrays["numpy_random/keys"] = keys
    document = {
        "format": FORMAT,
        **asdict(state),
        "numpy_random": [name, int(position), int(has_gauss), float(cached)],
        "python_random": _python_random_state(),
    }
    files = {
        STATE_FILE: (json.dumps(document, indent=1) + "\n").encode(),
        ARRAYS_FILE: lambda path: _save_npz(path, arrays),
    }
    return _write_folder(run_dir, LAST, f"e{state.epoch:04d}-s{state.step:06d}", files)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def _python_random_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def save_best(run_dir: Path, epoch: int, monitor: str, value: float, model_file: Path) -> Path:
    """The best epoch's model (`model.keras`: weights and optimizer state), hard-linked from the
    run folder's freshly written model file when the file system allows it."""

    def link_model(path: Path) -> None:
        try:
            os.link(model_file, path)
        except OSError:
            shutil.copyfile(model_file, path)

    info = {"epoch": epoch, "monitor": monitor, "value": value}
    files = {"state.json": (json.dumps(info) + "\n").encode(), "model.keras": link_model}
    return _write_folder(run_dir, BEST, f"e{epoch:04d}", files)


def has_checkpoint(run_dir: Path) -> bool:
    return (checkpoint_dir(run_dir) / LAST / STATE_FILE).is_file()


def read_state(run_dir: Path) -> TrainingState | None:
    """The state of `checkpoints/last` (no arrays), or None when there is none yet."""
    path = checkpoint_dir(run_dir) / LAST / STATE_FILE
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read the checkpoint {path}: {exc}") from None
    if not isinstance(document, dict):
        raise UserError(f"cannot read the checkpoint {path}: not a JSON object")
    fields = TrainingState.__dataclass_fields__
    return TrainingState(**{k: v for k, v in document.items() if k in fields})


# What a complete `last` checkpoint's state.json holds, with the types they must have.
_STATE_TYPES: dict[str, type | tuple[type, ...]] = {
    "format": int, "epoch": int, "step": int, "steps_per_epoch": int, "history": list,
    "numpy_random": list, "python_random": list, "best_epoch": int,
}


def last_problem(run_dir: Path) -> str | None:
    """What is wrong with `checkpoints/last` (None: complete, or none written yet), read
    without loading its arrays: its link, state.json's keys, and arrays.npz's checksums."""
    last = checkpoint_dir(run_dir) / LAST
    if not last.is_symlink() and not last.exists():
        return None
    if not last.exists():
        return f"{last} points at {os.readlink(last)}, which does not exist"
    for name in (STATE_FILE, ARRAYS_FILE):
        if not (last / name).is_file():
            return f"{name} is missing"
    try:
        document = json.loads((last / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{STATE_FILE} cannot be read: {exc}"
    if not isinstance(document, dict):
        return f"{STATE_FILE} is not a JSON object"
    wrong = [key for key, kind in _STATE_TYPES.items() if not isinstance(document.get(key), kind)]
    if wrong:
        return f"{STATE_FILE} lacks {', '.join(wrong)} (or they are not what they should be)"
    try:
        with zipfile.ZipFile(last / ARRAYS_FILE) as archive:
            broken = archive.testzip()
            has_random = "numpy_random/keys.npy" in archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return f"{ARRAYS_FILE} is not a complete NumPy archive ({exc})"
    if broken is not None:
        return f"{ARRAYS_FILE}: {broken} fails its checksum"
    if not has_random:
        return f"{ARRAYS_FILE} lacks the random state"
    return None


def check_last(run_dir: Path, run: Path) -> None:
    """Refuse to resume from a damaged `checkpoints/last` of `run_dir` (the run `run`, or one
    of its ensemble members), saying what is left; nothing in the run is changed."""
    problem = last_problem(run_dir)
    if problem is None:
        return
    from bilstm_cli.runcheck import check_keras_file

    best = checkpoint_dir(run_dir) / BEST
    left = ""
    try:
        info = json.loads((best / STATE_FILE).read_text(encoding="utf-8"))
        check_keras_file(best / "model.keras")
        if isinstance(info, dict):
            left = (f" The best checkpoint (epoch {info.get('epoch')}) is intact: "
                    f"{best / 'model.keras'}.")
    except (OSError, ValueError, UserError):
        pass
    raise UserError(
        f"cannot resume {run}: the last checkpoint {checkpoint_dir(run_dir) / LAST} is damaged "
        f"({problem}); nothing was changed.{left} `bilstm train --resume {run} --force` trains "
        "the folder again from the start (its checkpoints are replaced)")


def load_last(run_dir: Path) -> Checkpoint | None:
    state = read_state(run_dir)
    if state is None:
        return None
    folder = checkpoint_dir(run_dir) / LAST
    try:
        with np.load(folder / ARRAYS_FILE) as npz:
            arrays = {key: npz[key] for key in npz.files}
        document = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"cannot read the checkpoint {folder}: {exc}") from None
    return Checkpoint(state, arrays, folder.resolve(), document)


def _group(arrays: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    return [arrays[k] for k in sorted(arrays) if k.startswith(prefix + "/")]


def restore(checkpoint: Checkpoint, model: Any, steps_per_epoch: int) -> list[np.ndarray] | None:
    """Put the checkpoint's model and optimizer state into a freshly built, compiled model, and
    set Python's and NumPy's random state. Returns the best epoch's weights (None if no epoch
    has finished yet)."""
    if checkpoint.state.steps_per_epoch != steps_per_epoch:
        raise UserError(
            f"the checkpoint {checkpoint.path} has {checkpoint.state.steps_per_epoch} batches per "
            f"epoch, the data now gives {steps_per_epoch}: the training data changed since the "
            "run started. Use --force to start over"
        )
    model.optimizer.build(model.trainable_variables)
    for prefix, variables in (("model", model.variables),
                              ("optimizer", model.optimizer.variables)):
        saved = _group(checkpoint.arrays, prefix)
        if len(saved) != len(variables) or any(
            tuple(s.shape) != tuple(v.shape) for s, v in zip(saved, variables)
        ):
            raise UserError(
                f"the checkpoint {checkpoint.path} does not fit this model ({prefix} variables "
                "differ): was it written by another version of bilstm? Use --force to start over"
            )
        for variable, value in zip(variables, saved):
            variable.assign(value)
    name, position, has_gauss, cached = checkpoint.document["numpy_random"]
    np.random.set_state((name, checkpoint.arrays["numpy_random/keys"], position, has_gauss,
                         cached))
    version, internal, gauss = checkpoint.document["python_random"]
    random.setstate((version, tuple(internal), gauss))
    best = _group(checkpoint.arrays, "best")
    return best or None


def add_metric_state(checkpoint: Checkpoint, model: Any) -> None:
    """Add the interrupted epoch's metric sums (loss and accuracy totals and counts) to the
    metrics after the first resumed batch: sums add up to exactly what an uninterrupted epoch
    accumulates, so the epoch's reported loss and accuracy match too."""
    saved = _group(checkpoint.arrays, "metrics")
    variables = model.metrics_variables
    if len(saved) != len(variables):
        return
    for variable, value in zip(variables, saved):
        variable.assign(np.asarray(variable) + value)


def clear(run_dir: Path) -> None:
    """Forget a run's checkpoints (`--force`)."""
    shutil.rmtree(checkpoint_dir(run_dir), ignore_errors=True)


def config_differences(saved: dict[str, Any], current: dict[str, Any],
                       defaults: dict[str, Any] | None = None) -> list[str]:
    """Dotted keys whose values differ between two config dumps, except the resume-safe ones,
    each as `key: saved -> current`. A key the saved config lacks (written before the key
    existed) counts as its default."""
    from bilstm_cli.config import DATA_PATH_KEYS, absolute_data_path

    old_values = {**flatten(defaults or {}), **flatten(saved)}
    new_values = flatten(current)
    for key in DATA_PATH_KEYS:  # the same file, however it is spelled (runs before 12-01)
        for values in (old_values, new_values):
            values[key] = absolute_data_path(values.get(key))
    safe = set(RESUME_SAFE_KEYS)
    schedule = old_values.get("training.lr_schedule", "constant")
    if schedule != "constant":
        safe.discard("training.epochs")  # a schedule spans the epochs: more of them reshape it
    out = []
    for key in sorted(set(old_values) | set(new_values)):
        if key in safe:
            continue
        old, new = old_values.get(key), new_values.get(key)
        if old != new:
            why = f" (the {schedule} learning-rate schedule spans the epochs)" \
                if key == "training.epochs" else ""
            out.append(f"{key}: {show_value(old)} -> {show_value(new)}{why}")
    return out


def show_value(value: Any) -> str:
    """A config value as YAML writes it inline (`[a, b]`, `null`)."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dump as {"section.key": value}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def resume_config_path(run_dir: Path) -> Path:
    """The config.yaml `train --resume run_dir` starts from; a UserError if it has none."""
    from bilstm_cli.runs import CONFIG_FILE, is_folder_of_runs, newest_hint

    path = run_dir / CONFIG_FILE
    if run_dir.is_dir() and not path.is_file() and is_folder_of_runs(run_dir):
        raise UserError(f"cannot resume {run_dir}: it is a folder of run folders, not a run; "
                        f"give one of them{newest_hint(run_dir, ', e.g.')}")
    if not path.is_file():
        what = "does not exist" if not run_dir.exists() else f"has no {CONFIG_FILE}"
        raise UserError(f"cannot resume {run_dir}: it {what} (give a run folder made by "
                        "`bilstm train`)")
    return path


def check_resume(run_dir: Path, config: dict[str, Any], force: bool) -> bool:
    """Whether `train --resume run_dir` with this config (a dump) continues from
    `checkpoints/last` (True; an ensemble's members continue from theirs) or trains the folder
    from the start (False: `--force`, or no checkpoint was written yet). Raises UserError when
    it may do neither."""
    from bilstm_cli.config import Config, without_removed_keys
    from bilstm_cli.runs import member_dirs, read_config_mapping
    from bilstm_cli.runstate import RUN_FILE, read_json

    _check_resumable_folder(run_dir)
    if force:
        return False
    saved = read_config_mapping(run_dir) or {}  # a UserError naming the file
    differences = config_differences(without_removed_keys(saved), config,
                                     Config().model_dump(mode="json"))
    if differences:
        listed = "\n".join(f"  - {d}" for d in differences)
        raise UserError(
            f"cannot resume {run_dir}: the config differs from the run's in keys that change "
            f"the result (run's -> now):\n{listed}\nResume without these changes, or add "
            "--force to train this folder again from the start with the new config."
        )
    members = member_dirs(run_dir)
    for folder in (run_dir, *members):
        check_last(folder, run_dir)
    state = read_state(run_dir)
    record = read_json(run_dir / RUN_FILE) or {}
    epochs = config["training"]["epochs"]
    if state is None and members:  # an ensemble: each member resumes on its own
        from bilstm_cli import ensemble

        ensemble.check_resume(run_dir, [read_state(member) for member in members], epochs,
                              record.get("state") == "finished", _longer(config))
        return True
    if state is None:
        return False
    if state.epoch > epochs:
        raise UserError(f"cannot resume {run_dir} with {epochs} epochs: it has done "
                        f"{state.epoch} already")
    if record.get("state") == "finished" and (state.stopped_early or state.epoch >= epochs):
        why = "stopped early" if state.stopped_early else \
            f"{state.epoch} epoch{'s' * (state.epoch != 1)} done"
        raise UserError(f"{run_dir} has already finished ({why}): nothing to resume. "
                        f"{_longer(config)}")
    return True


def _check_resumable_folder(run_dir: Path) -> None:
    """A run folder with a config, not an ensemble's member, and not being written to now."""
    from bilstm_cli.runs import CONFIG_FILE, MEMBERS_DIR
    from bilstm_cli.runstate import lock_owner

    resume_config_path(run_dir)
    ensemble = run_dir.resolve().parent.parent
    if run_dir.resolve().parent.name == MEMBERS_DIR and (ensemble / CONFIG_FILE).is_file():
        # A member trained on the ensemble's split, which its own seed would not remake.
        raise UserError(f"{run_dir} is a member of the ensemble {ensemble}: resume the "
                        f"ensemble instead (bilstm train --resume {ensemble})")
    owner = lock_owner(run_dir)
    if owner is not None and owner != os.getpid():
        raise UserError(f"another training (pid {owner or '?'}) is writing into {run_dir}; "
                        "wait for it to end or stop it")


def _longer(config: dict[str, Any]) -> str:
    """What a user can do with a finished run: train it longer only where the schedule allows."""
    schedule = config["training"].get("lr_schedule", "constant")
    if schedule != "constant":
        return (f"Its {schedule} learning-rate schedule ended with its last epoch, so it cannot "
                "be trained longer: train a new run with more --epochs, or add --force to train "
                "this folder again from the start")
    return ("Give more --epochs to train it longer (not after early stopping), or --force to "
            "train it again")

"""The run folder: its layout, atomic writes, and the `latest` pointer.

A run folder holds everything `predict` and `evaluate` need (model, tokenizer, labels) plus the
record of how it was made (config, history, metrics). Every file is written to a temporary name
and renamed, so an interrupted run never leaves a half-written file under a final name.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from bilstm_cli.errors import UserError

MODEL_FILE = "model.keras"
ONNX_FILE = "model.onnx"  # the same model for ONNX Runtime (predict without TensorFlow)
INT8_ONNX_FILE = "model.int8.onnx"  # its int8 twin: `bilstm export --quantize`
TOKENIZER_FILE = "tokenizer.json"
LABELS_FILE = "labels.json"
CONFIG_FILE = "config.yaml"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
DATA_SUMMARY_FILE = "data_summary.json"  # examples per split and class, skipped bad rows
LATEST = "latest"
RUN_FILE = "run.json"  # the run's state (running, finished, ...) and how it was started
MEMBERS_DIR = "members"  # an ensemble's members, each a run folder of its own: members/1, ...


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary path in the same folder, then rename it over `path`.
    A full disk or an unwritable folder is a UserError naming the path; the old file stays."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix,
                                        dir=path.parent)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        # mkstemp makes the file private (0600); a run folder's files get the usual mode.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc} (the previous version, "
                        "if any, is intact)") from None
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def check_output_dir(output_dir: str) -> None:
    """Refuse an output.dir that cannot hold run folders before the data loads, not after."""
    for folder in (Path(output_dir), *Path(output_dir).parents):
        if folder.exists():
            if not folder.is_dir():
                raise UserError(f"output.dir {output_dir}: {folder} is a file, not a folder "
                                "(give --output a folder for run folders)")
            return


def new_run_dir(output_dir: str, name: str) -> Path:
    """`<output_dir>/<timestamp>-<name>`, made unique if two runs start in the same second."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(output_dir) / f"{stamp}-{name}"
    candidate, n = base, 1
    while True:
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            n += 1
            candidate = base.with_name(f"{base.name}-{n}")
        except OSError as exc:
            raise UserError(f"cannot create the run folder {candidate}: {exc.strerror}") from None


def mark_latest(run_dir: Path) -> None:
    """Point `<parent>/latest` at `run_dir` (a relative symlink, swapped in atomically)."""
    link = run_dir.parent / LATEST
    tmp = run_dir.parent / f".{LATEST}.{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(run_dir.name, tmp)
        os.replace(tmp, link)
    except OSError as exc:  # `latest` is a real folder, or the file system has no symlinks
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot point {link} at {run_dir.name}: {exc.strerror or exc}; give "
                        f"the run folder ({run_dir}) where a command asks for --model") from None


def resolve_model(path: str | None, default_dir: str = "runs") -> Path:
    """The run folder for `--model`: a run folder, a model file inside one, or `runs/latest`."""
    target = Path(path) if path else Path(default_dir) / LATEST
    if target.is_file():
        target = target.parent
    if not target.exists():
        if target.is_symlink():
            raise UserError(f"{target} points at {os.readlink(target)}, which does not exist "
                            f"(deleted or moved?){newest_hint(target.parent)}")
        if path is None:
            raise UserError(
                f"no trained model at {target}: train one with `bilstm train`, or give --model "
                "RUN_FOLDER"
            )
        raise UserError(f"model not found: {target}")
    if not target.is_dir():
        raise UserError(f"{target} is not a run folder (give the folder `bilstm train` made)")
    if not is_run_folder(target) and is_folder_of_runs(target):
        raise UserError(f"{target} is a folder of run folders, not a run: give one of them"
                        f"{newest_hint(target, ', e.g.')}")
    for needed in (TOKENIZER_FILE, LABELS_FILE):
        if not (target / needed).is_file():
            raise UserError(
                f"{target} is not a complete run folder: {needed} is missing (was the training "
                "interrupted before it finished?)"
            )
    return target.resolve()


def is_run_folder(folder: Path) -> bool:
    """A folder `bilstm train` made (finished or not): it has run.json or config.yaml."""
    return (folder / RUN_FILE).is_file() or (folder / CONFIG_FILE).is_file()


def is_folder_of_runs(folder: Path) -> bool:
    """A folder holding run folders: a `latest` link, or a sub-folder that is a run."""
    if (folder / LATEST).is_symlink():
        return True
    try:
        return any(entry.is_dir() and is_run_folder(entry) for entry in folder.iterdir())
    except OSError:
        return False


def newest_finished(folder: Path) -> Path | None:
    """The most recently started finished run in a folder of runs."""
    finished = []
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink() and is_run_folder(entry):
            try:
                record = json.loads((entry / RUN_FILE).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and record.get("state") == "finished":
                finished.append((str(record.get("started") or ""), entry.name, entry))
    return max(finished)[2] if finished else None


def newest_hint(folder: Path, lead: str = ";") -> str:
    """Where the newest runs are: `latest` (when it leads somewhere) and the newest finished."""
    try:
        newest = newest_finished(folder)
    except OSError:
        return ""
    latest = folder / LATEST
    parts = []
    if latest.is_symlink() and latest.exists():
        parts.append(f"{latest} (-> {os.readlink(latest)})")
    if newest is not None:
        parts.append(f"the newest finished run, {newest}")
    return f"{lead} {' or '.join(parts)}" if parts else ""


def member_dirs(run_dir: Path) -> list[Path]:
    """An ensemble's member folders in member order (none for a single model)."""
    folder = run_dir / MEMBERS_DIR
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()),
                  key=lambda p: int(p.name))


def read_labels(run_dir: Path) -> list[str]:
    path = run_dir / LABELS_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} cannot be read ({exc}): the run folder is damaged; train "
                        "again, or restore the file") from None
    labels = document.get("labels") if isinstance(document, dict) else None
    if not isinstance(labels, list) or len(labels) < 2 \
            or not all(isinstance(label, str) for label in labels):
        raise UserError(f"{path}: expected {{\"labels\": [two or more label names]}}: the run "
                        "folder is damaged; train again, or restore the file")
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise UserError(f"{path}: label(s) {', '.join(map(repr, repeated))} listed more than "
                        "once: the run folder is damaged; train again, or restore the file")
    return labels


def read_config_mapping(run_dir: Path) -> dict[str, Any] | None:
    """The run's config.yaml as written (before validation: an old run's keys as they were,
    a key added since as the run did it: `config.as_run_did`), None when the folder has none; a
    UserError naming the file when it is not a YAML mapping. Every reader of a run's config
    comes through here or `read_config`."""
    from bilstm_cli.config import as_run_did, read_yaml_mapping

    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        return as_run_did(read_yaml_mapping(path)[0])
    except UserError as exc:
        raise UserError(f"{exc}; the run folder is damaged") from None


def run_data_section(run_dir: Path) -> dict[str, Any]:
    """The `data` section of the run's config.yaml ({} when the file is missing)."""
    data = (read_config_mapping(run_dir) or {}).get("data")
    return data if isinstance(data, dict) else {}


def run_data_config(section: dict[str, Any]) -> dict[str, Any]:
    """How the run read its data (format, header, columns, label prefix, label set, bad rows),
    from its `run_data_section`: `evaluate`'s defaults."""
    columns: dict[str, Any] = {"format": "auto", "header": "auto", "text_column": "text",
                               "label_column": "label", "label_prefix": "__label__",
                               "labels": None, "on_bad_row": "error"}
    columns.update({k: section[k] for k in columns if k in section})
    return columns


def training_data_warning(section: dict[str, Any], data: str) -> str | None:
    """A warning when `data` is the data the run was trained on (by its `run_data_section`):
    its accuracy would say how well the model remembers its training texts, not how it does on
    new ones."""
    trained_on = None
    if section.get("dataset") and data == f"{section['dataset']}:train":
        trained_on = f"data.dataset: {section['dataset']}"
    elif isinstance(section.get("train"), str) and data != "-":
        try:
            if os.path.samefile(data, section["train"]):
                trained_on = f"data.train: {section['train']}"
        except OSError:  # either file is gone: nothing to compare
            pass
    if trained_on is None:
        return None
    held_out = section.get("test") or (
        f"{section['dataset']}:test" if section.get("dataset") else None)
    instead = f"; the run's test data is {held_out}" if held_out else ""
    return (f"{data} is the data this model was trained on ({trained_on}): its accuracy says "
            f"how well the model remembers its training texts, not how it does on new "
            f"ones{instead}")


def read_config(run_dir: Path) -> Any:
    """The run's config.yaml as a `config.Config` (a UserError naming the file when it is
    missing or invalid)."""
    from bilstm_cli.config import load_config

    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{path} is missing: the run folder has no config (was it made by "
                        "`bilstm train`?)")
    return load_config(path, run_file=True)

"""A run's life: the lock that keeps two trainings out of one folder, `run.json` (what ran, where,
and how it ended), and the listing behind `bilstm runs`. No TensorFlow here.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bilstm_cli import __version__
from bilstm_cli.errors import UserError
from bilstm_cli.interrupt import TrainingInterrupted
from bilstm_cli.runs import (
    CONFIG_FILE,
    HISTORY_FILE,
    LATEST,
    METRICS_FILE,
    RUN_FILE,
    write_json_atomic,
)

LOCK_FILE = "train.lock"
STATES = ("running", "finished", "interrupted", "failed")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _pid_in(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).split()[0])
    except (OSError, ValueError, IndexError):
        return None


def lock_owner(run_dir: Path) -> int | None:
    """The pid of the live process that holds the run's lock (0 if it has not written its pid
    yet), or None: no lock file, or one left by a process that died (the kernel releases a
    dead process's lock, so a reused pid never counts)."""
    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _pid_in(fd) or 0
    except OSError:  # a file system without flock: nobody can hold it
        return None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _try_lock(fd: int, attempts: int = 10) -> bool:
    """flock(LOCK_EX) without blocking, retried briefly: `lock_owner` probes (`bilstm runs`,
    a resume's check) hold the lock for an instant."""
    for attempt in range(attempts):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < attempts:
                time.sleep(0.02)
    return False


class RunLock:
    """`train.lock` in the run folder, locked (flock) and holding our pid for as long as
    training runs. A second training into the folder refuses; a lock file left by a process
    that died (its lock went with it) is taken over."""

    def __init__(self, run_dir: Path, warn: Callable[[str], None]) -> None:
        self.path = run_dir / LOCK_FILE
        self.warn = warn
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            except OSError as exc:
                raise UserError(f"cannot write in the run folder {self.path.parent}: "
                                f"{exc.strerror}") from None
            try:
                if not _try_lock(fd):
                    owner = _pid_in(fd)
                    raise UserError(
                        f"another training (pid {owner or '?'}) is writing into "
                        f"{self.path.parent}; wait for it to end or stop it"
                    )
                try:  # its holder may have ended, removing the file, between our open and lock
                    same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if not same:
                    os.close(fd)
                    continue
                previous = _pid_in(fd)
                if previous is not None:
                    self.warn(f"taking over the stale lock {self.path} (process {previous} is "
                              "gone)")
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            except UserError:
                os.close(fd)
                raise
            except OSError as exc:  # e.g. a file system without flock
                os.close(fd)
                self.warn(f"cannot lock {self.path} ({exc.strerror or exc}); training without "
                          "the lock: do not start a second training into this folder")
                return self
            self.fd = fd
            return self
        raise UserError(f"cannot take the lock {self.path}: it keeps changing")

    def __exit__(self, *exc: object) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # before the lock goes: see __enter__'s check
        except OSError:
            pass  # the next training takes the file over
        finally:
            os.close(self.fd)
            self.fd = None


class RunRecord:
    """`run.json`, written when training starts and updated as it goes and when it ends."""

    def __init__(self, run_dir: Path, data: dict[str, Any]) -> None:
        self.path = run_dir / RUN_FILE
        self.data = data

    @classmethod
    def start(cls, run_dir: Path, command: list[str], seed: int, deterministic: bool,
              resumed: bool, machine: dict[str, Any], versions: dict[str, str]) -> RunRecord:
        previous = read_json(run_dir / RUN_FILE) if resumed else None
        session = {"command": command, "started": now(), "pid": os.getpid()}
        if previous:
            data = previous
            data.setdefault("resumed", []).append(session)
            data.update(state="running", ended=None, pid=os.getpid(), machine=machine,
                        versions=versions)
            data.pop("error", None)
            data.pop("interrupted", None)
        else:
            data = {
                "command": command, "seed": seed, "deterministic": deterministic,
                "started": session["started"], "ended": None, "state": "running",
                "pid": os.getpid(), "epochs_done": 0, "best_epoch": None,
                "stopped_early": False, "versions": versions, "machine": machine,
            }
        record = cls(run_dir, data)
        record.write()
        return record

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self.write()

    def end(self, state: str, **fields: Any) -> None:
        self.data.update(fields, state=state, ended=now())
        try:
            self.write()
        except (UserError, OSError):
            pass  # the disk may be what failed; the error itself is already on its way

    def end_for(self, exc: BaseException) -> None:
        """End the run for the exception that stopped it: interrupted by a signal, else failed."""
        if isinstance(exc, TrainingInterrupted):
            self.end("interrupted", interrupted=str(exc))
        else:
            self.end("failed", error=str(exc) or type(exc).__name__)

    def write(self) -> None:
        write_json_atomic(self.path, self.data)


def versions(tensorflow: str, keras: str) -> dict[str, str]:
    return {"bilstm": __version__, "tensorflow": tensorflow, "keras": keras,
            "python": platform.python_version()}


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def command_line() -> list[str]:
    """The command as the user typed it (`bilstm ...`, not the path to the console script)."""
    argv = list(sys.argv)
    if argv and (argv[0].endswith("__main__.py") or Path(argv[0]).name == "bilstm"):
        argv[0] = "bilstm"
    return argv


def run_state(run_dir: Path, record: dict[str, Any] | None) -> str:
    """The state in run.json, except that a "running" run whose process is gone (kill -9, power
    loss) shows as interrupted."""
    if record is None:
        return "unknown"
    state = record.get("state", "unknown")
    if state == "running":
        if lock_owner(run_dir) is None:
            return "interrupted"
    return state


def describe_run(run_dir: Path) -> dict[str, Any]:
    """One row of `bilstm runs`."""
    record = read_json(run_dir / RUN_FILE)
    metrics = read_json(run_dir / METRICS_FILE) or {}
    config = _read_config(run_dir)
    data, model, training = (config.get(k) if isinstance(config.get(k), dict) else {}
                             for k in ("data", "model", "training"))
    rows = read_history(run_dir / HISTORY_FILE)
    monitor = training.get("monitor", "val_loss")
    best_row = max(rows, key=lambda r: -r[monitor] if monitor == "val_loss" else r[monitor],
                   default=None) if rows and all(monitor in r for r in rows) else None
    test = metrics.get("test") or None
    dataset = data.get("dataset") or (Path(data["train"]).name if data.get("train") else None)
    described = {
        "name": run_dir.name,
        "path": str(run_dir),
        "started": (record or {}).get("started"),
        "dataset": dataset,
        "model": None if not model else ("bi" if model.get("bidirectional") else "uni"),
        "epochs_done": len(rows),
        "epochs": training.get("epochs"),
        "best_epoch": int(best_row["epoch"]) if best_row else None,
        "member_best_epochs": None,  # an ensemble's, below
        "best_val_accuracy": best_row.get("val_accuracy") if best_row else None,
        "best_val_loss": best_row.get("val_loss") if best_row else None,
        "test_accuracy": test.get("accuracy") if test else None,
        "state": run_state(run_dir, record),
        # tf.distribute (distribute.py); runs from before it trained on one device
        "strategy": ((record or {}).get("distribute") or {}).get("strategy", "none"),
        "replicas": ((record or {}).get("distribute") or {}).get("replicas", 1),
    }
    count = int(model.get("ensemble") or 1)
    if count > 1:
        # An ensemble: epochs over all its members, each member's best epoch (none yet for a
        # member not started), and the averaged model's validation.
        from bilstm_cli.runs import member_dirs

        members = [describe_run(member) for member in member_dirs(run_dir)]
        validation = metrics.get("validation") or {}
        described.update(
            model=f"{described['model']} x{count}",
            epochs_done=sum(m["epochs_done"] for m in members),
            epochs=count * training["epochs"] if training.get("epochs") else None,
            best_epoch=None, best_val_loss=None,
            member_best_epochs=[m["best_epoch"] for m in members],
            best_val_accuracy=validation.get("accuracy"))
    return described


def list_runs(folder: Path) -> list[dict[str, Any]]:
    """Every run folder under `folder` (those with a run.json or config.yaml), oldest first."""
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise UserError(f"no run folders: {folder} {what} (give the folder that holds run "
                        "folders, e.g. runs)")
    if (folder / RUN_FILE).is_file() or (folder / CONFIG_FILE).is_file():
        raise UserError(f"{folder} is a run folder, not a folder of runs: list the folder "
                        f"that holds it (bilstm runs {folder.resolve().parent})")
    runs = [
        describe_run(entry) for entry in sorted(folder.iterdir())
        if entry.is_dir() and not entry.is_symlink() and entry.name != LATEST
        and ((entry / RUN_FILE).is_file() or (entry / CONFIG_FILE).is_file())
    ]
    latest = folder / LATEST
    target = os.readlink(latest) if latest.is_symlink() else None
    for run in runs:
        run["latest"] = run["name"] == target
    return sorted(runs, key=lambda r: (r["started"] or "", r["name"]))


def _read_config(run_dir: Path) -> dict[str, Any]:
    """A run's config.yaml as far as the listing needs it: {} when it is missing or damaged
    (`train --resume` and `evaluate` say what is wrong with it)."""
    from bilstm_cli.runs import read_config_mapping

    try:
        return read_config_mapping(run_dir) or {}
    except UserError:
        return {}


def read_history(path: Path) -> list[dict[str, float]]:
    """history.csv's rows, numbers only ([] when there is none)."""
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            return [{k: float(v) for k, v in row.items() if _is_number(v)}
                    for row in csv.DictReader(handle)]
    except OSError:
        return []


def _is_number(value: str | None) -> bool:
    try:
        float(value or "")
    except ValueError:
        return False
    return True

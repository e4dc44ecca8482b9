"""Ctrl-C and SIGTERM during training: finish the current batch, save, then stop.

From the first batch to the end of the run, the first SIGINT or SIGTERM only sets a flag that
training reads at its safe points: after each batch (it then writes `checkpoints/last`) and
between the steps of the final phase (export, evaluation; the epochs are saved by then). There it
raises TrainingInterrupted, and `train --resume` does what is left. The handlers go back to the
system defaults at the first signal, so a second one ends the process at once, even inside a
long TensorFlow op: atomic writes keep the previous checkpoint intact. Before the first batch
(loading, tokenizing) a signal interrupts at once.

TrainingInterrupted is a BaseException, like KeyboardInterrupt: Keras re-raises the Exceptions
raised inside its layers as new ones built from the message, which would lose the signal.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

HANDLED = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(BaseException):
    """Training stopped on a signal; `last` holds everything done so far."""

    def __init__(self, signum: int, where: str = "") -> None:
        super().__init__(f"{signal.Signals(signum).name}{f' {where}' if where else ''}")
        self.signum = signum
        self.where = where
        self.run_dir: Path | None = None  # set by train(): the folder to resume
        self.member_dir: Path | None = None  # an ensemble's member that was training

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # 130 for SIGINT, 143 for SIGTERM, as shells report them


class StopSignals:
    """A context manager that owns SIGINT and SIGTERM for the duration of a training run."""

    def __init__(self, notify: Callable[[str], None]) -> None:
        self.notify = notify
        self.signum: int | None = None
        self.graceful = False
        self.final_phase = False  # the epochs are done: stopping skips the export/evaluation
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in HANDLED:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def check(self, where: str) -> None:
        """A safe point: raise TrainingInterrupted if a signal came."""
        if self.signum is not None:
            raise TrainingInterrupted(self.signum, where)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
        if not self.graceful:
            raise TrainingInterrupted(signum)
        for other in HANDLED:
            signal.signal(other, signal.SIG_DFL)  # the next signal ends the process at once
        name = signal.Signals(signum).name
        again = "press Ctrl-C again" if signum == signal.SIGINT else f"send {name} again"
        if self.final_phase:
            self.notify(f"{name}: stopping after this step of the final phase; the epochs are "
                        f"saved and `--resume` finishes the run ({again} to abort at once)")
        else:
            self.notify(f"{name}: stopping after this batch and saving a checkpoint ({again} to "
                        "abort at once)")

"""Everything the user sees besides results: rich progress and tables on a terminal, plain lines
otherwise. Progress and logs go to stderr; reports meant as results go to the console passed in.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

stderr = Console(stderr=True, highlight=False)


def stdout_console() -> Console:
    return Console(file=sys.stdout, highlight=False, soft_wrap=True)


def info(message: str) -> None:
    # soft_wrap: one line stays one line (rich would break a long path at 80 columns in a log)
    stderr.print(message, markup=False, soft_wrap=True)


def warn(message: str) -> None:
    if stderr.is_terminal:
        stderr.print(f"[yellow]warning:[/yellow] {message}", soft_wrap=True)
    else:
        stderr.print(f"warning: {message}", markup=False, soft_wrap=True)


def error(message: str) -> None:
    if stderr.is_terminal:
        stderr.print("[bold red]error:[/bold red] ", end="")
        stderr.print(message, markup=False, soft_wrap=True)
    else:
        stderr.print(f"error: {message}", markup=False, soft_wrap=True)


def _table(console: Console, title: str | None = None) -> Table:
    return Table(title=title, box=box.SIMPLE_HEAD if console.is_terminal else box.ASCII2,
                 title_justify="left")


class TrainingDisplay:
    """A progress bar per epoch and a table that grows one row per epoch (or plain lines)."""

    def __init__(self, epochs: int, console: Console = stderr) -> None:
        self.console = console
        self.epochs = epochs
        self.rich = console.is_terminal
        self.table = _table(console)
        for column in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds",
                       "examples/s", "best"):
            self.table.add_column(column, justify="right")
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f} acc {task.fields[acc]:.4f}"),
            TextColumn("{task.fields[speed]:.0f} ex/s"), TimeRemainingColumn(),
            console=console, transient=True,
        )
        self.live: Live | None = None
        self.task: Any = None
        self.started = 0.0

    def __enter__(self) -> TrainingDisplay:
        if self.rich:
            self.live = Live(Group(self.table, self.progress), console=self.console,
                             refresh_per_second=8)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def start_epoch(self, epoch: int, batches: int) -> None:
        self.started = time.perf_counter()
        if self.rich:
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task(
                "train", total=batches, epoch=f"{epoch}/{self.epochs}", loss=0.0, acc=0.0,
                speed=0.0,
            )

    def update(self, batches_done: int, examples: int, logs: Mapping[str, float]) -> None:
        if self.rich and self.task is not None:
            elapsed = max(time.perf_counter() - self.started, 1e-9)
            self.progress.update(
                self.task, completed=batches_done, loss=float(logs.get("loss", 0.0)),
                acc=float(logs.get("accuracy", 0.0)), speed=examples / elapsed,
            )

    def end_epoch(self, row: Mapping[str, Any]) -> None:
        cells = [
            f"{row['epoch']}/{self.epochs}", f"{row['loss']:.4f}", f"{row['accuracy']:.4f}",
            f"{row['val_loss']:.4f}", f"{row['val_accuracy']:.4f}", f"{row['seconds']:.1f}",
            f"{row['examples_per_second']:.0f}", "*" if row["best"] else "",
        ]
        if self.rich:
            self.table.add_row(*cells)
            if self.task is not None:
                self.progress.remove_task(self.task)
                self.task = None
        else:
            names = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds",
                     "examples/s")
            line = "  ".join(f"{n} {c}" for n, c in zip(names, cells))
            self.console.print(line + ("  best" if row["best"] else ""), markup=False,
                               soft_wrap=True)


def report_tables(report: Mapping[str, Any], console: Console) -> list[Table]:
    """The evaluation report as tables: summary, per class, confusion matrix."""
    summary = _table(console, "evaluation")
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    summary.add_row("examples", str(report["examples"]))
    summary.add_row("accuracy", f"{report['accuracy']:.4f}")
    if "loss" in report:
        summary.add_row("loss", f"{report['loss']:.4f}")

    classes = _table(console, "per class")
    classes.add_column("label")
    for column in ("precision", "recall", "f1", "support"):
        classes.add_column(column, justify="right")
    rows = list(report["per_class"].items())
    rows += [("macro avg", report["macro_avg"]), ("weighted avg", report["weighted_avg"])]
    for label, values in rows:
        classes.add_row(label, f"{values['precision']:.4f}", f"{values['recall']:.4f}",
                        f"{values['f1']:.4f}", str(values["support"]))

    confusion = _table(console, "confusion matrix (rows: true, columns: predicted)")
    confusion.add_column("")
    for label in report["labels"]:
        confusion.add_column(label, justify="right")
    for label, counts in zip(report["labels"], report["confusion_matrix"]):
        confusion.add_row(label, *(str(c) for c in counts))
    return [summary, classes, confusion]


def summary_tables(summary: Mapping[str, Any], console: Console) -> list[Table]:
    """The data summary (`train --dry-run` and the start of training)."""
    splits = _table(console, "data")
    labels = summary["labels"]
    splits.add_column("split")
    splits.add_column("source", overflow="fold")  # a path folds, never loses its end to "…"
    splits.add_column("examples", justify="right")
    for label in labels:
        splits.add_column(label, justify="right")
    splits.add_column("skipped rows", justify="right")
    vocabulary = summary.get("vocabulary_size")
    lengths = _table(console, f"length in tokens (max_length {summary['max_length']})"
                     + (f"; vocabulary {vocabulary} tokens" if vocabulary else ""))
    lengths.add_column("split")
    for column in ("p50", "p90", "p95", "p99", "max", "truncated", "in vocabulary"):
        lengths.add_column(column, justify="right")
    notes = list(summary.get("settings", []))  # what each `auto` key became, and why
    for name, split in summary["splits"].items():
        splits.add_row(name, split["source"], str(split["examples"]),
                       *(str(split["classes"].get(label, 0)) for label in labels),
                       str(split.get("skipped_rows", 0)))
        pct = split["length_percentiles"]
        coverage = split.get("vocabulary_coverage")
        lengths.add_row(name, *(str(pct[k]) for k in ("p50", "p90", "p95", "p99", "max")),
                        f"{split['truncated_share']:.1%}",
                        "" if coverage is None else f"{coverage:.1%}")
        notes += [f"skipped: {m}" for m in split.get("bad_rows", [])]
        if split.get("skipped_rows", 0) > len(split.get("bad_rows", [])):
            notes.append(f"skipped: ... {split['skipped_rows'] - len(split['bad_rows'])} more "
                         f"in {split['source']}")
        notes += split.get("notes", [])
    tables = [splits, lengths]
    weights = summary.get("class_weight")
    if notes or weights:
        extra = _table(console, "notes")
        extra.show_header = False
        extra.add_column("note", overflow="fold")
        if weights:
            extra.add_row("class weights: " + ", ".join(f"{k} {v:.4g}" for k, v in weights.items()))
        for note in notes:
            extra.add_row(note)
        tables.append(extra)
    return tables


@contextmanager
def download_progress(
    label: str, console: Console = stderr
) -> Iterator[Callable[[int, int | None], None]]:
    """A callback (bytes done, total or None) that shows a download: a rich bar with bytes,
    speed and ETA on a terminal, else a plain line every 10% (or every 10 s without a size)."""
    if not console.is_terminal:
        yield _PlainDownloadLines(label, console)
        return
    progress = Progress(
        TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        TimeRemainingColumn(), console=console, transient=False,
    )
    with progress:
        task = progress.add_task(label, total=None)

        def update(done: int, total: int | None) -> None:
            progress.update(task, completed=done, total=total)

        yield update


class _PlainDownloadLines:
    def __init__(self, label: str, console: Console) -> None:
        self.label = label
        self.console = console
        self.started = time.monotonic()
        self.last_time = 0.0
        self.last_tenth = -1

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic() - self.started
        if total:
            tenth = done * 10 // total
            if tenth <= self.last_tenth:
                return
            self.last_tenth = tenth
        elif now - self.last_time < 10 and done:
            return
        self.last_time = now
        speed = done / now if now > 0 else 0.0
        of = f" of {total / 1e6:.1f} MB ({done / total:.0%})" if total else ""
        eta = f", ETA {(total - done) / speed:.0f} s" if total and speed and done < total else ""
        self.console.print(f"{self.label}: {done / 1e6:.1f} MB{of}, {speed / 1e6:.2f} MB/s{eta}",
                           markup=False, soft_wrap=True)


def datasets_table(rows: list[tuple[str, str, str, str]], console: Console) -> Table | str:
    """`bilstm data list`: name, status, where it is (or comes from), what it is. Not on a
    terminal: tab-separated lines (name, status, location), easy to read in a script."""
    if not console.is_terminal:
        return "".join("\t".join(row[:3]) + "\n" for row in rows).rstrip("\n")
    table = _table(console, "built-in data sets")
    table.add_column("name")
    table.add_column("status")
    table.add_column("location", overflow="fold")
    table.add_column("description")
    for row in rows:
        table.add_row(*row)
    return table



# The state stays last and the earlier columns where they were: scripts read the TSV by
# position.
RUN_COLUMNS = ("run", "started", "data", "model", "epochs", "best val acc", "best epoch",
               "test acc", "replicas", "state")


def _run_cells(run: Mapping[str, Any]) -> list[str]:
    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    started = (run["started"] or "-").replace("T", " ").removesuffix("+00:00")
    epochs = f"{run['epochs_done']}/{run['epochs']}" if run["epochs"] else str(run["epochs_done"])
    best_epoch = str(run["best_epoch"] or "-")
    if run.get("member_best_epochs"):  # an ensemble: each member's, in order
        best_epoch = ",".join(str(epoch or "-") for epoch in run["member_best_epochs"])
    replicas = str(run.get("replicas") or 1)
    if run.get("strategy") not in (None, "none"):  # e.g. "2 mirrored"
        replicas += f" {run['strategy']}"
    return [run["name"] + (" *" if run.get("latest") else ""), started, run["dataset"] or "-",
            run["model"] or "-", epochs, number(run["best_val_accuracy"]),
            best_epoch, number(run["test_accuracy"]), replicas, run["state"]]


def runs_table(runs: list[Mapping[str, Any]], console: Console) -> Table:
    """`bilstm runs` on a terminal: one row per run folder, oldest first; * marks `latest`."""
    table = _table(console)
    for column in RUN_COLUMNS:
        numeric = column in ("epochs", "best val acc", "best epoch", "test acc")
        table.add_column(column, justify="right" if numeric else "left", no_wrap=True)
    for run in runs:
        table.add_row(*_run_cells(run))
    return table


def runs_tsv(runs: list[Mapping[str, Any]]) -> str:
    """`bilstm runs` into a pipe or file: the same columns, tab-separated, with a header."""
    lines = ["\t".join(RUN_COLUMNS)] + ["\t".join(_run_cells(run)) for run in runs]
    return "\n".join(lines) + "\n"


def compare_tables(report: Mapping[str, Any], console: Console) -> list[Table]:
    """`bilstm compare`'s tables (compare/tables.py's rows), each with its notes below."""
    from bilstm_cli.compare.tables import tables

    made = []
    for rows in tables(dict(report)):
        table = _table(console, rows.title)
        for index, name in enumerate(rows.header):
            table.add_column(name, justify="left" if index == 0 else "right",
                             overflow="fold")
        for cells in rows.rows:
            table.add_row(*cells)
        if rows.notes:
            table.caption = "\n".join(rows.notes)
            table.caption_justify = "left"
        made.append(table)
    return made

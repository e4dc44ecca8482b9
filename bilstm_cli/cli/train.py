"""`bilstm train`: options -> config -> api.prepare (data summary) -> Training.run -> results."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bilstm_cli import api
from bilstm_cli import console as ui
from bilstm_cli.cli.common import user_errors
from bilstm_cli.errors import UserError

if TYPE_CHECKING:
    from bilstm_cli.interrupt import TrainingInterrupted

# The config keys that train's own options set, for error messages.
SHORTCUT_OPTIONS = {"model.bidirectional": "--bidirectional", "training.epochs": "--epochs",
                    "training.batch_size": "--batch-size", "training.seed": "--seed",
                    "output.dir": "--output", "training.deterministic": "--deterministic"}


def train(
    config: Annotated[str | None, typer.Option(
        "--config", "-c", help="A YAML config file, or a shipped one by name: imdb, sst2. "
        "Default: the shipped config of data.dataset (imdb); with data.train, your own files, "
        "the defaults for any data set (configs/reference.yaml).", show_default=False)] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", "-s", help="Override a key: section.key=value (value as YAML). Repeatable.")]
        = None,
    bidirectional: Annotated[bool | None, typer.Option(
        "--bidirectional/--unidirectional", help="Use a bidirectional LSTM (model.bidirectional)."
    )] = None,
    epochs: Annotated[int | None, typer.Option(help="training.epochs")] = None,
    batch_size: Annotated[int | None, typer.Option(help="training.batch_size")] = None,
    seed: Annotated[int | None, typer.Option(help="training.seed")] = None,
    output: Annotated[str | None, typer.Option(
        "--output", "-o", help="Parent folder for run folders (output.dir).")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the resolved config and a data summary; do not train.")] = False,
    resume: Annotated[Path | None, typer.Option(
        "--resume", "-r", help="Continue the run in this folder from its checkpoints/last. Its "
        "config.yaml is the base config; any change that alters the result is refused.",
        show_default=False)] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="With --resume: train that folder again from the start (with the "
        "given config changes).")] = False,
    deterministic: Annotated[bool | None, typer.Option(
        "--deterministic", help="TensorFlow's op determinism (training.deterministic): the "
        "same results on every run, also on a GPU, at some cost in speed.",
        show_default=False)] = None,
) -> None:
    """Train a classifier from a YAML config; writes a run folder and prints test metrics.

    Ctrl-C or SIGTERM stops after the current batch and saves a checkpoint; continue with
    `bilstm train --resume RUN_DIR`."""
    from bilstm_cli.config import config_to_yaml, load_config

    shortcuts = {"model.bidirectional": bidirectional, "training.epochs": epochs,
                 "training.batch_size": batch_size, "training.seed": seed, "output.dir": output,
                 "training.deterministic": deterministic}
    with user_errors():
        base = _base_config(config, set_ or [], resume, force, output)
        cfg = load_config(base, set_, {k: v for k, v in shortcuts.items() if v is not None},
                          SHORTCUT_OPTIONS, warn=ui.warn, run_file=bool(resume and not config))
        training = api.prepare(cfg, resume, force, check_folders=not dry_run, log=ui.info,
                               warn=ui.warn)
        if dry_run:
            out = ui.stdout_console()
            out.print(config_to_yaml(training.config), markup=False)  # `auto` resolved
            for table in ui.summary_tables(training.summary, out):
                out.print(table)
            return
        for table in ui.summary_tables(training.summary, ui.stderr):
            ui.stderr.print(table)
        result = _run(training, resume)
    _print_training_result(result.run_dir, result.metrics)


def _base_config(config: str | None, overrides: list[str], resume: Path | None, force: bool,
                 output: str | None) -> Path | dict[str, Any]:
    """What the config starts from: --config; a resumed run's config.yaml; or without either,
    the shipped config of a built-in data set or, for your own files, the defaults."""
    from bilstm_cli.checkpoint import resume_config_path
    from bilstm_cli.config import default_config, resolve_config_path

    if force and resume is None:
        raise UserError("--force goes with --resume RUN_DIR (it trains that folder again)")
    if resume is not None and output is not None:
        raise UserError("--output chooses where new run folders go; a resumed run stays "
                        f"in {resume}: leave out --output")
    if config:
        return resolve_config_path(config)
    return resume_config_path(resume) if resume else default_config(overrides)


def _run(training: api.Training, resume: Path | None) -> Any:
    from bilstm_cli.interrupt import TrainingInterrupted
    from bilstm_cli.runstate import command_line

    try:
        return training.run(ui.info, ui.warn, ui.TrainingDisplay, command_line())
    except TrainingInterrupted as exc:
        _report_interruption(exc, resume)
        raise typer.Exit(exc.exit_code) from None


def _report_interruption(exc: TrainingInterrupted, run_dir: Path | None) -> None:
    """Say where training stopped and the command that continues it."""
    from bilstm_cli.checkpoint import read_state

    folder = run_dir or exc.run_dir
    ui.error(f"training interrupted ({exc})")
    if folder is None:
        return
    # An ensemble's checkpoints are its members': the one that was training.
    where_saved = exc.member_dir or folder
    state = read_state(where_saved)
    if state is None and exc.member_dir is not None:
        ui.stderr.print(f"no checkpoint of {exc.member_dir.name} was written yet; `bilstm train "
                        f"--resume {folder}` keeps the members before it and starts this one "
                        "from the beginning", markup=False, soft_wrap=True)
        return
    if state is None:
        ui.stderr.print(f"no checkpoint was written yet in {folder}; `bilstm train --resume "
                        f"{folder}` starts it from the beginning", markup=False, soft_wrap=True)
        return
    where = (f"batch {state.step} of {state.steps_per_epoch} in epoch {state.epoch + 1}"
             if state.step else f"epoch {state.epoch}")
    ui.stderr.print(f"checkpoint saved after {where}: {where_saved / 'checkpoints' / 'last'}",
                    markup=False, soft_wrap=True)
    ui.stderr.print(f"resume with: bilstm train --resume {folder}", markup=False,
                    soft_wrap=True)


def _print_training_result(run_dir: Path, metrics: dict[str, Any]) -> None:
    out = ui.stdout_console()
    final = metrics["test"] or metrics["validation"]
    out.print(f"run: {run_dir}", markup=False)
    for number, fit in enumerate(metrics.get("members") or [metrics], start=1):
        member = f"member {number} (seed {fit['seed']}): " if "members" in metrics else ""
        out.print(f"{member}best epoch {fit['best_epoch']} of {fit['epochs_run']} "
                  f"({fit['seconds_per_epoch']:.1f} s/epoch, "
                  f"{fit['examples_per_second']:.0f} examples/s)", markup=False)
    if "members" in metrics:
        out.print(f"ensemble of {len(metrics['members'])}: the mean of their probabilities "
                  f"({metrics['training_seconds'] / 60:.1f} minutes of training)", markup=False)
    out.print(f"validation accuracy {metrics['validation']['accuracy']:.4f}", markup=False)
    if metrics["test"]:
        out.print(f"test accuracy {final['accuracy']:.4f}", markup=False)
    for table in ui.report_tables(final, out)[1:]:
        out.print(table)

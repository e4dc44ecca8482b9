"""The `bilstm` command line: one short function per command.

Each command parses its options, calls library code and prints. TensorFlow is imported only
inside the commands that run a model, so `--help`, `--version` and config errors answer at once.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bilstm_cli import __version__
from bilstm_cli import console as ui
from bilstm_cli.errors import UserError

if TYPE_CHECKING:
    from bilstm_cli.interrupt import TrainingInterrupted

app = typer.Typer(
    name="bilstm",
    help="Text classification with uni- and bi-directional LSTMs: train, predict, evaluate.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class OutputFormat(str, Enum):
    label = "label"
    tsv = "tsv"
    jsonl = "jsonl"


class InputFormat(str, Enum):
    text = "text"
    tsv = "tsv"
    jsonl = "jsonl"


class Engine(str, Enum):
    auto = "auto"
    onnx = "onnx"
    tf = "tf"


ENGINE_HELP = ("auto: ONNX Runtime when the run has model.onnx (fast start, no TensorFlow), "
               "else Keras; onnx; tf: force the Keras model.")


class DecodeErrors(str, Enum):
    strict = "strict"
    replace = "replace"


class DataFormat(str, Enum):
    auto = "auto"
    tsv = "tsv"
    csv = "csv"
    jsonl = "jsonl"
    fasttext = "fasttext"
    folder = "folder"
    parquet = "parquet"


class BadRowMode(str, Enum):
    error = "error"
    skip = "skip"


class DatasetName(str, Enum):
    imdb = "imdb"
    sst2 = "sst2"


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a UserError into one clear message and exit code 2, with no traceback."""
    try:
        yield
    except UserError as exc:
        ui.error(str(exc))
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        ui.error("interrupted")
        raise typer.Exit(130) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bilstm {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """Text classification with uni- and bi-directional LSTMs: train, predict, evaluate."""


# The config keys that train's own options set, for error messages.
SHORTCUT_OPTIONS = {"model.bidirectional": "--bidirectional", "training.epochs": "--epochs",
                    "training.batch_size": "--batch-size", "training.seed": "--seed",
                    "output.dir": "--output", "training.deterministic": "--deterministic"}


@app.command()
def train(
    config: Annotated[str | None, typer.Option(
        "--config", "-c", help="A YAML config file, or a shipped one by name: imdb, sst2.",
        show_default="imdb")] = None,
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
    from bilstm_cli.checkpoint import check_resume, resume_config_path
    from bilstm_cli.config import config_to_yaml, load_config, resolve_config_path
    from bilstm_cli.data import load_splits, summarize
    from bilstm_cli.runs import check_output_dir
    from bilstm_cli.text import tokenizer_for

    shortcuts = {"model.bidirectional": bidirectional, "training.epochs": epochs,
                 "training.batch_size": batch_size, "training.seed": seed, "output.dir": output,
                 "training.deterministic": deterministic}
    with user_errors():
        if force and resume is None:
            raise UserError("--force goes with --resume RUN_DIR (it trains that folder again)")
        if resume is not None and output is not None:
            raise UserError("--output chooses where new run folders go; a resumed run stays "
                            f"in {resume}: leave out --output")
        base = resolve_config_path(config) if config or resume is None else (
            resume_config_path(resume))
        cfg = load_config(base, set_, {k: v for k, v in shortcuts.items() if v is not None},
                          SHORTCUT_OPTIONS, warn=ui.warn)
        continuing = False
        if resume is not None and not dry_run:
            continuing = check_resume(resume, cfg.model_dump(mode="json"), force)
        elif not dry_run:
            check_output_dir(cfg.output.dir)
        splits = load_splits(cfg.data, cfg.training.seed)
        tokenizer = tokenizer_for(cfg.data, splits.train.texts)
        summary = summarize(splits, cfg, tokenizer)
        if dry_run:
            out = ui.stdout_console()
            out.print(config_to_yaml(cfg), markup=False)
            for table in ui.summary_tables(summary, out):
                out.print(table)
            return
        for table in ui.summary_tables(summary, ui.stderr):
            ui.stderr.print(table)
        from bilstm_cli.interrupt import TrainingInterrupted
        from bilstm_cli.runstate import command_line
        from bilstm_cli.train import train as run_training

        try:
            result = run_training(cfg, ui.info, run_dir=resume, command=command_line(),
                                  splits=splits, summary=summary, resume=continuing,
                                  warn=ui.warn, tokenizer=tokenizer,
                                  progress=ui.TrainingDisplay)
        except TrainingInterrupted as exc:
            _report_interruption(exc, resume)
            raise typer.Exit(exc.exit_code) from None
    _print_training_result(result.run_dir, result.metrics)


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


@app.command()
def predict(
    texts: Annotated[list[str] | None, typer.Argument(
        help="Texts to classify; - reads one text per line from stdin.", show_default=False)]
        = None,
    input_files: Annotated[list[Path] | None, typer.Option(
        "--input", "-i", help="A file with one text per line (- for stdin). Repeatable.")]
        = None,
    input_format: Annotated[InputFormat, typer.Option(
        "--input-format", help="Lines of stdin and --input files: text (the line is the text), "
        "tsv (tab-separated fields, a header when a column is a name) or jsonl.")]
        = InputFormat.text,
    text_column: Annotated[str, typer.Option(
        help="tsv/jsonl: the text's column name (jsonl: nested keys with dots, "
        "meta.review), or 0-based index (tsv without header).")]
        = "text",
    id_column: Annotated[str | None, typer.Option(
        help="tsv/jsonl: a column passed through to the output (first field; jsonl: \"id\").")]
        = None,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="A run folder or its model file.",
        show_default="runs/latest")] = None,
    output_format: Annotated[OutputFormat, typer.Option(
        "--format", "-f", help="label: the label (with --top-k, K labels, tab-separated); "
        "tsv: label<TAB>probability; jsonl: a record with all probabilities.")]
        = OutputFormat.tsv,
    top_k: Annotated[int, typer.Option(min=1, help="Show the K most probable labels.")] = 1,
    threshold: Annotated[float | None, typer.Option(
        min=0.0, max=1.0, help="Two classes: predict the second label when its probability "
        "is at least T.")] = None,
    probabilities: Annotated[bool, typer.Option(
        "--probabilities", help="label/tsv: append every class's probability, in the model's "
        "label order.")] = False,
    engine: Annotated[Engine, typer.Option(help=ENGINE_HELP)] = Engine.auto,
    batch_size: Annotated[int, typer.Option(
        min=1, help="Texts read per batch (at most): the model runs them grouped by length; a "
        "batch goes out as soon as no more input is waiting.")] = 1024,
    errors: Annotated[DecodeErrors, typer.Option(
        help="Invalid UTF-8 in the input: strict (an error naming the line) or replace.")]
        = DecodeErrors.strict,
) -> None:
    """Predict labels: one output line per input line, in order, on stdout."""
    from bilstm_cli.predict import predict_lines
    from bilstm_cli.runs import resolve_model

    with user_errors():
        if id_column is not None and input_format == InputFormat.text:
            raise UserError("--id-column needs --input-format tsv or jsonl")
        sources = _prediction_sources(texts or [], input_files or [], batch_size, errors.value,
                                      input_format.value, text_column, id_column)
        classifier = _classifier(resolve_model(model), engine.value)
        if top_k > len(classifier.labels):
            ui.warn(f"--top-k {top_k}: the model has {len(classifier.labels)} labels, so each "
                    f"answer lists all {len(classifier.labels)}")
        outputs = predict_lines(classifier, sources, output_format.value, top_k, threshold,
                                probabilities, with_id=id_column is not None)
        _write_lines(outputs)


def _classifier(run_dir: Path, engine: str) -> Any:
    """The run's classifier; says on stderr why TensorFlow is used when auto could not use ONNX
    (no model.onnx, or one older than model.keras)."""
    from bilstm_cli.predict import Classifier, choose_engine
    from bilstm_cli.runs import ONNX_FILE

    chosen = choose_engine(run_dir, engine)
    if engine == "auto" and chosen == "tf":
        if (run_dir / ONNX_FILE).is_file():
            ui.warn(f"{run_dir / ONNX_FILE} is older than model.keras, using TensorFlow; "
                    f"refresh it with `bilstm export {run_dir}`")
        else:
            ui.warn(f"{run_dir} has no {ONNX_FILE}, so TensorFlow is loaded (seconds); "
                    f"`bilstm export {run_dir}` writes it once for fast starts")
    return Classifier(run_dir, chosen)


def _prediction_sources(
    texts: list[str], files: list[Path], batch_size: int, errors: str,
    input_format: str = "text", text_column: str = "text", id_column: str | None = None,
) -> Iterator[list[tuple[Any, str]]]:
    """Record batches from the arguments (in their order, `-` = stdin), then the files."""
    from bilstm_cli.predict import file_line_batches, line_batches, parse_records

    if not texts and not files:
        if sys.stdin.isatty():
            raise UserError("nothing to predict: give texts, - for stdin, or --input FILE")
        texts = ["-"]
    for path in files:  # checked before the model loads; a pipe (<(...), /dev/stdin) is fine
        if str(path) != "-" and not path.exists():
            raise UserError(f"input file not found: {path}")
        if path.is_dir():
            raise UserError(f"--input {path} is a folder: give a file with one text per line")

    def records(source: str) -> Iterator[list[tuple[Any, str]]]:
        stream = (line_batches(sys.stdin.fileno(), batch_size, "<stdin>", errors)
                  if source == "-" else file_line_batches(source, batch_size, errors))
        name = "<stdin>" if source == "-" else source
        return parse_records(stream, input_format, text_column, id_column, name)

    def batches() -> Iterator[list[tuple[Any, str]]]:
        literal: list[tuple[Any, str]] = []
        for text in texts:
            if text != "-":
                literal.append((None, text))
                if len(literal) < batch_size:
                    continue
            if literal:
                yield literal
                literal = []
            if text == "-":
                yield from records("-")
        if literal:
            yield literal
        for path in files:
            yield from records(str(path))

    return batches()


def _write_lines(batches: Iterator[list[str]]) -> None:
    """Write each batch of output lines and flush, ending quietly if the reader goes away."""
    try:
        for lines in batches:
            sys.stdout.write("".join(line + "\n" for line in lines))
            sys.stdout.flush()
    except BrokenPipeError:
        # `| head -1` closed the pipe: stop without a traceback, as a SIGPIPE'd tool would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(141) from None


@app.command()
def evaluate(
    data: Annotated[str, typer.Option(
        "--data", "-d", help="Labelled data: a file (tsv, csv, jsonl, fasttext, parquet), a "
        "folder with one sub-folder per class, - for stdin (with --format), or imdb:test, "
        "sst2:test.")],
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="A run folder or its model file.",
        show_default="runs/latest")] = None,
    data_format: Annotated[DataFormat, typer.Option(
        "--format", help="The file's format; auto: from its extension, else the run's "
        "data.format.")] = DataFormat.auto,
    text_column: Annotated[str | None, typer.Option(
        help="Text column or key (a name, or an index).",
        show_default="the run's data.text_column")]
        = None,
    label_column: Annotated[str | None, typer.Option(
        help="Label column or key.", show_default="the run's data.label_column")] = None,
    header: Annotated[bool | None, typer.Option(
        "--header/--no-header", help="tsv/csv: whether the first row names the columns.",
        show_default="the run's data.header (auto: when a column is given by name)")] = None,
    on_bad_row: Annotated[BadRowMode | None, typer.Option(
        help="A malformed row: error (list the bad rows and stop) or skip (count and report "
        "them).", show_default="the run's data.on_bad_row")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Write the report as JSON to stdout.")]
        = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per batch.")] = 256,
    engine: Annotated[Engine, typer.Option(help=ENGINE_HELP)] = Engine.auto,
) -> None:
    """Evaluate a trained model on labelled data: accuracy, per-class metrics, confusion matrix."""
    from bilstm_cli.config import DataConfig
    from bilstm_cli.data import load_builtin_split, read_labelled
    from bilstm_cli.evaluate import evaluate_dataset
    from bilstm_cli.runs import (
        resolve_model,
        run_data_config,
        run_data_section,
        training_data_warning,
    )

    with user_errors():
        run_dir = resolve_model(model)
        section = run_data_section(run_dir)
        columns = run_data_config(section)
        seen_in_training = training_data_warning(section, data)
        if seen_in_training:
            ui.warn(seen_in_training)
        if text_column is not None:
            columns["text_column"] = _column(text_column)
        if label_column is not None:
            columns["label_column"] = _column(label_column)
        if on_bad_row is not None:
            columns["on_bad_row"] = on_bad_row.value
        if header is not None:
            columns["header"] = header
        if ":" in data and not Path(data).exists():
            dataset = load_builtin_split(data)
        else:
            settings = DataConfig(dataset=None, train=data, **columns)
            dataset = read_labelled(data, settings, data_format.value,
                                    skip_hint="pass --on-bad-row skip")
            if dataset.skipped:
                ui.warn(f"{dataset.skipped} bad row(s) of {data} skipped (on_bad_row: skip), "
                        f"e.g. {dataset.bad_rows[0]}")
            for note in dataset.notes:  # e.g. a sub-folder that is not one of the labels
                ui.warn(note)
        report = evaluate_dataset(_classifier(run_dir, engine.value), dataset, batch_size)
        report["skipped_rows"] = dataset.skipped
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    out = ui.stdout_console()
    for table in ui.report_tables(report, out):
        out.print(table)


@app.command()
def export(
    run: Annotated[str | None, typer.Argument(
        help="A run folder or its model file (default: runs/latest).", show_default=False)]
        = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Where to write the ONNX model (default: RUN/model.onnx).")]
        = None,
) -> None:
    """Write the run's model as ONNX (model.onnx), so predict runs without TensorFlow."""
    from bilstm_cli.export import export_run
    from bilstm_cli.runs import resolve_model

    with user_errors():
        path = export_run(resolve_model(run), output)
    sys.stdout.write(f"{path}\n")


data_app = typer.Typer(
    help="The built-in data sets (imdb, sst2): where they are, and downloading them.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")


@data_app.command("list")
def data_list() -> None:
    """Show the built-in data sets, whether each is here (and where), or where it comes from."""
    from bilstm_cli.data.download import BUILTIN, cache_dir, locate, url_for, verify_archive

    rows = []
    for name, info in BUILTIN.items():
        found = locate(name)
        if found is None:
            rows.append((name, "not downloaded", f"{url_for(name)} -> {cache_dir()}",
                         info.description))
            continue
        where = "BILSTM_DATA_DIR" if found.where == "data dir" else "cache"
        status = f"available ({where})"
        try:
            verify_archive(name, found)
        except UserError as exc:
            ui.warn(str(exc))
            status = f"unreadable ({where})"
        rows.append((name, status, str(found.path), info.description))
    out = ui.stdout_console()
    table = ui.datasets_table(rows, out)
    if isinstance(table, str):
        sys.stdout.write(table + "\n")  # tabs kept as tabs, for scripts
    else:
        out.print(table)


@data_app.command("get")
def data_get(
    name: Annotated[DatasetName, typer.Argument(help="The data set: imdb or sst2.")],
) -> None:
    """Download a built-in data set into the cache now (checksum verified); print its path."""
    from bilstm_cli.data.download import fetch, locate, verify_archive

    with user_errors():
        found = locate(name.value)
        try:
            if found is not None:
                verify_archive(name.value, found)
        except UserError as exc:
            if found is None or found.where == "data dir":
                raise  # the user's own file: theirs to replace
            ui.warn(f"{exc}: downloading it again")
            found = None
        if found is None:
            path = fetch(name.value)
        else:
            ui.info(f"{name.value}: already here")
            path = found.path
    sys.stdout.write(f"{path}\n")


@app.command("runs")
def list_runs(
    folder: Annotated[Path, typer.Argument(help="The folder holding run folders.")]
        = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Write the list as JSON to stdout.")]
        = False,
) -> None:
    """List run folders: data set, uni/bi, epochs, best validation and test accuracy, state.

    The state is running, finished, interrupted or failed; * marks `latest`."""
    from bilstm_cli.runstate import list_runs as find_runs

    with user_errors():
        runs = find_runs(folder)
    if as_json:
        sys.stdout.write(json.dumps(runs, indent=2) + "\n")
        return
    out = ui.stdout_console()
    if not runs:
        ui.info(f"no run folders in {folder}")
    elif out.is_terminal:
        out.print(ui.runs_table(runs, out))
    else:
        sys.stdout.write(ui.runs_tsv(runs))


def _column(value: str) -> str | int:
    return int(value) if value.isdigit() else value


def main() -> None:
    from bilstm_cli import backend

    backend.setup()  # before anything imports TensorFlow
    app()
